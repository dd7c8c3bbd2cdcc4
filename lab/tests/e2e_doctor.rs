//! `lab doctor` against the real machine and the real Docker daemon: what it
//! says about Docker matches Docker, a port someone holds fails the check
//! with its fix, and an unreachable daemon makes the lab "cannot run".

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::{docker_ready, lab};

fn doctor_json(args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let o = lab(&all);
    let doc = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    (o, doc)
}

fn check<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {doc}"))
}

#[test]
fn doctor_reports_docker_images_and_a_taken_port() {
    if !docker_ready() {
        return;
    }
    // A port this test holds: doctor must call it taken, with the fix.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let (o, doc) = doctor_json(&["--port", &port]);
    assert_eq!(o.status.code(), Some(1), "{doc}");
    assert_eq!(doc["verdict"], "cannot_run");
    let p = check(&doc, "port");
    assert_eq!(p["status"], "fail", "{p}");
    assert!(p["fix"].as_str().unwrap().contains("--port 0"), "{p}");

    // What it says about Docker is what Docker says.
    let v = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
    let d = check(&doc, "docker");
    assert_eq!(d["status"], "ok");
    assert!(d["detail"].as_str().unwrap().contains(&version), "{d}");
    assert_eq!(check(&doc, "images")["status"], "ok");
    // This kind of machine grants keepalived what it needs: the probe ran
    // in a real container and found keepalived there.
    let v = check(&doc, "vrrp");
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("Keepalived"), "{v}");
    for name in ["cpu", "memory", "cgroup", "netem", "vrrp", "disk"] {
        let c = check(&doc, name);
        assert_ne!(c["status"], "fail", "{c}");
        if c["status"] == "warn" {
            assert!(c["fix"].is_string(), "a warning without a fix: {c}");
        }
    }
    drop(held);

    // Port 0 (any free port) cannot be taken: only warnings remain, exit 0.
    let o = lab(&["doctor", "--port", "0"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn an_unreachable_docker_cannot_run_the_lab() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("no-docker.sock");
    let o = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["doctor", "--port", "0"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("FAIL") && first.contains("docker"),
        "{text}"
    );
    assert!(first.contains("start Docker"), "{first}");
    assert!(text.contains("cannot run"), "{text}");
}
