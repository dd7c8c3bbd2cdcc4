//! `lab chaos`: random faults on a schedule under load, healed at the end.

use super::Report;
use crate::chaos::{self, ChaosFault, ChaosPlan, Pace};
use crate::cli::ChaosArgs;
use crate::error::Result;
use crate::faults::{FaultError, Faults};
use crate::lb_admin::http_connector;
use crate::load::{LiveView, LoadPlan, MAX_DURATION};
use crate::naming::NameError;
use crate::runtime::DockerRuntime;
use crate::up;

pub async fn run(lab: &str, a: ChaosArgs) -> Result<Report> {
    if a.duration.is_zero() || a.duration > MAX_DURATION {
        return Err(FaultError::Invalid {
            what: "--duration",
            value: humantime::format_duration(a.duration).to_string(),
            hint: "a chaos run lasts more than 0 s and at most 1h",
        }
        .into());
    }
    let rt = DockerRuntime::connect().await?;
    let all = up::containers(&rt, lab).await?;
    let base = up::entrypoint(&all).ok_or_else(|| NameError::NoLab(lab.to_string()))?;
    let faults = if a.faults.is_empty() {
        ChaosFault::ALL.to_vec()
    } else {
        a.faults.clone()
    };
    let plan = ChaosPlan {
        duration: a.duration,
        faults: faults.clone(),
        seed: a.seed.unwrap_or_else(rand::random),
        pace: Pace {
            gap: a.gap,
            hold: a.hold,
            ..Pace::default()
        },
        load: LoadPlan {
            scenario: a.scenario,
            users: Some(a.users),
            duration: a.duration,
            // Stdout carries the JSON report when asked for.
            live: if a.json {
                LiveView::Stderr
            } else {
                LiveView::Stdout
            },
            ..LoadPlan::default()
        },
    };
    let victims = chaos::victims(&all, &faults);
    let steps = chaos::schedule(plan.seed, plan.duration, &victims, plan.pace);
    let f = Faults {
        rt: &rt,
        lab,
        lb: http_connector(),
    };
    let report = chaos::run(&f, &base, &plan, steps).await?;
    Ok(Report::Chaos {
        report: Box::new(report),
        json: a.json,
    })
}
