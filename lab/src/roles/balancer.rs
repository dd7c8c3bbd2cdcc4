//! The load balancer (`lb-1`): our own, the lab's entry point. Its file is
//! the shared contract's [`Config`], written here and read by the balancer;
//! its server list, strategy and retries then change live through its admin
//! API, so they are left out of the configuration hash and never cost a
//! restart. The health-check knobs are in the hash: they are read once.
//!
//! With `--balancers 2` there are two, lb-1 and lb-2, with the same file.
//! Each also runs keepalived (see images/balancer/entrypoint.sh), which
//! moves a floating address between them by VRRP; the `edge` sends users to
//! that address. For that each gets a fixed address on the lab network and
//! the two capabilities keepalived needs, NET_ADMIN (put the address on its
//! interface) and NET_RAW (send VRRP and gratuitous ARP), nothing more and
//! never privileged; the balancer process itself drops to `nobody` with no
//! capability at all. Alone, lb-1 is exactly what it was before.

use lab_contract::balancer::{Config, HealthConfig, PassiveConfig, TimeoutConfig, UpstreamConfig};
use lab_contract::vrrp::env as vrrp;

use super::{http_health, names, server, Ctx, Parts, RoleKind};
use crate::ha;
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

/// lb-1 or lb-2 of an HA pair: the edge owns the entry port, and keepalived
/// gets its settings, its capabilities and a fixed address.
fn pair(ctx: &Ctx<'_>, name: &str, p: &mut Parts) {
    let t = ctx.topology;
    // The entry port is the edge's now; a balancer's own port is still
    // published (on any free loopback port) to look at one node alone.
    p.ports = vec![("http", PORT, 0), ("admin", ADMIN_PORT, 0)];
    let Some(layout) = ctx.layout else {
        return;
    };
    let me = usize::from(name == names::BALANCER_2);
    let (own, peer) = (layout.lb[me], layout.lb[1 - me]);
    p.env.extend([
        (vrrp::VIP.to_string(), layout.vip.to_string()),
        (vrrp::SRC_IP.to_string(), own.to_string()),
        (vrrp::PEERS.to_string(), peer.to_string()),
        (vrrp::PRIORITY.to_string(), ha::PRIORITIES[me].to_string()),
        (
            vrrp::ADVERT_INT.to_string(),
            t.advert_int.as_secs().to_string(),
        ),
        // A node that comes back stays backup: one move per failure.
        (vrrp::PREEMPT.to_string(), "off".to_string()),
        (vrrp::PASSWORD.to_string(), ha::vrrp_password(ctx.secrets)),
    ]);
    p.cap_add = vec!["NET_ADMIN".into(), "NET_RAW".into()];
    p.ipv4 = Some(own.to_string());
}

impl RoleKind for Balancer {
    fn start_order(&self) -> u8 {
        3
    }

    fn parts(&self, ctx: &Ctx<'_>, name: &str) -> Parts {
        let t = ctx.topology;
        let cfg = config(t);
        // What cannot change live: the file without the live parts.
        let fixed = Config {
            upstreams: Vec::new(),
            strategy: Default::default(),
            retries: false,
            ..cfg.clone()
        };
        let mut p = Parts {
            image: Image::Balancer.tag(),
            env: [("RUST_LOG".to_string(), "info".to_string())].into(),
            ports: vec![("http", PORT, t.port), ("admin", ADMIN_PORT, 0)],
            files: vec![(CONFIG_PATH.to_string(), cfg.to_toml())],
            healthcheck: http_health(ADMIN_PORT),
            resources: t.resources.lb.clone(),
            hashed_extra: Some(fixed.to_toml()),
            ..Parts::default()
        };
        if t.ha() {
            pair(ctx, name, &mut p);
        }
        p
    }

    fn port_name(&self, port: u16) -> &'static str {
        if port == ADMIN_PORT {
            "admin"
        } else {
            "http"
        }
    }

    fn after_loss(&self, name: &str, _health: &HealthChecks) -> String {
        // Default advert_int; `lab status` shows who holds the address.
        let one = std::time::Duration::from_secs(1);
        let takeover = |backup: u8| ha::master_down(ha::PRIORITIES[usize::from(backup)], one);
        if name == names::BALANCER_2 {
            return format!(
                "if lb-2 held the floating address, lb-1 takes it after about {:.1} s (3 x advert_int + skew) and requests fail until then; if it was the backup, users notice nothing. See `lab status`.",
                takeover(0).as_secs_f64()
            );
        }
        format!(
            "alone, lb-1 is the entry point and every request fails until it is started again: a single point of failure. In an HA pair (--balancers 2) lb-2 takes the floating address after about {:.1} s (3 x advert_int + skew).",
            takeover(1).as_secs_f64()
        )
    }
}
