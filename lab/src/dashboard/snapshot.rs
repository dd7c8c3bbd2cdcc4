//! What the page shows: the lab read back once a second, and pushed to
//! every open page as a server-sent event.
//!
//! A snapshot is the report `lab status --json` prints, made by the same
//! function ([`crate::status::status`]), with the time it was read and
//! whether there is a lab at all. "No lab" is a snapshot like any other,
//! not an error that ends the stream: after `lab down` the page says so,
//! and after `lab up` the next snapshot shows the new lab.
//!
//! One reader serves every page: a single task reads the lab and publishes
//! the result in a `watch` channel that each page's stream follows, so two
//! browsers see the same snapshot and cost what one does. With no page
//! open, and no job of the page's running, it reads nothing, so an idle
//! dashboard does not load Docker or the balancers while a student
//! measures something else.
//!
//! Not every read is a full `lab status`: what only `docker exec` can tell
//! (a database node's part, lag, netem) is asked every [`FULL_EVERY`] and
//! right after a button, and carried into the cheap reads in between, so
//! an open page costs the lab little (bench/dashboard/ measures it).
//!
//! The reader also compares each snapshot with the one before and marks
//! what changed (a service down, paused, slow, back; a database node that
//! changes part; the lab gone or back) on the time axis ([`job::Marks`]),
//! whoever made the change: the page, the CLI or a health check. What a
//! service's condition is ([`Condition`]) is decided here, once, and sent
//! with the snapshot, so the page colours what the marks name.
//!
//! [`job::Marks`]: super::job::Jobs::mark

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use std::collections::BTreeMap;

use super::job::{self, Jobs, Mark, Recent, Source};
use super::{AppState, Lab};
use crate::error::LabError;
use crate::naming::NameError;
use crate::primary::DbRole;
use crate::runtime::{Health, State as Run};
use crate::status::{status_to, Depth, Fault, ServiceStatus, StatusReport};

/// The marks a snapshot carries: the last ten minutes, as long as the
/// longest load the page may start.
const MARKS_SHOWN_MS: u64 = 600_000;

/// The lab at one moment.
#[derive(Serialize, Debug, Clone)]
pub struct Snapshot {
    /// When it was read, in ms since the Unix epoch: the charts' time axis.
    pub t: u64,
    /// The lab the dashboard was started for (`--lab`).
    pub lab: String,
    #[serde(flatten)]
    pub lab_state: LabState,
    /// Each service's condition, by name (the diagram's colours).
    pub conditions: BTreeMap<String, Condition>,
    /// The page's load or lesson, the last one if none runs.
    pub job: Option<Recent>,
    /// The changes marked on the time axis, oldest first.
    pub marks: Vec<Mark>,
}

/// One word for how a service is: the diagram's colour, and what a mark
/// says changed. Order matters: a stopped service is down, whatever else
/// is wrong with it.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    Down,
    Paused,
    Partitioned,
    Slow,
    Lagging,
    Unhealthy,
    Starting,
    Ok,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Down => "down",
            Condition::Paused => "paused",
            Condition::Partitioned => "partitioned",
            Condition::Slow => "slow",
            Condition::Lagging => "lagging",
            Condition::Unhealthy => "unhealthy",
            Condition::Starting => "starting",
            Condition::Ok => "ok",
        }
    }
}

/// A replica further behind than this is drawn lagging, whatever made it
/// late (`lab lag`, a slow WAL link, a busy primary).
const LAGGING_MS: u64 = 1000;

pub fn condition(s: &ServiceStatus) -> Condition {
    let has = |f: fn(&Fault) -> bool| s.faults.iter().any(f);
    if has(|f| matches!(f, Fault::Stopped))
        || matches!(s.state, Run::Exited | Run::Dead | Run::Created)
    {
        return Condition::Down;
    }
    if has(|f| matches!(f, Fault::Paused)) || s.state == Run::Paused {
        return Condition::Paused;
    }
    // A hung or refusing link cuts the service off as a partition does.
    if has(|f| matches!(f, Fault::Partition))
        || has(|f| matches!(f, Fault::Link { fault, .. } if fault.blackhole || fault.reset))
    {
        return Condition::Partitioned;
    }
    if has(|f| matches!(f, Fault::Slow { .. } | Fault::Link { .. })) {
        return Condition::Slow;
    }
    let late = s
        .replication
        .as_ref()
        .and_then(|r| r.replay_lag_ms)
        .is_some_and(|ms| ms > LAGGING_MS);
    if has(|f| matches!(f, Fault::Lag { .. })) || late {
        return Condition::Lagging;
    }
    if s.health == Health::Unhealthy {
        return Condition::Unhealthy;
    }
    if s.health == Health::Starting || s.state == Run::Restarting {
        return Condition::Starting;
    }
    Condition::Ok
}

/// Every service the snapshot shows, the edge included.
fn services(st: &StatusReport) -> impl Iterator<Item = &ServiceStatus> {
    st.edge.iter().chain(st.services.iter())
}

/// What changed from `old` to `new`, in words, for the time axis.
pub fn changes(old: &LabState, new: &LabState) -> Vec<String> {
    let (o, n) = match (old, new) {
        (LabState::Running { status: o }, LabState::Running { status: n }) => (o, n),
        _ if old.word() != new.word() => {
            return vec![format!("lab: {} → {}", old.word(), new.word())]
        }
        _ => return Vec::new(),
    };
    let before: BTreeMap<&str, &ServiceStatus> =
        services(o).map(|s| (s.name.as_str(), s)).collect();
    let mut out = Vec::new();
    for s in services(n) {
        let Some(b) = before.get(s.name.as_str()) else {
            out.push(format!("{} added", s.name));
            continue;
        };
        let (cb, cs) = (condition(b), condition(s));
        if cb != cs {
            out.push(format!("{}: {} → {}", s.name, cb.as_str(), cs.as_str()));
        }
        if let (Some(rb), Some(rs)) = (b.db_role, s.db_role) {
            if rb != rs {
                out.push(format!("{}: {rb} → {rs}", s.name));
            }
        }
        if let (Some(lb), Some(ls)) = (&b.lb, &s.lb) {
            if lb.state != ls.state {
                out.push(format!(
                    "{} in the balancer: {} → {}",
                    s.name, lb.state, ls.state
                ));
            }
        }
    }
    let now: std::collections::BTreeSet<&str> = services(n).map(|s| s.name.as_str()).collect();
    for name in before.keys().filter(|k| !now.contains(*k)) {
        out.push(format!("{name} removed"));
    }
    out
}

impl LabState {
    fn word(&self) -> &'static str {
        match self {
            LabState::Running { .. } => "running",
            LabState::NoLab { .. } => "no lab",
            LabState::Error { .. } => "cannot read",
        }
    }
}

/// Whether there is a lab to show.
#[derive(Serialize, Debug, Clone)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum LabState {
    /// The lab runs (or some of it): what `lab status --json` says.
    Running { status: Box<StatusReport> },
    /// No container of this lab exists: before `lab up`, after `lab down`.
    NoLab { message: String },
    /// The lab could not be read (Docker did not answer, say).
    Error { message: String },
}

/// How often the reader looks inside the containers (`docker exec`: a
/// database node's part, a replica's lag, netem). Those reads cost Docker a
/// process each, several per read, and would take a good share of a small
/// machine's CPU from the lab a student measures if made every second.
/// In between, a cheap read (Docker's list, the balancers, the fault
/// proxies) is completed with the last full one's findings ([`carry`]); a
/// button's change is read in full at once.
pub const FULL_EVERY: Duration = Duration::from_secs(5);

/// Reads the lab once, the way `lab status` does, with the page's job and
/// the marks.
pub async fn read(lab: &Lab, jobs: &Jobs) -> Snapshot {
    read_to(lab, jobs, Depth::Full, None).await
}

/// What only a full read tells, copied from `full` into a cheaper read:
/// each database node's part and replication, the floating address, and
/// the netem and lag faults of a service still running.
pub fn carry(quick: &mut StatusReport, full: &StatusReport) {
    let before: BTreeMap<&str, &ServiceStatus> =
        services(full).map(|s| (s.name.as_str(), s)).collect();
    for s in quick.services.iter_mut().chain(quick.edge.iter_mut()) {
        let Some(f) = before.get(s.name.as_str()) else {
            continue;
        };
        let running = s.state == Run::Running;
        s.db_role = match f.db_role {
            Some(_) if !running => Some(DbRole::Down),
            r => r,
        };
        s.timeline = f.timeline;
        s.replication = f.replication.clone();
        s.vip = f.vip;
        s.vip_since = f.vip_since.clone();
        if running {
            s.faults.extend(
                f.faults
                    .iter()
                    .filter(|x| matches!(x, Fault::Slow { .. } | Fault::Lag { .. }))
                    .cloned(),
            );
        }
    }
}

async fn read_to(lab: &Lab, jobs: &Jobs, depth: Depth, full: Option<&StatusReport>) -> Snapshot {
    // Taken before the read: the balancers' counts, which the page divides
    // by the time between two snapshots, are read near its start, and a
    // full read takes longer than a cheap one.
    let t = job::now_ms();
    let lab_state = match status_to(&*lab.rt, &lab.name, &lab.lb, depth).await {
        Ok(mut status) => {
            if let (Depth::Outside, Some(full)) = (depth, full) {
                carry(&mut status, full);
            }
            LabState::Running {
                status: Box::new(status),
            }
        }
        Err(e @ LabError::Name(NameError::NoLab(_))) => LabState::NoLab {
            message: e.to_string(),
        },
        Err(e) => LabState::Error {
            message: e.to_string(),
        },
    };
    let conditions = match &lab_state {
        LabState::Running { status } => services(status)
            .map(|s| (s.name.clone(), condition(s)))
            .collect(),
        _ => BTreeMap::new(),
    };
    Snapshot {
        t,
        lab: lab.name.clone(),
        lab_state,
        conditions,
        job: jobs.recent(),
        marks: jobs.marks_since(t.saturating_sub(MARKS_SHOWN_MS)),
    }
}

/// The latest snapshot as JSON, shared by every open page.
#[derive(Clone)]
pub struct Feed {
    tx: watch::Sender<Option<Arc<str>>>,
    wake: Arc<Notify>,
}

impl Feed {
    /// Starts the reader: a snapshot every `every` while a page is open or
    /// a job runs.
    pub fn start(lab: Arc<Lab>, jobs: Jobs, every: Duration) -> Feed {
        let (tx, _) = watch::channel(None);
        let feed = Feed {
            tx,
            wake: Arc::new(Notify::new()),
        };
        let (tx, wake) = (feed.tx.clone(), feed.wake.clone());
        tokio::spawn(async move {
            // Ticks every `every` from the start of each read, not after it:
            // reading a lab takes a good part of a second (a `docker exec`
            // per service), and the page's time axis counts seconds. A read
            // longer than `every` delays the next tick rather than bunching.
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut before: Option<LabState> = None;
            let mut full: Option<(tokio::time::Instant, StatusReport)> = None;
            loop {
                let woken = tokio::select! {
                    _ = tick.tick() => false,
                    _ = wake.notified() => true,
                };
                if tx.receiver_count() > 0 || jobs.busy() {
                    let due = full
                        .as_ref()
                        .is_none_or(|(at, _)| at.elapsed() >= FULL_EVERY);
                    let depth = if woken || due {
                        Depth::Full
                    } else {
                        Depth::Outside
                    };
                    let mut snap = read_to(&lab, &jobs, depth, full.as_ref().map(|(_, r)| r)).await;
                    match (&snap.lab_state, depth) {
                        (LabState::Running { status }, Depth::Full) => {
                            full = Some((tokio::time::Instant::now(), (**status).clone()));
                        }
                        (LabState::Running { .. }, Depth::Outside) => {}
                        // No lab: the next one is read in full first.
                        _ => full = None,
                    }
                    if let Some(old) = &before {
                        let seen = changes(old, &snap.lab_state);
                        if !seen.is_empty() {
                            for c in seen {
                                jobs.mark(Source::Lab, c);
                            }
                            snap.marks = jobs.marks_since(snap.t.saturating_sub(MARKS_SHOWN_MS));
                        }
                    }
                    let json = match serde_json::to_string(&snap) {
                        Ok(j) => j,
                        Err(e) => format!(
                            r#"{{"state":"error","message":"cannot serialise the snapshot: {e}"}}"#
                        ),
                    };
                    tx.send_replace(Some(json.into()));
                    before = Some(snap.lab_state);
                } else {
                    // Nobody watched: what changed meanwhile is not marked
                    // as if it had just happened.
                    before = None;
                    full = None;
                }
            }
        });
        feed
    }

    /// Read the lab now rather than at the next tick: a page just opened,
    /// or a button changed the lab and the student waits to see it.
    pub fn refresh(&self) {
        self.wake.notify_one();
    }

    /// A stream of snapshots, starting with a fresh one.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<str>> + Send + 'static {
        // A new receiver counts the current (maybe old) value as seen: the
        // first item is the one read for this page.
        let rx = self.tx.subscribe();
        self.refresh();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let latest = rx.borrow_and_update().clone();
                if let Some(json) = latest {
                    return Some((json, rx));
                }
            }
        })
    }
}

/// `GET /events`: one `data:` line of JSON per snapshot, for `EventSource`.
pub async fn events(State(s): State<AppState>) -> Response {
    use futures::StreamExt;
    let stream = s
        .feed
        .subscribe()
        .map(|json| Ok::<_, Infallible>(Event::default().data(&*json)));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/snapshot`: one snapshot, for scripts and `curl`.
pub async fn once(State(s): State<AppState>) -> Response {
    axum::Json(read(&s.lab, &s.jobs).await).into_response()
}
