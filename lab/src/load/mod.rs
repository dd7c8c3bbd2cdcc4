//! The load driver: virtual users that exercise the lab through its balancer,
//! and the measurements that show what they went through.
//!
//! Two ways to generate load, and why both exist:
//!
//! - **Closed model** (`--users U`): U users, each sending its next request as
//!   soon as the previous one is answered. Like a fixed team of testers. When
//!   the system slows down, the users slow down with it, so the load drops just
//!   when the system struggles: throughput is what the system *gives*, and a
//!   stall hides itself (the users were all waiting, so nobody "saw" it more
//!   than once).
//! - **Open model** (`--rate R`): requests arrive on a schedule, R per second,
//!   whether or not earlier ones were answered. Like the public on the
//!   internet: people keep arriving when your site is slow. Latency is counted
//!   from the *scheduled* time, not from when the driver got round to sending:
//!   if the lab stalls for one second, every request due in that second waited
//!   up to one second, and the p99 says so. Measuring from the actual send time
//!   instead would forget exactly the requests that suffered: that mistake is
//!   called *coordinated omission*. When the driver itself falls behind (all
//!   connections busy), it says so in the report ("behind schedule") instead
//!   of silently sending fewer requests.
//!
//! Every run is bounded: it stops after `--duration` (at most one hour), or
//! after `--requests N`, or on Ctrl-C, then waits at most `--timeout` for the
//! requests still in flight, audits the bank accounts on the primary (bounded
//! too) and returns the report of what ran.
//!
//! Layout: [`scenario`] (what users do), [`checkers`] (session loss, stale
//! read, lost write), [`stats`] (histogram and timeline), [`view`] (the live
//! view), [`report`] (JSON and text), [`history`] (every operation as a JSON
//! line), [`http`] (one keep-alive connection and cookie jar per user).

pub mod checkers;
pub mod history;
pub mod http;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod view;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use report::Report;
pub use scenario::Scenario;
pub use view::{LiveView, Snapshot};

use checkers::Ledger;
use history::{HistoryLine, HistorySender, HistoryWriter};
use http::Target;
use report::{Audit, BehindSchedule, HistoryInfo, Parts, TimelineEntry};
use scenario::{BankBook, OpResult, RunCtx, User};
use stats::{Sample, Stats};
use view::View;

/// The longest run `--duration` accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The longest per-request `--timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The highest `--rate`.
pub const MAX_RATE: f64 = 100_000.0;
/// The most `--users` (and `--max-in-flight`).
pub const MAX_USERS: u32 = 10_000;
/// `--users` when neither `--users` nor `--rate` is given.
pub const DEFAULT_USERS: u32 = 20;
/// Open model: a request that starts later than this after its scheduled time
/// counts as late (timer resolution makes a millisecond or two normal).
pub const LATE_THRESHOLD: Duration = Duration::from_millis(10);
/// Open model: users created before the first request, so that `mixed` has
/// every part from the start.
const OPEN_INITIAL_USERS: u32 = 9;

/// `browse`: the share of reads that go to the 20 hot products by default.
pub const DEFAULT_HOT_SHARE: f64 = 0.8;

/// Examples shown by `lab load --help`.
pub const LOAD_EXAMPLES: &str = "\
Examples:
  lab load                                    browse, 20 users, 30 s
  lab load --scenario sessions --users 50     then `lab crash server-1` in another terminal
  lab load --scenario bank --rate 200 --duration 1m --json > run.json
  lab load --scenario bank --history ops.jsonl    every operation as a JSON line
  lab load --scenario ping --users 64 --target http://127.0.0.1:18080   (measure the driver)
  lab load --scenario work --work-ms 2 --heavy-share 0.05 --heavy-ms 100 --rate 60   (uneven costs)
  lab load --scenario render --work-ms 10 --users 24  (each page: server work, then a database read)
  lab load --scenario pages --page-ms 8 --users 16   (popular pages from memory, each 8 ms of server CPU)

Closed model (--users): each user sends its next request when the last one is
answered. Open model (--rate): requests are due on a fixed schedule and latency
counts from the due time, so a stall cannot hide (coordinated omission).";

/// What the load engine runs: the model, the scenario and the bounds.
/// `lab load` builds one from its flags (`cli::LoadArgs::plan`); a lesson,
/// `lab chaos` and `lab spof` build theirs in code. Either way [`validate`]
/// checks it, so a plan made in code gets the same one-line errors.
///
/// [`validate`]: LoadPlan::validate
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    pub scenario: Scenario,
    /// Open model: requests started per second.
    pub rate: Option<f64>,
    /// Closed model: users (20 when neither this nor `rate` is set).
    pub users: Option<u32>,
    pub duration: Duration,
    /// Per request; also the grace period for requests in flight at the end.
    pub timeout: Duration,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Every operation as a JSON line in this file.
    pub history: Option<PathBuf>,
    /// Open model: the most requests in flight.
    pub max_in_flight: u32,
    /// `work`: CPU milliseconds per request.
    pub work_ms: u32,
    /// `pages`, `browse` and `mixed`: CPU milliseconds the server adds to
    /// every page, in its memory or cache or not (0: none).
    pub page_ms: u32,
    /// `browse`: share of reads that go to the hot products.
    pub hot_share: Option<f64>,
    /// `work`: share of heavy requests, and what a heavy one burns.
    pub heavy_share: Option<f64>,
    pub heavy_ms: u32,
    /// Another loopback URL than the lab's balancer.
    pub target: Option<String>,
    /// Where the live view goes, if anywhere.
    pub live: LiveView,
}

impl Default for LoadPlan {
    fn default() -> Self {
        LoadPlan {
            scenario: Scenario::Browse,
            rate: None,
            users: None,
            duration: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            requests: None,
            history: None,
            max_in_flight: 1000,
            work_ms: 10,
            page_ms: 0,
            hot_share: None,
            heavy_share: None,
            heavy_ms: 200,
            target: None,
            live: LiveView::Stdout,
        }
    }
}

/// How load is generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    Closed { users: u32 },
    Open { rate: f64 },
}

impl LoadPlan {
    /// The load model these arguments ask for.
    pub fn model(&self) -> Model {
        match (self.rate, self.users) {
            (Some(rate), _) => Model::Open { rate },
            (None, users) => Model::Closed {
                users: users.unwrap_or(DEFAULT_USERS),
            },
        }
    }

    /// Checks the arguments, also when they were built in code rather than
    /// parsed by clap. The error is one line naming the fix.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::InvalidArgs(m));
        if self.rate.is_some() && self.users.is_some() {
            return bad("--rate and --users exclude each other: --rate R for the open model, --users U for the closed one".into());
        }
        if let Some(rate) = self.rate {
            if let Err(m) = check_rate(rate) {
                return bad(m);
            }
        }
        if let Some(users) = self.users {
            if users == 0 || users > MAX_USERS {
                return bad(format!(
                    "--users must be between 1 and {MAX_USERS}, not {users}"
                ));
            }
        }
        if let Err(m) = check_duration("--duration", self.duration, MAX_DURATION) {
            return bad(m);
        }
        if let Err(m) = check_duration("--timeout", self.timeout, MAX_TIMEOUT) {
            return bad(m);
        }
        if self.requests == Some(0) {
            return bad("--requests must be at least 1".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_USERS {
            return bad(format!("--max-in-flight must be between 1 and {MAX_USERS}"));
        }
        if let Some(share) = self.heavy_share {
            if !(0.0..=1.0).contains(&share) {
                return bad(format!(
                    "--heavy-share is a share between 0 and 1 (e.g. 0.05), not {share}"
                ));
            }
        }
        if !(1..=5000).contains(&self.work_ms) || !(1..=5000).contains(&self.heavy_ms) {
            return bad("--work-ms and --heavy-ms are between 1 and 5000 ms".into());
        }
        if self.page_ms > 5000 {
            return bad("--page-ms is between 0 and 5000 ms".into());
        }
        if let Some(t) = &self.target {
            Target::parse(t)?;
        }
        Ok(())
    }
}

fn check_rate(rate: f64) -> Result<f64, String> {
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!(
            "--rate must be more than 0 requests per second (e.g. --rate 100), not {rate}"
        ));
    }
    if rate > MAX_RATE {
        return Err(format!(
            "--rate is at most {MAX_RATE} requests per second, not {rate}"
        ));
    }
    Ok(rate)
}

pub fn parse_share(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("{s:?} is not a share between 0 and 1 (e.g. 0.95)"))
}

pub fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of requests per second (e.g. 100)"))?;
    check_rate(rate)
}

fn check_duration(flag: &str, d: Duration, max: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err(format!("{flag} must be longer than 0 (e.g. 30s)"));
    }
    if d > max {
        return Err(format!(
            "{flag} is at most {}, not {}",
            humantime::format_duration(max),
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

fn parse_any_duration(flag: &str, s: &str, max: Duration) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("{flag} cannot be negative: '{s}' (e.g. 30s)"));
    }
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 30s, 2m, 1h)"))?;
    check_duration(flag, d, max)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_any_duration("--duration", s, MAX_DURATION)
}

pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_any_duration("--timeout", s, MAX_TIMEOUT)
}

/// What can stop `lab load` from running. Each message is one line that names
/// the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    InvalidArgs(String),
    #[error("cannot send load to {url}: {why}")]
    BadTarget { url: String, why: String },
    #[error("cannot write the history file {}: {source} (give --history a writable path)", path.display())]
    History {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the load driver failed: {0} (this is a bug in lab; please report it)")]
    Internal(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not hide the measurements: take them anyway.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every user's task shares: the counters and the history pipe.
struct Shared {
    start: Instant,
    stats: Mutex<Stats>,
    history: Mutex<Option<HistorySender>>,
    history_on: bool,
    /// Requests started, for `--requests`.
    started: AtomicU64,
    budget: u64,
}

impl Shared {
    fn record(&self, user: &User, r: &OpResult) {
        let now = Instant::now();
        lock(&self.stats).record(
            now,
            &Sample {
                class: r.class,
                latency: r.latency,
                served_by: r.served_by.as_ref(),
                session_loss: r.session_loss,
                stale_read: r.stale_read,
                cache_hit: r.cache_hit,
            },
        );
        if self.history_on {
            self.history_line(now, user.id, user.account(), r);
        }
    }

    fn history_line(&self, now: Instant, user: u32, account: Option<u64>, r: &OpResult) {
        if let Some(tx) = lock(&self.history).as_ref() {
            let t_ms = now.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
            let _ = tx.send(HistoryLine::new(t_ms, user, account, r));
        }
    }

    /// Claims one request from the `--requests` budget.
    fn claim(&self) -> bool {
        self.started.fetch_add(1, Ordering::Relaxed) < self.budget
    }
}

/// Runs the load and returns its report; Ctrl-C ends the run early and still
/// returns the report of what ran. `base_url` is the lab's entry point (e.g.
/// `http://127.0.0.1:8080`); `--target` overrides it.
pub async fn run(args: &LoadPlan, base_url: &str) -> Result<Report, LoadError> {
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let result = run_until(args, base_url, cancel).await;
    watcher.abort();
    result
}

/// Like [`run`], but ended early by `cancel` instead of Ctrl-C (for tests and
/// for callers that run the load next to something else, such as a lesson).
pub async fn run_until(
    args: &LoadPlan,
    base_url: &str,
    cancel: CancellationToken,
) -> Result<Report, LoadError> {
    run_watched(args, base_url, cancel, None).await
}

/// Each second of a run as the live view draws it, for a caller that shows
/// the run elsewhere (the web dashboard). The same [`Snapshot`] the view gets,
/// from the same ticker, so there is one way a second is counted.
pub type Seconds = mpsc::UnboundedSender<Snapshot>;

/// Like [`run_until`], and sends every second's [`Snapshot`] to `seconds`
/// too. A receiver that went away does not end the run.
pub async fn run_watched(
    args: &LoadPlan,
    base_url: &str,
    cancel: CancellationToken,
    seconds: Option<Seconds>,
) -> Result<Report, LoadError> {
    args.validate()?;
    let target = Arc::new(Target::parse(args.target.as_deref().unwrap_or(base_url))?);
    let (writer, history_tx) = match &args.history {
        Some(path) => {
            let (w, tx) = HistoryWriter::create(path)?;
            (Some(w), Some(tx))
        }
        None => (None, None),
    };

    let start = Instant::now();
    let stats = Stats::new(start).map_err(|e| LoadError::Internal(e.to_string()))?;
    let shared = Arc::new(Shared {
        start,
        stats: Mutex::new(stats),
        history_on: history_tx.is_some(),
        history: Mutex::new(history_tx),
        started: AtomicU64::new(0),
        budget: args.requests.unwrap_or(u64::MAX),
    });
    let ctx = Arc::new(RunCtx {
        target: Arc::clone(&target),
        timeout: args.timeout,
        scenario: args.scenario,
        account_base: account_base(),
        bank: BankBook::default(),
        work_ms: args.work_ms,
        page_ms: args.page_ms,
        hot_share: args.hot_share.unwrap_or(DEFAULT_HOT_SHARE),
        heavy: match args.heavy_share {
            Some(share) if share > 0.0 => Some((args.heavy_ms, share)),
            _ => None,
        },
    });
    let model = args.model();
    let header = match model {
        Model::Closed { users } => {
            format!("{}, {users} users, {}", args.scenario.name(), target.url())
        }
        Model::Open { rate } => format!(
            "{}, {rate} requests/s, {}",
            args.scenario.name(),
            target.url()
        ),
    };
    let stop_at = start + args.duration;
    // `stop` tells users to start nothing new: the time is up, or Ctrl-C.
    let stop = CancellationToken::new();

    let view = View::new(args.live, &header, args.duration);
    let ticker_done = CancellationToken::new();
    let ticker = tokio::spawn(tick(
        view,
        Arc::clone(&shared),
        args.duration,
        ticker_done.clone(),
        seconds,
    ));

    let stopper = {
        let stop = stop.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(stop_at.into()) => {}
                _ = cancel.cancelled() => {}
            }
            stop.cancel();
        })
    };

    let schedule = match model {
        Model::Closed { users } => {
            closed(users, &ctx, &shared, &stop, args.timeout).await;
            None
        }
        Model::Open { rate } => Some(
            open(
                rate,
                args.max_in_flight,
                &ctx,
                &shared,
                &stop,
                stop_at,
                args.timeout,
            )
            .await,
        ),
    };
    let stopped = Instant::now().min(stop_at);
    stopper.abort();
    let interrupted = cancel.is_cancelled() && stopped < stop_at;
    ticker_done.cancel();
    let mut view = match ticker.await {
        Ok(v) => v,
        Err(e) => return Err(LoadError::Internal(format!("live view: {e}"))),
    };
    view.finish();

    let (audit, lost_writes, unknown_writes) = audit(&ctx, &shared, &view).await;

    let (total, latency, per_server, timeline, max_lag) = {
        let mut s = lock(&shared.stats);
        s.finish(Instant::now());
        (
            s.total(),
            s.percentiles(),
            s.per_server(),
            s.timeline()
                .iter()
                .map(TimelineEntry::from)
                .collect::<Vec<_>>(),
            s.max_lag(),
        )
    };

    // Closing the pipe lets the writer thread flush and end.
    lock(&shared.history).take();
    let history = match (writer, &args.history) {
        (Some(w), Some(path)) => Some(HistoryInfo {
            path: path.display().to_string(),
            lines: w.finish().await?,
        }),
        _ => None,
    };

    let (users, rate) = match model {
        Model::Closed { users } => (Some(users), None),
        Model::Open { rate } => (None, Some(rate)),
    };
    Ok(Report::build(Parts {
        scenario: args.scenario.name().to_string(),
        model: match model {
            Model::Closed { .. } => "closed".into(),
            Model::Open { .. } => "open".into(),
        },
        users,
        rate,
        target: target.url().to_string(),
        duration_s: stopped.saturating_duration_since(start).as_secs_f64(),
        interrupted,
        total,
        latency,
        per_server,
        timeline,
        audit,
        lost_writes,
        unknown_writes,
        behind_schedule: schedule.map(|s| BehindSchedule {
            scheduled: s.scheduled,
            started: s.started,
            late: total.late,
            not_started: s.not_started,
            max_lag_ms: max_lag.as_micros() as f64 / 1000.0,
            late_threshold_ms: LATE_THRESHOLD.as_micros() as f64 / 1000.0,
        }),
        history,
    }))
}

/// A random account range for this run's bank users, below 2^31 so that any
/// integer column holds it.
fn account_base() -> u64 {
    use rand::Rng;
    let block: u64 = rand::rng().random_range(1_000..200_000);
    block * 10_000
}

/// Redraws the live view once a second, on the second.
async fn tick(
    mut view: View,
    shared: Arc<Shared>,
    planned: Duration,
    done: CancellationToken,
    seconds: Option<Seconds>,
) -> View {
    let mut k: u32 = 1;
    loop {
        let due = shared.start + Duration::from_secs(u64::from(k));
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = done.cancelled() => return view,
        }
        let snap = {
            let mut s = lock(&shared.stats);
            s.advance(Instant::now());
            Snapshot {
                elapsed: due.saturating_duration_since(shared.start),
                planned,
                total: s.total(),
                last: s.timeline().last().cloned(),
                max_lag: s.max_lag(),
            }
        };
        view.tick(&snap);
        if let Some(tx) = &seconds {
            let _ = tx.send(snap);
        }
        k = k.saturating_add(1);
    }
}

/// Closed model: every user loops until told to stop.
async fn closed(
    users: u32,
    ctx: &Arc<RunCtx>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    grace: Duration,
) {
    let mut set = JoinSet::new();
    for id in 0..users {
        let mut user = User::new(id, ctx);
        let shared = Arc::clone(shared);
        let stop = stop.clone();
        set.spawn(async move {
            while !stop.is_cancelled() && shared.claim() {
                let r = user.step(Instant::now()).await;
                shared.record(&user, &r);
            }
        });
    }
    // Wait for the stop signal, or for every user to end (--requests spent).
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            joined = set.join_next() => if joined.is_none() { return },
        }
    }
    drain(set, grace).await;
}

/// Gives requests in flight the grace period, then cuts the rest off.
async fn drain(mut set: JoinSet<()>, grace: Duration) {
    let all = async { while set.join_next().await.is_some() {} };
    // Requests time out by themselves after `grace`; the margin covers the
    // bookkeeping after the answer.
    let _ = tokio::time::timeout(grace + Duration::from_millis(500), all).await;
    set.shutdown().await;
}

struct Schedule {
    scheduled: u64,
    started: u64,
    not_started: u64,
}

/// Open model: starts request n at `start + n / rate`, with whichever user is
/// free, and measures its latency from that scheduled instant.
async fn open(
    rate: f64,
    max_in_flight: u32,
    ctx: &Arc<RunCtx>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    stop_at: Instant,
    grace: Duration,
) -> Schedule {
    let start = shared.start;
    let window = stop_at.saturating_duration_since(start).as_secs_f64();
    let due_in_window = (window * rate).ceil() as u64;
    let planned = due_in_window.min(shared.budget);
    // Free users wait here between requests, one queue per lane; a busy
    // user is in a task. With `mixed`, each request draws its lane (pages,
    // sessions, bank) at random, a third each, so the mix holds however
    // slow one part gets: taking whichever user came back first would
    // favour the quick parts exactly when the site is loaded, and flatter
    // its capacity. At random, not in turn: a fixed cycle of three would
    // fall into step with a round-robin balancer over three servers and
    // send every page to the same one.
    // Fewer connections allowed than lanes: one lane, or a lane would
    // never get a user.
    let lanes = lanes(ctx.scenario).min(max_in_flight.max(1));
    let (free_tx, mut free_rx): (Vec<_>, Vec<_>) = (0..lanes)
        .map(|_| mpsc::unbounded_channel::<User>())
        .unzip();
    let mut created: u32 = 0;
    let mut per_lane = vec![0u32; lanes as usize];
    let mut new_user = |lane: usize, created: &mut u32| {
        let id = user_id(lane, per_lane[lane], lanes);
        per_lane[lane] += 1;
        *created += 1;
        User::new(id, ctx)
    };
    while created < OPEN_INITIAL_USERS.min(max_in_flight) {
        let lane = created as usize % lanes as usize;
        let u = new_user(lane, &mut created);
        let _ = free_tx[lane].send(u);
    }
    let mut set = JoinSet::new();
    let mut started: u64 = 0;
    let mut not_started: u64 = 0;
    for n in 0..planned {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due >= stop_at || stop.is_cancelled() {
            break;
        }
        if due > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.cancelled() => break,
            }
        }
        let lane = rand::random_range(0..lanes) as usize;
        let user = match free_rx[lane].try_recv() {
            Ok(u) => Some(u),
            Err(_) if created < max_in_flight => Some(new_user(lane, &mut created)),
            Err(_) => tokio::select! {
                u = free_rx[lane].recv() => u,
                _ = stop.cancelled() => None,
            },
        };
        let Some(mut user) = user else {
            // Every connection stayed busy until the end: these requests were
            // due and never sent. Say so rather than skip them silently.
            if !cancel_was_user(stop, stop_at) {
                not_started = planned - n;
            }
            break;
        };
        let now = Instant::now();
        let lag = now.saturating_duration_since(due);
        if lag > LATE_THRESHOLD {
            lock(&shared.stats).note_late(now, lag);
        }
        started += 1;
        shared.started.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(shared);
        let free_tx = free_tx[lane].clone();
        set.spawn(async move {
            let r = user.step(due).await;
            shared.record(&user, &r);
            let _ = free_tx.send(user);
        });
        while set.try_join_next().is_some() {}
    }
    drain(set, grace).await;
    Schedule {
        scheduled: planned,
        started,
        not_started,
    }
}

/// Open model: how many lanes of users a scenario has (see [`open`]).
fn lanes(scenario: Scenario) -> u32 {
    match scenario {
        Scenario::Mixed => scenario::MIXED_PARTS,
        _ => 1,
    }
}

/// The id of a lane's k-th user: users of lane l have ids l, l + lanes,
/// l + 2 lanes... so that `mixed` gives each the part of its lane.
fn user_id(lane: usize, k: u32, lanes: u32) -> u32 {
    k * lanes + lane as u32
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    #[test]
    fn each_lane_has_the_users_of_its_part() {
        let lanes = lanes(Scenario::Mixed);
        assert_eq!(lanes, 3);
        for lane in 0..3 {
            for k in 0..5 {
                assert_eq!(user_id(lane, k, lanes) % 3, lane as u32);
            }
        }
        // Ids never collide across lanes.
        let mut ids: Vec<u32> = (0..3)
            .flat_map(|l| (0..4).map(move |k| user_id(l, k, 3)))
            .collect();
        ids.sort();
        assert_eq!(ids, (0..12).collect::<Vec<_>>());
        assert_eq!(super::lanes(Scenario::Browse), 1);
    }
}

/// True when the stop came from Ctrl-C before the planned end.
fn cancel_was_user(stop: &CancellationToken, stop_at: Instant) -> bool {
    stop.is_cancelled() && Instant::now() < stop_at
}

/// The final audit: each bank account read once more on the primary and
/// compared with what its user was told.
async fn audit(ctx: &Arc<RunCtx>, shared: &Arc<Shared>, view: &View) -> (Option<Audit>, u64, u64) {
    let entries: Vec<(u32, u64, Ledger)> = lock(&ctx.bank.entries)
        .iter()
        .map(|e| (e.user, e.account, lock(&e.ledger).clone()))
        .filter(|(_, _, l)| l.acknowledged + l.unknown > 0 || l.in_flight_cents > 0)
        .collect();
    if entries.is_empty() {
        return (None, 0, 0);
    }
    view.note(&format!(
        "auditing {} bank accounts on the primary...",
        entries.len()
    ));
    let mut a = Audit {
        accounts: entries.len() as u64,
        ..Audit::default()
    };
    let mut lost = 0;
    for (_, _, l) in &entries {
        a.acknowledged_deposits += l.acknowledged;
        a.acknowledged_cents += l.acknowledged_cents;
        a.unknown_deposits += l.unknown + u64::from(l.in_flight_cents > 0);
        a.unknown_cents += l.unknown_cents + l.in_flight_cents;
    }
    // Bounded even when the primary is gone: a few reads at a time, and a
    // budget for the whole audit.
    let deadline = tokio::time::Instant::now() + (ctx.timeout * 5).max(Duration::from_secs(5));
    let mut reads = futures::stream::iter(entries)
        .map(|(user, account, ledger)| {
            let target = Arc::clone(&ctx.target);
            let timeout = ctx.timeout;
            async move {
                let (balance, res) = scenario::read_primary_balance(target, timeout, account).await;
                (user, account, ledger, balance, res)
            }
        })
        .buffer_unordered(8);
    while let Ok(Some((user, account, ledger, balance, res))) =
        tokio::time::timeout_at(deadline, reads.next()).await
    {
        if shared.history_on {
            shared.history_line(Instant::now(), user, Some(account), &res);
        }
        let Some(balance) = balance else {
            a.failed += 1;
            continue;
        };
        a.audited += 1;
        let v = ledger.audit(balance);
        lost += v.lost_writes;
        a.missing_cents += v.missing_cents;
        a.short_accounts += u64::from(v.missing_cents > 0);
        a.unclear_accounts += u64::from(v.class() == checkers::AccountAudit::Unknown);
        a.possibly_lost += v.possibly_lost;
        a.unknown_applied_cents += v.unknown_applied_cents;
        a.unexplained_cents += v.unexplained_cents;
    }
    a.failed = a.accounts - a.audited;
    let unknown = a.unknown_deposits;
    (Some(a), lost, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        load: crate::cli::LoadArgs,
    }

    /// `lab load`'s flags, parsed as the CLI parses them, into a plan.
    fn parse(args: &[&str]) -> Result<LoadPlan, String> {
        let mut v = vec!["lab"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
            .map(|c| c.load.plan())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_a_closed_browse_run_of_30s() {
        let a = parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, LoadPlan::default());
        assert_eq!(a.model(), Model::Closed { users: 20 });
        assert!(a.validate().is_ok());
    }

    #[test]
    fn bad_input_is_refused_with_one_line() {
        for bad in [
            &["--rate", "0"][..],
            &["--rate", "-3"],
            &["--rate", "abc"],
            &["--duration", "-5s"],
            &["--duration", "0s"],
            &["--duration", "2h"],
            &["--duration", "soon"],
            &["--scenario", "shopping"],
            &["--users", "0"],
            &["--rate", "10", "--users", "5"],
            &["--timeout", "0s"],
        ] {
            let err = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(err.starts_with("error:"), "{bad:?}: {err}");
        }
        let msg = parse(&["--duration", "-5s"]).err().unwrap_or_default();
        assert!(msg.contains("negative"), "{msg}");
    }

    #[test]
    fn validate_catches_what_code_can_build() {
        let mut a = LoadPlan {
            rate: Some(0.0),
            ..LoadPlan::default()
        };
        assert!(a.validate().is_err());
        a.rate = Some(10.0);
        a.users = Some(3);
        assert!(a.validate().is_err());
        a.users = None;
        a.duration = Duration::from_secs(7200);
        assert!(a.validate().is_err());
        a.duration = Duration::from_secs(5);
        a.target = Some("http://192.168.1.10:80".into());
        let e = a
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("only sends traffic to this machine"), "{e}");
        assert!(!e.contains('\n'));
    }
}
