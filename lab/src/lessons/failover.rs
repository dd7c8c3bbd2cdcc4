//! Lesson 9: failover in the whole architecture. Shared sessions, a cache, a
//! replica and retries: when a server crashes under mixed traffic, only the
//! requests caught before the balancer takes it out can fail, and the site
//! is whole again right after.
//!
//! How soon "the balancer takes it out" is depends on the health-check
//! knobs: a crashed server refuses connections, and with passive checks on
//! the first refused request takes it out at once; with active checks only
//! it takes about interval x fall (the course's 3-second window). The
//! verdicts compare what was measured with the bound those knobs give; they
//! are pure functions, tested below where the claim holds and where it fails.

use crate::lb_admin::ServerState;
use std::time::{Duration, Instant};

use super::ops;
use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadPlan, Scenario};
use crate::roles::names;
use crate::topology::{HealthChecks, Sessions, Toggle, Topology};

/// (expectation, measured, passed).
type Check = (String, String, bool);

const RATE: f64 = 60.0;
const SECS: u64 = 15;
const CRASH_AT: Duration = Duration::from_secs(5);

pub const LESSON: Lesson = Lesson {
    name: "failover",
    number: 9,
    summary: "the whole architecture under traffic: crash server-1, count dropped requests, time to recover",
    hypothesis: "with stateless servers, shared sessions, a cache, a replica and retries, a server crash drops at most the few requests sent to it before the balancer takes it out (at once with passive checks, about interval x fall with active checks only); no session is lost, no write is lost and nothing fails afterwards",
    body: |c| Box::pin(body(c)),
};

/// How long the balancer may take to take a crashed server out, from the
/// knobs: with passive checks the first refused connection does it (1 s
/// allows for the next request to reach it); with active checks only,
/// `fall` failed checks, each up to interval + timeout apart, plus 1 s.
pub fn notice_bound(h: &HealthChecks) -> Duration {
    if h.passive.is_on() {
        Duration::from_secs(1)
    } else {
        h.slowest_detection() + Duration::from_secs(1)
    }
}

/// What the lesson measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measured {
    pub requests: u64,
    /// Failed operations that finished after the crash.
    pub dropped: u64,
    /// Seconds from the crash to the end of the last of them.
    pub last: Option<f64>,
    /// Seconds from the crash until the balancer showed the server down.
    pub noticed: Option<f64>,
    pub session_losses: u64,
    pub lost_writes: u64,
}

/// The verdicts, for `servers` servers sharing `rate` requests/s for
/// `secs` seconds.
pub fn verdicts(h: &HealthChecks, servers: u32, rate: f64, secs: u64, m: &Measured) -> Vec<Check> {
    let bound = notice_bound(h).as_secs_f64();
    // Everything server-1 got in that window, if no request were retried.
    let most = (rate / f64::from(servers.max(1)) * bound).ceil() as u64;
    let how = if h.passive.is_on() {
        "at once: passive checks see the first refused connection".to_string()
    } else {
        format!(
            "active checks only: about interval x fall = {:.1} s",
            h.detection_window().as_secs_f64()
        )
    };
    vec![
        (
            format!("the balancer takes the crashed server out within {bound:.1} s ({how})"),
            m.noticed
                .map(|n| format!("{n:.2} s"))
                .unwrap_or_else(|| "not noticed".into()),
            m.noticed.is_some_and(|n| n <= bound),
        ),
        (
            format!(
                "requests fail only until then: at most what it got in that window ({rate:.0}/s / {servers} x {bound:.1} s = {most}), the last one within {:.1} s of the crash",
                bound + 1.0
            ),
            format!(
                "{} failed, the last {}",
                m.dropped,
                m.last
                    .map(|l| format!("{l:.2} s after the crash"))
                    .unwrap_or_else(|| "- none".into())
            ),
            m.dropped <= most && m.last.is_none_or(|l| l <= bound + 1.0),
        ),
        (
            "no session is lost and no acknowledged write is lost".into(),
            format!(
                "{} session losses, {} lost writes, {} requests",
                m.session_losses, m.lost_writes, m.requests
            ),
            m.session_losses == 0
                && m.lost_writes == 0
                && m.requests as f64 >= 0.9 * rate * secs as f64,
        ),
    ]
}

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
    let (health, servers) = (t.health, u32::from(t.servers));
    c.up(t).await?;
    let admin = c
        .address(names::BALANCER, crate::roles::balancer::ADMIN_PORT)
        .await?;
    let dir = tempfile::tempdir().map_err(|e| super::step("make a temporary folder")(&e))?;
    let hist = dir.path().join("failover.jsonl");
    let victim = names::server(1);
    c.say(&format!(
        "mixed traffic (browse, sessions, bank) at {RATE:.0} requests/s for {SECS} s; {victim} crashes at {} s",
        CRASH_AT.as_secs()
    ));
    let args = LoadPlan {
        scenario: Scenario::Mixed,
        rate: Some(RATE),
        duration: Duration::from_secs(SECS),
        history: Some(hist.clone()),
        ..LoadPlan::default()
    };
    let cr = &*c;
    let noticed = std::sync::Mutex::new(None::<Duration>);
    let (report, at) = cr
        .load_with(args, CRASH_AT, || async {
            cr.faults().crash(&victim).await?;
            // Time how long the balancer takes to see it.
            let t = Instant::now();
            let lb = (cr.lb)(&admin);
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(v) = lb.view().await {
                    if v.servers
                        .iter()
                        .any(|s| s.name == victim && s.state == ServerState::Down)
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
    // By when each failed request finished: a request cut off by the crash
    // ends at once, and anything failing later is the window's doing.
    let (dropped, last) = ops::failures_after(&ops::read(&hist), at.as_secs_f64());
    let m = Measured {
        requests: report.requests,
        dropped,
        last,
        noticed: noticed.map(|n| n.as_secs_f64()),
        session_losses: report.session_losses,
        lost_writes: report.lost_writes,
    };
    let mut t = Table::new(
        &format!("{victim} crashes under mixed traffic"),
        &[
            "requests",
            "failed",
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
        m.noticed
            .map(|n| format!("{n:.2} s"))
            .unwrap_or_else(|| "never".into()),
        last.map(|l| format!("{l:.2} s"))
            .unwrap_or_else(|| "-".into()),
        report.session_losses.to_string(),
        report.stale_reads.to_string(),
        report.lost_writes.to_string(),
    ]);
    c.table(t);
    for (e, measured, p) in verdicts(&health, servers, RATE, SECS, &m) {
        c.expect(&e, measured, p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> HealthChecks {
        Topology::default().health
    }

    fn fine() -> Measured {
        Measured {
            requests: 900,
            dropped: 1,
            last: Some(0.05),
            noticed: Some(0.02),
            session_losses: 0,
            lost_writes: 0,
        }
    }

    fn passed(m: &Measured) -> Vec<bool> {
        verdicts(&lab(), 3, RATE, SECS, m)
            .into_iter()
            .map(|v| v.2)
            .collect()
    }

    #[test]
    fn the_knobs_give_the_bound() {
        let mut h = lab();
        assert_eq!(notice_bound(&h), Duration::from_secs(1));
        h.passive = Toggle::Off;
        // 3 x (500 ms + 1 s) + 1 s with the lab's defaults.
        assert_eq!(notice_bound(&h), Duration::from_millis(5500));
    }

    #[test]
    fn a_quick_clean_failover_holds() {
        assert_eq!(passed(&fine()), [true, true, true]);
        let none = Measured {
            dropped: 0,
            last: None,
            ..fine()
        };
        assert_eq!(passed(&none), [true, true, true]);
    }

    #[test]
    fn a_slow_or_missed_detection_fails() {
        let late = Measured {
            noticed: Some(2.4),
            ..fine()
        };
        assert_eq!(passed(&late), [false, true, true]);
        let never = Measured {
            noticed: None,
            ..fine()
        };
        assert!(!passed(&never)[0]);
    }

    #[test]
    fn failures_that_go_on_or_pile_up_fail() {
        // Still failing 8 s after the crash.
        let on = Measured {
            dropped: 3,
            last: Some(8.0),
            ..fine()
        };
        assert_eq!(passed(&on), [true, false, true]);
        // More than server-1's share of a second: 60/3 x 1 s = 20.
        let many = Measured {
            dropped: 25,
            ..fine()
        };
        assert_eq!(passed(&many), [true, false, true]);
    }

    #[test]
    fn lost_sessions_writes_or_a_load_that_did_not_run_fail() {
        for m in [
            Measured {
                session_losses: 2,
                ..fine()
            },
            Measured {
                lost_writes: 1,
                ..fine()
            },
            Measured {
                requests: 300,
                ..fine()
            },
        ] {
            assert_eq!(passed(&m), [true, true, false], "{m:?}");
        }
    }
}
