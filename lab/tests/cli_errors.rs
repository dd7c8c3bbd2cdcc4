//! Bad input to the `lab` binary: each mistake gets exactly one line on
//! stderr that names the cause and the fix, and exit code 1 (2 for what clap
//! itself refuses). No panics, no backtraces.

use std::process::{Command, Output};

fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .env_remove("LAB_NAME")
        .env("NO_COLOR", "1")
        .output()
        .expect("the lab binary runs")
}

fn docker_available() -> bool {
    if std::env::var("LAB_SKIP_DOCKER").as_deref() == Ok("1") {
        return false;
    }
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "these tests need a Docker daemon: start Docker, or set LAB_SKIP_DOCKER=1 to skip them"
    );
    true
}

/// One `error: ...` line that mentions every `needle`, and exit code 1.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn out_of_range_counts() {
    assert_one_line_error(&lab(&["up", "--servers", "0"]), &["--servers 0", "1 to 16"]);
    assert_one_line_error(
        &lab(&["up", "--servers", "300"]),
        &["--servers 300", "1 to 16"],
    );
    assert_one_line_error(
        &lab(&["up", "--replicas", "9"]),
        &["--replicas 9", "0 to 3"],
    );
}

#[test]
fn conflicting_flags() {
    assert_one_line_error(
        &lab(&["up", "--replicas", "0", "--reads", "replicas"]),
        &["--reads replicas", "--replicas 1"],
    );
    assert_one_line_error(
        &lab(&["up", "--replicas", "0", "--replication", "sync"]),
        &["--replication sync", "--replicas 1"],
    );
}

#[test]
fn bad_lab_files() {
    assert_one_line_error(
        &lab(&["up", "-f", "/nonexistent/lab.toml"]),
        &["cannot read", "-f"],
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lab.toml");
    std::fs::write(&p, "servres = 2\n").unwrap();
    assert_one_line_error(&lab(&["up", "-f", p.to_str().unwrap()]), &["servres"]);
    std::fs::write(&p, "servers = 40\n").unwrap();
    assert_one_line_error(&lab(&["up", "-f", p.to_str().unwrap()]), &["40", "1 to 16"]);
}

#[test]
fn usage_errors_are_claps() {
    let out = lab(&["up", "--lb", "fastest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("round-robin"));
    let out = lab(&["--lab", "no spaces", "status"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn docker_unreachable() {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["--lab", "unreachable-test", "status"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["cannot reach the Docker daemon", "start Docker"]);
}

#[test]
fn no_such_lab() {
    if !docker_available() {
        return;
    }
    let name = format!("nolab-{}", std::process::id());
    assert_one_line_error(
        &lab(&["--lab", &name, "status"]),
        &["is not running", "lab up"],
    );
    assert_one_line_error(
        &lab(&["--lab", &name, "logs", "server-1"]),
        &["is not running"],
    );
    let out = lab(&["--lab", &name, "down"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
}

#[test]
fn port_in_use() {
    if !docker_available() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let name = format!("porttest-{}", std::process::id());
    let out = lab(&["--lab", &name, "up", "--port", &port]);
    assert_one_line_error(&out, &[&format!("port {port}"), "--port"]);
    // Refused before anything was created.
    let out = lab(&["--lab", &name, "down"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
}

#[test]
fn bad_load_arguments_name_the_flag() {
    // Values clap refuses are usage errors: exit 2 (docs/architecture.md, Errors).
    for (args, needle) in [
        (vec!["load", "--rate", "0"], "--rate"),
        (vec!["load", "--duration", "-5s"], "cannot be negative"),
        (vec!["load", "--duration", "100h"], "at most 1h"),
        (vec!["load", "--scenario", "nope"], "possible values"),
        (vec!["load", "--users", "0"], "--users"),
        (vec!["load", "--rate", "10", "--users", "5"], "--users"),
    ] {
        let out = lab(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn load_without_a_lab() {
    if !docker_available() {
        return;
    }
    let name = format!("noload-{}", std::process::id());
    assert_one_line_error(
        &lab(&["--lab", &name, "load", "--duration", "1s"]),
        &["is not running", "lab up"],
    );
}
