//! Counting what happened: totals, a latency histogram, and a timeline with one
//! entry per second.
//!
//! Latency is kept in an HdrHistogram: every request's latency is recorded
//! (not a sample), in buckets fine enough for 3 significant digits from a
//! microsecond to an hour, in a fixed amount of memory. That matters because
//! the interesting number is the tail: the p99 is what the unluckiest 1% of
//! users wait, and an average hides it completely. A server that stalls for one
//! second in a 30-second run barely moves the mean but is the p99.
//!
//! The timeline is what turns a summary into a story: a crash shows as seconds
//! where `ok` drops and `errors` rise, and the length of that window (how long
//! the balancer took to notice, how long the restart took) can be read off.
//! A request belongs to the second in which it finished; `t = 1` is the first
//! second of the run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::header::HeaderValue;

/// How a request ended, in the categories the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An answer the scenario expected (2xx, or a meaningful 404).
    Ok,
    /// Could not connect, or the connection broke before an answer.
    Connect,
    /// No answer within the per-request timeout.
    Timeout,
    Http4xx,
    Http5xx,
    /// An answer the driver could not understand (e.g. 3xx, bad JSON).
    Other,
}

/// Counters, kept for the whole run and for each second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub ok: u64,
    pub connect: u64,
    pub timeout: u64,
    pub http_5xx: u64,
    pub http_4xx: u64,
    pub other: u64,
    pub session_losses: u64,
    pub stale_reads: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Open model: requests that started later than scheduled.
    pub late: u64,
}

impl Counts {
    pub fn errors(&self) -> u64 {
        self.connect + self.timeout + self.http_5xx + self.http_4xx + self.other
    }
}

/// One finished request, as the stats need it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub class: Class,
    pub latency: Duration,
    pub served_by: Option<&'a HeaderValue>,
    pub session_loss: bool,
    pub stale_read: bool,
    /// Product reads: `Some(true)` when the answer came from the cache.
    pub cache_hit: Option<bool>,
}

/// One second of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Second {
    /// 1 for the first second of the run.
    pub t: u64,
    pub counts: Counts,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub per_server: Vec<(String, u64)>,
}

/// Latency percentiles of a whole run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Everything counted so far. Shared by all users behind one mutex: each
/// update is a handful of additions, far cheaper than the request it records.
pub struct Stats {
    start: Instant,
    total: Counts,
    hist: Histogram<u64>,
    servers: Vec<(String, u64)>,
    timeline: Vec<Second>,
    cur_index: u64,
    cur: Counts,
    cur_hist: Histogram<u64>,
    cur_servers: Vec<(String, u64)>,
    max_lag: Duration,
}

/// Microseconds from 1 µs to one hour, 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn bump(servers: &mut Vec<(String, u64)>, name: &HeaderValue) {
    let bytes = name.as_bytes();
    if let Some(entry) = servers.iter_mut().find(|(n, _)| n.as_bytes() == bytes) {
        entry.1 += 1;
    } else {
        servers.push((String::from_utf8_lossy(bytes).into_owned(), 1));
    }
}

fn add(c: &mut Counts, s: &Sample<'_>) {
    c.requests += 1;
    match s.class {
        Class::Ok => c.ok += 1,
        Class::Connect => c.connect += 1,
        Class::Timeout => c.timeout += 1,
        Class::Http4xx => c.http_4xx += 1,
        Class::Http5xx => c.http_5xx += 1,
        Class::Other => c.other += 1,
    }
    c.session_losses += u64::from(s.session_loss);
    c.stale_reads += u64::from(s.stale_read);
    match s.cache_hit {
        Some(true) => c.cache_hits += 1,
        Some(false) => c.cache_misses += 1,
        None => {}
    }
}

impl Stats {
    pub fn new(start: Instant) -> Result<Self, hdrhistogram::CreationError> {
        Ok(Stats {
            start,
            total: Counts::default(),
            hist: new_histogram()?,
            servers: Vec::new(),
            timeline: Vec::new(),
            cur_index: 0,
            cur: Counts::default(),
            cur_hist: new_histogram()?,
            cur_servers: Vec::new(),
            max_lag: Duration::ZERO,
        })
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records one finished request at `now`.
    pub fn record(&mut self, now: Instant, s: &Sample<'_>) {
        self.advance(now);
        let us = u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us);
        self.cur_hist.saturating_record(us);
        add(&mut self.total, s);
        add(&mut self.cur, s);
        if let Some(name) = s.served_by {
            bump(&mut self.servers, name);
            bump(&mut self.cur_servers, name);
        }
    }

    /// Open model: a request started `lag` after its scheduled time.
    pub fn note_late(&mut self, now: Instant, lag: Duration) {
        self.advance(now);
        self.total.late += 1;
        self.cur.late += 1;
        self.max_lag = self.max_lag.max(lag);
    }

    /// Closes every second that ended before `now`, so the live view can show
    /// a second in which nothing at all finished (a full stall) as zeros.
    pub fn advance(&mut self, now: Instant) {
        let index = now.saturating_duration_since(self.start).as_secs();
        while self.cur_index < index {
            self.close_second();
        }
    }

    /// Closes the current, partial second at the end of the run.
    pub fn finish(&mut self, now: Instant) {
        self.advance(now);
        if self.cur.requests > 0 || self.cur.late > 0 {
            self.close_second();
        }
    }

    fn close_second(&mut self) {
        let h = &self.cur_hist;
        let (p50, p99, max) = if h.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            )
        };
        self.timeline.push(Second {
            t: self.cur_index + 1,
            counts: std::mem::take(&mut self.cur),
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            per_server: std::mem::take(&mut self.cur_servers),
        });
        self.cur_hist.reset();
        self.cur_index += 1;
    }

    pub fn total(&self) -> Counts {
        self.total
    }

    pub fn timeline(&self) -> &[Second] {
        &self.timeline
    }

    /// Requests per server over the whole run, busiest first.
    pub fn per_server(&self) -> Vec<(String, u64)> {
        let mut v = self.servers.clone();
        v.sort();
        v
    }

    pub fn max_lag(&self) -> Duration {
        self.max_lag
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = &self.hist;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean()).round() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Sample<'static> {
        Sample {
            class: Class::Ok,
            latency: Duration::from_millis(ms),
            served_by: None,
            session_loss: false,
            stale_read: false,
            cache_hit: None,
        }
    }

    #[test]
    fn seconds_close_in_order_even_when_empty() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0).expect("histogram");
        let a = HeaderValue::from_static("server-1");
        let b = HeaderValue::from_static("server-2");
        let mut first = ok(2);
        first.served_by = Some(&a);
        s.record(t0 + Duration::from_millis(100), &first);
        let mut err = ok(5);
        err.class = Class::Http5xx;
        err.served_by = Some(&b);
        s.record(t0 + Duration::from_millis(2500), &err);
        s.finish(t0 + Duration::from_millis(2600));
        let tl = s.timeline();
        assert_eq!(tl.len(), 3);
        assert_eq!((tl[0].t, tl[0].counts.ok, tl[0].counts.errors()), (1, 1, 0));
        assert_eq!((tl[1].t, tl[1].counts.requests), (2, 0));
        assert_eq!((tl[2].t, tl[2].counts.http_5xx), (3, 1));
        assert_eq!(tl[2].per_server, vec![("server-2".to_string(), 1)]);
        assert_eq!(s.total().requests, 2);
        assert_eq!(
            s.per_server(),
            vec![("server-1".to_string(), 1), ("server-2".to_string(), 1)]
        );
    }

    #[test]
    fn percentiles_see_the_tail() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0).expect("histogram");
        for _ in 0..990 {
            s.record(t0, &ok(1));
        }
        for _ in 0..10 {
            s.record(t0, &ok(1000));
        }
        let p = s.percentiles();
        assert!((p.p50 - 1.0).abs() < 0.01, "{p:?}");
        assert!(p.p999 > 990.0, "{p:?}");
        assert!(p.max > 990.0, "{p:?}");
    }
}
