//! `lab watch`: the status table, redrawn live.

use super::Report;
use crate::cli::WatchArgs;
use crate::error::Result;
use crate::lb_admin::http_connector;
use crate::runtime::DockerRuntime;

pub async fn run(lab: &str, a: WatchArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    crate::watch::watch(&rt, lab, &http_connector(), a.every, a.count).await?;
    Ok(Report::None)
}
