//! The lab as data: how many servers, which balancing strategy, where
//! sessions live, how many replicas and whether they are synchronous.
//!
//! A topology is what a student asks for. It comes from three layers, each
//! overriding the one before: built-in defaults, an optional `lab.toml`, and
//! the flags of `lab up`. Nothing here touches Docker: turning a topology
//! into containers is the job of `plan`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MAX_SERVERS: u8 = 16;
pub const MAX_REPLICAS: u8 = 3;
pub const DEFAULT_PORT: u16 = 8080;
/// Automatic failover needs 3 database nodes: a majority of 3 survives the
/// loss of one, a majority of 2 does not (see `failover`).
pub const MIN_REPLICAS_FOR_FAILOVER: u8 = 2;

fn toggle_off() -> Toggle {
    Toggle::Off
}

/// One balancer, or an HA pair sharing a floating address (DESIGN §3).
pub const MAX_BALANCERS: u8 = 2;

/// The knobs the CLI shares with the balancer and the app: one spelling
/// each, defined once in the contract crate.
pub use lab_contract::knobs::{Reads, Replication, Sessions, Strategy, Toggle};

/// CPU and memory limits for one kind of service (vertical scaling).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Number of CPUs, e.g. 0.5 (None: no limit).
    pub cpus: Option<f64>,
    /// Memory limit such as "256m" or "1g" (None: no limit).
    pub memory: Option<String>,
}

/// Limits per role; a lab.toml may set any of them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceSet {
    #[serde(default)]
    pub server: Resources,
    #[serde(default)]
    pub db: Resources,
    #[serde(default)]
    pub lb: Resources,
    #[serde(default)]
    pub redis: Resources,
}

/// How the balancer decides a server is dead or alive again (DESIGN §3):
/// active checks every `interval`, `fall` failures in a row take a server
/// down, `rise` passes bring it back; with `passive` on, a refused or reset
/// connection of a real request takes it down at once.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct HealthChecks {
    #[serde(with = "lab_contract::human_duration")]
    pub interval: Duration,
    #[serde(with = "lab_contract::human_duration")]
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub passive: Toggle,
}

impl Default for HealthChecks {
    /// Checks every 500 ms, down after 3 failures, up after 2 passes: a
    /// dead server is noticed in about 1.5 s, a window a student can see.
    /// The timeout is wider than the balancer's own default so that a
    /// server slowed by 200 ms does not look dead.
    fn default() -> Self {
        HealthChecks {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            passive: Toggle::On,
        }
    }
}

impl HealthChecks {
    /// The longest a dead server keeps getting requests when only the
    /// active checks can notice: `fall` failed checks, `interval` apart
    /// (the first may come right after the death, or one interval later).
    pub fn detection_window(&self) -> Duration {
        self.interval * self.fall
    }

    /// How long a server that came back waits before it gets traffic.
    pub fn recovery_window(&self) -> Duration {
        self.interval * self.rise
    }

    /// A hung server (accepts, never answers) fails each check only after
    /// the check's timeout: `fall` checks of `max(interval, timeout)`.
    pub fn hung_window(&self) -> Duration {
        self.interval.max(self.timeout) * self.fall
    }

    /// The longest the active checks can take: each of the `fall` rounds
    /// may wait a whole timeout on the dead server before the next interval
    /// starts (what the health-checks lesson measured on a busy laptop).
    pub fn slowest_detection(&self) -> Duration {
        (self.interval + self.timeout) * self.fall
    }

    /// "3 checks 500 ms apart, about 1.5 s", for messages.
    pub fn describe_detection(&self) -> String {
        format!(
            "{} checks {} ms apart, about {:.1} s",
            self.fall,
            self.interval.as_millis(),
            self.detection_window().as_secs_f64()
        )
    }
}

/// The contents of a `lab.toml`. Every key is optional; unknown keys are an
/// error so a typo does not silently fall back to a default.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    pub servers: Option<u32>,
    pub lb: Option<Strategy>,
    pub retries: Option<Toggle>,
    pub sessions: Option<Sessions>,
    pub cache: Option<Toggle>,
    pub cache_ttl: Option<String>,
    pub replicas: Option<u32>,
    pub replication: Option<Replication>,
    pub failover: Option<Toggle>,
    pub reads: Option<Reads>,
    pub port: Option<u16>,
    pub product_query_ms: Option<u32>,
    pub health_interval: Option<String>,
    pub health_timeout: Option<String>,
    pub health_fall: Option<u32>,
    pub health_rise: Option<u32>,
    pub passive: Option<Toggle>,
    /// 1, or 2 for an HA pair (lb-1, lb-2, keepalived and a floating address).
    pub balancers: Option<u32>,
    /// VRRP's advertisement interval of an HA pair, whole seconds (`1s`).
    pub advert_int: Option<String>,
    #[serde(default)]
    pub resources: ResourceSet,
}

/// Named bundles of knobs, one per stage of the course. A preset sits
/// between the defaults and a lab.toml: the file and the flags still win.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The naive start: memory sessions, no retries, no cache, async replica.
    Naive,
    /// One server, no replica: the lab before any scaling.
    Single,
    /// Sticky sessions keep memory sessions working (until a crash).
    Sticky,
    /// Stateless servers: sessions in Redis, retries on.
    Stateless,
    /// Stateless plus a cache in front of the database.
    Cached,
    /// Everything the course adds: Redis sessions, cache, retries, a pair
    /// of balancers, and 3 database nodes (synchronous replication) that
    /// fail over by themselves: no single machine's loss stops the site's
    /// database.
    Full,
}

impl Preset {
    pub fn file(self) -> LabFile {
        let mut f = LabFile::default();
        match self {
            Preset::Naive => {}
            Preset::Single => {
                f.servers = Some(1);
                f.replicas = Some(0);
            }
            Preset::Sticky => f.lb = Some(Strategy::Sticky),
            Preset::Stateless => {
                f.sessions = Some(Sessions::Redis);
                f.retries = Some(Toggle::On);
            }
            Preset::Cached => {
                f.sessions = Some(Sessions::Redis);
                f.retries = Some(Toggle::On);
                f.cache = Some(Toggle::On);
            }
            Preset::Full => {
                f.sessions = Some(Sessions::Redis);
                f.retries = Some(Toggle::On);
                f.cache = Some(Toggle::On);
                f.replication = Some(Replication::Sync);
                f.balancers = Some(2);
                f.replicas = Some(u32::from(MIN_REPLICAS_FOR_FAILOVER));
            }
        }
        f
    }
}

/// A lab.toml laid over a preset: every key the file sets wins.
pub fn layer(base: LabFile, top: LabFile) -> LabFile {
    LabFile {
        servers: top.servers.or(base.servers),
        lb: top.lb.or(base.lb),
        retries: top.retries.or(base.retries),
        sessions: top.sessions.or(base.sessions),
        cache: top.cache.or(base.cache),
        cache_ttl: top.cache_ttl.or(base.cache_ttl),
        replicas: top.replicas.or(base.replicas),
        replication: top.replication.or(base.replication),
        failover: top.failover.or(base.failover),
        reads: top.reads.or(base.reads),
        port: top.port.or(base.port),
        product_query_ms: top.product_query_ms.or(base.product_query_ms),
        health_interval: top.health_interval.or(base.health_interval),
        health_timeout: top.health_timeout.or(base.health_timeout),
        health_fall: top.health_fall.or(base.health_fall),
        health_rise: top.health_rise.or(base.health_rise),
        passive: top.passive.or(base.passive),
        balancers: top.balancers.or(base.balancers),
        advert_int: top.advert_int.or(base.advert_int),
        resources: if top.resources == ResourceSet::default() {
            base.resources
        } else {
            top.resources
        },
    }
}

/// A fully resolved lab: every knob has a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Topology {
    pub servers: u8,
    pub lb: Strategy,
    pub retries: Toggle,
    pub sessions: Sessions,
    pub cache: Toggle,
    pub cache_ttl: String,
    pub replicas: u8,
    pub replication: Replication,
    /// Automatic failover of the primary by a manager (Patroni with etcd);
    /// needs 3 database nodes. Older labs' labels have none: they had none.
    #[serde(default = "toggle_off")]
    pub failover: Toggle,
    pub reads: Reads,
    /// The balancer's loopback port; 0 lets the OS pick.
    pub port: u16,
    pub product_query_ms: u32,
    /// Older labs' labels have no health settings: they ran the defaults.
    #[serde(default)]
    pub health: HealthChecks,
    pub resources: ResourceSet,
    /// How many balancers: 1, or 2 for an HA pair. Older labs' labels have
    /// none: they ran one.
    #[serde(default = "one")]
    pub balancers: u8,
    /// VRRP's advertisement interval in an HA pair: the backup takes over
    /// after 3 x advert_int + skew without an advert.
    #[serde(default = "one_second", with = "lab_contract::human_duration")]
    pub advert_int: Duration,
}

fn one() -> u8 {
    1
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl Default for Topology {
    /// The naive architecture a course starts from: several servers behind
    /// a round-robin balancer, sessions in memory, no retries, no cache, one
    /// asynchronous replica. Each lesson then fixes one of its problems.
    fn default() -> Self {
        Topology {
            servers: 3,
            lb: Strategy::RoundRobin,
            retries: Toggle::Off,
            sessions: Sessions::Memory,
            cache: Toggle::Off,
            cache_ttl: "30s".into(),
            replicas: 1,
            replication: Replication::Async,
            failover: Toggle::Off,
            reads: Reads::Replicas,
            port: DEFAULT_PORT,
            product_query_ms: 50,
            health: HealthChecks::default(),
            resources: ResourceSet::default(),
            balancers: 1,
            advert_int: one_second(),
        }
    }
}

#[derive(Error, Debug, PartialEq)]
pub enum TopologyError {
    #[error("cannot read {path}: {reason}; check the path given to -f")]
    FileUnreadable { path: String, reason: String },
    #[error("{path} is not a valid lab.toml: {reason}")]
    FileInvalid { path: String, reason: String },
    #[error("--servers {0} is out of range: use 1 to {MAX_SERVERS}")]
    Servers(u32),
    #[error("--replicas {0} is out of range: use 0 to {MAX_REPLICAS}")]
    Replicas(u32),
    #[error("--balancers {0} is out of range: use 1 (one balancer) or 2 (an HA pair with a floating address)")]
    Balancers(u32),
    #[error(
        "--reads replicas needs at least one replica: add --replicas 1 or use --reads primary"
    )]
    ReadsWithoutReplicas,
    #[error("--replication sync needs at least one replica: add --replicas 1 or use --replication async")]
    SyncWithoutReplicas,
    #[error("--failover on needs 3 database nodes (--replicas 2): with {nodes}, the manager's consensus loses its majority when either node dies; add --replicas 2 or use --failover off")]
    FailoverWithoutQuorum { nodes: u8 },
    #[error("invalid {what} {value:?}: {hint}")]
    Value {
        what: &'static str,
        value: String,
        hint: &'static str,
    },
}

impl Topology {
    /// Defaults under the layers given (preset, file and flags, already laid
    /// one over the other with [`layer`]). `reads` defaults to the replicas
    /// when there are any and to the primary when there are none, so
    /// `--replicas 0` alone is a valid lab.
    pub fn resolve(f: &LabFile) -> Result<Topology, TopologyError> {
        let d = Topology::default();
        let servers = f.servers.unwrap_or(d.servers.into());
        if !(1..=MAX_SERVERS.into()).contains(&servers) {
            return Err(TopologyError::Servers(servers));
        }
        let replicas = f.replicas.unwrap_or(d.replicas.into());
        if replicas > MAX_REPLICAS.into() {
            return Err(TopologyError::Replicas(replicas));
        }
        let balancers = f.balancers.unwrap_or(d.balancers.into());
        if !(1..=MAX_BALANCERS.into()).contains(&balancers) {
            return Err(TopologyError::Balancers(balancers));
        }
        // Both fit in a u8 now that they are in range.
        let (servers, replicas) = (servers as u8, replicas as u8);
        let default_reads = if replicas == 0 {
            Reads::Primary
        } else {
            Reads::Replicas
        };
        let t = Topology {
            servers,
            lb: f.lb.unwrap_or(d.lb),
            retries: f.retries.unwrap_or(d.retries),
            sessions: f.sessions.unwrap_or(d.sessions),
            cache: f.cache.unwrap_or(d.cache),
            cache_ttl: f.cache_ttl.clone().unwrap_or(d.cache_ttl),
            replicas,
            replication: f.replication.unwrap_or(d.replication),
            // On wherever it can work: a lab with 3 database nodes gets a
            // manager unless asked not to.
            failover: f
                .failover
                .unwrap_or(Toggle::from_bool(replicas >= MIN_REPLICAS_FOR_FAILOVER)),
            reads: f.reads.unwrap_or(default_reads),
            port: f.port.unwrap_or(d.port),
            product_query_ms: f.product_query_ms.unwrap_or(d.product_query_ms),
            health: HealthChecks {
                interval: file_duration("health_interval", &f.health_interval)?
                    .unwrap_or(d.health.interval),
                timeout: file_duration("health_timeout", &f.health_timeout)?
                    .unwrap_or(d.health.timeout),
                fall: f.health_fall.unwrap_or(d.health.fall),
                rise: f.health_rise.unwrap_or(d.health.rise),
                passive: f.passive.unwrap_or(d.health.passive),
            },
            resources: f.resources.clone(),
            balancers: balancers as u8,
            advert_int: file_duration("advert_int", &f.advert_int)?.unwrap_or(d.advert_int),
        };
        t.validate()?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<(), TopologyError> {
        if !(1..=MAX_SERVERS).contains(&self.servers) {
            return Err(TopologyError::Servers(self.servers.into()));
        }
        if self.replicas > MAX_REPLICAS {
            return Err(TopologyError::Replicas(self.replicas.into()));
        }
        if !(1..=MAX_BALANCERS).contains(&self.balancers) {
            return Err(TopologyError::Balancers(self.balancers.into()));
        }
        // VRRPv2 (which has the password) counts adverts in whole seconds.
        let a = self.advert_int;
        if a.subsec_nanos() != 0 || !(1..=255).contains(&a.as_secs()) {
            return Err(TopologyError::Value {
                what: "advert_int",
                value: humantime::format_duration(a).to_string(),
                hint: "use whole seconds from 1s to 255s (VRRPv2 counts in seconds)",
            });
        }
        if self.replicas == 0 && self.reads == Reads::Replicas {
            return Err(TopologyError::ReadsWithoutReplicas);
        }
        if self.replicas == 0 && self.replication == Replication::Sync {
            return Err(TopologyError::SyncWithoutReplicas);
        }
        if self.failover.is_on() && self.replicas < MIN_REPLICAS_FOR_FAILOVER {
            return Err(TopologyError::FailoverWithoutQuorum {
                nodes: self.replicas + 1,
            });
        }
        if humantime::parse_duration(&self.cache_ttl).is_err() {
            return Err(TopologyError::Value {
                what: "cache_ttl",
                value: self.cache_ttl.clone(),
                hint: "use a duration such as 30s or 5m",
            });
        }
        let h = &self.health;
        if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&h.interval) {
            return Err(TopologyError::Value {
                what: "health interval",
                value: humantime::format_duration(h.interval).to_string(),
                hint: "use a duration between 50ms and 60s",
            });
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&h.timeout) {
            return Err(TopologyError::Value {
                what: "health timeout",
                value: humantime::format_duration(h.timeout).to_string(),
                hint: "use a duration between 10ms and 60s",
            });
        }
        for (what, n) in [("health fall", h.fall), ("health rise", h.rise)] {
            if !(1..=20).contains(&n) {
                return Err(TopologyError::Value {
                    what,
                    value: n.to_string(),
                    hint: "use a count of checks between 1 and 20",
                });
            }
        }
        for (what, r) in [
            ("resources.server", &self.resources.server),
            ("resources.db", &self.resources.db),
            ("resources.lb", &self.resources.lb),
            ("resources.redis", &self.resources.redis),
        ] {
            if let Some(c) = r.cpus {
                if !(0.01..=64.0).contains(&c) {
                    return Err(TopologyError::Value {
                        what,
                        value: c.to_string(),
                        hint: "cpus must be between 0.01 and 64",
                    });
                }
            }
            if let Some(m) = &r.memory {
                if parse_memory(m).is_none() {
                    return Err(TopologyError::Value {
                        what,
                        value: m.clone(),
                        hint: "memory must look like 256m or 1g (at least 6m)",
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the database nodes run a failover manager.
    pub fn managed_db(&self) -> bool {
        self.failover.is_on() && self.replicas >= MIN_REPLICAS_FOR_FAILOVER
    }

    /// Every service of this topology, in start order.
    pub fn services(&self) -> Vec<Service> {
        use crate::roles::names;
        let mut v: Vec<Service> = names::db_nodes(self.replicas)
            .iter()
            .map(|n| Service::new(n, Role::Database))
            .collect();
        v.push(Service::new(names::REDIS, Role::Redis));
        v.extend((1..=self.servers).map(|i| Service::new(&names::server(i), Role::Server)));
        v.push(Service::new(names::BALANCER, Role::Lb));
        if self.balancers >= 2 {
            v.push(Service::new(names::BALANCER_2, Role::Lb));
            v.push(Service::new(names::EDGE, Role::Edge));
        }
        v
    }

    /// Whether the lab runs an HA pair of balancers behind an edge.
    pub fn ha(&self) -> bool {
        self.balancers >= 2
    }
}

/// A duration written in a lab.toml.
fn file_duration(
    what: &'static str,
    v: &Option<String>,
) -> Result<Option<Duration>, TopologyError> {
    v.as_deref()
        .map(|text| {
            humantime::parse_duration(text).map_err(|_| TopologyError::Value {
                what,
                value: text.to_string(),
                hint: "use a duration such as 500ms or 1s",
            })
        })
        .transpose()
}

/// Read and parse a lab.toml.
pub fn load_file(path: &Path) -> Result<LabFile, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError::FileUnreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| TopologyError::FileInvalid {
        path: path.display().to_string(),
        reason: e.message().to_string(),
    })
}

/// Docker's memory notation (`256m`, `1g`, `512k`, bytes) to bytes.
/// Docker refuses limits under 6 MiB, so we do too, with a clearer message.
pub fn parse_memory(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last()? {
        'k' => (&s[..s.trim_end_matches('b').len() - 1], 1i64 << 10),
        'm' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 20),
        'g' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    let n: f64 = num.parse().ok()?;
    let bytes = (n * mult as f64) as i64;
    (bytes >= 6 << 20).then_some(bytes)
}

/// What a service is for; stored as a label so the CLI can tell a database
/// node from a server without parsing names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Lb,
    Server,
    Redis,
    /// A database node (db-N): primary or replica, which can change while
    /// it runs; `crate::primary` says which it is now.
    Database,
    /// Stands for the internet in front of an HA pair: not part of the site.
    Edge,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Lb,
        Role::Server,
        Role::Redis,
        Role::Database,
        Role::Edge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lb => "lb",
            Role::Server => "server",
            Role::Redis => "redis",
            Role::Database => "database",
            Role::Edge => "edge",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named service of the lab, e.g. `server-2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub role: Role,
}

impl Service {
    pub fn new(name: &str, role: Role) -> Service {
        Service {
            name: name.to_string(),
            role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::UpArgs;

    /// What `lab up` does: the flags laid over the file.
    fn resolve_with(file: Option<&LabFile>, flags: &UpArgs) -> Result<Topology, TopologyError> {
        Topology::resolve(&layer(file.cloned().unwrap_or_default(), flags.as_layer()))
    }

    #[test]
    fn defaults_are_the_naive_architecture() {
        let t = resolve_with(None, &UpArgs::default()).unwrap();
        assert_eq!(t.servers, 3);
        assert_eq!(t.sessions, Sessions::Memory);
        assert_eq!(t.reads, Reads::Replicas);
        let names: Vec<_> = t.services().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["db-1", "db-2", "redis", "server-1", "server-2", "server-3", "lb-1"]
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: LabFile =
            toml::from_str("servers = 2\nsessions = \"redis\"\nlb = \"sticky\"").unwrap();
        let flags = UpArgs {
            servers: Some(4),
            ..Default::default()
        };
        let t = resolve_with(Some(&file), &flags).unwrap();
        assert_eq!(t.servers, 4);
        assert_eq!(t.sessions, Sessions::Redis);
        assert_eq!(t.lb, Strategy::Sticky);
    }

    #[test]
    fn presets_sit_under_the_file_and_the_flags() {
        let file: LabFile = toml::from_str("cache = \"off\"").unwrap();
        let merged = layer(Preset::Full.file(), file);
        let flags = UpArgs {
            servers: Some(2),
            ..Default::default()
        };
        let t = resolve_with(Some(&merged), &flags).unwrap();
        assert_eq!(t.sessions, Sessions::Redis);
        assert_eq!(t.replication, Replication::Sync);
        assert_eq!(t.cache, Toggle::Off);
        assert_eq!(t.servers, 2);
        // The full preset is the course's last row: 3 nodes, so failover.
        assert_eq!((t.replicas, t.failover), (2, Toggle::On));
        let single = resolve_with(Some(&Preset::Single.file()), &UpArgs::default()).unwrap();
        assert_eq!(
            (single.servers, single.replicas, single.reads),
            (1, 0, Reads::Primary)
        );
    }

    #[test]
    fn no_replicas_means_reads_from_the_primary() {
        let flags = UpArgs {
            replicas: Some(0),
            ..Default::default()
        };
        let t = resolve_with(None, &flags).unwrap();
        assert_eq!(t.reads, Reads::Primary);
    }

    #[test]
    fn bad_topologies_name_the_fix() {
        let cases = [
            (
                UpArgs {
                    servers: Some(0),
                    ..Default::default()
                },
                TopologyError::Servers(0),
            ),
            (
                UpArgs {
                    servers: Some(17),
                    ..Default::default()
                },
                TopologyError::Servers(17),
            ),
            (
                UpArgs {
                    replicas: Some(4),
                    ..Default::default()
                },
                TopologyError::Replicas(4),
            ),
            (
                UpArgs {
                    servers: Some(300),
                    ..Default::default()
                },
                TopologyError::Servers(300),
            ),
            (
                UpArgs {
                    replicas: Some(0),
                    reads: Some(Reads::Replicas),
                    ..Default::default()
                },
                TopologyError::ReadsWithoutReplicas,
            ),
            (
                UpArgs {
                    replicas: Some(0),
                    replication: Some(Replication::Sync),
                    ..Default::default()
                },
                TopologyError::SyncWithoutReplicas,
            ),
        ];
        for (flags, want) in cases {
            assert_eq!(resolve_with(None, &flags).unwrap_err(), want);
        }
    }

    #[test]
    fn two_balancers_add_lb_2_and_the_edge_and_three_are_refused() {
        let file: LabFile = toml::from_str("balancers = 2\nadvert_int = \"2s\"").unwrap();
        let t = resolve_with(Some(&file), &UpArgs::default()).unwrap();
        assert_eq!((t.balancers, t.advert_int), (2, Duration::from_secs(2)));
        let names: Vec<_> = t.services().into_iter().map(|s| s.name).collect();
        assert!(names.ends_with(&["lb-1".into(), "lb-2".into(), "edge".into()]));
        let one = resolve_with(None, &UpArgs::default()).unwrap();
        assert!(!one
            .services()
            .iter()
            .any(|s| s.name == "lb-2" || s.name == "edge"));
        let three = UpArgs {
            balancers: Some(3),
            ..Default::default()
        };
        let e = resolve_with(None, &three).unwrap_err();
        assert_eq!(e, TopologyError::Balancers(3));
        assert!(e.to_string().contains("use 1") && !e.to_string().contains('\n'));
        let half: LabFile = toml::from_str("advert_int = \"500ms\"").unwrap();
        let e = resolve_with(Some(&half), &UpArgs::default()).unwrap_err();
        assert!(e.to_string().contains("whole seconds"), "{e}");
        // A label written before the knob existed reads as one balancer.
        let mut v = serde_json::to_value(Topology::default()).unwrap();
        v.as_object_mut().unwrap().remove("balancers");
        v.as_object_mut().unwrap().remove("advert_int");
        let old: Topology = serde_json::from_value(v).unwrap();
        assert_eq!((old.balancers, old.advert_int), (1, Duration::from_secs(1)));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let err = toml::from_str::<LabFile>("servres = 2").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
    }

    #[test]
    fn memory_notation() {
        assert_eq!(parse_memory("256m"), Some(256 << 20));
        assert_eq!(parse_memory("1g"), Some(1 << 30));
        assert_eq!(parse_memory("1GB"), Some(1 << 30));
        assert_eq!(parse_memory("1k"), None);
        assert_eq!(parse_memory("lots"), None);
    }
}
