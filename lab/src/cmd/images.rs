//! `lab images ...`: the lab's container images.

use super::Report;
use crate::cli::ImagesCommand;
use crate::error::Result;
use crate::progress::Terminal;
use crate::runtime::DockerRuntime;
use crate::{bundle, images};

pub async fn run(c: ImagesCommand) -> Result<Report> {
    match c {
        ImagesCommand::Build { force, bin_dir } => {
            let rt = DockerRuntime::connect().await?;
            let opts = images::BuildOptions::new(force, bin_dir);
            Ok(Report::ImagesBuilt(
                images::build(&rt, &opts, &Terminal).await?,
            ))
        }
        ImagesCommand::Save { file, level } => {
            let rt = DockerRuntime::connect().await?;
            Ok(Report::ImagesSaved(
                bundle::save_command(&rt, &file, level, &Terminal).await?,
            ))
        }
        ImagesCommand::Load { file } => {
            let rt = DockerRuntime::connect().await?;
            Ok(Report::ImagesLoaded(
                bundle::load_command(&rt, &file, &Terminal).await?,
            ))
        }
    }
}
