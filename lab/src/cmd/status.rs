//! `lab status`: every service, its health, ports, faults and lag.

use super::Report;
use crate::error::Result;
use crate::lb_admin::http_connector;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str, json: bool) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let report = crate::status::status(&rt, lab, &http_connector()).await?;
    Ok(Report::Status { report, json })
}
