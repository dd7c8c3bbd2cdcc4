//! Redis: one shared memory for the servers (sessions, cached products).
//! Everything in it is lost with it. A single Redis is a single point of
//! failure for what lives only there (sessions), not for the cache: product
//! reads go to the database while it is gone.

use super::{docker_health, proxy, Ctx, Parts, RoleKind};
use crate::images::Image;
use crate::topology::HealthChecks;

/// Redis's port on the lab network (its fault proxy listens there).
pub const PORT: u16 = 6379;
/// Where Redis itself listens, behind the proxy.
pub const INTERNAL_PORT: u16 = 16379;

pub struct Redis;

impl RoleKind for Redis {
    fn start_order(&self) -> u8 {
        0
    }

    fn parts(&self, ctx: &Ctx<'_>, _name: &str) -> Parts {
        let mut p = Parts {
            image: Image::Redis.tag(),
            env: [
                ("REDIS_PASSWORD".into(), ctx.secrets.redis_password.clone()),
                ("REDIS_PORT".into(), INTERNAL_PORT.to_string()),
            ]
            .into(),
            ports: vec![("redis", PORT, 0)],
            healthcheck: docker_health(&[
                "CMD-SHELL",
                "redis-cli --no-auth-warning -a \"$REDIS_PASSWORD\" ping | grep -q PONG",
            ]),
            resources: ctx.topology.resources.redis.clone(),
            ..Parts::default()
        };
        proxy::front(&mut p, PORT, INTERNAL_PORT, &[]);
        p
    }

    fn port_name(&self, _port: u16) -> &'static str {
        "redis"
    }

    fn after_loss(&self, _name: &str, _health: &HealthChecks) -> String {
        "sessions and cached products in Redis are gone; logged-in users of redis sessions get 503 naming redis (memory and jwt sessions carry on); product reads go to the database until it is back.".into()
    }
}

/// `redis://:PASSWORD@redis:6379`, as the servers reach it.
pub fn url(ctx: &Ctx<'_>) -> String {
    format!(
        "redis://:{}@{}:{PORT}",
        ctx.secrets.redis_password,
        super::names::REDIS
    )
}
