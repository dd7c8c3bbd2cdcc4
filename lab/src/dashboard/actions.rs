//! The page's buttons: each calls the library function its `lab` command
//! calls ([`crate::faults::Faults`], [`crate::live`]) and answers with the
//! same typed result, as JSON, beside the text the command would print.
//!
//! Nothing of the lab is remembered here: a button changes Docker or a
//! balancer, and the next snapshot reads the change back like `lab status`
//! would. What a button did is marked on the charts' time axis
//! ([`job::Jobs::mark`]); a load or a lesson runs as the page's [`job`]. Every
//! failure becomes one [`ApiError`], answered as `{"error": "..."}` with
//! the one-line message the CLI prints and a status code that says whose
//! fault it is.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::job::{self, JobError, Source};
use super::AppState;
use crate::cmd::Report;
use crate::error::LabError;
use crate::faults::{FaultError, Faults, Healed, Outcome};
use crate::naming::NameError;

/// What a button can do to one service; the names are the CLI's verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Crash,
    Stop,
    Start,
    Restart,
    Pause,
    Resume,
    Partition,
    Heal,
}

impl Verb {
    pub const ALL: [Verb; 8] = [
        Verb::Crash,
        Verb::Stop,
        Verb::Start,
        Verb::Restart,
        Verb::Pause,
        Verb::Resume,
        Verb::Partition,
        Verb::Heal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Crash => "crash",
            Verb::Stop => "stop",
            Verb::Start => "start",
            Verb::Restart => "restart",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Partition => "partition",
            Verb::Heal => "heal",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Why a button did nothing.
#[derive(Error, Debug)]
pub enum ApiError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("no action {0:?}: use crash, stop, start, restart, pause, resume, partition or heal (slow and lag take a JSON body)")]
    UnknownVerb(String),
    #[error("the request's body is not what this action takes: {0}")]
    Body(String),
    #[error(transparent)]
    Job(#[from] JobError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownVerb(_) => StatusCode::NOT_FOUND,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::Job(JobError::Busy(_) | JobError::Idle) => StatusCode::CONFLICT,
            ApiError::Job(_) => StatusCode::BAD_REQUEST,
            ApiError::Lab(e) => match e {
                LabError::Name(NameError::Unknown { .. }) => StatusCode::NOT_FOUND,
                // Asked of a lab that is not there, or of a service in the
                // wrong state or role: a conflict with the lab as it is.
                LabError::Name(NameError::NoLab(_)) => StatusCode::CONFLICT,
                LabError::Fault(FaultError::Invalid { .. }) => StatusCode::BAD_REQUEST,
                LabError::Fault(_) => StatusCode::CONFLICT,
                LabError::Topology(_) | LabError::Set(_) | LabError::Load(_) => {
                    StatusCode::BAD_REQUEST
                }
                LabError::Lesson(crate::lessons::LessonError::Unknown { .. }) => {
                    StatusCode::NOT_FOUND
                }
                // Docker or a service did not do what it was asked.
                LabError::Runtime(_) | LabError::Admin(_) | LabError::Proxy(_) => {
                    StatusCode::BAD_GATEWAY
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::json_error(self.status(), &self.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        ApiError::Body(r.body_text())
    }
}

/// What a fault button did: the CLI's typed outcome and its text.
#[derive(Serialize, Debug)]
pub struct FaultAnswer {
    pub outcome: Outcome,
    pub text: String,
}

/// What a heal button mended.
#[derive(Serialize, Debug)]
pub struct HealAnswer {
    pub healed: Vec<Healed>,
    pub text: String,
}

/// What a live change did (`lab scale`, `lab set`), as the CLI says it.
#[derive(Serialize, Debug)]
pub struct ChangeAnswer {
    pub text: String,
}

fn faults(s: &AppState) -> Faults<'_> {
    Faults {
        rt: &*s.lab.rt,
        lab: &s.lab.name,
        lb: s.lab.lb.clone(),
    }
}

/// `POST /api/services/{name}/{verb}`: `lab VERB NAME`.
pub async fn service(
    State(s): State<AppState>,
    Path((name, verb)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let verb = Verb::parse(&verb).ok_or(ApiError::UnknownVerb(verb))?;
    let f = faults(&s);
    let outcome = match verb {
        Verb::Crash => f.crash(&name).await,
        Verb::Stop => f.stop(&name).await,
        Verb::Start => f.start(&name).await,
        Verb::Restart => f.restart(&name).await,
        Verb::Pause => f.pause(&name).await,
        Verb::Resume => f.resume(&name).await,
        Verb::Partition => f.partition(&name).await,
        Verb::Heal => {
            let healed = f.heal(&name).await;
            s.feed.refresh();
            let healed = healed?;
            s.jobs.mark(Source::Page, format!("heal {name}"));
            return Ok(heal_answer(healed));
        }
    };
    fault_answer(&s, outcome, format!("{} {name}", verb.as_str()))
}

/// Shows the lab's change at once, marks it on the time axis, and answers
/// as `lab VERB` prints.
fn fault_answer(
    s: &AppState,
    outcome: crate::error::Result<Outcome>,
    what: String,
) -> Result<Response, ApiError> {
    s.feed.refresh();
    let outcome = outcome?;
    s.jobs.mark(Source::Page, what);
    let text = Report::Fault(outcome.clone()).render();
    Ok(Json(FaultAnswer { outcome, text }).into_response())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Deserialize, Debug)]
pub struct SlowBody {
    pub latency_ms: u64,
    #[serde(default)]
    pub jitter_ms: Option<u64>,
}

/// `POST /api/services/{name}/slow` `{"latency_ms": 200}`:
/// `lab slow NAME --latency 200ms`, through the service's fault proxy.
pub async fn slow(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<SlowBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let spec = crate::faults::Slow {
        latency: ms(b.latency_ms),
        jitter: b.jitter_ms.map(ms),
        ..Default::default()
    };
    let outcome = faults(&s).slow(&name, &spec).await;
    fault_answer(&s, outcome, format!("slow {name} +{} ms", b.latency_ms))
}

#[derive(Deserialize, Debug)]
pub struct LagBody {
    /// How late the replica applies each change; 0 ends the lag.
    pub delay_ms: u64,
}

/// `POST /api/services/{name}/lag` `{"delay_ms": 3000}`: `lab lag NAME 3s`
/// (`{"delay_ms": 0}`: `lab lag NAME --off`).
pub async fn lag(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<LagBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let delay = (b.delay_ms > 0).then(|| ms(b.delay_ms));
    let outcome = faults(&s).lag(&name, delay).await;
    let what = match b.delay_ms {
        0 => format!("lag {name} off"),
        d => format!("lag {name} {d} ms"),
    };
    fault_answer(&s, outcome, what)
}

#[derive(Deserialize, Debug)]
pub struct ReplicationBody {
    pub mode: crate::topology::Replication,
}

/// `POST /api/replication` `{"mode": "sync"}`: `lab replication sync`.
pub async fn replication(
    State(s): State<AppState>,
    body: Result<Json<ReplicationBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let outcome = faults(&s).replication(b.mode).await;
    let what = format!(
        "replication {}",
        serde_json::to_value(b.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    fault_answer(&s, outcome, what)
}

fn heal_answer(healed: Vec<Healed>) -> Response {
    let text = Report::Healed(healed.clone()).render();
    Json(HealAnswer { healed, text }).into_response()
}

/// `POST /api/heal-all`: `lab heal --all`.
pub async fn heal_all(State(s): State<AppState>) -> Result<Response, ApiError> {
    let healed = faults(&s).heal_all().await;
    s.feed.refresh();
    let healed = healed?;
    s.jobs.mark(Source::Page, "heal all");
    Ok(heal_answer(healed))
}

/// How long a live change may wait for replaced servers, as `lab set`'s
/// default.
const LIVE_TIMEOUT: Duration = Duration::from_secs(120);

fn live_options(s: &AppState) -> crate::up::UpOptions {
    crate::up::UpOptions {
        wait: true,
        timeout: LIVE_TIMEOUT,
        lb: s.lab.lb.clone(),
        // The page shows progress through the snapshots, not a spinner.
        progress: Arc::new(crate::progress::Silent),
    }
}

#[derive(Deserialize, Debug)]
pub struct ScaleBody {
    pub servers: u32,
}

/// `POST /api/scale` `{"servers": N}`: `lab scale servers N`.
pub async fn scale(
    State(s): State<AppState>,
    body: Result<Json<ScaleBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let r = crate::live::scale_servers(&*s.lab.rt, &s.lab.name, b.servers, &live_options(&s)).await;
    s.feed.refresh();
    let text = Report::Changed(r?).render();
    s.jobs
        .mark(Source::Page, format!("scale servers {}", b.servers));
    Ok(Json(ChangeAnswer { text }).into_response())
}

#[derive(Deserialize, Debug)]
pub struct SetBody {
    /// KEY=VALUE pairs, as `lab set` takes them.
    pub pairs: Vec<String>,
}

/// `POST /api/set` `{"pairs": ["sessions=redis"]}`: `lab set KEY=VALUE...`.
pub async fn set(
    State(s): State<AppState>,
    body: Result<Json<SetBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    if b.pairs.is_empty() {
        return Err(ApiError::Body("give at least one KEY=VALUE pair".into()));
    }
    let r = crate::live::set(&*s.lab.rt, &s.lab.name, &b.pairs, &live_options(&s)).await;
    s.feed.refresh();
    let text = Report::Changed(r?).render();
    s.jobs
        .mark(Source::Page, format!("set {}", b.pairs.join(" ")));
    Ok(Json(ChangeAnswer { text }).into_response())
}

/// What starting or stopping a job did, in a line.
#[derive(Serialize, Debug)]
pub struct JobAnswer {
    pub text: String,
}

fn started(s: &AppState, title: String) -> Response {
    s.feed.refresh();
    Json(JobAnswer {
        text: format!("{title}: started; its figures follow on the charts"),
    })
    .into_response()
}

/// `POST /api/load` `{"scenario": "browse", "rate": 100, "duration_s": 60}`:
/// `lab load --scenario browse --rate 100 --duration 60s`, in the
/// dashboard's process, against the lab's entry point.
pub async fn load(
    State(s): State<AppState>,
    body: Result<Json<job::LoadRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let plan = b.plan()?;
    plan.validate().map_err(LabError::from)?;
    let all = crate::up::containers(&*s.lab.rt, &s.lab.name).await?;
    let base = crate::up::entrypoint(&all)
        .ok_or_else(|| LabError::from(NameError::NoLab(s.lab.name.clone())))?;
    let title = s.jobs.start_load(plan, base)?;
    Ok(started(&s, title))
}

#[derive(Deserialize, Debug)]
pub struct LessonBody {
    pub name: String,
    #[serde(default)]
    pub quick: bool,
}

/// `POST /api/lesson` `{"name": "sessions", "quick": true}`:
/// `lab lesson run sessions --quick`, in its own lab as on the CLI.
pub async fn lesson(
    State(s): State<AppState>,
    body: Result<Json<LessonBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let lesson = crate::lessons::find(&b.name).map_err(LabError::from)?;
    let title = s.jobs.start_lesson(s.lab.clone(), lesson, b.quick)?;
    Ok(started(&s, title))
}

/// `POST /api/job/stop`: Ctrl-C for the page's load or lesson.
pub async fn stop(State(s): State<AppState>) -> Result<Response, ApiError> {
    let title = s.jobs.stop()?;
    s.feed.refresh();
    Ok(Json(JobAnswer {
        text: format!("{title}: stopping"),
    })
    .into_response())
}

/// `GET /api/job`: the last load or lesson, whole (a snapshot carries only
/// its latest seconds).
pub async fn job(State(s): State<AppState>) -> Response {
    Json(s.jobs.record()).into_response()
}

#[derive(Serialize, Debug)]
pub struct LessonEntry {
    pub name: &'static str,
    pub number: u8,
    pub summary: &'static str,
}

/// `GET /api/lessons`: what `lab lesson list` lists, for the page's menu.
pub async fn lessons() -> Response {
    let all: Vec<LessonEntry> = crate::lessons::all()
        .into_iter()
        .map(|l| LessonEntry {
            name: l.name,
            number: l.number,
            summary: l.summary,
        })
        .collect();
    Json(all).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_read_back_their_names() {
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
        }
        assert_eq!(Verb::parse("explode"), None);
    }
}
