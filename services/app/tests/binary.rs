//! Tests of the `lab-app` binary itself: configuration errors, start-up
//! before the database, and a graceful stop on SIGTERM.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_lab-app");

/// Kills the child if the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_with(vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run lab-app")
}

#[test]
fn a_bad_variable_stops_the_start_with_one_line_naming_it() {
    let db = "postgres://lab@db-1/lab";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("SERVER_NAME", "server-1"),
                ("DATABASE_URL", db),
                ("SESSION_STORE", "foo"),
            ],
            r#"error: SESSION_STORE must be memory, redis or jwt (got "foo")"#,
        ),
        (
            &[("DATABASE_URL", db)],
            "error: SERVER_NAME is required (e.g. server-1)",
        ),
        (
            &[
                ("SERVER_NAME", "server-1"),
                ("DATABASE_URL", db),
                ("SESSION_STORE", "jwt"),
                ("SESSION_SECRET", "too short"),
            ],
            "error: SESSION_SECRET must be at least 32 bytes (got 9 bytes)",
        ),
        (
            &[
                ("SERVER_NAME", "server-1"),
                ("DATABASE_URL", db),
                ("PORT", "http"),
            ],
            r#"error: PORT must be a port number 0-65535 (got "http")"#,
        ),
    ];
    for (vars, expected) in cases {
        let out = run_with(vars);
        assert_eq!(out.status.code(), Some(1), "{expected}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), *expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_its_database_and_drains_on_sigterm() {
    let port = free_port();
    let port_s = port.to_string();
    let db_port = free_port().to_string();
    let db = format!("postgres://lab@127.0.0.1:{db_port}/lab");
    let child = Command::new(BIN)
        .env_clear()
        .envs([
            ("SERVER_NAME", "server-9"),
            ("BIND", "127.0.0.1"),
            ("PORT", port_s.as_str()),
            ("DATABASE_URL", db.as_str()),
            ("RUST_LOG", "info"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab-app");
    let mut guard = Guard(child);
    let http = client();
    let base = format!("http://127.0.0.1:{port}");

    // Up and alive while the database is not: liveness touches nothing,
    // readiness says what is missing.
    eventually(
        Duration::from_secs(20),
        "the binary answers /healthz",
        || async {
            match http.get(format!("{base}/healthz")).send().await {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            }
        },
    )
    .await;
    let ready = get(&http, &format!("{base}/readyz"), None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.served_by, "server-9");
    assert!(ready.json["checks"]["127.0.0.1"]
        .as_str()
        .unwrap()
        .starts_with("down: "));

    // A second of CPU work in flight, then SIGTERM.
    let work = {
        let http = http.clone();
        let url = format!("{base}/work?ms=1000");
        tokio::spawn(async move { get(&http, &url, None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    let reply = work.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completes");
    assert_eq!(reply.json, json!({"ms": 1000, "server": "server-9"}));

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "lab-app did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens after the exit"
    );
}
