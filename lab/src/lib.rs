//! scaling-lab: start, break and measure a small web architecture on one
//! laptop, with real containers.
//!
//! The library is organised one concept per module: the lab as data
//! ([`topology`]), turning it into containers ([`plan`], [`up`], [`down`]),
//! reading it back ([`status`]), the images it runs ([`images`]), the one
//! door to Docker ([`runtime`]), and the load driver that shows what users
//! suffer ([`load`]). `main.rs` only parses arguments and calls [`run`].

pub mod bundle;
pub mod cli;
pub mod current;
pub mod doctor;
pub mod down;
pub mod error;
pub mod faults;
pub mod images;
pub mod lb_admin;
pub mod lessons;
pub mod live;
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
pub mod watch;

use cli::{Cli, Command, ImagesCommand, LessonCommand, ScaleCommand};
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
        Command::Images(ImagesCommand::Save { file, level }) => {
            let rt = DockerRuntime::connect().await?;
            let r = bundle::save_command(&rt, &file, level)
                .await
                .map_err(other)?;
            print!("{}", r.render());
            Ok(0)
        }
        Command::Images(ImagesCommand::Load { file }) => {
            let rt = DockerRuntime::connect().await?;
            let r = bundle::load_command(&rt, &file).await.map_err(other)?;
            print!("{}", r.render());
            Ok(0)
        }
        Command::Doctor(args) => doctor::command(lab, &args).await,
        Command::Up(args) => {
            let file = args.file.as_deref().map(topology::load_file).transpose()?;
            let file = match args.preset {
                Some(p) => Some(topology::layer(p.file(), file.unwrap_or_default())),
                None => file,
            };
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
        Command::Load(args) => {
            args.validate()?;
            let base = match &args.target {
                Some(t) => t.clone(),
                None => {
                    let rt = DockerRuntime::connect().await?;
                    let all = up::containers(&rt, lab).await?;
                    up::entrypoint(&all).ok_or_else(|| naming::NameError::NoLab(lab.to_string()))?
                }
            };
            let report = load::run(&args, &base).await?;
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            Ok(0)
        }
        Command::Crash(t) => fault(lab, |f| Box::pin(async move { f.crash(&t.name).await })).await,
        Command::Stop(t) => fault(lab, |f| Box::pin(async move { f.stop(&t.name).await })).await,
        Command::Start(t) => fault(lab, |f| Box::pin(async move { f.start(&t.name).await })).await,
        Command::Restart(t) => {
            fault(lab, |f| Box::pin(async move { f.restart(&t.name).await })).await
        }
        Command::Pause(t) => fault(lab, |f| Box::pin(async move { f.pause(&t.name).await })).await,
        Command::Resume(t) => {
            fault(lab, |f| Box::pin(async move { f.resume(&t.name).await })).await
        }
        Command::Partition(t) => {
            fault(lab, |f| Box::pin(async move { f.partition(&t.name).await })).await
        }
        Command::Slow(a) => {
            fault(lab, |f| {
                Box::pin(async move { f.slow(&a.name, a.latency, a.jitter, a.loss).await })
            })
            .await
        }
        Command::Lag(a) => {
            fault(lab, |f| {
                Box::pin(async move { f.lag(&a.name, if a.off { None } else { a.delay }).await })
            })
            .await
        }
        Command::Replication(a) => {
            let sync = a.mode == topology::Replication::Sync;
            fault(lab, |f| Box::pin(async move { f.replication(sync).await })).await
        }
        Command::Resize(a) => {
            fault(lab, |f| {
                Box::pin(async move {
                    f.resize(&a.name, a.cpus, a.memory.as_deref(), a.cpuset.as_deref())
                        .await
                })
            })
            .await
        }
        Command::Heal(a) => {
            fault(lab, |f| {
                Box::pin(async move {
                    let done = match &a.name {
                        Some(n) if !a.all => f.heal(n).await?,
                        _ => f.heal_all().await?,
                    };
                    Ok(if done.is_empty() {
                        "nothing to heal: no fault found\n".to_string()
                    } else {
                        done.iter().map(|d| format!("healed {d}\n")).collect()
                    })
                })
            })
            .await
        }
        Command::Scale(ScaleCommand::Servers { count }) => {
            let rt = DockerRuntime::connect().await?;
            let opts = live_opts(std::time::Duration::from_secs(120));
            let r = live::scale_servers(&rt, lab, count, &opts).await?;
            print!("{}", r.render_changes());
            Ok(0)
        }
        Command::Watch(a) => {
            let rt = DockerRuntime::connect().await?;
            watch::watch(&rt, lab, &lb_admin::http_connector(), a.every, a.count).await?;
            Ok(0)
        }
        Command::Lesson(LessonCommand::List) => {
            print!("{}", lessons::list());
            Ok(0)
        }
        Command::Lesson(LessonCommand::Run { name, keep, json }) => {
            let lesson = lessons::find(&name).map_err(|e| error::LabError::Other(e.to_string()))?;
            let rt = DockerRuntime::connect().await?;
            images::check_present(&rt).await?;
            let report = lessons::run(&rt, lab, &lesson, keep, !json).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| error::LabError::Other(e.to_string()))?
                );
            }
            if report.passed {
                Ok(0)
            } else {
                let met = report.verdicts.iter().filter(|v| v.passed).count();
                Err(error::LabError::Other(format!(
                    "lesson {name}: the claim did not hold ({met} of {} expectations met{}); rerun with --keep to look at the lab",
                    report.verdicts.len(),
                    report.error.as_ref().map(|e| format!("; {e}")).unwrap_or_default()
                )))
            }
        }
        Command::Set(a) => {
            let rt = DockerRuntime::connect().await?;
            let r = live::set(&rt, lab, &a.pairs, &live_opts(a.timeout)).await?;
            print!("{}", r.render_changes());
            Ok(0)
        }
    }
}

fn other(e: impl std::fmt::Display) -> error::LabError {
    error::LabError::Other(e.to_string())
}

fn live_opts(timeout: std::time::Duration) -> up::UpOptions {
    up::UpOptions {
        wait: true,
        timeout,
        lb: lb_admin::http_connector(),
    }
}

type FaultFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String>> + Send + 'a>>;

/// Runs one fault command and prints what it did and what to watch for.
async fn fault<F>(lab: &str, f: F) -> Result<i32>
where
    F: for<'a> FnOnce(&'a faults::Faults<'a>) -> FaultFuture<'a>,
{
    let rt = DockerRuntime::connect().await?;
    let faults = faults::Faults {
        rt: &rt,
        lab,
        lb: lb_admin::http_connector(),
    };
    let msg = f(&faults).await?;
    print!("{msg}");
    Ok(0)
}
