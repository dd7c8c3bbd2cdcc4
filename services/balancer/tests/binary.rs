//! The `lab-balancer` binary: config errors, and SIGTERM with a request in flight.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestClient};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[health]\nintervall = \"1s\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lab-balancer"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("intervall"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let a = Backend::start("server-1").await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[[upstream]]\nname = \"server-1\"\naddress = \"{}\"\n",
            a.addr
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab-balancer"))
        .env("BALANCER_CONFIG", &path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = TestClient::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client
            .send(
                http::Method::GET,
                &format!("http://127.0.0.1:{admin}/healthz"),
                &[],
                "",
            )
            .await
        {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the balancer did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://127.0.0.1:{port}/slow?ms=1500");
    let c = client.clone();
    let slow = tokio::spawn(async move { c.get(&url).await });
    while a.active() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.served_by(), Some("server-1"));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
