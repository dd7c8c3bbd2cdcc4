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

/// Sends SIGTERM, as `docker stop` does.
fn sigterm(guard: &Guard) {
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits up to 10 s for the binary to exit, and checks it exited with 0.
async fn exits_cleanly(guard: &mut Guard) {
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
        (
            &[
                ("SERVER_NAME", "server-1"),
                ("DATABASE_URL", db),
                ("FAULTPROXY_LINKS", "service"),
            ],
            r#"error: FAULTPROXY_LINKS: link "service" is not NAME=LISTEN->UPSTREAM (e.g. clients=0.0.0.0:5432->127.0.0.1:15432)"#,
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
    sigterm(&guard);

    let reply = work.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completes");
    assert_eq!(reply.json, json!({"ms": 1000, "server": "server-9"}));

    exits_cleanly(&mut guard).await;
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens after the exit"
    );
}

/// As a lab runs it: FAULTPROXY_LINKS puts the fault proxy's link on the
/// service's port, and the app serves that link's connections in its own
/// process. A latency set through the admin API reaches a kept-alive
/// connection on its next request and not the app's own port; a heal
/// takes it away; SIGTERM still drains and stops both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_its_fault_proxy_link_in_process() {
    let (port, service, admin) = (free_port(), free_port(), free_port());
    let db = format!("postgres://lab@127.0.0.1:{}/lab", free_port());
    let links = format!("service=127.0.0.1:{service}->127.0.0.1:{port}");
    let admin_addr = format!("127.0.0.1:{admin}");
    let port_s = port.to_string();
    let child = Command::new(BIN)
        .env_clear()
        .envs([
            ("SERVER_NAME", "server-7"),
            ("BIND", "127.0.0.1"),
            ("PORT", port_s.as_str()),
            ("DATABASE_URL", db.as_str()),
            ("FAULTPROXY_LINKS", links.as_str()),
            ("FAULTPROXY_ADMIN", admin_addr.as_str()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab-app");
    let mut guard = Guard(child);
    // One pooled connection per host, as a balancer keeps them.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let through = format!("http://127.0.0.1:{service}/healthz");
    let direct = format!("http://127.0.0.1:{port}/healthz");
    let links_url = format!("http://{admin_addr}/links");
    eventually(
        Duration::from_secs(20),
        "the proxy's link answers",
        || async { matches!(http.get(&through).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    let timed = |url: String| {
        let http = http.clone();
        async move {
            let start = Instant::now();
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-served-by"], "server-7");
            r.bytes().await.unwrap();
            start.elapsed()
        }
    };
    for _ in 0..3 {
        let rtt = timed(through.clone()).await;
        assert!(
            rtt < Duration::from_millis(150),
            "healthy link took {rtt:?}"
        );
    }
    let links: serde_json::Value = http
        .get(&links_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link = &links["links"][0];
    assert_eq!(link["name"], "service");
    assert!(link["bytes_to_service"].as_u64().unwrap() > 0);

    let put = http
        .put(format!("http://{admin_addr}/links/service/fault"))
        .json(&json!({"latency_ms": 150}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let slow = timed(through.clone()).await;
    assert!(
        slow >= Duration::from_millis(300) && slow < Duration::from_millis(1500),
        "150 ms each way gave {slow:?}"
    );
    let past = timed(direct.clone()).await;
    assert!(
        past < Duration::from_millis(150),
        "the app's own port took {past:?}"
    );

    let heal = http
        .delete(format!("http://{admin_addr}/links/service/fault"))
        .send()
        .await
        .unwrap();
    assert_eq!(heal.status(), 200);
    let healed = timed(through.clone()).await;
    assert!(
        healed < Duration::from_millis(150),
        "healed link took {healed:?}"
    );

    sigterm(&guard);
    drop(http);
    exits_cleanly(&mut guard).await;
}
