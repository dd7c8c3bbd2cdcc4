//! The four strategies, with real servers on loopback.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{get_from, tally, Backend, Lb};
use lab_balancer::strategy::Strategy;

#[tokio::test]
async fn round_robin_shares_exactly() {
    let (a, b, c) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
        Backend::start("server-3").await,
    );
    let lb = Lb::start(common::config(&[&a, &b, &c])).await;
    let mut resps = Vec::new();
    for _ in 0..300 {
        let r = lb.get("/").await;
        assert_eq!(r.status, 200);
        resps.push(r);
    }
    let t = tally(&resps);
    for name in ["server-1", "server-2", "server-3"] {
        let n = t.get(name).copied().unwrap_or(0);
        assert!((99..=101).contains(&n), "{name} got {n}: {t:?}");
    }
    // and the servers agree with what the balancer says
    assert_eq!(a.gets() + b.gets() + c.gets(), 300);
}

#[tokio::test]
async fn least_conn_prefers_the_idle_server() {
    let (a, b) = (
        Backend::start("server-1").await,
        Backend::start("server-2").await,
    );
    let mut cfg = common::config(&[&a, &b]);
    cfg.strategy = Strategy::LeastConn;
    let lb = Lb::start(cfg).await;

    // Hold server-1 busy with a slow request. Requests that land on server-2
    // finish at once; keep sending until server-1 holds one (least-conn
    // itself then keeps every other request off it).
    let mut slow = Vec::new();
    a.set_delay(Duration::from_secs(4));
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.active() < 1 {
        assert!(Instant::now() < deadline, "server-1 never got a request");
        let client = lb.client.clone();
        let url = lb.url("/");
        slow.push(tokio::spawn(async move { client.get(&url).await }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = lb.servers().await;
    assert!(v["servers"][0]["in_flight"].as_u64().unwrap() >= 1, "{v}");

    let mut resps = Vec::new();
    for _ in 0..20 {
        resps.push(lb.get("/").await);
    }
    let t = tally(&resps);
    assert_eq!(
        t.get("server-2"),
        Some(&20),
        "the idle server must take every request: {t:?}"
    );
    assert!(a.active() >= 1, "server-1 was still busy during the test");

    // the slow ones still complete
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
}

fn client_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))
}

#[tokio::test]
async fn ip_hash_keeps_a_client_on_one_server_and_moves_it_when_that_server_dies() {
    let backends = [
        Backend::start("server-1").await,
        Backend::start("server-2").await,
        Backend::start("server-3").await,
    ];
    let mut cfg = common::config(&backends.iter().collect::<Vec<_>>());
    cfg.strategy = Strategy::IpHash;
    let lb = Lb::start(cfg).await;
    let addr = lb.running.proxy_addr();

    // 20 clients, each on its own loopback address, 4 requests each
    let clients: Vec<u8> = (2..22).collect();
    let mut home = std::collections::HashMap::new();
    for &c in &clients {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            let r = get_from(client_ip(c), addr, "/").await;
            assert_eq!(r.status, 200);
            seen.insert(r.served_by().unwrap().to_owned());
        }
        assert_eq!(seen.len(), 1, "client 127.0.0.{c} moved between {seen:?}");
        home.insert(c, seen.into_iter().next().unwrap());
    }
    let used: std::collections::HashSet<_> = home.values().cloned().collect();
    assert!(used.len() >= 2, "20 clients all hashed to {used:?}");

    // kill the server of the first client
    let victim = home[&clients[0]].clone();
    let dead = backends.iter().find(|b| b.name == victim).unwrap();
    dead.kill().await;

    for &c in &clients {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            let r = get_from(client_ip(c), addr, "/").await;
            assert_eq!(r.status, 200, "client 127.0.0.{c}: {}", r.body);
            seen.insert(r.served_by().unwrap().to_owned());
        }
        assert_eq!(
            seen.len(),
            1,
            "client 127.0.0.{c} is not stable after the kill: {seen:?}"
        );
        let now = seen.into_iter().next().unwrap();
        if home[&c] == victim {
            assert_ne!(now, victim, "client 127.0.0.{c} still on the dead server");
        } else {
            assert_eq!(now, home[&c], "client 127.0.0.{c} of a live server moved");
        }
    }
}

fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap();
    let (k, v) = first.split_once('=').unwrap();
    assert_eq!(k, "lab_server");
    v.to_owned()
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_and_is_rewritten_when_its_server_dies() {
    let backends = [
        Backend::start("server-1").await,
        Backend::start("server-2").await,
        Backend::start("server-3").await,
    ];
    let mut cfg = common::config(&backends.iter().collect::<Vec<_>>());
    cfg.strategy = Strategy::Sticky;
    let lb = Lb::start(cfg).await;
    let url = lb.url("/");

    let first = lb.get("/").await;
    let pinned = cookie_value(&first.set_cookie().expect("first answer sets the cookie"));
    assert_eq!(first.served_by(), Some(pinned.as_str()));

    let cookie = format!("other=1; lab_server={pinned}");
    for _ in 0..12 {
        let r = lb
            .client
            .send(http::Method::GET, &url, &[("cookie", &cookie)], "")
            .await
            .unwrap();
        assert_eq!(r.served_by(), Some(pinned.as_str()));
        assert_eq!(
            r.set_cookie(),
            None,
            "no need to rewrite a cookie that is right"
        );
    }

    backends
        .iter()
        .find(|b| b.name == pinned)
        .unwrap()
        .kill()
        .await;
    let moved = lb
        .client
        .send(http::Method::GET, &url, &[("cookie", &cookie)], "")
        .await
        .unwrap();
    assert_eq!(moved.status, 200, "{}", moved.body);
    let new_home = moved.served_by().unwrap().to_owned();
    assert_ne!(new_home, pinned);
    let rewritten = moved.set_cookie().expect("the cookie must be rewritten");
    assert_eq!(cookie_value(&rewritten), new_home);
    assert!(rewritten.contains("Path=/"), "{rewritten}");

    let cookie = format!("lab_server={new_home}");
    for _ in 0..6 {
        let r = lb
            .client
            .send(http::Method::GET, &url, &[("cookie", &cookie)], "")
            .await
            .unwrap();
        assert_eq!(r.served_by(), Some(new_home.as_str()));
    }
}
