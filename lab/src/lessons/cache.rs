//! Lesson 7: a cache in front of the database, and when it helps.
//!
//! Cache-aside (look in Redis first; on a miss run the page's queries and
//! keep the answer for a TTL) saves a query only when the same page is read
//! again before its entry expires. So what a cache is worth depends on how
//! reads spread:
//!
//! * skewed, as on most shops: 95% of views go to 20 popular products, which
//!   are read again and again within the TTL: almost every view is a hit;
//! * uniform: views spread evenly over 1,000 products, each read about once
//!   every half minute, longer than an entry lives: almost every view misses.
//!
//! A miss costs real work: a product page ranks the product among the best
//! sellers by totalling every order line (`services/app/src/db.rs`), so the
//! lesson turns the deliberate extra cost (`product_query_ms`) off. The hit
//! ratio each workload should reach follows from the load's rate, the TTL
//! and the spread ([`predicted_hit_ratio`]); the lesson checks the measured
//! ones against it.

use std::time::{Duration, Instant};

use super::{pct, Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::scenario::{CATALOGUE, HOT_PRODUCTS};
use crate::load::{LoadPlan, Scenario};
use crate::topology::{Reads, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "cache",
    number: 7,
    summary: "the same views with a cache: most queries saved when reads are skewed, few when they spread evenly",
    hypothesis: "a cache-aside Redis cache answers most reads and saves most database queries when reads go to a few popular products (the course: 95% fewer queries, 2 ms against 50 ms), but far fewer when reads spread evenly over the catalogue; how many follows from the rate, the TTL and the spread",
    body: |c| Box::pin(body(c)),
};

/// Views per second of every run (open model: the same schedule each time).
const RATE: f64 = 30.0;
/// How long each cached run lasts.
const RUN: Duration = Duration::from_secs(10);
/// How long a cached page lives.
const TTL: Duration = Duration::from_secs(10);
/// The skewed workload's share of views on the hot set, as in the course.
const SKEWED: f64 = 0.95;
/// The uncached control run, shorter: each view there is a miss anyway.
const CONTROL: Duration = Duration::from_secs(5);

/// What one cached run was asked to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    /// Views per second.
    pub rate: f64,
    /// Seconds of load, from an empty cache.
    pub secs: f64,
    /// Seconds an entry lives after the miss that filled it.
    pub ttl: f64,
    /// Share of views on the hot set (0: even over the catalogue).
    pub hot_share: f64,
}

/// P(a Gamma(k, 1) time is at most `x`): the chance that k arrivals of a
/// unit-rate Poisson stream have all come by `x`.
fn gamma_cdf(k: u32, x: f64) -> f64 {
    // 1 - P(fewer than k arrivals by x), the Poisson terms summed in log
    // space so that a large x overflows nothing.
    let mut log_term = -x;
    let mut fewer = log_term.exp();
    for j in 1..k {
        log_term += (x / f64::from(j)).ln();
        fewer += log_term.exp();
    }
    (1.0 - fewer).clamp(0.0, 1.0)
}

/// Expected misses of one product read `rate` times a second for `secs`,
/// from an empty cache, its entry living `ttl` after each miss. The k-th
/// miss comes after k waits for a read (a Gamma(k, rate) time) and k-1
/// lifetimes, so it happens within the run with probability
/// P(Gamma(k, rate) <= secs - (k-1) ttl); the sum over k is the expectation.
pub fn expected_misses(rate: f64, secs: f64, ttl: f64) -> f64 {
    let mut total = 0.0;
    for k in 1..10_000u32 {
        let left = secs - f64::from(k - 1) * ttl;
        if left <= 0.0 {
            break;
        }
        let p = gamma_cdf(k, rate * left);
        if p < 1e-12 {
            break;
        }
        total += p;
    }
    total
}

/// The share of views a TTL cache should answer under the browse load:
/// each hot product is read at `rate x hot_share / 20` plus its share of the
/// even part, every other product at `rate x (1 - hot_share) / 1000`.
pub fn predicted_hit_ratio(k: &Knobs) -> f64 {
    let (n, hot) = (CATALOGUE as f64, HOT_PRODUCTS as f64);
    let views = k.rate * k.secs;
    if views <= 0.0 {
        return 0.0;
    }
    let cold_rate = k.rate * (1.0 - k.hot_share) / n;
    let hot_rate = k.rate * k.hot_share / hot + cold_rate;
    let misses = hot * expected_misses(hot_rate, k.secs, k.ttl)
        + (n - hot) * expected_misses(cold_rate, k.secs, k.ttl);
    (1.0 - misses / views).clamp(0.0, 1.0)
}

/// What one cached run measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Run {
    /// Product pages answered (hits + misses).
    pub views: u64,
    /// Pages answered from the cache.
    pub hits: u64,
    /// Database queries the servers made meanwhile.
    pub queries: f64,
}

impl Run {
    pub fn hit_ratio(&self) -> f64 {
        if self.views == 0 {
            return f64::NAN;
        }
        self.hits as f64 / self.views as f64
    }

    /// The share of queries saved against the same views without a cache,
    /// each costing `per_view` queries.
    pub fn avoided(&self, per_view: f64) -> f64 {
        let without = self.views as f64 * per_view;
        if without <= 0.0 {
            return f64::NAN;
        }
        1.0 - self.queries / without
    }
}

/// Everything the verdicts look at.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measured {
    /// Database queries per view without the cache (the control run).
    pub per_view: f64,
    pub skewed: Run,
    pub uniform: Run,
    /// Median time of one page read alone, answered from the cache...
    pub hit_ms: f64,
    pub hits_timed: usize,
    /// ...and from the database.
    pub miss_ms: f64,
    pub misses_timed: usize,
}

/// The least share of queries the cache must save on the skewed workload.
pub const SKEWED_AVOIDED: f64 = 0.75;
/// How far a measured hit ratio may be from the predicted one.
pub const PREDICTION_TOLERANCE: f64 = 0.10;

/// The verdicts, as (expectation, measured, passed): a pure function of the
/// knobs and the figures.
pub fn verdicts(skewed: &Knobs, uniform: &Knobs, m: &Measured) -> Vec<(String, String, bool)> {
    let (ps, pu) = (predicted_hit_ratio(skewed), predicted_hit_ratio(uniform));
    let (avoided_s, avoided_u) = (m.skewed.avoided(m.per_view), m.uniform.avoided(m.per_view));
    let run = |r: &Run, avoided: f64| {
        format!(
            "{} views, {} hits ({}), {:.0} queries instead of {:.0} ({} avoided)",
            r.views,
            r.hits,
            pct(r.hit_ratio()),
            r.queries,
            r.views as f64 * m.per_view,
            pct(avoided)
        )
    };
    let enough = |r: &Run| r.views >= 100;
    vec![
        (
            format!(
                "with {:.0}% of views on {HOT_PRODUCTS} products, the cache avoids at least {:.0}% of the database queries (course: 95%)",
                skewed.hot_share * 100.0,
                SKEWED_AVOIDED * 100.0
            ),
            run(&m.skewed, avoided_s),
            m.per_view >= 1.0 && enough(&m.skewed) && avoided_s >= SKEWED_AVOIDED,
        ),
        (
            format!(
                "with views spread evenly over {CATALOGUE} products, it avoids at most half as many"
            ),
            run(&m.uniform, avoided_u),
            m.per_view >= 1.0 && enough(&m.uniform) && avoided_u <= avoided_s / 2.0,
        ),
        (
            format!(
                "each hit ratio is what the rate ({:.0}/s), the TTL ({:.0} s) and the spread predict, within {:.0} points",
                skewed.rate,
                skewed.ttl,
                PREDICTION_TOLERANCE * 100.0
            ),
            format!(
                "skewed {} (predicted {}), uniform {} (predicted {})",
                pct(m.skewed.hit_ratio()),
                pct(ps),
                pct(m.uniform.hit_ratio()),
                pct(pu)
            ),
            (m.skewed.hit_ratio() - ps).abs() <= PREDICTION_TOLERANCE
                && (m.uniform.hit_ratio() - pu).abs() <= PREDICTION_TOLERANCE,
        ),
        (
            "a hit is at least 3 times faster than a miss, which runs the page's queries".into(),
            format!(
                "hit {:.1} ms, miss {:.1} ms (course: 2 ms and 50 ms)",
                m.hit_ms, m.miss_ms
            ),
            m.hits_timed >= 10 && m.misses_timed >= 10 && m.hit_ms * 3.0 <= m.miss_ms,
        ),
    ]
}

/// Browse at [`RATE`] views a second for `secs`, `hot_share` of them on the
/// hot set.
fn browse(hot_share: f64, run: Duration) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Browse,
        rate: Some(RATE),
        duration: run,
        // Uncached pages queue behind the database on a busy machine: wait
        // for them rather than count them as failures.
        timeout: Duration::from_secs(10),
        hot_share: Some(hot_share),
        ..LoadPlan::default()
    }
}

/// Reads each product once, one at a time, and keeps the times (ms) of the
/// answers that came from `source`.
pub(super) async fn timed_reads(
    base: &str,
    ids: impl IntoIterator<Item = i64>,
    source: lab_contract::app::Source,
) -> Result<Vec<f64>> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for id in ids {
        let t = Instant::now();
        let body = http
            .get(format!("{base}/products/{id}"))
            .send()
            .await
            .map_err(|e| super::step("read a product page")(&e))?
            .bytes()
            .await
            .map_err(|e| super::step("read a product page")(&e))?;
        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
        // An error answer is no page: it counts in neither column.
        let page = serde_json::from_slice::<lab_contract::app::Product>(&body).ok();
        if page.is_some_and(|p| p.source == source) {
            times.push(elapsed);
        }
    }
    Ok(times)
}

/// Waits until the site serves product pages: a server is healthy (and in
/// the balancer) as soon as it listens, but its pages need the database
/// migrated and seeded, which the first server does in the background.
pub(super) async fn wait_for_pages(base: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        let ok = http
            .get(format!("{base}/products/{CATALOGUE}"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(super::LessonError::Step {
        step: "see a product page served".into(),
        reason: "the database was not migrated within 90 s; see `lab logs server-1`".into(),
    }
    .into())
}

/// The median of some times (NaN for none).
pub(super) fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
}

fn row(
    label: &str,
    spread: &str,
    r: &crate::load::Report,
    queries: f64,
    extra: [String; 3],
) -> Vec<String> {
    let [hits, per_view, avoided] = extra;
    vec![
        label.into(),
        spread.into(),
        r.ok.to_string(),
        format!("{:.1}", r.latency_ms.p50),
        format!("{:.1}", r.latency_ms.p99),
        hits,
        format!("{queries:.0}"),
        per_view,
        avoided,
    ]
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let servers = 2;
    let ttl = humantime::format_duration(TTL).to_string();
    c.say("2 servers, cache off; a product page ranks the product among the best sellers (a real query over 60,000 order lines), no deliberate extra cost");
    c.up(Topology {
        servers,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::On,
        product_query_ms: 0,
        cache_ttl: ttl.clone(),
        ..Topology::default()
    })
    .await?;
    wait_for_pages(&c.entrypoint().await?).await?;
    let mut table = Table::new(
        &format!("Product views at {RATE:.0}/s"),
        &[
            "cache",
            "views go to",
            "answered",
            "p50 ms",
            "p99 ms",
            "hit ratio (predicted)",
            "db queries",
            "per view",
            "avoided",
        ],
    );
    let skewed_spread = format!("{:.0}% on {HOT_PRODUCTS}", SKEWED * 100.0);
    let even = format!("even over {CATALOGUE}");

    c.say(&format!(
        "control, cache off: {RATE:.0} views/s for {} s, {skewed_spread}",
        CONTROL.as_secs()
    ));
    let before = c.db_queries(servers).await?;
    let off = c.load(browse(SKEWED, CONTROL)).await?;
    let q_off = c.db_queries(servers).await? - before;
    let per_view = if off.ok > 0 {
        q_off / off.ok as f64
    } else {
        f64::NAN
    };
    table.row(row(
        "off",
        &skewed_spread,
        &off,
        q_off,
        ["-".into(), format!("{per_view:.2}"), "-".into()],
    ));

    c.say(&format!(
        "cache on, TTL {ttl} (servers replaced one by one)"
    ));
    c.set(&["cache=on"]).await?;
    let knobs = |hot_share| Knobs {
        rate: RATE,
        secs: RUN.as_secs_f64(),
        ttl: TTL.as_secs_f64(),
        hot_share,
    };
    let (ks, ku) = (knobs(SKEWED), knobs(0.0));
    let mut m = Measured {
        per_view,
        ..Measured::default()
    };
    for (k, spread) in [(ks, &skewed_spread), (ku, &even)] {
        c.say(&format!(
            "{RATE:.0} views/s for {} s, {spread}, from an empty cache",
            RUN.as_secs()
        ));
        let before = c.db_queries(servers).await?;
        let r = c.load(browse(k.hot_share, RUN)).await?;
        let queries = c.db_queries(servers).await? - before;
        let cache = r.cache.clone().unwrap_or_default();
        let run = Run {
            views: cache.hits + cache.misses,
            hits: cache.hits,
            queries,
        };
        table.row(row(
            "on",
            spread,
            &r,
            queries,
            [
                format!(
                    "{} ({})",
                    pct(run.hit_ratio()),
                    pct(predicted_hit_ratio(&k))
                ),
                format!("{:.2}", queries / run.views.max(1) as f64),
                pct(run.avoided(per_view)),
            ],
        ));
        if k.hot_share > 0.0 {
            m.skewed = run;
            c.say("waiting one TTL, so that every entry expires before the next run");
            tokio::time::sleep(TTL + Duration::from_secs(1)).await;
        } else {
            m.uniform = run;
        }
    }

    c.say("one page at a time: a product nobody read lately (a miss), then the same again (a hit)");
    let base = c.entrypoint().await?;
    let ids = || CATALOGUE - 29..=CATALOGUE;
    let miss = timed_reads(&base, ids(), lab_contract::app::Source::Db).await?;
    let hit = timed_reads(&base, ids(), lab_contract::app::Source::Cache).await?;
    (m.miss_ms, m.misses_timed) = (median(&miss), miss.len());
    (m.hit_ms, m.hits_timed) = (median(&hit), hit.len());
    let mut lat = Table::new(
        "One product page, read alone",
        &["answered from", "median ms", "reads", "course"],
    );
    lat.row(vec![
        "database (miss)".into(),
        format!("{:.1}", m.miss_ms),
        m.misses_timed.to_string(),
        "50 ms".into(),
    ]);
    lat.row(vec![
        "cache (hit)".into(),
        format!("{:.1}", m.hit_ms),
        m.hits_timed.to_string(),
        "2 ms".into(),
    ]);
    c.table(table);
    c.table(lat);
    for (expectation, measured, passed) in verdicts(&ks, &ku, &m) {
        c.expect(&expectation, measured, passed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(hot_share: f64) -> Knobs {
        Knobs {
            rate: RATE,
            secs: RUN.as_secs_f64(),
            ttl: TTL.as_secs_f64(),
            hot_share,
        }
    }

    /// Figures like a real run's.
    fn measured() -> Measured {
        Measured {
            per_view: 2.0,
            skewed: Run {
                views: 300,
                hits: 262,
                queries: 78.0,
            },
            uniform: Run {
                views: 300,
                hits: 40,
                queries: 520.0,
            },
            hit_ms: 1.4,
            hits_timed: 30,
            miss_ms: 24.0,
            misses_timed: 25,
        }
    }

    fn passed(m: &Measured) -> Vec<bool> {
        verdicts(&knobs(SKEWED), &knobs(0.0), m)
            .into_iter()
            .map(|v| v.2)
            .collect()
    }

    #[test]
    fn the_model_matches_simple_cases() {
        // Never read: no miss.
        assert_eq!(expected_misses(0.0, 10.0, 5.0), 0.0);
        // Read constantly: one miss per lifetime started in the run.
        let m = expected_misses(1000.0, 10.0, 3.0);
        assert!((m - 4.0).abs() < 0.01, "{m}");
        // An entry outliving the run: one miss if it is read at all.
        let m = expected_misses(0.1, 10.0, 100.0);
        assert!((m - (1.0 - (-1.0f64).exp())).abs() < 1e-9, "{m}");
        // Skewed reads hit far more often than even ones.
        let (s, u) = (
            predicted_hit_ratio(&knobs(SKEWED)),
            predicted_hit_ratio(&knobs(0.0)),
        );
        assert!(s > 0.8 && u < 0.2, "{s} {u}");
        // A TTL of nothing is a cache that never answers.
        let k = Knobs {
            ttl: 0.0,
            ..knobs(SKEWED)
        };
        assert!(predicted_hit_ratio(&k) < 0.01);
    }

    #[test]
    fn a_cache_that_helps_where_reads_repeat_passes() {
        assert_eq!(passed(&measured()), [true, true, true, true]);
    }

    #[test]
    fn a_cache_that_did_nothing_fails() {
        let m = Measured {
            skewed: Run {
                views: 300,
                hits: 0,
                queries: 600.0,
            },
            ..measured()
        };
        assert_eq!(passed(&m), [false, false, false, true]);
    }

    #[test]
    fn a_cache_as_good_on_even_reads_fails() {
        // As if the uniform run had read the hot set after all.
        let m = Measured {
            uniform: measured().skewed,
            ..measured()
        };
        assert_eq!(passed(&m), [true, false, false, true]);
    }

    #[test]
    fn queries_the_app_did_not_count_fail() {
        let m = Measured {
            per_view: 0.0,
            ..measured()
        };
        assert_eq!(passed(&m)[..2], [false, false]);
    }

    #[test]
    fn a_miss_as_fast_as_a_hit_fails() {
        let m = Measured {
            miss_ms: 2.0,
            ..measured()
        };
        assert!(!passed(&m)[3]);
        let m = Measured {
            misses_timed: 3,
            ..measured()
        };
        assert!(!passed(&m)[3]);
    }
}
