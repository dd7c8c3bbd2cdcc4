//! A lesson's reading of a load's history file (`lab load --history`): one
//! operation per line, with when it finished, how long it took, which server
//! answered and whether it worked. The report's counters say how many; the
//! history says which and when, and a few claims need that: which cheap
//! requests shared a server with a heavy one, which requests failed after a
//! crash, and when.
//!
//! Everything here is a pure function of the file's text, so the lessons'
//! verdicts built on it can be tested on lines written by hand.

use std::path::Path;

/// One operation of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// When it finished, in seconds from the start of the run.
    pub done_s: f64,
    /// How long it took (in the open model, counted from when it was due).
    pub latency_s: f64,
    /// `work`, `product`, `me`, ... as the history names it.
    pub kind: String,
    /// The history's value: for `work`, the CPU ms it asked for.
    pub value: Option<i64>,
    pub ok: bool,
    /// The server that answered (`X-Served-By`), if one did.
    pub server: Option<String>,
}

impl Op {
    /// When it started (or was due): its end minus its latency.
    pub fn start_s(&self) -> f64 {
        self.done_s - self.latency_s
    }

    /// Whether two operations were in flight at the same time.
    pub fn overlaps(&self, other: &Op) -> bool {
        self.start_s() < other.done_s && other.start_s() < self.done_s
    }
}

/// The operations of a history file's text; lines that are not operations
/// (none should be) are skipped.
pub fn parse(text: &str) -> Vec<Op> {
    text.lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(Op {
                done_s: v["t_ms"].as_f64()? / 1000.0,
                latency_s: v["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                kind: v["kind"].as_str()?.to_string(),
                value: v["value"].as_i64(),
                ok: v["outcome"] == "ok",
                server: v["server"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// The operations of a history file (none if it cannot be read).
pub fn read(path: &Path) -> Vec<Op> {
    parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The `q` quantile (0 to 1) of some values, by the nearest rank; NaN when
/// there are none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Failed operations that finished at or after `at_s`: how many, and how
/// long after `at_s` the last one finished.
pub fn failures_after(ops: &[Op], at_s: f64) -> (u64, Option<f64>) {
    let late: Vec<f64> = ops
        .iter()
        .filter(|o| !o.ok && o.done_s >= at_s)
        .map(|o| o.done_s - at_s)
        .collect();
    (late.len() as u64, late.into_iter().reduce(f64::max))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A history line as the load driver writes it.
    pub fn line(t_ms: f64, kind: &str, value: i64, ok: bool, server: &str, lat_ms: f64) -> String {
        serde_json::json!({
            "t_ms": t_ms, "user": 0, "kind": kind, "value": value,
            "outcome": if ok { "ok" } else { "fail" }, "status": 200,
            "server": server, "latency_ms": lat_ms,
        })
        .to_string()
    }

    #[test]
    fn lines_become_operations() {
        let text = [
            line(1500.0, "work", 2, true, "server-1", 500.0),
            "not json".into(),
            line(2000.0, "product", 7, false, "server-2", 10.0),
        ]
        .join("\n");
        let ops = parse(&text);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].start_s(), 1.0);
        assert_eq!(ops[0].value, Some(2));
        assert_eq!(ops[1].server.as_deref(), Some("server-2"));
        assert!(!ops[1].ok);
        assert!(!ops[0].overlaps(&ops[1]));
        let during = parse(&line(1200.0, "work", 2, true, "server-1", 100.0));
        assert!(ops[0].overlaps(&during[0]) && during[0].overlaps(&ops[0]));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn failures_count_from_when_they_finished() {
        let ops = parse(
            &[
                line(4900.0, "me", 0, false, "server-1", 10.0),
                line(5100.0, "me", 0, false, "server-1", 300.0),
                line(5600.0, "me", 0, true, "server-2", 1.0),
                line(5800.0, "login", 0, false, "server-2", 1.0),
            ]
            .join("\n"),
        );
        let (n, last) = failures_after(&ops, 5.0);
        assert_eq!(n, 2);
        assert!((last.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(failures_after(&ops, 6.0), (0, None));
    }
}
