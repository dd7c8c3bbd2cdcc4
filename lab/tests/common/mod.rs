//! Shared set-up for the end-to-end tests: run the real `lab` binary against
//! the real Docker daemon, under a lab name no one else uses, and remove that
//! lab when the test ends, pass or fail.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const LABEL: &str = "scaling-lab.lab";

/// Skips (returns false) only when LAB_SKIP_DOCKER=1; otherwise a missing
/// daemon or missing images fail the test with the fix.
pub fn docker_ready() -> bool {
    if std::env::var("LAB_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("LAB_SKIP_DOCKER=1: skipping an end-to-end test");
        return false;
    }
    let info = Command::new("docker").arg("info").output();
    assert!(
        info.is_ok_and(|o| o.status.success()),
        "end-to-end tests need a Docker daemon: start Docker, or set LAB_SKIP_DOCKER=1 to skip them"
    );
    let version = env!("CARGO_PKG_VERSION");
    let img = Command::new("docker")
        .args(["image", "inspect", &format!("scaling-lab/app:{version}")])
        .output()
        .unwrap();
    assert!(
        img.status.success(),
        "the lab's images are missing: run `make images` before the end-to-end tests"
    );
    true
}

/// A lab that exists for one test and is removed when dropped.
pub struct TestLab {
    pub name: String,
}

impl TestLab {
    pub fn new(prefix: &str) -> TestLab {
        let name = format!("{prefix}-{}-{}", std::process::id(), rand_suffix());
        TestLab { name }
    }

    /// Runs `lab --lab NAME args...`.
    pub fn lab(&self, args: &[&str]) -> Output {
        let mut all = vec!["--lab", self.name.as_str()];
        all.extend_from_slice(args);
        lab(&all)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.lab(args);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            panic!(
                "lab {args:?} failed:\n{}\n{stderr}{}",
                String::from_utf8_lossy(&out.stdout),
                self.why_not_healthy(&stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// When a service did not become healthy, what the error tells the
    /// user to read (`lab status` and the service's last log lines), read
    /// now: a CI log then says why, without a rerun.
    fn why_not_healthy(&self, stderr: &str) -> String {
        let Some(service) = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("error: ")?
                    .split_once(" did not become healthy")
            })
            .map(|(s, _)| s.to_string())
        else {
            return String::new();
        };
        let text = |args: &[&str]| {
            let o = self.lab(args);
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        format!(
            "\n--- lab status\n{}\n--- lab logs {service} --tail 40\n{}",
            text(&["status"]),
            text(&["logs", &service, "--tail", "40"])
        )
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.lab(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "lab {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status --json is JSON")
    }

    pub fn entrypoint(&self) -> String {
        self.status()["entrypoint"]
            .as_str()
            .expect("an entry point")
            .to_string()
    }

    /// Docker objects that still carry this lab's label.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.name)
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = self.lab(&["down"]);
    }
}

pub fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("LAB_NAME")
        .output()
        .expect("the lab binary runs")
}

pub fn leftovers(name: &str) -> Vec<String> {
    let filter = format!("label={LABEL}={name}");
    let mut out = Vec::new();
    for kind in [
        vec!["ps", "-aq"],
        vec!["volume", "ls", "-q"],
        vec!["network", "ls", "-q"],
    ] {
        let mut args = kind.clone();
        args.extend(["--filter", &filter]);
        let o = Command::new("docker").args(&args).output().unwrap();
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("{} {l}", kind[0])),
        );
    }
    out
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000)
        .unwrap_or(0)
}

/// Polls `f` until it returns Some, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
