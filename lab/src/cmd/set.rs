//! `lab set KEY=VALUE...`: a live change; servers replaced one at a time.

use super::Report;
use crate::cli::SetArgs;
use crate::error::Result;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str, a: SetArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let r = crate::live::set(&rt, lab, &a.pairs, &super::live_options(a.timeout)).await?;
    Ok(Report::Changed(r))
}
