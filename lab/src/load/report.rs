//! The report: what a run measured, as JSON for scripts and as text for people.
//!
//! The JSON carries at least the fields promised to users (docs/README.md; `scenario`,
//! `duration_s`, `requests`, `ok`, `rps`, `errors`, `latency_ms`, `per_server`,
//! `session_losses`, `stale_reads`, `lost_writes`, `timeline`), plus what a
//! lesson needs to explain a result: `unknown_writes` (deposits whose outcome
//! the user never learnt), the bank `audit`, `cache` hits, `behind_schedule`
//! (open model: could the driver keep the rate?) and the first and last second
//! with failures, so a crash's window can be read without scanning the
//! timeline.
//!
//! `requests = ok + errors.connect + errors.timeout + errors.http_5xx +
//! errors.http_4xx + errors.other`, always. Session losses and stale reads are
//! not extra requests: they are judgements on requests already counted (a
//! session loss is usually also a 4xx; a stale read is an `ok` answer with a
//! wrong balance).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::stats::{Counts, Percentiles, Second};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// Could not connect, or the connection broke before an answer.
    pub connect: u64,
    /// No answer within `--timeout`.
    pub timeout: u64,
    pub http_5xx: u64,
    pub http_4xx: u64,
    /// Answers the driver could not use (3xx, unreadable body).
    pub other: u64,
}

impl Errors {
    fn from_counts(c: &Counts) -> Self {
        Errors {
            connect: c.connect,
            timeout: c.timeout,
            http_5xx: c.http_5xx,
            http_4xx: c.http_4xx,
            other: c.other,
        }
    }

    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.http_5xx + self.http_4xx + self.other
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl From<Percentiles> for Latency {
    fn from(p: Percentiles) -> Self {
        Latency {
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            p999: p.p999,
            max: p.max,
            mean: p.mean,
        }
    }
}

/// One second of the run (`t = 1` is the first second). Requests are counted
/// in the second they finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub t: u64,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub session_losses: u64,
    pub stale_reads: u64,
    pub errors_by_kind: Errors,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Open model: requests that started late in this second.
    pub late: u64,
    pub per_server: BTreeMap<String, u64>,
}

impl From<&Second> for TimelineEntry {
    fn from(s: &Second) -> Self {
        TimelineEntry {
            t: s.t,
            requests: s.counts.requests,
            ok: s.counts.ok,
            errors: s.counts.errors(),
            session_losses: s.counts.session_losses,
            stale_reads: s.counts.stale_reads,
            errors_by_kind: Errors::from_counts(&s.counts),
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            late: s.counts.late,
            per_server: s.per_server.iter().cloned().collect(),
        }
    }
}

/// Product reads answered from the cache or the database.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cache {
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
}

/// The final audit of the bank accounts on the primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Accounts that received at least one deposit attempt.
    pub accounts: u64,
    /// Of those, accounts whose balance could be read on the primary.
    pub audited: u64,
    /// Accounts that could not be read (primary down?): not judged.
    pub failed: u64,
    pub acknowledged_deposits: u64,
    pub acknowledged_cents: i64,
    pub unknown_deposits: u64,
    pub unknown_cents: i64,
    /// Accounts where acknowledged money is missing (lost writes).
    pub short_accounts: u64,
    /// Accounts where nothing acknowledged is certainly missing but
    /// deposits of unknown outcome could hide a loss.
    pub unclear_accounts: u64,
    /// Acknowledged deposits that may be missing, at most (lost ones
    /// included): `lost_writes` is the least.
    pub possibly_lost: u64,
    pub missing_cents: i64,
    /// Money from deposits of unknown outcome that did land.
    pub unknown_applied_cents: i64,
    /// Money nobody sent (someone else wrote to these accounts).
    pub unexplained_cents: i64,
}

/// Open model: how well the driver kept to the schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BehindSchedule {
    /// Requests due within the run.
    pub scheduled: u64,
    pub started: u64,
    /// Started more than `late_threshold_ms` after their scheduled time.
    pub late: u64,
    /// Due, but never started because every allowed connection was busy
    /// until the end of the run (`--max-in-flight`).
    pub not_started: u64,
    pub max_lag_ms: f64,
    pub late_threshold_ms: f64,
}

/// Where the history went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryInfo {
    pub path: String,
    pub lines: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    /// `closed` (`--users`) or `open` (`--rate`).
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub target: String,
    /// How long load was sent (shorter than asked if interrupted).
    pub duration_s: f64,
    /// Ended early by Ctrl-C.
    pub interrupted: bool,
    pub requests: u64,
    pub ok: u64,
    pub rps: f64,
    pub errors: Errors,
    pub latency_ms: Latency,
    pub per_server: BTreeMap<String, u64>,
    pub session_losses: u64,
    pub stale_reads: u64,
    pub lost_writes: u64,
    pub unknown_writes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind_schedule: Option<BehindSchedule>,
    pub first_failure_s: Option<u64>,
    pub last_failure_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryInfo>,
    pub timeline: Vec<TimelineEntry>,
}

pub(crate) struct Parts {
    pub scenario: String,
    pub model: String,
    pub users: Option<u32>,
    pub rate: Option<f64>,
    pub target: String,
    pub duration_s: f64,
    pub interrupted: bool,
    pub total: Counts,
    pub latency: Percentiles,
    pub per_server: Vec<(String, u64)>,
    pub timeline: Vec<TimelineEntry>,
    pub audit: Option<Audit>,
    pub lost_writes: u64,
    pub unknown_writes: u64,
    pub behind_schedule: Option<BehindSchedule>,
    pub history: Option<HistoryInfo>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub(crate) fn build(p: Parts) -> Report {
        let t = p.total;
        let first_failure_s = p.timeline.iter().find(|s| s.errors > 0).map(|s| s.t);
        let last_failure_s = p.timeline.iter().rev().find(|s| s.errors > 0).map(|s| s.t);
        let lookups = t.cache_hits + t.cache_misses;
        Report {
            scenario: p.scenario,
            model: p.model,
            users: p.users,
            rate: p.rate,
            target: p.target,
            duration_s: round3(p.duration_s),
            interrupted: p.interrupted,
            requests: t.requests,
            ok: t.ok,
            rps: if p.duration_s > 0.0 {
                round3(t.requests as f64 / p.duration_s)
            } else {
                0.0
            },
            errors: Errors::from_counts(&t),
            latency_ms: p.latency.into(),
            per_server: p.per_server.into_iter().collect(),
            session_losses: t.session_losses,
            stale_reads: t.stale_reads,
            lost_writes: p.lost_writes,
            unknown_writes: p.unknown_writes,
            cache: (lookups > 0).then(|| Cache {
                hits: t.cache_hits,
                misses: t.cache_misses,
                hit_ratio: round3(t.cache_hits as f64 / lookups as f64),
            }),
            audit: p.audit,
            behind_schedule: p.behind_schedule,
            first_failure_s,
            last_failure_s,
            history: p.history,
            timeline: p.timeline,
        }
    }

    /// The report as one JSON document (what `lab load --json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("cannot serialize the report: {e}") }),
        )
    }

    /// The report for a person: the figures, then what they mean.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let model = match (self.users, self.rate) {
            (Some(u), _) => format!("{u} users (closed model)"),
            (_, Some(r)) => format!("{r} requests/s (open model)"),
            _ => self.model.clone(),
        };
        let _ = writeln!(
            o,
            "lab load: {}, {model}, {:.1} s against {}{}",
            self.scenario,
            self.duration_s,
            self.target,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let e = &self.errors;
        let _ = writeln!(
            o,
            "requests   {} ({:.1}/s)   ok {}   errors {}: connect {}, timeout {}, 5xx {}, 4xx {}, other {}",
            self.requests,
            self.rps,
            self.ok,
            e.total(),
            e.connect,
            e.timeout,
            e.http_5xx,
            e.http_4xx,
            e.other
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            o,
            "latency    p50 {} ms   p90 {} ms   p99 {} ms   max {} ms",
            l.p50, l.p90, l.p99, l.max
        );
        let answered: u64 = self.per_server.values().sum();
        if answered > 0 {
            let shares: Vec<String> = self
                .per_server
                .iter()
                .map(|(name, n)| {
                    format!("{name} {n} ({:.0}%)", *n as f64 * 100.0 / answered as f64)
                })
                .collect();
            let _ = writeln!(o, "servers    {}", shares.join("   "));
        }
        let _ = writeln!(
            o,
            "checks     session losses {}   stale reads {}   lost writes {}   unknown writes {}",
            self.session_losses, self.stale_reads, self.lost_writes, self.unknown_writes
        );
        if let Some(c) = &self.cache {
            let _ = writeln!(
                o,
                "cache      {} hits, {} misses ({:.0}% of product reads from the cache)",
                c.hits,
                c.misses,
                c.hit_ratio * 100.0
            );
        }
        if let Some(a) = &self.audit {
            let _ = writeln!(
                o,
                "audit      {} of {} accounts read on the primary: {} deposits acknowledged, {} missing ({} cents), {} of unknown outcome{}",
                a.audited,
                a.accounts,
                a.acknowledged_deposits,
                self.lost_writes,
                a.missing_cents,
                a.unknown_deposits,
                if a.failed > 0 {
                    format!("; {} accounts could not be read", a.failed)
                } else {
                    String::new()
                }
            );
            if a.unknown_deposits > 0 && a.possibly_lost > self.lost_writes {
                let _ = writeln!(
                    o,
                    "           {} deposits of unknown outcome (timeouts, cut connections, 5xx) may or may not have landed; if they did, up to {} acknowledged ones are missing, not {}",
                    a.unknown_deposits, a.possibly_lost, self.lost_writes
                );
            }
        }
        if let Some(b) = &self.behind_schedule {
            if b.late > 0 || b.not_started > 0 {
                let _ = writeln!(
                    o,
                    "schedule   behind schedule: {} of {} requests started late (max lag {} ms), {} not started",
                    b.late, b.scheduled, b.max_lag_ms, b.not_started
                );
            } else {
                let _ = writeln!(o, "schedule   kept: {} requests, all on time", b.started);
            }
        }
        if let (Some(first), Some(last)) = (self.first_failure_s, self.last_failure_s) {
            let _ = writeln!(
                o,
                "failures   from second {first} to second {last} (see the timeline in --json)"
            );
        }
        if let Some(h) = &self.history {
            let _ = writeln!(o, "history    {} operations in {}", h.lines, h.path);
        }
        let mut notes = Vec::new();
        if self.session_losses > 0 {
            notes.push("session losses: a logged-in user reached a server that did not know it; sessions kept in one server's memory do not survive a different server or a crash (try --sessions redis)");
        }
        if self.stale_reads > 0 {
            notes.push("stale reads: a user read a balance older than its own acknowledged deposit; the read went to a replica that had not applied the write yet (asynchronous replication lag)");
        }
        if self.lost_writes > 0 {
            notes.push("lost writes: money the bank acknowledged is not on the primary; an acknowledged commit was lost (e.g. failover to a replica that never received it)");
        }
        if e.timeout > 0 {
            notes.push("timeouts: no answer within --timeout; a paused or overloaded server, or a balancer waiting on one");
        }
        if e.connect > 0 {
            notes.push("connect errors: the balancer refused or dropped the connection");
        }
        for n in notes {
            let _ = writeln!(o, "  * {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Parts {
        Parts {
            scenario: "bank".into(),
            model: "closed".into(),
            users: Some(2),
            rate: None,
            target: "http://127.0.0.1:8080".into(),
            duration_s: 2.0,
            interrupted: false,
            total: Counts {
                requests: 10,
                ok: 7,
                http_5xx: 3,
                stale_reads: 1,
                ..Counts::default()
            },
            latency: Percentiles::default(),
            per_server: vec![("server-1".into(), 10)],
            timeline: vec![],
            audit: None,
            lost_writes: 0,
            unknown_writes: 0,
            behind_schedule: None,
            history: None,
        }
    }

    #[test]
    fn json_has_the_contract_fields() {
        let r = Report::build(parts());
        let j = r.to_json();
        for key in [
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
            assert!(j.get(key).is_some(), "missing {key}");
        }
        for key in ["connect", "timeout", "http_5xx", "http_4xx"] {
            assert!(j["errors"].get(key).is_some(), "missing errors.{key}");
        }
        for key in ["p50", "p90", "p99", "max"] {
            assert!(
                j["latency_ms"].get(key).is_some(),
                "missing latency_ms.{key}"
            );
        }
        assert_eq!(j["rps"], 5.0);
        assert_eq!(j["errors"]["http_5xx"], 3);
    }

    #[test]
    fn text_explains_anomalies() {
        let text = Report::build(parts()).render_text();
        assert!(text.contains("stale reads 1"), "{text}");
        assert!(text.contains("replica"), "{text}");
    }
}
