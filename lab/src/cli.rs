//! The command line, and nothing else: clap definitions for every `lab`
//! command. Parsing lives here so the rest of the library works with plain
//! typed values and can be tested without a shell.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::topology::{Reads, Replication, Sessions, Strategy, Toggle};

const EXAMPLES: &str = "\
Examples:
  lab images build                 build every image (no registry needed)
  lab up                           3 servers, a balancer, redis, a primary and a replica
  lab up --servers 4 --lb least-conn --sessions redis --cache on
  lab status                       what runs, its health and ports
  lab load --scenario sessions     drive users through the balancer and watch them suffer
  lab crash server-1               break something; lab heal --all mends it
  lab logs server-1 --follow
  lab down                         remove everything the lab created";

/// `lab --version` also names the images this CLI runs: they are tagged
/// with the same version, and a CLI never runs another version's images.
const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (images scaling-lab/*:",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// A chaos lab for learning how web apps scale: real containers, real faults.
#[derive(Parser, Debug)]
#[command(name = "lab", version = VERSION_LINE, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Which lab to act on; two labs with different names run side by side.
    #[arg(long, global = true, env = "LAB_NAME", default_value = "lab", value_parser = parse_lab_name)]
    pub lab: String,

    /// More log detail (-v debug, -vv trace); RUST_LOG wins when set.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the lab's container images from Debian packages, or save and load them as one file.
    #[command(
        subcommand,
        after_help = "Example:\n  lab images build          # seconds when nothing changed\n  lab images build --force  # rebuild everything, base included\n  lab images save scaling-lab-images.tar.zst   # every image in one file, for a class\n  lab images load scaling-lab-images.tar.zst   # on a machine with only Docker"
    )]
    Images(ImagesCommand),

    /// Check this machine can run the lab: Docker, images, port, CPUs, kernel.
    #[command(
        after_help = "Examples:\n  lab doctor                # one line per check, with its fix\n  lab doctor --port 9090    # the entry port you will give `lab up --port`\n  lab doctor --json | jq '.checks[] | select(.status != \"ok\")'\n\nExit status: 1 when the lab cannot run (Docker unreachable, images missing, port taken), else 0."
    )]
    Doctor(DoctorArgs),

    /// Create the lab, or bring a running lab in line with new settings.
    #[command(
        after_help = "Examples:\n  lab up\n  lab up --servers 2 --sessions redis --port 0\n  lab up -f lab.toml --replicas 2   # flags win over the file\n  lab up --preset stateless         # redis sessions and retries\n  lab up --health-interval 1s --health-fall 3 --passive off   # the course's 3-second window\n  lab up --balancers 2              # two balancers share a floating address (VRRP); crash lb-1 and see\n\nPresets: naive (the default), single, sticky, stateless, cached, full."
    )]
    Up(UpArgs),

    /// Show every service: state, health, ports, the balancer's view, lag.
    #[command(
        after_help = "Examples:\n  lab status\n  lab status --json | jq '.services[] | {name, health}'"
    )]
    Status(StatusArgs),

    /// A live view of the whole lab: the status table, redrawn every second.
    #[command(
        after_help = "Examples:\n  lab watch                 # keep it open while you break things elsewhere\n  lab watch --every 500ms"
    )]
    Watch(WatchArgs),

    /// Remove every container, network and volume of the lab.
    #[command(after_help = "Example:\n  lab down\n  lab --lab class-2 down")]
    Down,

    /// Print a service's logs.
    #[command(after_help = "Examples:\n  lab logs server-1\n  lab logs db-replica-1 --follow")]
    Logs(LogsArgs),

    /// Drive load through the balancer and show what users suffer.
    Load(crate::load::LoadArgs),

    /// Kill a service with SIGKILL, the way a machine dies.
    #[command(
        after_help = "Example:\n  lab crash server-1      # then watch `lab load` in another terminal"
    )]
    Crash(Target),

    /// Stop a service gracefully (SIGTERM, in-flight work finishes).
    #[command(after_help = "Example:\n  lab stop server-2")]
    Stop(Target),

    /// Start a stopped or crashed service.
    #[command(after_help = "Example:\n  lab start server-1")]
    Start(Target),

    /// Stop a service gracefully, then start it again.
    #[command(after_help = "Example:\n  lab restart db-replica-1")]
    Restart(Target),

    /// Freeze a service: connections stay open, nothing answers (a hung process).
    #[command(after_help = "Example:\n  lab pause server-3\n  lab resume server-3")]
    Pause(Target),

    /// Unfreeze a paused service.
    #[command(after_help = "Example:\n  lab resume server-3")]
    Resume(Target),

    /// Cut a service off the lab network.
    #[command(after_help = "Example:\n  lab partition db-replica-1\n  lab heal db-replica-1")]
    Partition(Target),

    /// Undo faults: reconnect, resume, start, remove slow links, end lag.
    #[command(after_help = "Examples:\n  lab heal server-1\n  lab heal --all")]
    Heal(HealArgs),

    /// Slow a service's network: delay, jitter, a bandwidth limit.
    ///
    /// Through the service's own fault proxy by default, which works on
    /// every kernel; --netem uses the kernel's tc netem instead (where the
    /// kernel has it), which can also drop packets.
    #[command(
        after_help = "Examples:\n  lab slow server-2 --latency 200ms              # what the balancer sees of server-2\n  lab slow db-primary --latency 50ms --jitter 10ms  # the database as the servers see it\n  lab slow db-replica-1 --link wal --latency 2s  # the replica's WAL arrives late\n  lab slow redis --latency 0ms --bandwidth 1mbit\n  lab slow server-1 --latency 100ms --netem --loss 1%\n  lab heal server-2"
    )]
    Slow(SlowArgs),

    /// Make a replica apply changes late (replication lag), or stop it.
    #[command(after_help = "Examples:\n  lab lag db-replica-1 3s\n  lab lag db-replica-1 --off")]
    Lag(LagArgs),

    /// Switch replication between asynchronous and synchronous, live.
    #[command(
        after_help = "Examples:\n  lab replication sync     # commits wait until every replica applied them\n  lab replication async"
    )]
    Replication(ReplicationArgs),

    /// Add or remove servers on a running lab; the balancer follows live.
    #[command(subcommand, after_help = "Example:\n  lab scale servers 5")]
    Scale(ScaleCommand),

    /// Change a service's CPU and memory limits live (vertical scaling).
    #[command(
        after_help = "Examples:\n  lab resize server-1 --cpus 0.5\n  lab resize db-primary --cpus 2 --memory 1g"
    )]
    Resize(ResizeArgs),

    /// The course's lessons, each reproduced with real parts and checked.
    #[command(
        subcommand,
        after_help = "Examples:\n  lab lesson list\n  lab lesson run sessions\n  lab lesson run cache --keep     # keep the lab afterwards to look around\n\nEach lesson has a guide in docs/labs/."
    )]
    Lesson(LessonCommand),

    /// Print a shell completion script for lab.
    #[command(
        after_help = "Examples:\n  lab completions bash > ~/.local/share/bash-completion/completions/lab\n  lab completions zsh > ~/.zfunc/_lab      # with fpath+=(~/.zfunc) in .zshrc\n  lab completions fish > ~/.config/fish/completions/lab.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print lab's manual page (roff), for man.
    #[command(
        after_help = "Examples:\n  lab man > lab.1 && man ./lab.1\n  sudo sh -c 'lab man > /usr/local/share/man/man1/lab.1'"
    )]
    Man,

    /// Change settings of a running lab; servers are replaced one at a time.
    #[command(
        after_help = "Examples:\n  lab set sessions=redis\n  lab set cache=on cache_ttl=10s\n  lab set lb=sticky retries=on\n\n  lab set health_interval=1s health_fall=3 passive=off\n  lab set balancers=2               # add lb-2, keepalived and the edge\n\nKeys: sessions, cache, cache_ttl, reads, lb, retries, product_query_ms, health_interval, health_timeout, health_fall, health_rise, passive, balancers, advert_int"
    )]
    Set(SetArgs),
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Build (or rebuild what changed of) every lab image.
    Build {
        /// Rebuild every image, the Debian base included, even if unchanged.
        #[arg(long)]
        force: bool,
        /// Where the release binaries are (default: target/release next to the workspace, or beside `lab`).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Write every lab image into one compressed file (for a class without a registry).
    #[command(
        after_help = "Examples:\n  lab images save scaling-lab-images.tar.zst\n  lab images save --level 10 scaling-lab-images.tar.zst   # smaller, slower to write"
    )]
    Save {
        /// The file to write, e.g. scaling-lab-images-0.1.0.tar.zst.
        file: PathBuf,
        /// zstd compression level: higher is smaller and slower to write, never slower to load.
        #[arg(long, value_name = "1-19", default_value_t = crate::bundle::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
    },
    /// Load the images from a file made by `lab images save` (same lab version).
    #[command(
        after_help = "Example:\n  lab images load scaling-lab-images.tar.zst   # then: lab doctor, lab up"
    )]
    Load {
        /// A file made by `lab images save`.
        file: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// One JSON document on stdout instead of lines.
    #[arg(long)]
    pub json: bool,
    /// The balancer's port on 127.0.0.1 that `lab up` will use.
    #[arg(long, value_name = "P", default_value_t = crate::topology::DEFAULT_PORT)]
    pub port: u16,
}

/// Every knob that `lab up` takes (docs/README.md). `None` means "not given":
/// the value then comes from `-f lab.toml`, else from the default.
#[derive(Args, Debug, Default, Clone)]
pub struct UpArgs {
    /// Number of app servers (1..=16).
    #[arg(long, value_name = "N")]
    pub servers: Option<u32>,
    /// How the balancer picks a server.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub lb: Option<Strategy>,
    /// Retry a failed idempotent request once on another server.
    #[arg(long, value_enum, value_name = "on|off")]
    pub retries: Option<Toggle>,
    /// Where login state lives.
    #[arg(long, value_enum)]
    pub sessions: Option<Sessions>,
    /// Cache-aside for product reads in Redis.
    #[arg(long, value_enum, value_name = "on|off")]
    pub cache: Option<Toggle>,
    /// Streaming replicas of db-primary (0..=3).
    #[arg(long, value_name = "M")]
    pub replicas: Option<u32>,
    /// Whether a commit waits for the replicas.
    #[arg(long, value_enum)]
    pub replication: Option<Replication>,
    /// Where the app sends reads of balances.
    #[arg(long, value_enum)]
    pub reads: Option<Reads>,
    /// Time between two active health checks of a server, e.g. 1s.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub health_interval: Option<std::time::Duration>,
    /// A health check without an answer in this time fails, e.g. 1s.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub health_timeout: Option<std::time::Duration>,
    /// Failed checks in a row that take a server down (1..=20).
    #[arg(long, value_name = "N")]
    pub health_fall: Option<u32>,
    /// Passed checks in a row that bring it back (1..=20).
    #[arg(long, value_name = "N")]
    pub health_rise: Option<u32>,
    /// Passive checks: a refused or reset connection takes a server down at once.
    #[arg(long, value_enum, value_name = "on|off")]
    pub passive: Option<Toggle>,
    /// The balancer's port on 127.0.0.1 (0 picks a free one).
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// 1 balancer, or 2: an HA pair (keepalived, a floating address) behind an edge.
    #[arg(long, value_name = "1|2")]
    pub balancers: Option<u32>,
    /// With 2 balancers: VRRP's advert interval, whole seconds (failover takes about 3 x it).
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub advert_int: Option<std::time::Duration>,
    /// A bundle of settings for a stage of the course; lab.toml and flags win over it.
    #[arg(long, value_enum, value_name = "NAME")]
    pub preset: Option<crate::topology::Preset>,
    /// A lab.toml with any of the keys above; flags win over it.
    #[arg(short = 'f', long = "file", value_name = "lab.toml")]
    pub file: Option<PathBuf>,
    /// Do not wait for the services to become healthy.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for health after this long.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

impl UpArgs {
    /// The flags as one more layer over the preset and the file: the model
    /// ([`crate::topology`]) never sees the argument parser.
    pub fn as_layer(&self) -> crate::topology::LabFile {
        let text =
            |d: Option<std::time::Duration>| d.map(|d| humantime::format_duration(d).to_string());
        crate::topology::LabFile {
            servers: self.servers,
            lb: self.lb,
            retries: self.retries,
            sessions: self.sessions,
            cache: self.cache,
            replicas: self.replicas,
            replication: self.replication,
            reads: self.reads,
            port: self.port,
            health_interval: text(self.health_interval),
            health_timeout: text(self.health_timeout),
            health_fall: self.health_fall,
            health_rise: self.health_rise,
            passive: self.passive,
            balancers: self.balancers,
            advert_int: text(self.advert_int),
            ..Default::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Time between refreshes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub every: std::time::Duration,
    /// Stop after N refreshes (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// A service name as `lab status` shows it, e.g. server-1.
    pub name: String,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum LessonCommand {
    /// Every lesson, in course order, with a one-line summary.
    List,
    /// Run a lesson: bring up its lab, drive load, break things, check the claim.
    Run {
        /// The lesson, as `lab lesson list` names it.
        name: String,
        /// Keep the lesson's lab afterwards (healed) instead of removing it.
        #[arg(long)]
        keep: bool,
        /// Print the report as one JSON document instead of narrating.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A service name as `lab status` shows it, e.g. server-1.
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct HealArgs {
    /// The service to heal.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Heal every service of the lab.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SlowArgs {
    /// The service whose traffic is delayed.
    pub name: String,
    /// Delay added to every byte (or packet, with --netem), e.g. 200ms.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, required_unless_present = "bandwidth")]
    pub latency: Option<std::time::Duration>,
    /// Random variation of the delay, e.g. 20ms.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub jitter: Option<std::time::Duration>,
    /// A bandwidth limit, e.g. 1mbit or 64kB (per second; the proxy only).
    #[arg(long, value_name = "RATE", value_parser = crate::faults::parse_rate)]
    pub bandwidth: Option<u64>,
    /// Which link of the service's proxy: service (its port, the default)
    /// or wal (a replica's stream of the primary's changes).
    #[arg(long, value_name = "LINK")]
    pub link: Option<String>,
    /// Which way: to-service, from-service or both (the proxy only).
    #[arg(long, value_name = "WAY", default_value = "both", value_parser = parse_direction)]
    pub direction: lab_contract::faultproxy::Direction,
    /// Use the kernel's tc netem (needs the sch_netem module).
    #[arg(long)]
    pub netem: bool,
    /// Share of packets dropped, e.g. 5% (needs --netem).
    #[arg(long, value_name = "P%", value_parser = crate::faults::parse_percent, requires = "netem")]
    pub loss: Option<f64>,
}

impl SlowArgs {
    pub fn spec(&self) -> crate::faults::Slow {
        crate::faults::Slow {
            latency: self.latency.unwrap_or_default(),
            jitter: self.jitter,
            bandwidth_bps: self.bandwidth,
            loss: self.loss,
            link: self.link.clone(),
            direction: self.direction,
            netem: self.netem,
        }
    }
}

fn parse_direction(s: &str) -> Result<lab_contract::faultproxy::Direction, String> {
    use lab_contract::faultproxy::Direction;
    [
        Direction::ToService,
        Direction::FromService,
        Direction::Both,
    ]
    .into_iter()
    .find(|d| d.to_string() == s)
    .ok_or_else(|| format!("{s:?} is not a direction: use to-service, from-service or both"))
}

#[derive(Args, Debug, Clone)]
pub struct LagArgs {
    /// A replica, e.g. db-replica-1.
    pub name: String,
    /// How late it applies each change, e.g. 3s.
    #[arg(value_name = "DELAY", value_parser = humantime::parse_duration, required_unless_present = "off", conflicts_with = "off")]
    pub delay: Option<std::time::Duration>,
    /// End the lag.
    #[arg(long)]
    pub off: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReplicationArgs {
    #[arg(value_enum)]
    pub mode: crate::topology::Replication,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ScaleCommand {
    /// Set the number of app servers (1..=16).
    Servers {
        #[arg(value_name = "N")]
        count: u32,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ResizeArgs {
    /// The service to resize.
    pub name: String,
    /// CPUs it may use, e.g. 0.5 or 2.
    #[arg(long, value_name = "X")]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. 256m or 1g.
    #[arg(long, value_name = "M")]
    pub memory: Option<String>,
    /// Host CPUs it may run on, e.g. 0 or 0-1; two services pinned to the
    /// same CPU share one machine's processor.
    #[arg(long, value_name = "CPUS")]
    pub cpuset: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    /// One or more KEY=VALUE pairs.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
    /// Give up waiting for a replaced service after this long.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// Lab names end up in container, network and volume names, so they must be
/// valid Docker object names and short enough to read in `docker ps`.
fn parse_lab_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a lab name: use 1-32 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lab_names_are_checked() {
        assert!(parse_lab_name("class-2").is_ok());
        assert!(parse_lab_name("").is_err());
        assert!(parse_lab_name("-x").is_err());
        assert!(parse_lab_name("a b").is_err());
        assert!(parse_lab_name(&"x".repeat(33)).is_err());
    }
}
