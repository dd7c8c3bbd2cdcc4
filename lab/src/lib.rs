//! scaling-lab: start, break and measure a small web architecture on one
//! laptop, with real containers.
//!
//! The library is organised one concept per module: the lab as data
//! ([`topology`]), turning it into containers ([`plan`], [`up`], [`down`]),
//! reading it back ([`status`]), the images it runs ([`images`]), the one
//! door to Docker ([`runtime`]), and the load driver that shows what users
//! suffer ([`load`]). `main.rs` only parses arguments and calls [`run`].

pub mod cli;
pub mod down;
pub mod error;
pub mod images;
pub mod lb_admin;
pub mod load;
pub mod logs;
pub mod naming;
pub mod plan;
pub mod runtime;
pub mod secrets;
pub mod status;
pub mod telemetry;
pub mod topology;
pub mod up;

use cli::{Cli, Command, ImagesCommand};
use error::Result;
use runtime::DockerRuntime;

/// Runs one command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let lab = cli.lab.as_str();
    match cli.command {
        Command::Images(ImagesCommand::Build { force, bin_dir }) => {
            let rt = DockerRuntime::connect().await?;
            let opts = images::BuildOptions::new(force, bin_dir);
            let built = images::build(&rt, &opts).await?;
            for b in built {
                match b.outcome {
                    images::Outcome::UpToDate => println!("  up to date  {}", b.image),
                    images::Outcome::Built(d) => {
                        println!("  built       {} in {:.1}s", b.image, d.as_secs_f64())
                    }
                }
            }
            Ok(0)
        }
        Command::Up(args) => {
            let file = args.file.as_deref().map(topology::load_file).transpose()?;
            let t = topology::Topology::resolve(file.as_ref(), &args)?;
            let rt = DockerRuntime::connect().await?;
            let opts = up::UpOptions {
                wait: !args.no_wait,
                timeout: args.timeout,
                lb: lb_admin::http_connector(),
            };
            let report = up::up(&rt, lab, &t, &opts).await?;
            print!("{}", report.render());
            Ok(0)
        }
        Command::Status(args) => {
            let rt = DockerRuntime::connect().await?;
            let report = status::status(&rt, lab, &lb_admin::http_connector()).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| error::LabError::Other(e.to_string()))?
                );
            } else {
                print!("{}", report.render());
            }
            Ok(0)
        }
        Command::Down => {
            let rt = DockerRuntime::connect().await?;
            let r = down::down(&rt, lab).await?;
            print!("{}", r.render(lab));
            Ok(0)
        }
        Command::Logs(args) => {
            let rt = DockerRuntime::connect().await?;
            logs::logs(&rt, lab, &args.name, args.follow, args.tail).await?;
            Ok(0)
        }
    }
}
