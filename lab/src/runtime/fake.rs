//! An in-memory [`Runtime`] for unit tests of the orchestration logic.
//!
//! It keeps containers, networks and volumes in maps, answers label
//! queries the way Docker does, and records every call so a test can assert
//! what the orchestrator did ("the second `up` created nothing").

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use super::{
    BuildLog, ContainerInfo, ContainerSpec, DaemonInfo, ExecOutput, Health, ImageInfo, NetworkIpam,
    ObjectInfo, Result, Runtime, RuntimeError, State, TarStream, Usage,
};

#[derive(Default, Debug)]
struct Inner {
    containers: BTreeMap<String, (ContainerSpec, ContainerInfo)>,
    networks: BTreeMap<String, BTreeMap<String, String>>,
    ipams: BTreeMap<String, NetworkIpam>,
    next_subnet: u8,
    /// What `exec` answers on stdout, per container name.
    exec_stdout: BTreeMap<String, String>,
    /// The exit code `exec` answers, per container name (0 if not set).
    exec_code: BTreeMap<String, i64>,
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    images: BTreeMap<String, ImageInfo>,
    calls: Vec<String>,
    next_port: u16,
    daemon: DaemonInfo,
}

/// See the module comment.
#[derive(Default, Debug)]
pub struct FakeRuntime {
    inner: Mutex<Inner>,
}

fn matches(labels: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| labels.get(*k).is_some_and(|x| x == v))
}

/// Networks or volumes (name -> labels) carrying every wanted label.
fn objects(
    map: &BTreeMap<String, BTreeMap<String, String>>,
    want: &[(&str, &str)],
) -> Vec<ObjectInfo> {
    map.iter()
        .filter(|(_, l)| matches(l, want))
        .map(|(n, l)| ObjectInfo {
            name: n.clone(),
            labels: l.clone(),
        })
        .collect()
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test must not poison the others' view.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call made so far, e.g. `create lab-server-1`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Make `exec` in this container exit with `code`.
    pub fn set_exec_code(&self, name: &str, code: i64) {
        self.lock().exec_code.insert(name.to_string(), code);
    }

    /// Set a container's health as Docker would report it.
    pub fn set_health(&self, name: &str, health: Health) {
        if let Some((_, i)) = self.lock().containers.get_mut(name) {
            i.health = health;
        }
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Pretend an image exists with these labels.
    pub fn add_image(&self, tag: &str, labels: &[(&str, &str)]) {
        self.lock().images.insert(
            tag.to_string(),
            ImageInfo {
                id: format!("sha256:{tag}"),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    /// Pretend the daemon describes itself this way.
    pub fn set_daemon_info(&self, info: DaemonInfo) {
        self.lock().daemon = info;
    }

    /// Forget an image, as `docker rmi` would.
    pub fn remove_image(&self, tag: &str) {
        self.lock().images.remove(tag);
    }

    /// The spec a container was created with.
    pub fn spec(&self, name: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(name).map(|(s, _)| s.clone())
    }

    /// Force a container's state, as a crash or Docker itself would.
    /// What `exec` in the container `name` prints from now on.
    pub fn set_exec_stdout(&self, name: &str, stdout: &str) {
        self.lock()
            .exec_stdout
            .insert(name.to_string(), stdout.to_string());
    }

    pub fn set_state(&self, name: &str, state: State) {
        if let Some((_, i)) = self.lock().containers.get_mut(name) {
            i.state = state;
        }
    }

    fn record(&self, call: String) {
        self.lock().calls.push(call);
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut ContainerInfo) -> T) -> Result<T> {
        let mut g = self.lock();
        let (_, info) = g
            .containers
            .get_mut(name)
            .ok_or_else(|| RuntimeError::NotFound(name.to_string()))?;
        Ok(f(info))
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn list_containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|(_, i)| matches(&i.labels, labels))
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<()> {
        self.record(format!("create {}", spec.name));
        let mut g = self.lock();
        if g.containers.contains_key(&spec.name) {
            return Err(RuntimeError::Conflict(format!("{} exists", spec.name)));
        }
        if !g.images.contains_key(&spec.image) {
            return Err(RuntimeError::NotFound(format!("image {}", spec.image)));
        }
        let mut ports = BTreeMap::new();
        for p in &spec.ports {
            g.next_port += 1;
            let host = if p.host_port == 0 {
                40000 + g.next_port
            } else {
                p.host_port
            };
            ports.insert(p.container_port, format!("127.0.0.1:{host}"));
        }
        let info = ContainerInfo {
            id: format!("id-{}", spec.name),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: State::Created,
            health: Health::None,
            health_test: spec
                .healthcheck
                .as_ref()
                .map(|h| h.test.clone())
                .unwrap_or_default(),
            ports,
            networks: vec![spec.network.clone()],
            cpus: spec.cpus,
            memory: spec.memory,
            cpuset: None,
        };
        g.containers.insert(spec.name.clone(), (spec.clone(), info));
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<()> {
        self.record(format!("start {name}"));
        self.with(name, |i| {
            i.state = State::Running;
            i.health = Health::Healthy;
        })
    }

    async fn stop_container(&self, name: &str, _timeout: Duration) -> Result<()> {
        self.record(format!("stop {name}"));
        self.with(name, |i| i.state = State::Exited)
    }

    async fn kill_container(&self, name: &str, signal: &str) -> Result<()> {
        self.record(format!("kill {name} {signal}"));
        self.with(name, |i| i.state = State::Exited)
    }

    async fn remove_container(&self, name: &str) -> Result<()> {
        self.record(format!("remove {name}"));
        self.lock().containers.remove(name);
        Ok(())
    }

    async fn pause_container(&self, name: &str) -> Result<()> {
        self.record(format!("pause {name}"));
        self.with(name, |i| i.state = State::Paused)
    }

    async fn unpause_container(&self, name: &str) -> Result<()> {
        self.record(format!("unpause {name}"));
        self.with(name, |i| i.state = State::Running)
    }

    async fn update_resources(
        &self,
        name: &str,
        cpus: Option<f64>,
        memory: Option<i64>,
        cpuset: Option<&str>,
    ) -> Result<()> {
        self.record(format!("update {name}"));
        self.with(name, |i| {
            i.cpus = cpus.or(i.cpus);
            i.memory = memory.or(i.memory);
            i.cpuset = cpuset.map(str::to_string).or(i.cpuset.clone());
        })
    }

    async fn write_files(&self, name: &str, files: &[(String, String)]) -> Result<()> {
        self.record(format!("write {name} {}", files.len()));
        self.with(name, |_| ())
    }

    async fn exec(&self, name: &str, cmd: &[&str]) -> Result<ExecOutput> {
        self.record(format!("exec {name} {}", cmd.join(" ")));
        let stdout = self
            .lock()
            .exec_stdout
            .get(name)
            .cloned()
            .unwrap_or_default();
        let code = self.lock().exec_code.get(name).copied().unwrap_or(0);
        self.with(name, |_| ExecOutput {
            code,
            stdout,
            ..ExecOutput::default()
        })
    }

    async fn run_in_netns(
        &self,
        target: &str,
        _image: &str,
        cap_add: &[&str],
        _labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput> {
        self.record(format!(
            "netns {target} [{}] {}",
            cap_add.join(","),
            cmd.join(" ")
        ));
        self.with(target, |_| ExecOutput::default())
    }

    async fn run_alone(
        &self,
        image: &str,
        cap_add: &[&str],
        _labels: &BTreeMap<String, String>,
        cmd: &[&str],
    ) -> Result<ExecOutput> {
        self.record(format!(
            "alone {image} [{}] {}",
            cap_add.join(","),
            cmd.join(" ")
        ));
        Ok(ExecOutput::default())
    }

    async fn logs(
        &self,
        name: &str,
        _follow: bool,
        _tail: Option<u32>,
    ) -> Result<BoxStream<'static, Result<String>>> {
        self.with(name, |_| ())?;
        Ok(stream::iter(vec![Ok(format!("{name} started\n"))]).boxed())
    }

    async fn usage(&self, name: &str) -> Result<Usage> {
        self.with(name, |_| Usage {
            memory_bytes: 10 << 20,
            cpu_percent: 1.0,
            cpu_total_ns: 0,
        })
    }

    async fn list_networks(&self, labels: &[(&str, &str)]) -> Result<Vec<ObjectInfo>> {
        Ok(objects(&self.lock().networks, labels))
    }

    async fn create_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.record(format!("create network {name}"));
        self.lock()
            .networks
            .insert(name.to_string(), labels.clone());
        Ok(())
    }

    async fn create_network_ipam(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        ipam: &NetworkIpam,
    ) -> Result<()> {
        self.record(format!(
            "create network {name} {} {}",
            ipam.subnet,
            ipam.ip_range.as_deref().unwrap_or("-")
        ));
        let mut inner = self.lock();
        inner.networks.insert(name.to_string(), labels.clone());
        inner.ipams.insert(name.to_string(), ipam.clone());
        Ok(())
    }

    async fn network_ipam(&self, name: &str) -> Result<Option<NetworkIpam>> {
        let mut inner = self.lock();
        if !inner.networks.contains_key(name) {
            return Err(RuntimeError::NotFound(name.to_string()));
        }
        // Like Docker's default pools: each network its own /16.
        if !inner.ipams.contains_key(name) {
            inner.next_subnet = inner.next_subnet.wrapping_add(1);
            let n = 17 + inner.next_subnet % 14;
            inner.ipams.insert(
                name.to_string(),
                NetworkIpam {
                    subnet: format!("172.{n}.0.0/16"),
                    gateway: Some(format!("172.{n}.0.1")),
                    ip_range: None,
                },
            );
        }
        Ok(inner.ipams.get(name).cloned())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.record(format!("remove network {name}"));
        let mut inner = self.lock();
        inner.networks.remove(name);
        inner.ipams.remove(name);
        Ok(())
    }

    async fn connect_network(&self, network: &str, container: &str, _alias: &str) -> Result<()> {
        self.record(format!("connect {network} {container}"));
        let net = network.to_string();
        self.with(container, |i| {
            if !i.networks.contains(&net) {
                i.networks.push(net)
            }
        })
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> Result<()> {
        self.record(format!("disconnect {network} {container}"));
        self.with(container, |i| i.networks.retain(|n| n != network))
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<ObjectInfo>> {
        Ok(objects(&self.lock().volumes, labels))
    }

    async fn create_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.record(format!("create volume {name}"));
        self.lock().volumes.insert(name.to_string(), labels.clone());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.record(format!("remove volume {name}"));
        self.lock().volumes.remove(name);
        Ok(())
    }

    async fn image(&self, tag: &str) -> Result<Option<ImageInfo>> {
        Ok(self.lock().images.get(tag).cloned())
    }

    async fn build_image(&self, tag: &str, _context: Vec<u8>, log: BuildLog<'_>) -> Result<()> {
        self.record(format!("build {tag}"));
        log("Step 1/1");
        self.add_image(tag, &[]);
        Ok(())
    }

    async fn daemon_info(&self) -> Result<DaemonInfo> {
        Ok(self.lock().daemon.clone())
    }

    /// A real tar, one JSON member per image (tag, id, labels), so what
    /// goes through a bundle can be checked member by member.
    async fn export_images(&self, tags: &[String]) -> Result<TarStream> {
        self.record(format!("export {}", tags.join(" ")));
        let mut b = tar::Builder::new(Vec::new());
        for tag in tags {
            let info = self
                .lock()
                .images
                .get(tag)
                .cloned()
                .ok_or_else(|| RuntimeError::NotFound(format!("image {tag}")))?;
            let doc = serde_json::json!({"tag": tag, "id": info.id, "labels": info.labels});
            let data = doc.to_string().into_bytes();
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(
                &mut h,
                format!("{}.json", tag.replace(['/', ':'], "_")),
                &data[..],
            )
            .map_err(|e| RuntimeError::Archive(e.to_string()))?;
        }
        let tar = b
            .into_inner()
            .map_err(|e| RuntimeError::Archive(e.to_string()))?;
        // Several chunks, as a daemon would send them.
        let chunks: Vec<std::io::Result<bytes::Bytes>> = tar
            .chunks(1000)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        Ok(stream::iter(chunks).boxed())
    }

    async fn import_images(&self, mut tar: TarStream) -> Result<Vec<String>> {
        let mut data = Vec::new();
        while let Some(chunk) = tar.next().await {
            data.extend_from_slice(&chunk.map_err(|e| RuntimeError::LoadFailed(e.to_string()))?);
        }
        let mut loaded = Vec::new();
        let mut archive = tar::Archive::new(&data[..]);
        let bad = |e: std::io::Error| RuntimeError::LoadFailed(e.to_string());
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(bad)?;
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| RuntimeError::LoadFailed(e.to_string()))?;
            let tag = doc["tag"].as_str().unwrap_or_default().to_string();
            let labels = doc["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let id = doc["id"].as_str().unwrap_or_default().to_string();
            self.lock()
                .images
                .insert(tag.clone(), ImageInfo { id, labels });
            loaded.push(format!("Loaded image: {tag}"));
        }
        self.record(format!("import {}", loaded.len()));
        Ok(loaded)
    }
}
