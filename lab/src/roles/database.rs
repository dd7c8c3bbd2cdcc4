//! The database nodes `db-1` ... `db-K` (K = 1 + replicas): one PostgreSQL
//! primary that takes every write, and streaming replicas that copy it and
//! serve reads. One image plays both parts. Each node keeps its data in a
//! volume, so a crash loses no committed write.
//!
//! Two ways to run them:
//! - without a manager (fewer than 3 nodes, or `--failover off`): the parts
//!   are fixed when the lab is made, db-1 is the primary
//!   (images/postgres/entrypoint.sh). Nothing promotes a replica.
//! - with a manager (3 or more nodes): every node runs an etcd member (the
//!   first three), Patroni, and PostgreSQL started by Patroni
//!   (images/postgres/patroni-entrypoint.sh). Whoever holds the leader key
//!   in etcd is the primary; when it dies the key expires and a replica
//!   takes it. The names never say the part, because it moves.

use super::{docker_health, names, proxy, Ctx, FaultKind, Parts, RoleKind};
use crate::images::Image;
use crate::naming;
use crate::topology::{HealthChecks, Replication};

/// PostgreSQL's port on the lab network (its fault proxy listens there).
pub const PORT: u16 = 5432;
/// How long a new database node may fail its health check before Docker
/// counts the failures: a replica's first copy of the primary takes longer
/// than the check's three tries.
const START_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
/// Where PostgreSQL itself listens, behind the proxy (`PGPORT` inside the
/// container, so local `psql` finds it).
pub const INTERNAL_PORT: u16 = 15432;

/// Patroni's REST API on every managed node (`/cluster`, `/switchover`,
/// `/failover`, `/config`), published on loopback for the CLI.
pub const PATRONI_PORT: u16 = 8008;
/// The proxy link replication goes through on a managed node: replicas and
/// pg_rewind reach the primary at NODE:5433, so `lab slow NODE --link wal`
/// delays (or cuts) the WAL that node sends while it is primary, and the
/// app's own connections on 5432 are untouched.
pub const WAL_LINK_PORT: u16 = 5433;
/// Etcd members: 3 survive the loss of one; a 4th member would not survive
/// the loss of two, so nodes past the third run without one.
pub const ETCD_MEMBERS: u8 = 3;
/// Patroni's timings, in seconds: the leader key lives `ttl`, the primary
/// renews it every `loop_wait`, and `retry_timeout` bounds a call to etcd.
/// Patroni needs loop_wait + 2 * retry_timeout <= ttl. A 5 s ttl makes a
/// failover take seconds, not the half minute of Patroni's defaults.
pub const TTL_S: u32 = 5;
pub const LOOP_WAIT_S: u32 = 1;
pub const RETRY_TIMEOUT_S: u32 = 2;
/// etcd's heartbeat and election timeout, in ms. Every node runs an etcd
/// member, so a crashed primary is often etcd's leader too: the other
/// members wait one election timeout (randomised up to twice it) before
/// they elect another, and the new leader then gives every lease, the
/// leader key's among them, its whole ttl again plus one election timeout.
/// etcd's default (1000 ms) put up to 3 s on top of the ttl (writes back
/// after 10.6 s in one CI run: docs/labs/results/2026-11-30-ci-before-fixes.txt); 500 ms halves that, still 5 heartbeats on a
/// bridge whose round trip is well under a millisecond.
pub const ETCD_HEARTBEAT_MS: u32 = 100;
pub const ETCD_ELECTION_MS: u32 = 500;

/// Every database node.
pub struct Database;

/// `postgres://postgres:PASSWORD@HOST:5432/postgres`, as the servers reach it.
pub fn url(ctx: &Ctx<'_>, host: &str) -> String {
    format!(
        "postgres://postgres:{}@{host}:{PORT}/postgres",
        ctx.secrets.db_password
    )
}

/// The node a lab without a manager makes its primary.
pub fn first() -> String {
    names::db(1)
}

/// `synchronous_standby_names` for sync mode: every replica must confirm.
pub fn sync_standby_names(replicas: &[String]) -> String {
    let quoted: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
    format!("FIRST {} ({})", replicas.len(), quoted.join(", "))
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
        // A new node spends its first seconds in initdb or copying the
        // primary: Docker calls it "starting" meanwhile, not "unhealthy".
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
        ])
        .map(|h| crate::runtime::Healthcheck {
            start_period: START_PERIOD,
            ..h
        }),
        resources: ctx.topology.resources.db.clone(),
        ..Parts::default()
    };
    proxy::front(&mut p, PORT, INTERNAL_PORT, extra);
    p
}

impl RoleKind for Database {
    /// Every node starts at once: a replica waits for the primary by itself.
    fn start_order(&self) -> u8 {
        0
    }

    fn parts(&self, ctx: &Ctx<'_>, name: &str) -> Parts {
        if ctx.topology.managed_db() {
            return managed(ctx, name);
        }
        if name == first() {
            let mut p = node(ctx, name, "primary", &[]);
            if ctx.topology.replication == Replication::Sync {
                let replicas: Vec<String> = names::db_nodes(ctx.topology.replicas)
                    .into_iter()
                    .filter(|n| n != name)
                    .collect();
                p.env
                    .insert("SYNC_STANDBY_NAMES".into(), sync_standby_names(&replicas));
                p.env
                    .insert("SYNCHRONOUS_COMMIT".into(), "remote_apply".into());
            }
            return p;
        }
        // The replica streams the primary's WAL through a link of its own
        // proxy, so the replication link can be slowed apart.
        let wal = (
            proxy::WAL,
            format!("127.0.0.1:{}", proxy::WAL_PORT),
            format!("{}:{PORT}", first()),
        );
        let mut p = node(ctx, name, "replica", &[wal]);
        p.env.insert("PRIMARY_HOST".into(), first());
        p.env.insert("WAL_HOST".into(), "127.0.0.1".into());
        p.env.insert("WAL_PORT".into(), proxy::WAL_PORT.to_string());
        p
    }

    fn port_name(&self, port: u16) -> &'static str {
        match port {
            PATRONI_PORT => "patroni",
            _ => "postgres",
        }
    }

    /// Every fault; lag only on a node that is a replica now, which the
    /// fault itself checks (the part can change while the node runs).
    fn accepts(&self, _fault: FaultKind) -> bool {
        true
    }

    fn after_loss(&self, name: &str, _health: &HealthChecks) -> String {
        format!("if {name} was the primary, writes fail with 503 naming it while replicas keep serving reads (and grow stale); if it was a replica, reads routed to it fail with 503 and the primary takes writes and reads with ?consistency=primary.")
    }
}

/// A node with Patroni and (on the first three) an etcd member.
fn managed(ctx: &Ctx<'_>, name: &str) -> Parts {
    let t = ctx.topology;
    let nodes = names::db_nodes(t.replicas);
    let etcd: Vec<String> = nodes.iter().take(ETCD_MEMBERS.into()).cloned().collect();
    let wal = (
        proxy::WAL,
        format!("0.0.0.0:{WAL_LINK_PORT}"),
        format!("127.0.0.1:{INTERNAL_PORT}"),
    );
    let mut p = node(ctx, name, "managed", &[wal]);
    let env = [
        ("DB_MANAGER", "patroni".to_string()),
        ("DB_NODES", nodes.join(",")),
        ("DB_ETCD_NODES", etcd.join(",")),
        ("DB_SCOPE", ctx.lab.to_string()),
        (
            // Strict: with no replica able to confirm, writes wait rather
            // than go on unconfirmed (which a crash would then lose).
            "DB_REPLICATION",
            match t.replication {
                Replication::Async => "async",
                Replication::Sync => "strict",
            }
            .to_string(),
        ),
        ("DB_TTL", TTL_S.to_string()),
        ("DB_LOOP_WAIT", LOOP_WAIT_S.to_string()),
        ("DB_RETRY_TIMEOUT", RETRY_TIMEOUT_S.to_string()),
        ("ETCD_HEARTBEAT_MS", ETCD_HEARTBEAT_MS.to_string()),
        ("ETCD_ELECTION_MS", ETCD_ELECTION_MS.to_string()),
        // PostgreSQL behind its proxy; replicas reach it through the wal link.
        ("PG_LISTEN", format!("127.0.0.1:{INTERNAL_PORT}")),
        ("PG_CONNECT_ADDRESS", format!("{name}:{WAL_LINK_PORT}")),
    ];
    p.env
        .extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
    p.env.remove("ROLE");
    // PostgreSQL, etcd and the node's own overrides all outlive the container.
    p.volumes = vec![(
        naming::volume(ctx.lab, name),
        "/var/lib/postgresql".to_string(),
    )];
    p.ports.push(("patroni", PATRONI_PORT, 0));
    p
}

/// Whether a node was made with a manager (read from the topology it was
/// made for, so a stopped node answers too).
pub fn is_managed(c: &crate::runtime::ContainerInfo) -> bool {
    crate::current::made_for(c).is_some_and(|t| t.managed_db())
}

/// What a student sees when a database node goes away, knowing its part.
pub fn after_loss_as(name: &str, primary: bool) -> String {
    if primary {
        format!("writes fail with 503 naming {name}; replicas keep serving reads, and grow stale.")
    } else {
        format!("reads routed to {name} fail with 503; the primary keeps taking writes and reads with ?consistency=primary.")
    }
}
