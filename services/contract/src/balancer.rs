//! # The balancer's configuration file
//!
//! A load balancer is mostly configuration: *where* to listen, *which*
//! servers sit behind it, *how* to pick one for each request, and *when* to
//! give up on one. `lab up` writes this file for each balancer it starts and
//! the balancer reads it back: both use [`Config`], so what one writes is
//! exactly what the other reads.
//!
//! Every key has a default (see `services/balancer/README.md` for the table
//! and the nginx/HAProxy directive each key corresponds to), so the smallest
//! useful file is a list of `[[upstream]]` servers. A key the balancer does
//! not know is an error that names the key: a typo such as `intervall` must
//! not silently fall back to a default and leave the student wondering why
//! the lesson behaves differently.
//!
//! Durations are written the human way (`"500ms"`, `"2s"`, `"1m"`), read and
//! written by the `humantime` crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use serde::{Deserialize, Serialize};

use crate::knobs::Strategy;

/// Default proxy port (nginx `listen 8080`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin API port.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9000";
/// Default sticky cookie name.
pub const DEFAULT_STICKY_COOKIE: &str = "lab_server";

/// Largest request body buffered so that an idempotent request can be replayed
/// on another server (nginx `client_max_body_size 1m`). Larger bodies of
/// idempotent requests are refused with 413 while retries are on.
pub const MAX_REPLAY_BODY: usize = 1024 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the proxy (where clients connect).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the admin API, `/metrics` and `/healthz`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Proxy worker threads, each with its own event loop and connection
    /// pool (nginx `worker_processes`); 0 means one per CPU core.
    #[serde(default)]
    pub workers: usize,
    /// How a server is picked for each request.
    #[serde(default)]
    pub strategy: Strategy,
    /// Retry a failed idempotent request once on another server.
    #[serde(default = "default_true")]
    pub retries: bool,
    /// Name of the cookie that pins a client to a server (strategy `sticky`).
    #[serde(default = "default_sticky_cookie")]
    pub sticky_cookie: String,
    /// The servers behind the balancer.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Passive health checks (failures of real requests).
    #[serde(default)]
    pub passive: PassiveConfig,
    /// Time limits.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
}

/// One `[[upstream]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The server's name as shown everywhere (`server-1`).
    pub name: String,
    /// `host:port`; the host is resolved by DNS at every new connection.
    pub address: String,
}

/// `[health]`: active checks, HAProxy style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path requested with `GET`; a 2xx or 3xx answer is a pass.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between two checks of one server.
    #[serde(default = "default_interval", with = "crate::human_duration")]
    pub interval: Duration,
    /// A check without an answer within this time fails.
    #[serde(default = "default_check_timeout", with = "crate::human_duration")]
    pub timeout: Duration,
    /// Consecutive failed checks that take an up server down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Consecutive passed checks that bring a down server back up.
    #[serde(default = "default_rise")]
    pub rise: u32,
}

/// `[passive]`: failures of real requests, nginx style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Failed requests within `fail_timeout` that take a server down
    /// (0 turns passive checks off). A refused or reset connection takes it
    /// down at once, whatever this says, unless it is 0.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// The window in which failures are counted, and the least time a server
    /// taken down by passive checks stays down.
    #[serde(default = "default_fail_timeout", with = "crate::human_duration")]
    pub fail_timeout: Duration,
}

/// `[timeouts]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Time to open a TCP connection to a server.
    #[serde(default = "default_connect", with = "crate::human_duration")]
    pub connect: Duration,
    /// Time from sending the request to the server's response headers;
    /// past it the client gets 504.
    #[serde(default = "default_response", with = "crate::human_duration")]
    pub response: Duration,
    /// How long an idle keep-alive connection to a server is kept in the pool.
    #[serde(default = "default_upstream_keepalive", with = "crate::human_duration")]
    pub upstream_keepalive: Duration,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[serde(default = "default_shutdown", with = "crate::human_duration")]
    pub shutdown: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: default_interval(),
            timeout: default_check_timeout(),
            fall: default_fall(),
            rise: default_rise(),
        }
    }
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            max_fails: default_max_fails(),
            fail_timeout: default_fail_timeout(),
        }
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            response: default_response(),
            upstream_keepalive: default_upstream_keepalive(),
            shutdown: default_shutdown(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            workers: 0,
            strategy: Strategy::default(),
            retries: true,
            sticky_cookie: default_sticky_cookie(),
            upstreams: Vec::new(),
            health: HealthConfig::default(),
            passive: PassiveConfig::default(),
            timeouts: TimeoutConfig::default(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What TOML said, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The values parse but make no sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Worker threads to run: `workers`, or one per CPU core when 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The file's text, as `lab up` writes it into a balancer's container.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises")
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that TOML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.health.fall == 0 {
            return invalid("health.fall must be at least 1".into());
        }
        if self.health.rise == 0 {
            return invalid("health.rise must be at least 1".into());
        }
        if self.health.interval.is_zero() {
            return invalid("health.interval must be more than 0".into());
        }
        if self.health.timeout.is_zero() {
            return invalid("health.timeout must be more than 0".into());
        }
        if !self.health.path.starts_with('/') {
            return invalid(format!(
                "health.path must start with '/', got {:?}",
                self.health.path
            ));
        }
        if self.timeouts.connect.is_zero() || self.timeouts.response.is_zero() {
            return invalid("timeouts.connect and timeouts.response must be more than 0".into());
        }
        if self.sticky_cookie.is_empty()
            || !self
                .sticky_cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return invalid(format!(
                "sticky_cookie must be letters, digits, '_' or '-', got {:?}",
                self.sticky_cookie
            ));
        }
        if self.workers > 1024 {
            return invalid(format!(
                "workers = {} is too many (at most 1024)",
                self.workers
            ));
        }
        validate_upstreams(&self.upstreams).map_err(ConfigError::Invalid)
    }
}

/// Why a server address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Not `host:port`.
    #[error("address {0:?} must be host:port, e.g. \"server-1:8000\" (a port is required)")]
    Malformed(String),
}

/// Checks that `address` is `host:port` and turns it into a URI authority.
pub fn parse_address(address: &str) -> Result<Authority, AddressError> {
    let authority: Authority = address
        .parse()
        .map_err(|_| AddressError::Malformed(address.to_owned()))?;
    if authority.port_u16().is_none()
        || authority.host().is_empty()
        || authority.as_str().contains('@')
    {
        return Err(AddressError::Malformed(address.to_owned()));
    }
    Ok(authority)
}

/// Checks a list of servers: names non-empty and unique, addresses `host:port`.
/// Used for the file and for `PUT /servers`.
pub fn validate_upstreams(upstreams: &[UpstreamConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for u in upstreams {
        if u.name.is_empty()
            || u.name
                .chars()
                .any(|c| c.is_whitespace() || c == ';' || c == ',')
        {
            return Err(format!(
                "upstream name {:?} must be non-empty, without spaces, ';' or ','",
                u.name
            ));
        }
        if !seen.insert(u.name.as_str()) {
            return Err(format!("upstream name {:?} appears twice", u.name));
        }
        parse_address(&u.address).map_err(|e| format!("upstream {:?}: {e}", u.name))?;
    }
    Ok(())
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}
fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN
        .parse()
        .expect("constant address parses")
}
fn default_true() -> bool {
    true
}
fn default_sticky_cookie() -> String {
    DEFAULT_STICKY_COOKIE.to_owned()
}
fn default_health_path() -> String {
    "/healthz".to_owned()
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_check_timeout() -> Duration {
    Duration::from_millis(300)
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}
fn default_max_fails() -> u32 {
    1
}
fn default_fail_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_connect() -> Duration {
    Duration::from_millis(200)
}
fn default_response() -> Duration {
    Duration::from_secs(10)
}
fn default_upstream_keepalive() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown() -> Duration {
    Duration::from_secs(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
listen = "0.0.0.0:8080"
admin_listen = "0.0.0.0:9000"
strategy = "round-robin"
retries = true
sticky_cookie = "lab_server"
[[upstream]]
name = "server-1"
address = "server-1:8000"
[[upstream]]
name = "server-2"
address = "10.1.2.3:8000"
[health]
path = "/healthz"
interval = "500ms"
timeout = "300ms"
fall = 3
rise = 2
[passive]
max_fails = 1
fail_timeout = "2s"
[timeouts]
connect = "200ms"
response = "10s"
"#;

    #[test]
    fn the_contract_example_parses() {
        let c = Config::parse(FULL).unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[1].address, "10.1.2.3:8000");
        assert_eq!(c.health.interval, Duration::from_millis(500));
        assert_eq!(c.passive.fail_timeout, Duration::from_secs(2));
        assert_eq!(c.timeouts.response, Duration::from_secs(10));
        assert_eq!(c.strategy, Strategy::RoundRobin);
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let mut c = Config::parse(FULL).unwrap();
        c.strategy = Strategy::Sticky;
        c.health.interval = Duration::from_millis(1500);
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        assert_eq!(
            Config::parse(&Config::default().to_toml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn an_empty_file_gets_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.health.interval, Duration::from_millis(500));
        assert_eq!(c.health.fall, 3);
        assert_eq!(c.health.rise, 2);
        assert_eq!(c.timeouts.connect, Duration::from_millis(200));
        assert!(c.retries);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::parse("strategyy = \"sticky\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("strategyy"), "{err}");
        let err = Config::parse("[health]\nintervall = \"1s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall"), "{err}");
        let err = Config::parse("[[upstream]]\nname = \"a\"\naddress = \"a:1\"\nweight = 2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = Config::parse("strategy = \"random\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("random") && err.contains("least-conn"),
            "{err}"
        );
        let err = Config::parse("[health]\ninterval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
        let err = Config::parse("[health]\nfall = 0").unwrap_err().to_string();
        assert!(err.contains("fall"), "{err}");
        let dup = "[[upstream]]\nname = \"a\"\naddress = \"a:1\"\n[[upstream]]\nname = \"a\"\naddress = \"b:1\"";
        assert!(Config::parse(dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let noport = "[[upstream]]\nname = \"a\"\naddress = \"server-1\"";
        assert!(Config::parse(noport)
            .unwrap_err()
            .to_string()
            .contains("port"));
    }
}
