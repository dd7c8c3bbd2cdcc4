//! # Sharded counters: one slot per worker, summed when read
//!
//! Every worker thread counts every request it serves: requests per server,
//! requests in flight, latency buckets. If all workers added to the *same*
//! memory, each addition would have to pull that memory's cache line away
//! from the core that wrote it last. Measured here, going from one worker
//! to two cost nginx 0.4 µs of CPU per request and this balancer 1.3 µs
//! while its workers still shared their counters (bench/README.md). nginx
//! avoids this by giving each worker process its own memory; we do the same
//! inside one process.
//!
//! So a counter here is split into [`SHARDS`] slots, each on its own cache
//! line ([`CachePadded`]). Worker `n` only writes slot `n % SHARDS`; a reader
//! (the admin API, `/metrics`, `least-conn`) adds up every slot. Writes stay
//! on one core, reads are rare, and the totals are exact.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// How many slots a counter has. Workers beyond this share slots (still
/// correct, just contended again).
pub const SHARDS: usize = 16;

/// The slot worker `worker` writes.
pub fn slot(worker: usize) -> usize {
    worker % SHARDS
}

fn slots<T: Default>() -> Box<[CachePadded<T>]> {
    (0..SHARDS)
        .map(|_| CachePadded::new(T::default()))
        .collect()
}

/// A count that goes up and down (requests in flight), one slot per worker.
///
/// A slot may go below zero when a request ends on another worker than it
/// began on; the sum is what counts.
pub struct Gauge {
    slots: Box<[CachePadded<AtomicUsize>]>,
}

impl Default for Gauge {
    fn default() -> Self {
        Self { slots: slots() }
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

impl Gauge {
    /// Adds one in `slot`.
    pub fn inc(&self, slot: usize) {
        self.slots[slot % SHARDS].fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one away in `slot`.
    pub fn dec(&self, slot: usize) {
        self.slots[slot % SHARDS].fetch_sub(1, Ordering::AcqRel);
    }

    /// The total (wrapping arithmetic makes slots that went "negative" add up).
    pub fn get(&self) -> usize {
        self.slots
            .iter()
            .fold(0usize, |sum, s| sum.wrapping_add(s.load(Ordering::Acquire)))
    }
}

/// A count that only goes up, one slot per worker. Clones share the count,
/// like prometheus-client's own counter, so it can live in a metric family.
#[derive(Clone)]
pub struct Counter {
    slots: Arc<[CachePadded<AtomicU64>]>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            slots: slots().into(),
        }
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl Counter {
    /// Adds one in `slot`.
    pub fn inc(&self, slot: usize) {
        self.slots[slot % SHARDS].fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the latency buckets: 0.25 ms to about 16 s, doubling.
pub const LATENCY_BOUNDS: [f64; 17] = {
    let mut b = [0.000_25; 17];
    let mut i = 1;
    while i < b.len() {
        b[i] = b[i - 1] * 2.0;
        i += 1;
    }
    b
};

#[derive(Default)]
struct HistogramSlot {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
}

/// A latency histogram with [`LATENCY_BOUNDS`], one slot per worker,
/// printed as one Prometheus histogram. Clones share the data.
#[derive(Clone)]
pub struct Histogram {
    slots: Arc<[CachePadded<HistogramSlot>]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            slots: slots().into(),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sum, count, _) = self.totals();
        f.debug_struct("Histogram")
            .field("count", &count)
            .field("sum", &sum)
            .finish()
    }
}

impl Histogram {
    /// Records one duration in `slot`.
    pub fn observe(&self, slot: usize, elapsed: Duration) {
        let s = &self.slots[slot % SHARDS];
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        s.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and buckets `(upper bound, count in this
    /// bucket)`, the last bound infinite (the encoder makes them cumulative).
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum_nanos = 0u128;
        let mut count = 0;
        let mut per_bucket = [0u64; LATENCY_BOUNDS.len() + 1];
        for s in self.slots.iter() {
            sum_nanos += u128::from(s.sum_nanos.load(Ordering::Relaxed));
            count += s.count.load(Ordering::Relaxed);
            for (total, b) in per_bucket.iter_mut().zip(&s.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
        }
        let buckets = LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(per_bucket)
            .collect();
        (sum_nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_add_up() {
        let g = Gauge::default();
        g.inc(0);
        g.inc(1);
        g.inc(SHARDS + 1);
        g.dec(0);
        assert_eq!(g.get(), 2);
        // ended on another worker than it began on
        g.dec(5);
        g.dec(1);
        assert_eq!(g.get(), 0);

        let c = Counter::default();
        let shared = c.clone();
        c.inc(0);
        shared.inc(3);
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn histogram_buckets_sort_durations() {
        let h = Histogram::default();
        h.observe(0, Duration::from_micros(100)); // first bucket
        h.observe(1, Duration::from_millis(3)); // 4 ms bucket
        h.observe(2, Duration::from_secs(100)); // +Inf
        let (sum, count, buckets) = h.totals();
        assert_eq!(count, 3);
        assert!((sum - 100.0031).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.000_25, 1));
        let four_ms = buckets.iter().find(|(b, _)| *b == 0.004).unwrap();
        assert_eq!(four_ms.1, 1);
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
    }
}
