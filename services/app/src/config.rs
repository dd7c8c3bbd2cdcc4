//! Configuration, read once at start from environment variables.
//!
//! A container gets its settings the twelve-factor way: through its
//! environment. The lab's orchestrator sets these variables when it creates a
//! `server-N` container, so their names are a contract (see the README for the
//! full table).
//!
//! Parsing is strict on purpose: a typo such as `SESSION_STORE=reddis` must
//! stop the server at once with one line naming the variable, instead of
//! silently falling back to a default and leaving a student wondering why
//! sessions are not shared. An empty variable counts as unset, because
//! orchestrators often pass `FOO=` for "not used".

use std::{collections::HashSet, str::FromStr, time::Duration};

use sqlx::postgres::PgConnectOptions;

use lab_contract::app::env;
use lab_contract::knobs::Toggle;
pub use lab_contract::knobs::{Reads, Sessions};

/// One PostgreSQL server the app talks to.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// The name shown to users (`db-1`, `db-2`): the URL's host,
    /// or `host:port` when two configured databases share a host (tests).
    pub name: String,
    /// The URL as given, kept to build the connection options.
    pub url: String,
}

/// Every setting of the app, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SERVER_NAME`: who this server is, sent back in `X-Served-By`.
    pub server_name: String,
    /// `BIND`: the address to listen on.
    pub bind: String,
    /// `PORT`: the port to listen on.
    pub port: u16,
    /// `SESSION_STORE`.
    pub session_store: Sessions,
    /// `REDIS_URL`, present when sessions or the cache need Redis.
    pub redis_url: Option<String>,
    /// `DATABASE_URL`: the primary.
    pub primary: DbTarget,
    /// `REPLICA_URLS`: the streaming replicas, possibly none.
    pub replicas: Vec<DbTarget>,
    /// `FOLLOW_PRIMARY=on`: the primary may move to another of the
    /// configured databases (a failover); find it and follow it.
    pub follow_primary: bool,
    /// `READS`.
    pub reads: Reads,
    /// `CACHE=on`: cache-aside for product reads.
    pub cache: bool,
    /// `CACHE_TTL`: how long a cached product lives.
    pub cache_ttl: Duration,
    /// `PRODUCT_QUERY_MS`: the deliberate database cost of one product read.
    pub product_query_ms: u64,
    /// `SESSION_SECRET`: signs cookies and JWTs (at least 32 bytes).
    pub session_secret: Option<Vec<u8>>,
    /// `WRITE_TIMEOUT`: how long a deposit may wait for the primary.
    pub write_timeout: Duration,
    /// `WORK_THREADS`: how many `/work` requests burn CPU at the same time;
    /// the others wait their turn, like requests for a fixed worker pool.
    pub work_threads: usize,
    /// `FAULTPROXY_LINKS` and `FAULTPROXY_ADMIN`: the fault proxy's links,
    /// run inside this process; `None` when no link is given.
    pub fault_proxy: Option<FaultProxy>,
}

/// The fault proxy in front of this server, written by `lab up` in the
/// same variables the proxy's own binary reads. The app runs the links
/// itself ([`lab_faultproxy::local`]): the link whose upstream is the
/// app's own port on loopback hands its connections straight to the app,
/// with no second TCP hop; any other link is an ordinary proxied one.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub links: Vec<lab_faultproxy::LinkSpec>,
    /// Where the proxy's admin API listens.
    pub admin: std::net::SocketAddr,
    /// The link in front of the app's own port, if one is.
    pub own_link: Option<String>,
}

impl FaultProxy {
    fn from_vars(
        links: Option<String>,
        admin: Option<String>,
        port: u16,
    ) -> Result<Option<Self>, ConfigError> {
        use lab_contract::faultproxy::env as proxy_env;
        let Some(links) = links else {
            return Ok(None);
        };
        let links = links
            .split(',')
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.parse::<lab_faultproxy::LinkSpec>()
                    .map_err(|e| ConfigError(format!("{}: {e}", proxy_env::LINKS)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin = admin.unwrap_or_else(|| "127.0.0.1:9100".into());
        let admin = admin.trim().parse().map_err(|_| {
            ConfigError(format!(
                "{} must be IP:PORT such as 0.0.0.0:9100 (got {admin:?})",
                proxy_env::ADMIN
            ))
        })?;
        let own = [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let own_link = links
            .iter()
            .find(|l| own.contains(&l.upstream))
            .map(|l| l.name.clone());
        Ok(Some(Self {
            links,
            admin,
            own_link,
        }))
    }
}

/// A configuration mistake; its message is the whole line printed after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The longest product cost we accept: a product read must stay well under
/// the balancer's and the load driver's timeouts.
pub const MAX_PRODUCT_QUERY_MS: u64 = 10_000;
/// The shortest secret accepted: HS256 wants a key at least as long as its hash.
pub const MIN_SECRET_LEN: usize = 32;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests can pass a map
    /// instead of mutating the (process-global) environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let server_name = get(env::SERVER_NAME)
            .ok_or_else(|| ConfigError("SERVER_NAME is required (e.g. server-1)".into()))?;
        if !valid_name(&server_name) {
            return Err(ConfigError(format!(
                "SERVER_NAME must be 1 to 64 characters of A-Z a-z 0-9 _ . - (got {server_name:?})"
            )));
        }

        let port = match get(env::PORT) {
            None => 8000,
            Some(raw) => raw.trim().parse::<u16>().map_err(|_| {
                ConfigError(format!("PORT must be a port number 0-65535 (got {raw:?})"))
            })?,
        };
        let bind = get(env::BIND).unwrap_or_else(|| "0.0.0.0".into());
        if bind.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError(format!(
                "BIND must be an IP address such as 0.0.0.0 or 127.0.0.1 (got {bind:?})"
            )));
        }

        let session_store = knob(env::SESSION_STORE, get(env::SESSION_STORE), &Sessions::ALL)?
            .unwrap_or(Sessions::Memory);
        let cache = knob(env::CACHE, get(env::CACHE), &Toggle::ALL)?.is_some_and(Toggle::is_on);
        let cache_ttl = match get(env::CACHE_TTL) {
            None => Duration::from_secs(30),
            Some(raw) => parse_duration(env::CACHE_TTL, &raw, Duration::from_millis(1))?,
        };

        let redis_url = get(env::REDIS_URL);
        let needs_redis = session_store == Sessions::Redis || cache;
        match &redis_url {
            None if needs_redis => {
                let why = if session_store == Sessions::Redis {
                    "SESSION_STORE=redis"
                } else {
                    "CACHE=on"
                };
                return Err(ConfigError(format!(
                    "REDIS_URL is required when {why} (e.g. redis://redis:6379)"
                )));
            }
            Some(url) if !valid_redis_url(url) => {
                return Err(ConfigError(format!(
                    "REDIS_URL must be a URL like redis://redis:6379 (got {url:?})"
                )));
            }
            _ => {}
        }

        let primary_url = get(env::DATABASE_URL).ok_or_else(|| {
            ConfigError("DATABASE_URL is required (e.g. postgres://lab:lab@db-1:5432/lab)".into())
        })?;
        let primary_host = db_host(env::DATABASE_URL, &primary_url)?;
        let mut replica_urls = Vec::new();
        for part in get(env::REPLICA_URLS).unwrap_or_default().split(',') {
            let url = part.trim();
            if !url.is_empty() {
                let host = db_host(env::REPLICA_URLS, url)?;
                replica_urls.push((url.to_owned(), host));
            }
        }
        let (primary, replicas) = name_databases((primary_url, primary_host), replica_urls);

        let follow_primary = knob(env::FOLLOW_PRIMARY, get(env::FOLLOW_PRIMARY), &Toggle::ALL)?
            .is_some_and(Toggle::is_on);
        let reads = match knob(env::READS, get(env::READS), &Reads::ALL)? {
            None if replicas.is_empty() => Reads::Primary,
            None => Reads::Replicas,
            Some(r) => r,
        };

        let product_query_ms = match get(env::PRODUCT_QUERY_MS) {
            None => 50,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(ms) if ms <= MAX_PRODUCT_QUERY_MS => ms,
                _ => {
                    return Err(ConfigError(format!(
                        "PRODUCT_QUERY_MS must be a whole number of milliseconds 0-{MAX_PRODUCT_QUERY_MS} (got {raw:?})"
                    )))
                }
            },
        };

        let session_secret = match lookup(env::SESSION_SECRET) {
            None => None,
            Some(secret) if secret.len() < MIN_SECRET_LEN => {
                return Err(ConfigError(format!(
                    "SESSION_SECRET must be at least {MIN_SECRET_LEN} bytes (got {} bytes)",
                    secret.len()
                )))
            }
            Some(secret) => Some(secret.into_bytes()),
        };
        if session_secret.is_none() && session_store != Sessions::Memory {
            return Err(ConfigError(format!(
                "SESSION_SECRET is required when SESSION_STORE={} (at least {MIN_SECRET_LEN} bytes, the same on every server)",
                session_store.as_str()
            )));
        }

        let write_timeout = match get(env::WRITE_TIMEOUT) {
            None => Duration::from_secs(5),
            Some(raw) => parse_duration(env::WRITE_TIMEOUT, &raw, Duration::from_millis(1))?,
        };

        let work_threads = match get(env::WORK_THREADS) {
            None => 4,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => n,
                _ => {
                    return Err(ConfigError(format!(
                        "WORK_THREADS must be a whole number 1-256 (got {raw:?})"
                    )))
                }
            },
        };

        let fault_proxy = FaultProxy::from_vars(
            get(lab_contract::faultproxy::env::LINKS),
            get(lab_contract::faultproxy::env::ADMIN),
            port,
        )?;

        Ok(Self {
            server_name,
            bind,
            port,
            session_store,
            redis_url,
            primary,
            replicas,
            follow_primary,
            reads,
            cache,
            cache_ttl,
            product_query_ms,
            session_secret,
            write_timeout,
            work_threads,
            fault_proxy,
        })
    }

    /// Whether this configuration talks to Redis at all.
    pub fn uses_redis(&self) -> bool {
        self.redis_url.is_some() && (self.cache || self.session_store == Sessions::Redis)
    }
}

/// Reads one of the shared knobs; a wrong value names every right one.
fn knob<T: std::str::FromStr + std::fmt::Display + Copy>(
    var: &str,
    raw: Option<String>,
    all: &[T],
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    raw.trim().parse().map(Some).map_err(|_| {
        let names: Vec<String> = all.iter().map(T::to_string).collect();
        let (last, rest) = names.split_last().expect("a knob has values");
        ConfigError(format!(
            "{var} must be {} or {last} (got {raw:?})",
            rest.join(", ")
        ))
    })
}

/// Names and usernames share one alphabet: safe in headers, logs and keys.
pub(crate) fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_redis_url(url: &str) -> bool {
    // Plain redis:// only: the client is built without TLS support, and
    // the lab's Redis is on a private Docker network.
    url.starts_with("redis://")
        && tower_sessions_redis_store::fred::prelude::Config::from_url(url).is_ok()
}

fn parse_duration(var: &str, raw: &str, min: Duration) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if d >= min && d <= Duration::from_secs(24 * 3600) => Ok(d),
        _ => Err(ConfigError(format!(
            "{var} must be a duration between 1ms and 24h such as 30s or 500ms (got {raw:?})"
        ))),
    }
}

/// Checks a PostgreSQL URL and returns its host and port.
fn db_host(var: &str, url: &str) -> Result<(String, u16), ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{var} must hold postgres:// URLs like postgres://lab:lab@db-1:5432/lab (got {url:?})"
        ))
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad());
    }
    let opts = PgConnectOptions::from_str(url).map_err(|_| bad())?;
    Ok((opts.get_host().to_owned(), opts.get_port()))
}

/// Gives every database its display name: the host of its URL, which in the
/// lab is the container name. Only when two URLs share a host (as in tests,
/// where everything is 127.0.0.1) is the port added, so names stay unique.
fn name_databases(
    primary: (String, (String, u16)),
    replicas: Vec<(String, (String, u16))>,
) -> (DbTarget, Vec<DbTarget>) {
    let mut seen = HashSet::new();
    let mut dup = HashSet::new();
    for (_, (host, _)) in std::iter::once(&primary).chain(replicas.iter()) {
        if !seen.insert(host.clone()) {
            dup.insert(host.clone());
        }
    }
    let name = |(url, (host, port)): (String, (String, u16))| DbTarget {
        name: if dup.contains(&host) {
            format!("{host}:{port}")
        } else {
            host
        },
        url,
    };
    let primary = name(primary);
    let replicas = replicas.into_iter().map(name).collect();
    (primary, replicas)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("SERVER_NAME", "server-1"),
        ("DATABASE_URL", "postgres://lab:lab@db-1:5432/lab"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn defaults() {
        let c = parse(&BASE).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.bind, "0.0.0.0");
        assert_eq!(c.session_store, Sessions::Memory);
        assert_eq!(c.reads, Reads::Primary);
        assert!(!c.cache);
        assert_eq!(c.cache_ttl, Duration::from_secs(30));
        assert_eq!(c.product_query_ms, 50);
        assert_eq!(c.write_timeout, Duration::from_secs(5));
        assert_eq!(c.primary.name, "db-1");
        assert!(c.replicas.is_empty());
        assert!(!c.uses_redis());
    }

    #[test]
    fn replicas_default_reads_to_replicas_and_are_named_by_host() {
        let c = parse(&with(&[(
            "REPLICA_URLS",
            "postgres://lab@db-2/lab, postgres://lab@db-3:5432/lab,",
        )]))
        .unwrap();
        assert_eq!(c.reads, Reads::Replicas);
        let names: Vec<_> = c.replicas.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db-2", "db-3"]);
        let c = parse(&with(&[
            ("REPLICA_URLS", "postgres://lab@db-2/lab"),
            ("READS", "primary"),
        ]))
        .unwrap();
        assert_eq!(c.reads, Reads::Primary);
    }

    #[test]
    fn shared_hosts_get_ports_in_their_names() {
        let c = parse(&[
            ("SERVER_NAME", "s"),
            ("DATABASE_URL", "postgres://u@127.0.0.1:5001/lab"),
            ("REPLICA_URLS", "postgres://u@127.0.0.1:5002/lab"),
        ])
        .unwrap();
        assert_eq!(c.primary.name, "127.0.0.1:5001");
        assert_eq!(c.replicas[0].name, "127.0.0.1:5002");
    }

    #[test]
    fn each_mistake_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("DATABASE_URL", "postgres://x/y")],
                "SERVER_NAME is required",
            ),
            (&[("SERVER_NAME", "s")], "DATABASE_URL is required"),
            (
                &with(&[("SERVER_NAME", "bad name!")]),
                "SERVER_NAME must be",
            ),
            (&with(&[("PORT", "80000")]), "PORT must be"),
            (&with(&[("BIND", "everywhere")]), "BIND must be"),
            (
                &with(&[("SESSION_STORE", "foo")]),
                "SESSION_STORE must be memory, redis or jwt (got \"foo\")",
            ),
            (&with(&[("CACHE", "yes")]), "CACHE must be on or off"),
            (
                &with(&[("CACHE", "on")]),
                "REDIS_URL is required when CACHE=on",
            ),
            (
                &with(&[("SESSION_STORE", "redis"), ("SESSION_SECRET", SECRET)]),
                "REDIS_URL is required when SESSION_STORE=redis",
            ),
            (
                &with(&[("CACHE", "on"), ("REDIS_URL", "http://redis")]),
                "REDIS_URL must be",
            ),
            (&with(&[("CACHE_TTL", "soon")]), "CACHE_TTL must be"),
            (
                &with(&[("DATABASE_URL", "mysql://x/y")]),
                "DATABASE_URL must",
            ),
            (&with(&[("REPLICA_URLS", "db-2")]), "REPLICA_URLS must"),
            (&with(&[("READS", "nearest")]), "READS must be"),
            (
                &with(&[("PRODUCT_QUERY_MS", "-5")]),
                "PRODUCT_QUERY_MS must",
            ),
            (
                &with(&[("PRODUCT_QUERY_MS", "999999")]),
                "PRODUCT_QUERY_MS must",
            ),
            (
                &with(&[("SESSION_SECRET", "short")]),
                "SESSION_SECRET must be at least 32 bytes",
            ),
            (
                &with(&[("SESSION_STORE", "jwt")]),
                "SESSION_SECRET is required when SESSION_STORE=jwt",
            ),
            (&with(&[("WRITE_TIMEOUT", "0s")]), "WRITE_TIMEOUT must be"),
        ];
        for (vars, expected) in cases {
            let err = parse(vars).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    /// What `lab up` writes is what the app reads.
    #[test]
    fn the_environment_lab_writes_reads_back() {
        use lab_contract::app::AppEnv;
        let written = AppEnv {
            server_name: "server-2".into(),
            port: 8001,
            session_store: Sessions::Redis,
            redis_url: Some("redis://:pw@redis:6379".into()),
            database_url: "postgres://postgres:pw@db-1:5432/postgres".into(),
            replica_urls: vec![
                "postgres://postgres:pw@db-2:5432/postgres".into(),
                "postgres://postgres:pw@db-3:5432/postgres".into(),
            ],
            follow_primary: Toggle::On,
            reads: Reads::Replicas,
            cache: Toggle::On,
            cache_ttl: Duration::from_millis(1500),
            product_query_ms: 7,
            session_secret: Some(SECRET.into()),
            log: "info".into(),
        };
        let vars = written.to_env();
        let c = Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
        })
        .unwrap();
        assert_eq!(c.server_name, written.server_name);
        assert_eq!(c.port, written.port);
        assert_eq!(c.session_store, written.session_store);
        assert_eq!(c.redis_url, written.redis_url);
        assert_eq!(c.primary.url, written.database_url);
        assert_eq!(
            c.replicas.iter().map(|r| r.url.clone()).collect::<Vec<_>>(),
            written.replica_urls
        );
        assert_eq!(c.reads, written.reads);
        assert!(c.follow_primary);
        assert!(c.cache);
        assert_eq!(c.cache_ttl, written.cache_ttl);
        assert_eq!(c.product_query_ms, written.product_query_ms);
        assert_eq!(c.session_secret, Some(SECRET.as_bytes().to_vec()));
    }

    #[test]
    fn the_proxy_link_on_the_apps_own_port_is_served_in_process() {
        let c = parse(&with(&[
            ("PORT", "18000"),
            (
                "FAULTPROXY_LINKS",
                "service=0.0.0.0:8000->127.0.0.1:18000,wal=127.0.0.1:5499->db-1:5432",
            ),
            ("FAULTPROXY_ADMIN", "0.0.0.0:9100"),
        ]))
        .unwrap();
        let fp = c.fault_proxy.unwrap();
        assert_eq!(fp.links.len(), 2);
        assert_eq!(fp.own_link.as_deref(), Some("service"));
        assert_eq!(fp.admin, "0.0.0.0:9100".parse().unwrap());

        // A link to another port of this host is an ordinary proxied one.
        let c = parse(&with(&[
            ("PORT", "18000"),
            ("FAULTPROXY_LINKS", "other=0.0.0.0:8000->127.0.0.1:18001"),
        ]))
        .unwrap();
        let fp = c.fault_proxy.unwrap();
        assert_eq!(fp.own_link, None);
        assert_eq!(fp.admin, "127.0.0.1:9100".parse().unwrap());
        assert!(parse(&BASE).unwrap().fault_proxy.is_none());
    }

    #[test]
    fn a_wrong_proxy_link_names_its_variable() {
        let err = parse(&with(&[("FAULTPROXY_LINKS", "service")])).unwrap_err();
        assert!(err.0.starts_with("FAULTPROXY_LINKS: "), "{}", err.0);
        let err = parse(&with(&[
            ("FAULTPROXY_LINKS", "service=0.0.0.0:8000->127.0.0.1:8001"),
            ("FAULTPROXY_ADMIN", "localhost"),
        ]))
        .unwrap_err();
        assert!(err.0.starts_with("FAULTPROXY_ADMIN must be"), "{}", err.0);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = parse(&with(&[
            ("REDIS_URL", ""),
            ("REPLICA_URLS", ""),
            ("PORT", ""),
        ]))
        .unwrap();
        assert_eq!(c.port, 8000);
        assert!(c.redis_url.is_none());
    }
}
