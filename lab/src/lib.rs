//! scaling-lab: start, break and measure a small web architecture on one
//! laptop, with real containers.
//!
//! The library is organised one concept per module: the lab as data
//! ([`topology`]), turning it into containers ([`plan`], [`up`], [`down`]),
//! reading it back ([`status`]), the images it runs ([`images`]), the one
//! door to Docker ([`runtime`]), and the load driver that shows what users
//! suffer ([`load`]). `main.rs` only parses arguments and calls [`run`].

pub mod bundle;
pub mod chaos;
pub mod cli;
pub mod cmd;
pub mod current;
pub mod dashboard;
pub mod doctor;
pub mod down;
pub mod error;
pub mod failover;
pub mod faults;
pub mod ha;
pub mod images;
pub mod lb_admin;
pub mod lessons;
pub mod live;
pub mod load;
pub mod logs;
pub mod naming;
pub mod patroni;
pub mod plan;
pub mod primary;
pub mod progress;
pub mod proxy_admin;
pub mod readiness;
pub mod roles;
pub mod runtime;
pub mod secrets;
pub mod spof;
pub mod status;
pub mod telemetry;
pub mod topology;
pub mod up;
pub mod watch;

/// Runs one command and prints what it did; returns the process exit code.
pub async fn run(cli: cli::Cli) -> error::Result<i32> {
    let report = cmd::execute(cli).await?;
    print!("{}", report.render());
    Ok(report.exit_code())
}
