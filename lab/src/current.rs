//! Reading a running lab's topology back from Docker.
//!
//! The CLI keeps no file of its own. Commands that change a running lab
//! (`scale`, `set`) start from what runs: each container carries, as a
//! label, the topology it was made for, and each knob is read from the
//! service that owns it — counts from the containers that exist, sessions
//! and cache from a server, replication from the database nodes, strategy and
//! retries live from the balancer.

use crate::error::Result;
use crate::lb_admin::LbConnector;
use crate::naming::{natural_key, NameError};
use crate::runtime::{labels, ContainerInfo, Runtime};
use crate::topology::{Role, Toggle, Topology};
use crate::up::{admin_addr, containers};

/// The topology a container was made for, from its label.
pub(crate) fn made_for(c: &ContainerInfo) -> Option<Topology> {
    serde_json::from_str(c.label(labels::SETTINGS)?).ok()
}

fn of_role(all: &[ContainerInfo], role: Role) -> Vec<&ContainerInfo> {
    let mut v: Vec<&ContainerInfo> = all
        .iter()
        .filter(|c| c.label(labels::ROLE) == Some(role.as_str()))
        .collect();
    v.sort_by_key(|c| natural_key(c.label(labels::SERVICE).unwrap_or_default()));
    v
}

pub async fn current(rt: &dyn Runtime, lab: &str, lb: &LbConnector) -> Result<Topology> {
    let all = containers(rt, lab).await?;
    if all.is_empty() {
        return Err(NameError::NoLab(lab.to_string()).into());
    }
    let base = all.iter().find_map(made_for).unwrap_or_default();
    let from = |role: Role| of_role(&all, role).first().and_then(|c| made_for(c));
    let server = from(Role::Server).unwrap_or_else(|| base.clone());
    // Database settings are the same on every node; db-1 is always there.
    let primary = from(Role::Database).unwrap_or_else(|| base.clone());
    let balancer = from(Role::Lb).unwrap_or_else(|| base.clone());
    let redis = from(Role::Redis).unwrap_or_else(|| base.clone());
    let mut t = Topology {
        servers: of_role(&all, Role::Server).len().max(1) as u8,
        replicas: of_role(&all, Role::Database).len().saturating_sub(1) as u8,
        sessions: server.sessions,
        cache: server.cache,
        cache_ttl: server.cache_ttl.clone(),
        reads: server.reads,
        product_query_ms: server.product_query_ms,
        replication: primary.replication,
        failover: primary.failover,
        lb: balancer.lb,
        retries: balancer.retries,
        port: balancer.port,
        health: balancer.health,
        resources: server.resources.clone(),
        balancers: of_role(&all, Role::Lb).len().clamp(1, 2) as u8,
        advert_int: balancer.advert_int,
    };
    t.resources.db = primary.resources.db;
    t.resources.lb = balancer.resources.lb;
    t.resources.redis = redis.resources.redis;
    // Strategy and retries change live; the balancer itself knows best.
    if let Some(addr) = admin_addr(&all) {
        if let Ok(v) = lb(&addr).view().await {
            t.lb = v.strategy;
            t.retries = Toggle::from_bool(v.retries);
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{Image, VERSION};
    use crate::lb_admin::FakeLb;
    use crate::runtime::fake::FakeRuntime;
    use crate::topology::Sessions;
    use crate::up::{up, UpOptions};
    use std::time::Duration;

    #[tokio::test]
    async fn reads_back_what_up_made() {
        let rt = FakeRuntime::new();
        for i in Image::ALL {
            rt.add_image(&i.tag(), &[(labels::VERSION, VERSION)]);
        }
        let t = Topology {
            servers: 4,
            replicas: 2,
            sessions: Sessions::Jwt,
            port: 0,
            lb: crate::topology::Strategy::Sticky,
            ..Topology::default()
        };
        let lb = FakeLb::default();
        let opts = UpOptions {
            wait: false,
            timeout: Duration::from_secs(1),
            lb: lb.connector(),
            progress: std::sync::Arc::new(crate::progress::Silent),
        };
        up(&rt, "cur", &t, &opts).await.unwrap();
        let read = current(&rt, "cur", &lb.connector()).await.unwrap();
        // Port 0 was pinned to a real port at `up` (see up::pin_port).
        assert_ne!(read.port, 0);
        assert_eq!(
            read,
            Topology {
                port: read.port,
                ..t.clone()
            }
        );
        // Asked again for any port, the lab keeps the one it has.
        let all = crate::up::containers(&rt, "cur").await.unwrap();
        assert_eq!(crate::up::pin_port(&t, &all).port, read.port);
        let err = current(&rt, "nope", &lb.connector()).await.unwrap_err();
        assert!(err.to_string().contains("not running"));
    }
}
