//! The web servers (`server-N`): our axum app. They hold no state of their
//! own unless sessions live in their memory; everything they are told comes
//! through their environment, written from the shared contract's
//! [`AppEnv`], so the app reads exactly what `lab up` wrote.

use lab_contract::app::AppEnv;

use super::{database, http_health, names, proxy, redis, Ctx, Parts, RoleKind};
use crate::images::Image;
use crate::topology::{HealthChecks, Reads};

/// The server's port on the lab network: the fault proxy's link listens
/// there, run by the app itself in its own process (no second hop).
pub const PORT: u16 = 8000;
/// Where the app also listens directly, past the proxy's link (the
/// benchmark of the link's cost compares the two).
pub const INTERNAL_PORT: u16 = 18000;

pub struct Server;

/// What `lab up` tells the server `name`.
pub fn app_env(ctx: &Ctx<'_>, name: &str) -> AppEnv {
    let t = ctx.topology;
    AppEnv {
        server_name: name.to_string(),
        port: INTERNAL_PORT,
        session_store: t.sessions,
        redis_url: Some(redis::url(ctx)),
        database_url: database::url(ctx, &database::first()),
        replica_urls: names::db_nodes(t.replicas)
            .iter()
            .skip(1)
            .map(|n| database::url(ctx, n))
            .collect(),
        // With a failover manager the primary moves: the app asks the
        // nodes which one takes writes, and follows it.
        follow_primary: crate::topology::Toggle::from_bool(t.managed_db()),
        reads: match t.reads {
            Reads::Replicas if t.replicas > 0 => Reads::Replicas,
            _ => Reads::Primary,
        },
        cache: t.cache,
        cache_ttl: humantime::parse_duration(&t.cache_ttl).unwrap_or_default(),
        product_query_ms: t.product_query_ms.into(),
        session_secret: Some(ctx.secrets.session_secret.clone()),
        log: "info".into(),
    }
}

impl RoleKind for Server {
    fn start_order(&self) -> u8 {
        2
    }

    fn parts(&self, ctx: &Ctx<'_>, name: &str) -> Parts {
        let mut p = Parts {
            image: Image::App.tag(),
            env: app_env(ctx, name)
                .to_env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ports: vec![("http", PORT, 0)],
            healthcheck: http_health(PORT),
            resources: ctx.topology.resources.server.clone(),
            ..Parts::default()
        };
        proxy::front(&mut p, PORT, INTERNAL_PORT, &[]);
        p
    }

    fn port_name(&self, _port: u16) -> &'static str {
        "http"
    }

    fn after_loss(&self, name: &str, health: &HealthChecks) -> String {
        let noticed = if health.passive.is_on() {
            "until the balancer notices: at once for a refused connection (passive checks), else"
                .to_string()
        } else {
            "until".to_string()
        };
        format!(
            "requests the balancer still sends to {name} fail {noticed} its health checks mark it down ({}); with retries on, GETs are retried on another server. With memory sessions, its users are logged out.",
            health.describe_detection()
        )
    }
}
