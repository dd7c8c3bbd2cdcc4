//! The container runtime, seen through a small interface.
//!
//! Orchestration (planning, reconciling, faults) only needs a handful of
//! verbs: list what exists by label, create, start, stop, remove, run a
//! command inside, read logs. [`Runtime`] names exactly those. The Docker
//! implementation lives in [`docker`], the only file that knows bollard;
//! [`fake`] keeps containers in memory so the logic can be unit-tested
//! without a daemon (the way containerlab keeps its runtimes apart).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use thiserror::Error;

pub mod docker;
/// Test doubles are not part of the shipped API (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod fake;

pub use docker::DockerRuntime;

/// Labels are the lab's only memory: every object it creates carries them,
/// and every command rebuilds its picture of the lab from them.
pub mod labels {
    pub const LAB: &str = "scaling-lab.lab";
    pub const SERVICE: &str = "scaling-lab.service";
    pub const ROLE: &str = "scaling-lab.role";
    pub const CONFIG_HASH: &str = "scaling-lab.config-hash";
    pub const VERSION: &str = "scaling-lab.version";
    /// On images: a hash of everything the image was built from.
    pub const INPUT_HASH: &str = "scaling-lab.input-hash";
    /// On the lab's network: the per-lab secrets, made at the first `up`.
    pub const SECRETS: &str = "scaling-lab.secrets";
    /// On containers: the settings a service runs with, as JSON, so
    /// `lab status` can report them without asking the service.
    pub const SETTINGS: &str = "scaling-lab.settings";
    /// On containers with a fixed address on the lab network (an HA pair's
    /// balancers): the address, so a partition healed later reconnects the
    /// container with it (keepalived's peers are addresses, not names).
    pub const IPV4: &str = "scaling-lab.ipv4";
}

/// How a network hands out addresses: its subnet, its gateway, and the
/// range Docker allocates containers from (the rest of the subnet is ours
/// to give by hand, e.g. to a floating address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkIpam {
    /// e.g. 172.29.0.0/16
    pub subnet: String,
    pub gateway: Option<String>,
    /// e.g. 172.29.0.0/17; None: the whole subnet.
    pub ip_range: Option<String>,
}

#[derive(Error, Debug)]
pub enum RuntimeError {
    #[error("cannot reach the Docker daemon ({0}); start Docker or set DOCKER_HOST")]
    Unreachable(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("port {port} on 127.0.0.1 is already in use; free it or pick another with --port")]
    PortInUse { port: u16 },
    #[error("{0}")]
    Conflict(String),
    #[error("Docker refused the request ({status}: {message}); `lab doctor` checks the daemon and the images")]
    Refused { status: u16, message: String },
    #[error("building {tag} failed ({reason}); see the lines above, and check Docker's disk space with `docker system df`")]
    BuildFailed { tag: String, reason: String },
    #[error("Docker could not load the images ({0}); the file may be damaged: copy it again, or build the images with `lab images build`")]
    LoadFailed(String),
    #[error(
        "cannot pack files for a container ({0}); check the free space in the temporary directory"
    )]
    Archive(String),
    #[error("unexpected answer from Docker ({0}); `lab doctor` shows the daemon's version (20.10 or newer is needed)")]
    Unexpected(String),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// A port a container publishes on the host's loopback interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// A short name for `lab status`: http, admin, postgres, redis.
    pub name: String,
    pub container_port: u16,
    /// 0 asks Docker for a free ephemeral port.
    pub host_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// Everything needed to create one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    /// The Docker name, e.g. `lab-server-1`.
    pub name: String,
    /// The name other containers use to reach it on the lab network, e.g. `server-1`.
    pub alias: String,
    pub image: String,
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    /// (volume name, mount path)
    pub volumes: Vec<(String, String)>,
    pub network: String,
    pub healthcheck: Option<Healthcheck>,
    pub cpus: Option<f64>,
    pub memory: Option<i64>,
    pub cap_add: Vec<String>,
    /// Files written into the container before it starts: (absolute path, contents).
    pub files: Vec<(String, String)>,
    /// Seconds Docker waits after SIGTERM before SIGKILL on stop.
    pub stop_timeout: Option<i64>,
    /// Settings kept in `files` that still need a new container when they
    /// change; only the configuration hash reads it.
    pub hashed_extra: Option<String>,
    /// A fixed IPv4 address on the lab network, outside the range Docker
    /// allocates from (None: Docker picks one).
    pub ipv4: Option<String>,
}

/// A container's state as Docker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    #[serde(rename = "unknown")]
    Other,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Restarting => "restarting",
            State::Exited => "exited",
            State::Dead => "dead",
            State::Other => "unknown",
        }
    }
}

/// A container's own health check, as Docker last ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The image has no health check.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// What the runtime reports about an existing container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub health: Health,
    /// The health check Docker runs in it, as Docker stores it
    /// (`["CMD", "pg_isready", ...]` or `["CMD-SHELL", "..."]`); empty
    /// when it has none. [`crate::readiness`] runs it itself.
    pub health_test: Vec<String>,
    /// container port -> "127.0.0.1:49153"
    pub ports: BTreeMap<u16, String>,
    /// Networks the container is attached to right now.
    pub networks: Vec<String>,
    /// Limits as set now (they can change live).
    pub cpus: Option<f64>,
    pub memory: Option<i64>,
    /// The host CPUs it may run on, e.g. "0" or "0-1" (None: any).
    pub cpuset: Option<String>,
}

impl ContainerInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Resource use of one container at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: u64,
    /// Percentage of one CPU, as `docker stats` shows it.
    pub cpu_percent: f64,
    /// CPU time the container has used since it started, in nanoseconds:
    /// two readings give its CPU over any window, where `cpu_percent` is
    /// Docker's own sample of about a second.
    pub cpu_total_ns: u64,
}

/// What the daemon says about itself: enough for `lab doctor` to tell a
/// student which Docker they have and where it keeps its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonInfo {
    pub server_version: String,
    /// The kernel the containers run on (a VM's on Docker Desktop).
    pub kernel_version: String,
    pub operating_system: String,
    /// Where images and volumes live, e.g. /var/lib/docker.
    pub root_dir: String,
    pub cpus: u32,
    pub memory_bytes: u64,
}

/// A tar stream of images in `docker save` format, either way.
pub type TarStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Progress of an image build: one line of the builder's output.
pub type BuildLog<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// The verbs orchestration needs from a container runtime.
#[async_trait]
pub trait Runtime: Send + Sync {
    async fn ping(&self) -> Result<()>;

    /// Containers (running or not) carrying every given label.
    async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>>;
    async fn create_container(&self, spec: &ContainerSpec) -> Result<()>;
    async fn start_container(&self, name: &str) -> Result<()>;
    /// Graceful: SIGTERM, then SIGKILL after `timeout`.
    async fn stop_container(&self, name: &str, timeout: Duration) -> Result<()>;
    async fn kill_container(&self, name: &str, signal: &str) -> Result<()>;
    async fn remove_container(&self, name: &str) -> Result<()>;
    async fn pause_container(&self, name: &str) -> Result<()>;
    async fn unpause_container(&self, name: &str) -> Result<()>;
    async fn update_resources(
        &self,
        name: &str,
        cpus: Option<f64>,
        memory: Option<i64>,
        cpuset: Option<&str>,
    ) -> Result<()>;
    /// Write files into a container (running or not).
    async fn write_files(&self, name: &str, files: &[(String, String)]) -> Result<()>;
    async fn exec(&self, name: &str, cmd: &[&str]) -> Result<ExecOutput>;
    /// Runs `cmd` to completion in a throw-away container of `image` that
    /// shares `target`'s network namespace and has only the capabilities
    /// given (never privileged). How `lab slow` reaches a service's network
    /// without giving the service itself NET_ADMIN.
    async fn run_in_netns(
        &self,
        target: &str,
        image: &str,
        cap_add: &[&str],
        labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput>;
    /// Runs `cmd` to completion in a throw-away container of `image` with
    /// no network at all and only the capabilities given (never
    /// privileged): how `lab doctor` tries what a service will need before
    /// any lab exists.
    async fn run_alone(
        &self,
        image: &str,
        cap_add: &[&str],
        labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput>;
    async fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<BoxStream<'static, Result<String>>>;
    async fn usage(&self, name: &str) -> Result<Usage>;

    async fn list_networks(&self, labels: &[(&str, &str)]) -> Result<Vec<ObjectInfo>>;
    async fn create_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()>;
    /// Creates a network with the given subnet, gateway and allocation range.
    async fn create_network_ipam(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        ipam: &NetworkIpam,
    ) -> Result<()>;
    /// A network's first IPv4 subnet, as Docker allocated or was told it.
    async fn network_ipam(&self, name: &str) -> Result<Option<NetworkIpam>>;
    async fn remove_network(&self, name: &str) -> Result<()>;
    async fn connect_network(&self, network: &str, container: &str, alias: &str) -> Result<()>;
    async fn disconnect_network(&self, network: &str, container: &str) -> Result<()>;

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<ObjectInfo>>;
    async fn create_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()>;
    async fn remove_volume(&self, name: &str) -> Result<()>;

    async fn image(&self, tag: &str) -> Result<Option<ImageInfo>>;
    /// Build an image from a tar'd build context holding a Dockerfile.
    async fn build_image(&self, tag: &str, context: Vec<u8>, log: BuildLog<'_>) -> Result<()>;

    /// The daemon's version, kernel, data directory and machine size.
    async fn daemon_info(&self) -> Result<DaemonInfo>;
    /// Every image named, with their shared layers once, as one tar stream
    /// (what `docker save` writes).
    async fn export_images(&self, tags: &[String]) -> Result<TarStream>;
    /// Loads a stream made by [`Runtime::export_images`] (what `docker load`
    /// reads); returns the daemon's lines, e.g. `Loaded image: NAME`.
    async fn import_images(&self, tar: TarStream) -> Result<Vec<String>>;
}
