//! `lab down`: remove every container, volume and network of the lab.

use super::Report;
use crate::error::Result;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let report = crate::down::down(&rt, lab).await?;
    Ok(Report::Down {
        lab: lab.to_string(),
        report,
    })
}
