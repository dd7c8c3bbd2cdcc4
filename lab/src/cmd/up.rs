//! `lab up`: create the lab, or bring a running one to the asked topology.

use std::sync::Arc;

use super::Report;
use crate::cli::UpArgs;
use crate::error::Result;
use crate::lb_admin::http_connector;
use crate::progress::Terminal;
use crate::runtime::DockerRuntime;
use crate::topology::{self, Topology};

pub async fn run(lab: &str, args: UpArgs) -> Result<Report> {
    // Defaults < preset < lab.toml < flags.
    let file = args.file.as_deref().map(topology::load_file).transpose()?;
    let preset = args.preset.map(|p| p.file()).unwrap_or_default();
    let layers = topology::layer(
        topology::layer(preset, file.unwrap_or_default()),
        args.as_layer(),
    );
    let t = Topology::resolve(&layers)?;
    let rt = DockerRuntime::connect().await?;
    let opts = crate::up::UpOptions {
        wait: !args.no_wait,
        timeout: args.timeout,
        lb: http_connector(),
        progress: Arc::new(Terminal),
    };
    Ok(Report::Up(crate::up::up(&rt, lab, &t, &opts).await?))
}
