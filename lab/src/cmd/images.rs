//! `lab images ...`: the lab's container images.

use super::Report;
use crate::cli::ImagesCommand;
use crate::error::Result;
use crate::images;
use crate::runtime::DockerRuntime;

pub async fn run(c: ImagesCommand) -> Result<Report> {
    match c {
        ImagesCommand::Build { force, bin_dir } => {
            let rt = DockerRuntime::connect().await?;
            let opts = images::BuildOptions::new(force, bin_dir);
            Ok(Report::ImagesBuilt(images::build(&rt, &opts).await?))
        }
    }
}
