//! Lesson 5: health checks. A balancer keeps sending requests to a server
//! that died until it notices; those requests fail. How long that window
//! lasts depends on how it notices:
//!
//! * passive checks: a real request's connection is refused, and the server
//!   is taken down at once (the window is about nothing);
//! * active checks only: the balancer asks each server every `interval` and
//!   gives up after `fall` failures in a row, so the window is about
//!   interval × fall (the course's 3 seconds with checks every second and
//!   three failures);
//! * a hung server (paused: it accepts, never answers) refuses nothing, so
//!   only the active checks see it, each after its timeout.
//!
//! Retrying an idempotent request on another server hides the window from
//! users entirely.

use crate::lb_admin::ServerState;
use std::time::Duration;

use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadPlan, Scenario};
use crate::topology::{HealthChecks, Reads, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "health-checks",
    number: 5,
    summary: "crash and hang servers under load: the window before the balancer notices, with and without passive checks; none with retries",
    hypothesis: "a dead server gets requests until the balancer notices: at once with passive checks, after about interval x fall (3 s with checks every second, down after 3) with active checks only, at most fall x (interval + timeout) for a hung server; with retries on, no GET fails at all",
    body: |c| Box::pin(body(c)),
};

/// Seconds from `at` to the last failed operation in a history file, by
/// the time each ended or was sent.
pub(super) fn failures_after(
    history: &std::path::Path,
    at: Duration,
    when: When,
) -> (u64, Option<f64>) {
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
        let sent = v["t_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        // Latency counts from when the request was sent: a request that
        // failed after the fault was under way at most that long before.
        let t = match when {
            When::Done => sent + v["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            When::Sent => sent,
        };
        if t >= at.as_secs_f64() {
            count += 1;
            let since = t - at.as_secs_f64();
            last = Some(last.map_or(since, |l: f64| l.max(since)));
        }
    }
    (count, last)
}

/// The three windows the lesson measures, in seconds after the fault:
/// the last failed request of each (None: nothing failed), and how many.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Windows {
    pub passive: Option<f64>,
    pub passive_failed: u64,
    pub active: Option<f64>,
    pub active_failed: u64,
    pub hung: Option<f64>,
    pub hung_failed: u64,
}

/// The verdicts, as (expectation, measured, passed): a pure function of the
/// knobs and the measured windows.
pub fn verdicts(h: &HealthChecks, w: &Windows) -> Vec<(String, String, bool)> {
    let secs = |x: Option<f64>| {
        x.map(|l| format!("last failure {l:.2} s after the fault"))
            .unwrap_or_else(|| "no failure".into())
    };
    let active = h.detection_window().as_secs_f64();
    // The first check after the crash may come at once or one interval
    // later. Each failed check also waits (for its connection or its
    // answer) up to the check timeout before the next round starts, and a
    // request in flight adds up to a second: the window is at most
    // fall x (interval + timeout) + 1 s.
    let active_low = active - h.interval.as_secs_f64();
    let active_high = h.slowest_detection().as_secs_f64() + 1.0;
    let passive_high = 1.0;
    let hung = active_high;
    vec![
        (
            format!("with passive checks, a crash is noticed at once (failures stop within {passive_high:.1} s)"),
            format!("{} failed, {}", w.passive_failed, secs(w.passive)),
            w.passive.is_none_or(|l| l <= passive_high),
        ),
        (
            format!(
                "with active checks only, requests fail for about interval x fall = {active:.1} s (between {active_low:.1} s and fall x (interval + timeout) + 1 s = {active_high:.1} s)"
            ),
            format!("{} failed, {}", w.active_failed, secs(w.active)),
            w.active_failed > 0 && w.active.is_some_and(|l| (active_low..=active_high).contains(&l)),
        ),
        (
            format!(
                "a hung server gets requests until its checks time out fall times: at most fall x (interval + timeout) + 1 s = {hung:.1} s"
            ),
            format!(
                "{} failed, {}",
                w.hung_failed,
                w.hung
                    .map(|l| format!("the last one sent {l:.2} s after the fault"))
                    .unwrap_or_else(|| "no failure".into())
            ),
            w.hung_failed > 0 && w.hung.is_some_and(|l| l <= hung),
        ),
    ]
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    // The course's settings: a check every second, down after three.
    let t = Topology {
        servers: 3,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::Off,
        health: HealthChecks {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            passive: Toggle::On,
        },
        ..Topology::default()
    };
    let h = t.health;
    c.say(&format!(
        "3 servers behind a round-robin balancer, retries off; health checks every {} ms, down after {} failures, passive checks on",
        h.interval.as_millis(),
        h.fall
    ));
    c.up(t).await?;
    let dir = tempfile::tempdir().map_err(|e| super::step("make a temporary folder")(&e))?;
    let mut table = Table::new(
        "A server breaks under 100 requests/s (retries off)",
        &[
            "fault",
            "checks",
            "requests",
            "failed",
            "last failure after it",
        ],
    );
    let mut w = Windows::default();

    c.say("100 GET/s for 10 s; server-1 crashes at 3 s");
    let (report, failed, last) = fault_under_load(
        c,
        &dir.path().join("passive.jsonl"),
        Fault::Crash("server-1"),
        When::Done,
    )
    .await?;
    (w.passive, w.passive_failed) = (last, failed);
    table.row(row("crash", "passive + active", &report, failed, last));

    c.say("passive checks off: only the active checks can notice now");
    c.faults().start("server-1").await?;
    c.set(&["passive=off"]).await?;
    wait_all_up(c).await?;
    c.say("100 GET/s for 10 s; server-2 crashes at 3 s");
    let (report, failed, last) = fault_under_load(
        c,
        &dir.path().join("active.jsonl"),
        Fault::Crash("server-2"),
        When::Done,
    )
    .await?;
    (w.active, w.active_failed) = (last, failed);
    table.row(row("crash", "active only", &report, failed, last));

    c.say("server-2 back; 100 GET/s for 10 s; server-3 hangs (paused) at 3 s");
    c.faults().start("server-2").await?;
    wait_all_up(c).await?;
    let (report, failed, last) = fault_under_load(
        c,
        &dir.path().join("hung.jsonl"),
        Fault::Pause("server-3"),
        When::Sent,
    )
    .await?;
    (w.hung, w.hung_failed) = (last, failed);
    table.row(row("pause (hung)", "active only", &report, failed, last));
    c.faults().resume("server-3").await?;
    for (expectation, measured, passed) in verdicts(&h, &w) {
        c.expect(&expectation, measured, passed);
    }

    c.say("retries and passive checks on; the same load, server-1 crashes at 3 s");
    c.set(&["retries=on", "passive=on"]).await?;
    wait_all_up(c).await?;
    let (report, _, _) = fault_under_load(
        c,
        &dir.path().join("retries.jsonl"),
        Fault::Crash("server-1"),
        When::Done,
    )
    .await?;
    table.row(vec![
        "crash, retries on".into(),
        "passive + active".into(),
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

fn row(
    fault: &str,
    checks: &str,
    report: &crate::load::Report,
    failed: u64,
    last: Option<f64>,
) -> Vec<String> {
    vec![
        fault.into(),
        checks.into(),
        report.requests.to_string(),
        failed.to_string(),
        last.map(|l| format!("{l:.2} s"))
            .unwrap_or_else(|| "-".into()),
    ]
}

/// What breaks during the load.
#[derive(Clone, Copy)]
enum Fault {
    Crash(&'static str),
    Pause(&'static str),
}

/// Which time of a failed request counts: when it ended (a refused
/// connection ends at once) or when it was sent (a request to a hung server
/// ends only at the balancer's timeout, long after it was misrouted).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    Done,
    Sent,
}

/// 100 GET/s for 10 s with `fault` 3 s in: the report, and the failures
/// after the fault with the time of the last one.
async fn fault_under_load(
    c: &Ctx<'_>,
    history: &std::path::Path,
    fault: Fault,
    when: When,
) -> Result<(crate::load::Report, u64, Option<f64>)> {
    let args = LoadPlan {
        scenario: Scenario::Ping,
        rate: Some(100.0),
        duration: Duration::from_secs(10),
        history: Some(history.to_path_buf()),
        ..LoadPlan::default()
    };
    let (report, at) = c
        .load_with(args, Duration::from_secs(3), || async {
            match fault {
                Fault::Crash(victim) => c.faults().crash(victim).await.map(|_| ()),
                Fault::Pause(victim) => c.faults().pause(victim).await.map(|_| ()),
            }
        })
        .await?;
    let (failed, last) = failures_after(history, at, when);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn course() -> HealthChecks {
        HealthChecks {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            passive: Toggle::On,
        }
    }

    fn measured() -> Windows {
        Windows {
            passive: Some(0.05),
            passive_failed: 2,
            active: Some(2.7),
            active_failed: 160,
            hung: Some(3.1),
            hung_failed: 100,
        }
    }

    fn passed(w: &Windows) -> Vec<bool> {
        verdicts(&course(), w).into_iter().map(|v| v.2).collect()
    }

    #[test]
    fn the_course_windows_pass() {
        assert_eq!(passed(&measured()), [true, true, true]);
        // Nothing failed at all with passive checks: still at once.
        let w = Windows {
            passive: None,
            passive_failed: 0,
            ..measured()
        };
        assert_eq!(passed(&w), [true, true, true]);
    }

    #[test]
    fn passive_checks_that_did_nothing_fail() {
        let w = Windows {
            passive: Some(2.8),
            ..measured()
        };
        assert_eq!(passed(&w), [false, true, true]);
    }

    #[test]
    fn an_active_window_that_did_not_show_fails() {
        // The bound the knobs give: 3 x (1 s + 1 s) + 1 s.
        assert_eq!(course().slowest_detection(), Duration::from_secs(6));
        // Passive checks secretly still on: the window is about nothing.
        let w = Windows {
            active: Some(0.1),
            ..measured()
        };
        assert!(!passed(&w)[1]);
        let w = Windows {
            active: None,
            active_failed: 0,
            ..measured()
        };
        assert!(!passed(&w)[1]);
        // Far longer than the knobs allow.
        let w = Windows {
            active: Some(7.5),
            ..measured()
        };
        assert!(!passed(&w)[1]);
    }

    #[test]
    fn a_hung_server_never_taken_out_fails() {
        let w = Windows {
            hung: Some(7.5),
            ..measured()
        };
        assert!(!passed(&w)[2]);
        let w = Windows {
            hung: None,
            hung_failed: 0,
            ..measured()
        };
        assert!(!passed(&w)[2]);
    }
}
