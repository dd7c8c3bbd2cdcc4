//! The fault commands: crash, stop, start, restart, pause, resume,
//! partition, slow, blackhole, reset, lag, replication, resize, failover and
//! promote, and heal to undo them.

use super::Report;
use crate::cli::{HealArgs, LagArgs, LinkArgs, ResizeArgs, SlowArgs};
use crate::error::Result;
use crate::faults::{Break, Faults};
use crate::lb_admin::http_connector;
use crate::runtime::DockerRuntime;
use crate::topology::Replication;

/// One fault command, with its arguments.
pub enum Fault {
    Crash(String),
    Stop(String),
    Start(String),
    Restart(String),
    Pause(String),
    Resume(String),
    Partition(String),
    Slow(SlowArgs),
    Break(Break, LinkArgs),
    Lag(LagArgs),
    Replication(Replication),
    Resize(ResizeArgs),
    /// A planned switchover of the primary.
    Failover,
    Promote(String),
}

pub async fn run(lab: &str, fault: Fault) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let f = Faults {
        rt: &rt,
        lab,
        lb: http_connector(),
    };
    let outcome = match fault {
        Fault::Crash(n) => f.crash(&n).await?,
        Fault::Stop(n) => f.stop(&n).await?,
        Fault::Start(n) => f.start(&n).await?,
        Fault::Restart(n) => f.restart(&n).await?,
        Fault::Pause(n) => f.pause(&n).await?,
        Fault::Resume(n) => f.resume(&n).await?,
        Fault::Partition(n) => f.partition(&n).await?,
        Fault::Slow(a) => f.slow(&a.name, &a.spec()).await?,
        Fault::Break(how, a) => {
            f.break_link(&a.name, how, a.link.as_deref(), a.direction)
                .await?
        }
        Fault::Lag(a) => f.lag(&a.name, if a.off { None } else { a.delay }).await?,
        Fault::Replication(mode) => f.replication(mode).await?,
        Fault::Failover => f.failover().await?,
        Fault::Promote(n) => f.promote(&n).await?,
        Fault::Resize(a) => {
            f.resize(&a.name, a.cpus, a.memory.as_deref(), a.cpuset.as_deref())
                .await?
        }
    };
    Ok(Report::Fault(outcome))
}

pub async fn heal(lab: &str, a: HealArgs) -> Result<Report> {
    let rt = DockerRuntime::connect().await?;
    let f = Faults {
        rt: &rt,
        lab,
        lb: http_connector(),
    };
    let done = match &a.name {
        Some(n) if !a.all => f.heal(n).await?,
        _ => f.heal_all().await?,
    };
    Ok(Report::Healed(done))
}
