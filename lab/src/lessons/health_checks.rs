//! Lesson 5: health checks. A balancer keeps sending requests to a server
//! that died until its health checks notice; those requests fail. How long
//! that window lasts is set by the check interval and the number of failed
//! checks needed (fall). Retrying an idempotent request on another server
//! hides the window from users entirely.

use crate::lb_admin::ServerState;
use std::time::Duration;

use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Scenario};
use crate::topology::{Reads, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "health-checks",
    number: 5,
    summary: "crash a server under load: failures only until the balancer notices; none with retries",
    hypothesis: "when a server dies, requests fail only until the balancer's health checks notice (at most interval x fall + 1 s); with retries on, no GET fails at all",
    body: |c| Box::pin(body(c)),
};

/// Seconds from `at` to the last failed operation in a history file.
pub(super) fn failures_after(history: &std::path::Path, at: Duration) -> (u64, Option<f64>) {
    let text = std::fs::read_to_string(history).unwrap_or_default();
    let mut count = 0;
    let mut last: Option<f64> = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["outcome"] == "ok" {
            continue;
        }
        let t = v["t_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        // Latency counts from when the request was sent: a request that
        // failed after the crash was under way at most that long before.
        if t + v["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0 >= at.as_secs_f64() {
            count += 1;
            let since = t + v["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0 - at.as_secs_f64();
            last = Some(last.map_or(since, |l: f64| l.max(since)));
        }
    }
    (count, last)
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let t = Topology {
        servers: 3,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::Off,
        ..Topology::default()
    };
    // The window computed from the knobs, plus 1 s for a request already
    // under way and the scheduler of a busy laptop.
    let h = t.health;
    let window = h.detection_window().as_secs_f64() + 1.0;
    c.say(&format!(
        "3 servers behind a round-robin balancer, retries off; health checks every {} ms, down after {} failures",
        h.interval.as_millis(),
        h.fall
    ));
    c.up(t).await?;
    let dir = tempfile::tempdir().map_err(|e| super::step("make a temporary folder")(&e))?;
    let mut table = Table::new(
        "Crash of a server under 100 requests/s",
        &[
            "retries",
            "requests",
            "failed",
            "last failure after the crash",
        ],
    );

    c.say("100 GET/s for 10 s; server-1 crashes at 3 s");
    let (report, failed, last) =
        crash_under_load(c, &dir.path().join("off.jsonl"), "server-1").await?;
    table.row(vec![
        "off".into(),
        report.requests.to_string(),
        report.errors.total().to_string(),
        last.map(|l| format!("{l:.2} s"))
            .unwrap_or_else(|| "-".into()),
    ]);
    c.expect(
        "without retries, requests fail while the balancer has not noticed",
        format!("{failed} failed after the crash"),
        failed > 0,
    );
    c.expect(
        &format!("the failures stop within interval x fall + 1 s = {window:.1} s"),
        last.map(|l| format!("last failure {l:.2} s after the crash"))
            .unwrap_or_else(|| "no failure".into()),
        last.is_some_and(|l| l <= window),
    );

    c.say("server-1 back, retries on; the same load, server-2 crashes at 3 s");
    c.faults().start("server-1").await?;
    c.set(&["retries=on"]).await?;
    wait_all_up(c).await?;
    let (report, _, _) = crash_under_load(c, &dir.path().join("on.jsonl"), "server-2").await?;
    table.row(vec![
        "on".into(),
        report.requests.to_string(),
        report.errors.total().to_string(),
        "-".into(),
    ]);
    c.table(table);
    c.expect(
        "with retries, no GET fails through the crash",
        format!("{} of {} failed", report.errors.total(), report.requests),
        report.errors.total() == 0 && report.requests > 500,
    );
    Ok(())
}

/// 100 GET/s for 10 s with `victim` crashed 3 s in: the report, and the
/// failures after the crash with the time of the last one.
async fn crash_under_load(
    c: &Ctx<'_>,
    history: &std::path::Path,
    victim: &str,
) -> Result<(crate::load::Report, u64, Option<f64>)> {
    let args = LoadArgs {
        scenario: Scenario::Ping,
        rate: Some(100.0),
        duration: Duration::from_secs(10),
        history: Some(history.to_path_buf()),
        ..LoadArgs::default()
    };
    let (report, at) = c
        .load_with(args, Duration::from_secs(3), || async {
            c.faults().crash(victim).await.map(|_| ())
        })
        .await?;
    let (failed, last) = failures_after(history, at);
    Ok((report, failed, last))
}

/// Waits until the balancer sees every server up again.
pub(super) async fn wait_all_up(c: &Ctx<'_>) -> Result<()> {
    let admin = c
        .address("lb-1", crate::roles::balancer::ADMIN_PORT)
        .await?;
    let lb = (c.lb)(&admin);
    for _ in 0..100 {
        let v = lb.view().await?;
        if v.servers.iter().all(|s| s.state == ServerState::Up) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(super::LessonError::Step {
        step: "see every server up in the balancer".into(),
        reason: "not within 20 s".into(),
    }
    .into())
}
