//! Lesson 12: the balancer itself is a single point of failure, and two
//! balancers with a floating address remove it.
//!
//! With one balancer, crashing it takes the whole site down until someone
//! starts it again: every request fails, however many servers stand behind
//! it. With two (`--balancers 2`), keepalived on lb-1 and lb-2 speaks VRRP;
//! the master holds a floating address that the edge (the internet) sends
//! users to. Crash the master and the backup notices the missing adverts
//! after its master-down interval, 3 x advert_int + skew, takes the address
//! and announces it: requests fail for about that long, then all succeed.
//!
//! The verdicts are pure functions of the knobs (advert_int, the backup's
//! priority) and of what the load driver's history recorded.

use std::path::Path;
use std::time::{Duration, Instant};

use lab_contract::vrrp::VipRole;

use super::{pct, Ctx, Lesson, Table};
use crate::error::Result;
use crate::ha;
use crate::load::{LoadPlan, Scenario};
use crate::naming;
use crate::roles::names;
use crate::topology::{Reads, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "ha-balancers",
    number: 12,
    summary: "the balancer is a single point of failure; two with a floating address (VRRP) fail over in about 3 s",
    hypothesis: "with one balancer, a crash of it leaves the site at 0% availability until it is started again; with two sharing a floating address, a crash of the holder costs failed requests for about 3 x advert_int + skew (3.6 s with advert_int 1 s), then full service",
    body: |c| Box::pin(body(c)),
};

/// Requests per second the lesson sends (bounded, through the entry port).
const RATE: f64 = 20.0;
/// What a network and a busy 2-core machine add to VRRP's timers before a
/// user sees the new master: the gratuitous ARPs reaching the edge, the
/// edge's 1 s connect timeout on a request sent just before, scheduling.
pub const SLACK: Duration = Duration::from_secs(1);

/// One request of the load, from the history file: when it was sent and
/// finished (seconds from the start of the load), and whether it succeeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub sent: f64,
    pub done: f64,
    pub ok: bool,
}

/// Reads the history file's lines (`t_ms` is when a request finished).
pub fn samples(history: &str) -> Vec<Sample> {
    history
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let done = v["t_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            let latency = v["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            Sample {
                sent: done - latency,
                done,
                ok: v["outcome"] == "ok",
            }
        })
        .collect()
}

/// Share of requests sent in `[from, to)` that succeeded (None: none sent).
pub fn availability(s: &[Sample], from: f64, to: f64) -> Option<f64> {
    let sent: Vec<&Sample> = s.iter().filter(|x| x.sent >= from && x.sent < to).collect();
    (!sent.is_empty()).then(|| sent.iter().filter(|x| x.ok).count() as f64 / sent.len() as f64)
}

/// The failure window after a fault at `at`: how many requests failed that
/// were still under way at or sent after it, and the last moment (sent
/// time, seconds after the fault) a user was failed.
pub fn failure_window(s: &[Sample], at: f64) -> (u64, Option<f64>) {
    let failed: Vec<&Sample> = s.iter().filter(|x| !x.ok && x.done >= at).collect();
    let last = failed
        .iter()
        .map(|x| (x.sent - at).max(0.0))
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    (failed.len() as u64, last)
}

/// What the lesson measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measured {
    /// One balancer: availability between its crash and its start.
    pub single_down: Option<f64>,
    /// One balancer: availability once it was started again (after a grace).
    pub single_back: Option<f64>,
    /// Two: seconds from the crash until the backup said it was master.
    pub takeover: Option<f64>,
    /// Two: requests failed after the crash, and the last one's sent time.
    pub pair_failed: u64,
    pub pair_last: Option<f64>,
    /// Two: availability from the end of the expected window to the end.
    pub pair_after: Option<f64>,
}

/// The bounds VRRP's timers set for a backup of `priority`: the takeover
/// comes one master-down interval after the master's last advert, which
/// left between 0 and one advert_int before the crash.
pub fn window(priority: u8, advert_int: Duration) -> (f64, f64) {
    let down = ha::master_down(priority, advert_int).as_secs_f64();
    (down - advert_int.as_secs_f64(), down)
}

/// The verdicts, as (expectation, measured, passed): a pure function of the
/// knobs and the measured figures.
pub fn verdicts(priority: u8, advert_int: Duration, m: &Measured) -> Vec<(String, String, bool)> {
    let (lo, hi) = window(priority, advert_int);
    let slack = SLACK.as_secs_f64();
    let share = |x: Option<f64>| x.map(pct).unwrap_or_else(|| "nothing sent".into());
    let secs = |x: Option<f64>| {
        x.map(|t| format!("{t:.2} s"))
            .unwrap_or_else(|| "never".into())
    };
    vec![
        (
            "one balancer: after it crashes, (almost) no request succeeds until it is started (availability <= 5%)".into(),
            share(m.single_down),
            m.single_down.is_some_and(|a| a <= 0.05),
        ),
        (
            "one balancer: once started again, the site serves again (availability >= 95%)".into(),
            share(m.single_back),
            m.single_back.is_some_and(|a| a >= 0.95),
        ),
        (
            format!(
                "two balancers: the backup takes the floating address within 3 x advert_int + skew + {slack:.0} s = {:.1} s of the crash",
                hi + slack
            ),
            secs(m.takeover),
            m.takeover.is_some_and(|t| t <= hi + slack),
        ),
        (
            format!(
                "two balancers: requests fail for about 3 x advert_int + skew: the last failed request was sent {:.1} to {:.1} s after the crash",
                lo - slack,
                hi + slack
            ),
            format!(
                "{} failed, the last sent {}",
                m.pair_failed,
                m.pair_last
                    .map(|t| format!("{t:.2} s after the crash"))
                    .unwrap_or_else(|| "- none failed".into())
            ),
            m.pair_failed > 0 && m.pair_last.is_some_and(|t| t >= lo - slack && t <= hi + slack),
        ),
        (
            "two balancers: then full service (availability 100% after the window)".into(),
            share(m.pair_after),
            m.pair_after.is_some_and(|a| a >= 1.0),
        ),
    ]
}

fn load(history: &Path, secs: u64) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Ping,
        rate: Some(RATE),
        duration: Duration::from_secs(secs),
        history: Some(history.to_path_buf()),
        ..LoadPlan::default()
    }
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let base = Topology {
        servers: 2,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::On,
        ..Topology::default()
    };
    let dir = tempfile::tempdir().map_err(|e| super::step("make a temporary folder")(&e))?;
    let mut m = Measured::default();

    // 1. One balancer: crash it at 3 s, start it at 9 s, load for 14 s.
    c.say("one balancer, two servers; 20 requests/s for 14 s; lb-1 crashes at 3 s and is started at 9 s");
    // `up` pins the entry port: a restarted lb-1 keeps the site's address.
    c.up(base.clone()).await?;
    let h1 = dir.path().join("single.jsonl");
    let cr = &*c;
    let crash_at = Duration::from_secs(3);
    let start_after = Duration::from_secs(6);
    let (_, at) = cr
        .load_with(load(&h1, 14), crash_at, || async {
            cr.faults().crash(names::BALANCER).await?;
            tokio::time::sleep(start_after).await;
            cr.faults().start(names::BALANCER).await?;
            Ok(())
        })
        .await?;
    let s1 = samples(&std::fs::read_to_string(&h1).unwrap_or_default());
    let at = at.as_secs_f64();
    let started = at + start_after.as_secs_f64();
    // Requests already under way when it died are left out (0.5 s).
    m.single_down = availability(&s1, at + 0.5, started);
    // Its health check and the servers' first checks: 2 s of grace.
    m.single_back = availability(&s1, started + 2.0, f64::MAX);

    // 2. Two balancers: crash whichever holds the address.
    let t = Topology {
        balancers: 2,
        ..base
    };
    let advert = t.advert_int;
    c.say("two balancers, lb-1 and lb-2, keepalived between them; the edge forwards users to the floating address");
    // The same entry port: the edge takes it over from lb-1.
    c.up(t).await?;
    let lbs = [
        naming::container(&c.lab, names::BALANCER),
        naming::container(&c.lab, names::BALANCER_2),
    ];
    let mut holder = 0;
    for (i, name) in lbs.iter().enumerate() {
        if ha::vip_state(c.rt, name).await.map(|s| s.state) == Some(VipRole::Master) {
            holder = i;
        }
    }
    let holder_name = if holder == 0 {
        names::BALANCER
    } else {
        names::BALANCER_2
    };
    let backup_priority = ha::PRIORITIES[1 - holder];
    c.say(&format!(
        "20 requests/s for 15 s; {holder_name} holds the address and crashes at 4 s"
    ));
    let h2 = dir.path().join("pair.jsonl");
    let cr = &*c;
    let takeover = std::sync::Mutex::new(None::<f64>);
    let (_, at) = cr
        .load_with(load(&h2, 15), Duration::from_secs(4), || async {
            cr.faults().crash(holder_name).await?;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if ha::vip_state(cr.rt, &lbs[1 - holder])
                    .await
                    .map(|s| s.state)
                    == Some(VipRole::Master)
                {
                    *takeover.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(t0.elapsed().as_secs_f64());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
        .await?;
    m.takeover = *takeover.lock().unwrap_or_else(|p| p.into_inner());
    let s2 = samples(&std::fs::read_to_string(&h2).unwrap_or_default());
    let at = at.as_secs_f64();
    (m.pair_failed, m.pair_last) = failure_window(&s2, at);
    let (_, hi) = window(backup_priority, advert);
    m.pair_after = availability(&s2, at + hi + SLACK.as_secs_f64(), f64::MAX);

    let mut tab = Table::new(
        "what users saw",
        &[
            "balancers",
            "fault",
            "availability while down",
            "failed",
            "last failure sent",
            "VRRP says",
            "availability after",
        ],
    );
    let (lo, hi) = window(backup_priority, advert);
    tab.row(vec![
        "1".into(),
        "crash lb-1, start it 6 s later".into(),
        m.single_down.map(pct).unwrap_or_else(|| "-".into()),
        s1.iter().filter(|x| !x.ok).count().to_string(),
        "-".into(),
        "down until started".into(),
        m.single_back.map(pct).unwrap_or_else(|| "-".into()),
    ]);
    tab.row(vec![
        "2".into(),
        format!("crash {holder_name} (the holder)"),
        "-".into(),
        m.pair_failed.to_string(),
        m.pair_last
            .map(|t| format!("{t:.2} s after"))
            .unwrap_or_else(|| "-".into()),
        format!("takeover {lo:.1}-{hi:.1} s after"),
        m.pair_after.map(pct).unwrap_or_else(|| "-".into()),
    ]);
    c.table(tab);
    for (e, measured, passed) in verdicts(backup_priority, advert, &m) {
        c.expect(&e, measured, passed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(done_ms: f64, latency_ms: f64, ok: bool) -> String {
        format!(
            r#"{{"t_ms": {done_ms}, "user": 1, "kind": "ping", "value": null, "outcome": "{}", "status": null, "server": null, "latency_ms": {latency_ms}}}"#,
            if ok { "ok" } else { "fail" }
        )
    }

    #[test]
    fn samples_are_read_from_the_history() {
        let text = [line(1000.0, 5.0, true), line(5000.0, 1000.0, false)].join("\n");
        let s = samples(&text);
        assert_eq!(s.len(), 2);
        assert!((s[1].sent - 4.0).abs() < 1e-9 && !s[1].ok);
        assert_eq!(availability(&s, 0.0, 10.0), Some(0.5));
        assert_eq!(availability(&s, 20.0, 30.0), None);
        // A failure under way at the fault counts; its sent time is clamped.
        assert_eq!(failure_window(&s, 4.5), (1, Some(0.0)));
        assert_eq!(failure_window(&s, 3.0), (1, Some(1.0)));
    }

    fn good() -> Measured {
        Measured {
            single_down: Some(0.0),
            single_back: Some(1.0),
            takeover: Some(3.2),
            pair_failed: 55,
            pair_last: Some(3.1),
            pair_after: Some(1.0),
        }
    }

    #[test]
    fn the_claim_holds_on_figures_like_the_trials() {
        let v = verdicts(100, Duration::from_secs(1), &good());
        assert_eq!(v.len(), 5);
        assert!(v.iter().all(|(_, _, ok)| *ok), "{v:?}");
    }

    #[test]
    fn each_verdict_can_fail() {
        let one = Duration::from_secs(1);
        let cases = [
            (
                0,
                Measured {
                    single_down: Some(0.4),
                    ..good()
                },
            ),
            (
                1,
                Measured {
                    single_back: Some(0.5),
                    ..good()
                },
            ),
            (
                2,
                Measured {
                    takeover: None,
                    ..good()
                },
            ),
            (
                2,
                Measured {
                    takeover: Some(6.0),
                    ..good()
                },
            ),
            // No failure at all: a pair hiding VRRP's window is not what happened.
            (
                3,
                Measured {
                    pair_failed: 0,
                    pair_last: None,
                    ..good()
                },
            ),
            // Too fast for VRRP's timers, or too slow.
            (
                3,
                Measured {
                    pair_last: Some(0.5),
                    ..good()
                },
            ),
            (
                3,
                Measured {
                    pair_last: Some(5.0),
                    ..good()
                },
            ),
            (
                4,
                Measured {
                    pair_after: Some(0.98),
                    ..good()
                },
            ),
        ];
        for (i, m) in cases {
            let v = verdicts(100, one, &m);
            assert!(!v[i].2, "verdict {i} should fail for {m:?}");
        }
    }

    #[test]
    fn the_window_follows_advert_int() {
        let (lo, hi) = window(100, Duration::from_secs(1));
        assert!((hi - 3.609).abs() < 0.001 && (lo - 2.609).abs() < 0.001);
        let (_, hi2) = window(100, Duration::from_secs(2));
        assert!((hi2 - 7.218).abs() < 0.001);
        // A window measured for advert_int 1 fails against advert_int 3.
        let v = verdicts(100, Duration::from_secs(3), &good());
        assert!(!v[3].2);
    }
}
