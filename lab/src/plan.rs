//! From a topology to containers, and from what runs to what must change.
//!
//! [`desired`] turns a [`Topology`] into one [`ContainerSpec`] per service:
//! image, environment, ports, health check, labels. Each spec carries a hash
//! of itself as a label; [`diff`] compares those hashes with the containers
//! that exist and says, per service, keep, create, recreate or remove. This is
//! the reconcile idea of docker compose and Kubernetes, small enough to read:
//! running `lab up` twice with the same settings finds nothing to do.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::images::VERSION;
use crate::naming;
use crate::roles::{self, Ctx};
use crate::runtime::{labels, ContainerInfo, ContainerSpec, PortSpec, State};
use crate::secrets::Secrets;
use crate::topology::{parse_memory, Role, Service, Topology};

/// One spec per service of the topology.
pub fn desired(lab: &str, t: &Topology, s: &Secrets) -> Vec<ContainerSpec> {
    desired_on(lab, t, s, None)
}

/// One spec per service, on a network that reserves the HA pair's
/// addresses (`layout`; an HA pair needs it).
pub fn desired_on(
    lab: &str,
    t: &Topology,
    s: &Secrets,
    layout: Option<&crate::ha::Layout>,
) -> Vec<ContainerSpec> {
    let ctx = Ctx {
        lab,
        topology: t,
        secrets: s,
        layout,
    };
    t.services()
        .into_iter()
        .map(|svc| spec_for(&ctx, &svc))
        .collect()
}

fn spec_for(ctx: &Ctx<'_>, svc: &Service) -> ContainerSpec {
    let parts = roles::kind(svc.role).parts(ctx, &svc.name);
    let mut spec = ContainerSpec {
        name: naming::container(ctx.lab, &svc.name),
        alias: svc.name.clone(),
        image: parts.image,
        cmd: parts.cmd,
        env: parts.env,
        labels: BTreeMap::new(),
        ports: parts
            .ports
            .into_iter()
            .map(|(name, container_port, host_port)| PortSpec {
                name: name.into(),
                container_port,
                host_port,
            })
            .collect(),
        volumes: parts.volumes,
        network: naming::network(ctx.lab),
        healthcheck: parts.healthcheck,
        cpus: parts.resources.cpus,
        memory: parts.resources.memory.as_deref().and_then(parse_memory),
        cap_add: parts.cap_add,
        files: parts.files,
        hashed_extra: parts.hashed_extra,
        stop_timeout: Some(10),
        ipv4: parts.ipv4,
    };
    let hash = config_hash(&spec);
    spec.labels = BTreeMap::from([
        (labels::LAB.to_string(), ctx.lab.to_string()),
        (labels::SERVICE.to_string(), svc.name.clone()),
        (labels::ROLE.to_string(), svc.role.as_str().to_string()),
        (labels::VERSION.to_string(), VERSION.to_string()),
        (labels::CONFIG_HASH.to_string(), hash),
        // The whole topology as this container was made for it; `current`
        // reads each knob back from the service that owns it.
        (
            labels::SETTINGS.to_string(),
            serde_json::to_string(ctx.topology).unwrap_or_default(),
        ),
    ]);
    spec
}

/// A hash of what a container is made from. Files are left out on purpose:
/// the balancer's server list, strategy and retries change live through its
/// admin API and must not cost a restart; what of a file cannot change live
/// is in `hashed_extra`.
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
        "{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        spec.ports,
        spec.volumes,
        spec.healthcheck,
        spec.cpus,
        spec.memory,
        spec.cap_add,
        spec.hashed_extra
    ));
    // Only when set, so a lab made before fixed addresses keeps its hashes.
    if let Some(ip) = &spec.ipv4 {
        h.update(ip);
    }
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
    use crate::roles::balancer;
    use crate::roles::database::sync_standby_names;
    use crate::topology::{Replication, Sessions, Strategy, Toggle};

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
            health_test: Vec::new(),
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
        assert!(s1.env["DATABASE_URL"].starts_with("postgres://postgres:pw@db-1:5432/"));
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
            lb: Strategy::LeastConn,
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
                service: "db-1".into()
            }
        );
    }

    #[test]
    fn sync_replication_waits_for_every_replica() {
        assert_eq!(
            sync_standby_names(&["db-2".into(), "db-3".into()]),
            "FIRST 2 (\"db-2\", \"db-3\")"
        );
        let t = Topology {
            replication: Replication::Sync,
            ..Topology::default()
        };
        let specs = desired("lab", &t, &secrets());
        let p = specs.iter().find(|s| s.alias == "db-1").unwrap();
        assert_eq!(p.env["SYNCHRONOUS_COMMIT"], "remote_apply");
    }

    #[test]
    fn balancer_config_lists_the_servers() {
        let t = Topology {
            servers: 2,
            lb: Strategy::Sticky,
            ..Topology::default()
        };
        let cfg = balancer::config(&t).to_toml();
        assert!(cfg.contains("strategy = \"sticky\""));
        assert!(cfg.contains("address = \"server-2:8000\""));
        assert!(!cfg.contains("server-3"));
        assert!(toml::from_str::<toml::Value>(&cfg).is_ok());
    }

    #[test]
    fn one_balancer_is_unchanged_by_the_pair_knobs() {
        let t = Topology::default();
        let specs = desired("lab", &t, &secrets());
        assert!(specs
            .iter()
            .all(|s| s.cap_add.is_empty() && s.ipv4.is_none()));
        let lb = specs.iter().find(|s| s.alias == "lb-1").unwrap();
        assert!(!lb.env.keys().any(|k| k.starts_with("VRRP_")));
        assert!(!specs.iter().any(|s| s.alias == "edge" || s.alias == "lb-2"));
    }

    #[test]
    fn a_pair_gets_capabilities_fixed_addresses_and_an_edge() {
        use crate::ha::{reserved, Layout};
        use crate::runtime::NetworkIpam;
        let net = reserved(&NetworkIpam {
            subnet: "172.29.0.0/16".into(),
            gateway: Some("172.29.0.1".into()),
            ip_range: None,
        })
        .unwrap();
        let layout = Layout::of(&net).unwrap();
        let t = Topology {
            balancers: 2,
            ..Topology::default()
        };
        let specs = desired_on("lab", &t, &secrets(), Some(&layout));
        let by = |n: &str| specs.iter().find(|s| s.alias == n).unwrap();
        let (lb1, lb2, edge) = (by("lb-1"), by("lb-2"), by("edge"));
        // Only the balancers get capabilities, exactly keepalived's two.
        for s in &specs {
            if s.alias.starts_with("lb-") {
                assert_eq!(s.cap_add, ["NET_ADMIN", "NET_RAW"]);
            } else {
                assert!(s.cap_add.is_empty(), "{}", s.alias);
            }
        }
        assert_eq!(lb1.ipv4.as_deref(), Some("172.29.255.253"));
        assert_eq!(lb2.ipv4.as_deref(), Some("172.29.255.252"));
        assert_eq!(lb1.env["VRRP_VIP"], "172.29.255.254");
        assert_eq!(lb1.env["VRRP_PEERS"], "172.29.255.252");
        assert_eq!(lb2.env["VRRP_PEERS"], "172.29.255.253");
        assert_eq!(lb1.env["VRRP_PRIORITY"], "150");
        assert_eq!(lb2.env["VRRP_PRIORITY"], "100");
        assert_eq!(lb1.env["VRRP_ADVERT_INT"], "1");
        assert_eq!(lb1.env["VRRP_PASSWORD"], lb2.env["VRRP_PASSWORD"]);
        // The edge owns the entry port and forwards to the floating address.
        let http = |s: &ContainerSpec| s.ports.iter().find(|p| p.name == "http").unwrap().host_port;
        assert_eq!(http(edge), 8080);
        assert_eq!((http(lb1), http(lb2)), (0, 0));
        assert!(edge.env["FAULTPROXY_LINKS"].ends_with("->172.29.255.254:8080"));
        assert!(edge.cmd.as_ref().unwrap()[0] == "lab-faultproxy");
        assert!(edge.ipv4.is_none());
    }

    #[test]
    fn health_knobs_reach_the_balancer_and_recreate_it() {
        use crate::topology::HealthChecks;
        let t = Topology::default();
        let existing: Vec<_> = desired("lab", &t, &secrets()).iter().map(running).collect();
        let t2 = Topology {
            health: HealthChecks {
                interval: std::time::Duration::from_secs(1),
                passive: Toggle::Off,
                ..t.health
            },
            ..t.clone()
        };
        let cfg = balancer::config(&t2);
        assert_eq!(cfg.health.interval, std::time::Duration::from_secs(1));
        assert_eq!(cfg.passive.max_fails, 0);
        let actions = diff(&desired("lab", &t2, &secrets()), &existing);
        let changed: Vec<_> = actions
            .iter()
            .filter(|a| a.changes_something())
            .map(|a| a.service().to_string())
            .collect();
        assert_eq!(changed, ["lb-1"]);
    }
}
