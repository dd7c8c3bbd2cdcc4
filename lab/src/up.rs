//! `lab up`: make the running lab match the topology.
//!
//! The first `up` creates the lab's network (which keeps the lab's secrets),
//! its volumes and every container, starts them all at once (each service
//! waits for what it needs by itself: a replica for the primary, a server for
//! the database) and waits until Docker reports every one healthy. A later
//! `up` is a reconcile: it plans with [`crate::plan::diff`], touches only what
//! changed, and updates the balancer's server list live instead of restarting
//! it.

use crate::lb_admin::ServerState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;

use crate::error::{LabError, Result};
use crate::ha::{self, HaError, Layout};
use crate::images;
use crate::lb_admin::{LbConnector, LbControl};
use crate::naming;
use crate::plan::{self, Action};
use crate::progress::{Progress, Size};
use crate::roles::balancer::{
    self, ADMIN_PORT as LB_ADMIN_PORT, CONFIG_PATH as LB_CONFIG_PATH, PORT as LB_PORT,
};
use crate::roles::names;
use crate::runtime::{labels, ContainerInfo, ContainerSpec, Health, Runtime, RuntimeError, State};
use crate::secrets::Secrets;
use crate::topology::{Role, Topology};

#[derive(Clone)]
pub struct UpOptions {
    pub wait: bool,
    pub timeout: Duration,
    /// How to reach the balancer's admin API (HTTP unless testing).
    pub lb: LbConnector,
    /// Where the wait for healthy services is shown.
    pub progress: Arc<dyn Progress>,
}

/// What happened to one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum Change {
    Created,
    Recreated,
    Started,
    /// Drained first; `cut` requests were still in flight when the drain
    /// timed out and were cut.
    Removed {
        cut: u64,
    },
    /// Replaced one at a time, drained first, so the site stayed up (but
    /// for `cut` requests still in flight when the drain timed out).
    Rolled {
        cut: u64,
    },
    /// The balancer's server list changed through its admin API.
    ServersLive,
    /// The balancer's strategy or retries changed through its admin API.
    SettingsLive {
        strategy: crate::topology::Strategy,
        retries: crate::topology::Toggle,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created => f.write_str("created"),
            Change::Recreated => f.write_str("recreated"),
            Change::Started => f.write_str("started"),
            Change::Removed { cut: 0 } => f.write_str("removed"),
            Change::Removed { cut } => write!(
                f,
                "removed (the drain timed out: {cut} requests in flight were cut)"
            ),
            Change::Rolled { cut: 0 } => f.write_str("replaced (rolling, drained first)"),
            Change::Rolled { cut } => write!(
                f,
                "replaced (rolling; the drain timed out: {cut} requests in flight were cut)"
            ),
            Change::ServersLive => f.write_str("servers updated live"),
            Change::SettingsLive { strategy, retries } => {
                write!(f, "now {strategy} with retries {retries} (live)")
            }
        }
    }
}

/// What `up` did, for the summary it prints.
#[derive(Debug, Clone)]
pub struct UpReport {
    pub lab: String,
    pub entrypoint: Option<String>,
    /// (service, what happened) for each service that changed.
    pub changes: Vec<(String, Change)>,
    pub kept: usize,
}

impl UpReport {
    /// Just the changes, for commands that change a running lab.
    pub fn render_changes(&self) -> String {
        if self.changes.is_empty() {
            return "nothing to change: the lab already looks like that\n".into();
        }
        self.changes
            .iter()
            .map(|(svc, what)| format!("  {:<10} {svc}\n", what.to_string()))
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str(&format!(
                "lab {:?} already matches the configuration: nothing to change ({} services running)\n",
                self.lab, self.kept
            ));
        } else {
            for (svc, what) in &self.changes {
                out.push_str(&format!("  {:<10} {svc}\n", what.to_string()));
            }
        }
        if let Some(e) = &self.entrypoint {
            out.push_str(&format!(
                "\nThe lab is up. Entry point: {e}\n\nNext:\n  curl -i {e}/                      who served you?\n  lab status                           every service and its health\n  lab load --scenario sessions         users logging in through the balancer\n  lab down                             remove it all\n"
            ));
        }
        out
    }
}

fn lab_labels(lab: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::LAB.to_string(), lab.to_string()),
        (labels::VERSION.to_string(), images::VERSION.to_string()),
    ])
}

/// Every container of a lab, each one's health as of now
/// ([`crate::readiness`]: a container Docker still calls starting is
/// checked at once).
pub async fn containers(rt: &dyn Runtime, lab: &str) -> Result<Vec<ContainerInfo>> {
    let mut all = rt.list_containers(&[(labels::LAB, lab)]).await?;
    crate::readiness::refresh(rt, &mut all).await;
    Ok(all)
}

/// The network carries the secrets; make both on the first `up`. Also
/// says where an HA pair's addresses are on it (see [`crate::ha`]).
async fn ensure_network(rt: &dyn Runtime, lab: &str) -> Result<(Secrets, Option<Layout>)> {
    let nets = rt.list_networks(&[(labels::LAB, lab)]).await?;
    if let Some(n) = nets.iter().find(|n| n.name == naming::network(lab)) {
        if let Some(s) = n
            .labels
            .get(labels::SECRETS)
            .and_then(|s| Secrets::from_label(s))
        {
            let layout = rt.network_ipam(&n.name).await?.and_then(|i| Layout::of(&i));
            return Ok((s, layout));
        }
        return Err(LabError::NoSecrets(n.name.clone()));
    }
    let secrets = Secrets::generate();
    let mut l = lab_labels(lab);
    l.insert(labels::SECRETS.to_string(), secrets.to_label());
    let layout = make_network(rt, &naming::network(lab), &l).await?;
    Ok((secrets, layout))
}

/// Docker picks a subnet no other network uses (from its own pools, which
/// respects a user's `default-address-pools`); the network is then made
/// again with that subnet and an allocation range of its lower half, so
/// the upper half is free for an HA pair's fixed addresses.
async fn make_network(
    rt: &dyn Runtime,
    name: &str,
    l: &BTreeMap<String, String>,
) -> Result<Option<Layout>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        rt.create_network(name, l).await?;
        let chosen = rt.network_ipam(name).await?;
        let Some(want) = chosen.as_ref().and_then(ha::reserved) else {
            // A subnet too small to split: keep Docker's network (one
            // balancer works on it; a pair will say why not).
            return Ok(None);
        };
        rt.remove_network(name).await?;
        match rt.create_network_ipam(name, l, &want).await {
            Ok(()) => return Ok(Layout::of(&want)),
            // Another program took the subnet between the two calls.
            Err(e) if attempt < 3 => {
                tracing::warn!("making {name} on {} again: {e}", want.subnet)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The lab's secrets, for commands that need them (none are made here).
pub async fn secrets(rt: &dyn Runtime, lab: &str) -> Result<Option<Secrets>> {
    let nets = rt.list_networks(&[(labels::LAB, lab)]).await?;
    Ok(nets
        .iter()
        .find(|n| n.name == naming::network(lab))
        .and_then(|n| n.labels.get(labels::SECRETS))
        .and_then(|s| Secrets::from_label(s)))
}

/// The balancer's published admin address, if it runs.
pub fn admin_addr(containers: &[ContainerInfo]) -> Option<String> {
    containers
        .iter()
        .find(|c| c.label(labels::ROLE) == Some(Role::Lb.as_str()) && c.state == State::Running)
        .and_then(|c| c.ports.get(&LB_ADMIN_PORT).cloned())
}

/// Every running balancer's published admin address (two in an HA pair).
pub fn admin_addrs(containers: &[ContainerInfo]) -> Vec<String> {
    containers
        .iter()
        .filter(|c| c.label(labels::ROLE) == Some(Role::Lb.as_str()) && c.state == State::Running)
        .filter_map(|c| c.ports.get(&LB_ADMIN_PORT).cloned())
        .collect()
}

/// `http://127.0.0.1:PORT` of the balancer, or of the edge in front of an
/// HA pair.
pub fn entrypoint(containers: &[ContainerInfo]) -> Option<String> {
    let by_name = |n: &str| {
        containers
            .iter()
            .find(move |c| c.label(labels::SERVICE) == Some(n))
    };
    by_name(names::EDGE)
        .or_else(|| by_name(names::BALANCER))
        .and_then(|c| c.ports.get(&LB_PORT))
        .map(|a| format!("http://{a}"))
}

/// Port 0 asks for any free port. Docker would pick a new one each time the
/// balancer's container starts, so after `lab crash lb-1` and `lab start
/// lb-1` the site would move to another address and its users with it. 0 is
/// therefore turned into a real port once: the one the lab's entry point
/// (the balancer, or the edge of an HA pair) already publishes, or one free
/// now.
pub fn pin_port(t: &Topology, existing: &[ContainerInfo]) -> Topology {
    if t.port != 0 {
        return t.clone();
    }
    let published = entrypoint(existing)
        .as_deref()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0);
    let port = published.or_else(|| {
        std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()
    });
    Topology {
        port: port.unwrap_or(0),
        ..t.clone()
    }
}

/// Refuses early, with a clear line, when the balancer's port is taken by
/// something other than this lab.
fn check_port(port: u16, existing: &[ContainerInfo]) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    let ours = existing.iter().any(|c| {
        c.ports
            .get(&LB_PORT)
            .is_some_and(|a| a.ends_with(&format!(":{port}")))
    });
    if !ours && std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Err(LabError::PortInUse { port });
    }
    Ok(())
}

async fn create_and_start(rt: &dyn Runtime, spec: &ContainerSpec) -> Result<()> {
    for (vol, _) in &spec.volumes {
        if rt
            .list_volumes(&[(labels::LAB, &spec.labels[labels::LAB])])
            .await?
            .iter()
            .all(|v| &v.name != vol)
        {
            let mut l = lab_labels(&spec.labels[labels::LAB]);
            l.insert(labels::SERVICE.to_string(), spec.alias.clone());
            rt.create_volume(vol, &l).await?;
        }
    }
    rt.create_container(spec).await.map_err(|e| match e {
        RuntimeError::PortInUse { .. } => LabError::PortInUse {
            port: spec.ports.iter().map(|p| p.host_port).max().unwrap_or(0),
        },
        e => e.into(),
    })?;
    rt.start_container(&spec.name).await.map_err(|e| match e {
        RuntimeError::PortInUse { .. } => LabError::PortInUse {
            port: spec.ports.iter().map(|p| p.host_port).max().unwrap_or(0),
        },
        e => e.into(),
    })
}

/// A removed replica leaves a replication slot on the primary that would
/// make it keep WAL forever; drop it.
async fn drop_slot(rt: &dyn Runtime, lab: &str, replica: &str) {
    let slot = replica.replace('-', "_");
    let sql = format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}' AND NOT active"
    );
    let all = containers(rt, lab).await.unwrap_or_default();
    let primary = match crate::primary::current(rt, lab, &all).await {
        Ok(p) => naming::container(lab, &p),
        Err(e) => {
            tracing::warn!("could not drop the slot of {replica}: {e}");
            return;
        }
    };
    if let Err(e) = rt
        .exec(&primary, &["psql", "-q", "-U", "postgres", "-c", &sql])
        .await
    {
        tracing::warn!("could not drop the slot of {replica}: {e}");
    }
}

/// Order of groups: what others wait for comes first.
fn group(role: Role) -> u8 {
    crate::roles::kind(role).start_order()
}

fn role_of(spec: &ContainerSpec) -> Role {
    spec.labels
        .get(labels::ROLE)
        .and_then(|r| Role::parse(r))
        .unwrap_or(Role::Server)
}

pub async fn up(rt: &dyn Runtime, lab: &str, t: &Topology, opts: &UpOptions) -> Result<UpReport> {
    rt.ping().await?;
    let existing = containers(rt, lab).await?;
    let t = &pin_port(t, &existing);
    check_port(t.port, &existing)?;
    images::check_present(rt).await?;
    let (secrets, layout) = ensure_network(rt, lab).await?;
    if t.ha() && layout.is_none() {
        return Err(HaError::NoReservedRange {
            lab: lab.to_string(),
        }
        .into());
    }
    let desired = plan::desired_on(lab, t, &secrets, layout.as_ref());
    let actions = plan::diff(&desired, &existing);
    // Every running balancer: a live change must reach both of a pair.
    let admin = crate::lb_admin::fanout(admin_addrs(&existing), &opts.lb);
    let mut changes = Vec::new();
    let kept = actions.iter().filter(|a| !a.changes_something()).count();

    // Servers leaving the lab are drained first so no request is cut.
    let mut cut = BTreeMap::new();
    let removing: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Remove { .. }))
        .collect();
    if !removing.is_empty() {
        if let Some(admin) = &admin {
            let keep = balancer::upstreams(t);
            if let Err(e) = admin.set_servers(&keep).await {
                tracing::warn!("{e}");
            }
            for a in &removing {
                let d = admin
                    .wait_drained(a.service(), Duration::from_secs(10))
                    .await?;
                cut.insert(a.service().to_string(), d.cut());
            }
        }
    }
    for a in removing {
        if let Action::Remove { service, role } = a {
            rt.remove_container(&naming::container(lab, service))
                .await?;
            if *role == Role::Database {
                drop_slot(rt, lab, service).await;
                rt.remove_volume(&naming::volume(lab, service)).await?;
            }
            changes.push((
                service.clone(),
                Change::Removed {
                    cut: cut.get(service).copied().unwrap_or(0),
                },
            ));
        }
    }

    // Servers being replaced while a balancer runs are rolled one at a time,
    // each drained first, so the site stays up (a rolling restart).
    let rolling = |a: &Action| {
        matches!(a, Action::Recreate { spec } if role_of(spec) == Role::Server) && admin.is_some()
    };
    let last_group = t
        .services()
        .iter()
        .map(|s| group(s.role))
        .max()
        .unwrap_or(3)
        .max(3);
    for g in 0..=last_group {
        let mut jobs = Vec::new();
        for a in actions.iter().filter(|a| !rolling(a)) {
            match a {
                Action::Create { spec } if group(role_of(spec)) == g => {
                    jobs.push(Box::pin(async move {
                        create_and_start(rt, spec).await?;
                        Ok::<_, LabError>((spec.alias.clone(), Change::Created))
                    })
                        as std::pin::Pin<
                            Box<
                                dyn std::future::Future<Output = Result<(String, Change)>>
                                    + Send
                                    + '_,
                            >,
                        >);
                }
                Action::Recreate { spec } if group(role_of(spec)) == g => {
                    jobs.push(Box::pin(async move {
                        rt.remove_container(&spec.name).await?;
                        create_and_start(rt, spec).await?;
                        Ok((spec.alias.clone(), Change::Recreated))
                    }));
                }
                Action::Start { service } => {
                    let role = desired
                        .iter()
                        .find(|s| &s.alias == service)
                        .map(role_of)
                        .unwrap_or(Role::Server);
                    if group(role) == g {
                        jobs.push(Box::pin(async move {
                            rt.start_container(&naming::container(lab, service)).await?;
                            Ok((service.clone(), Change::Started))
                        }));
                    }
                }
                _ => {}
            }
        }
        changes.extend(try_join_all(jobs).await?);
        if g == 2 {
            if let Some(admin) = &admin {
                for a in actions.iter().filter(|a| rolling(a)) {
                    if let Action::Recreate { spec } = a {
                        let cut = roll_one(rt, lab, admin.as_ref(), spec, opts).await?;
                        changes.push((spec.alias.clone(), Change::Rolled { cut }));
                    }
                }
            }
        }
    }

    // New servers join the balancer only once they answer their health
    // check: a server still starting behind its fault proxy accepts a
    // connection and then cuts it, which would cost users requests.
    let joining: Vec<ContainerSpec> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { spec } if role_of(spec) == Role::Server => Some((**spec).clone()),
            _ => None,
        })
        .collect();
    if opts.wait && admin.is_some() && !joining.is_empty() {
        wait_healthy(rt, lab, &joining, opts.timeout, opts.progress.as_ref()).await?;
    }

    // A balancer that stayed gets the new server list and settings live.
    let lb_recreated = actions.iter().any(|a| {
        matches!(a, Action::Create { spec } | Action::Recreate { spec } if role_of(spec) == Role::Lb)
    });
    if !lb_recreated {
        if let Some(admin) = &admin {
            let view = admin.view().await?;
            let want = balancer::upstreams(t);
            let have: Vec<_> = view
                .servers
                .iter()
                .map(|s| crate::lb_admin::UpstreamConfig {
                    name: s.name.clone(),
                    address: s.address.clone(),
                })
                .collect();
            let mut touched = false;
            if have != want {
                admin.set_servers(&want).await?;
                changes.push((names::BALANCER.into(), Change::ServersLive));
                touched = true;
            }
            if view.strategy != t.lb || view.retries != t.retries.is_on() {
                admin.set_settings(t.lb, t.retries.is_on()).await?;
                changes.push((
                    names::BALANCER.into(),
                    Change::SettingsLive {
                        strategy: t.lb,
                        retries: t.retries,
                    },
                ));
                touched = true;
            }
            if touched {
                // So a restart of a balancer keeps what was changed live.
                for spec in desired.iter().filter(|s| role_of(s) == Role::Lb) {
                    rt.write_files(
                        &spec.name,
                        &[(LB_CONFIG_PATH.to_string(), balancer::config(t).to_toml())],
                    )
                    .await?;
                }
            }
        }
    }

    if opts.wait {
        if let Err(e) = wait_healthy(rt, lab, &desired, opts.timeout, opts.progress.as_ref()).await
        {
            return Err(why_not_pair(rt, lab, t, e).await);
        }
        if t.ha() {
            let pair: Vec<String> = desired
                .iter()
                .filter(|s| role_of(s) == Role::Lb)
                .map(|s| s.name.clone())
                .collect();
            // The first election takes one master-down interval.
            let limit = t.advert_int * 4 + Duration::from_secs(15);
            if ha::wait_master(rt, &pair, limit).await.is_none() {
                return Err(HaError::NoMaster {
                    secs: limit.as_secs(),
                }
                .into());
            }
        }
    }
    let now = containers(rt, lab).await?;
    Ok(UpReport {
        lab: lab.to_string(),
        entrypoint: entrypoint(&now),
        changes,
        kept,
    })
}

/// A balancer of a pair that stopped while starting most likely could not
/// run keepalived (no NET_ADMIN, say, on some Docker Desktop): its
/// entrypoint names the reason in one line, which becomes the error.
async fn why_not_pair(rt: &dyn Runtime, lab: &str, t: &Topology, e: LabError) -> LabError {
    let service = match &e {
        LabError::Exited { service, .. } => service.clone(),
        LabError::NotHealthy { first, .. } => first.clone(),
        _ => return e,
    };
    if !t.ha() || !service.starts_with("lb-") {
        return e;
    }
    let Ok(mut lines) = rt
        .logs(&naming::container(lab, &service), false, Some(30))
        .await
    else {
        return e;
    };
    use futures::StreamExt;
    let mut reason = None;
    while let Some(Ok(chunk)) = lines.next().await {
        for line in chunk.lines() {
            if let Some((_, r)) = line.split_once("lab-balancer-entrypoint: error: ") {
                reason = Some(r.trim().to_string());
            }
        }
    }
    match reason {
        Some(reason) => HaError::Keepalived { service, reason }.into(),
        None => e,
    }
}

/// Replace one server without dropping a request: drain it in the balancer,
/// wait for its requests in flight, replace it, wait until it is healthy and
/// the balancer sees it up, then let traffic back in.
async fn roll_one(
    rt: &dyn Runtime,
    lab: &str,
    admin: &dyn LbControl,
    spec: &ContainerSpec,
    opts: &UpOptions,
) -> Result<u64> {
    let timeout = opts.timeout;
    let name = spec.alias.as_str();
    admin.drain(name).await?;
    let drained = admin.wait_drained(name, Duration::from_secs(10)).await?;
    rt.remove_container(&spec.name).await?;
    create_and_start(rt, spec).await?;
    wait_healthy(
        rt,
        lab,
        std::slice::from_ref(spec),
        timeout,
        opts.progress.as_ref(),
    )
    .await?;
    admin.undrain(name).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let v = admin.view().await?;
        if v.servers
            .iter()
            .any(|s| s.name == name && s.state == ServerState::Up)
        {
            return Ok(drained.cut());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(LabError::NotHealthy {
        services: format!("{name} (in the balancer)"),
        first: name.to_string(),
        secs: timeout.as_secs(),
    })
}

/// Polls until every service is healthy, showing who we wait for (a
/// container Docker still calls starting has its check run at once:
/// [`crate::readiness`]).
pub async fn wait_healthy(
    rt: &dyn Runtime,
    lab: &str,
    desired: &[ContainerSpec],
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let task = progress.task("healthy", Size::Items(desired.len() as u64));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = containers(rt, lab).await?;
        let mut waiting = Vec::new();
        for spec in desired {
            let c = now
                .iter()
                .find(|c| c.label(labels::SERVICE) == Some(spec.alias.as_str()));
            match c {
                Some(c) if matches!(c.state, State::Exited | State::Dead) => {
                    return Err(LabError::Exited {
                        service: spec.alias.clone(),
                        state: c.state.as_str().to_string(),
                    });
                }
                Some(c)
                    if c.state == State::Running
                        && matches!(c.health, Health::Healthy | Health::None) => {}
                _ => waiting.push(spec.alias.clone()),
            }
        }
        task.set_position((desired.len() - waiting.len()) as u64);
        if waiting.is_empty() {
            return Ok(());
        }
        task.detail(&format!("waiting for {}", waiting.join(", ")));
        if tokio::time::Instant::now() >= deadline {
            return Err(LabError::NotHealthy {
                first: waiting[0].clone(),
                services: waiting.join(", "),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Image;
    use crate::lb_admin::{BalancerView, FakeLb};
    use crate::runtime::fake::FakeRuntime;
    use crate::topology::{Strategy, Toggle};

    /// A fake balancer that already knows the default topology's servers.
    fn lb(t: &Topology) -> FakeLb {
        let lb = FakeLb::default();
        *lb.state.lock().unwrap() = Some(BalancerView {
            strategy: t.lb,
            retries: t.retries.is_on(),
            servers: Vec::new(),
        });
        lb
    }

    fn runtime() -> FakeRuntime {
        let rt = FakeRuntime::new();
        for i in Image::ALL {
            rt.add_image(&i.tag(), &[(labels::VERSION, images::VERSION)]);
        }
        rt
    }

    fn opts_with(lb: &FakeLb) -> UpOptions {
        UpOptions {
            wait: true,
            timeout: Duration::from_secs(5),
            lb: lb.connector(),
            progress: Arc::new(crate::progress::Silent),
        }
    }

    fn opts() -> UpOptions {
        opts_with(&FakeLb::default())
    }

    fn topo() -> Topology {
        Topology {
            port: 0,
            ..Topology::default()
        }
    }

    #[tokio::test]
    async fn first_up_creates_everything_in_dependency_order() {
        let rt = runtime();
        let r = up(&rt, "t1", &topo(), &opts()).await.unwrap();
        assert_eq!(r.changes.len(), 7);
        let calls = rt.calls();
        let pos = |s: &str| calls.iter().position(|c| c == s).unwrap();
        assert!(pos("create network t1-net") < pos("create t1-db-1"));
        assert!(pos("create volume t1-db-1-data") < pos("create t1-db-1"));
        // Every database node starts before the servers that need them.
        assert!(pos("start t1-db-2") < pos("create t1-server-1"));
        assert!(pos("start t1-server-3") < pos("create t1-lb-1"));
        assert!(r.entrypoint.unwrap().starts_with("http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn waiting_runs_a_starting_container_s_check_instead_of_docker_s_clock() {
        let rt = runtime();
        up(&rt, "tw", &topo(), &opts()).await.unwrap();
        let desired: Vec<ContainerSpec> = ["tw-db-2", "tw-server-1"]
            .iter()
            .map(|n| rt.spec(n).unwrap())
            .collect();
        // Docker has not yet run db-2's check; the check would pass.
        rt.set_health("tw-db-2", Health::Starting);
        let quick = Duration::from_millis(300);
        let silent = crate::progress::Silent;
        wait_healthy(&rt, "tw", &desired, quick, &silent)
            .await
            .unwrap();
        assert!(rt
            .calls()
            .iter()
            .any(|c| c.starts_with("exec tw-db-2 /usr/lib/postgresql/15/bin/pg_isready")));
        // The check fails: still starting, whatever the lab's patience.
        rt.set_exec_code("tw-db-2", 2);
        let e = wait_healthy(&rt, "tw", &desired, quick, &silent)
            .await
            .unwrap_err();
        assert!(
            matches!(e, LabError::NotHealthy { ref first, .. } if first == "db-2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn second_up_with_the_same_config_changes_nothing() {
        let rt = runtime();
        let lb = lb(&topo());
        up(&rt, "t2", &topo(), &opts_with(&lb)).await.unwrap();
        lb.state.lock().unwrap().as_mut().unwrap().servers = Vec::new();
        crate::lb_admin::LbControl::set_servers(&lb, &crate::roles::balancer::upstreams(&topo()))
            .await
            .unwrap();
        rt.clear_calls();
        let r = up(&rt, "t2", &topo(), &opts_with(&lb)).await.unwrap();
        assert!(r.changes.is_empty(), "{:?}", r.changes);
        assert!(r.render().contains("nothing to change"));
        assert!(
            !rt.calls()
                .iter()
                .any(|c| c.starts_with("create") || c.starts_with("remove")),
            "{:?}",
            rt.calls()
        );
    }

    #[tokio::test]
    async fn secrets_are_made_once_and_kept() {
        let rt = runtime();
        up(&rt, "t3", &topo(), &opts()).await.unwrap();
        let s1 = secrets(&rt, "t3").await.unwrap().unwrap();
        let t = Topology {
            servers: 2,
            ..topo()
        };
        let lb = lb(&topo());
        let r = up(&rt, "t3", &t, &opts_with(&lb)).await.unwrap();
        assert!(
            r.changes
                .contains(&("server-3".to_string(), Change::Removed { cut: 0 })),
            "{:?}",
            r.changes
        );
        assert_eq!(lb.state.lock().unwrap().as_ref().unwrap().servers.len(), 2);
        assert!(rt.spec("t3-server-3").is_none());
        assert_eq!(secrets(&rt, "t3").await.unwrap().unwrap(), s1);
        let spec = rt.spec("t3-db-1").unwrap();
        assert_eq!(spec.env["POSTGRES_PASSWORD"], s1.db_password);
    }

    #[tokio::test]
    async fn missing_images_stop_before_anything_is_created() {
        let rt = FakeRuntime::new();
        let err = up(&rt, "t4", &topo(), &opts())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("lab images build"), "{err}");
        assert!(rt.calls().is_empty());
    }

    #[tokio::test]
    async fn a_crashed_service_is_started_again() {
        let rt = runtime();
        up(&rt, "t5", &topo(), &opts()).await.unwrap();
        rt.set_state("t5-server-2", State::Exited);
        let lb = lb(&topo());
        crate::lb_admin::LbControl::set_servers(&lb, &crate::roles::balancer::upstreams(&topo()))
            .await
            .unwrap();
        let r = up(&rt, "t5", &topo(), &opts_with(&lb)).await.unwrap();
        assert_eq!(r.changes, [("server-2".to_string(), Change::Started)]);
    }

    #[tokio::test]
    async fn strategy_and_retries_change_live() {
        let rt = runtime();
        let lb = lb(&topo());
        up(&rt, "t6", &topo(), &opts_with(&lb)).await.unwrap();
        crate::lb_admin::LbControl::set_servers(&lb, &crate::roles::balancer::upstreams(&topo()))
            .await
            .unwrap();
        rt.clear_calls();
        let t = Topology {
            lb: Strategy::LeastConn,
            retries: Toggle::On,
            ..topo()
        };
        up(&rt, "t6", &t, &opts_with(&lb)).await.unwrap();
        assert!(
            lb.calls().contains(&"settings least-conn true".to_string()),
            "{:?}",
            lb.calls()
        );
        // The balancer keeps running; its file is rewritten for its next start.
        assert!(!rt
            .calls()
            .iter()
            .any(|c| c.starts_with("create") || c.starts_with("remove")));
        assert!(rt.calls().contains(&"write t6-lb-1 1".to_string()));
    }

    #[tokio::test]
    async fn every_new_network_reserves_its_upper_half() {
        let rt = runtime();
        up(&rt, "t7", &topo(), &opts()).await.unwrap();
        let ipam = rt.network_ipam("t7-net").await.unwrap().unwrap();
        let layout = Layout::of(&ipam).expect("the upper half is reserved");
        assert!(layout.vip.to_string().ends_with(".255.254"), "{layout:?}");
    }

    #[tokio::test]
    async fn a_pair_waits_for_a_master_and_the_edge_is_the_entry_point() {
        let rt = runtime();
        let t = Topology {
            balancers: 2,
            ..topo()
        };
        let master = r#"{"state": "master", "since": "2026-11-30T11:25:00.653Z", "since_unix_ms": 1, "priority": 150}"#;
        rt.set_exec_stdout("t8-lb-1", master);
        let r = up(&rt, "t8", &t, &opts()).await.unwrap();
        let names: Vec<&str> = r.changes.iter().map(|(s, _)| s.as_str()).collect();
        assert!(
            names.contains(&"lb-2") && names.contains(&"edge"),
            "{names:?}"
        );
        let all = containers(&rt, "t8").await.unwrap();
        let edge = all.iter().find(|c| c.name == "t8-edge").unwrap();
        assert_eq!(
            entrypoint(&all).unwrap(),
            format!("http://{}", edge.ports[&LB_PORT])
        );
        assert!(rt.calls().iter().any(|c| c.starts_with("exec t8-lb-1 cat")));
    }

    #[tokio::test]
    async fn a_pair_on_an_old_network_names_the_fix() {
        let rt = runtime();
        // A network made before the upper half was reserved.
        let mut l = lab_labels("t9");
        l.insert(labels::SECRETS.to_string(), Secrets::generate().to_label());
        rt.create_network("t9-net", &l).await.unwrap();
        let t = Topology {
            balancers: 2,
            ..topo()
        };
        let err = up(&rt, "t9", &t, &opts()).await.unwrap_err().to_string();
        assert!(
            err.contains("lab down") && err.contains("--balancers 2"),
            "{err}"
        );
        // One balancer still runs on it.
        up(&rt, "t9", &topo(), &opts()).await.unwrap();
    }

    #[test]
    fn a_taken_port_is_refused_with_the_fix() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = check_port(port, &[]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("port {port}")) && err.contains("--port"),
            "{err}"
        );
    }
}
