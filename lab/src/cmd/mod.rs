//! Commands: what each `lab` command does, as a function that takes its
//! parsed arguments and returns a typed [`Report`].
//!
//! A command never prints. It does its work through the library (up, faults,
//! load, lessons...) and says what happened as data; [`Report::render`]
//! turns that into text or JSON in one place. The web dashboard calls the
//! same functions and shows the same reports its own way. (mini-redis keeps
//! its commands apart the same way: one type per command, one place that
//! writes to the wire.)

use crate::cli::{Cli, Command};
use crate::error::Result;

pub mod chaos;
pub mod dashboard;
pub mod down;
pub mod fault;
pub mod images;
pub mod lesson;
pub mod load;
pub mod logs;
pub mod scale;
pub mod set;
pub mod spof;
pub mod status;
pub mod up;
pub mod watch;

/// What a command did.
pub enum Report {
    /// Nothing to print (logs and watch write as they go).
    None,
    ImagesBuilt(Vec<crate::images::Built>),
    ImagesSaved(crate::bundle::SaveReport),
    ImagesLoaded(crate::bundle::LoadReport),
    Doctor {
        report: crate::doctor::Report,
        json: bool,
    },
    Up(crate::up::UpReport),
    /// A change to a running lab: only what changed is shown.
    Changed(crate::up::UpReport),
    Status {
        report: crate::status::StatusReport,
        json: bool,
    },
    Down {
        lab: String,
        report: crate::down::DownReport,
    },
    Load {
        report: Box<crate::load::Report>,
        json: bool,
    },
    Fault(crate::faults::Outcome),
    Chaos {
        report: Box<crate::chaos::ChaosReport>,
        json: bool,
    },
    Spof {
        report: crate::spof::SpofReport,
        json: bool,
    },
    Healed(Vec<crate::faults::Healed>),
    LessonList(String),
    /// A completion script or a manual page: text made by clap.
    Text(String),
    Lesson {
        report: crate::lessons::LessonReport,
        json: bool,
    },
}

impl Report {
    /// The text (or JSON document) to print on stdout.
    pub fn render(&self) -> String {
        fn json(v: &impl serde::Serialize) -> String {
            match serde_json::to_string_pretty(v) {
                Ok(s) => format!("{s}\n"),
                Err(e) => format!("{{\"error\": \"cannot serialise the report: {e}\"}}\n"),
            }
        }
        match self {
            Report::None => String::new(),
            Report::ImagesBuilt(built) => built
                .iter()
                .map(|b| match b.outcome {
                    crate::images::Outcome::UpToDate => format!("  up to date  {}\n", b.image),
                    crate::images::Outcome::Built(d) => {
                        format!("  built       {} in {:.1}s\n", b.image, d.as_secs_f64())
                    }
                })
                .collect(),
            Report::ImagesSaved(r) => r.render(),
            Report::ImagesLoaded(r) => r.render(),
            Report::Doctor { report, json: true } => json(report),
            Report::Doctor { report, .. } => report.render(),
            Report::Up(r) => r.render(),
            Report::Changed(r) => r.render_changes(),
            Report::Status { report, json: true } => json(report),
            Report::Status { report, .. } => report.render(),
            Report::Down { lab, report } => report.render(lab),
            Report::Load { report, json: true } => format!("{}\n", report.to_json()),
            Report::Load { report, .. } => report.render_text(),
            Report::Fault(o) => o.to_string(),
            Report::Chaos { report, json: true } => json(report),
            Report::Chaos { report, .. } => report.render_text(),
            Report::Spof { report, json: true } => json(report),
            Report::Spof { report, .. } => report.render_text(),
            Report::Healed(done) if done.is_empty() => "nothing to heal: no fault found\n".into(),
            Report::Healed(done) => done.iter().map(|d| format!("healed {d}\n")).collect(),
            Report::LessonList(text) | Report::Text(text) => text.clone(),
            Report::Lesson { report, json: true } => json(report),
            // The lesson narrated itself as it ran.
            Report::Lesson { .. } => String::new(),
        }
    }

    /// 0, or 1 when the report itself says the lab cannot run (doctor).
    pub fn exit_code(&self) -> i32 {
        match self {
            Report::Doctor { report, .. } => report.exit_code(),
            _ => 0,
        }
    }
}

/// How a live change (`lab scale`, `lab set`) waits for the lab.
fn live_options(timeout: std::time::Duration) -> crate::up::UpOptions {
    crate::up::UpOptions {
        wait: true,
        timeout,
        lb: crate::lb_admin::http_connector(),
        progress: std::sync::Arc::new(crate::progress::Terminal),
    }
}

/// Runs one parsed command.
pub async fn execute(cli: Cli) -> Result<Report> {
    let lab = cli.lab.as_str();
    match cli.command {
        Command::Images(c) => images::run(c).await,
        Command::Doctor(a) => Ok(Report::Doctor {
            report: crate::doctor::diagnose(lab, a.port).await,
            json: a.json,
        }),
        Command::Up(a) => up::run(lab, a).await,
        Command::Status(a) => status::run(lab, a.json).await,
        Command::Watch(a) => watch::run(lab, a).await,
        Command::Dashboard(a) => dashboard::run(lab, a).await,
        Command::Down => down::run(lab).await,
        Command::Logs(a) => logs::run(lab, a).await,
        Command::Scale(c) => scale::run(lab, c).await,
        Command::Set(a) => set::run(lab, a).await,
        Command::Load(a) => load::run(lab, a).await,
        Command::Lesson(c) => lesson::run(lab, c).await,
        Command::Crash(t) => fault::run(lab, fault::Fault::Crash(t.name)).await,
        Command::Stop(t) => fault::run(lab, fault::Fault::Stop(t.name)).await,
        Command::Start(t) => fault::run(lab, fault::Fault::Start(t.name)).await,
        Command::Restart(t) => fault::run(lab, fault::Fault::Restart(t.name)).await,
        Command::Pause(t) => fault::run(lab, fault::Fault::Pause(t.name)).await,
        Command::Resume(t) => fault::run(lab, fault::Fault::Resume(t.name)).await,
        Command::Partition(t) => fault::run(lab, fault::Fault::Partition(t.name)).await,
        Command::Slow(a) => fault::run(lab, fault::Fault::Slow(a)).await,
        Command::Chaos(a) => chaos::run(lab, a).await,
        Command::Spof(a) => spof::run(lab, a).await,
        Command::Blackhole(a) => {
            fault::run(lab, fault::Fault::Break(crate::faults::Break::Blackhole, a)).await
        }
        Command::Reset(a) => {
            fault::run(lab, fault::Fault::Break(crate::faults::Break::Reset, a)).await
        }
        Command::Lag(a) => fault::run(lab, fault::Fault::Lag(a)).await,
        Command::Replication(a) => fault::run(lab, fault::Fault::Replication(a.mode)).await,
        Command::Failover => fault::run(lab, fault::Fault::Failover).await,
        Command::Promote(t) => fault::run(lab, fault::Fault::Promote(t.name)).await,
        Command::Resize(a) => fault::run(lab, fault::Fault::Resize(a)).await,
        Command::Heal(a) => fault::heal(lab, a).await,
        Command::Completions { shell } => Ok(Report::Text(completions(shell))),
        Command::Man => manual().map(Report::Text),
    }
}

/// The completion script for `shell`, from the same clap definitions.
fn completions(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::Cli::command(), "lab", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The manual page, in roff.
fn manual() -> Result<String> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::cli::Cli::command())
        .render(&mut out)
        .map_err(|e| crate::error::LabError::Manual(e.to_string()))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_manual_name_every_command() {
        let bash = completions(clap_complete::Shell::Bash);
        let man = manual().unwrap();
        for cmd in ["up", "crash", "slow", "doctor", "lesson"] {
            assert!(bash.contains(cmd), "bash completion lacks {cmd}");
            assert!(man.contains(cmd), "manual lacks {cmd}");
        }
        assert!(
            man.starts_with(".ie") || man.contains(".TH"),
            "{}",
            &man[..80]
        );
    }
}
