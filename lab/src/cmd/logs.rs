//! `lab logs NAME`: what a service wrote, as it writes it with --follow.

use super::Report;
use crate::cli::LogsArgs;
use crate::error::Result;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str, a: LogsArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    crate::logs::logs(&rt, lab, &a.name, a.follow, a.tail).await?;
    Ok(Report::None)
}
