//! `lab lesson list | run NAME`: the course's claims, reproduced and checked.

use super::Report;
use crate::cli::LessonCommand;
use crate::error::{LabError, Result};
use crate::runtime::DockerRuntime;
use crate::{images, lessons};

pub async fn run(lab: &str, c: LessonCommand) -> Result<Report> {
    match c {
        LessonCommand::List => Ok(Report::LessonList(lessons::list())),
        LessonCommand::Run {
            name,
            keep,
            json,
            quick,
        } => {
            let lesson = lessons::find(&name)?;
            let rt = DockerRuntime::connect().await?;
            images::check_present(&rt).await?;
            let opts = lessons::RunOptions {
                keep,
                narrate: !json,
                quick,
            };
            let report = lessons::run(&rt, lab, &lesson, opts).await?;
            if report.passed {
                return Ok(Report::Lesson { report, json });
            }
            if json {
                // The document still goes out: it says which claim failed.
                print!(
                    "{}",
                    Report::Lesson {
                        report: report.clone(),
                        json
                    }
                    .render()
                );
            }
            Err(LabError::LessonFailed {
                name,
                met: report.verdicts.iter().filter(|v| v.passed).count(),
                total: report.verdicts.len(),
                detail: report.error.map(|e| format!("; {e}")).unwrap_or_default(),
            })
        }
    }
}
