//! Roles: what each kind of service in the lab is, in one place per kind.
//!
//! A lab is made of a few kinds of service: the balancer, the web servers,
//! Redis, and the database nodes (one primary and its replicas; which node
//! plays which part can change, see [`crate::primary`]). Each kind is a
//! module here behind one interface, [`RoleKind`]: the container it runs
//! (image, environment, ports, health check, files), where it sits in the
//! start order, what its ports are called, which faults make sense for it,
//! and what a student should watch for when it goes away. The rest of the
//! orchestrator asks the role and never matches on names, so adding a kind
//! of service (the edge of an HA pair, say) is one new file plus one line in
//! [`kind`]. containerlab organises its node kinds the same way.
//!
//! Service names come from [`names`] and nowhere else.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::runtime::Healthcheck;
use crate::secrets::Secrets;
use crate::topology::{HealthChecks, Resources, Role, Topology};

pub mod balancer;
pub mod database;
pub mod edge;
pub mod redis;
pub mod server;

/// The name of every service, as `lab status` shows it and every command
/// takes it.
pub mod names {
    /// The one Redis.
    pub const REDIS: &str = "redis";
    /// The balancer (the lab's entry point).
    pub const BALANCER: &str = "lb-1";
    /// Not a service: the word every command accepts for "the database
    /// node that is primary now" (`lab crash primary`).
    pub const PRIMARY_ALIAS: &str = "primary";

    /// The second balancer of an HA pair (`--balancers 2`).
    pub const BALANCER_2: &str = "lb-2";
    /// The internet in front of an HA pair: forwards to the floating address.
    pub const EDGE: &str = "edge";

    /// `lb-N`, counted from 1.
    pub fn balancer(n: u8) -> String {
        format!("lb-{n}")
    }

    /// `server-N`, counted from 1.
    pub fn server(n: u8) -> String {
        format!("server-{n}")
    }

    /// `db-N`, counted from 1: a database node. Its name says nothing of its
    /// part (primary or replica), because that part moves on a failover.
    pub fn db(n: u8) -> String {
        format!("db-{n}")
    }

    /// Every database node of a lab with `replicas` replicas: db-1 ... db-K,
    /// K = 1 + replicas.
    pub fn db_nodes(replicas: u8) -> Vec<String> {
        (1..=replicas + 1).map(db).collect()
    }
}

/// Our fault proxy in front of a service (DESIGN §11): the service listens
/// on an internal port, the proxy on the service's own port, and the CLI
/// sets faults through the proxy's admin port, published on loopback. No
/// capability and no kernel module are needed, so `lab slow` works on every
/// kernel.
pub mod proxy {
    use lab_contract::faultproxy::{env, link};

    use super::Parts;

    /// The proxy's admin port inside every container that has one.
    pub const ADMIN_PORT: u16 = 9100;
    /// The link in front of the service's own port.
    pub const SERVICE: &str = "service";
    /// A replica's link to the primary's WAL.
    pub const WAL: &str = "wal";
    /// Where a replica's WAL link listens, inside the replica.
    pub const WAL_PORT: u16 = 5499;

    /// Puts the proxy in front of `port` (the service moves to `internal`),
    /// plus any `extra` links (name, listen, upstream).
    pub fn front(parts: &mut Parts, port: u16, internal: u16, extra: &[(&str, String, String)]) {
        let mut links = vec![link(
            SERVICE,
            &format!("0.0.0.0:{port}"),
            &format!("127.0.0.1:{internal}"),
        )];
        links.extend(extra.iter().map(|(n, l, u)| link(n, l, u)));
        parts.env.insert(env::LINKS.into(), links.join(","));
        parts
            .env
            .insert(env::ADMIN.into(), format!("0.0.0.0:{ADMIN_PORT}"));
        parts.ports.push(("faults", ADMIN_PORT, 0));
    }
}

/// Faults a student can apply; each role says which it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Crash,
    Stop,
    Pause,
    Partition,
    Slow,
    /// A replica applying changes late.
    Lag,
    Resize,
}

/// What a role decides about its container; `plan` adds the name, the
/// network and the labels every container shares.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    pub image: String,
    pub env: BTreeMap<String, String>,
    /// (short name, port inside the container, host port: 0 = any free one)
    pub ports: Vec<(&'static str, u16, u16)>,
    /// (volume name, mount path)
    pub volumes: Vec<(String, String)>,
    pub files: Vec<(String, String)>,
    pub healthcheck: Option<Healthcheck>,
    pub resources: Resources,
    /// Settings kept in a file that still need a new container when they
    /// change: they count in the configuration hash.
    pub hashed_extra: Option<String>,
    /// Capabilities beyond Docker's default set (never privileged).
    pub cap_add: Vec<String>,
    /// A fixed address on the lab network (None: Docker picks one).
    pub ipv4: Option<String>,
    /// Arguments for the image's entrypoint (None: the image's CMD).
    pub cmd: Option<Vec<String>>,
}

/// What every role's spec is made from.
pub struct Ctx<'a> {
    pub lab: &'a str,
    pub topology: &'a Topology,
    pub secrets: &'a Secrets,
    /// The HA pair's addresses on the lab network (None: the network
    /// reserves none, or the caller has no network yet).
    pub layout: Option<&'a crate::ha::Layout>,
}

/// One kind of service.
pub trait RoleKind: Sync {
    /// Its place in the start order: what others wait for comes first.
    fn start_order(&self) -> u8;
    /// The container for the service `name`.
    fn parts(&self, ctx: &Ctx<'_>, name: &str) -> Parts;
    /// The short name `lab status` gives one of its own ports (the fault
    /// proxy's admin port is named by [`port_name`] for every role).
    fn port_name(&self, port: u16) -> &'static str;
    /// Whether a fault makes sense for this role.
    fn accepts(&self, fault: FaultKind) -> bool {
        fault != FaultKind::Lag
    }
    /// What a student sees when the service `name` goes away.
    fn after_loss(&self, name: &str, health: &HealthChecks) -> String;
}

/// The module that knows a role.
pub fn kind(role: Role) -> &'static dyn RoleKind {
    match role {
        Role::Lb => &balancer::Balancer,
        Role::Server => &server::Server,
        Role::Redis => &redis::Redis,
        Role::Database => &database::Database,
        Role::Edge => &edge::Edge,
    }
}

/// The short name `lab status` gives a port of a service of `role`.
pub fn port_name(role: Role, port: u16) -> &'static str {
    if port == proxy::ADMIN_PORT {
        "faults"
    } else {
        kind(role).port_name(port)
    }
}

/// The roles a wrong-role error lists for a fault.
pub fn accepting(fault: FaultKind) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| kind(*r).accepts(fault))
        .collect()
}

/// Docker's own health check for a container: its first check comes after
/// one interval (Docker 20.10 has no start_interval), so a short interval is
/// what makes `lab up` quick.
pub(crate) fn docker_health(test: &[&str]) -> Option<Healthcheck> {
    Some(Healthcheck {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: Duration::from_millis(1000),
        timeout: Duration::from_secs(2),
        retries: 3,
        start_period: Duration::from_secs(0),
    })
}

/// An HTTP health check with nothing but bash, which every image has.
pub(crate) fn http_health(port: u16) -> Option<Healthcheck> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"
    );
    docker_health(&["CMD", "bash", "-c", &script])
}
