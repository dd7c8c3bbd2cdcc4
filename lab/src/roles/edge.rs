//! The edge: the internet between users and an HA pair of balancers.
//!
//! With `--balancers 2` no single container can own the entry port: the
//! address users should reach moves between lb-1 and lb-2 (keepalived's
//! floating address), and a port Docker publishes belongs to one container.
//! The host may not dial a container's address either. So one small
//! container stands where the internet would: it publishes the entry port
//! on 127.0.0.1 and forwards every TCP connection to the floating address,
//! port 8080. It is our fault proxy used as a plain forwarder: a new
//! upstream connection per client connection (nothing pooled that could
//! outlive a dead master), a 1 s connect timeout after which the client's
//! connection is reset (the client sees the failover window, as a browser
//! would), no retry of its own, and it resolves nothing. It holds no state,
//! needs no capability, and is not part of the site: `lab status` shows it
//! apart, and it is never counted as a single point of failure.

use lab_contract::faultproxy::{env, link};

use super::{balancer, http_health, names, proxy, Ctx, Parts, RoleKind};
use crate::images::Image;
use crate::topology::HealthChecks;

/// How long the edge waits for the floating address to answer a connection.
pub const CONNECT_TIMEOUT: &str = "1s";

pub struct Edge;

impl RoleKind for Edge {
    fn start_order(&self) -> u8 {
        // After the balancers: it takes over the entry port, which lb-1
        // holds until it is made again as one of a pair.
        4
    }

    fn parts(&self, ctx: &Ctx<'_>, _name: &str) -> Parts {
        let t = ctx.topology;
        let upstream = match ctx.layout {
            Some(l) => format!("{}:{}", l.vip, balancer::PORT),
            None => format!("{}:{}", names::BALANCER, balancer::PORT),
        };
        let links = link(
            proxy::SERVICE,
            &format!("0.0.0.0:{}", balancer::PORT),
            &upstream,
        );
        Parts {
            // The balancer image carries the fault proxy; its entrypoint runs
            // a command given to it as `nobody`.
            image: Image::Balancer.tag(),
            cmd: Some(vec![
                "lab-faultproxy".into(),
                "--connect-timeout".into(),
                CONNECT_TIMEOUT.into(),
            ]),
            env: [
                (env::LINKS.to_string(), links),
                (
                    env::ADMIN.to_string(),
                    format!("0.0.0.0:{}", proxy::ADMIN_PORT),
                ),
                ("RUST_LOG".to_string(), "warn".to_string()),
            ]
            .into(),
            ports: vec![
                ("http", balancer::PORT, t.port),
                ("faults", proxy::ADMIN_PORT, 0),
            ],
            healthcheck: http_health(proxy::ADMIN_PORT),
            ..Parts::default()
        }
    }

    fn port_name(&self, _port: u16) -> &'static str {
        "http"
    }

    fn accepts(&self, fault: super::FaultKind) -> bool {
        !matches!(fault, super::FaultKind::Lag | super::FaultKind::Resize)
    }

    fn after_loss(&self, _name: &str, _health: &HealthChecks) -> String {
        "the internet between users and the site is cut: every request fails, yet the site itself is whole (the edge is not part of it)".into()
    }
}
