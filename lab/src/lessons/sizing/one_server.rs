//! Lesson 1: one server. Requests that each burn `WORK_MS` of CPU arrive at
//! a rising rate; the server's CPU limit caps how many it can finish per
//! second (cpus × 1000 / WORK_MS). Below that, latency stays near the work
//! itself; past it, requests queue, the server does no more, and latency
//! climbs sharply.

use std::time::Duration;

use super::{cpu_during, one_server_topology, served, WORK_MS};
use crate::error::Result;
use crate::lessons::{Ctx, Lesson, Table};
use crate::load::{LoadPlan, Scenario};

pub const LESSON: Lesson = Lesson {
    name: "one-server",
    number: 1,
    summary: "raise the rate on one server: its CPU hits the limit and latency climbs past a point",
    hypothesis: "as the request rate on one server rises, its CPU approaches its limit, and past that point latency climbs sharply instead of the server doing more",
    body: |c| Box::pin(body(c)),
};

/// The server's CPU limit.
const CPUS: f64 = 0.5;
/// The offered rates, per second: from a fifth of the capacity to past it.
const RATES: [f64; 7] = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0];

/// What one rate gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Offered requests per second.
    pub rate: f64,
    /// Answered per second.
    pub served: f64,
    /// The server's CPU, % of one CPU.
    pub cpu: f64,
    pub p50_ms: f64,
}

/// How many requests per second `cpus` CPUs finish when each burns
/// `work_ms` of CPU.
pub fn capacity(cpus: f64, work_ms: u32) -> f64 {
    cpus * 1000.0 / f64::from(work_ms)
}

/// The verdicts, as (expectation, measured, passed): a pure function of the
/// server's size, the work per request and what each rate gave (lightest
/// first).
pub fn verdicts(cpus: f64, work_ms: u32, steps: &[Step]) -> Vec<(String, String, bool)> {
    let cap = capacity(cpus, work_ms);
    let (Some(first), Some(top)) = (steps.first(), steps.last()) else {
        return vec![(
            "the server was measured".into(),
            "no rate was run".into(),
            false,
        )];
    };
    // The median, not the tail: on a shared laptop the p99 of a light load
    // is noise, while the median moves only when requests really queue.
    let knee = steps
        .iter()
        .find(|s| s.p50_ms > 3.0 * first.p50_ms)
        .map(|s| format!("{:.0}/s", s.rate))
        .unwrap_or_else(|| "no rate".into());
    vec![
        (
            format!(
                "at the top rate the server's CPU is near its limit (at least 80% of {:.0}%)",
                cpus * 100.0
            ),
            format!("{:.0}% at {:.0}/s", top.cpu, top.rate),
            top.cpu >= cpus * 100.0 * 0.8,
        ),
        (
            format!(
                "past its limit the server does no more: at {:.0}/s it answers at most {cap:.0}/s (+15%), well short of the rate",
                top.rate
            ),
            format!("{:.0}/s answered of {:.0}/s sent", top.served, top.rate),
            top.rate > cap && top.served <= cap * 1.15 && top.served < 0.9 * top.rate,
        ),
        (
            "past a point latency climbs sharply (median at least 5x the lightest load's)".into(),
            format!(
                "p50 {:.1} ms at {:.0}/s, {:.1} ms at {:.0}/s; it passed 3x at {knee}",
                first.p50_ms, first.rate, top.p50_ms, top.rate
            ),
            top.p50_ms >= 5.0 * first.p50_ms,
        ),
    ]
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    c.say(&format!(
        "one server limited to {CPUS} CPU; each request burns {WORK_MS} ms of CPU, so it can do about {:.0} per second",
        capacity(CPUS, WORK_MS)
    ));
    c.up(one_server_topology(CPUS)).await?;
    let mut table = Table::new(
        "Rising request rate on one server",
        &[
            "rate/s",
            "served/s",
            "server CPU",
            "p50 ms",
            "p99 ms",
            "failed",
        ],
    );
    let mut steps = Vec::new();
    for rate in RATES {
        let args = LoadPlan {
            scenario: Scenario::Work,
            work_ms: WORK_MS,
            rate: Some(rate),
            duration: Duration::from_secs(4),
            ..LoadPlan::default()
        };
        let (r, cpu) = cpu_during(c, "server-1", args, Duration::from_secs(2)).await?;
        table.row(vec![
            format!("{rate:.0}"),
            format!("{:.0}", served(&r)),
            format!("{cpu:.0}%"),
            format!("{:.1}", r.latency_ms.p50),
            format!("{:.1}", r.latency_ms.p99),
            r.errors.total().to_string(),
        ]);
        steps.push(Step {
            rate,
            served: served(&r),
            cpu,
            p50_ms: r.latency_ms.p50,
        });
    }
    c.table(table);
    for (expectation, measured, passed) in verdicts(CPUS, WORK_MS, &steps) {
        c.expect(&expectation, measured, passed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, served: f64, cpu: f64, p50_ms: f64) -> Step {
        Step {
            rate,
            served,
            cpu,
            p50_ms,
        }
    }

    /// A server of 0.5 CPU with 10 ms requests: 50/s at most.
    fn saturating() -> Vec<Step> {
        vec![
            step(10.0, 10.0, 10.0, 11.0),
            step(40.0, 40.0, 41.0, 19.0),
            step(80.0, 49.0, 50.0, 900.0),
        ]
    }

    fn passed(steps: &[Step]) -> Vec<bool> {
        verdicts(0.5, 10, steps).into_iter().map(|v| v.2).collect()
    }

    #[test]
    fn a_server_that_saturates_passes() {
        assert_eq!(passed(&saturating()), [true, true, true]);
    }

    #[test]
    fn a_server_that_keeps_up_fails() {
        // Served every request: the limit was never reached.
        let mut s = saturating();
        s[2] = step(80.0, 80.0, 30.0, 12.0);
        assert_eq!(passed(&s), [false, false, false]);
    }

    #[test]
    fn serving_past_the_cpu_limit_fails() {
        // 70/s from half a CPU at 10 ms each is impossible: the work was
        // not really done, or the limit not applied.
        let mut s = saturating();
        s[2].served = 70.0;
        assert!(!passed(&s)[1]);
    }

    #[test]
    fn latency_that_barely_moves_fails() {
        let mut s = saturating();
        s[2].p50_ms = 40.0;
        assert_eq!(passed(&s), [true, true, false]);
    }

    #[test]
    fn no_measurement_fails() {
        assert_eq!(passed(&[]), [false]);
    }
}
