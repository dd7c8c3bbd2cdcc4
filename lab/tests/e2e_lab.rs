//! End to end with real Docker: `lab up` builds a lab of real containers that
//! serve real requests through the loopback entry point, replicate a deposit
//! to the replica, reconcile without churn, and leave nothing behind.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{docker_ready, eventually, leftovers, TestLab};

#[tokio::test(flavor = "multi_thread")]
async fn up_serve_replicate_reconcile_down() {
    if !docker_ready() {
        return;
    }
    let lab = TestLab::new("e2e-up");
    let out = lab.ok(&["up", "--servers", "3", "--replicas", "1", "--port", "0"]);
    assert!(out.contains("Entry point"), "{out}");

    // Every service healthy, every port on loopback.
    let st = lab.status();
    let services = st["services"].as_array().unwrap();
    let names: BTreeSet<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["lb-1", "server-1", "server-2", "server-3", "redis", "db-1", "db-2"])
    );
    for s in services {
        assert_eq!(s["health"], "healthy", "{s}");
        for (_, addr) in s["ports"].as_object().unwrap() {
            assert!(addr.as_str().unwrap().starts_with("127.0.0.1:"), "{s}");
        }
    }
    let replica = services.iter().find(|s| s["name"] == "db-2").unwrap();
    assert_eq!(replica["replication"]["mode"], "async");
    // Names say nothing of the part; status does, and `primary` finds it.
    assert_eq!(replica["db_role"], "replica");
    let first = services.iter().find(|s| s["name"] == "db-1").unwrap();
    assert_eq!(first["db_role"], "primary");
    assert_eq!(first["role"], "database");
    assert_eq!(st["failover"]["available"], false);
    assert!(
        st["failover"]["why"]
            .as_str()
            .unwrap()
            .contains("needs 3 database nodes"),
        "{st}"
    );
    let err = lab.fails(&["lag", "primary", "2s"]);
    assert!(
        err.contains("db-1 is primary now") && err.lines().count() == 1,
        "{err}"
    );

    // Requests through the balancer reach all three servers.
    let base = lab.entrypoint();
    let http = reqwest::Client::new();
    let mut served = BTreeSet::new();
    for _ in 0..30 {
        let r = http.get(format!("{base}/")).send().await.unwrap();
        assert!(r.status().is_success());
        served.insert(r.headers()["x-served-by"].to_str().unwrap().to_string());
    }
    assert_eq!(
        served,
        BTreeSet::from(["server-1".into(), "server-2".into(), "server-3".into()])
    );

    // A deposit on the primary becomes readable on the replica.
    let account = 4_000_000 + (std::process::id() % 100_000) as i64;
    let r = http
        .post(format!("{base}/accounts/{account}/deposit"))
        .json(&serde_json::json!({"amount": 500}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let body: serde_json::Value = eventually(
        Duration::from_secs(10),
        "the deposit on the replica",
        || {
            let http = http.clone();
            let url = format!("{base}/accounts/{account}");
            async move {
                let r = http.get(url).send().await.ok()?;
                let v: serde_json::Value = r.json().await.ok()?;
                (v["balance"] == 500).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(body["db"], "db-2");

    // The load driver through the CLI: memory sessions over three
    // round-robin servers lose sessions, and the report has DESIGN's fields.
    let out = lab.ok(&[
        "load",
        "--scenario",
        "sessions",
        "--users",
        "6",
        "--duration",
        "4s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    for field in [
        "scenario",
        "duration_s",
        "requests",
        "ok",
        "rps",
        "errors",
        "latency_ms",
        "per_server",
        "session_losses",
        "stale_reads",
        "lost_writes",
        "timeline",
    ] {
        assert!(report.get(field).is_some(), "{field} missing from {report}");
    }
    assert!(report["session_losses"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        report["per_server"].as_object().unwrap().len(),
        3,
        "{report}"
    );

    // The same configuration again changes nothing.
    let again = lab.ok(&["up", "--servers", "3", "--replicas", "1", "--port", "0"]);
    assert!(again.contains("nothing to change"), "{again}");

    // One server fewer: only server-3 goes, and the balancer learns it live.
    let lb_before = lab.status()["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lb-1")
        .cloned()
        .unwrap();
    let fewer = lab.ok(&["up", "--servers", "2", "--replicas", "1", "--port", "0"]);
    assert!(
        fewer.contains("removed") && fewer.contains("server-3"),
        "{fewer}"
    );
    assert!(!fewer.contains("recreated"), "{fewer}");
    let st = lab.status();
    let lb_after = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lb-1")
        .unwrap();
    assert_eq!(
        lb_before["ports"], lb_after["ports"],
        "the balancer was not recreated"
    );
    let in_lb: Vec<&str> = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("lb").is_some())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(in_lb, ["server-1", "server-2"]);

    // A typo gets a suggestion.
    let out = lab.lab(&["logs", "sever-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("did you mean server-1"), "{err}");

    // Down removes every container, volume and network of the lab.
    let out = lab.ok(&["down"]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_up_killed_half_way_is_removed_by_down() {
    if !docker_ready() {
        return;
    }
    let lab = TestLab::new("e2e-kill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["--lab", &lab.name, "up", "--port", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as it has created something, long before it is done.
    eventually(Duration::from_secs(60), "the first container", || {
        let name = lab.name.clone();
        async move {
            let o = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=scaling-lab.lab={name}"),
                ])
                .output()
                .ok()?;
            (!o.stdout.is_empty()).then_some(())
        }
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !leftovers(&lab.name).is_empty(),
        "the killed up had created something"
    );
    lab.ok(&["down"]);
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}
