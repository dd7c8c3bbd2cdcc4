//! The load balancer (`lb-1`): our own, the lab's entry point. Its file is
//! the shared contract's [`Config`], written here and read by the balancer;
//! its server list, strategy and retries then change live through its admin
//! API, so they are left out of the configuration hash and never cost a
//! restart. The health-check knobs are in the hash: they are read once.

use lab_contract::balancer::{Config, HealthConfig, PassiveConfig, TimeoutConfig, UpstreamConfig};

use super::{http_health, names, server, Ctx, Parts, RoleKind};
use crate::images::Image;
use crate::topology::{HealthChecks, Topology};

/// The proxy's port inside the container.
pub const PORT: u16 = 8080;
/// The admin API's port inside the container.
pub const ADMIN_PORT: u16 = 9000;
/// Where the balancer reads its configuration inside its container.
pub const CONFIG_PATH: &str = "/etc/lab/balancer.toml";

pub struct Balancer;

/// The servers the balancer should have.
pub fn upstreams(t: &Topology) -> Vec<UpstreamConfig> {
    (1..=t.servers)
        .map(|i| UpstreamConfig {
            name: names::server(i),
            address: format!("{}:{}", names::server(i), server::PORT),
        })
        .collect()
}

/// The balancer's configuration for this topology.
pub fn config(t: &Topology) -> Config {
    let d = Config::default();
    Config {
        listen: ([0, 0, 0, 0], PORT).into(),
        admin_listen: ([0, 0, 0, 0], ADMIN_PORT).into(),
        strategy: t.lb,
        retries: t.retries.is_on(),
        upstreams: upstreams(t),
        health: HealthConfig {
            interval: t.health.interval,
            timeout: t.health.timeout,
            fall: t.health.fall,
            rise: t.health.rise,
            ..d.health
        },
        passive: PassiveConfig {
            // 0 switches passive checks off: only the active ones can then
            // notice a dead server.
            max_fails: if t.health.passive.is_on() {
                d.passive.max_fails.max(1)
            } else {
                0
            },
            ..d.passive
        },
        // Wider than the balancer's own default so that `lab slow --latency
        // 200ms` slows a server down without making it look dead (its
        // SYN-ACK alone is 200 ms late).
        timeouts: TimeoutConfig {
            connect: std::time::Duration::from_millis(500),
            ..d.timeouts
        },
        ..d
    }
}

impl RoleKind for Balancer {
    fn start_order(&self) -> u8 {
        3
    }

    fn parts(&self, ctx: &Ctx<'_>, _name: &str) -> Parts {
        let t = ctx.topology;
        let cfg = config(t);
        // What cannot change live: the file without the live parts.
        let fixed = Config {
            upstreams: Vec::new(),
            strategy: Default::default(),
            retries: false,
            ..cfg.clone()
        };
        Parts {
            image: Image::Balancer.tag(),
            env: [("RUST_LOG".to_string(), "info".to_string())].into(),
            ports: vec![("http", PORT, t.port), ("admin", ADMIN_PORT, 0)],
            files: vec![(CONFIG_PATH.to_string(), cfg.to_toml())],
            healthcheck: http_health(ADMIN_PORT),
            resources: t.resources.lb.clone(),
            hashed_extra: Some(fixed.to_toml()),
            ..Parts::default()
        }
    }

    fn port_name(&self, port: u16) -> &'static str {
        if port == ADMIN_PORT {
            "admin"
        } else {
            "http"
        }
    }

    fn after_loss(&self, _name: &str, _health: &HealthChecks) -> String {
        "the entry point itself is gone: every request fails. One balancer is a single point of failure.".into()
    }
}
