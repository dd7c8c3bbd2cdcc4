//! Servers that die, hang or misbehave: health checks, retries, 502/503/504.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Lb};
use http::Method;

/// Result of a bounded concurrent GET load.
struct LoadResult {
    ok: usize,
    failures: Vec<(Instant, String)>,
}

/// `workers` clients send GETs in a loop for `duration` (at most `cap`
/// requests in all); `kill` runs after `kill_after`. Returns the outcome
/// and the moment of the kill.
async fn load_with_kill(
    lb: &Lb,
    victim: &Backend,
    workers: usize,
    duration: Duration,
    kill_after: Duration,
    cap: usize,
) -> (LoadResult, Instant) {
    let start = Instant::now();
    let end = start + duration;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = lb.client.clone();
        let url = lb.url("/");
        let (sent, failures, ok) = (sent.clone(), failures.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end && sent.fetch_add(1, Ordering::SeqCst) < cap {
                match client.send(Method::GET, &url, &[], "").await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push((Instant::now(), format!("{} {}", r.status, r.body))),
                    Err(e) => failures.lock().unwrap().push((Instant::now(), e)),
                }
            }
        }));
    }
    tokio::time::sleep(kill_after).await;
    let killed_at = Instant::now();
    victim.kill().await;
    for t in tasks {
        t.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    (
        LoadResult {
            ok: ok.load(Ordering::SeqCst),
            failures,
        },
        killed_at,
    )
}

async fn three() -> [Backend; 3] {
    let b = [
        Backend::start("server-1").await,
        Backend::start("server-2").await,
        Backend::start("server-3").await,
    ];
    // a little work per request, so some are in flight when a server dies
    for s in &b {
        s.set_delay(Duration::from_millis(3));
    }
    b
}

#[tokio::test]
async fn killing_a_server_under_load_loses_nothing_with_retries_on() {
    let b = three().await;
    let lb = Lb::start(common::config(&b.iter().collect::<Vec<_>>())).await;
    let (res, _) = load_with_kill(
        &lb,
        &b[1],
        8,
        Duration::from_secs(4),
        Duration::from_secs(1),
        20_000,
    )
    .await;
    assert!(
        res.failures.is_empty(),
        "{} failures, first: {:?}",
        res.failures.len(),
        res.failures.first()
    );
    assert!(res.ok > 200, "too little load to mean anything: {}", res.ok);
    assert!(b[1].gets() > 10, "server-2 served nothing before it died");
    let m = lb.metrics().await;
    assert!(
        m.contains(r#"lb_retries_total{server="server-2"}"#),
        "the kill must have caused retries:\n{m}"
    );
    assert!(
        m.contains(r#"lb_health_transitions_total{server="server-2",to="down"} 1"#),
        "{m}"
    );
    assert_eq!(lb.state_of("server-2").await, "down");
}

#[tokio::test]
async fn with_retries_off_failures_stop_within_interval_times_fall_plus_one_second() {
    let b = three().await;
    let mut cfg = common::config(&b.iter().collect::<Vec<_>>());
    cfg.retries = false;
    let window = cfg.health.interval * cfg.health.fall + Duration::from_secs(1);
    let lb = Lb::start(cfg).await;
    // load goes on well past the window, so late failures would be seen
    let (res, killed_at) = load_with_kill(
        &lb,
        &b[1],
        8,
        Duration::from_secs(5),
        Duration::from_secs(1),
        20_000,
    )
    .await;
    assert!(
        !res.failures.is_empty(),
        "without retries the kill must cost some requests"
    );
    let last = res.failures.iter().map(|(t, _)| *t).max().unwrap();
    let after = last.saturating_duration_since(killed_at);
    eprintln!(
        "{} failures, the last {after:?} after the kill; {} ok",
        res.failures.len(),
        res.ok
    );
    assert!(
        after <= window,
        "last failure {after:?} after the kill, window {window:?}; {:?}",
        res.failures.last()
    );
    for (_, why) in &res.failures {
        assert!(why.starts_with("502"), "{why}");
        assert!(why.contains("server-2"), "{why}");
    }
    assert!(res.ok > 200);
}

#[tokio::test]
async fn post_is_never_retried_but_get_is() {
    // server-1 closes connections without answering; server-2 is fine.
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    a.state.drop_requests.store(true, Ordering::SeqCst);
    let lb = Lb::start(common::config(&[&a, &b])).await;
    // round-robin's first turn is server-1
    let r = lb
        .client
        .send(Method::POST, &lb.url("/echo"), &[], "{\"amount\":50}")
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.body);
    let j = r.json();
    assert_eq!(j["server"], "server-1");
    assert!(
        j["error"].as_str().unwrap().contains("not idempotent"),
        "{j}"
    );
    assert_eq!(a.posts(), 1);
    assert_eq!(b.posts(), 0, "the POST must not be replayed on server-2");

    // the same failure on a GET is retried on server-2
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    a.state.drop_requests.store(true, Ordering::SeqCst);
    let lb = Lb::start(common::config(&[&a, &b])).await;
    let r = lb
        .client
        .send(Method::PUT, &lb.url("/echo"), &[], "replay me")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.served_by(), Some("server-2"));
    assert_eq!(
        r.json()["body"],
        "replay me",
        "the buffered body is replayed"
    );
    assert_eq!(a.gets(), 1, "server-1 got the first try");
}

#[tokio::test]
async fn bad_gateway_then_service_unavailable() {
    let a = Backend::start("server-1").await;
    a.state.drop_requests.store(true, Ordering::SeqCst);
    let lb = Lb::start(common::config(&[&a])).await;
    let r = lb.get("/").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.headers["content-type"], "application/json");
    let j = r.json();
    assert_eq!(j["server"], "server-1");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("closed before response headers"),
        "{j}"
    );
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("no other healthy server"),
        "{j}"
    );

    // the failure took server-1 down (passive check): now nobody is up
    let r = lb.get("/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let j = r.json();
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .starts_with("no healthy server"),
        "{j}"
    );
    assert!(
        j["error"].as_str().unwrap().contains("server-1 down"),
        "{j}"
    );
    let s = lb.servers().await;
    assert_eq!(s["servers"][0]["state"], "down");
    assert_eq!(
        s["servers"][0]["reason"],
        "connection closed before response headers (a request failed)"
    );
}

#[tokio::test]
async fn connection_refused_is_a_502_naming_the_server() {
    let a = Backend::start("server-1").await;
    let cfg = common::config(&[&a]);
    a.kill().await;
    let lb = Lb::start(cfg).await;
    let r = lb.get("/").await;
    assert_eq!(r.status, 502);
    let j = r.json();
    assert_eq!(j["server"], "server-1");
    assert!(
        j["error"].as_str().unwrap().contains("connection refused"),
        "{j}"
    );
    assert_eq!(lb.state_of("server-1").await, "down");
}

#[tokio::test]
async fn slow_server_gets_a_504() {
    let a = Backend::start("server-1").await;
    a.set_delay(Duration::from_secs(3));
    let mut cfg = common::config(&[&a]);
    cfg.timeouts.response = Duration::from_millis(300);
    let lb = Lb::start(cfg).await;
    let started = Instant::now();
    let r = lb.get("/").await;
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "504 must come at the response timeout"
    );
    let j = r.json();
    assert_eq!(j["server"], "server-1");
    assert!(j["error"].as_str().unwrap().contains("too slow"), "{j}");
    assert!(j["request_id"].as_str().is_some());
}

#[tokio::test]
async fn active_checks_take_a_failing_server_down_and_bring_it_back() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    a.state.unhealthy.store(true, Ordering::SeqCst);
    lb.wait_state("server-1", "down", Duration::from_secs(5))
        .await;
    let s = lb.servers().await;
    assert_eq!(s["servers"][0]["reason"], "HTTP 500 (3 failed checks)");
    assert_eq!(s["servers"][0]["last_check_ok"], false);
    assert!(s["servers"][0]["last_check"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // while down it gets nothing (it still answers requests: only checks decide)
    let before = a.gets();
    for _ in 0..10 {
        assert_eq!(lb.get("/").await.served_by(), Some("server-2"));
    }
    assert_eq!(a.gets(), before);
    a.state.unhealthy.store(false, Ordering::SeqCst);
    lb.wait_state("server-1", "up", Duration::from_secs(5))
        .await;
    let s = lb.servers().await;
    assert_eq!(s["servers"][0]["reason"], serde_json::Value::Null);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(lb.get("/").await.served_by().unwrap().to_owned());
    }
    assert!(seen.contains("server-1"));
    let m = lb.metrics().await;
    assert!(
        m.contains(r#"lb_health_transitions_total{server="server-1",to="up"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn forwarded_for_request_id_and_hop_by_hop_headers() {
    let a = Backend::start("server-1").await;
    let lb = Lb::start(common::config(&[&a])).await;
    let url = lb.url("/echo");
    let r = lb
        .client
        .send(
            Method::GET,
            &url,
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("te", "trailers"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.served_by(), Some("server-1"));
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    let id = seen["x-request-id"]
        .as_str()
        .expect("a request id is generated");
    assert_eq!(id.len(), 36);
    assert_eq!(r.headers["x-request-id"], id, "the client sees the same id");
    assert!(
        seen.get("x-secret").is_none(),
        "headers named in Connection are hop-by-hop: {seen}"
    );
    assert!(seen.get("te").is_none(), "{seen}");
    assert!(seen.get("host").is_some());

    let r = lb
        .client
        .send(Method::GET, &url, &[("x-request-id", "lesson-42")], "")
        .await
        .unwrap();
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-request-id"], "lesson-42");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(r.headers["x-request-id"], "lesson-42");
}

/// An address that never answers the TCP handshake, like a frozen or
/// vanished container: a listening socket whose accept queue is full
/// (Linux then drops new SYNs instead of refusing them).
async fn black_hole() -> (
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
    std::net::SocketAddr,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    // fill the queue until a connect hangs
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fill.push(s),
            _ => break,
        }
    }
    (listener, fill, addr)
}

#[tokio::test]
async fn a_server_that_never_answers_costs_one_connect_timeout_then_is_retried() {
    let (_hole, _fill, hole_addr) = black_hole().await;
    let b = Backend::start("server-2").await;
    let mut cfg = common::config(&[&b]);
    cfg.upstreams.insert(
        0,
        lab_balancer::config::UpstreamConfig {
            name: "server-1".into(),
            address: hole_addr.to_string(),
        },
    );
    let connect = cfg.timeouts.connect;
    let lb = Lb::start(cfg).await;
    let started = Instant::now();
    let r = lb.get("/").await; // round-robin's first turn: server-1, the black hole
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.served_by(), Some("server-2"));
    assert!(
        took >= connect,
        "the connect timeout was not waited for: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "a connect timeout is short: {took:?}"
    );
    let s = lb.servers().await;
    assert_eq!(s["servers"][0]["state"], "down");
    // the passive check says so; an active check may have said it since
    let reason = s["servers"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("connect timed out ("), "{reason}");
}
