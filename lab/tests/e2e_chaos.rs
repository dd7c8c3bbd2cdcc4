//! End to end with real Docker: `lab chaos` breaks services on a schedule
//! that its seed replays, under load, and leaves nothing broken, also when
//! it is interrupted with Ctrl-C in the middle of a fault.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{docker_ready, TestLab};
use serde_json::Value;

/// (time, fault, service) of every step: what a replay must repeat.
fn schedule_of(report: &Value) -> Vec<(String, String, String)> {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_s"].to_string(),
                e["fault"].as_str().unwrap().to_string(),
                e["service"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn faults_left(lab: &TestLab) -> Vec<String> {
    lab.status()["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["faults"].as_array().unwrap().is_empty())
        .map(|s| format!("{}: {}", s["name"], s["faults"]))
        .collect()
}

#[test]
fn chaos_replays_its_seed_and_heals_everything() {
    if !docker_ready() {
        return;
    }
    let lab = TestLab::new("e2e-chaos");
    lab.ok(&["up", "--servers", "2", "--replicas", "1", "--port", "0"]);
    let run = || -> Value {
        let out = lab.ok(&[
            "chaos",
            "--duration",
            "16s",
            "--seed",
            "11",
            "--gap",
            "2s",
            "--hold",
            "2s",
            "--users",
            "4",
            "--json",
        ]);
        serde_json::from_str(&out).expect("chaos --json is JSON")
    };
    let first = run();
    assert_eq!(first["seed"], 11);
    let steps = schedule_of(&first);
    assert!(steps.len() >= 2, "{first}");
    for e in first["timeline"].as_array().unwrap() {
        assert_eq!(e["result"], "healed", "each step heals its own fault: {e}");
    }
    assert!(first["load"]["requests"].as_u64().unwrap() > 0, "{first}");
    assert!(faults_left(&lab).is_empty(), "{:?}", faults_left(&lab));
    // The same seed on the same lab: the same faults at the same moments.
    let second = run();
    assert_eq!(schedule_of(&second), steps);

    // Ctrl-C in the middle of a run: every fault is healed before it exits.
    let child = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args([
            "--lab",
            &lab.name,
            "chaos",
            "--duration",
            "60s",
            "--faults",
            "pause,slow,partition",
            "--gap",
            "1s",
            "--hold",
            "20s",
            "--users",
            "2",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).expect("a report after Ctrl-C");
    assert_eq!(report["stopped"], "interrupted (Ctrl-C)", "{report}");
    assert!(
        !report["healed_at_end"].as_array().unwrap().is_empty(),
        "a fault held at Ctrl-C is healed by the final heal: {report}"
    );
    assert!(faults_left(&lab).is_empty(), "{:?}", faults_left(&lab));
}

#[test]
fn spof_names_the_parts_a_small_lab_cannot_lose() {
    if !docker_ready() {
        return;
    }
    // One balancer, one server, one database and a Redis that only caches
    // product reads (sessions in memory): without it, reads go to the
    // database, so it is no single point of failure.
    let lab = TestLab::new("e2e-spof");
    lab.ok(&[
        "up",
        "--servers",
        "1",
        "--replicas",
        "0",
        "--cache",
        "on",
        "--port",
        "0",
    ]);
    let out = lab.ok(&["spof", "--window", "5s", "--measure", "3s", "--json"]);
    let report: Value = serde_json::from_str(&out).expect("spof --json is JSON");
    let spofs: Vec<&str> = report["spofs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(spofs, ["db-1", "lb-1", "server-1"], "{report}");
    let redis = report["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["service"] == "redis")
        .unwrap();
    assert_eq!(redis["spof"], false, "{redis}");
    assert_eq!(redis["duties"], serde_json::json!(["cache"]), "{redis}");
    // Every part was started again.
    assert!(faults_left(&lab).is_empty(), "{:?}", faults_left(&lab));
    for s in lab.status()["services"].as_array().unwrap() {
        assert_eq!(s["state"], "running", "{s}");
    }
}
