//! The database nodes: a PostgreSQL primary that takes every write, and
//! streaming replicas that copy it and serve reads. One image plays both
//! parts, chosen by `ROLE` (images/postgres/entrypoint.sh). Each node keeps
//! its data in a volume, so a crash loses no committed write.

use super::{docker_health, names, proxy, Ctx, FaultKind, Parts, RoleKind};
use crate::images::Image;
use crate::naming;
use crate::topology::{HealthChecks, Replication};

/// PostgreSQL's port on the lab network (its fault proxy listens there).
pub const PORT: u16 = 5432;
/// Where PostgreSQL itself listens, behind the proxy (`PGPORT` inside the
/// container, so local `psql` finds it).
pub const INTERNAL_PORT: u16 = 15432;

pub struct Primary;
pub struct Replica;

/// `postgres://postgres:PASSWORD@HOST:5432/postgres`, as the servers reach it.
pub fn url(ctx: &Ctx<'_>, host: &str) -> String {
    format!(
        "postgres://postgres:{}@{host}:{PORT}/postgres",
        ctx.secrets.db_password
    )
}

/// `synchronous_standby_names` for sync mode: every replica must confirm.
pub fn sync_standby_names(replicas: u8) -> String {
    let names: Vec<String> = (1..=replicas)
        .map(|i| format!("\"{}\"", names::replica(i)))
        .collect();
    format!("FIRST {} ({})", replicas, names.join(", "))
}

fn node(ctx: &Ctx<'_>, name: &str, role: &str, extra: &[(&str, String, String)]) -> Parts {
    let mut p = Parts {
        image: Image::Postgres.tag(),
        env: [
            ("ROLE".to_string(), role.to_string()),
            ("SERVICE_NAME".into(), name.to_string()),
            ("POSTGRES_PASSWORD".into(), ctx.secrets.db_password.clone()),
            ("PGPORT".into(), INTERNAL_PORT.to_string()),
        ]
        .into(),
        ports: vec![("postgres", PORT, 0)],
        volumes: vec![(
            naming::volume(ctx.lab, name),
            "/var/lib/postgresql/data".to_string(),
        )],
        healthcheck: docker_health(&[
            "CMD",
            "/usr/lib/postgresql/15/bin/pg_isready",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
        ]),
        resources: ctx.topology.resources.db.clone(),
        ..Parts::default()
    };
    proxy::front(&mut p, PORT, INTERNAL_PORT, extra);
    p
}

impl RoleKind for Primary {
    fn start_order(&self) -> u8 {
        0
    }

    fn parts(&self, ctx: &Ctx<'_>, name: &str) -> Parts {
        let mut p = node(ctx, name, "primary", &[]);
        if ctx.topology.replication == Replication::Sync {
            p.env.insert(
                "SYNC_STANDBY_NAMES".into(),
                sync_standby_names(ctx.topology.replicas),
            );
            p.env
                .insert("SYNCHRONOUS_COMMIT".into(), "remote_apply".into());
        }
        p
    }

    fn port_name(&self, _port: u16) -> &'static str {
        "postgres"
    }

    fn after_loss(&self, _name: &str, _health: &HealthChecks) -> String {
        format!(
            "writes fail with 503 naming {}; replicas keep serving reads, and grow stale.",
            names::PRIMARY
        )
    }
}

impl RoleKind for Replica {
    fn start_order(&self) -> u8 {
        1
    }

    fn parts(&self, ctx: &Ctx<'_>, name: &str) -> Parts {
        // The replica streams the primary's WAL through a link of its own
        // proxy, so the replication link can be slowed apart.
        let wal = (
            proxy::WAL,
            format!("127.0.0.1:{}", proxy::WAL_PORT),
            format!("{}:{PORT}", names::PRIMARY),
        );
        let mut p = node(ctx, name, "replica", &[wal]);
        p.env
            .insert("PRIMARY_HOST".into(), names::PRIMARY.to_string());
        p.env.insert("WAL_HOST".into(), "127.0.0.1".into());
        p.env.insert("WAL_PORT".into(), proxy::WAL_PORT.to_string());
        p
    }

    fn port_name(&self, _port: u16) -> &'static str {
        "postgres"
    }

    fn accepts(&self, _fault: FaultKind) -> bool {
        true
    }

    fn after_loss(&self, name: &str, _health: &HealthChecks) -> String {
        format!("reads routed to {name} fail with 503; the primary keeps taking writes and reads with ?consistency=primary.")
    }
}
