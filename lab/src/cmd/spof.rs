//! `lab spof`: the running lab's single points of failure, measured.

use super::Report;
use crate::cli::SpofArgs;
use crate::error::Result;
use crate::faults::{FaultError, Faults};
use crate::lb_admin::http_connector;
use crate::runtime::DockerRuntime;
use crate::spof::{self, ProbeSettings};

pub async fn run(lab: &str, a: SpofArgs) -> Result<Report> {
    if !(a.threshold > 0.0 && a.threshold <= 1.0) {
        return Err(FaultError::Invalid {
            what: "--threshold",
            value: a.threshold.to_string(),
            hint: "a share of requests between 0 (excluded) and 1, e.g. 0.9",
        }
        .into());
    }
    let rt = DockerRuntime::connect().await?;
    let f = Faults {
        rt: &rt,
        lab,
        lb: http_connector(),
    };
    let settings = ProbeSettings {
        window_s: a.window.as_secs().max(1),
        measure_s: a.measure.as_secs().max(1),
        threshold: a.threshold,
        ..ProbeSettings::default()
    };
    let report = spof::probe(&f, &settings).await?;
    Ok(Report::Spof {
        report,
        json: a.json,
    })
}
