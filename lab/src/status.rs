//! `lab status`: what runs, how healthy it is, and what is broken on purpose.
//!
//! Everything is read back from the world, never from a file of ours:
//! Docker's labels and state for each container, the balancer's admin API
//! for its view of every server (it may think a server is up that Docker
//! knows is dead: that gap is the failure window a lesson shows), and
//! PostgreSQL itself for replication mode and replay lag.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::lb_admin::{BalancerView, LbConnector, ServerState};
use crate::naming::{self, natural_key};
use crate::primary::DbRole;
use crate::runtime::{labels, ContainerInfo, Health, Runtime, State};
use crate::topology::{Role, Strategy};
use crate::up::{containers, entrypoint};
pub use lab_contract::vrrp::VipRole;

/// A fault the CLI can see on a service.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// The container is not running (crashed or stopped).
    Stopped,
    /// Frozen: connections open, no answers.
    Paused,
    /// Cut off the lab network.
    Partition,
    /// A replica that applies changes late.
    Lag { delay_ms: u64 },
    /// Network delay and loss on everything it sends (tc netem).
    Slow {
        latency_ms: f64,
        jitter_ms: f64,
        loss_pct: f64,
    },
    /// A fault on a link of its fault proxy: delay, bandwidth, a hung link
    /// (blackhole), refused and cut connections (reset), a late close.
    Link {
        link: String,
        #[serde(flatten)]
        fault: lab_contract::faultproxy::Fault,
    },
}

/// The faults its proxy holds on a service's links.
async fn proxy_faults(c: &ContainerInfo, service: &str) -> Vec<Fault> {
    let Some(addr) = c.ports.get(&crate::roles::proxy::ADMIN_PORT) else {
        return Vec::new();
    };
    let admin = crate::proxy_admin::ProxyAdmin::new(service, addr);
    match admin.links().await {
        Ok(links) => links
            .into_iter()
            .filter_map(|l| {
                l.fault.map(|fault| Fault::Link {
                    link: l.name,
                    fault,
                })
            })
            .collect(),
        Err(e) => {
            tracing::debug!("{e}");
            Vec::new()
        }
    }
}

/// A server as the balancer sees it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct LbEntry {
    pub state: ServerState,
    pub requests: u64,
    pub in_flight: u64,
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How the primary treats a replica's confirmations
/// (`pg_stat_replication.sync_state`).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Commits do not wait for it.
    Async,
    /// Commits wait for it.
    Sync,
    /// Would be waited for if a synchronous replica went away.
    Potential,
    /// One of a quorum that commits wait for.
    Quorum,
    Unknown,
}

impl SyncState {
    fn parse(s: &str) -> SyncState {
        match s {
            "async" => SyncState::Async,
            "sync" => SyncState::Sync,
            "potential" => SyncState::Potential,
            "quorum" => SyncState::Quorum,
            _ => SyncState::Unknown,
        }
    }
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ReplicationInfo {
    /// async or sync, as the primary sees this replica.
    pub mode: SyncState,
    /// How far behind the primary it applies changes; null when unknown
    /// (not connected).
    pub replay_lag_ms: Option<u64>,
    pub connected: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub role: Role,
    /// A database node's part now: primary or replica (it moves on a
    /// failover; the name does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_role: Option<DbRole>,
    /// A database node's PostgreSQL timeline (one more per promotion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    pub state: State,
    pub health: Health,
    pub ports: BTreeMap<String, String>,
    pub faults: Vec<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb: Option<LbEntry>,
    /// With an HA pair: each balancer's view of this server, by balancer.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lb_views: BTreeMap<String, LbEntry>,
    /// A balancer of an HA pair: whether it holds the floating address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<VipRole>,
    /// Since when it has that role (UTC, from keepalived's notify hook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// The settings it runs with (sessions, cache, reads...).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
}

#[derive(Serialize, Debug, Clone)]
pub struct BalancerSettings {
    pub strategy: Strategy,
    pub retries: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct StatusReport {
    pub lab: String,
    pub entrypoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerSettings>,
    /// The services of the site.
    pub services: Vec<ServiceStatus>,
    /// Whether the database fails over by itself, and why (not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::failover::Availability>,
    /// In front of an HA pair: the edge, which stands for the internet and
    /// is not part of the site (never a single point of failure of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<ServiceStatus>,
}

async fn psql(rt: &dyn Runtime, container: &str, sql: &str) -> Option<String> {
    let out = rt
        .exec(
            container,
            &[
                "psql", "-AtX", "-U", "postgres", "-d", "postgres", "-c", sql,
            ],
        )
        .await
        .ok()?;
    (out.code == 0).then_some(out.stdout)
}

/// PostgreSQL's `SHOW` of a duration (`0`, `250ms`, `3s`, `1min`) in ms.
pub fn pg_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * mult)
}

/// Per replica name: (sync_state, lag ms) from the primary's point of view.
async fn replication_rows(rt: &dyn Runtime, primary: &str) -> BTreeMap<String, (SyncState, u64)> {
    let sql = "SELECT application_name, sync_state, \
               CASE WHEN replay_lsn = pg_current_wal_lsn() THEN 0 \
               ELSE COALESCE((EXTRACT(EPOCH FROM replay_lag) * 1000)::bigint, 0) END \
               FROM pg_stat_replication";
    let mut rows = BTreeMap::new();
    if let Some(out) = psql(rt, primary, sql).await {
        for line in out.lines() {
            let f: Vec<&str> = line.split('|').collect();
            if let [name, mode, lag] = f[..] {
                rows.insert(
                    name.to_string(),
                    (SyncState::parse(mode), lag.parse().unwrap_or(0)),
                );
            }
        }
    }
    rows
}

/// How far a status read looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Everything `lab status` shows, including what only a command run
    /// inside a container can tell (`docker exec`: each database node's
    /// part and lag, replication, netem, the floating address). Each such
    /// command costs Docker a process, tens of milliseconds of CPU.
    Full,
    /// Docker's own view, the balancers and the fault proxies (HTTP on
    /// loopback, cheap); what needs `docker exec` is left out: no
    /// `db_role`, `replication`, `vip`, nor netem and lag faults. For a
    /// caller that reads every second and asks the rest less often (the
    /// dashboard).
    Outside,
}

pub async fn status(rt: &dyn Runtime, lab: &str, lb: &LbConnector) -> Result<StatusReport> {
    status_to(rt, lab, lb, Depth::Full).await
}

/// [`status`], looking only as far as `depth`.
pub async fn status_to(
    rt: &dyn Runtime,
    lab: &str,
    lb: &LbConnector,
    depth: Depth,
) -> Result<StatusReport> {
    let full = depth == Depth::Full;
    rt.ping().await?;
    let mut all = containers(rt, lab).await?;
    if all.is_empty() {
        return Err(naming::NameError::NoLab(lab.to_string()).into());
    }
    // The order a user reads the site in: the entry point first.
    all.sort_by_key(|c| {
        let role = c.label(labels::ROLE).and_then(Role::parse);
        (
            role.map(|r| Role::ALL.iter().position(|x| *x == r)),
            natural_key(c.label(labels::SERVICE).unwrap_or(&c.name)),
        )
    });
    // Every running balancer's view (two with an HA pair).
    let mut views: Vec<(String, BalancerView)> = Vec::new();
    for c in all
        .iter()
        .filter(|c| c.label(labels::ROLE) == Some(Role::Lb.as_str()) && c.state == State::Running)
    {
        if let Some(a) = c.ports.get(&crate::roles::balancer::ADMIN_PORT) {
            if let Ok(v) = lb(a).view().await {
                views.push((c.label(labels::SERVICE).unwrap_or(&c.name).to_string(), v));
            }
        }
    }
    let pair = all
        .iter()
        .filter(|c| c.label(labels::ROLE) == Some(Role::Lb.as_str()))
        .count()
        > 1;
    let mut vips = BTreeMap::new();
    if pair {
        for c in all
            .iter()
            .filter(|c| c.label(labels::ROLE) == Some(Role::Lb.as_str()))
        {
            let name = c.label(labels::SERVICE).unwrap_or(&c.name).to_string();
            // `docker exec` refuses a paused container: unknown, then.
            let st = match c.state {
                State::Running if full => crate::ha::vip_state(rt, &c.name).await,
                _ => None,
            };
            if full {
                vips.insert(name, st);
            }
        }
    }
    // The site as users see it: through the master's view when one is known.
    let master = vips
        .iter()
        .find(|(_, s)| s.as_ref().map(|s| s.state) == Some(VipRole::Master))
        .map(|(n, _)| n.clone());
    let view: Option<BalancerView> = views
        .iter()
        .find(|(n, _)| Some(n) == master.as_ref())
        .or_else(|| views.first())
        .map(|(_, v)| v.clone());
    let per_lb: Vec<(String, BalancerView)> = if pair { views } else { Vec::new() };
    let db = if full {
        crate::primary::views(rt, &all).await
    } else {
        BTreeMap::new()
    };
    let primary_svc = crate::primary::choose(lab, &db).ok();
    let running_primary = primary_svc
        .as_ref()
        .filter(|p| db.get(*p).is_some_and(|v| v.role == DbRole::Primary));
    let repl = match running_primary {
        Some(p) => replication_rows(rt, &naming::container(lab, p)).await,
        None => BTreeMap::new(),
    };
    let network = naming::network(lab);
    let mut services = futures::future::join_all(all.iter().map(|c| {
        service_status(
            full.then_some(rt),
            c,
            &network,
            view.as_ref(),
            &repl,
            &db,
            primary_svc.as_deref(),
        )
    }))
    .await;
    for s in &mut services {
        for (lb_name, v) in &per_lb {
            if let Some(e) = v.servers.iter().find(|x| x.name == s.name) {
                s.lb_views.insert(lb_name.clone(), lb_entry(e));
            }
        }
        if let Some(st) = vips.get(&s.name) {
            s.vip = Some(st.as_ref().map_or(VipRole::Unknown, |x| x.state));
            s.vip_since = st.as_ref().map(|x| x.since.clone());
        }
    }
    let edge = services
        .iter()
        .position(|s| s.role == Role::Edge)
        .map(|i| services.remove(i));
    let failover = crate::failover::availability_of(lab, &all).await;
    Ok(StatusReport {
        lab: lab.to_string(),
        entrypoint: entrypoint(&all),
        balancer: view.map(|v| BalancerSettings {
            strategy: v.strategy,
            retries: v.retries,
        }),
        services,
        failover,
        edge,
    })
}

fn settings_of(c: &ContainerInfo) -> Option<crate::topology::Topology> {
    serde_json::from_str(c.label(labels::SETTINGS)?).ok()
}

/// `inside`: the runtime to ask inside the container (`docker exec`), or
/// None for a read from outside ([`Depth::Outside`]).
async fn service_status(
    inside: Option<&dyn Runtime>,
    c: &ContainerInfo,
    network: &str,
    view: Option<&BalancerView>,
    repl: &BTreeMap<String, (SyncState, u64)>,
    db: &BTreeMap<String, crate::primary::NodeView>,
    primary: Option<&str>,
) -> ServiceStatus {
    let name = c.label(labels::SERVICE).unwrap_or(&c.name).to_string();
    let role = c
        .label(labels::ROLE)
        .and_then(Role::parse)
        .unwrap_or(Role::Server);
    let mut faults = Vec::new();
    match c.state {
        State::Paused => faults.push(Fault::Paused),
        State::Exited | State::Dead | State::Created => faults.push(Fault::Stopped),
        _ => {}
    }
    if !c.networks.iter().any(|n| n == network) {
        faults.push(Fault::Partition);
    }
    if c.state == State::Running {
        faults.extend(proxy_faults(c, &name).await);
    }
    if let (State::Running, Some(rt)) = (c.state, inside) {
        if let Some(n) = crate::faults::netem_of(rt, &c.name).await {
            faults.push(Fault::Slow {
                latency_ms: n.latency_ms,
                jitter_ms: n.jitter_ms,
                loss_pct: n.loss_pct,
            });
        }
    }
    let mut replication = None;
    let node = db.get(&name);
    // Every database node but the primary is (or will be again) a replica.
    if node.is_some() && primary != Some(name.as_str()) {
        if let (State::Running, Some(rt)) = (c.state, inside) {
            if let Some(d) = psql(rt, &c.name, "SHOW recovery_min_apply_delay")
                .await
                .and_then(|s| pg_duration_ms(&s))
            {
                if d > 0 {
                    faults.push(Fault::Lag { delay_ms: d });
                }
            }
        }
        replication = Some(match repl.get(&name) {
            Some((mode, lag)) => ReplicationInfo {
                mode: *mode,
                replay_lag_ms: Some(*lag),
                connected: true,
            },
            None => ReplicationInfo {
                mode: settings_of(c)
                    .map(|t| match t.replication {
                        crate::topology::Replication::Async => SyncState::Async,
                        crate::topology::Replication::Sync => SyncState::Sync,
                    })
                    .unwrap_or(SyncState::Unknown),
                replay_lag_ms: None,
                connected: false,
            },
        });
    }
    let lb = view
        .and_then(|v| v.servers.iter().find(|s| s.name == name))
        .map(lb_entry);
    ServiceStatus {
        db_role: node.map(|n| n.role),
        timeline: node.and_then(|n| n.timeline),
        name,
        role,
        state: c.state,
        health: c.health,
        ports: c
            .ports
            .iter()
            .map(|(p, a)| (crate::roles::port_name(role, *p).to_string(), a.clone()))
            .collect(),
        faults,
        lb,
        lb_views: BTreeMap::new(),
        vip: None,
        vip_since: None,
        replication,
        cpus: c.cpus,
        memory_bytes: c.memory,
        cpuset: c.cpuset.clone(),
        settings: match (role, settings_of(c)) {
            (Role::Server, Some(t)) => serde_json::json!({
                "sessions": t.sessions, "cache": t.cache, "reads": t.reads
            }),
            _ => serde_json::Value::Null,
        },
    }
}

fn lb_entry(s: &crate::lb_admin::ServerView) -> LbEntry {
    LbEntry {
        state: s.state,
        requests: s.requests,
        in_flight: s.in_flight,
        failures: s.failures,
        reason: s.reason.clone(),
    }
}

/// "master since 11:25:00" for the table (the time of day of the ISO stamp).
fn vip_cell(s: &ServiceStatus) -> Option<String> {
    let role = s.vip?;
    Some(match s.vip_since.as_deref().and_then(|t| t.get(11..19)) {
        Some(hms) => format!("vip {role} since {hms}Z"),
        None => format!("vip {role}"),
    })
}

impl StatusReport {
    pub fn render(&self) -> String {
        let mut rows = vec![[
            "NAME".to_string(),
            "ROLE".into(),
            "STATE".into(),
            "HEALTH".into(),
            "PORTS".into(),
            "BALANCER".into(),
            "NOTES".into(),
        ]];
        for s in &self.services {
            let ports = s
                .ports
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let lb = if let Some(v) = vip_cell(s) {
                v
            } else if !s.lb_views.is_empty() {
                s.lb_views
                    .iter()
                    .map(|(n, l)| format!("{n}: {} ({} req)", l.state, l.requests))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                s.lb.as_ref()
                    .map(|l| format!("{} ({} req)", l.state, l.requests))
                    .unwrap_or_else(|| "-".into())
            };
            let mut notes: Vec<String> = s
                .faults
                .iter()
                .map(|f| match f {
                    Fault::Stopped => "STOPPED".to_string(),
                    Fault::Paused => "PAUSED".to_string(),
                    Fault::Partition => "PARTITIONED".to_string(),
                    Fault::Lag { delay_ms } => format!("LAG {delay_ms}ms"),
                    Fault::Slow {
                        latency_ms,
                        jitter_ms,
                        loss_pct,
                    } => format!("SLOW +{latency_ms}ms ±{jitter_ms}ms loss {loss_pct}% (netem)"),
                    Fault::Link { link, fault } => {
                        format!("{} on {link}", crate::faults::describe_link_fault(fault))
                    }
                })
                .collect();
            if let Some(t) = s.timeline {
                notes.push(format!("timeline {t}"));
            }
            if let Some(r) = &s.replication {
                notes.push(match r.replay_lag_ms {
                    Some(l) => format!("{} replica, {l} ms behind", r.mode),
                    None => format!("{} replica, not connected", r.mode),
                });
            }
            if let Some(reason) = s.lb.as_ref().and_then(|l| l.reason.clone()) {
                notes.push(format!("lb: {reason}"));
            }
            if let Some(o) = s.settings.as_object() {
                if s.role == Role::Server {
                    notes.push(
                        o.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(" "),
                    );
                }
            }
            rows.push([
                s.name.clone(),
                match s.db_role {
                    Some(part) => format!("db {part}"),
                    None => s.role.to_string(),
                },
                s.state.to_string(),
                s.health.to_string(),
                ports,
                lb,
                notes.join("; "),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "lab {:?}  entry point {}{}\n\n",
            self.lab,
            self.entrypoint
                .as_deref()
                .unwrap_or("(balancer not running)"),
            self.balancer
                .as_ref()
                .map(|b| format!(
                    "  balancer {} retries {}",
                    b.strategy,
                    if b.retries { "on" } else { "off" }
                ))
                .unwrap_or_default()
        );
        if let Some(e) = &self.edge {
            out.push_str(&format!(
                "outside the site: edge ({}, {}) stands for the internet and forwards to the floating address{}\n\n",
                e.state,
                e.health,
                if e.faults.is_empty() { String::new() } else { format!("; {} fault(s) on it", e.faults.len()) }
            ));
        }
        for r in rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        if let Some(f) = &self.failover {
            out.push_str(&format!("\n{f}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_durations() {
        assert_eq!(pg_duration_ms("0"), Some(0));
        assert_eq!(pg_duration_ms("250ms"), Some(250));
        assert_eq!(pg_duration_ms("3s\n"), Some(3000));
        assert_eq!(pg_duration_ms("2min"), Some(120_000));
        assert_eq!(pg_duration_ms("soon"), None);
    }

    #[test]
    fn faults_serialise_as_design_says() {
        let v = serde_json::to_value(vec![Fault::Lag { delay_ms: 3000 }, Fault::Paused]).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"kind": "lag", "delay_ms": 3000}, {"kind": "paused"}])
        );
    }
}
