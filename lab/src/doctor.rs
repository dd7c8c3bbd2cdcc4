//! `lab doctor`: can this machine run the lab, and will its figures mean
//! anything?
//!
//! A lab needs three things to start at all: a Docker daemon that answers,
//! the lab's images for this very version, and a free loopback port for the
//! balancer. Anything less is a failure (exit 1). Other facts do not stop a
//! lab but change what a lesson measures, so they are warnings: a machine
//! already busy (a load average above its CPU count makes every latency
//! noisier), a CPU quota on the shell's own cgroup (the load driver runs
//! there), little memory or disk, a kernel without `tc netem`.
//!
//! Each check is a pure function of facts read once ([`Facts`]), so the
//! verdicts are unit-tested with made-up machines; [`gather`] reads the
//! real one. The outcome is data ([`Report`]), rendered to text or JSON.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle;
use crate::images::{Image, VERSION};
use crate::runtime::{labels, DaemonInfo, DockerRuntime, ImageInfo, Runtime};

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of `lab doctor`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it; present whenever the status is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            status: Status::Fail,
            ..Check::warn(name, detail, fix)
        }
    }
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ready,
    /// The lab runs; some figures may be off (see the warnings).
    Warnings,
    CannotRun,
}

/// The worst status decides.
pub fn verdict(checks: &[Check]) -> Verdict {
    if checks.iter().any(|c| c.status == Status::Fail) {
        Verdict::CannotRun
    } else if checks.iter().any(|c| c.status == Status::Warn) {
        Verdict::Warnings
    } else {
        Verdict::Ready
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub lab_version: String,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            lab_version: VERSION.into(),
            verdict: verdict(&checks),
            checks,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::CannotRun => 1,
            _ => 0,
        }
    }

    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("{mark}  {:width$}  {}", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!(" -> {fix}"));
            }
            out.push('\n');
        }
        out.push_str(match self.verdict {
            Verdict::Ready => "Ready: `lab up` should work here.\n",
            Verdict::Warnings => {
                "The lab can run; the warnings above may make some figures noisier.\n"
            }
            Verdict::CannotRun => {
                "The lab cannot run yet: fix the FAIL lines above, then run `lab doctor` again.\n"
            }
        });
        out
    }
}

/// Whether the kernel has `tc netem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Netem {
    Present(String),
    Absent(String),
    Unknown(String),
}

/// Whether two balancers could share a floating address here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vrrp {
    /// What keepalived needs was granted in a throw-away container; its
    /// version.
    Works(String),
    /// What failed, and why.
    Refused(String),
    /// Not tried (Docker unreachable, no base image): why.
    Untried(String),
}

/// What the throw-away container runs: the two capabilities keepalived
/// needs are granted (NET_ADMIN puts the floating address on an
/// interface, NET_RAW sends VRRP, IP protocol 112, on a raw socket), they
/// work, and keepalived is there. Each failure prints one line and exits
/// non-zero. It needs no network: an address goes on loopback and the raw
/// socket is only opened.
pub const VRRP_PROBE: &str = r#"capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
for cap in 12:NET_ADMIN 13:NET_RAW; do
  [ $(( (0x$capeff >> ${cap%%:*}) & 1 )) = 1 ] || { echo "Docker did not grant ${cap#*:} to the container"; exit 3; }
done
ip addr add 192.0.2.1/32 dev lo 2>/dev/null || { echo "NET_ADMIN was granted but adding an address failed"; exit 4; }
python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)' 2>/dev/null || { echo "NET_RAW was granted but a raw VRRP socket (IP protocol 112) could not be opened"; exit 5; }
keepalived --version 2>&1 | head -n 1"#;

/// A CPU limit, in CPUs, and the cgroup file that sets it.
#[derive(Clone, Debug, PartialEq)]
pub struct Quota {
    pub cpus: f64,
    pub source: String,
}

/// Everything the checks look at, read once.
#[derive(Clone, Debug)]
pub struct Facts {
    pub version: String,
    /// The lab `lab up` would start (`--lab`).
    pub lab: String,
    /// The daemon, or why it did not answer.
    pub docker: std::result::Result<DaemonInfo, String>,
    /// Each lab image's tag and what Docker has under it.
    pub images: Vec<(String, Option<ImageInfo>)>,
    pub port: u16,
    /// None: the port could be bound; Some(who): it is taken (who, if a lab).
    pub port_taken: Option<Option<String>>,
    pub cpus: usize,
    pub load1: Option<f64>,
    pub mem_available: Option<u64>,
    pub quota: Option<Quota>,
    pub host_kernel: String,
    pub netem: Netem,
    /// Free bytes where Docker keeps its data, if that place is visible here.
    pub disk_free: Option<u64>,
    pub vrrp: Vrrp,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB)
}

const DOCKER_FIX: &str = "start Docker (`sudo systemctl start docker`) or set DOCKER_HOST; on `permission denied`, add yourself to the docker group and log in again";

pub fn check_docker(f: &Facts) -> Check {
    match &f.docker {
        Ok(d) => Check::ok(
            "docker",
            format!(
                "Docker {} on {} (kernel {})",
                d.server_version, d.operating_system, d.kernel_version
            ),
        ),
        Err(e) => Check::fail("docker", format!("unreachable: {e}"), DOCKER_FIX),
    }
}

pub fn check_images(f: &Facts) -> Check {
    if f.docker.is_err() {
        return Check::fail(
            "images",
            "not checked: Docker is unreachable",
            "fix the docker line first",
        );
    }
    let mut missing = Vec::new();
    let mut hashes = Vec::new();
    for (tag, info) in &f.images {
        match info {
            Some(i) if i.labels.get(labels::VERSION) == Some(&f.version) => {
                let h = i.labels.get(labels::INPUT_HASH).map(String::as_str);
                hashes.push(format!(
                    "{}={}",
                    tag.split(['/', ':']).nth(1).unwrap_or(tag),
                    h.map(|h| &h[..h.len().min(8)]).unwrap_or("?")
                ));
            }
            Some(_) => missing.push(format!("{tag} (built for another version)")),
            None => missing.push(tag.clone()),
        }
    }
    if missing.is_empty() {
        Check::ok(
            "images",
            format!(
                "all {} for lab {} (inputs {})",
                f.images.len(),
                f.version,
                hashes.join(" ")
            ),
        )
    } else {
        Check::fail(
            "images",
            format!("missing {}", missing.join(", ")),
            format!(
                "`lab images load {}` from the class bundle, or `lab images build` in a checkout",
                bundle::default_file_name()
            ),
        )
    }
}

pub fn check_port(f: &Facts) -> Check {
    let addr = format!("127.0.0.1:{}", f.port);
    match &f.port_taken {
        _ if f.port == 0 => Check::ok("port", "0: `lab up` will pick a free port"),
        None => Check::ok("port", format!("{addr} is free for the balancer")),
        Some(Some(lab)) if *lab == f.lab => Check::ok(
            "port",
            format!("{addr} is lab {lab}'s balancer (that lab is up)"),
        ),
        Some(Some(lab)) => Check::fail(
            "port",
            format!("{addr} is taken by the balancer of another lab, {lab}"),
            format!("`lab --lab {lab} down`, or use `lab up --port 0` (any free port)"),
        ),
        Some(None) => Check::fail(
            "port",
            format!("{addr} is taken by another program"),
            format!(
                "find it with `ss -ltnp 'sport = :{}'` and stop it, or use `lab up --port 0` (any free port)",
                f.port
            ),
        ),
    }
}

pub fn check_cpu(f: &Facts) -> Check {
    let cpus = f.cpus.max(1);
    let docker_cpus = match &f.docker {
        Ok(d) if d.cpus as usize != cpus && d.cpus > 0 => format!(" (Docker has {})", d.cpus),
        _ => String::new(),
    };
    let Some(load) = f.load1 else {
        return Check::ok("cpu", format!("{cpus} CPUs{docker_cpus}, load unknown"));
    };
    let detail = format!("{cpus} CPUs{docker_cpus}, load {load:.2} over the last minute");
    if load > cpus as f64 {
        Check::warn(
            "cpu",
            format!("{detail}: busier than its cores, timing lessons get noisy"),
            "close other programs or wait for the load to fall below the CPU count",
        )
    } else {
        Check::ok("cpu", detail)
    }
}

/// A lab at rest takes about 130 MiB (bench/README.md); lessons add
/// replicas and load, so below 1 GiB available the kernel may start killing.
pub fn check_memory(f: &Facts) -> Check {
    match f.mem_available {
        None => Check::ok("memory", "unknown (no /proc/meminfo)"),
        Some(m) if (m as f64) < GIB => Check::warn(
            "memory",
            format!("{} available", gib(m)),
            "close programs: the lessons want about 1 GiB free",
        ),
        Some(m) => Check::ok("memory", format!("{} available", gib(m))),
    }
}

pub fn check_quota(f: &Facts) -> Check {
    match &f.quota {
        None => Check::ok("cgroup", "no CPU quota on this shell's cgroup"),
        Some(q) => Check::warn(
            "cgroup",
            format!(
                "this shell may use {:.2} CPUs ({}): `lab load` runs here and is capped",
                q.cpus, q.source
            ),
            "run the lab from a shell without a CPU quota to measure the lab, not the cap",
        ),
    }
}

pub fn check_netem(f: &Facts) -> Check {
    let remote = match &f.docker {
        Ok(d) if !d.kernel_version.is_empty() && d.kernel_version != f.host_kernel => {
            Some(d.kernel_version.clone())
        }
        _ => None,
    };
    if let Some(k) = remote {
        return Check::ok(
            "netem",
            format!(
                "Docker runs on another kernel ({k}, a VM): checked when `lab slow --netem` runs"
            ),
        );
    }
    match &f.netem {
        Netem::Present(how) => Check::ok("netem", format!("tc netem available ({how})")),
        Netem::Unknown(why) => Check::ok(
            "netem",
            format!("unknown ({why}): checked when `lab slow --netem` runs"),
        ),
        Netem::Absent(why) => Check::warn(
            "netem",
            format!("no tc netem in this kernel ({why}): the lab delays traffic through its own fault proxy; packet loss is unavailable"),
            "nothing needed for the lessons; for loss, a kernel with sch_netem (`sudo modprobe sch_netem`, or linux-modules-extra)",
        ),
    }
}

/// Two balancers sharing a floating address (`--balancers 2`) need Docker
/// to grant their containers NET_ADMIN and NET_RAW ([`VRRP_PROBE`] tries
/// both). Where it does not (rootless Docker, a policy), one balancer still
/// works: a warning, not a failure.
pub fn check_vrrp(f: &Facts) -> Check {
    match &f.vrrp {
        Vrrp::Works(version) => Check::ok(
            "vrrp",
            format!("NET_ADMIN and NET_RAW granted and working ({version}): `--balancers 2` can run"),
        ),
        Vrrp::Refused(why) => Check::warn(
            "vrrp",
            format!("{why}: `lab up --balancers 2` cannot run here"),
            "use one balancer (the default), or a Docker that grants capabilities to containers (rootful Docker Engine)",
        ),
        Vrrp::Untried(why) => Check::ok("vrrp", format!("not tried: {why}")),
    }
}

/// The images take about 1 GiB once loaded; databases and logs grow.
pub fn check_disk(f: &Facts) -> Check {
    let dir = match &f.docker {
        Ok(d) if !d.root_dir.is_empty() => d.root_dir.clone(),
        Ok(_) => return Check::ok("disk", "Docker did not say where it keeps its data"),
        Err(_) => return Check::ok("disk", "not checked: Docker is unreachable"),
    };
    match f.disk_free {
        None => Check::ok(
            "disk",
            format!("{dir} is not visible from here (Docker runs in a VM)"),
        ),
        Some(free) if (free as f64) < 3.0 * GIB => Check::warn(
            "disk",
            format!("{} free in {dir}", gib(free)),
            "free some space: `docker system prune` removes stopped containers and unused images",
        ),
        Some(free) => Check::ok("disk", format!("{} free in {dir}", gib(free))),
    }
}

/// Every check, in the order a student should fix them.
pub fn checks(f: &Facts) -> Vec<Check> {
    vec![
        check_docker(f),
        check_images(f),
        check_port(f),
        check_cpu(f),
        check_memory(f),
        check_quota(f),
        check_netem(f),
        check_vrrp(f),
        check_disk(f),
    ]
}

/// The first field of /proc/loadavg: the 1-minute load average.
pub fn parse_loadavg(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

/// MemAvailable from /proc/meminfo, in bytes.
pub fn parse_meminfo(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// cgroup v2's cpu.max: "max 100000" (no limit) or "150000 100000" (1.5 CPUs).
pub fn parse_cpu_max(s: &str) -> Option<Option<f64>> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" {
        return Some(None);
    }
    let quota: f64 = quota.parse().ok()?;
    (period > 0.0).then_some(Some(quota / period))
}

/// cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (-1: no limit).
pub fn parse_cfs(quota: &str, period: &str) -> Option<Option<f64>> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    if q < 0 {
        return Some(None);
    }
    (p > 0).then_some(Some(q as f64 / p as f64))
}

/// The process's cgroup paths from /proc/self/cgroup: the unified (v2)
/// path, and the v1 path of the `cpu` controller, if any.
pub fn parse_self_cgroup(s: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in s.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrl.is_empty() {
            v2 = Some(path.to_string());
        } else if ctrl.split(',').any(|c| c == "cpu") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// A path and each of its ancestors, deepest first: a quota anywhere above
/// the process limits it too.
fn ancestors(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = PathBuf::from(path.trim_start_matches('/'));
    loop {
        out.push(root.join(&p));
        if !p.pop() {
            break;
        }
    }
    out
}

/// The tightest CPU quota on the process's cgroup or its ancestors, given
/// /proc/self/cgroup and where the cgroup tree is mounted.
pub fn cpu_quota(cgroup_root: &Path, self_cgroup: &str) -> Option<Quota> {
    let (v2, v1) = parse_self_cgroup(self_cgroup);
    let mut found: Vec<Quota> = Vec::new();
    if let Some(p) = v1 {
        for dir in ancestors(&cgroup_root.join("cpu"), &p) {
            let q = std::fs::read_to_string(dir.join("cpu.cfs_quota_us"));
            let per = std::fs::read_to_string(dir.join("cpu.cfs_period_us"));
            if let (Ok(q), Ok(per)) = (q, per) {
                if let Some(Some(cpus)) = parse_cfs(&q, &per) {
                    found.push(Quota {
                        cpus,
                        source: dir.join("cpu.cfs_quota_us").display().to_string(),
                    });
                }
            }
        }
    } else if let Some(p) = v2 {
        for dir in ancestors(cgroup_root, &p) {
            if let Ok(s) = std::fs::read_to_string(dir.join("cpu.max")) {
                if let Some(Some(cpus)) = parse_cpu_max(&s) {
                    found.push(Quota {
                        cpus,
                        source: dir.join("cpu.max").display().to_string(),
                    });
                }
            }
        }
    }
    found.into_iter().min_by(|a, b| a.cpus.total_cmp(&b.cpus))
}

/// Reads the kernel's own build configuration line for netem, or the
/// loaded and installed modules.
pub fn netem_from_config(config: &str) -> Option<Netem> {
    for line in config.lines() {
        if line == "CONFIG_NET_SCH_NETEM=y" {
            return Some(Netem::Present("built into the kernel".into()));
        }
        if line == "CONFIG_NET_SCH_NETEM=m" {
            return Some(Netem::Present("as a module".into()));
        }
        if line.starts_with("# CONFIG_NET_SCH_NETEM is not set") {
            return Some(Netem::Absent("the kernel was built without it".into()));
        }
    }
    None
}

fn netem(kernel: &str) -> Netem {
    if std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.contains("sch_netem ")) {
        return Netem::Present("module loaded".into());
    }
    let config = std::fs::File::open("/proc/config.gz").ok().and_then(|f| {
        let mut s = String::new();
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut s)
            .ok()
            .map(|_| s)
    });
    let config = config.or_else(|| std::fs::read_to_string(format!("/boot/config-{kernel}")).ok());
    if let Some(n) = config.as_deref().and_then(netem_from_config) {
        return n;
    }
    let dir = PathBuf::from("/lib/modules").join(kernel);
    let listed = |file: &str| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|s| s.contains("/sch_netem.ko"))
    };
    if listed("modules.builtin") || listed("modules.dep") {
        Netem::Present("module installed".into())
    } else if dir.exists() {
        Netem::Absent(format!("no sch_netem in {}", dir.display()))
    } else {
        Netem::Unknown("the kernel's configuration is not readable here".into())
    }
}

fn disk_free(dir: &str) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Who publishes `port` on loopback, among the lab's containers.
async fn port_holder(rt: &dyn Runtime, port: u16) -> Option<String> {
    let all = rt.list_containers(&[]).await.ok()?;
    let want = format!("127.0.0.1:{port}");
    all.iter()
        .find(|c| c.ports.values().any(|a| *a == want))
        .and_then(|c| c.label(labels::LAB).map(str::to_string))
}

/// Reads the machine and the daemon. `rt` is None when Docker did not answer
/// (`why` says what happened).
pub async fn gather(rt: std::result::Result<&dyn Runtime, String>, lab: &str, port: u16) -> Facts {
    let docker = match &rt {
        Ok(rt) => rt.daemon_info().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let mut images = Vec::new();
    if let (Ok(rt), Ok(_)) = (&rt, &docker) {
        for i in Image::ALL {
            let tag = i.tag();
            let info = rt.image(&tag).await.ok().flatten();
            images.push((tag, info));
        }
    }
    let port_taken = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => None,
        Err(_) if port == 0 => None,
        Err(_) => Some(match &rt {
            Ok(rt) => port_holder(*rt, port).await,
            Err(_) => None,
        }),
    };
    let vrrp = match (&rt, &docker) {
        (Ok(rt), Ok(_)) => vrrp(*rt, lab, &images).await,
        _ => Vrrp::Untried("Docker is unreachable".into()),
    };
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let host_kernel = read("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let disk_free = match &docker {
        Ok(d) if !d.root_dir.is_empty() && Path::new(&d.root_dir).exists() => {
            disk_free(&d.root_dir)
        }
        _ => None,
    };
    Facts {
        version: VERSION.into(),
        lab: lab.into(),
        docker,
        images,
        port,
        port_taken,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load1: read("/proc/loadavg").as_deref().and_then(parse_loadavg),
        mem_available: read("/proc/meminfo").as_deref().and_then(parse_meminfo),
        quota: read("/proc/self/cgroup")
            .and_then(|own| cpu_quota(Path::new("/sys/fs/cgroup"), &own)),
        netem: netem(&host_kernel),
        host_kernel,
        disk_free,
        vrrp,
    }
}

/// Runs [`VRRP_PROBE`] in a throw-away container of the base image (it has
/// keepalived and python3), with no network and the two capabilities only.
async fn vrrp(rt: &dyn Runtime, lab: &str, images: &[(String, Option<ImageInfo>)]) -> Vrrp {
    let base = Image::Base.tag();
    if !images
        .iter()
        .any(|(tag, info)| *tag == base && info.is_some())
    {
        return Vrrp::Untried(format!("no {base} image yet"));
    }
    let l = std::collections::BTreeMap::from([(labels::LAB.to_string(), lab.to_string())]);
    match rt
        .run_alone(
            &base,
            &["NET_ADMIN", "NET_RAW"],
            &l,
            &["sh", "-c", VRRP_PROBE],
        )
        .await
    {
        Ok(out) if out.code == 0 => Vrrp::Works(out.stdout.trim().to_string()),
        Ok(out) => Vrrp::Refused(
            format!("{} {}", out.stdout.trim(), out.stderr.trim())
                .trim()
                .to_string(),
        ),
        Err(e) => Vrrp::Refused(format!("Docker refused the container ({e})")),
    }
}

/// `lab doctor`: every check, as a report whose exit code is 1 when the
/// lab cannot run.
pub async fn diagnose(lab: &str, port: u16) -> Report {
    let rt = DockerRuntime::connect().await;
    let rt_ref: std::result::Result<&dyn Runtime, String> = match &rt {
        Ok(rt) => Ok(rt),
        Err(e) => Err(e.to_string()),
    };
    let facts = gather(rt_ref, lab, port).await;
    Report::new(checks(&facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn good() -> Facts {
        let info = |v: &str| ImageInfo {
            id: "sha256:x".into(),
            labels: [
                (labels::VERSION.to_string(), v.to_string()),
                (
                    labels::INPUT_HASH.to_string(),
                    "0123456789abcdef".to_string(),
                ),
            ]
            .into(),
        };
        Facts {
            version: VERSION.into(),
            lab: "lab".into(),
            docker: Ok(DaemonInfo {
                server_version: "27.5.1".into(),
                kernel_version: "6.1.0".into(),
                operating_system: "Debian GNU/Linux 12 (bookworm)".into(),
                root_dir: "/var/lib/docker".into(),
                cpus: 4,
                memory_bytes: 8 << 30,
            }),
            images: Image::ALL
                .iter()
                .map(|i| (i.tag(), Some(info(VERSION))))
                .collect(),
            port: 8080,
            port_taken: None,
            cpus: 4,
            load1: Some(0.5),
            mem_available: Some(4 << 30),
            quota: None,
            host_kernel: "6.1.0".into(),
            netem: Netem::Present("module loaded".into()),
            disk_free: Some(50 << 30),
            vrrp: Vrrp::Works("Keepalived v2.2.7 (01/16,2022)".into()),
        }
    }

    fn by_name(r: &Report) -> BTreeMap<String, Status> {
        r.checks
            .iter()
            .map(|c| (c.name.clone(), c.status))
            .collect()
    }

    fn status_of(f: &Facts, name: &str) -> Status {
        checks(f)
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
            .status
    }

    #[test]
    fn a_good_machine_is_ready() {
        let r = Report::new(checks(&good()));
        assert_eq!(r.verdict, Verdict::Ready, "{}", r.render());
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.render().lines().count(), r.checks.len() + 1);
        assert!(r.checks.iter().all(|c| c.fix.is_none()));
    }

    #[test]
    fn capabilities_refused_warn_that_two_balancers_cannot_run() {
        let mut f = good();
        f.vrrp = Vrrp::Refused("Docker did not grant NET_RAW to the container".into());
        let r = Report::new(checks(&f));
        assert_eq!(status_of(&f, "vrrp"), Status::Warn);
        assert_eq!(r.exit_code(), 0, "one balancer still runs");
        let line = r.render();
        assert!(
            line.contains("NET_RAW") && line.contains("--balancers 2"),
            "{line}"
        );
        f.vrrp = Vrrp::Untried("no scaling-lab/base image yet".into());
        assert_eq!(status_of(&f, "vrrp"), Status::Ok);
    }

    #[test]
    fn the_verdict_is_the_worst_status() {
        let ok = Check::ok("a", "fine");
        let warn = Check::warn("b", "meh", "do x");
        let fail = Check::fail("c", "broken", "do y");
        assert_eq!(verdict(&[]), Verdict::Ready);
        assert_eq!(verdict(std::slice::from_ref(&ok)), Verdict::Ready);
        assert_eq!(verdict(&[ok.clone(), warn.clone()]), Verdict::Warnings);
        assert_eq!(verdict(&[warn, fail, ok]), Verdict::CannotRun);
    }

    #[test]
    fn docker_missing_images_or_a_taken_port_stop_the_lab() {
        let mut f = good();
        f.docker = Err("connection refused".into());
        f.images.clear();
        let r = Report::new(checks(&f));
        assert_eq!(r.exit_code(), 1);
        let docker = &r.checks[0];
        assert_eq!(docker.status, Status::Fail);
        assert!(docker.fix.as_ref().unwrap().contains("start Docker"));

        let mut f = good();
        f.images[1].1 = None;
        f.images[2]
            .1
            .as_mut()
            .unwrap()
            .labels
            .insert(labels::VERSION.into(), "0.0.1".into());
        let c = check_images(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("scaling-lab/app") && c.detail.contains("another version"),
            "{}",
            c.detail
        );
        assert!(c.fix.unwrap().contains("lab images load"));

        let mut f = good();
        f.port_taken = Some(None);
        let c = check_port(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("--port 0"));
        // The lab's own balancer on the port is not a problem (`up` again
        // reconciles); another lab's is.
        f.port_taken = Some(Some("lab".into()));
        assert_eq!(check_port(&f).status, Status::Ok);
        f.port_taken = Some(Some("class-2".into()));
        let c = check_port(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("lab --lab class-2 down"));
    }

    #[test]
    fn a_busy_machine_warns_but_runs() {
        let mut f = good();
        f.load1 = Some(4.0);
        assert_eq!(status_of(&f, "cpu"), Status::Ok);
        f.load1 = Some(4.5);
        assert_eq!(status_of(&f, "cpu"), Status::Warn);
        f.quota = Some(Quota {
            cpus: 1.5,
            source: "cpu.max".into(),
        });
        f.mem_available = Some(512 << 20);
        f.disk_free = Some(1 << 30);
        f.netem = Netem::Absent("built without".into());
        let r = Report::new(checks(&f));
        assert_eq!(r.verdict, Verdict::Warnings);
        assert_eq!(r.exit_code(), 0);
        let b = by_name(&r);
        for name in ["cpu", "cgroup", "memory", "disk", "netem"] {
            assert_eq!(b[name], Status::Warn, "{name}");
        }
        assert!(r
            .checks
            .iter()
            .filter(|c| c.status != Status::Ok)
            .all(|c| c.fix.is_some()));
    }

    #[test]
    fn netem_on_a_vm_kernel_is_not_judged_from_the_host() {
        let mut f = good();
        f.netem = Netem::Absent("x".into());
        f.host_kernel = "23.4.0".into();
        let c = check_netem(&f);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("VM"), "{}", c.detail);
    }

    #[test]
    fn load_average_and_memory_are_parsed() {
        assert_eq!(parse_loadavg("8.98 8.97 5.64 11/299 27049\n"), Some(8.98));
        assert_eq!(parse_loadavg(""), None);
        let mem = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_meminfo(mem), Some(2048 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn cpu_quotas_are_parsed() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(Some(1.5)));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), Some(None));
        assert_eq!(parse_cfs("50000", "100000"), Some(Some(0.5)));
        assert_eq!(parse_cfs("x", "100000"), None);
    }

    #[test]
    fn own_cgroup_paths_are_found_in_v1_and_v2() {
        assert_eq!(
            parse_self_cgroup("0::/user.slice/session-3.scope\n"),
            (Some("/user.slice/session-3.scope".into()), None)
        );
        let hybrid = "4:memory:/x\n2:cpuacct:/\n1:cpu,cpuacct:/docker/abc\n0::/\n";
        assert_eq!(
            parse_self_cgroup(hybrid),
            (Some("/".into()), Some("/docker/abc".into()))
        );
        let a = ancestors(Path::new("/sys/fs/cgroup"), "/a/b");
        assert_eq!(
            a,
            vec![
                PathBuf::from("/sys/fs/cgroup/a/b"),
                PathBuf::from("/sys/fs/cgroup/a"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
    }

    #[test]
    fn the_tightest_quota_on_the_way_up_wins() {
        // A fake cgroup v2 tree: the parent allows 2 CPUs, the child 0.5.
        let root = tempfile::tempdir().unwrap();
        let child = root.path().join("a/b");
        std::fs::create_dir_all(&child).unwrap();
        std::fs::write(root.path().join("a/cpu.max"), "200000 100000\n").unwrap();
        std::fs::write(child.join("cpu.max"), "50000 100000\n").unwrap();
        std::fs::write(root.path().join("cpu.max"), "max 100000\n").unwrap();
        let q = cpu_quota(root.path(), "0::/a/b\n").unwrap();
        assert_eq!(q.cpus, 0.5);
        assert!(q.source.ends_with("a/b/cpu.max"), "{}", q.source);
        // Only the parent limited: its quota applies to the child.
        std::fs::write(child.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cpu_quota(root.path(), "0::/a/b\n").unwrap().cpus, 2.0);
        assert_eq!(cpu_quota(root.path(), "0::/\n"), None);

        // cgroup v1: the cpu controller's own tree.
        let v1 = root.path().join("cpu/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("cpu.cfs_quota_us"), "150000\n").unwrap();
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let q = cpu_quota(root.path(), "1:cpu,cpuacct:/docker/abc\n0::/\n").unwrap();
        assert_eq!(q.cpus, 1.5);
    }

    #[test]
    fn the_kernel_configuration_says_whether_netem_exists() {
        assert_eq!(
            netem_from_config("CONFIG_X=y\n# CONFIG_NET_SCH_NETEM is not set\n"),
            Some(Netem::Absent("the kernel was built without it".into()))
        );
        assert!(matches!(
            netem_from_config("CONFIG_NET_SCH_NETEM=m\n"),
            Some(Netem::Present(_))
        ));
        assert_eq!(netem_from_config("CONFIG_X=y\n"), None);
    }

    #[test]
    fn json_names_the_fields_a_dashboard_reads() {
        let mut f = good();
        f.load1 = Some(9.0);
        let r = Report::new(checks(&f));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "warnings");
        let cpu = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "cpu")
            .unwrap();
        assert_eq!(cpu["status"], "warn");
        assert!(cpu["fix"].is_string() && cpu["detail"].is_string());
        let docker = &v["checks"][0];
        assert!(docker.get("fix").is_none());
    }
}
