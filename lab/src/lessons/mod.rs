//! Scripted lessons: each chapter of a scaling course, reproduced with real
//! parts and checked.
//!
//! A lesson states a hypothesis (what the course claims), then runs a method
//! (a topology, a load, a fault or a change) and ends with a verdict per
//! expectation, each with the figure it measured. The lab a lesson uses is
//! its own (`<lab>-lesson-<name>`), and it is removed at the end — pass, fail
//! or Ctrl-C — unless `--keep` asks to look around afterwards.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{LabError, Result};
use crate::faults::Faults;
use crate::lb_admin::{http_connector, LbConnector};
use crate::load::{self, LoadPlan, Report};
use crate::runtime::{ContainerInfo, Runtime};
use crate::topology::Topology;
use crate::up::{self, UpOptions};

mod architecture;
mod cache;
mod db_failover;
mod failover;
mod ha_balancers;
mod health_checks;
mod more_servers;
mod ops;
mod replication;
mod sessions;
mod sizing;
mod slow_db;

/// A lesson's body: it drives the lab through the context.
type Body = for<'a> fn(&'a mut Ctx<'_>) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// One lesson of the course.
pub struct Lesson {
    pub name: &'static str,
    /// Its place in the course (docs/labs/NN-name.md).
    pub number: u8,
    pub summary: &'static str,
    pub hypothesis: &'static str,
    body: Body,
}

/// Every lesson, in course order.
pub fn all() -> Vec<Lesson> {
    vec![
        sizing::ONE_SERVER,
        sizing::BIGGER_SERVER,
        sizing::SEPARATE_DB,
        more_servers::LESSON,
        health_checks::LESSON,
        sessions::LESSON,
        cache::LESSON,
        replication::LESSON,
        failover::LESSON,
        slow_db::LESSON,
        db_failover::LESSON,
        ha_balancers::LESSON,
        architecture::LESSON,
    ]
}

#[derive(Error, Debug)]
pub enum LessonError {
    #[error("no lesson named {name:?}{}; `lab lesson list` shows them all", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("interrupted (Ctrl-C or stop); the lesson's lab was removed")]
    Interrupted,
    #[error(
        "the lesson could not {step}: {reason}; run it again, or with --keep to look at the lab"
    )]
    Step { step: String, reason: String },
    #[error("{service} publishes no port {port}: is it running? see `lab status`")]
    NoPort { service: String, port: u16 },
    #[error("this lesson needs a machine with at least {0} CPUs to give each part its own")]
    TooFewCpus(usize),
}

/// A lesson step that failed for a reason of its own (HTTP, a temp file).
pub fn step(step: &str) -> impl FnOnce(&dyn std::fmt::Display) -> LabError + '_ {
    move |e| {
        LessonError::Step {
            step: step.to_string(),
            reason: e.to_string(),
        }
        .into()
    }
}

/// An expectation and what was measured.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Verdict {
    pub expectation: String,
    pub measured: String,
    pub passed: bool,
}

#[derive(Serialize, Debug, Clone)]
pub struct LessonReport {
    pub lesson: String,
    pub hypothesis: String,
    pub verdicts: Vec<Verdict>,
    /// Tables of figures, for the text report and the docs.
    pub tables: Vec<Table>,
    pub passed: bool,
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The busy-machine warning, when the machine was already loaded as the
    /// lesson started (its timings are then noisier than the guide's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
    /// Where and when the figures were measured, so a result kept in
    /// docs/labs/results/ says what it stands for.
    pub machine: Machine,
}

/// The machine a lesson ran on, as its report records it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Machine {
    /// When the lesson started, UTC (RFC 3339).
    pub started: String,
    pub cores: usize,
    /// The 1-minute load average as the lesson started (Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_average: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    pub lab_version: String,
}

impl Machine {
    fn now() -> Machine {
        Machine {
            started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|t| load_average(&t)),
            cpu: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|t| cpu_model(&t)),
            lab_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The CPU's model name from `/proc/cpuinfo`'s text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let widths: Vec<usize> = (0..n)
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "{:<w$}",
                        r.get(i).cloned().unwrap_or_default(),
                        w = widths[i]
                    )
                })
                .collect();
            format!("    {}\n", cells.join("  ").trim_end())
        };
        let mut out = format!("  {}\n", self.title);
        out.push_str(&line(&self.header));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// What a lesson tells as it goes, for a caller that shows it elsewhere
/// than the terminal (the web dashboard): the narration's lines, each
/// verdict as it is reached, each table as it is filled.
#[derive(Serialize, Debug, Clone)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    Say { text: String },
    Verdict(Verdict),
    Table(Table),
}

/// Who watches a lesson besides the terminal, and how to stop it early.
/// `Default` is nobody, and no stop but Ctrl-C (`lab lesson run`).
#[derive(Clone, Default)]
pub struct Watch {
    /// Each step, as it happens.
    pub steps: Option<mpsc::UnboundedSender<Step>>,
    /// Cancelled: the lesson ends as on Ctrl-C, and its lab is removed.
    pub stop: CancellationToken,
}

/// What a lesson body works with.
pub struct Ctx<'r> {
    pub rt: &'r dyn Runtime,
    pub lab: String,
    pub lb: LbConnector,
    pub verdicts: Vec<Verdict>,
    pub tables: Vec<Table>,
    /// Whether to narrate to stdout (off for --json).
    pub narrate: bool,
    /// `--quick`: the shorter method where a lesson has one (the same
    /// verdicts, fewer or shorter measurements).
    pub quick: bool,
    /// Where each step goes besides stdout, if anywhere.
    pub steps: Option<mpsc::UnboundedSender<Step>>,
}

impl Ctx<'_> {
    fn tell(&self, step: Step) {
        if let Some(tx) = &self.steps {
            // A watcher that went away does not stop the lesson.
            let _ = tx.send(step);
        }
    }

    /// A line of narration: what the lesson does now.
    pub fn say(&self, msg: &str) {
        if self.narrate {
            println!("  → {msg}");
        }
        self.tell(Step::Say { text: msg.into() });
    }

    pub fn expect(&mut self, expectation: &str, measured: String, passed: bool) {
        if self.narrate {
            println!(
                "  {} {expectation}: {measured}",
                if passed { "✓" } else { "✗" }
            );
        }
        let v = Verdict {
            expectation: expectation.into(),
            measured,
            passed,
        };
        self.tell(Step::Verdict(v.clone()));
        self.verdicts.push(v);
    }

    pub fn table(&mut self, t: Table) {
        if self.narrate {
            print!("{}", t.render());
        }
        self.tell(Step::Table(t.clone()));
        self.tables.push(t);
    }

    /// How the lesson's changes wait for the lab: up to three minutes, with
    /// the wait shown only when the lesson narrates.
    fn up_options(&self) -> UpOptions {
        let progress: std::sync::Arc<dyn crate::progress::Progress> = if self.narrate {
            std::sync::Arc::new(crate::progress::Terminal)
        } else {
            std::sync::Arc::new(crate::progress::Silent)
        };
        UpOptions {
            wait: true,
            timeout: Duration::from_secs(180),
            lb: self.lb.clone(),
            progress,
        }
    }

    /// Database queries so far, summed over the `/metrics` of servers
    /// 1..=`servers` (each server counts the queries it sends).
    pub async fn db_queries(&self, servers: u8) -> Result<f64> {
        let http = reqwest::Client::new();
        let mut total = 0.0;
        for i in 1..=servers {
            let addr = self
                .address(&crate::roles::names::server(i), crate::roles::server::PORT)
                .await?;
            let text = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .map_err(|e| step("read a server's metrics")(&e))?
                .text()
                .await
                .map_err(|e| step("read a server's metrics")(&e))?;
            total += text
                .lines()
                .filter(|l| l.starts_with("db_queries_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(total)
    }

    /// Brings the lesson's lab to this topology (on a free port).
    pub async fn up(&self, t: Topology) -> Result<()> {
        let t = Topology { port: 0, ..t };
        let opts = self.up_options();
        up::up(self.rt, &self.lab, &t, &opts).await.map(|_| ())
    }

    pub async fn set(&self, pairs: &[&str]) -> Result<()> {
        let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        let opts = self.up_options();
        crate::live::set(self.rt, &self.lab, &pairs, &opts)
            .await
            .map(|_| ())
    }

    pub async fn scale(&self, n: u32) -> Result<()> {
        let opts = self.up_options();
        crate::live::scale_servers(self.rt, &self.lab, n, &opts)
            .await
            .map(|_| ())
    }

    pub fn faults(&self) -> Faults<'_> {
        Faults {
            rt: self.rt,
            lab: &self.lab,
            lb: self.lb.clone(),
        }
    }

    pub async fn containers(&self) -> Result<Vec<ContainerInfo>> {
        up::containers(self.rt, &self.lab).await
    }

    pub async fn entrypoint(&self) -> Result<String> {
        let all = self.containers().await?;
        up::entrypoint(&all).ok_or_else(|| {
            LabError::from(LessonError::Step {
                step: "reach the balancer".into(),
                reason: "it is not running".into(),
            })
        })
    }

    /// The published loopback address of a service's port.
    pub async fn address(&self, service: &str, port: u16) -> Result<String> {
        let all = self.containers().await?;
        let c = crate::primary::find(self.rt, &self.lab, &all, service).await?;
        c.ports.get(&port).cloned().ok_or_else(|| {
            LabError::from(LessonError::NoPort {
                service: service.to_string(),
                port,
            })
        })
    }

    /// Runs the load driver against the lesson's balancer (or the plan's
    /// own target), quietly.
    pub async fn load(&self, mut args: LoadPlan) -> Result<Report> {
        args.live = crate::load::LiveView::Off;
        args.validate()?;
        let base = match &args.target {
            Some(t) => t.clone(),
            None => self.entrypoint().await?,
        };
        Ok(load::run(&args, &base).await?)
    }

    /// The CPU a service's container has used since it started, in ms of
    /// one core: two readings around a load give what that load cost it.
    pub async fn cpu_ms(&self, service: &str) -> Result<f64> {
        let name = crate::naming::container(&self.lab, service);
        Ok(self.rt.usage(&name).await?.cpu_total_ns as f64 / 1e6)
    }

    /// Runs a load and, `after` into it, calls `fault`. Returns the report
    /// and when the fault happened, counted from the start of the load.
    pub async fn load_with<F, Fut>(
        &self,
        args: LoadPlan,
        after: Duration,
        fault: F,
    ) -> Result<(Report, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let start = Instant::now();
        let load = self.load(args);
        let inject = async {
            tokio::time::sleep(after).await;
            let at = start.elapsed();
            fault().await?;
            Ok::<_, LabError>(at)
        };
        let (report, at) = tokio::join!(load, inject);
        Ok((report?, at?))
    }
}

pub fn find(name: &str) -> std::result::Result<Lesson, LessonError> {
    let lessons = all();
    let names: Vec<&str> = lessons.iter().map(|l| l.name).collect();
    let suggestion = crate::naming::did_you_mean(name, names.iter().copied());
    lessons
        .into_iter()
        .find(|l| l.name == name)
        .ok_or(LessonError::Unknown {
            name: name.into(),
            suggestion,
        })
}

pub fn list() -> String {
    all()
        .iter()
        .map(|l| format!("{:>2}  {:<14} {}\n", l.number, l.name, l.summary))
        .collect()
}

/// How a lesson runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Keep the lesson's lab afterwards (healed) instead of removing it.
    pub keep: bool,
    /// Tell what happens on stdout (off for --json).
    pub narrate: bool,
    /// The shorter method, where the lesson has one.
    pub quick: bool,
}

/// Runs one lesson in its own lab, and removes the lab afterwards (unless
/// `keep`), whatever happened.
pub async fn run(
    rt: &dyn Runtime,
    lab: &str,
    lesson: &Lesson,
    opts: RunOptions,
) -> Result<LessonReport> {
    run_watched(rt, lab, lesson, opts, Watch::default()).await
}

/// Like [`run`], and tells `watch` each step; `watch.stop` ends it early
/// (its lab removed all the same).
pub async fn run_watched(
    rt: &dyn Runtime,
    lab: &str,
    lesson: &Lesson,
    opts: RunOptions,
    watch: Watch,
) -> Result<LessonReport> {
    let RunOptions {
        keep,
        narrate,
        quick,
    } = opts;
    let started = Instant::now();
    let mut ctx = Ctx {
        rt,
        lab: format!("{lab}-lesson-{}", lesson.name),
        lb: http_connector(),
        verdicts: Vec::new(),
        tables: Vec::new(),
        narrate,
        quick,
        steps: watch.steps.clone(),
    };
    if narrate {
        println!(
            "Lesson {}: {}\n\n  Hypothesis: {}\n",
            lesson.number, lesson.name, lesson.hypothesis
        );
    }
    // Measured before the lesson's own containers add to the load; it goes
    // into the report too, so a --json reader sees why figures are noisy.
    let busy = busy_machine();
    let machine = Machine::now();
    if narrate {
        if let Some(warning) = &busy {
            eprintln!("warning: {warning}\n");
        }
    }
    // A lab left by an earlier, killed run of this lesson is removed first.
    crate::down::down(rt, &ctx.lab).await?;
    let outcome = tokio::select! {
        r = (lesson.body)(&mut ctx) => r,
        _ = tokio::signal::ctrl_c() => Err(LessonError::Interrupted.into()),
        _ = watch.stop.cancelled() => Err(LessonError::Interrupted.into()),
    };
    if keep {
        let _ = ctx.faults().heal_all().await;
        if narrate {
            println!(
                "\n  The lab is kept: lab --lab {} status (remove it with lab --lab {} down)",
                ctx.lab, ctx.lab
            );
        }
    } else if let Err(e) = crate::down::down(rt, &ctx.lab).await {
        eprintln!(
            "warning: could not remove the lesson's lab {}: {e}",
            ctx.lab
        );
    }
    let error = outcome.err().map(|e| e.to_string());
    let passed =
        error.is_none() && !ctx.verdicts.is_empty() && ctx.verdicts.iter().all(|v| v.passed);
    let report = LessonReport {
        lesson: lesson.name.into(),
        hypothesis: lesson.hypothesis.into(),
        verdicts: ctx.verdicts,
        tables: ctx.tables,
        passed,
        duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        error,
        busy,
        machine,
    };
    if narrate {
        if let Some(e) = &report.error {
            println!("\n  The lesson could not finish: {e}");
        }
        println!(
            "\n  Verdict: {} ({} of {} expectations met, {:.0} s)",
            if report.passed {
                "the claim holds"
            } else {
                "the claim did NOT hold"
            },
            report.verdicts.iter().filter(|v| v.passed).count(),
            report.verdicts.len(),
            report.duration_s
        );
    }
    Ok(report)
}

/// Lessons measure throughput and latency on the machine they run on: when
/// other programs already keep every core busy, the figures say more about
/// them than about the lesson. Says so, from the 1-minute load average
/// (Linux only: elsewhere Docker runs in a VM whose load the host cannot
/// see anyway).
fn busy_machine() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    busy_warning(load_average(&text)?, cores)
}

/// The 1-minute load average from `/proc/loadavg`'s text.
fn load_average(proc_loadavg: &str) -> Option<f64> {
    proc_loadavg.split_whitespace().next()?.parse().ok()
}

/// A warning when more programs want a core than there are cores.
fn busy_warning(load: f64, cores: usize) -> Option<String> {
    (load > cores as f64).then(|| {
        format!(
            "this machine is busy (load average {load:.1} on {cores} cores): the lesson's \
             timings will be slower and noisier than usual; for figures to compare, run it \
             again when other programs are done"
        )
    })
}

/// Waits up to 60 s for an app's `/readyz` at `base` (its database
/// reachable, the schema in); `what` names it in the error.
pub(crate) async fn wait_ready(base: &str, what: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| step("make an HTTP client")(&e))?;
    for _ in 0..120 {
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(LessonError::Step {
        step: format!("wait for {what}"),
        reason: "it was not ready within 60 s".into(),
    }
    .into())
}

/// A percentage with one decimal.
pub fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_warning_is_in_the_json_report() {
        let report = |busy: Option<String>| LessonReport {
            lesson: "x".into(),
            hypothesis: "y".into(),
            verdicts: Vec::new(),
            tables: Vec::new(),
            passed: true,
            duration_s: 1.0,
            error: None,
            busy,
            machine: Machine::now(),
        };
        let warned = serde_json::to_value(report(busy_warning(9.0, 2))).unwrap();
        assert!(
            warned["busy"].as_str().is_some_and(|w| !w.is_empty()),
            "{warned}"
        );
        assert!(
            warned["machine"]["cores"].as_u64().unwrap() >= 1,
            "{warned}"
        );
        assert!(warned["machine"]["started"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        let quiet = serde_json::to_value(report(busy_warning(0.5, 2))).unwrap();
        assert!(quiet.get("busy").is_none(), "{quiet}");
    }

    #[test]
    fn the_cpu_model_is_read_from_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn lessons_are_numbered_in_course_order_and_named_uniquely() {
        let l = all();
        // In course order, numbered 1, 2, 3... with no gap.
        for (i, lesson) in l.iter().enumerate() {
            assert_eq!(lesson.number as usize, i + 1, "{}", lesson.name);
        }
        let mut names: Vec<_> = l.iter().map(|l| l.name).collect();
        names.dedup();
        assert_eq!(names.len(), l.len());
    }

    #[test]
    fn unknown_lessons_get_a_suggestion() {
        let e = find("sesions").err().unwrap();
        assert!(e.to_string().contains("did you mean sessions"), "{e}");
    }

    #[test]
    fn a_busy_machine_is_named() {
        assert_eq!(load_average("3.42 1.10 0.50 2/97 1234\n"), Some(3.42));
        assert_eq!(load_average(""), None);
        assert!(busy_warning(3.42, 2)
            .unwrap()
            .contains("load average 3.4 on 2 cores"));
        assert!(busy_warning(1.9, 2).is_none());
    }

    #[test]
    fn a_watcher_gets_each_step_as_it_happens() {
        let rt = crate::runtime::fake::FakeRuntime::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ctx = Ctx {
            rt: &rt,
            lab: "x".into(),
            lb: http_connector(),
            verdicts: Vec::new(),
            tables: Vec::new(),
            narrate: false,
            quick: false,
            steps: Some(tx),
        };
        ctx.say("crash server-1");
        ctx.expect("no errors", "0 errors".into(), true);
        ctx.table(Table::new("t", &["a"]));
        let kinds: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| serde_json::to_value(s).unwrap()["kind"].to_string())
            .collect();
        assert_eq!(kinds, [r#""say""#, r#""verdict""#, r#""table""#]);
        // The report keeps them too, as without a watcher.
        assert_eq!(ctx.verdicts.len(), 1);
        assert_eq!(ctx.tables.len(), 1);
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new("t", &["a", "bbb"]);
        t.row(vec!["xxxx".into(), "y".into()]);
        assert_eq!(t.render(), "  t\n    a     bbb\n    xxxx  y\n");
    }
}
