//! Building the lab's images on a machine that reaches no container registry.
//!
//! Nothing is pulled. A Debian root filesystem is made with mmdebstrap
//! (Debian's own tool, fed by Debian's package mirror), turned into the base
//! image, and four small images are layered on it: the app and the balancer
//! (the release binaries built by cargo), Redis and PostgreSQL (from the
//! base's Debian packages, with an entrypoint each). Every image carries the
//! CLI's version in its tag, so a newer `lab` never runs an older image by
//! mistake, and a hash of its inputs in a label, so an unchanged second build
//! only compares hashes and takes seconds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::progress::{Progress, Size};
use crate::runtime::{labels, Runtime, RuntimeError};

/// The CLI's version: part of every image tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const PACKAGES: &str = include_str!("../../images/base/packages.txt");
const POSTGRES_ENTRYPOINT: &str = include_str!("../../images/postgres/entrypoint.sh");
const POSTGRES_HA_ENTRYPOINT: &str = include_str!("../../images/postgres/patroni-entrypoint.sh");
const PATRONI_CONFIG_TOOL: &str = include_str!("../../images/postgres/lab-patroni-config");
const PATRONI_TEMPLATE: &str = include_str!("../../images/postgres/patroni.yml.tmpl");
const REDIS_ENTRYPOINT: &str = include_str!("../../images/redis/entrypoint.sh");
const APP_ENTRYPOINT: &str = include_str!("../../images/app/entrypoint.sh");
/// The balancer image runs our balancer alone, or beside keepalived in an
/// HA pair (images/balancer/, docs/ha-balancers-notes.md).
const BALANCER_ENTRYPOINT: &str = include_str!("../../images/balancer/entrypoint.sh");
const KEEPALIVED_CONF: &str = include_str!("../../images/balancer/keepalived.conf.in");
const VRRP_CHECK: &str = include_str!("../../images/balancer/check-balancer.sh");
const VRRP_NOTIFY: &str = include_str!("../../images/balancer/vrrp-notify.sh");
/// Overrides the version part of every image tag (see [`Image::tag`]).
pub const TAG_ENV: &str = "LAB_IMAGE_TAG";
/// Our TCP fault proxy, in every image whose service it fronts.
const FAULTPROXY: &str = "lab-faultproxy";

/// The images a lab runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    Base,
    App,
    Balancer,
    Redis,
    Postgres,
}

impl Image {
    pub const ALL: [Image; 5] = [
        Image::Base,
        Image::App,
        Image::Balancer,
        Image::Redis,
        Image::Postgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Image::Base => "base",
            Image::App => "app",
            Image::Balancer => "balancer",
            Image::Redis => "redis",
            Image::Postgres => "postgres",
        }
    }

    /// `scaling-lab/app:0.1.0`, or `scaling-lab/app:TAG` with
    /// `LAB_IMAGE_TAG=TAG`: a developer keeps a branch's images beside the
    /// released ones, so two checkouts on one Docker daemon never rebuild
    /// each other's images under the same tag.
    pub fn tag(self) -> String {
        let tag = std::env::var(TAG_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| VERSION.to_string());
        format!("scaling-lab/{}:{tag}", self.name())
    }
}

#[derive(Error, Debug)]
pub enum ImageError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("mmdebstrap is not installed: run `sudo apt-get install mmdebstrap` (it builds the Debian base image)")]
    NoMmdebstrap,
    #[error("mmdebstrap failed ({0}); see the lines above, and check that apt can reach Debian's mirror")]
    Mmdebstrap(String),
    #[error("{path} is missing: build the release binaries first with `make images` or `cargo build --release`")]
    MissingBinary { path: String },
    #[error("cannot {what}: {reason}")]
    Io { what: String, reason: String },
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Io {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// What `lab images build` needs to know.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub force: bool,
    /// Where lab-app and lab-balancer are.
    pub bin_dir: PathBuf,
    /// Debian suite of the base; must match the host that built the binaries
    /// (their glibc) — by default the host's own.
    pub suite: String,
    pub mirror: String,
}

impl BuildOptions {
    pub fn new(force: bool, bin_dir: Option<PathBuf>) -> BuildOptions {
        BuildOptions {
            force,
            bin_dir: bin_dir.unwrap_or_else(default_bin_dir),
            suite: host_suite(),
            mirror: std::env::var("LAB_DEBIAN_MIRROR")
                .unwrap_or_else(|_| "http://deb.debian.org/debian".into()),
        }
    }
}

/// The directory of the running `lab` binary: `target/release` in a checkout,
/// where cargo put lab-app and lab-balancer beside it.
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn host_suite() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

/// One line per image: what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub image: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    Built(Duration),
}

/// A build context: a Dockerfile and the files it copies.
struct Context {
    files: Vec<(String, Vec<u8>, u32)>,
}

impl Context {
    fn new(dockerfile: String) -> Context {
        Context {
            files: vec![("Dockerfile".into(), dockerfile.into_bytes(), 0o644)],
        }
    }
    fn add(mut self, name: &str, data: Vec<u8>, mode: u32) -> Context {
        self.files.push((name.into(), data, mode));
        self
    }
    /// A hash of everything that shapes the image, including the base's id,
    /// so rebuilding the base rebuilds what sits on it.
    fn hash(&self, base_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(VERSION);
        h.update(base_id);
        for (name, data, mode) in &self.files {
            // The Dockerfile holds the hash label itself; hash it without.
            h.update(name);
            h.update(mode.to_le_bytes());
            h.update(data);
        }
        hex(&h.finalize())[..16].to_string()
    }
    fn tar(&self) -> std::io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode) in &self.files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice())?;
        }
        b.into_inner()
    }
}

/// The base's inputs are the package list and the Debian suite.
fn base_hash(suite: &str) -> String {
    let mut h = Sha256::new();
    h.update(VERSION);
    h.update(PACKAGES);
    h.update(suite);
    hex(&h.finalize())[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn label_lines(hash: &str) -> String {
    format!(
        "LABEL {}=\"{VERSION}\" {}=\"{hash}\"\n",
        labels::VERSION,
        labels::INPUT_HASH
    )
}

fn packages() -> Vec<&'static str> {
    PACKAGES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Build every image that is missing or out of date (all with `force`).
pub async fn build(
    rt: &dyn Runtime,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Vec<Built>, ImageError> {
    rt.ping().await?;
    let mut done = Vec::new();

    let base_hash = base_hash(&opts.suite);
    let base_tag = Image::Base.tag();
    let current = rt.image(&base_tag).await?;
    let fresh = current
        .as_ref()
        .is_some_and(|i| i.labels.get(labels::INPUT_HASH) == Some(&base_hash));
    if fresh && !opts.force {
        done.push(Built {
            image: base_tag.clone(),
            outcome: Outcome::UpToDate,
        });
    } else {
        let started = Instant::now();
        let rootfs = mmdebstrap(opts, progress).await?;
        let dockerfile = format!(
            "FROM scratch\nADD rootfs.tar /\n{}ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"/bin/bash\"]\n",
            label_lines(&base_hash)
        );
        let ctx = Context::new(dockerfile).add("rootfs.tar", rootfs, 0o644);
        build_one(rt, &base_tag, ctx, progress).await?;
        done.push(Built {
            image: base_tag.clone(),
            outcome: Outcome::Built(started.elapsed()),
        });
    }
    let base_id = rt.image(&base_tag).await?.map(|i| i.id).unwrap_or_default();

    for image in [Image::App, Image::Balancer, Image::Redis, Image::Postgres] {
        let ctx = context_for(image, opts)?;
        let hash = ctx.hash(&base_id);
        let tag = image.tag();
        let fresh = rt
            .image(&tag)
            .await?
            .is_some_and(|i| i.labels.get(labels::INPUT_HASH) == Some(&hash));
        if fresh && !opts.force {
            done.push(Built {
                image: tag,
                outcome: Outcome::UpToDate,
            });
            continue;
        }
        let started = Instant::now();
        // The hash label goes into the Dockerfile after hashing.
        let mut ctx = ctx;
        let df =
            String::from_utf8_lossy(&ctx.files[0].1).replace("#LABELS#\n", &label_lines(&hash));
        ctx.files[0].1 = df.into_bytes();
        build_one(rt, &tag, ctx, progress).await?;
        done.push(Built {
            image: tag,
            outcome: Outcome::Built(started.elapsed()),
        });
    }
    Ok(done)
}

fn context_for(image: Image, opts: &BuildOptions) -> Result<Context, ImageError> {
    let base = Image::Base.tag();
    let read_bin = |name: &str| -> Result<Vec<u8>, ImageError> {
        let path = opts.bin_dir.join(name);
        std::fs::read(&path).map_err(|_| ImageError::MissingBinary {
            path: path.display().to_string(),
        })
    };
    Ok(match image {
        Image::App => Context::new(format!(
            "FROM {base}\nCOPY lab-app /usr/local/bin/\nCOPY entrypoint.sh /usr/local/bin/lab-server\n#LABELS#\nUSER nobody\nEXPOSE 8000\nENTRYPOINT [\"/usr/local/bin/lab-server\"]\n"
        ))
        // No lab-faultproxy: the app runs the fault proxy's links itself.
        .add("lab-app", read_bin("lab-app")?, 0o755)
        .add("entrypoint.sh", APP_ENTRYPOINT.as_bytes().to_vec(), 0o755),
        // No `USER nobody`: keepalived needs root in a pair, and the
        // entrypoint drops the balancer (and the edge's forwarder) to nobody
        // itself, with no capability left. keepalived refuses hook scripts
        // that anyone but root could change: root's, mode 0755.
        Image::Balancer => Context::new(format!(
            "FROM {base}\nCOPY lab-balancer {FAULTPROXY} /usr/local/bin/\nCOPY entrypoint.sh /usr/local/bin/lab-balancer-entrypoint\nCOPY keepalived.conf.in check-balancer notify /usr/local/lib/lab-vrrp/\n#LABELS#\nEXPOSE 8080 9000\nENTRYPOINT [\"/usr/local/bin/lab-balancer-entrypoint\"]\nCMD [\"--config\", \"/etc/lab/balancer.toml\"]\n"
        ))
        .add("lab-balancer", read_bin("lab-balancer")?, 0o755)
        .add(FAULTPROXY, read_bin(FAULTPROXY)?, 0o755)
        .add("entrypoint.sh", BALANCER_ENTRYPOINT.as_bytes().to_vec(), 0o755)
        .add("keepalived.conf.in", KEEPALIVED_CONF.as_bytes().to_vec(), 0o644)
        .add("check-balancer", VRRP_CHECK.as_bytes().to_vec(), 0o755)
        .add("notify", VRRP_NOTIFY.as_bytes().to_vec(), 0o755),
        Image::Redis => Context::new(format!(
            "FROM {base}\nCOPY {FAULTPROXY} /usr/local/bin/\nCOPY entrypoint.sh /usr/local/bin/lab-redis\n#LABELS#\nEXPOSE 6379\nENTRYPOINT [\"/usr/local/bin/lab-redis\"]\n"
        ))
        .add(FAULTPROXY, read_bin(FAULTPROXY)?, 0o755)
        .add("entrypoint.sh", REDIS_ENTRYPOINT.as_bytes().to_vec(), 0o755),
        // One image for both ways of running a node: entrypoint.sh hands over
        // to lab-postgres-ha (Patroni and etcd, from the base image's
        // packages) when the CLI sets DB_MANAGER. SIGINT is PostgreSQL's fast
        // shutdown, and lab-postgres-ha turns it into Patroni's TERM.
        Image::Postgres => Context::new(format!(
            "FROM {base}\nCOPY {FAULTPROXY} lab-patroni-config /usr/local/bin/\nCOPY entrypoint.sh /usr/local/bin/lab-postgres\nCOPY patroni-entrypoint.sh /usr/local/bin/lab-postgres-ha\nCOPY patroni.yml.tmpl /etc/lab/patroni.yml.tmpl\n#LABELS#\nENV PGDATA=/var/lib/postgresql/data DB_STATE_DIR=/var/lib/postgresql\nEXPOSE 5432 8008\nSTOPSIGNAL SIGINT\nENTRYPOINT [\"/usr/local/bin/lab-postgres\"]\n"
        ))
        .add(FAULTPROXY, read_bin(FAULTPROXY)?, 0o755)
        .add("entrypoint.sh", POSTGRES_ENTRYPOINT.as_bytes().to_vec(), 0o755)
        .add(
            "patroni-entrypoint.sh",
            POSTGRES_HA_ENTRYPOINT.as_bytes().to_vec(),
            0o755,
        )
        .add(
            "lab-patroni-config",
            PATRONI_CONFIG_TOOL.as_bytes().to_vec(),
            0o755,
        )
        .add(
            "patroni.yml.tmpl",
            PATRONI_TEMPLATE.as_bytes().to_vec(),
            0o644,
        ),
        Image::Base => unreachable!("the base is built from mmdebstrap's output"),
    })
}

async fn build_one(
    rt: &dyn Runtime,
    tag: &str,
    ctx: Context,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let task = progress.task(&format!("building {tag}"), Size::Unknown);
    let tar = ctx.tar().map_err(io("pack the build context"))?;
    let log = move |line: &str| {
        tracing::debug!(target: "lab::images", "{line}");
        task.detail(&line.chars().take(60).collect::<String>());
    };
    rt.build_image(tag, tar, &log)
        .await
        .map_err(ImageError::from)
}

/// Runs mmdebstrap into a temporary tar and returns its bytes.
async fn mmdebstrap(opts: &BuildOptions, progress: &dyn Progress) -> Result<Vec<u8>, ImageError> {
    let have = std::process::Command::new("mmdebstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        return Err(ImageError::NoMmdebstrap);
    }
    let dir = tempfile::tempdir().map_err(io("create a temporary directory"))?;
    let out = dir.path().join("rootfs.tar");
    let task = progress.task(
        &format!("making the Debian {} base with mmdebstrap", opts.suite),
        Size::Unknown,
    );
    let security = opts.mirror.replace("/debian", "/debian-security");
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    cmd.args([
        "--quiet",
        "--variant=minbase",
        &format!("--include={}", packages().join(",")),
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        // Debian's postgresql package creates a default cluster; the lab's
        // entrypoint makes its own, so drop the unused one from the image.
        "--customize-hook=rm -rf \"$1\"/var/lib/postgresql/15/main \"$1\"/etc/postgresql/15/main",
        &opts.suite,
    ])
    .arg(&out)
    .arg(format!("deb {} {} main", opts.mirror, opts.suite))
    .arg(format!("deb {security} {}-security main", opts.suite))
    // Without a terminal on stdin mmdebstrap would read sources from it.
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let output = cmd.output().await.map_err(io("run mmdebstrap"))?;
    drop(task);
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        for line in err
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            progress.note(line);
        }
        return Err(ImageError::Mmdebstrap(output.status.to_string()));
    }
    std::fs::read(&out).map_err(io("read mmdebstrap's output"))
}

/// Checks that every image a lab needs exists for this CLI's version.
pub async fn check_present(rt: &dyn Runtime) -> Result<(), ImageError> {
    let mut missing = Vec::new();
    for image in [Image::App, Image::Balancer, Image::Redis, Image::Postgres] {
        match rt.image(&image.tag()).await? {
            Some(i) if i.labels.get(labels::VERSION).map(String::as_str) == Some(VERSION) => {}
            _ => missing.push(image.tag()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ImageError::Runtime(RuntimeError::NotFound(format!(
            "image {} (built for another version or never built): run `lab images build` or `make images`",
            missing.join(", ")
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    #[test]
    fn tags_carry_the_version() {
        assert_eq!(Image::App.tag(), format!("scaling-lab/app:{VERSION}"));
    }

    #[test]
    fn the_hash_follows_the_inputs() {
        let a = Context::new("FROM x\n".into()).add("bin", vec![1, 2, 3], 0o755);
        let b = Context::new("FROM x\n".into()).add("bin", vec![1, 2, 4], 0o755);
        assert_eq!(a.hash("base1"), a.hash("base1"));
        assert_ne!(a.hash("base1"), b.hash("base1"));
        assert_ne!(a.hash("base1"), a.hash("base2"));
    }

    #[test]
    fn the_package_list_has_the_servers() {
        let p = packages();
        assert!(p.contains(&"postgresql-15"));
        assert!(p.contains(&"redis-server"));
        // An HA pair runs keepalived in the balancer image.
        assert!(p.contains(&"keepalived"));
        assert!(!p.iter().any(|l| l.starts_with('#')));
    }

    #[tokio::test]
    async fn missing_images_name_the_fix() {
        let rt = FakeRuntime::new();
        let err = check_present(&rt).await.unwrap_err().to_string();
        assert!(err.contains("lab images build"), "{err}");
        for i in [Image::App, Image::Balancer, Image::Redis, Image::Postgres] {
            rt.add_image(&i.tag(), &[(labels::VERSION, VERSION)]);
        }
        check_present(&rt).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_binary_is_named() {
        let rt = FakeRuntime::new();
        rt.add_image(&Image::Base.tag(), &[]);
        let dir = tempfile::tempdir().unwrap();
        let mut opts = BuildOptions::new(false, Some(dir.path().to_path_buf()));
        // Pretend the base is current so no mmdebstrap runs.
        rt.add_image(
            &Image::Base.tag(),
            &[(labels::INPUT_HASH, &base_hash(&opts.suite))],
        );
        opts.force = false;
        let err = build(&rt, &opts, &crate::progress::Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("lab-app is missing"), "{err}");
    }
}
