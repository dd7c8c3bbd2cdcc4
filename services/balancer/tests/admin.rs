//! The admin API: reading state, changing servers and settings live,
//! draining, metrics, and stopping gracefully.

mod common;

use std::time::{Duration, Instant};

use common::{tally, Backend, Lb};
use http::Method;

#[tokio::test]
async fn get_servers_describes_every_server() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    for _ in 0..4 {
        lb.get("/").await;
    }
    let v = lb.servers().await;
    assert_eq!(v["strategy"], "round-robin");
    assert_eq!(v["retries"], true);
    let s = &v["servers"][0];
    assert_eq!(s["name"], "server-1");
    assert_eq!(s["address"], a.addr.to_string());
    assert_eq!(s["state"], "up");
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["requests"], 2);
    assert_eq!(s["failures"], 0);
    assert!(s.get("last_check").is_some() && s.get("last_check_ok").is_some());
    assert_eq!(s["reason"], serde_json::Value::Null);
    assert_eq!(lb.admin(Method::GET, "/healthz", "").await.status, 200);
}

#[tokio::test]
async fn a_server_added_through_the_api_gets_traffic_without_restart() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    for _ in 0..10 {
        assert_eq!(lb.get("/").await.status, 200);
    }
    let c = Backend::start("server-3").await;
    let body =
        serde_json::json!({ "servers": [a.upstream(), b.upstream(), c.upstream()] }).to_string();
    let r = lb.admin(Method::PUT, "/servers", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["servers"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["servers"][0]["requests"], 5,
        "a server that stays keeps its counters"
    );

    let mut resps = Vec::new();
    for _ in 0..30 {
        resps.push(lb.get("/").await);
    }
    let t = tally(&resps);
    for name in ["server-1", "server-2", "server-3"] {
        let n = t.get(name).copied().unwrap_or(0);
        assert!((9..=11).contains(&n), "{name}: {t:?}");
    }
    assert!(c.gets() >= 9);
}

#[tokio::test]
async fn a_removed_server_finishes_its_in_flight_requests() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    // round-robin's first turn: server-1
    let client = lb.client.clone();
    let url = lb.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { client.get(&url).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.active() == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached server-1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = serde_json::json!({ "servers": [b.upstream()] }).to_string();
    assert_eq!(lb.admin(Method::PUT, "/servers", &body).await.status, 200);
    for _ in 0..6 {
        assert_eq!(lb.get("/").await.served_by(), Some("server-2"));
    }
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.served_by(), Some("server-1"));
    assert_eq!(lb.state_of("server-1").await, "absent");
}

#[tokio::test]
async fn settings_change_live_and_mistakes_are_400() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    let r = lb
        .admin(Method::PATCH, "/settings", r#"{"strategy":"least-conn"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"strategy": "least-conn", "retries": true})
    );
    let r = lb
        .admin(Method::PATCH, "/settings", r#"{"retries":false}"#)
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"strategy": "least-conn", "retries": false})
    );
    let v = lb.servers().await;
    assert_eq!(v["strategy"], "least-conn");
    assert_eq!(v["retries"], false);

    let r = lb
        .admin(Method::PATCH, "/settings", r#"{"strategy":"random"}"#)
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown strategy"),
        "{}",
        r.body
    );
    let r = lb
        .admin(Method::PATCH, "/settings", r#"{"strategy":"#)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("invalid JSON"));
    let r = lb
        .admin(
            Method::PUT,
            "/servers",
            r#"{"servers":[{"name":"a","address":"a:1"},{"name":"a","address":"b:1"}]}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("twice"));
    let r = lb
        .admin(
            Method::PUT,
            "/servers",
            r#"{"servers":[{"name":"a","address":"no-port"}]}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = lb.admin(Method::PUT, "/servers", r#"{"server":[]}"#).await;
    assert_eq!(r.status, 400);
    // nothing changed by the mistakes
    assert_eq!(lb.servers().await["servers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn draining_stops_new_requests_and_lets_running_ones_finish() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    let client = lb.client.clone();
    let url = lb.url("/slow?ms=1000");
    let slow = tokio::spawn(async move { client.get(&url).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.active() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = lb.admin(Method::POST, "/servers/server-1/drain", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "draining");
    assert_eq!(r.json()["in_flight"], 1);
    for _ in 0..6 {
        assert_eq!(lb.get("/").await.served_by(), Some("server-2"));
    }
    assert_eq!(slow.await.unwrap().status, 200);
    let r = lb
        .admin(Method::POST, "/servers/server-1/undrain", "")
        .await;
    assert_eq!(r.json()["state"], "up");
    let t = tally(&[lb.get("/").await, lb.get("/").await]);
    assert_eq!(t.get("server-1"), Some(&1));

    let r = lb.admin(Method::POST, "/servers/server-9/drain", "").await;
    assert_eq!(r.status, 404);
    let e = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        e.contains("server-9") && e.contains("server-1, server-2"),
        "{e}"
    );

    // draining every server leaves nobody: 503
    lb.admin(Method::POST, "/servers/server-1/drain", "").await;
    lb.admin(Method::POST, "/servers/server-2/drain", "").await;
    let r = lb.get("/").await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("server-2 draining"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn metrics_count_requests_by_server_and_status() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let lb = Lb::start(common::config(&[&a, &b])).await;
    for _ in 0..6 {
        lb.get("/").await;
    }
    let r = lb.admin(Method::GET, "/metrics", "").await;
    assert_eq!(r.status, 200);
    let m = r.body;
    assert!(
        m.contains(r#"lb_requests_total{server="server-1",status="200"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"lb_requests_total{server="server-2",status="200"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"lb_request_duration_seconds_count{server="server-1"} 3"#),
        "{m}"
    );
    assert!(m.contains("lb_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains(r#"lb_server_up{server="server-2"} 1"#), "{m}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_requests() {
    let a = Backend::start("server-1").await;
    let lb = Lb::start(common::config(&[&a])).await;
    let proxy = lb.running.proxy_addr();
    let client = lb.client.clone();
    let url = lb.url("/slow?ms=1000");
    let slow = tokio::spawn(async move { client.get(&url).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.active() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.running.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "a stopping balancer must not accept new connections"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finishes");
    tokio::time::timeout(Duration::from_secs(5), lb.running.wait())
        .await
        .expect("stops once drained")
        .unwrap();
}
