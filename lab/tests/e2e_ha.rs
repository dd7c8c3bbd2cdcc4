//! End to end with real Docker: two balancers share a floating address.
//! A crash or a pause of the holder moves it to the other within VRRP's
//! timers, nothing fails in a steady state, bad input gets one line, and
//! `lab down` removes the edge with everything else.

mod common;

use std::time::{Duration, Instant};

use common::{docker_ready, eventually, TestLab};
use serde_json::Value;

fn vip_of(status: &Value, name: &str) -> Option<String> {
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["vip"]
        .as_str()
        .map(str::to_string)
}

/// The balancer that holds the floating address, when exactly one says so.
fn master(status: &Value) -> Option<&'static str> {
    let m: Vec<&'static str> = ["lb-1", "lb-2"]
        .into_iter()
        .filter(|n| vip_of(status, n).as_deref() == Some("master"))
        .collect();
    (m.len() == 1).then(|| m[0])
}

fn other(lb: &str) -> &'static str {
    if lb == "lb-1" {
        "lb-2"
    } else {
        "lb-1"
    }
}

/// One user's request on a new connection, as a browser arriving would.
async fn get_ok(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// From now, requests every 100 ms until they have failed and then
/// succeeded 10 times in a row; returns (failed, seconds from the first
/// to the last failure).
async fn failover_window(http: &reqwest::Client, base: &str) -> (u32, f64) {
    let start = Instant::now();
    let (mut failed, mut first, mut last, mut streak) = (0, None, 0.0, 0);
    while start.elapsed() < Duration::from_secs(30) {
        let t = start.elapsed().as_secs_f64();
        if get_ok(http, base).await {
            streak += 1;
            if failed > 0 && streak >= 10 {
                break;
            }
        } else {
            failed += 1;
            streak = 0;
            first.get_or_insert(t);
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (failed, last - first.unwrap_or(last))
}

/// Failures may last at most 3 x advert_int + skew (3.6 s) and some slack
/// for a busy machine.
const WINDOW_LIMIT_S: f64 = 6.0;

/// Waits until `lb` says it is a VRRP backup again.
async fn back_as_backup(lab: &TestLab, lb: &'static str, what: &str) {
    eventually(Duration::from_secs(30), what, || {
        let s = lab.status();
        async move { (vip_of(&s, lb).as_deref() == Some("backup")).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pair_fails_over_on_crash_pause_and_partition_and_down_removes_it_all() {
    if !docker_ready() {
        return;
    }
    // Bad input: one line, a failing exit code.
    let bad = common::lab(&["up", "--balancers", "3", "--no-wait"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--balancers 3"), "{err}");

    let lab = TestLab::new("e2e-ha");
    lab.ok(&[
        "up",
        "--servers",
        "1",
        "--replicas",
        "0",
        "--reads",
        "primary",
        "--port",
        "0",
    ]);
    // One balancer: there is no lb-2 to crash.
    let out = lab.lab(&["crash", "lb-2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("lb-2") && err.contains("lb-1"), "{err}");

    // The same lab becomes a pair, live.
    lab.ok(&["set", "balancers=2"]);
    let s = lab.status();
    let holder = master(&s).unwrap_or_else(|| panic!("one master in {s}"));
    assert_eq!(vip_of(&s, other(holder)).as_deref(), Some("backup"), "{s}");
    assert_eq!(s["edge"]["name"], "edge", "{s}");
    assert!(
        !s["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "edge"),
        "the edge is not part of the site: {s}"
    );
    let text = lab.ok(&["status"]);
    assert!(text.contains("outside the site: edge"), "{text}");
    assert!(text.contains("vip master since"), "{text}");
    let base = lab.entrypoint();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap();

    // A steady state over both: no failed request.
    let mut failed = 0;
    for _ in 0..100 {
        if !get_ok(&http, &base).await {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed, 0, "requests failed with nothing broken");

    // Crash the holder: the other takes the address, users see a window.
    lab.ok(&["crash", holder]);
    let (failed, window) = failover_window(&http, &base).await;
    assert!(failed > 0, "a crash of the holder costs some requests");
    assert!(
        window < WINDOW_LIMIT_S,
        "failures lasted {window:.1} s, more than 3 x advert_int + skew + slack"
    );
    let s = lab.status();
    assert_eq!(master(&s), Some(other(holder)), "{s}");
    // It comes back as backup: preempt is off.
    lab.ok(&["start", holder]);
    back_as_backup(&lab, holder, "the old holder back as backup").await;

    // Pause the holder (now the other one): a hung balancer gives it up too.
    let holder = other(holder);
    lab.ok(&["pause", holder]);
    let (failed, window) = failover_window(&http, &base).await;
    assert!(
        window < WINDOW_LIMIT_S,
        "{failed} failed over {window:.1} s after a pause"
    );
    let s = lab.status();
    assert_eq!(vip_of(&s, holder).as_deref(), Some("unknown"), "{s}");
    assert_eq!(vip_of(&s, other(holder)).as_deref(), Some("master"), "{s}");
    lab.ok(&["resume", holder]);
    eventually(
        Duration::from_secs(30),
        "one master after the resume",
        || {
            let s = lab.status();
            async move { master(&s).map(|_| ()) }
        },
    )
    .await;
    // A woken lb-1 outranks lb-2 and takes the address back, which can
    // cost a second or two of refused connections (bench/ha/README.md).
    eventually(Duration::from_secs(20), "service after the resume", || {
        let (http, base) = (http.clone(), base.clone());
        async move { get_ok(&http, &base).await.then_some(()) }
    })
    .await;

    // Partition the holder: the other takes over. Healed, it comes back as
    // a backup that still works: when the new holder then dies, it takes
    // the address again.
    let s = lab.status();
    let holder = master(&s).unwrap_or_else(|| panic!("one master in {s}"));
    lab.ok(&["partition", holder]);
    let (failed, window) = failover_window(&http, &base).await;
    assert!(
        window < WINDOW_LIMIT_S,
        "{failed} failed over {window:.1} s after a partition"
    );
    let s = lab.status();
    assert_eq!(master(&s), Some(other(holder)), "{s}");
    lab.ok(&["heal", holder]);
    back_as_backup(&lab, holder, "the healed holder back as backup").await;
    lab.ok(&["crash", other(holder)]);
    let (failed, window) = failover_window(&http, &base).await;
    assert!(
        window < WINDOW_LIMIT_S,
        "{failed} failed over {window:.1} s: the healed balancer did not take over in time"
    );
    let s = lab.status();
    assert_eq!(
        master(&s),
        Some(holder),
        "the healed balancer holds the address: {s}"
    );

    // Down removes the edge, both balancers and the network.
    lab.ok(&["down"]);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}
