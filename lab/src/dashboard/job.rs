//! The one piece of work the page can start: a load or a lesson.
//!
//! A load from the page is `lab load` run inside the dashboard's process,
//! by the same engine ([`crate::load::run_watched`]): each second the
//! engine counts for its live view is also handed here, kept in the run's
//! [`Record`] and sent to the page with the next snapshot. A lesson is
//! `lab lesson run` ([`crate::lessons::run_watched`]): its narration,
//! verdicts and tables arrive as [`Step`]s. There is one job at a time per
//! dashboard, a load and a lesson exclude each other (a lesson brings its
//! own load, and two loads would measure each other), and every job is
//! bounded: a load's duration is required and capped, so is its rate or
//! count of users, and a lesson's lab is removed when it ends or is stopped.
//!
//! What the dashboard keeps here is the run's own result, not the lab's
//! state: the lab is still read back from Docker for every snapshot. The
//! last record stays after the run ends, so that the page can chart it and
//! `/report` can export it. The [`Marks`] are the changes seen in the lab
//! while the dashboard watched (a fault that appears or goes, whoever made
//! it) and the actions done through the page, each with its time, for the
//! charts' time axis and the report's fault timeline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Lab;
use crate::lessons::{self, LessonReport, Step};
use crate::load::report::TimelineEntry;
use crate::load::{LiveView, LoadPlan, Scenario};

/// The longest load the page may start: a class's exercise, not a soak.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The most requests per second (open model) the page may ask for.
pub const MAX_RATE: f64 = 2000.0;
/// The most users (closed model) the page may ask for.
pub const MAX_USERS: u32 = 200;
/// The marks kept: enough for a long lesson's faults, bounded all the same.
const MAX_MARKS: usize = 500;
/// The seconds of a run each snapshot carries: the page merges them by
/// time, so a late or skipped snapshot loses none.
const RECENT_SECONDS: usize = 5;

/// Milliseconds since the Unix epoch: the charts' time axis.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Load,
    Lesson,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Running,
    /// Asked to stop: a load waits for its requests in flight, a lesson
    /// removes its lab.
    Stopping,
    Done,
    Failed,
}

/// One second of a load, placed on the time axis.
#[derive(Serialize, Debug, Clone)]
pub struct Second {
    /// When the second ended, ms since the epoch.
    pub at: u64,
    #[serde(flatten)]
    pub entry: TimelineEntry,
}

/// Who made a change marked on the time axis.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A button of the page.
    Page,
    /// Seen in the lab by the dashboard: the CLI, a lesson, a health check.
    Lab,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Mark {
    pub t: u64,
    pub source: Source,
    pub text: String,
}

/// A lesson's step and when it came, for the report's timeline.
#[derive(Serialize, Debug, Clone)]
pub struct TimedStep {
    pub at: u64,
    #[serde(flatten)]
    pub step: Step,
}

/// A job's result so far, or in full once it ended.
#[derive(Serialize, Debug, Clone)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    /// What it is, as the page says it ("browse, 100 requests/s, 60 s").
    pub title: String,
    pub phase: Phase,
    pub started: u64,
    pub ended: Option<u64>,
    /// A load's seconds, as its live view counted them.
    pub seconds: Vec<Second>,
    /// A lesson's steps, in order.
    pub steps: Vec<TimedStep>,
    /// A load's final report (with its lost writes, known after the audit);
    /// its timeline is moved into `seconds`, so it is sent once.
    pub load: Option<Box<crate::load::Report>>,
    pub lesson: Option<Box<LessonReport>>,
    pub error: Option<String>,
}

/// What a snapshot carries of the job: its latest seconds only.
#[derive(Serialize, Debug, Clone)]
pub struct Recent {
    #[serde(flatten)]
    pub record: Record,
    /// How many seconds the full record (`GET /api/job`) holds.
    pub seconds_total: usize,
}

/// Why a job did not start.
#[derive(Error, Debug)]
pub enum JobError {
    #[error("{0} is running: stop it first (the stop button), or wait for it to end")]
    Busy(String),
    #[error("nothing runs: start a load or a lesson first")]
    Idle,
    #[error("a load from the page needs a duration between 1 s and {} s (duration_s)", MAX_DURATION.as_secs())]
    Duration,
    #[error("a load from the page takes at most {MAX_RATE} requests/s (rate) or {MAX_USERS} users (users); `lab load` takes more")]
    TooMuch,
    #[error("no scenario {0:?}: use browse, sessions, bank, mixed, ping, work, render or pages")]
    Scenario(String),
}

/// `POST /api/load`'s body: `lab load`'s main flags.
#[derive(Deserialize, Debug, Clone)]
pub struct LoadRequest {
    pub scenario: String,
    /// Open model: requests per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Closed model: users.
    #[serde(default)]
    pub users: Option<u32>,
    pub duration_s: u64,
}

impl LoadRequest {
    /// The plan `lab load` would run, within the page's bounds.
    pub fn plan(&self) -> Result<LoadPlan, JobError> {
        use clap::ValueEnum;
        let scenario = Scenario::from_str(&self.scenario, true)
            .map_err(|_| JobError::Scenario(self.scenario.clone()))?;
        let duration = Duration::from_secs(self.duration_s);
        if duration.is_zero() || duration > MAX_DURATION {
            return Err(JobError::Duration);
        }
        if self.rate.is_some_and(|r| r > MAX_RATE) || self.users.is_some_and(|u| u > MAX_USERS) {
            return Err(JobError::TooMuch);
        }
        Ok(LoadPlan {
            scenario,
            rate: self.rate,
            users: self.users,
            duration,
            live: LiveView::Off,
            ..LoadPlan::default()
        })
    }
}

fn load_title(p: &LoadPlan) -> String {
    let model = match p.model() {
        crate::load::Model::Open { rate } => format!("{rate} requests/s"),
        crate::load::Model::Closed { users } => format!("{users} users"),
    };
    format!(
        "load: {}, {model}, {} s",
        p.scenario.name(),
        p.duration.as_secs()
    )
}

#[derive(Default)]
struct Inner {
    current: Option<Record>,
    stop: Option<CancellationToken>,
    next_id: u64,
    marks: VecDeque<Mark>,
}

/// The dashboard's job and marks, shared by every handler.
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks a change on the time axis.
    pub fn mark(&self, source: Source, text: impl Into<String>) {
        let mut i = self.lock();
        i.marks.push_back(Mark {
            t: now_ms(),
            source,
            text: text.into(),
        });
        while i.marks.len() > MAX_MARKS {
            i.marks.pop_front();
        }
    }

    /// The marks made at or after `since` (ms since the epoch).
    pub fn marks_since(&self, since: u64) -> Vec<Mark> {
        self.lock()
            .marks
            .iter()
            .filter(|m| m.t >= since)
            .cloned()
            .collect()
    }

    /// Whether a job runs (or is stopping): the snapshot reader keeps
    /// reading then, so the run's fault timeline is whole even with no
    /// page open.
    pub fn busy(&self) -> bool {
        self.lock()
            .current
            .as_ref()
            .is_some_and(|r| matches!(r.phase, Phase::Running | Phase::Stopping))
    }

    /// The last job, whole.
    pub fn record(&self) -> Option<Record> {
        self.lock().current.clone()
    }

    /// The last job with its latest seconds, for a snapshot.
    pub fn recent(&self) -> Option<Recent> {
        let i = self.lock();
        let r = i.current.as_ref()?;
        let total = r.seconds.len();
        // Not a clone of the whole record: after a 10-minute run that is
        // 600 seconds, sent every second to every page.
        let record = Record {
            id: r.id,
            kind: r.kind,
            title: r.title.clone(),
            phase: r.phase,
            started: r.started,
            ended: r.ended,
            seconds: r.seconds[total.saturating_sub(RECENT_SECONDS)..].to_vec(),
            steps: r.steps.clone(),
            load: r.load.clone(),
            lesson: r.lesson.clone(),
            error: r.error.clone(),
        };
        Some(Recent {
            record,
            seconds_total: total,
        })
    }

    /// Makes the new job's record, unless one runs.
    fn begin(&self, kind: Kind, title: String) -> Result<(u64, CancellationToken), JobError> {
        let mut i = self.lock();
        if let Some(r) = &i.current {
            if matches!(r.phase, Phase::Running | Phase::Stopping) {
                return Err(JobError::Busy(r.title.clone()));
            }
        }
        i.next_id += 1;
        let id = i.next_id;
        let stop = CancellationToken::new();
        i.stop = Some(stop.clone());
        i.current = Some(Record {
            id,
            kind,
            title,
            phase: Phase::Running,
            started: now_ms(),
            ended: None,
            seconds: Vec::new(),
            steps: Vec::new(),
            load: None,
            lesson: None,
            error: None,
        });
        Ok((id, stop))
    }

    /// Changes job `id`'s record, if it is still the current one.
    fn update(&self, id: u64, f: impl FnOnce(&mut Record)) {
        if let Some(r) = self.lock().current.as_mut().filter(|r| r.id == id) {
            f(r);
        }
    }

    fn end(&self, id: u64, error: Option<String>, f: impl FnOnce(&mut Record)) {
        self.update(id, |r| {
            f(r);
            r.ended = Some(now_ms());
            r.phase = if error.is_some() {
                Phase::Failed
            } else {
                Phase::Done
            };
            r.error = error;
        });
    }

    /// Asks the running job to end.
    pub fn stop(&self) -> Result<String, JobError> {
        let mut i = self.lock();
        let stop = i.stop.clone();
        match i.current.as_mut() {
            Some(r) if r.phase == Phase::Running => {
                r.phase = Phase::Stopping;
                if let Some(s) = stop {
                    s.cancel();
                }
                Ok(r.title.clone())
            }
            _ => Err(JobError::Idle),
        }
    }

    /// Starts `lab load` against the lab's entry point `base`, in a task;
    /// returns its title.
    pub fn start_load(&self, plan: LoadPlan, base: String) -> Result<String, JobError> {
        let title = load_title(&plan);
        let (id, stop) = self.begin(Kind::Load, title.clone())?;
        self.mark(Source::Page, format!("{title} starts"));
        let jobs = self.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<crate::load::Snapshot>();
        // Each second lands in the record as the engine counts it.
        let collect = {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                while let Some(snap) = rx.recv().await {
                    let Some(last) = snap.last.as_ref() else {
                        continue;
                    };
                    let second = Second {
                        at: now_ms(),
                        entry: TimelineEntry::from(last),
                    };
                    jobs.update(id, |r| r.seconds.push(second));
                }
            })
        };
        tokio::spawn(async move {
            let result = crate::load::run_watched(&plan, &base, stop, Some(tx)).await;
            // The engine dropped its sender: the collector ends once drained.
            let _ = collect.await;
            match result {
                Ok(mut report) => jobs.end(id, None, |r| {
                    // The report's timeline is the whole one (the live view
                    // may miss the last, partial second): it replaces what
                    // was collected, placed from the run's start.
                    let seconds = std::mem::take(&mut report.timeline);
                    if !seconds.is_empty() {
                        r.seconds = seconds
                            .into_iter()
                            .map(|entry| Second {
                                at: r.started + entry.t * 1000,
                                entry,
                            })
                            .collect();
                    }
                    r.load = Some(Box::new(report));
                }),
                Err(e) => jobs.end(id, Some(e.to_string()), |_| {}),
            }
            jobs.mark(Source::Page, "load ends");
        });
        Ok(title)
    }

    /// Starts `lab lesson run NAME` in a task; returns its title.
    pub fn start_lesson(
        &self,
        lab: Arc<Lab>,
        lesson: lessons::Lesson,
        quick: bool,
    ) -> Result<String, JobError> {
        let title = format!(
            "lesson {}: {}{}",
            lesson.number,
            lesson.name,
            if quick { " (quick)" } else { "" }
        );
        let (id, stop) = self.begin(Kind::Lesson, title.clone())?;
        self.mark(Source::Page, format!("{title} starts"));
        let jobs = self.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<Step>();
        let collect = {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                while let Some(step) = rx.recv().await {
                    let step = TimedStep { at: now_ms(), step };
                    jobs.update(id, |r| r.steps.push(step));
                }
            })
        };
        tokio::spawn(async move {
            let opts = lessons::RunOptions {
                keep: false,
                narrate: false,
                quick,
            };
            let watch = lessons::Watch {
                steps: Some(tx),
                stop,
            };
            let result = lessons::run_watched(&*lab.rt, &lab.name, &lesson, opts, watch).await;
            let _ = collect.await;
            match result {
                Ok(report) => {
                    let error = report.error.clone();
                    jobs.end(id, error, |r| r.lesson = Some(Box::new(report)));
                }
                Err(e) => jobs.end(id, Some(e.to_string()), |_| {}),
            }
            jobs.mark(Source::Page, "lesson ends");
        });
        Ok(title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(scenario: &str, rate: Option<f64>, users: Option<u32>, s: u64) -> LoadRequest {
        LoadRequest {
            scenario: scenario.into(),
            rate,
            users,
            duration_s: s,
        }
    }

    #[test]
    fn a_load_from_the_page_is_bounded() {
        let p = req("browse", Some(100.0), None, 60).plan().unwrap();
        assert_eq!(p.duration, Duration::from_secs(60));
        assert_eq!(p.live, LiveView::Off);
        assert_eq!(load_title(&p), "load: browse, 100 requests/s, 60 s");
        assert!(matches!(
            req("browse", None, None, 0).plan(),
            Err(JobError::Duration)
        ));
        assert!(matches!(
            req("browse", None, None, 601).plan(),
            Err(JobError::Duration)
        ));
        assert!(matches!(
            req("browse", Some(5000.0), None, 10).plan(),
            Err(JobError::TooMuch)
        ));
        assert!(matches!(
            req("browse", None, Some(1000), 10).plan(),
            Err(JobError::TooMuch)
        ));
        assert!(matches!(
            req("shopping", None, None, 10).plan(),
            Err(JobError::Scenario(_))
        ));
    }

    #[tokio::test]
    async fn one_job_at_a_time_and_stop_ends_it() {
        let jobs = Jobs::default();
        let (id, stop) = jobs.begin(Kind::Load, "a".into()).unwrap();
        assert!(jobs.busy());
        assert!(matches!(
            jobs.begin(Kind::Lesson, "b".into()),
            Err(JobError::Busy(t)) if t == "a"
        ));
        jobs.stop().unwrap();
        assert!(stop.is_cancelled());
        assert_eq!(jobs.record().unwrap().phase, Phase::Stopping);
        jobs.end(id, None, |_| {});
        assert!(!jobs.busy());
        assert!(matches!(jobs.stop(), Err(JobError::Idle)));
        assert!(jobs.begin(Kind::Lesson, "b".into()).is_ok());
    }

    #[test]
    fn marks_are_bounded_and_read_from_a_time() {
        let jobs = Jobs::default();
        for i in 0..(MAX_MARKS + 10) {
            jobs.mark(Source::Lab, format!("m{i}"));
        }
        let all = jobs.marks_since(0);
        assert_eq!(all.len(), MAX_MARKS);
        assert_eq!(all[0].text, "m10");
        assert!(jobs.marks_since(u64::MAX).is_empty());
    }
}
