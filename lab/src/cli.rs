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
  lab dashboard --open             the lab in your browser, live, with its buttons
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
        after_help = "Examples:\n  lab up\n  lab up --servers 2 --sessions redis --port 0\n  lab up -f lab.toml --replicas 2   # flags win over the file\n  lab up --preset stateless         # redis sessions and retries\n  lab up --health-interval 1s --health-fall 3 --passive off   # the course's 3-second window\n  lab up --replicas 2               # 3 database nodes: automatic failover (--failover off to compare)\n  lab up --balancers 2              # two balancers share a floating address (VRRP); crash lb-1 and see\n\nPresets: naive (the default), single, sticky, stateless, cached, full."
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

    /// The lab in a web browser: its services, live, with buttons to break and mend them.
    ///
    /// Serves one page on 127.0.0.1 only and prints its URL, with a token
    /// that the page's buttons need: only someone who can read this
    /// terminal can act on the lab. The page charts each second (requests
    /// by kind, p50/p99, session losses, stale reads, share per server)
    /// with every fault marked, starts a bounded load (at most 10 min) or
    /// a lesson, and exports the last one as a self-contained HTML report.
    /// Runs until Ctrl-C; survives `lab down` and `lab up`.
    #[command(
        after_help = "Examples:\n  lab dashboard                 # prints http://127.0.0.1:8099/#token=...\n  lab dashboard --port 0 --open # any free port, in your browser\n  lab --lab class-2 dashboard --port 8100\n\nOn the page: \"start load\" (scenario, requests/s or users, seconds), then crash a\nserver and watch the charts; \"run lesson\"; \"export the report\" saves the last\nrun as one HTML file (GET /report). See docs/dashboard.md."
    )]
    Dashboard(DashboardArgs),

    /// Remove every container, network and volume of the lab.
    #[command(after_help = "Example:\n  lab down\n  lab --lab class-2 down")]
    Down,

    /// Print a service's logs.
    #[command(
        after_help = "Examples:\n  lab logs server-1\n  lab logs db-2 --follow\n  lab logs primary          # whichever node is primary now"
    )]
    Logs(LogsArgs),

    /// Drive load through the balancer and show what users suffer.
    Load(LoadArgs),

    /// Kill a service with SIGKILL, the way a machine dies.
    #[command(
        after_help = "Examples:\n  lab crash server-1      # then watch `lab load` in another terminal\n  lab crash primary       # the database node that is primary now"
    )]
    Crash(Target),

    /// Stop a service gracefully (SIGTERM, in-flight work finishes).
    #[command(after_help = "Example:\n  lab stop server-2")]
    Stop(Target),

    /// Start a stopped or crashed service.
    #[command(after_help = "Example:\n  lab start server-1")]
    Start(Target),

    /// Stop a service gracefully, then start it again.
    #[command(after_help = "Example:\n  lab restart db-2")]
    Restart(Target),

    /// Freeze a service: connections stay open, nothing answers (a hung process).
    #[command(after_help = "Example:\n  lab pause server-3\n  lab resume server-3")]
    Pause(Target),

    /// Unfreeze a paused service.
    #[command(after_help = "Example:\n  lab resume server-3")]
    Resume(Target),

    /// Cut a service off the lab network.
    #[command(after_help = "Example:\n  lab partition db-2\n  lab heal db-2")]
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
        after_help = "Examples:\n  lab slow server-2 --latency 200ms              # what the balancer sees of server-2\n  lab slow primary --latency 50ms --jitter 10ms  # the database as the servers see it\n  lab slow db-2 --link wal --latency 2s  # the replica's WAL arrives late\n  lab slow redis --latency 0ms --bandwidth 1mbit\n  lab slow server-1 --latency 100ms --netem --loss 1%\n  lab heal server-2"
    )]
    Slow(SlowArgs),

    /// Hang a service's link: connections are accepted, nothing gets through.
    ///
    /// Through the service's fault proxy: a hung network, unlike `lab pause`,
    /// which hangs the process. `lab heal NAME` ends it.
    #[command(
        after_help = "Examples:\n  lab blackhole server-2            # requests to server-2 hang until the balancer gives up\n  lab blackhole db-2 --link wal           # cut a database node's replication link\n  lab heal server-2"
    )]
    Blackhole(LinkArgs),

    /// Refuse a service's new connections and cut its open ones (TCP reset).
    #[command(
        after_help = "Examples:\n  lab reset redis      # every session and cache lookup fails at once\n  lab heal redis"
    )]
    Reset(LinkArgs),

    /// Random faults on a schedule while users load the site; every fault is
    /// healed at the end, also on Ctrl-C.
    ///
    /// One fault at a time, drawn among the services that can take it, held
    /// a few seconds and healed. The same --seed on the same lab replays the
    /// same schedule; the report gives the seed, the fault timeline and what
    /// the users lost (the load driver's checkers).
    #[command(
        after_help = "Examples:\n  lab chaos --duration 2m\n  lab chaos --faults crash,pause --seed 42     # the same seed replays the same faults\n  lab chaos --scenario bank --json > chaos.json"
    )]
    Chaos(ChaosArgs),

    /// Find the lab's single points of failure: crash each part in turn
    /// under a light load and see whether the site recovers without it.
    ///
    /// Each part is crashed, the lab gets a recovery window to work around
    /// the loss, then the share of successful requests is measured and
    /// compared with the share before the crash; well below it, the part is
    /// a single point of failure. Every part is
    /// started again afterwards, also on Ctrl-C. Takes about 30 s per part.
    #[command(
        after_help = "Examples:\n  lab spof\n  lab spof --window 20s --threshold 0.95 --json > spof.json"
    )]
    Spof(SpofArgs),

    /// Make a replica apply changes late (replication lag), or stop it.
    #[command(after_help = "Examples:\n  lab lag db-2 3s\n  lab lag db-2 --off")]
    Lag(LagArgs),

    /// Switch replication between asynchronous and synchronous, live.
    #[command(
        after_help = "Examples:\n  lab replication sync     # commits wait until every replica applied them\n  lab replication async"
    )]
    Replication(ReplicationArgs),

    /// A planned switchover: the primary hands over to the healthiest replica.
    ///
    /// Done by the failover manager (Patroni), so it needs 3 database nodes
    /// (lab up --replicas 2).
    #[command(
        after_help = "Example:\n  lab failover      # then `lab status`: another node is primary, on a new timeline"
    )]
    Failover,

    /// Make this database node the primary (a manual failover, by Patroni).
    #[command(
        after_help = "Examples:\n  lab promote db-3\n  lab crash primary && lab promote db-2   # choose the new primary yourself"
    )]
    Promote(Target),

    /// Add or remove servers on a running lab; the balancer follows live.
    #[command(subcommand, after_help = "Example:\n  lab scale servers 5")]
    Scale(ScaleCommand),

    /// Change a service's CPU and memory limits live (vertical scaling).
    #[command(
        after_help = "Examples:\n  lab resize server-1 --cpus 0.5\n  lab resize primary --cpus 2 --memory 1g"
    )]
    Resize(ResizeArgs),

    /// The course's lessons, each reproduced with real parts and checked.
    #[command(
        subcommand,
        after_help = "Examples:\n  lab lesson list\n  lab lesson run sessions\n  lab lesson run cache --keep     # keep the lab afterwards to look around\n  lab lesson run architecture --quick   # the course's table, shortened\n\nEach lesson has a guide in docs/labs/."
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
        after_help = "Examples:\n  lab set sessions=redis\n  lab set cache=on cache_ttl=10s\n  lab set lb=sticky retries=on\n\n  lab set health_interval=1s health_fall=3 passive=off\n  lab set balancers=2               # add lb-2, keepalived and the edge\n\nKeys: sessions, cache, cache_ttl, reads, lb, retries, product_query_ms, health_interval, health_timeout, health_fall, health_rise, passive, balancers, advert_int\n(servers: lab scale; replication: lab replication; replicas and failover: set at lab up)"
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
    /// Streaming replicas of the primary (0..=3): database nodes db-1 ... db-(1+M).
    #[arg(long, value_name = "M")]
    pub replicas: Option<u32>,
    /// Whether a commit waits for the replicas.
    #[arg(long, value_enum)]
    pub replication: Option<Replication>,
    /// Automatic failover of the primary (Patroni with etcd on every
    /// database node); needs --replicas 2 or more, and is on there by default.
    #[arg(long, value_enum, value_name = "on|off")]
    pub failover: Option<Toggle>,
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
            failover: self.failover,
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
pub struct DashboardArgs {
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(long, value_name = "P", default_value_t = crate::dashboard::DEFAULT_PORT)]
    pub port: u16,
    /// Open the page in the default browser (xdg-open) as well.
    #[arg(long)]
    pub open: bool,
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
        /// The shorter method, where a lesson has one (architecture: one
        /// part of each kind crashed instead of every part, ramp steps of
        /// 3 s instead of 5); the verdicts are the same. The tests use it.
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A service name as `lab status` shows it, e.g. server-1, or `primary`
    /// for the database node that is primary now.
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
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, required_unless_present_any = ["bandwidth", "slow_close"])]
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
    /// Pass each connection's close on this much later, e.g. 2s (the proxy only).
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, conflicts_with = "netem")]
    pub slow_close: Option<std::time::Duration>,
}

/// Drive the lab with virtual users and watch what they suffer.
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(after_help = crate::load::LOAD_EXAMPLES)]
pub struct LoadArgs {
    /// What the users do: browse (product pages, hot set), sessions (login
    /// then GET /me), bank (deposit, read back, audit), mixed (all three),
    /// ping (GET / only, to measure the driver), work (GET /work, server CPU),
    /// render (server work, then a product read from the database, in turn),
    /// or pages (whole product pages, Zipf-popular, cached in the server's
    /// memory)
    #[arg(long, value_enum, default_value = "browse")]
    pub scenario: crate::load::Scenario,

    /// Open model: start R requests per second on a fixed schedule, whatever
    /// the answers; latency counts from the scheduled time
    #[arg(long, value_name = "R", value_parser = crate::load::parse_rate, conflicts_with = "users")]
    pub rate: Option<f64>,

    /// Closed model: U users, each sending its next request as soon as the
    /// last one is answered [default: 20]
    #[arg(long, value_name = "U", value_parser = clap::value_parser!(u32).range(1..=crate::load::MAX_USERS as i64))]
    pub users: Option<u32>,

    /// How long to send load (e.g. 30s, 2m; at most 1h)
    #[arg(long, value_name = "D", default_value = "30s", value_parser = crate::load::parse_duration, allow_hyphen_values = true)]
    pub duration: std::time::Duration,

    /// Give up on a request after this long (counted as a timeout); also the
    /// grace period for requests still in flight at the end
    #[arg(long, value_name = "D", default_value = "2s", value_parser = crate::load::parse_timeout, allow_hyphen_values = true)]
    pub timeout: std::time::Duration,

    /// Stop after N requests even if --duration has not passed
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Print the report as one JSON document on stdout (the live view goes to
    /// stderr)
    #[arg(long)]
    pub json: bool,

    /// Write every operation as a JSON line to FILE (time, user, kind, value,
    /// outcome ok/fail/unknown, status, server, latency)
    #[arg(long, value_name = "FILE")]
    pub history: Option<std::path::PathBuf>,

    /// No live view, only the report
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Open model: at most this many requests in flight (one connection each);
    /// beyond it requests start late and the report says so
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=crate::load::MAX_USERS as i64))]
    pub max_in_flight: u32,

    /// `work`: CPU milliseconds each request burns on the server (1..=5000)
    #[arg(long, value_name = "MS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub work_ms: u32,

    /// `pages`, `browse`, `mixed`: CPU milliseconds the server adds to every
    /// page, cached or not (the per-user work a cache cannot save), 0 to 5000
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub page_ms: u32,

    /// `browse`: share of reads that go to the 20 hot products, 0 to 1
    /// [default: 0.8]
    #[arg(long, value_name = "SHARE", value_parser = crate::load::parse_share)]
    pub hot_share: Option<f64>,

    /// `work`: share of requests, 0 to 1, that are heavy and burn --heavy-ms
    /// instead of --work-ms (requests of uneven cost) [default: 0]
    #[arg(long, value_name = "SHARE", value_parser = crate::load::parse_share)]
    pub heavy_share: Option<f64>,

    /// `work`: CPU milliseconds a heavy request burns (1..=5000)
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub heavy_ms: u32,

    /// Advanced: drive this URL instead of the lab's balancer, e.g. a
    /// benchmark server; loopback addresses only (127.0.0.1, ::1, localhost)
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
}

impl LoadArgs {
    /// The plan the load engine runs: everything but how the report is
    /// printed; the live view goes to stderr when stdout carries JSON.
    pub fn plan(&self) -> crate::load::LoadPlan {
        use crate::load::LiveView;
        crate::load::LoadPlan {
            scenario: self.scenario,
            rate: self.rate,
            users: self.users,
            duration: self.duration,
            timeout: self.timeout,
            requests: self.requests,
            history: self.history.clone(),
            max_in_flight: self.max_in_flight,
            work_ms: self.work_ms,
            page_ms: self.page_ms,
            hot_share: self.hot_share,
            heavy_share: self.heavy_share,
            heavy_ms: self.heavy_ms,
            target: self.target.clone(),
            live: match (self.quiet, self.json) {
                (true, _) => LiveView::Off,
                (false, true) => LiveView::Stderr,
                (false, false) => LiveView::Stdout,
            },
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SpofArgs {
    /// Time the lab gets to work around a lost part before it is judged.
    #[arg(long, value_name = "D", default_value = "15s", value_parser = humantime::parse_duration)]
    pub window: std::time::Duration,
    /// Time over which the success rate is measured after the window.
    #[arg(long, value_name = "D", default_value = "5s", value_parser = humantime::parse_duration)]
    pub measure: std::time::Duration,
    /// A part is a single point of failure when, without it, requests succeed
    /// less than this share as often as before its loss.
    #[arg(long, value_name = "SHARE", default_value_t = 0.9)]
    pub threshold: f64,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long the run lasts (at most 1h).
    #[arg(long, value_name = "D", default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// The faults to draw from, comma-separated [default: all of them]
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
    pub faults: Vec<crate::chaos::ChaosFault>,
    /// Seed of the schedule; a run prints its seed, so it can be replayed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Mean quiet time before each fault.
    #[arg(long, value_name = "D", default_value = "5s", value_parser = humantime::parse_duration)]
    pub gap: std::time::Duration,
    /// Mean time each fault is held before it is healed.
    #[arg(long, value_name = "D", default_value = "5s", value_parser = humantime::parse_duration)]
    pub hold: std::time::Duration,
    /// What the users do meanwhile (see `lab load --help`).
    #[arg(long, value_enum, default_value = "mixed")]
    pub scenario: crate::load::Scenario,
    /// How many users.
    #[arg(long, value_name = "U", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub users: u32,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LinkArgs {
    /// The service whose link breaks.
    pub name: String,
    /// Which link of the service's proxy: service (its port, the default)
    /// or wal (a replica's stream of the primary's changes).
    #[arg(long, value_name = "LINK")]
    pub link: Option<String>,
    /// Which way hangs: to-service, from-service or both (blackhole only).
    #[arg(long, value_name = "WAY", default_value = "both", value_parser = parse_direction)]
    pub direction: lab_contract::faultproxy::Direction,
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
            slow_close: self.slow_close,
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
    /// A database node that is a replica now, e.g. db-2.
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
