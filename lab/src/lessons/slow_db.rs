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

use lab_contract::app::Source;

use super::cache::{median, timed_reads, wait_for_pages};
use super::{Ctx, Lesson, Table};
use crate::error::Result;
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
const DELAYS_MS: [u64; 2] = [20, 50];
/// Pairs of reads per delay.
const PAIRS: i64 = 15;
/// Round trips a page makes besides its queries: the pool checks an idle
/// connection before handing it out (`test_before_acquire` in
/// services/app/src/db.rs).
pub const CHECKS_PER_PAGE: f64 = 1.0;

/// One delay's measurement: medians of pages read one at a time, in pairs
/// (the link healthy, then slowed), so that both halves of each pair find
/// the machine as busy as the other: an uncached page's own query time
/// varies with everything else the machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Step {
    /// The delay added each way, in ms.
    pub delay_ms: u64,
    pub base_uncached_ms: f64,
    pub uncached_ms: f64,
    pub base_cached_ms: f64,
    pub cached_ms: f64,
    /// The fewest reads behind any of the four medians.
    pub reads: usize,
}

/// What the verdicts look at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measured {
    /// Database queries per uncached page, counted by the app.
    pub queries_per_page: f64,
    pub steps: Vec<Step>,
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
    let enough = |n: usize| n as i64 >= PAIRS * 2 / 3;
    let mut out = Vec::new();
    for l in &m.steps {
        let d = l.delay_ms as f64;
        let expected = expected_slowdown_ms(l.delay_ms, m.queries_per_page);
        let uncached = l.uncached_ms - l.base_uncached_ms;
        let cached = l.cached_ms - l.base_cached_ms;
        out.push((
            format!(
                "database {d:.0} ms slower each way: an uncached page is about 2 x {d:.0} ms x ({:.0} queries + {CHECKS_PER_PAGE:.0} check) = {expected:.0} ms slower (within {:.0}%)",
                m.queries_per_page,
                TOLERANCE * 100.0
            ),
            format!(
                "{:.1} -> {:.1} ms: {uncached:+.1} ms",
                l.base_uncached_ms, l.uncached_ms
            ),
            m.queries_per_page >= 1.0
                && enough(l.reads)
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
                l.base_cached_ms, l.cached_ms
            ),
            enough(l.reads) && cached < bound,
        ));
    }
    out
}

/// [`PAIRS`] pairs of reads: an uncached page (a product read by no one
/// before, from `first` on) and a cached one (the warmed products, in turn)
/// with the link healthy, then the same kinds with it slowed by `delay_ms`
/// each way. The delay is set and lifted through db-primary's fault proxy,
/// as `lab slow` and `lab heal` do.
async fn measure(c: &Ctx<'_>, base: &str, delay_ms: u64, first: i64) -> Result<Step> {
    let admin = crate::proxy_admin::ProxyAdmin::new(
        names::PRIMARY_ALIAS,
        &c.address(names::PRIMARY_ALIAS, crate::roles::proxy::ADMIN_PORT)
            .await?,
    );
    let fault = lab_contract::faultproxy::Fault {
        latency_ms: delay_ms,
        ..Default::default()
    };
    let [mut bu, mut bc, mut su, mut sc] = [(); 4].map(|_| Vec::new());
    for i in 0..PAIRS {
        let cached = [1 + i % 5];
        bu.extend(timed_reads(base, [first + 2 * i], Source::Db).await?);
        bc.extend(timed_reads(base, cached, Source::Cache).await?);
        admin.set(crate::roles::proxy::SERVICE, &fault).await?;
        let slowed = async {
            let u = timed_reads(base, [first + 2 * i + 1], Source::Db).await?;
            let k = timed_reads(base, cached, Source::Cache).await?;
            Ok::<_, crate::error::LabError>((u, k))
        }
        .await;
        admin.heal().await?;
        let (u, k) = slowed?;
        su.extend(u);
        sc.extend(k);
    }
    let step = Step {
        delay_ms,
        base_uncached_ms: median(&bu),
        uncached_ms: median(&su),
        base_cached_ms: median(&bc),
        cached_ms: median(&sc),
        reads: [&bu, &bc, &su, &sc]
            .iter()
            .map(|v| v.len())
            .min()
            .unwrap_or(0),
    };
    c.say(&format!(
        "+{delay_ms} ms each way: uncached {:.1} -> {:.1} ms, cached {:.1} -> {:.1} ms (medians)",
        step.base_uncached_ms, step.uncached_ms, step.base_cached_ms, step.cached_ms
    ));
    Ok(step)
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
    wait_for_pages(&base).await?;
    // Warm up: the pool's connection and its prepared statements (a first
    // query on a connection prepares it, one more round trip), and the five
    // pages the cached reads use.
    timed_reads(&base, 990..=999, Source::Db).await?;
    let before = c.db_queries(1).await?;
    let warmed = timed_reads(&base, 1..=5, Source::Db).await?;
    let queries = c.db_queries(1).await? - before;
    let mut m = Measured {
        queries_per_page: queries / warmed.len().max(1) as f64,
        ..Measured::default()
    };

    let mut table = Table::new(
        "Product pages read one at a time, in pairs: link healthy, then slowed (medians)",
        &[
            "database delay",
            "uncached ms",
            "cached ms",
            "uncached: expected +ms",
            "measured +ms",
        ],
    );
    for (i, delay) in DELAYS_MS.into_iter().enumerate() {
        c.say(&format!(
            "{PAIRS} pairs of reads, {} slowed by {delay} ms each way in the second half of each",
            names::PRIMARY_ALIAS
        ));
        let first = 100 + 2 * PAIRS * i as i64;
        let step = measure(c, &base, delay, first).await;
        c.faults().heal(names::PRIMARY_ALIAS).await?;
        let step = step?;
        table.row(vec![
            "none".into(),
            format!("{:.1}", step.base_uncached_ms),
            format!("{:.1}", step.base_cached_ms),
            "-".into(),
            "-".into(),
        ]);
        table.row(vec![
            format!("{delay} ms each way"),
            format!("{:.1}", step.uncached_ms),
            format!("{:.1}", step.cached_ms),
            format!("{:.0}", expected_slowdown_ms(delay, m.queries_per_page)),
            format!("{:+.1}", step.uncached_ms - step.base_uncached_ms),
        ]);
        m.steps.push(step);
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

    fn step(delay_ms: u64, uncached_ms: f64, cached_ms: f64) -> Step {
        Step {
            delay_ms,
            base_uncached_ms: 30.0,
            uncached_ms,
            base_cached_ms: 1.5,
            cached_ms,
            reads: 15,
        }
    }

    /// A page of 2 queries: 3 round trips, +120 ms at 20 ms, +300 ms at 50.
    fn measured() -> Measured {
        Measured {
            queries_per_page: 2.0,
            steps: vec![step(20, 152.0, 1.6), step(50, 318.0, 1.9)],
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
        m.steps[1].uncached_ms = 40.0;
        assert_eq!(passed(&m), [true, true, false, true]);
        // Slowed once per query only (no check counted): 2 of 3 round trips.
        let mut m = measured();
        m.steps[1].uncached_ms = 30.0 + 200.0;
        assert!(!passed(&m)[2]);
        // Far slower than the delay explains.
        let mut m = measured();
        m.steps[0].uncached_ms = 300.0;
        assert!(!passed(&m)[0]);
    }

    #[test]
    fn a_cached_page_that_slowed_down_fails() {
        let mut m = measured();
        m.steps[0].cached_ms = 1.5 + 40.0;
        assert_eq!(passed(&m), [true, false, true, true]);
    }

    #[test]
    fn too_few_reads_or_no_queries_fail() {
        let mut m = measured();
        m.steps[0].reads = 2;
        assert_eq!(passed(&m), [false, false, true, true]);
        let m = Measured {
            queries_per_page: 0.0,
            ..measured()
        };
        assert!(!passed(&m)[0]);
    }
}
