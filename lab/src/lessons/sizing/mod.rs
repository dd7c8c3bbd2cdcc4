//! Lessons 1 to 3: how big one machine is, and what shares it.
//!
//! - [`one_server`]: push more and more requests at a single server and
//!   watch its CPU reach its limit; past that point requests queue and
//!   latency climbs steeply instead of the server doing more.
//! - [`bigger_server`]: give it more CPUs, then more memory (vertical
//!   scaling), and measure what each doubling buys.
//! - [`separate_db`]: the web server and the database on one machine, then
//!   on two, under rising web load: on one machine the database starves.

use std::time::Duration;

use super::Ctx;
use crate::error::Result;
use crate::load::LoadPlan;
use crate::topology::{Reads, ResourceSet, Resources, Topology};

mod bigger_server;
mod one_server;
mod separate_db;

pub use bigger_server::LESSON as BIGGER_SERVER;
pub use one_server::LESSON as ONE_SERVER;
pub use separate_db::LESSON as SEPARATE_DB;
pub(crate) use separate_db::{start_box, BOX};

/// CPU-bound requests: each burns this many ms of server CPU.
const WORK_MS: u32 = 10;

/// One server, no replica, its CPU limited to `cpus`.
fn one_server_topology(cpus: f64) -> Topology {
    Topology {
        servers: 1,
        replicas: 0,
        reads: Reads::Primary,
        resources: ResourceSet {
            server: Resources {
                cpus: Some(cpus),
                memory: None,
            },
            ..ResourceSet::default()
        },
        ..Topology::default()
    }
}

/// CPU use of a service during a load, sampled in its middle.
async fn cpu_during(
    c: &Ctx<'_>,
    service: &str,
    args: LoadPlan,
    after: Duration,
) -> Result<(crate::load::Report, f64)> {
    let name = crate::naming::container(&c.lab, service);
    let cpu = std::sync::Mutex::new(0.0);
    let (report, _) = c
        .load_with(args, after, || async {
            let u = c.rt.usage(&name).await?;
            *cpu.lock().unwrap_or_else(|p| p.into_inner()) = u.cpu_percent;
            Ok(())
        })
        .await?;
    let cpu = *cpu.lock().unwrap_or_else(|p| p.into_inner());
    Ok((report, cpu))
}

/// Successful requests per second of a load.
fn served(r: &crate::load::Report) -> f64 {
    r.ok as f64 / r.duration_s.max(0.001)
}
