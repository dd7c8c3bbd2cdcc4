//! The lab as a whole: `up`, `status`, `watch`, `down`, `logs`, and the live
//! changes `scale` and `set`.

use std::sync::Arc;
use std::time::Duration;

use super::Report;
use crate::cli::{LogsArgs, ScaleCommand, SetArgs, UpArgs, WatchArgs};
use crate::error::Result;
use crate::lb_admin::http_connector;
use crate::progress::Terminal;
use crate::runtime::DockerRuntime;
use crate::topology::{self, Topology};
use crate::{down, live, logs, status, up, watch};

pub async fn up(lab: &str, args: UpArgs) -> Result<Report> {
    // Defaults < preset < lab.toml < flags.
    let file = args.file.as_deref().map(topology::load_file).transpose()?;
    let preset = args.preset.map(|p| p.file()).unwrap_or_default();
    let layers = topology::layer(
        topology::layer(preset, file.unwrap_or_default()),
        args.as_layer(),
    );
    let t = Topology::resolve(&layers)?;
    let rt = DockerRuntime::connect().await?;
    let opts = up::UpOptions {
        wait: !args.no_wait,
        timeout: args.timeout,
        lb: http_connector(),
        progress: Arc::new(Terminal),
    };
    Ok(Report::Up(up::up(&rt, lab, &t, &opts).await?))
}

pub async fn status(lab: &str, json: bool) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let report = status::status(&rt, lab, &http_connector()).await?;
    Ok(Report::Status { report, json })
}

pub async fn watch(lab: &str, a: WatchArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    watch::watch(&rt, lab, &http_connector(), a.every, a.count).await?;
    Ok(Report::None)
}

pub async fn down(lab: &str) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let report = down::down(&rt, lab).await?;
    Ok(Report::Down {
        lab: lab.to_string(),
        report,
    })
}

pub async fn logs(lab: &str, a: LogsArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    logs::logs(&rt, lab, &a.name, a.follow, a.tail).await?;
    Ok(Report::None)
}

fn live_opts(timeout: Duration) -> up::UpOptions {
    up::UpOptions {
        wait: true,
        timeout,
        lb: http_connector(),
        progress: Arc::new(Terminal),
    }
}

pub async fn scale(lab: &str, c: ScaleCommand) -> Result<Report> {
    let ScaleCommand::Servers { count } = c;
    let rt = DockerRuntime::connect().await?;
    let r = live::scale_servers(&rt, lab, count, &live_opts(Duration::from_secs(120))).await?;
    Ok(Report::Changed(r))
}

pub async fn set(lab: &str, a: SetArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let r = live::set(&rt, lab, &a.pairs, &live_opts(a.timeout)).await?;
    Ok(Report::Changed(r))
}
