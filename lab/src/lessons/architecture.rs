//! Lesson 13: the course's closing table, measured with real parts.
//!
//! The course ends on a table of six architectures, each with a capacity
//! and a count of single points of failure. This lesson builds each one in
//! turn and measures both columns instead of quoting them:
//!
//! - **Capacity**: a ramp of the open model (requests arrive at a set rate,
//!   whether or not earlier ones are done, as real users do) on a realistic
//!   mix: product pages, logins and deposits. The rate doubles while the
//!   site keeps its p99 under [`P99_OBJECTIVE_MS`] with under 1% errors,
//!   then the ramp narrows in between the last rate that held and the first
//!   that did not. The capacity is what was served at the highest rate that
//!   held.
//! - **Single points of failure**: under a light load, each part is crashed
//!   in turn and given a recovery window; a part whose loss still fails
//!   requests after the window is one (the probe of `lab spof`).
//!
//! Every machine is a container limited to [`MACHINE_CPUS`] of a core, so
//! that adding machines adds capacity the way it does in a data centre. On
//! a laptop they all share its few cores: the course's 50x needs 50 times
//! the hardware, and here the table stops growing where the laptop is full.
//! That limit is the machine's, not the architecture's, and the lesson says
//! where it was reached.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::sizing::{start_box, BOX};
use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadPlan, Scenario};
use crate::spof::{self, Duty, Entry, Part, PartResult, ProbeSettings};
use crate::topology::{
    Reads, ResourceSet, Resources, Sessions, Strategy, Toggle, Topology, MIN_REPLICAS_FOR_FAILOVER,
};

pub const LESSON: Lesson = Lesson {
    name: "architecture",
    number: 13,
    summary: "the course's six architectures, each built and measured: capacity by a ramp, single points of failure by crashing every part",
    hypothesis: "each step of the course either adds capacity (separating the database, more web servers, a cache) or removes single points of failure (a pair of balancers, database replication with failover), from 2 single points of failure down to 0",
    body: |c| Box::pin(body(c)),
};

/// Each machine's CPU (the one box, each web server, each database node):
/// a quarter of a core, so that six web and database machines fit in a
/// laptop's two cores beside the balancer and the load driver.
pub const MACHINE_CPUS: f64 = 0.25;
/// The server's own work on a product page (rendering it), cached or not,
/// unless the mix's sizing raises it ([`Sizing::for_mix`]).
///
/// This sets which part is full first, as the course's table needs: one
/// server alone runs out before its database does (so separating them,
/// then adding servers, adds capacity), three servers outrun one database
/// (so the cache adds capacity), and three servers stay under what the
/// laptop can carry. Those depend on its ratio to the database's work per
/// page, [`DB_PAGE_MS`]. The guide (docs/labs/13-architecture.md) gives
/// the runs that chose both values.
const PAGE_MS: u32 = 20;
/// The database's whole work for one product page, in ms of a core: its
/// sales rank (real work: every order line summed) plus the product read's
/// deliberate work, sized on this machine to make up the rest. This is the
/// first sizing, from the rank alone; the mix then refines it
/// ([`DB_OVER_SERVER`]).
///
/// Like the page's [`PAGE_MS`] on the server, this must not depend on the
/// machine: the rank alone takes 5 ms of a core on an AMD EPYC, and more
/// on the Xeon of earlier runs (one database served far less there), and
/// with a fixed deliberate work that moved the balance between server and
/// database from one machine to the next.
///
/// Why 14: call x the database's work per request over the server's (a
/// third of the requests are pages). Separating them grows capacity by
/// 1 + x, three servers by 1 / x (the database is then the limit) and the
/// cache by up to 3 times x (the servers are). The smallest of the three
/// is largest near x = 0.6. The runs place that between 13 and 15 ms: at
/// 15 two runs gave 13 -> 26 -> 33 requests/s (2.0x, then 1.27x), at 13
/// one gave 22 -> 28 -> 44 (1.27x, then 1.57x), at 14 one gave 20 -> 24
/// -> 44 (1.19x, then 1.83x), at 16 the middle step was 1.29x in a
/// clean-clone `make test`. The guide (docs/labs/13-architecture.md) has
/// the runs.
pub const DB_PAGE_MS: f64 = 14.0;
/// The database's CPU per request of the mix over the server's, which the
/// lesson sets on this machine ([`Sizing::for_mix`]). [`DB_PAGE_MS`] and
/// [`PAGE_MS`] give it on the machines where the table was tuned, but the
/// mix is more than pages: logins, deposits and balances cost both
/// machines too, and their cost moves with the machine (on a slower one of
/// 1 December they cost about four times as much, the database was the
/// limit from the second row on, and more web servers added nothing). So
/// the lesson measures what the mix costs each machine and sizes the
/// deliberate work to keep this ratio.
///
/// Why 0.55: call it x. Separating the database grows capacity about
/// 1 + x times, and three servers at most 1 / x times. The rank's sizing
/// measured x = 0.77 on an AMD EPYC of 1 December (three servers: 1.3x at
/// most, too near the bar of [`GROWTH`]); at 0.55 the same machine grew
/// 1.68x, 2.34x, then 1.48x with the cache
/// (docs/labs/results/2026-12-01-architecture-quick-mix-sizing.txt).
pub const DB_OVER_SERVER: f64 = 0.55;
/// The share of the mix's requests that are product pages (one user in
/// [`crate::load::scenario::MIXED_PARTS`] browses): the deliberate work of
/// both machines is paid on these only.
const PAGE_SHARE: f64 = 1.0 / crate::load::scenario::MIXED_PARTS as f64;
/// The probe that measures the mix's cost: a rate every row serves, for
/// long enough that each machine's CPU time is counted over some hundred
/// requests.
const PROBE_RATE: f64 = 8.0;
const PROBE_SECS: u64 = 10;
/// The quiet before it, to count what the machines do unasked.
const IDLE_SECS: u64 = 5;
/// The most deliberate work the sizing gives either machine, in ms.
const MAX_DELIBERATE_MS: u32 = 80;
/// Timings of the sales rank; the fastest is kept (a run that met a busy
/// moment, or the end of the database's CPU share, only ever takes longer).
const RANK_RUNS: usize = 7;
/// The latency objective: 99% of requests answered within this.
pub const P99_OBJECTIVE_MS: f64 = 500.0;
/// Fewer failed requests than this share, or the rate did not hold.
pub const MAX_ERROR_SHARE: f64 = 0.01;
/// The first row's first rate, requests per second; each later row starts
/// at half the capacity of the row before (no step of an architecture
/// should serve less than half of what the one before it did).
const FIRST_RATE: f64 = 20.0;
/// The ramp stops narrowing when the failing rate is within this factor
/// of the holding one: the capacity found is at most this much too low.
/// A quick run narrows as far. At 1.12 two rows each found up to 12% low
/// could hide half the margin of a step that grows 1.3x over the bar of
/// [`GROWTH`]; one more step of the ramp costs 6 s.
const PRECISION: f64 = 1.06;
const _: () = assert!(
    PRECISION < GROWTH,
    "the ramp must resolve the growth it judges"
);
/// Second chances per ramp: once the ramp has narrowed, the lowest rate
/// that did not hold is tried again, and if it holds now the ramp goes on
/// above it. Other work on a shared laptop (a compile, a browser, Docker's
/// own) only ever lowers a capacity, and one ramp moved by 15 to 30% from
/// run to run: a row just built found 44 requests/s where the next, with
/// the same database as its limit, found 57. Trying the failure again
/// keeps what the site can do rather than what the laptop let it do once,
/// as a second whole ramp (kept until 1 December) did, in one step of the
/// ramp instead of about eight.
const RETRIES: usize = 1;
/// The most steps a ramp takes.
const MAX_STEPS: usize = 16;
/// A step that grows the capacity by less than this is no growth: noise on
/// a shared laptop moves a ramp's result by about a step of [`PRECISION`].
pub const GROWTH: f64 = 1.2;

/// The six rows of the course's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Layout {
    SingleServer,
    Separated,
    MultipleServers,
    HaBalancers,
    Cache,
    Replication,
}

impl Layout {
    pub const ALL: [Layout; 6] = [
        Layout::SingleServer,
        Layout::Separated,
        Layout::MultipleServers,
        Layout::HaBalancers,
        Layout::Cache,
        Layout::Replication,
    ];

    /// As the course names it.
    pub fn name(self) -> &'static str {
        match self {
            Layout::SingleServer => "Single server",
            Layout::Separated => "Separated",
            Layout::MultipleServers => "Multiple web servers",
            Layout::HaBalancers => "+ HA load balancers",
            Layout::Cache => "+ Redis cache",
            Layout::Replication => "+ DB replication",
        }
    }

    /// The course's capacity, requests per second.
    pub fn course_capacity(self) -> u32 {
        match self {
            Layout::SingleServer => 1_000,
            Layout::Separated => 3_000,
            Layout::MultipleServers | Layout::HaBalancers => 10_000,
            Layout::Cache | Layout::Replication => 50_000,
        }
    }

    /// The course's single points of failure, by duty.
    pub fn course_spofs(self) -> &'static [Duty] {
        match self {
            Layout::SingleServer | Layout::Separated => &[Duty::Web, Duty::Db],
            Layout::MultipleServers => &[Duty::Lb, Duty::Db],
            Layout::HaBalancers | Layout::Cache => &[Duty::Db],
            Layout::Replication => &[],
        }
    }

    /// Where the course says capacity grows: from the row before to this.
    pub fn course_grows(self) -> bool {
        matches!(
            self,
            Layout::Separated | Layout::MultipleServers | Layout::Cache
        )
    }

    /// Whether the row has Redis. The lab always starts one; where the
    /// course's architecture has none it is stopped, so that it is neither
    /// crashed as a part nor counted in the cost.
    pub fn has_redis(self) -> bool {
        matches!(self, Layout::Cache | Layout::Replication)
    }

    /// The lab for this row, each product read costing its database
    /// `product_query_ms` of deliberate work; the single server is one
    /// container of its own ([`start_box`]), built beside the separated
    /// layout's network.
    pub fn topology(self, product_query_ms: u32) -> Topology {
        let machine = Resources {
            cpus: Some(MACHINE_CPUS),
            memory: None,
        };
        let mut t = Topology {
            servers: 1,
            replicas: 0,
            reads: Reads::Primary,
            sessions: Sessions::Memory,
            cache: Toggle::Off,
            lb: Strategy::RoundRobin,
            product_query_ms,
            resources: ResourceSet {
                server: machine.clone(),
                db: machine,
                ..ResourceSet::default()
            },
            ..Topology::default()
        };
        let rank = Layout::ALL.iter().position(|l| *l == self).unwrap_or(0);
        if rank >= 2 {
            // Several servers: a user's session must not live in one of
            // them, or each server's loss logs its users out.
            t.servers = 3;
            t.sessions = Sessions::Jwt;
        }
        if rank >= 3 {
            t.balancers = 2;
        }
        if rank >= 4 {
            t.cache = Toggle::On;
        }
        if rank >= 5 {
            t.replicas = MIN_REPLICAS_FOR_FAILOVER;
            t.failover = Toggle::On;
            t.reads = Reads::Replicas;
        }
        t
    }
}

/// One rate of a ramp and how the site did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RampStep {
    /// Requests per second sent.
    pub rate: f64,
    /// Requests per second answered well.
    pub served: f64,
    pub p99_ms: f64,
    pub error_share: f64,
    pub held: bool,
}

/// Whether a rate held: p99 within the objective, errors under the limit,
/// and (open model) about as many answers as requests sent.
pub fn holds(rate: f64, served: f64, p99_ms: f64, error_share: f64) -> bool {
    p99_ms <= P99_OBJECTIVE_MS && error_share < MAX_ERROR_SHARE && served >= 0.9 * rate
}

/// The ramp's next rate, or None when it is done: double while every rate
/// holds; after the first failure, the geometric middle of the highest rate
/// that held and the lowest above it that did not, until they are within
/// `precision` of each other. A failure at or below a rate that held (one
/// tried [again](RETRIES) and held the second time) was the machine's, not
/// the site's, and no longer bounds the ramp.
pub fn next_rate(steps: &[RampStep], first: f64, precision: f64) -> Option<f64> {
    if steps.len() >= MAX_STEPS {
        return None;
    }
    let held = highest_held(steps);
    let failed = steps
        .iter()
        .filter(|s| !s.held && held.is_none_or(|h| s.rate > h))
        .map(|s| s.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))));
    match (held, failed) {
        (None, None) => Some(first),
        (Some(h), None) => Some(h * 2.0),
        // Even the first rate failed: try lower, down to a few requests.
        (None, Some(f)) => (f / 2.0 >= 2.0).then_some(f / 2.0),
        // Whole requests/s: between close rates the middle can round onto
        // one of them, and a rate already held (or already failed) tells
        // nothing new; the ramp is as narrow as it can get.
        (Some(h), Some(f)) => {
            let middle = (h * f).sqrt().round();
            (f / h > precision && middle > h && middle < f).then_some(middle)
        }
    }
}

fn highest_held(steps: &[RampStep]) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.held)
        .map(|s| s.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
}

/// The rate to try again once the ramp is done: the lowest that did not
/// hold above the highest that did (None if every rate held).
pub fn retry_rate(steps: &[RampStep]) -> Option<f64> {
    let held = highest_held(steps);
    steps
        .iter()
        .filter(|s| !s.held && held.is_none_or(|h| s.rate > h))
        .map(|s| s.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))))
}

/// The capacity a ramp found: what was served at the highest rate that held.
pub fn capacity(steps: &[RampStep]) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.held)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .map(|s| s.served)
}

/// One row, measured.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub layout: Layout,
    pub capacity: Option<f64>,
    pub ramp: Vec<RampStep>,
    pub parts: Vec<PartResult>,
    /// Parts of each kind not crashed in a quick run (each stands for the
    /// one of its kind that was).
    pub skipped: Vec<String>,
    pub containers: usize,
    pub memory_mb: f64,
}

impl Row {
    /// The duties whose loss took the site down, each once.
    pub fn spof_duties(&self) -> Vec<Duty> {
        let mut d: Vec<Duty> = self
            .parts
            .iter()
            .filter(|p| p.spof)
            .flat_map(|p| p.duties.iter().copied())
            .collect();
        d.sort();
        d.dedup();
        d
    }

    fn spof_names(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter(|p| p.spof)
            .map(|p| p.service.as_str())
            .collect()
    }
}

fn duties_text(d: &[Duty]) -> String {
    if d.is_empty() {
        "0".into()
    } else {
        format!(
            "{} ({})",
            d.len(),
            d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(" + ")
        )
    }
}

/// The single-points-of-failure verdict of one row: the duties found match
/// the course's.
pub fn spof_verdict(row: &Row) -> (String, String, bool) {
    let course = row.layout.course_spofs();
    let found = row.spof_duties();
    let names = row.spof_names();
    let measured = format!(
        "{}{}",
        duties_text(&found),
        if names.is_empty() {
            String::new()
        } else {
            format!(": {} did not survive", names.join(", "))
        }
    );
    (
        format!(
            "{}: {} single point{} of failure, as the course counts",
            row.layout.name(),
            duties_text(course),
            if course.len() == 1 { "" } else { "s" }
        ),
        measured,
        !row.parts.is_empty() && found.as_slice() == course,
    )
}

/// The capacity verdict of a row where the course says capacity grows: at
/// least [`GROWTH`] times the row before.
pub fn growth_verdict(before: &Row, after: &Row) -> (String, String, bool) {
    let expectation = format!(
        "{}: more capacity than {} (the course: {}x; here at least {GROWTH}x)",
        after.layout.name(),
        before.layout.name(),
        after.layout.course_capacity() / before.layout.course_capacity().max(1)
    );
    match (before.capacity, after.capacity) {
        (Some(b), Some(a)) if b > 0.0 => {
            let x = a / b;
            (
                expectation,
                format!("{b:.0} -> {a:.0} requests/s ({x:.2}x)"),
                x >= GROWTH,
            )
        }
        (b, a) => (
            expectation,
            format!("not measured ({b:?} -> {a:?} requests/s)"),
            false,
        ),
    }
}

/// The capacity ramp against a site's entry point, from `first` requests/s.
async fn ramp(
    c: &Ctx<'_>,
    target: Option<&str>,
    machines: &[String],
    first: f64,
    page_ms: u32,
) -> Result<Vec<RampStep>> {
    // Quick runs too: a p99 over 3 s (some 90 requests at the first row's
    // capacity) is nearly the slowest single request, and a quick run's
    // 3 s steps moved the capacities by a step of the ramp from one run to
    // the next, as much as the growth judged.
    let secs = 5;
    let plan = |rate: f64, secs: u64| LoadPlan {
        scenario: Scenario::Mixed,
        rate: Some(rate),
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(2),
        page_ms,
        target: target.map(str::to_string),
        ..LoadPlan::default()
    };
    // A site just built is cold: empty connection pools, a database whose
    // tables are not yet in its memory. Its first seconds would fail a rate
    // it serves a moment later, so a light load warms it, uncounted.
    let warm = (first / 2.0).max(2.0);
    c.say(&format!(
        "warming up: {warm:.0} requests/s for {secs} s, not counted"
    ));
    c.load(plan(warm, secs)).await?;
    let mut steps = Vec::new();
    let mut retries = RETRIES;
    loop {
        let rate = match next_rate(&steps, first, PRECISION) {
            Some(rate) => rate,
            None => match retry_rate(&steps) {
                Some(rate) if retries > 0 && steps.len() < MAX_STEPS => {
                    retries -= 1;
                    c.say(&format!("trying {rate:.0} requests/s again"));
                    rate
                }
                _ => break,
            },
        };
        let r = c.load(plan(rate, secs)).await?;
        let served = r.ok as f64 / r.duration_s.max(0.001);
        let errors = r.requests.saturating_sub(r.ok) as f64 / (r.requests.max(1) as f64);
        let not_started = r.behind_schedule.as_ref().map_or(0, |b| b.not_started);
        let held = holds(rate, served, r.latency_ms.p99, errors) && not_started == 0;
        c.say(&format!(
            "{rate:.0} requests/s: served {served:.0}/s, p99 {:.0} ms, {:.1}% failed: {}",
            r.latency_ms.p99,
            errors * 100.0,
            if held { "holds" } else { "does not hold" }
        ));
        steps.push(RampStep {
            rate,
            served,
            p99_ms: r.latency_ms.p99,
            error_share: errors,
            held,
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !held {
            drain(c, machines).await;
        }
    }
    Ok(steps)
}

/// A machine doing less than this share of one CPU, in percent, has worked
/// off what an overloaded rate left it (each machine may use 25; what the
/// busiest at rest, a database node under Patroni, uses was not measured
/// apart: if it were above this, each wait would last [`DRAIN_LIMIT`]).
const IDLE_CPU_PERCENT: f64 = 10.0;
/// The longest wait for that.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// Waits, after a rate that did not hold, until every machine of the row
/// is idle again. A database a quarter of a core wide goes on for seconds
/// with queries whose clients gave up; a fixed 3 s pause was too short
/// after a hard overload, and the next rate was judged on that backlog.
async fn drain(c: &Ctx<'_>, machines: &[String]) {
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    loop {
        // Each reading spans about a second (Docker's own sample).
        let now = futures::future::join_all(machines.iter().map(|m| c.rt.usage(m))).await;
        let busiest = now
            .iter()
            .filter_map(|u| u.as_ref().ok())
            .map(|u| u.cpu_percent)
            .fold(0.0, f64::max);
        if busiest < IDLE_CPU_PERCENT || tokio::time::Instant::now() >= deadline {
            return;
        }
    }
}

/// The parts to crash: all of them, or in a quick run one of each kind (a
/// balancer, a server, Redis, the primary, a replica), the rest named as
/// skipped.
async fn choose_parts(c: &Ctx<'_>, parts: Vec<Part>) -> Result<(Vec<Part>, Vec<String>)> {
    if !c.quick {
        return Ok((parts, Vec::new()));
    }
    let all = c.containers().await?;
    let primary = if crate::primary::nodes(&all).is_empty() {
        None
    } else {
        crate::primary::current(c.rt, &c.lab, &all).await.ok()
    };
    // The balancer to crash is the one holding the floating address:
    // crashing the backup of a pair would prove nothing.
    let lbs: Vec<String> = parts
        .iter()
        .filter(|p| p.duties == [Duty::Lb])
        .map(|p| p.container.clone())
        .collect();
    let master = if lbs.len() > 1 {
        crate::ha::wait_master(c.rt, &lbs, Duration::from_secs(15)).await
    } else {
        None
    };
    let mut parts = parts;
    parts.sort_by_key(|p| Some(&p.container) != master.as_ref());
    let kind = |p: &Part| {
        let db_part = if p.duties == [Duty::Db] {
            Some(primary.as_deref() == Some(p.name.as_str()))
        } else {
            None
        };
        (p.duties.clone(), db_part)
    };
    let mut chosen: Vec<Part> = Vec::new();
    let mut skipped = Vec::new();
    for p in parts {
        if chosen.iter().any(|q| kind(q) == kind(&p)) {
            skipped.push(p.name);
        } else {
            chosen.push(p);
        }
    }
    Ok((chosen, skipped))
}

/// Memory of the given containers now, in MB.
async fn memory_mb(c: &Ctx<'_>, containers: &[String]) -> Result<f64> {
    let mut bytes = 0;
    for name in containers {
        bytes += c.rt.usage(name).await?.memory_bytes;
    }
    Ok(bytes as f64 / 1e6)
}

/// The light load of the probe: well under the row's capacity, so that
/// losing one of several servers does not by itself overload the rest.
fn probe_settings(c: &Ctx<'_>, capacity: Option<f64>) -> ProbeSettings {
    let rate = (capacity.unwrap_or(20.0) * 0.3).clamp(5.0, 40.0).round();
    if c.quick {
        ProbeSettings {
            before_s: 2,
            window_s: 12,
            measure_s: 4,
            rate,
            ..ProbeSettings::default()
        }
    } else {
        ProbeSettings {
            rate,
            ..ProbeSettings::default()
        }
    }
}

/// Measures one row on the lab as it is now.
async fn measure(
    c: &Ctx<'_>,
    layout: Layout,
    entry: Entry,
    parts: Vec<Part>,
    before: Option<&Row>,
    page_ms: u32,
) -> Result<Row> {
    let containers: Vec<String> = parts.iter().map(|p| p.container.clone()).collect();
    let memory_mb = memory_mb(c, &containers).await?;
    c.say(&format!(
        "{}: {} containers, {memory_mb:.0} MB at rest; capacity ramp",
        layout.name(),
        containers.len()
    ));
    let target = match &entry {
        Entry::Url(u) => Some(u.as_str()),
        Entry::Lab => None,
    };
    let first = before
        .and_then(|r| r.capacity)
        .map_or(FIRST_RATE, |x| (x / 2.0).round().max(FIRST_RATE));
    let ramp = ramp(c, target, &containers, first, page_ms).await?;
    let capacity = capacity(&ramp);
    let (chosen, skipped) = choose_parts(c, parts).await?;
    let settings = probe_settings(c, capacity);
    c.say(&format!(
        "crashing {} under {} requests/s, {} s to recover each",
        chosen
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        settings.rate,
        settings.window_s
    ));
    let mut results = Vec::new();
    let f = c.faults();
    let probed = spof::probe_parts(&f, &entry, &chosen, &settings, &mut results).await;
    for p in &results {
        c.say(&format!(
            "  {}: {} after the window{}",
            p.service,
            p.success_after
                .map(|s| format!("{:.1}% succeed", s * 100.0))
                .unwrap_or_else(|| "nothing answered".into()),
            if p.spof {
                ": a single point of failure"
            } else {
                ""
            }
        ));
    }
    probed?;
    Ok(Row {
        layout,
        capacity,
        ramp,
        parts: results,
        skipped,
        containers: containers.len(),
        memory_mb,
    })
}

/// The site's parts in the lab now (the edge and stopped services left
/// out: they are not part of this row's site).
async fn site_parts(c: &Ctx<'_>) -> Result<Vec<Part>> {
    let mut parts: Vec<Part> = c
        .containers()
        .await?
        .iter()
        .filter(|x| x.state == crate::runtime::State::Running)
        .filter_map(Part::of)
        .collect();
    parts.sort_by_key(|p| crate::naming::natural_key(&p.name));
    Ok(parts)
}

/// What the mix cost each machine of the separated layout, per request.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MixCost {
    /// ms of server-1's CPU per request.
    pub server_ms: f64,
    /// ms of db-1's CPU per request.
    pub db_ms: f64,
}

/// How this machine's site was sized: what its real work costs here and
/// the deliberate work added to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizing {
    /// The sales rank's time in db-1, ms (the fastest of [`RANK_RUNS`]).
    pub rank_ms: f64,
    /// The deliberate work of each product read, ms.
    pub product_query_ms: u32,
    /// The server's work on each product page, ms.
    pub page_ms: u32,
    /// What the probe measured, and with which deliberate work.
    pub probe: Option<(MixCost, u32, u32)>,
}

impl Sizing {
    /// The deliberate work that makes a page's database work
    /// [`DB_PAGE_MS`] with a rank of `rank_ms`: at least 1 ms, so that even
    /// a machine whose rank costs all of it still runs the product read the
    /// lesson describes. The server's page work is [`PAGE_MS`].
    pub fn for_rank(rank_ms: f64) -> Self {
        let rest = (DB_PAGE_MS - rank_ms.max(0.0)).round().max(1.0);
        Sizing {
            rank_ms,
            product_query_ms: rest as u32,
            page_ms: PAGE_MS,
            probe: None,
        }
    }

    /// Sized from what the mix cost with this sizing's deliberate work:
    /// the product read's work is set so that the database's CPU per
    /// request is [`DB_OVER_SERVER`] of the server's with [`PAGE_MS`] of
    /// page work; where even 1 ms of it leaves the database above that (its
    /// other queries cost too much here), the server's page work grows
    /// instead. What is not deliberate work is the machine's own cost of
    /// the mix, and it stays.
    pub fn for_mix(self, cost: MixCost) -> Self {
        let probe = Some((cost, self.product_query_ms, self.page_ms));
        let valid = |x: f64| x.is_finite() && x > 0.0;
        if !valid(cost.server_ms) || !valid(cost.db_ms) {
            return Sizing { probe, ..self };
        }
        let db_own = (cost.db_ms - PAGE_SHARE * f64::from(self.product_query_ms)).max(0.0);
        let server_own = (cost.server_ms - PAGE_SHARE * f64::from(self.page_ms)).max(0.0);
        let server = server_own + PAGE_SHARE * f64::from(PAGE_MS);
        let pq = ((DB_OVER_SERVER * server - db_own) / PAGE_SHARE).round();
        if pq >= 1.0 {
            return Sizing {
                product_query_ms: pq.min(f64::from(MAX_DELIBERATE_MS)) as u32,
                page_ms: PAGE_MS,
                probe,
                ..self
            };
        }
        let db = db_own + PAGE_SHARE;
        let page = ((db / DB_OVER_SERVER - server_own) / PAGE_SHARE).round();
        Sizing {
            product_query_ms: 1,
            page_ms: (page.max(f64::from(PAGE_MS)) as u32).min(MAX_DELIBERATE_MS),
            probe,
            ..self
        }
    }
}

/// What the mix costs server-1 and db-1 per request at [`PROBE_RATE`],
/// sent to server-1 itself, from their containers' CPU time.
///
/// Both machines also work when no one asks anything (the balancer's
/// health checks, the database's own upkeep); at a light load that work
/// would weigh on each request. So the lesson first counts what each
/// spends in [`IDLE_SECS`] of quiet, and takes that rate off.
async fn mix_cost(c: &Ctx<'_>, server_1: &str, page_ms: u32) -> Result<MixCost> {
    let plan = |secs: u64| LoadPlan {
        scenario: Scenario::Mixed,
        rate: Some(PROBE_RATE),
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(2),
        page_ms,
        target: Some(server_1.to_string()),
        ..LoadPlan::default()
    };
    // Warm: pools open, tables in the database's memory.
    c.load(plan(3)).await?;
    let server = crate::roles::names::server(1);
    let db = crate::roles::names::db(1);
    let cpu = || async {
        Ok::<_, crate::error::LabError>((c.cpu_ms(&server).await?, c.cpu_ms(&db).await?))
    };
    let (quiet, idle_0) = (Instant::now(), cpu().await?);
    tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
    let idle_1 = cpu().await?;
    let quiet = quiet.elapsed().as_secs_f64();
    let (busy, load_0) = (Instant::now(), cpu().await?);
    let r = c.load(plan(PROBE_SECS)).await?;
    let load_1 = cpu().await?;
    let busy = busy.elapsed().as_secs_f64();
    let n = r.requests.max(1) as f64;
    let per_request = |idle: f64, load: f64| (load - idle * busy / quiet.max(0.001)).max(0.0) / n;
    Ok(MixCost {
        server_ms: per_request(idle_1.0 - idle_0.0, load_1.0 - load_0.0),
        db_ms: per_request(idle_1.1 - idle_0.1, load_1.1 - load_0.1),
    })
}

/// The sales rank's time in db-1 by PostgreSQL itself (psql's `\timing`,
/// no network), prepared as the app prepares it; the fastest of
/// [`RANK_RUNS`].
async fn rank_ms(c: &Ctx<'_>) -> Result<f64> {
    let container = crate::naming::container(&c.lab, &crate::roles::names::db(1));
    let prepare = format!(
        "PREPARE rank(bigint) AS {}",
        lab_contract::app::SALES_RANK_SQL
    );
    let mut cmd = vec![
        "psql",
        "-AtX",
        "-v",
        // A failed statement prints a timing too (of the error): stop at it.
        "ON_ERROR_STOP=1",
        "-U",
        "postgres",
        "-c",
        &prepare,
        "-c",
        "\\timing on",
    ];
    for _ in 0..RANK_RUNS {
        cmd.extend(["-c", "EXECUTE rank(1)"]);
    }
    let out = c.rt.exec(&container, &cmd).await?;
    if out.code != 0 {
        return Err(super::step("time the sales rank in db-1")(&format!(
            "psql failed: {}",
            out.stderr.trim()
        )));
    }
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .min_by(f64::total_cmp)
        .ok_or_else(|| {
            super::step("time the sales rank in db-1")(&format!(
                "psql printed no timing: {}",
                out.stderr.trim()
            ))
        })
}

/// server-1's address on loopback, once it is ready (its migrations in).
async fn server_url(c: &Ctx<'_>) -> Result<String> {
    let url = format!(
        "http://{}",
        c.address("server-1", crate::roles::server::PORT).await?
    );
    super::wait_ready(&url, "server-1").await?;
    Ok(url)
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    // Rows 1 and 2 share a lab: the separated layout's network and
    // machines, stopped while the single box has the stage. It is built
    // first with the deliberate work a 5 ms rank would need, then again
    // (the server replaced) if this machine's rank says otherwise.
    let guess = Sizing::for_rank(5.0);
    c.up(Layout::Separated.topology(guess.product_query_ms))
        .await?;
    // The rank needs the shop's tables: server-1 is ready once its
    // migrations are in.
    let mut server_1 = server_url(c).await?;
    let rank = Sizing::for_rank(rank_ms(c).await?);
    if rank.product_query_ms != guess.product_query_ms {
        c.up(Layout::Separated.topology(rank.product_query_ms))
            .await?;
        server_1 = server_url(c).await?;
    }
    // The rank is one query of the mix: what the whole mix costs each
    // machine here sets the deliberate work.
    let sizing = rank.for_mix(mix_cost(c, &server_1, rank.page_ms).await?);
    if sizing.product_query_ms != rank.product_query_ms {
        c.up(Layout::Separated.topology(sizing.product_query_ms))
            .await?;
    }
    let pq = sizing.product_query_ms;
    let page_ms = sizing.page_ms;
    if let Some((cost, probe_pq, probe_page)) = sizing.probe {
        c.say(&format!(
            "the mix cost server-1 {:.1} ms and db-1 {:.1} ms of CPU per request (sales rank {:.1} ms, product read {probe_pq} ms, page {probe_page} ms): the database {:.2} of the server; the lesson keeps it near {DB_OVER_SERVER}",
            cost.server_ms,
            cost.db_ms,
            sizing.rank_ms,
            cost.db_ms / cost.server_ms.max(0.001)
        ));
    }
    c.say(&format!(
        "every machine has {MACHINE_CPUS} of a core; a product page costs its server {page_ms} ms of work and its database the sales rank and a {pq} ms product read; a rate holds while p99 stays under {P99_OBJECTIVE_MS:.0} ms with under {:.0}% errors",
        MAX_ERROR_SHARE * 100.0
    ));
    let mut rows: Vec<Row> = Vec::new();
    let f = c.faults();
    for s in ["lb-1", "server-1", "db-1", "redis"] {
        f.stop(s).await?;
    }
    c.say("Single server: web server and database in one machine");
    let url = start_box(c, MACHINE_CPUS, pq).await?;
    let boxed = crate::naming::container(&c.lab, BOX);
    let part = Part {
        name: boxed.clone(),
        container: boxed.clone(),
        role: BOX.into(),
        duties: vec![Duty::Web, Duty::Db],
    };
    rows.push(
        measure(
            c,
            Layout::SingleServer,
            Entry::Url(url),
            vec![part],
            None,
            page_ms,
        )
        .await?,
    );
    c.rt.stop_container(&boxed, Duration::from_secs(5)).await?;
    c.rt.remove_container(&boxed).await?;

    // Separated: users reach the web server itself; no balancer yet.
    c.say("Separated: the web server and the database on two machines");
    for s in ["db-1", "server-1"] {
        f.start(s).await?;
    }
    let url = server_url(c).await?;
    let parts = site_parts(c).await?;
    let row = measure(
        c,
        Layout::Separated,
        Entry::Url(url),
        parts,
        rows.last(),
        page_ms,
    )
    .await?;
    rows.push(row);

    for layout in &Layout::ALL[2..] {
        c.say(&format!("{}: building it", layout.name()));
        c.up(layout.topology(pq)).await?;
        if !layout.has_redis() {
            c.faults().stop("redis").await?;
        }
        let parts = site_parts(c).await?;
        let row = measure(c, *layout, Entry::Lab, parts, rows.last(), page_ms).await?;
        rows.push(row);
    }

    report(c, &rows, sizing);
    Ok(())
}

/// The table beside the course's, then the verdicts.
fn report(c: &mut Ctx<'_>, rows: &[Row], sizing: Sizing) {
    let first = rows.first().and_then(|r| r.capacity).unwrap_or(0.0);
    let mut t = Table::new(
        &format!(
            "The course's table, measured (every machine {MACHINE_CPUS} of a core; a page {} ms of server work, and of database work a {:.1} ms sales rank and a {} ms product read; capacity: p99 under {P99_OBJECTIVE_MS:.0} ms, under {:.0}% errors)",
            sizing.page_ms,
            sizing.rank_ms,
            sizing.product_query_ms,
            MAX_ERROR_SHARE * 100.0
        ),
        &[
            "ARCHITECTURE",
            "COURSE",
            "MEASURED",
            "VS FIRST",
            "COURSE SPOFS",
            "MEASURED SPOFS",
            "NAMED",
            "CONTAINERS",
            "MEMORY",
        ],
    );
    for r in rows {
        let names = r.spof_names();
        t.row(vec![
            r.layout.name().into(),
            format!("{} req/s", r.layout.course_capacity()),
            r.capacity
                .map(|x| format!("{x:.0} req/s"))
                .unwrap_or_else(|| "-".into()),
            r.capacity
                .filter(|_| first > 0.0)
                .map(|x| format!("{:.1}x", x / first))
                .unwrap_or_else(|| "-".into()),
            duties_text(r.layout.course_spofs()),
            duties_text(&r.spof_duties()),
            if names.is_empty() {
                "-".into()
            } else {
                names.join(", ")
            },
            r.containers.to_string(),
            format!("{:.0} MB", r.memory_mb),
        ]);
    }
    c.table(t);
    let mut probes = Table::new(
        "Each part crashed (success before the crash, and after the recovery window)",
        &["ARCHITECTURE", "PART", "BEFORE", "AFTER", "VERDICT"],
    );
    for r in rows {
        for p in &r.parts {
            let pct = |s: Option<f64>| s.map(super::pct).unwrap_or_else(|| "none".into());
            probes.row(vec![
                r.layout.name().into(),
                p.service.clone(),
                pct(p.success_before),
                pct(p.success_after),
                if p.spof {
                    "single point of failure".into()
                } else {
                    "survivable".into()
                },
            ]);
        }
        if !r.skipped.is_empty() {
            probes.row(vec![
                r.layout.name().into(),
                r.skipped.join(", "),
                String::new(),
                String::new(),
                "not crashed (--quick: like its kind)".into(),
            ]);
        }
    }
    c.table(probes);
    let mut ramps = Table::new(
        "Each ramp, step by step (open model, the mixed scenario)",
        &["ARCHITECTURE", "RATE", "SERVED", "P99", "FAILED", "HOLDS"],
    );
    for r in rows {
        for s in &r.ramp {
            ramps.row(vec![
                r.layout.name().into(),
                format!("{:.0}/s", s.rate),
                format!("{:.0}/s", s.served),
                format!("{:.0} ms", s.p99_ms),
                super::pct(s.error_share),
                if s.held { "yes" } else { "no" }.into(),
            ]);
        }
    }
    c.table(ramps);
    for r in rows {
        let (e, m, ok) = spof_verdict(r);
        c.expect(&e, m, ok);
    }
    for pair in rows.windows(2) {
        if pair[1].layout.course_grows() {
            let (e, m, ok) = growth_verdict(&pair[0], &pair[1]);
            c.expect(&e, m, ok);
        }
    }
    if let Some(top) = rows.iter().filter_map(|r| r.capacity).reduce(f64::max) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        c.say(&format!(
            "the course's 50x comes from 50 times the machines; here every row shares {cores} cores with the load driver, and the best row served {top:.0} requests/s, {:.1}x the first",
            top / first.max(1.0)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_at(rate: f64, held: bool) -> RampStep {
        RampStep {
            rate,
            served: if held { rate } else { rate * 0.7 },
            p99_ms: if held { 50.0 } else { 900.0 },
            error_share: 0.0,
            held,
        }
    }

    #[test]
    fn the_ramp_doubles_then_narrows_then_stops() {
        let mut steps = Vec::new();
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.2), Some(FIRST_RATE));
        steps.push(step_at(20.0, true));
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.2), Some(40.0));
        steps.push(step_at(40.0, true));
        steps.push(step_at(80.0, false));
        // Between 40 (held) and 80 (did not): the geometric middle.
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.2), Some(57.0));
        steps.push(step_at(57.0, true));
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.2), Some(68.0));
        steps.push(step_at(68.0, false));
        // 57 and 68 are within 1.2 of each other: done.
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.2), None);
        assert_eq!(capacity(&steps), Some(57.0));
        // A finer ramp goes on; a coarser one stops sooner.
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.1), Some(62.0));
        assert_eq!(next_rate(&steps[..3], FIRST_RATE, 1.45), Some(57.0));
        assert_eq!(next_rate(&steps[..4], FIRST_RATE, 1.45), None);
        // A later row starts where it is told.
        assert_eq!(next_rate(&[], 80.0, 1.2), Some(80.0));
    }

    #[test]
    fn a_failure_tried_again_that_holds_no_longer_bounds_the_ramp() {
        let mut steps = vec![
            step_at(20.0, true),
            step_at(40.0, false),
            step_at(28.0, true),
            step_at(33.0, true),
            step_at(37.0, true),
        ];
        // 37 held, 40 did not: within 1.1, done; 40 is the one to retry.
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.1), None);
        assert_eq!(retry_rate(&steps), Some(40.0));
        // Tried again, it fails: still done, nothing left to retry above.
        steps.push(step_at(40.0, false));
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.1), None);
        // Tried again, it holds: the first failure was the laptop's, and
        // the ramp climbs on from 40.
        steps.pop();
        steps.push(step_at(40.0, true));
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.1), Some(80.0));
        steps.push(step_at(80.0, false));
        assert_eq!(next_rate(&steps, FIRST_RATE, 1.1), Some(57.0));
        assert_eq!(retry_rate(&steps), Some(80.0));
        assert_eq!(capacity(&steps), Some(40.0));
        // Every rate held: nothing to retry.
        assert_eq!(retry_rate(&steps[..1]), None);
    }

    #[test]
    fn a_middle_that_rounds_onto_a_rate_tried_ends_the_ramp() {
        // 14 held, 15 did not: 15/14 is wider than the precision, but the
        // middle rounds to 14, which already held. The slow machine of
        // 1 December tried 14 eleven times here, to the step limit.
        let mut steps = vec![
            step_at(10.0, true),
            step_at(14.0, true),
            step_at(17.0, false),
            step_at(15.0, false),
        ];
        assert_eq!(next_rate(&steps, FIRST_RATE, PRECISION), None);
        assert_eq!(retry_rate(&steps), Some(15.0));
        // Tried again, 15 holds: the ramp climbs on from it.
        steps.push(step_at(15.0, true));
        assert_eq!(next_rate(&steps, FIRST_RATE, PRECISION), Some(16.0));
    }

    #[test]
    fn a_site_that_holds_nothing_has_no_capacity() {
        let mut steps = vec![step_at(20.0, false)];
        assert_eq!(next_rate(&steps, FIRST_RATE, PRECISION), Some(10.0));
        steps.extend([
            step_at(10.0, false),
            step_at(5.0, false),
            step_at(2.5, false),
        ]);
        // Below 2 requests/s there is nothing left to try.
        assert_eq!(next_rate(&steps, FIRST_RATE, PRECISION), None);
        assert_eq!(capacity(&steps), None);
    }

    #[test]
    fn a_rate_holds_only_within_the_objective() {
        assert!(holds(100.0, 99.0, 120.0, 0.0));
        assert!(!holds(100.0, 99.0, P99_OBJECTIVE_MS + 1.0, 0.0), "p99");
        assert!(!holds(100.0, 99.0, 120.0, 0.02), "errors");
        assert!(!holds(100.0, 60.0, 120.0, 0.0), "answers fell behind");
    }

    fn part(name: &str, duties: &[Duty], spof: bool) -> PartResult {
        PartResult {
            service: name.into(),
            role: "x".into(),
            duties: duties.to_vec(),
            success_before: Some(1.0),
            success_after: Some(if spof { 0.3 } else { 1.0 }),
            requests_after: 100,
            spof,
        }
    }

    fn row(layout: Layout, capacity: Option<f64>, parts: Vec<PartResult>) -> Row {
        Row {
            layout,
            capacity,
            ramp: Vec::new(),
            parts,
            skipped: Vec::new(),
            containers: 1,
            memory_mb: 1.0,
        }
    }

    #[test]
    fn one_machine_with_web_and_db_counts_two_single_points_of_failure() {
        let r = row(
            Layout::SingleServer,
            Some(50.0),
            vec![part("box", &[Duty::Web, Duty::Db], true)],
        );
        let (e, m, ok) = spof_verdict(&r);
        assert!(ok, "{e}: {m}");
        assert_eq!(m, "2 (web + db): box did not survive");
    }

    #[test]
    fn the_spof_verdict_fails_on_a_difference() {
        // Multiple servers: the balancer and the database, as the course says.
        let good = row(
            Layout::MultipleServers,
            Some(50.0),
            vec![
                part("lb-1", &[Duty::Lb], true),
                part("server-1", &[Duty::Web], false),
                part("server-2", &[Duty::Web], false),
                part("db-1", &[Duty::Db], true),
            ],
        );
        assert!(spof_verdict(&good).2);
        // Redis found to be one where the course says only the database.
        let cache = row(
            Layout::Cache,
            Some(50.0),
            vec![
                part("redis", &[Duty::Cache], true),
                part("db-1", &[Duty::Db], true),
            ],
        );
        let (_, m, ok) = spof_verdict(&cache);
        assert!(!ok);
        assert_eq!(m, "2 (cache + db): redis, db-1 did not survive");
        // Replication: no part may be one; a database that did not fail
        // over is a failure of the claim.
        let stuck = row(
            Layout::Replication,
            Some(50.0),
            vec![
                part("db-1", &[Duty::Db], true),
                part("db-2", &[Duty::Db], false),
            ],
        );
        assert!(!spof_verdict(&stuck).2);
        let zero = row(
            Layout::Replication,
            Some(50.0),
            vec![part("db-1", &[Duty::Db], false)],
        );
        assert!(spof_verdict(&zero).2);
        // Nothing probed is no proof.
        assert!(!spof_verdict(&row(Layout::Replication, Some(1.0), Vec::new())).2);
    }

    #[test]
    fn the_database_does_the_same_work_per_page_on_any_machine() {
        // The AMD EPYC of 1 December (a 4.9 ms rank) and a slower core.
        assert_eq!(Sizing::for_rank(4.9).product_query_ms, 9);
        assert_eq!(Sizing::for_rank(8.0).product_query_ms, 6);
        for rank in [2.0, 4.9, 8.0, 12.6] {
            let s = Sizing::for_rank(rank);
            let total = rank + f64::from(s.product_query_ms);
            assert!((total - DB_PAGE_MS).abs() <= 0.5, "{rank}: {total}");
            assert_eq!(s.rank_ms, rank);
        }
    }

    #[test]
    fn the_mix_sets_the_product_read_where_the_database_has_room() {
        // A 4.9 ms rank, 9 ms of product read, 20 ms pages, and a mix
        // whose database already works 0.55 of the server: kept.
        let rank = Sizing::for_rank(4.9);
        let s = rank.for_mix(MixCost {
            server_ms: 8.2,
            db_ms: 4.5,
        });
        assert_eq!((s.product_query_ms, s.page_ms), (9, PAGE_MS));
        assert_eq!(s.rank_ms, 4.9);
        assert_eq!(
            s.probe,
            Some((
                MixCost {
                    server_ms: 8.2,
                    db_ms: 4.5
                },
                9,
                PAGE_MS
            ))
        );
        // A database with more room here: more deliberate work.
        let s = rank.for_mix(MixCost {
            server_ms: 8.2,
            db_ms: 3.5,
        });
        assert_eq!((s.product_query_ms, s.page_ms), (12, PAGE_MS));
    }

    #[test]
    fn a_database_whose_own_queries_cost_too_much_gets_more_server_work() {
        // 1 December's slow machine: the rank takes the whole page budget,
        // and logins, deposits and balances cost the database as much again.
        let rank = Sizing::for_rank(14.0);
        assert_eq!(rank.product_query_ms, 1);
        let s = rank.for_mix(MixCost {
            server_ms: 10.0,
            db_ms: 9.0,
        });
        assert_eq!((s.product_query_ms, s.page_ms), (1, 39));
        // The ratio it aims at, with the costs that stay.
        let db = 9.0;
        let server = 10.0 + PAGE_SHARE * f64::from(39 - PAGE_MS);
        assert!(
            (db / server - DB_OVER_SERVER).abs() < 0.02,
            "{}",
            db / server
        );
        // Bounded.
        let s = rank.for_mix(MixCost {
            server_ms: 10.0,
            db_ms: 90.0,
        });
        assert_eq!(s.page_ms, MAX_DELIBERATE_MS);
    }

    #[test]
    fn a_probe_that_measured_nothing_keeps_the_rank_sizing() {
        let rank = Sizing::for_rank(4.9);
        for cost in [
            MixCost {
                server_ms: 0.0,
                db_ms: 4.0,
            },
            MixCost {
                server_ms: 8.0,
                db_ms: f64::NAN,
            },
        ] {
            let s = rank.for_mix(cost);
            assert_eq!((s.product_query_ms, s.page_ms), (9, PAGE_MS));
        }
    }

    #[test]
    fn a_rank_that_costs_a_page_still_leaves_the_product_read() {
        assert_eq!(Sizing::for_rank(DB_PAGE_MS).product_query_ms, 1);
        assert_eq!(Sizing::for_rank(40.0).product_query_ms, 1);
        assert_eq!(Sizing::for_rank(-1.0).product_query_ms, 14);
    }

    #[test]
    fn growth_needs_a_clear_step() {
        let a = row(Layout::HaBalancers, Some(100.0), Vec::new());
        let b = row(Layout::Cache, Some(150.0), Vec::new());
        let (e, m, ok) = growth_verdict(&a, &b);
        assert!(ok, "{e}: {m}");
        assert!(e.contains("the course: 5x"), "{e}");
        let flat = row(Layout::Cache, Some(110.0), Vec::new());
        assert!(!growth_verdict(&a, &flat).2);
        let none = row(Layout::Cache, None, Vec::new());
        assert!(!growth_verdict(&a, &none).2);
    }

    #[test]
    fn the_course_grows_at_three_steps_and_loses_a_spof_at_two() {
        let grows: Vec<Layout> = Layout::ALL
            .into_iter()
            .filter(|l| l.course_grows())
            .collect();
        assert_eq!(
            grows,
            [Layout::Separated, Layout::MultipleServers, Layout::Cache]
        );
        let counts: Vec<usize> = Layout::ALL.iter().map(|l| l.course_spofs().len()).collect();
        assert_eq!(counts, [2, 2, 2, 1, 1, 0]);
    }

    #[test]
    fn each_row_adds_one_thing_to_the_one_before() {
        let t: Vec<Topology> = Layout::ALL.iter().map(|l| l.topology(11)).collect();
        assert!(t.iter().all(|x| x.product_query_ms == 11));
        assert_eq!((t[1].servers, t[2].servers), (1, 3));
        assert_eq!((t[2].balancers, t[3].balancers), (1, 2));
        assert_eq!((t[3].cache, t[4].cache), (Toggle::Off, Toggle::On));
        assert_eq!((t[4].replicas, t[5].replicas), (0, 2));
        assert_eq!(t[5].failover, Toggle::On);
        let redis: Vec<bool> = Layout::ALL.iter().map(|l| l.has_redis()).collect();
        assert_eq!(redis, [false, false, false, false, true, true]);
        for x in &t {
            assert_eq!(x.resources.server.cpus, Some(MACHINE_CPUS));
            assert_eq!(x.resources.db.cpus, Some(MACHINE_CPUS));
        }
    }
}
