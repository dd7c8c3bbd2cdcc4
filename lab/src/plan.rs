//! From a topology to containers, and from what runs to what must change.
//!
//! [`desired`] turns a [`Topology`] into one [`ContainerSpec`] per service:
//! image, environment, ports, health check, labels. Each spec carries a hash
//! of itself as a label; [`diff`] compares those hashes with the containers
//! that exist and says, per service, keep, create, recreate or remove. This is
//! the reconcile idea of docker compose and Kubernetes, small enough to read:
//! running `lab up` twice with the same settings finds nothing to do.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::images::{Image, VERSION};
use crate::naming;
use crate::runtime::{labels, ContainerInfo, ContainerSpec, Healthcheck, PortSpec, State};
use crate::secrets::Secrets;
use crate::topology::{parse_memory, Reads, Replication, Resources, Role, Service, Topology};

/// Ports inside the containers (fixed; the host side is chosen per lab).
pub const APP_PORT: u16 = 8000;
pub const LB_PORT: u16 = 8080;
pub const LB_ADMIN_PORT: u16 = 9000;
pub const REDIS_PORT: u16 = 6379;
pub const PG_PORT: u16 = 5432;

/// Where the balancer reads its configuration inside its container.
pub const LB_CONFIG_PATH: &str = "/etc/lab/balancer.toml";

/// The short name `lab status` gives a container port.
pub fn port_name(role: Role, port: u16) -> &'static str {
    match (role, port) {
        (Role::Lb, LB_ADMIN_PORT) => "admin",
        (Role::Lb | Role::Server, _) => "http",
        (Role::Redis, _) => "redis",
        (Role::Primary | Role::Replica, _) => "postgres",
    }
}

fn health(test: &[&str]) -> Option<Healthcheck> {
    Some(Healthcheck {
        test: test.iter().map(|s| s.to_string()).collect(),
        // Docker 20.10 has no start_interval: the first check comes after one
        // interval, so a short one is what makes `lab up` quick.
        interval: Duration::from_millis(1000),
        timeout: Duration::from_secs(2),
        retries: 3,
        start_period: Duration::from_secs(0),
    })
}

/// An HTTP health check with nothing but bash, which every image has.
fn http_health(port: u16) -> Option<Healthcheck> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"
    );
    health(&["CMD", "bash", "-c", &script])
}

fn pg_url(s: &Secrets, host: &str) -> String {
    format!(
        "postgres://postgres:{}@{host}:{PG_PORT}/postgres",
        s.db_password
    )
}

/// The balancer's TOML configuration for this topology.
pub fn balancer_config(t: &Topology) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Written by `lab up`; `lab` changes it live through the admin API.\nlisten = \"0.0.0.0:{LB_PORT}\"\nadmin_listen = \"0.0.0.0:{LB_ADMIN_PORT}\"\nstrategy = \"{}\"\nretries = {}\n",
        t.lb,
        t.retries.is_on()
    ));
    // Active checks every 500 ms, down after 3 failures, up after 2 passes:
    // a dead server is noticed in about 1.5 s, a window a student can see.
    // Timeouts are wider than the balancer's own defaults so that `lab slow
    // --latency 200ms` slows a server down without making it look dead
    // (its SYN-ACK alone is 200 ms late).
    out.push_str(
        "\n[health]\npath = \"/healthz\"\ninterval = \"500ms\"\ntimeout = \"1s\"\nfall = 3\nrise = 2\n\n[timeouts]\nconnect = \"500ms\"\nresponse = \"10s\"\n",
    );
    for i in 1..=t.servers {
        out.push_str(&format!(
            "\n[[upstream]]\nname = \"server-{i}\"\naddress = \"server-{i}:{APP_PORT}\"\n"
        ));
    }
    out
}

/// The upstream list the balancer should have: `(name, address)`.
pub fn upstreams(t: &Topology) -> Vec<(String, String)> {
    (1..=t.servers)
        .map(|i| (format!("server-{i}"), format!("server-{i}:{APP_PORT}")))
        .collect()
}

/// `synchronous_standby_names` for sync mode: every replica must confirm.
pub fn sync_standby_names(replicas: u8) -> String {
    let names: Vec<String> = (1..=replicas)
        .map(|i| format!("\"db-replica-{i}\""))
        .collect();
    format!("FIRST {} ({})", replicas, names.join(", "))
}

/// One spec per service of the topology.
pub fn desired(lab: &str, t: &Topology, s: &Secrets) -> Vec<ContainerSpec> {
    t.services()
        .into_iter()
        .map(|svc| spec_for(lab, t, s, &svc))
        .collect()
}

fn resources(r: &Resources) -> (Option<f64>, Option<i64>) {
    (r.cpus, r.memory.as_deref().and_then(parse_memory))
}

fn spec_for(lab: &str, t: &Topology, s: &Secrets, svc: &Service) -> ContainerSpec {
    let mut env = BTreeMap::new();
    let mut ports = Vec::new();
    let mut volumes = Vec::new();
    let mut files = Vec::new();
    let (image, healthcheck, (cpus, memory)) = match svc.role {
        Role::Primary | Role::Replica => {
            env.insert("ROLE".into(), svc.role.as_str().into());
            env.insert("SERVICE_NAME".into(), svc.name.clone());
            env.insert("POSTGRES_PASSWORD".into(), s.db_password.clone());
            if svc.role == Role::Replica {
                env.insert("PRIMARY_HOST".into(), "db-primary".into());
            } else if t.replication == Replication::Sync {
                env.insert("SYNC_STANDBY_NAMES".into(), sync_standby_names(t.replicas));
                env.insert("SYNCHRONOUS_COMMIT".into(), "remote_apply".into());
            }
            ports.push(PortSpec {
                name: "postgres".into(),
                container_port: PG_PORT,
                host_port: 0,
            });
            volumes.push((
                naming::volume(lab, &svc.name),
                "/var/lib/postgresql/data".to_string(),
            ));
            (
                Image::Postgres,
                health(&[
                    "CMD",
                    "/usr/lib/postgresql/15/bin/pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ]),
                resources(&t.resources.db),
            )
        }
        Role::Redis => {
            env.insert("REDIS_PASSWORD".into(), s.redis_password.clone());
            ports.push(PortSpec {
                name: "redis".into(),
                container_port: REDIS_PORT,
                host_port: 0,
            });
            (
                Image::Redis,
                health(&[
                    "CMD-SHELL",
                    "redis-cli --no-auth-warning -a \"$REDIS_PASSWORD\" ping | grep -q PONG",
                ]),
                resources(&t.resources.redis),
            )
        }
        Role::Server => {
            let replica_urls: Vec<String> = (1..=t.replicas)
                .map(|i| pg_url(s, &format!("db-replica-{i}")))
                .collect();
            for (k, v) in [
                ("SERVER_NAME", svc.name.clone()),
                ("PORT", APP_PORT.to_string()),
                ("SESSION_STORE", t.sessions.to_string()),
                (
                    "REDIS_URL",
                    format!("redis://:{}@redis:{REDIS_PORT}", s.redis_password),
                ),
                ("DATABASE_URL", pg_url(s, "db-primary")),
                ("REPLICA_URLS", replica_urls.join(",")),
                (
                    "READS",
                    match t.reads {
                        Reads::Replicas if t.replicas > 0 => "replicas",
                        _ => "primary",
                    }
                    .into(),
                ),
                ("CACHE", t.cache.to_string()),
                ("CACHE_TTL", t.cache_ttl.clone()),
                ("PRODUCT_QUERY_MS", t.product_query_ms.to_string()),
                ("SESSION_SECRET", s.session_secret.clone()),
                ("RUST_LOG", "info".into()),
            ] {
                env.insert(k.to_string(), v);
            }
            ports.push(PortSpec {
                name: "http".into(),
                container_port: APP_PORT,
                host_port: 0,
            });
            (
                Image::App,
                http_health(APP_PORT),
                resources(&t.resources.server),
            )
        }
        Role::Lb => {
            env.insert("RUST_LOG".into(), "info".into());
            ports.push(PortSpec {
                name: "http".into(),
                container_port: LB_PORT,
                host_port: t.port,
            });
            ports.push(PortSpec {
                name: "admin".into(),
                container_port: LB_ADMIN_PORT,
                host_port: 0,
            });
            files.push((LB_CONFIG_PATH.to_string(), balancer_config(t)));
            (
                Image::Balancer,
                http_health(LB_ADMIN_PORT),
                resources(&t.resources.lb),
            )
        }
    };
    let mut spec = ContainerSpec {
        name: naming::container(lab, &svc.name),
        alias: svc.name.clone(),
        image: image.tag(),
        cmd: None,
        env,
        labels: BTreeMap::new(),
        ports,
        volumes,
        network: naming::network(lab),
        healthcheck,
        cpus,
        memory,
        cap_add: Vec::new(),
        files,
        stop_timeout: Some(10),
    };
    let hash = config_hash(&spec);
    spec.labels = BTreeMap::from([
        (labels::LAB.to_string(), lab.to_string()),
        (labels::SERVICE.to_string(), svc.name.clone()),
        (labels::ROLE.to_string(), svc.role.as_str().to_string()),
        (labels::VERSION.to_string(), VERSION.to_string()),
        (labels::CONFIG_HASH.to_string(), hash),
        // The whole topology as this container was made for it; `current`
        // reads each knob back from the service that owns it.
        (
            labels::SETTINGS.to_string(),
            serde_json::to_string(t).unwrap_or_default(),
        ),
    ]);
    spec
}

/// A hash of what a container is made from. The balancer's config file is
/// left out on purpose: its server list, strategy and retries change live
/// through the admin API, and must not cost a balancer restart.
pub fn config_hash(spec: &ContainerSpec) -> String {
    let mut h = Sha256::new();
    h.update(VERSION);
    h.update(&spec.image);
    h.update(format!("{:?}", spec.cmd));
    for (k, v) in &spec.env {
        h.update(k);
        h.update([0]);
        h.update(v);
        h.update([0]);
    }
    h.update(format!(
        "{:?}{:?}{:?}{:?}{:?}{:?}",
        spec.ports, spec.volumes, spec.healthcheck, spec.cpus, spec.memory, spec.cap_add
    ));
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What reconcile does to one service.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Exists with the same configuration.
    Keep {
        service: String,
    },
    /// Exists with the same configuration but is not running.
    Start {
        service: String,
    },
    Create {
        spec: Box<ContainerSpec>,
    },
    /// Exists with another configuration: replace it.
    Recreate {
        spec: Box<ContainerSpec>,
    },
    /// Exists but the topology no longer has it.
    Remove {
        service: String,
        role: Role,
    },
}

impl Action {
    pub fn service(&self) -> &str {
        match self {
            Action::Keep { service }
            | Action::Start { service }
            | Action::Remove { service, .. } => service,
            Action::Create { spec } | Action::Recreate { spec } => &spec.alias,
        }
    }

    pub fn changes_something(&self) -> bool {
        !matches!(self, Action::Keep { .. })
    }
}

/// Compare what should run with what exists.
pub fn diff(desired: &[ContainerSpec], existing: &[ContainerInfo]) -> Vec<Action> {
    let mut actions = Vec::new();
    for spec in desired {
        let found = existing
            .iter()
            .find(|c| c.label(labels::SERVICE) == Some(spec.alias.as_str()));
        actions.push(match found {
            None => Action::Create {
                spec: Box::new(spec.clone()),
            },
            Some(c)
                if c.label(labels::CONFIG_HASH)
                    != spec.labels.get(labels::CONFIG_HASH).map(String::as_str) =>
            {
                Action::Recreate {
                    spec: Box::new(spec.clone()),
                }
            }
            Some(c) if matches!(c.state, State::Created | State::Exited | State::Dead) => {
                Action::Start {
                    service: spec.alias.clone(),
                }
            }
            Some(_) => Action::Keep {
                service: spec.alias.clone(),
            },
        });
    }
    for c in existing {
        let Some(service) = c.label(labels::SERVICE) else {
            continue;
        };
        if !desired.iter().any(|s| s.alias == service) {
            actions.push(Action::Remove {
                service: service.to_string(),
                role: c
                    .label(labels::ROLE)
                    .and_then(Role::parse)
                    .unwrap_or(Role::Server),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{LbStrategy, Sessions, Toggle};

    fn secrets() -> Secrets {
        Secrets {
            db_password: "pw".into(),
            redis_password: "rpw".into(),
            session_secret: "s".repeat(64),
        }
    }

    fn running(spec: &ContainerSpec) -> ContainerInfo {
        ContainerInfo {
            id: spec.name.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: State::Running,
            health: crate::runtime::Health::Healthy,
            ports: BTreeMap::new(),
            networks: vec![spec.network.clone()],
            cpus: None,
            memory: None,
            cpuset: None,
        }
    }

    #[test]
    fn every_port_is_loopback_and_only_the_balancer_is_fixed() {
        let t = Topology::default();
        for spec in desired("lab", &t, &secrets()) {
            for p in &spec.ports {
                if spec.alias == "lb-1" && p.name == "http" {
                    assert_eq!(p.host_port, 8080);
                } else {
                    assert_eq!(p.host_port, 0, "{} {}", spec.alias, p.name);
                }
            }
            assert_eq!(spec.labels[labels::LAB], "lab");
            assert_eq!(spec.network, "lab-net");
        }
    }

    #[test]
    fn servers_get_the_topology_in_their_environment() {
        let t = Topology {
            sessions: Sessions::Redis,
            replicas: 2,
            ..Topology::default()
        };
        let specs = desired("lab", &t, &secrets());
        let s1 = specs.iter().find(|s| s.alias == "server-1").unwrap();
        assert_eq!(s1.env["SESSION_STORE"], "redis");
        assert_eq!(s1.env["READS"], "replicas");
        assert_eq!(s1.env["REPLICA_URLS"].split(',').count(), 2);
        assert!(s1.env["DATABASE_URL"].starts_with("postgres://postgres:pw@db-primary:5432/"));
    }

    #[test]
    fn the_same_topology_twice_changes_nothing() {
        let t = Topology::default();
        let specs = desired("lab", &t, &secrets());
        let existing: Vec<_> = specs.iter().map(running).collect();
        let actions = diff(&desired("lab", &t, &secrets()), &existing);
        assert!(
            actions.iter().all(|a| !a.changes_something()),
            "{actions:?}"
        );
    }

    #[test]
    fn a_strategy_change_does_not_recreate_the_balancer() {
        let t = Topology::default();
        let existing: Vec<_> = desired("lab", &t, &secrets()).iter().map(running).collect();
        let t2 = Topology {
            lb: LbStrategy::LeastConn,
            retries: Toggle::On,
            ..t
        };
        let actions = diff(&desired("lab", &t2, &secrets()), &existing);
        assert!(
            actions.iter().all(|a| !a.changes_something()),
            "{actions:?}"
        );
    }

    #[test]
    fn changed_sessions_recreate_only_the_servers() {
        let t = Topology::default();
        let existing: Vec<_> = desired("lab", &t, &secrets()).iter().map(running).collect();
        let t2 = Topology {
            sessions: Sessions::Jwt,
            ..t
        };
        let actions = diff(&desired("lab", &t2, &secrets()), &existing);
        let changed: Vec<_> = actions
            .iter()
            .filter(|a| a.changes_something())
            .map(|a| a.service().to_string())
            .collect();
        assert_eq!(changed, ["server-1", "server-2", "server-3"]);
    }

    #[test]
    fn fewer_servers_remove_the_extra_ones() {
        let t = Topology::default();
        let existing: Vec<_> = desired("lab", &t, &secrets()).iter().map(running).collect();
        let t2 = Topology { servers: 1, ..t };
        let actions = diff(&desired("lab", &t2, &secrets()), &existing);
        let removed: Vec<_> = actions
            .iter()
            .filter(|a| matches!(a, Action::Remove { .. }))
            .map(|a| a.service().to_string())
            .collect();
        assert_eq!(removed, ["server-2", "server-3"]);
    }

    #[test]
    fn a_stopped_service_is_started_not_recreated() {
        let t = Topology::default();
        let specs = desired("lab", &t, &secrets());
        let mut existing: Vec<_> = specs.iter().map(running).collect();
        existing[0].state = State::Exited;
        let actions = diff(&specs, &existing);
        assert_eq!(
            actions[0],
            Action::Start {
                service: "db-primary".into()
            }
        );
    }

    #[test]
    fn sync_replication_waits_for_every_replica() {
        assert_eq!(
            sync_standby_names(2),
            "FIRST 2 (\"db-replica-1\", \"db-replica-2\")"
        );
        let t = Topology {
            replication: Replication::Sync,
            ..Topology::default()
        };
        let specs = desired("lab", &t, &secrets());
        let p = specs.iter().find(|s| s.alias == "db-primary").unwrap();
        assert_eq!(p.env["SYNCHRONOUS_COMMIT"], "remote_apply");
    }

    #[test]
    fn balancer_config_lists_the_servers() {
        let t = Topology {
            servers: 2,
            lb: LbStrategy::Sticky,
            ..Topology::default()
        };
        let cfg = balancer_config(&t);
        assert!(cfg.contains("strategy = \"sticky\""));
        assert!(cfg.contains("address = \"server-2:8000\""));
        assert!(!cfg.contains("server-3"));
        assert!(toml::from_str::<toml::Value>(&cfg).is_ok());
    }
}
