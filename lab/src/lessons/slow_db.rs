//! Lesson 10: a slow database. When the link to the database gets slow (a
//! congested network, a database in another zone), every query waits for
//! it: a page that makes q queries waits q times longer, plus the pool's
//! check that its connection is still alive. A page the cache already holds
//! never talks to the database, so it does not slow down at all: "when the
//! database is slow, the web server can still serve cached data".
//!
//! The lab slows the database's own port through its fault proxy (`lab slow
//! db-primary --latency D`), which delays every chunk of bytes by D each
//! way, so each round trip to the database takes 2D longer.

use std::time::Duration;

use lab_contract::app::Source;

use super::cache::{db_queries, median, timed_reads};
use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::faults::Slow;
use crate::roles::names;
use crate::topology::{Reads, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "slow-db",
    number: 10,
    summary: "slow the database link: uncached pages slow down by the delay times their round trips, cached ones not at all",
    hypothesis: "when the link to the database is slowed by D each way, an uncached product page takes about 2D longer per round trip to the database (its queries plus the pool's connection check), while a page served from the cache takes no longer",
    body: |c| Box::pin(body(c)),
};

/// The delays the lesson adds, one way.
const DELAYS_MS: [u64; 2] = [10, 30];
/// Pages read per measurement.
const READS: i64 = 15;
/// Round trips a page makes besides its queries: the pool checks an idle
/// connection before handing it out (`test_before_acquire` in
/// services/app/src/db.rs).
pub const CHECKS_PER_PAGE: f64 = 1.0;

/// One measurement at one delay: medians of pages read one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Level {
    /// The delay added each way, in ms.
    pub delay_ms: u64,
    pub uncached_ms: f64,
    pub uncached_reads: usize,
    pub cached_ms: f64,
    pub cached_reads: usize,
}

/// What the verdicts look at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measured {
    /// Database queries per uncached page, counted by the app.
    pub queries_per_page: f64,
    /// Without a delay.
    pub base: Level,
    /// With each delay.
    pub slowed: Vec<Level>,
}

/// How far an uncached page's slowdown may be from the computed one.
pub const TOLERANCE: f64 = 0.25;

/// The slowdown an uncached page should feel: 2D for each round trip.
pub fn expected_slowdown_ms(delay_ms: u64, queries_per_page: f64) -> f64 {
    2.0 * delay_ms as f64 * (queries_per_page + CHECKS_PER_PAGE)
}

/// The verdicts, as (expectation, measured, passed): a pure function of the
/// figures.
pub fn verdicts(m: &Measured) -> Vec<(String, String, bool)> {
    let enough = |n: usize| n as i64 >= READS * 2 / 3;
    let mut out = Vec::new();
    for l in &m.slowed {
        let d = l.delay_ms as f64;
        let expected = expected_slowdown_ms(l.delay_ms, m.queries_per_page);
        let uncached = l.uncached_ms - m.base.uncached_ms;
        let cached = l.cached_ms - m.base.cached_ms;
        out.push((
            format!(
                "database {d:.0} ms slower each way: an uncached page is about 2 x {d:.0} ms x ({:.0} queries + {CHECKS_PER_PAGE:.0} check) = {expected:.0} ms slower (within {:.0}%)",
                m.queries_per_page,
                TOLERANCE * 100.0
            ),
            format!(
                "{:.1} -> {:.1} ms: {uncached:+.1} ms",
                m.base.uncached_ms, l.uncached_ms
            ),
            m.queries_per_page >= 1.0
                && enough(m.base.uncached_reads)
                && enough(l.uncached_reads)
                && (uncached - expected).abs() <= TOLERANCE * expected,
        ));
        // One database round trip would add 2D: a quarter of that is room
        // for noise, not for a query.
        let bound = d / 2.0;
        out.push((
            format!(
                "database {d:.0} ms slower each way: a cached page is not slower (less than {bound:.0} ms)"
            ),
            format!(
                "{:.1} -> {:.1} ms: {cached:+.1} ms",
                m.base.cached_ms, l.cached_ms
            ),
            enough(m.base.cached_reads) && enough(l.cached_reads) && cached < bound,
        ));
    }
    out
}

/// Medians of READS uncached pages (products `first..`, read by no one
/// before) and READS cached ones (the warmed products, in turn).
async fn measure(c: &Ctx<'_>, base: &str, delay_ms: u64, first: i64) -> Result<Level> {
    let uncached = timed_reads(base, first..first + READS, Source::Db).await?;
    let cached = timed_reads(base, (0..READS).map(|i| 1 + i % 5), Source::Cache).await?;
    c.say(&format!(
        "+{delay_ms} ms: uncached {:.1} ms, cached {:.1} ms (medians)",
        median(&uncached),
        median(&cached)
    ));
    Ok(Level {
        delay_ms,
        uncached_ms: median(&uncached),
        uncached_reads: uncached.len(),
        cached_ms: median(&cached),
        cached_reads: cached.len(),
    })
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    c.say("1 server with the Redis cache (long TTL), a database; a product page makes its queries only on a miss");
    c.up(Topology {
        servers: 1,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::Off,
        cache: Toggle::On,
        cache_ttl: "10m".into(),
        product_query_ms: 0,
        ..Topology::default()
    })
    .await?;
    let base = c.entrypoint().await?;
    // Warm up: the pool's connection and its prepared statements (a first
    // query on a connection prepares it, one more round trip), and the five
    // pages the cached reads use.
    timed_reads(&base, 990..=999, Source::Db).await?;
    timed_reads(&base, 1..=5, Source::Db).await?;

    let mut m = Measured::default();
    let before = db_queries(c, 1).await?;
    m.base = measure(c, &base, 0, 100).await?;
    let queries = db_queries(c, 1).await? - before;
    m.queries_per_page = queries / m.base.uncached_reads.max(1) as f64;

    let mut table = Table::new(
        "Product pages read one at a time (medians)",
        &[
            "database delay",
            "uncached ms",
            "cached ms",
            "uncached: expected +ms",
            "measured +ms",
        ],
    );
    table.row(vec![
        "none".into(),
        format!("{:.1}", m.base.uncached_ms),
        format!("{:.1}", m.base.cached_ms),
        "-".into(),
        "-".into(),
    ]);
    for (i, delay) in DELAYS_MS.into_iter().enumerate() {
        c.say(&format!("lab slow {} --latency {delay}ms", names::PRIMARY));
        c.faults()
            .slow(
                names::PRIMARY,
                &Slow {
                    latency: Duration::from_millis(delay),
                    ..Slow::default()
                },
            )
            .await?;
        let first = 100 + READS * (i as i64 + 1);
        let l = measure(c, &base, delay, first).await;
        c.faults().heal(names::PRIMARY).await?;
        let l = l?;
        table.row(vec![
            format!("{delay} ms each way"),
            format!("{:.1}", l.uncached_ms),
            format!("{:.1}", l.cached_ms),
            format!("{:.0}", expected_slowdown_ms(delay, m.queries_per_page)),
            format!("{:+.1}", l.uncached_ms - m.base.uncached_ms),
        ]);
        m.slowed.push(l);
    }
    c.table(table);
    for (expectation, measured, passed) in verdicts(&m) {
        c.expect(&expectation, measured, passed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(delay_ms: u64, uncached_ms: f64, cached_ms: f64) -> Level {
        Level {
            delay_ms,
            uncached_ms,
            uncached_reads: 15,
            cached_ms,
            cached_reads: 15,
        }
    }

    /// A page of 2 queries: 3 round trips, +60 ms at 10 ms, +180 ms at 30.
    fn measured() -> Measured {
        Measured {
            queries_per_page: 2.0,
            base: level(0, 14.0, 1.5),
            slowed: vec![level(10, 76.0, 1.6), level(30, 198.0, 1.9)],
        }
    }

    fn passed(m: &Measured) -> Vec<bool> {
        verdicts(m).into_iter().map(|v| v.2).collect()
    }

    #[test]
    fn the_computed_slowdown_counts_every_round_trip_both_ways() {
        assert_eq!(expected_slowdown_ms(10, 2.0), 60.0);
        assert_eq!(expected_slowdown_ms(30, 1.0), 120.0);
    }

    #[test]
    fn slowdowns_as_computed_pass() {
        assert_eq!(passed(&measured()), [true; 4]);
    }

    #[test]
    fn an_uncached_page_that_did_not_slow_down_fails() {
        let mut m = measured();
        m.slowed[1].uncached_ms = 20.0;
        assert_eq!(passed(&m), [true, true, false, true]);
        // Slowed once per query only (no check counted): 2 of 3 round trips.
        let mut m = measured();
        m.slowed[1].uncached_ms = 14.0 + 120.0;
        assert!(!passed(&m)[2]);
        // Far slower than the delay explains.
        let mut m = measured();
        m.slowed[0].uncached_ms = 200.0;
        assert!(!passed(&m)[0]);
    }

    #[test]
    fn a_cached_page_that_slowed_down_fails() {
        let mut m = measured();
        m.slowed[0].cached_ms = 1.5 + 20.0;
        assert_eq!(passed(&m), [true, false, true, true]);
    }

    #[test]
    fn too_few_reads_or_no_queries_fail() {
        let mut m = measured();
        m.slowed[0].cached_reads = 2;
        assert!(!passed(&m)[1]);
        let m = Measured {
            queries_per_page: 0.0,
            ..measured()
        };
        assert!(!passed(&m)[0]);
    }
}
