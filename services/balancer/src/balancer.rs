//! # The balancer's shared state
//!
//! One [`Balancer`] value is shared (behind an `Arc`) by every connection
//! task, the health-check loop and the admin API. It holds:
//!
//! * the list of servers ([`UpstreamSet`]), replaceable at run time;
//! * the live settings (strategy, retries) that `PATCH /settings` changes;
//!   they are atomics, read on every request without taking a lock;
//! * the metrics.
//!
//! Each worker thread (see [`crate::server`]) builds its own
//! [connection pool](crate::pool) with [`Balancer::new_client`]: keep-alive
//! connections to the servers (opening a TCP connection per request would
//! cost a round trip and, under load, run out of ports: nginx's `keepalive`
//! directive does the same).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Instant, SystemTime};

use crate::config::{Config, UpstreamConfig};
use crate::health::{FailureKind, HealthPolicy, Transition};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::strategy::{Picker, Strategy};
use crate::upstream::{AddressError, Upstream, UpstreamSet};

/// The pooled client that carries requests to the servers.
pub type UpstreamClient = Pool;

pub use lab_contract::admin::Settings;

/// Everything the balancer knows, shared by all tasks.
#[derive(Debug)]
pub struct Balancer {
    config: Config,
    policy: HealthPolicy,
    upstreams: UpstreamSet,
    strategy: AtomicU8,
    retries: AtomicBool,
    picker: Picker,
    metrics: Metrics,
}

fn strategy_index(s: Strategy) -> u8 {
    Strategy::ALL
        .iter()
        .position(|k| *k == s)
        .map_or(0, |i| i as u8)
}

impl Balancer {
    /// Builds the state from a checked config. Opens no connection.
    pub fn new(config: Config) -> Result<Self, AddressError> {
        let upstreams = UpstreamSet::new(&config.upstreams)?;
        Ok(Self {
            policy: HealthPolicy::new(&config.health, &config.passive),
            upstreams,
            strategy: AtomicU8::new(strategy_index(config.strategy)),
            retries: AtomicBool::new(config.retries),
            picker: Picker::new(),
            metrics: Metrics::new(),
            config,
        })
    }

    /// The configuration the balancer started with (settings may have changed
    /// since: see [`Balancer::settings`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The servers.
    pub fn upstreams(&self) -> &UpstreamSet {
        &self.upstreams
    }

    /// A new client with its own pool of keep-alive connections (one per
    /// worker thread, as each nginx worker process has its own).
    pub fn new_client(&self) -> UpstreamClient {
        Pool::new(
            self.config.timeouts.connect,
            self.config.timeouts.upstream_keepalive,
        )
    }

    /// The picker (round-robin turn).
    pub fn picker(&self) -> &Picker {
        &self.picker
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Current strategy and retries.
    pub fn settings(&self) -> Settings {
        Settings {
            strategy: self.strategy(),
            retries: self.retries(),
        }
    }

    /// Current strategy.
    pub fn strategy(&self) -> Strategy {
        Strategy::ALL[usize::from(self.strategy.load(Ordering::Relaxed)) % Strategy::ALL.len()]
    }

    /// Whether retries are on.
    pub fn retries(&self) -> bool {
        self.retries.load(Ordering::Relaxed)
    }

    /// Changes the strategy and/or retries; returns the new settings.
    pub fn update_settings(&self, strategy: Option<Strategy>, retries: Option<bool>) -> Settings {
        if let Some(s) = strategy {
            self.strategy.store(strategy_index(s), Ordering::Relaxed);
        }
        if let Some(r) = retries {
            self.retries.store(r, Ordering::Relaxed);
        }
        let now = self.settings();
        tracing::info!(strategy = %now.strategy, retries = now.retries, "settings changed");
        now
    }

    /// Replaces the list of servers (checked by the caller).
    pub fn replace_upstreams(&self, servers: &[UpstreamConfig]) -> Result<(), AddressError> {
        self.upstreams.replace(servers)?;
        let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(servers = ?names, "server list replaced");
        Ok(())
    }

    /// Feeds an active check result into a server's health.
    pub fn record_check(&self, upstream: &Upstream, result: Result<(), String>) {
        let transition = {
            let mut h = upstream.health();
            let t = h.record_check(result, Instant::now(), SystemTime::now(), &self.policy);
            upstream.sync_health(&h);
            t.map(|t| (t, h.reason().map(str::to_owned)))
        };
        if let Some((t, reason)) = transition {
            self.log_transition(upstream, t, reason.as_deref(), "active check");
        }
    }

    /// Feeds a failed request into a server's health (passive check).
    pub fn record_failure(&self, upstream: &Upstream, kind: FailureKind) {
        upstream.count_failure();
        self.metrics.record_failure(upstream.name(), kind);
        let transition = {
            let mut h = upstream.health();
            let t = h.record_failure(kind, Instant::now(), &self.policy);
            upstream.sync_health(&h);
            t.map(|t| (t, h.reason().map(str::to_owned)))
        };
        if let Some((t, reason)) = transition {
            self.log_transition(upstream, t, reason.as_deref(), "passive check");
        }
    }

    fn log_transition(&self, upstream: &Upstream, t: Transition, reason: Option<&str>, by: &str) {
        self.metrics.record_transition(upstream.name(), t);
        match t {
            Transition::WentDown => tracing::warn!(
                server = upstream.name(),
                reason = reason.unwrap_or(""),
                by,
                "server DOWN"
            ),
            Transition::WentUp => tracing::info!(server = upstream.name(), by, "server UP"),
        }
    }
}
