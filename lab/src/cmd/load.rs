//! `lab load`: drive users through the balancer and measure what they get.

use super::Report;
use crate::error::Result;
use crate::load::LoadArgs;
use crate::naming::NameError;
use crate::runtime::DockerRuntime;
use crate::up;

pub async fn run(lab: &str, args: LoadArgs) -> Result<Report> {
    args.validate()?;
    let base = match &args.target {
        Some(t) => t.clone(),
        None => {
            let rt = DockerRuntime::connect().await?;
            let all = up::containers(&rt, lab).await?;
            up::entrypoint(&all).ok_or_else(|| NameError::NoLab(lab.to_string()))?
        }
    };
    let report = crate::load::run(&args, &base).await?;
    Ok(Report::Load {
        report: Box::new(report),
        json: args.json,
    })
}
