//! The admin API over real HTTP: what the CLI will send and read back,
//! and the errors a wrong request gets. Plus the binary itself, started as
//! the images will start it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{echo_server, proxy, round_trip};
use lab_contract::faultproxy::{Direction, ErrorBody, Fault, LinkStatus, LinksResponse};
use tokio::time::Instant;

#[tokio::test]
async fn links_show_addresses_faults_connections_and_bytes() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("clients", echo.to_string()), ("wal", echo.to_string())]).await;
    let mut c = p.connect("clients").await;
    round_trip(&mut c, b"12345").await;
    let fault = Fault {
        latency_ms: 5,
        jitter_ms: 1,
        direction: Direction::FromService,
        ..Fault::default()
    };
    p.set("wal", fault.clone()).await;

    let r = p
        .http
        .get(format!("{}/links", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let links: LinksResponse = r.json().await.unwrap();
    let names: Vec<_> = links.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["clients", "wal"]);
    let clients = &links.links[0];
    assert_eq!(clients.listen, p.addr("clients").to_string());
    assert_eq!(clients.upstream, echo.to_string());
    assert_eq!(clients.fault, None);
    assert_eq!(clients.open_connections, 1);
    assert_eq!(clients.total_connections, 1);
    assert_eq!(clients.bytes_to_service, 5);
    assert_eq!(clients.bytes_from_service, 5);
    assert_eq!(links.links[1].fault, Some(fault));
}

#[tokio::test]
async fn set_and_heal_are_idempotent_and_heal_all_clears_every_link() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("a", echo.to_string()), ("b", echo.to_string())]).await;
    let slow = Fault {
        latency_ms: 50,
        ..Fault::default()
    };
    let first = p.set("a", slow.clone()).await;
    let second = p.set("a", slow.clone()).await;
    assert_eq!(first, second);
    assert_eq!(second.fault, Some(slow.clone()));
    // A new fault replaces the old one rather than adding to it.
    let thin = Fault {
        bandwidth_bps: Some(1_000_000),
        ..Fault::default()
    };
    assert_eq!(p.set("a", thin.clone()).await.fault, Some(thin));
    p.set("b", slow).await;

    assert_eq!(p.heal("b").await.fault, None);
    assert_eq!(p.heal("b").await.fault, None);

    let r = p
        .http
        .delete(format!("{}/faults", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let links: LinksResponse = r.json().await.unwrap();
    assert!(links.links.iter().all(|l| l.fault.is_none()), "{links:?}");
}

#[tokio::test]
async fn unknown_link_is_a_404_that_names_the_valid_links() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("clients", echo.to_string()), ("wal", echo.to_string())]).await;
    for req in [
        p.http
            .put(format!("{}/links/client/fault", p.admin))
            .body(r#"{"latency_ms": 10}"#),
        p.http.delete(format!("{}/links/client/fault", p.admin)),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404);
        let body: ErrorBody = r.json().await.unwrap();
        assert!(body.error.contains("\"client\""), "{}", body.error);
        assert!(body.error.contains("clients, wal"), "{}", body.error);
        assert_eq!(body.valid_links, Some(vec!["clients".into(), "wal".into()]));
    }
}

#[tokio::test]
async fn a_bad_body_is_a_400_with_a_json_error() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let cases = [
        ("not json", "not a fault"),
        (r#"{"latency": 200}"#, "unknown field"),
        (r#"{"latency_ms": "200ms"}"#, "not a fault"),
        (
            r#"{"direction": "sideways", "latency_ms": 1}"#,
            "not a fault",
        ),
        (r#"{}"#, "sets nothing"),
        (r#"{"latency_ms": 10, "jitter_ms": 20}"#, "jitter_ms"),
        (r#"{"bandwidth_bps": 0}"#, "blackhole"),
        (r#"{"reset": true, "latency_ms": 10}"#, "alone"),
    ];
    for (body, expect) in cases {
        let r = p
            .http
            .put(format!("{}/links/svc/fault", p.admin))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let err: ErrorBody = r.json().await.unwrap();
        assert!(err.error.contains(expect), "{body}: {}", err.error);
    }
    // Nothing was applied by any of them.
    assert_eq!(p.running.link("svc").unwrap().status().fault, None);
}

#[tokio::test]
async fn health_and_unknown_paths() {
    let (echo, _) = echo_server().await;
    let p = proxy(&[("svc", echo.to_string())]).await;
    let r = p
        .http
        .get(format!("{}/healthz", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = p
        .http
        .get(format!("{}/nope", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let err: ErrorBody = r.json().await.unwrap();
    assert!(err.error.contains("GET /links"), "{}", err.error);
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_links_from_its_command_line() {
    let (echo, _) = echo_server().await;
    let (listen, admin) = (free_port(), free_port());
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_lab-faultproxy"))
            .args([
                "--link",
                &format!("svc=127.0.0.1:{listen}->{echo}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{admin}/healthz"))
            .send()
            .await
        {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the proxy did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .unwrap();
    round_trip(&mut c, b"through the binary").await;
    let r = http
        .put(format!("http://127.0.0.1:{admin}/links/svc/fault"))
        .body(r#"{"latency_ms": 100, "direction": "to-service"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: LinkStatus = r.json().await.unwrap();
    assert_eq!(status.fault.map(|f| f.latency_ms), Some(100));
    let rtt = round_trip(&mut c, b"slower").await;
    assert!(rtt >= Duration::from_millis(100), "{rtt:?}");
}

#[test]
fn the_binary_explains_a_bad_link_and_a_taken_port() {
    let out = Command::new(env!("CARGO_BIN_EXE_lab-faultproxy"))
        .args(["--link", "svc=127.0.0.1:1", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NAME=LISTEN->UPSTREAM"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_lab-faultproxy"))
        .args([
            "--link",
            &format!("svc=127.0.0.1:{port}->127.0.0.1:9"),
            "--admin",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot listen on") && stderr.contains("another program"),
        "{stderr}"
    );
}
