//! `lab scale servers N`: more or fewer servers on a running lab, none cut.

use std::time::Duration;

use super::Report;
use crate::cli::ScaleCommand;
use crate::error::Result;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str, c: ScaleCommand) -> Result<Report> {
    let ScaleCommand::Servers { count } = c;
    let rt = DockerRuntime::connect().await?;
    let opts = super::live_options(Duration::from_secs(120));
    let r = crate::live::scale_servers(&rt, lab, count, &opts).await?;
    Ok(Report::Changed(r))
}
