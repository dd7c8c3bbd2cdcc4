//! Lesson 9: failover in the whole architecture. Shared sessions, a cache, a
//! replica and retries: when a server crashes under mixed traffic, only the
//! requests caught in flight or sent before the balancer noticed can fail,
//! and the site is whole again within the health-check window.

use crate::lb_admin::ServerState;
use std::time::{Duration, Instant};

use super::health_checks::failures_after;
use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Scenario};
use crate::topology::{Sessions, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "failover",
    number: 9,
    summary: "the whole architecture under traffic: crash server-1, count dropped requests, time to recover",
    hypothesis: "with stateless servers, shared sessions, a cache, a replica and retries, a server crash drops at most the few requests caught before the balancer notices (within interval x fall + 1 s); no session is lost and nothing fails afterwards",
    body: |c| Box::pin(body(c)),
};

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    c.say("3 servers, sessions in Redis, cache on, one replica, retries on");
    let t = Topology {
        servers: 3,
        replicas: 1,
        sessions: Sessions::Redis,
        cache: Toggle::On,
        retries: Toggle::On,
        ..Topology::default()
    };
    // What the knobs allow, plus 1 s for a request already under way.
    let window = t.health.detection_window() + Duration::from_secs(1);
    c.up(t).await?;
    let admin = c
        .address("lb-1", crate::roles::balancer::ADMIN_PORT)
        .await?;
    let dir = tempfile::tempdir().map_err(|e| super::step("make a temporary folder")(&e))?;
    let hist = dir.path().join("failover.jsonl");
    c.say(
        "mixed traffic (browse, sessions, bank) at 60 requests/s for 15 s; server-1 crashes at 5 s",
    );
    let args = LoadArgs {
        scenario: Scenario::Mixed,
        rate: Some(60.0),
        duration: Duration::from_secs(15),
        history: Some(hist.clone()),
        ..LoadArgs::default()
    };
    let cr = &*c;
    let noticed = std::sync::Mutex::new(None::<Duration>);
    let (report, at) = cr
        .load_with(args, Duration::from_secs(5), || async {
            cr.faults().crash("server-1").await?;
            // Time how long the balancer takes to see it.
            let t = Instant::now();
            let lb = (cr.lb)(&admin);
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(v) = lb.view().await {
                    if v.servers
                        .iter()
                        .any(|s| s.name == "server-1" && s.state == ServerState::Down)
                    {
                        *noticed.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.elapsed());
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        })
        .await?;
    let noticed = *noticed.lock().unwrap_or_else(|p| p.into_inner());
    let (dropped, last) = failures_after(&hist, at, super::health_checks::When::Done);
    let mut t = Table::new(
        "server-1 crashes under mixed traffic",
        &[
            "requests",
            "dropped",
            "balancer noticed after",
            "last failure after crash",
            "session losses",
            "stale reads",
            "lost writes",
        ],
    );
    t.row(vec![
        report.requests.to_string(),
        dropped.to_string(),
        noticed
            .map(|n| format!("{:.2} s", n.as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        last.map(|l| format!("{l:.2} s"))
            .unwrap_or_else(|| "-".into()),
        report.session_losses.to_string(),
        report.stale_reads.to_string(),
        report.lost_writes.to_string(),
    ]);
    c.table(t);
    c.expect(
        &format!(
            "the balancer notices the crash within interval x fall + 1 s = {:.1} s",
            window.as_secs_f64()
        ),
        noticed
            .map(|n| format!("{:.2} s", n.as_secs_f64()))
            .unwrap_or_else(|| "not noticed".into()),
        noticed.is_some_and(|n| n <= window),
    );
    c.expect(
        "requests fail only in that window, and none after",
        format!(
            "{dropped} dropped, the last {}",
            last.map(|l| format!("{l:.2} s after the crash"))
                .unwrap_or_else(|| "- none".into())
        ),
        last.is_none_or(|l| l <= 2.5),
    );
    c.expect(
        "no session is lost and no acknowledged write is lost",
        format!(
            "{} session losses, {} lost writes",
            report.session_losses, report.lost_writes
        ),
        report.session_losses == 0 && report.lost_writes == 0,
    );
    Ok(())
}
