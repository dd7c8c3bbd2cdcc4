//! The one error type of the `lab` library. Each variant's message is a
//! single line that names what went wrong and what to do about it; `main`
//! prints it after `error: ` and exits 1.

use thiserror::Error;

use crate::bundle::BundleError;
use crate::dashboard::DashboardError;
use crate::faults::FaultError;
use crate::ha::HaError;
use crate::images::ImageError;
use crate::lessons::LessonError;
use crate::live::SetError;
use crate::load::LoadError;
use crate::naming::NameError;
use crate::patroni::PatroniError;
use crate::primary::PrimaryError;
use crate::proxy_admin::ProxyError;
use crate::runtime::RuntimeError;
use crate::topology::TopologyError;

#[derive(Error, Debug)]
pub enum LabError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Fault(#[from] FaultError),
    #[error(transparent)]
    Primary(#[from] PrimaryError),
    #[error(transparent)]
    Patroni(#[from] PatroniError),
    #[error(transparent)]
    Set(#[from] SetError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Ha(#[from] HaError),
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
    #[error("port {port} on 127.0.0.1 is already in use: stop what uses it, or pick another with --port (0 picks a free one)")]
    PortInUse { port: u16 },
    #[error(
        "{services} did not become healthy within {secs}s; see `lab logs {first}` and `lab status`"
    )]
    NotHealthy {
        services: String,
        first: String,
        secs: u64,
    },
    #[error("{service} stopped while starting ({state}); see `lab logs {service}`")]
    Exited { service: String, state: String },
    #[error("the balancer's admin API did not answer ({0}); is lb-1 running? see `lab status`")]
    Admin(String),
    #[error("cannot write the manual page: {0}")]
    Manual(String),
    #[error("the load stopped unexpectedly ({0}); run the command again with -v for details")]
    LoadAborted(String),
    #[error("the network {0} has no secrets label (made by another tool?): run `lab down` and `lab up` again")]
    NoSecrets(String),
    #[error(transparent)]
    Lesson(#[from] LessonError),
    #[error("lesson {name}: the claim did not hold ({met} of {total} expectations met{detail}); rerun with --keep to look at the lab")]
    LessonFailed {
        name: String,
        met: usize,
        total: usize,
        detail: String,
    },
}

pub type Result<T> = std::result::Result<T, LabError>;
