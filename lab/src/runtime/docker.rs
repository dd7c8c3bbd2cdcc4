//! [`Runtime`] on a real Docker daemon, through bollard.
//!
//! This is the only file of the project that speaks the Docker API. It
//! translates the lab's small vocabulary (a [`ContainerSpec`], a label
//! filter) into API calls and Docker's answers back into plain structs, and
//! it turns Docker's errors into ones a student can act on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, EndpointIpamConfig, EndpointSettings, HealthConfig,
    HealthStatusEnum, HostConfig, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig, PortBinding, VolumeCreateOptions,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ImportImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{
    labels, BuildLog, ContainerInfo, ContainerSpec, DaemonInfo, ExecOutput, Health, ImageInfo,
    NetworkIpam, ObjectInfo, Result, Runtime, RuntimeError, State, TarStream, Usage,
};

/// A connection to the local Docker daemon.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// One command in a container made for it and removed after, whatever
    /// happens: `network` is Docker's network mode (`none`,
    /// `container:NAME`). Errors name the container whose network it shares,
    /// or the helper itself.
    async fn run_throwaway(
        &self,
        name: &str,
        image: &str,
        network: &str,
        cap_add: &[&str],
        labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput> {
        let subject = network.strip_prefix("container:").unwrap_or(name);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            labels: Some(to_hash(labels)),
            user: Some("root".into()),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_string()),
                cap_add: Some(cap_add.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| map_err(e, subject))?;
        // Whatever happens next, the helper must not outlive this call.
        let result = async {
            self.start_container(name).await?;
            let code = self
                .docker
                .wait_container(
                    name,
                    None::<bollard::query_parameters::WaitContainerOptions>,
                )
                .next()
                .await
                .map(|r| match r {
                    Ok(w) => w.status_code,
                    // bollard reports a non-zero exit as an error carrying the code.
                    Err(BollardError::DockerContainerWaitError { code, .. }) => code,
                    Err(_) => -1,
                })
                .unwrap_or(-1);
            let mut out = ExecOutput {
                code,
                ..Default::default()
            };
            let opts = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build();
            let mut logs = self.docker.logs(name, Some(opts));
            while let Some(chunk) = logs.next().await {
                match chunk.map_err(|e| map_err(e, name))? {
                    LogOutput::StdErr { message } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    other => out
                        .stdout
                        .push_str(&String::from_utf8_lossy(&other.into_bytes())),
                }
            }
            Ok(out)
        }
        .await;
        let _ = self.remove_container(name).await;
        result
    }

    /// Connects with the usual defaults (DOCKER_HOST or the local socket) and
    /// agrees on an API version the daemon speaks, so an older Docker works.
    pub async fn connect() -> Result<DockerRuntime> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unreachable(short(&e)))?;
        Ok(DockerRuntime { docker })
    }
}

fn short(e: &BollardError) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().to_string()
}

/// Docker's errors, translated. `what` names the object for "not found".
fn map_err(e: BollardError, what: &str) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => RuntimeError::NotFound(what.to_string()),
            409 => RuntimeError::Conflict(message),
            _ if message.contains("port is already allocated")
                || message.contains("address already in use") =>
            {
                let port = message
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|p| p.parse::<u16>().ok())
                    .rfind(|p| *p > 0)
                    .unwrap_or(0);
                RuntimeError::PortInUse { port }
            }
            status => RuntimeError::Refused { status, message },
        },
        BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::SocketNotFoundError(_)
        | BollardError::RequestTimeoutError => RuntimeError::Unreachable(short(&e)),
        other => RuntimeError::Unexpected(short(&other)),
    }
}

impl DockerRuntime {
    /// A bridge network of the lab, with Docker's addresses or the given ones.
    async fn create_bridge(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        ipam: Option<Ipam>,
    ) -> Result<()> {
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(to_hash(labels)),
            ipam,
            ..Default::default()
        };
        self.docker
            .create_network(req)
            .await
            .map(|_| ())
            .map_err(|e| map_err(e, name))
    }
}

fn label_filter(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let v = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_string(), v)])
}

/// The endpoint settings that pin a container's address, when it has one.
fn fixed_address(ipv4: Option<&str>) -> Option<EndpointIpamConfig> {
    ipv4.map(|ip| EndpointIpamConfig {
        ipv4_address: Some(ip.to_string()),
        ..Default::default()
    })
}

fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A tar archive of files at absolute paths, for the archive endpoint
/// (which extracts it at `/`).
fn tar_of(files: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(contents.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path.trim_start_matches('/'), contents.as_bytes())?;
    }
    b.into_inner()
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::Unreachable(short(&e)))
    }

    async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>> {
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&label_filter(labels))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| map_err(e, "containers"))?;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let Some(id) = c.id else { continue };
            // The summary lacks health and limits; inspect has them. A
            // container removed between the two calls is simply skipped.
            let i = match self
                .docker
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Ok(i) => i,
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(map_err(e, &id)),
            };
            let st = i.state.unwrap_or_default();
            let state = if st.paused == Some(true) {
                State::Paused
            } else if st.restarting == Some(true) {
                State::Restarting
            } else if st.running == Some(true) {
                State::Running
            } else if st.dead == Some(true) {
                State::Dead
            } else {
                match st.status.map(|s| s.to_string()).as_deref() {
                    Some("created") => State::Created,
                    Some("exited") => State::Exited,
                    _ => State::Other,
                }
            };
            let health = match st.health.and_then(|h| h.status) {
                Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
                Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
                Some(HealthStatusEnum::STARTING) => Health::Starting,
                _ => Health::None,
            };
            let ns = i.network_settings.unwrap_or_default();
            let mut ports = BTreeMap::new();
            for (k, v) in ns.ports.unwrap_or_default() {
                let Some(port) = k.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
                    continue;
                };
                if let Some(b) = v.and_then(|b| b.into_iter().next()) {
                    let ip = b.host_ip.unwrap_or_else(|| "127.0.0.1".into());
                    ports.insert(port, format!("{ip}:{}", b.host_port.unwrap_or_default()));
                }
            }
            let mut networks: Vec<String> = ns.networks.unwrap_or_default().into_keys().collect();
            networks.sort();
            let hc = i.host_config.unwrap_or_default();
            let health_test = i
                .config
                .and_then(|c| c.healthcheck)
                .and_then(|h| h.test)
                .unwrap_or_default();
            out.push(ContainerInfo {
                id,
                name: i
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state,
                health,
                health_test,
                ports,
                networks,
                cpus: hc.nano_cpus.filter(|n| *n > 0).map(|n| n as f64 / 1e9),
                memory: hc.memory.filter(|m| *m > 0),
                cpuset: hc.cpuset_cpus.filter(|s| !s.is_empty()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<()> {
        let mut exposed = HashMap::new();
        let mut bindings = HashMap::new();
        for p in &spec.ports {
            let key = format!("{}/tcp", p.container_port);
            exposed.insert(key.clone(), HashMap::new());
            // Loopback only: a classroom network must never reach a lab.
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(if p.host_port == 0 {
                        String::new()
                    } else {
                        p.host_port.to_string()
                    }),
                }]),
            );
        }
        let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(h.interval.as_nanos() as i64),
            timeout: Some(h.timeout.as_nanos() as i64),
            retries: Some(h.retries as i64),
            start_period: Some(h.start_period.as_nanos() as i64),
            start_interval: None,
        });
        let mut container_labels = to_hash(&spec.labels);
        if let Some(ip) = &spec.ipv4 {
            // Remembered so that healing a partition reconnects with it.
            container_labels.insert(labels::IPV4.to_string(), ip.clone());
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            hostname: Some(spec.alias.clone()),
            cmd: spec.cmd.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(container_labels),
            exposed_ports: Some(exposed),
            healthcheck,
            stop_timeout: spec.stop_timeout,
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: Some(
                    spec.volumes
                        .iter()
                        .map(|(v, path)| format!("{v}:{path}"))
                        .collect(),
                ),
                nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
                memory: spec.memory,
                cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
                init: Some(true),
                network_mode: Some(spec.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![spec.alias.clone()]),
                        ipam_config: fixed_address(spec.ipv4.as_deref()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| match map_err(e, &spec.image) {
                RuntimeError::NotFound(_) => {
                    RuntimeError::NotFound(format!("image {} (run `lab images build`)", spec.image))
                }
                other => other,
            })?;
        if !spec.files.is_empty() {
            self.write_files(&spec.name, &spec.files).await?;
        }
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<()> {
        self.docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| map_err(e, name))
    }

    async fn stop_container(&self, name: &str, timeout: Duration) -> Result<()> {
        let opts = StopContainerOptionsBuilder::default()
            .t(timeout.as_secs() as i32)
            .build();
        match self.docker.stop_container(name, Some(opts)).await {
            // 304: already stopped, which is what we wanted.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            r => r.map_err(|e| map_err(e, name)),
        }
    }

    async fn kill_container(&self, name: &str, signal: &str) -> Result<()> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(name, Some(opts))
            .await
            .map_err(|e| map_err(e, name))
    }

    async fn remove_container(&self, name: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(opts)).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            r => r.map_err(|e| map_err(e, name)),
        }
    }

    async fn pause_container(&self, name: &str) -> Result<()> {
        self.docker
            .pause_container(name)
            .await
            .map_err(|e| map_err(e, name))
    }

    async fn unpause_container(&self, name: &str) -> Result<()> {
        self.docker
            .unpause_container(name)
            .await
            .map_err(|e| map_err(e, name))
    }

    async fn update_resources(
        &self,
        name: &str,
        cpus: Option<f64>,
        memory: Option<i64>,
        cpuset: Option<&str>,
    ) -> Result<()> {
        let body = ContainerUpdateBody {
            nano_cpus: cpus.map(|c| (c * 1e9) as i64),
            cpuset_cpus: cpuset.map(str::to_string),
            memory,
            // Docker refuses a memory limit above an older swap limit; tying
            // swap to memory keeps the change valid in both directions.
            memory_swap: memory,
            ..Default::default()
        };
        self.docker
            .update_container(name, body)
            .await
            .map_err(|e| map_err(e, name))
    }

    async fn write_files(&self, name: &str, files: &[(String, String)]) -> Result<()> {
        let tar = tar_of(files).map_err(|e| RuntimeError::Archive(e.to_string()))?;
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(name, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(|e| map_err(e, name))
    }

    async fn exec(&self, name: &str, cmd: &[&str]) -> Result<ExecOutput> {
        let created = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(e, name))?;
        let mut out = ExecOutput::default();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| map_err(e, name))?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| map_err(e, name))? {
                    LogOutput::StdOut { message } => {
                        out.stdout.push_str(&String::from_utf8_lossy(&message))
                    }
                    LogOutput::StdErr { message } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    _ => {}
                }
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| map_err(e, name))?;
        out.code = inspect.exit_code.unwrap_or(-1);
        Ok(out)
    }

    async fn run_in_netns(
        &self,
        target: &str,
        image: &str,
        cap_add: &[&str],
        labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput> {
        let name = format!("{target}-netns-{}", std::process::id());
        let network = format!("container:{target}");
        self.run_throwaway(&name, image, &network, cap_add, labels, cmd)
            .await
    }

    async fn run_alone(
        &self,
        image: &str,
        cap_add: &[&str],
        labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput> {
        let name = format!("scaling-lab-check-{}", std::process::id());
        self.run_throwaway(&name, image, "none", cap_add, labels, cmd)
            .await
    }

    async fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<BoxStream<'static, Result<String>>> {
        // Fail early and clearly when the container is gone.
        self.docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| map_err(e, name))?;
        let opts = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail.map(|t| t.to_string()).unwrap_or_else(|| "all".into()))
            .build();
        let owned = name.to_string();
        let s = self
            .docker
            .logs(name, Some(opts))
            .map_ok(|chunk| String::from_utf8_lossy(&chunk.into_bytes()).into_owned())
            .map_err(move |e| map_err(e, &owned));
        Ok(s.boxed())
    }

    async fn usage(&self, name: &str) -> Result<Usage> {
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(false)
            .build();
        let s = self
            .docker
            .stats(name, Some(opts))
            .next()
            .await
            .ok_or_else(|| RuntimeError::NotFound(name.to_string()))?
            .map_err(|e| map_err(e, name))?;
        let mem = s.memory_stats.unwrap_or_default();
        // Like `docker stats`: usage minus the page cache the kernel could drop.
        let cache = mem
            .stats
            .as_ref()
            .and_then(|m| {
                m.get("inactive_file")
                    .or_else(|| m.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        let memory_bytes = mem.usage.unwrap_or(0).saturating_sub(cache);
        let cpu = s.cpu_stats.unwrap_or_default();
        let pre = s.precpu_stats.unwrap_or_default();
        let total = |c: &bollard::models::ContainerCpuStats| {
            c.cpu_usage
                .as_ref()
                .and_then(|u| u.total_usage)
                .unwrap_or(0)
        };
        let d_cpu = total(&cpu).saturating_sub(total(&pre)) as f64;
        let d_sys = cpu
            .system_cpu_usage
            .unwrap_or(0)
            .saturating_sub(pre.system_cpu_usage.unwrap_or(0)) as f64;
        let online = cpu.online_cpus.unwrap_or(1).max(1) as f64;
        let cpu_percent = if d_sys > 0.0 {
            d_cpu / d_sys * online * 100.0
        } else {
            0.0
        };
        Ok(Usage {
            memory_bytes,
            cpu_percent,
            cpu_total_ns: total(&cpu),
        })
    }

    async fn list_networks(&self, labels: &[(&str, &str)]) -> Result<Vec<ObjectInfo>> {
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&label_filter(labels))
            .build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| map_err(e, "networks"))?;
        Ok(list
            .into_iter()
            .map(|n| ObjectInfo {
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    async fn create_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.create_bridge(name, labels, None).await
    }

    async fn create_network_ipam(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        ipam: &NetworkIpam,
    ) -> Result<()> {
        let ipam = Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(ipam.subnet.clone()),
                gateway: ipam.gateway.clone(),
                ip_range: ipam.ip_range.clone(),
                ..Default::default()
            }]),
            options: None,
        };
        self.create_bridge(name, labels, Some(ipam)).await
    }

    async fn network_ipam(&self, name: &str) -> Result<Option<NetworkIpam>> {
        let n = self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| map_err(e, name))?;
        Ok(n.ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let subnet = c.subnet?;
                // IPv4 only: keepalived's floating address is IPv4.
                (!subnet.contains(':')).then_some(NetworkIpam {
                    subnet,
                    gateway: c.gateway.filter(|g| !g.is_empty()),
                    ip_range: c.ip_range.filter(|r| !r.is_empty()),
                })
            })
            .next())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            r => r.map_err(|e| map_err(e, name)),
        }
    }

    async fn connect_network(&self, network: &str, container: &str, alias: &str) -> Result<()> {
        // A container made with a fixed address gets it back.
        let ipv4 = self
            .docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .and_then(|l| l.get(labels::IPV4).cloned());
        let req = NetworkConnectRequest {
            container: Some(container.to_string()),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(vec![alias.to_string()]),
                ipam_config: fixed_address(ipv4.as_deref()),
                ..Default::default()
            }),
        };
        self.docker
            .connect_network(network, req)
            .await
            .map_err(|e| map_err(e, network))
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> Result<()> {
        let req = NetworkDisconnectRequest {
            container: Some(container.to_string()),
            force: Some(true),
        };
        self.docker
            .disconnect_network(network, req)
            .await
            .map_err(|e| map_err(e, network))
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<ObjectInfo>> {
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&label_filter(labels))
            .build();
        let list = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| map_err(e, "volumes"))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| ObjectInfo {
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect())
    }

    async fn create_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        let req = VolumeCreateOptions {
            name: Some(name.to_string()),
            labels: Some(to_hash(labels)),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(|e| map_err(e, name))
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
        match self.docker.remove_volume(name, Some(opts)).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            r => r.map_err(|e| map_err(e, name)),
        }
    }

    async fn image(&self, tag: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(tag).await {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                labels: i
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(map_err(e, tag)),
        }
    }

    async fn build_image(&self, tag: &str, context: Vec<u8>, log: BuildLog<'_>) -> Result<()> {
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut s = self
            .docker
            .build_image(opts, None, Some(bollard::body_full(context.into())));
        while let Some(item) = s.next().await {
            let info = item.map_err(|e| match e {
                BollardError::DockerStreamError { error } => RuntimeError::BuildFailed {
                    tag: tag.to_string(),
                    reason: error,
                },
                e => map_err(e, tag),
            })?;
            if let Some(line) = info.stream {
                let line = line.trim_end();
                if !line.is_empty() {
                    log(line);
                }
            }
        }
        Ok(())
    }

    async fn daemon_info(&self) -> Result<DaemonInfo> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| map_err(e, "version"))?;
        let i = self.docker.info().await.map_err(|e| map_err(e, "info"))?;
        Ok(DaemonInfo {
            server_version: v.version.or(i.server_version).unwrap_or_default(),
            kernel_version: i.kernel_version.unwrap_or_default(),
            operating_system: i.operating_system.unwrap_or_default(),
            root_dir: i.docker_root_dir.unwrap_or_default(),
            cpus: i.ncpu.unwrap_or(0).max(0) as u32,
            memory_bytes: i.mem_total.unwrap_or(0).max(0) as u64,
        })
    }

    async fn export_images(&self, tags: &[String]) -> Result<TarStream> {
        // Docker answers 404 only once the stream starts; check first so a
        // missing image is named rather than reported as a broken stream.
        for tag in tags {
            if self.image(tag).await?.is_none() {
                return Err(RuntimeError::NotFound(format!("image {tag}")));
            }
        }
        let names: Vec<&str> = tags.iter().map(String::as_str).collect();
        let s = self
            .docker
            .export_images(&names)
            .map_err(|e| std::io::Error::other(short(&e)));
        Ok(s.boxed())
    }

    async fn import_images(&self, tar: TarStream) -> Result<Vec<String>> {
        let opts = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut s = self
            .docker
            .import_image(opts, bollard::body_try_stream(tar), None);
        let mut lines = Vec::new();
        while let Some(item) = s.next().await {
            let info = item.map_err(|e| match e {
                BollardError::DockerStreamError { error } => RuntimeError::LoadFailed(error),
                e => map_err(e, "images"),
            })?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::LoadFailed(e));
            }
            if let Some(line) = info.stream {
                let line = line.trim();
                if !line.is_empty() {
                    lines.push(line.to_string());
                }
            }
        }
        Ok(lines)
    }
}
