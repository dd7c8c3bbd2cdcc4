//! `lab load`: drive users through the balancer and measure what they get.

use super::Report;
use crate::cli::LoadArgs;
use crate::error::Result;
use crate::naming::NameError;
use crate::runtime::DockerRuntime;
use crate::up;

pub async fn run(lab: &str, args: LoadArgs) -> Result<Report> {
    let plan = args.plan();
    plan.validate()?;
    let base = match &plan.target {
        Some(t) => t.clone(),
        None => {
            let rt = DockerRuntime::connect().await?;
            let all = up::containers(&rt, lab).await?;
            up::entrypoint(&all).ok_or_else(|| NameError::NoLab(lab.to_string()))?
        }
    };
    let report = crate::load::run(&plan, &base).await?;
    Ok(Report::Load {
        report: Box::new(report),
        json: args.json,
    })
}
