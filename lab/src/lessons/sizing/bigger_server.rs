//! Lesson 2: a bigger server (vertical scaling), in two parts.
//!
//! CPUs: the same server with 0.5, 1 and 2 CPUs under CPU-bound requests.
//! It serves more, but on a machine whose cores it shares with the balancer
//! and the load driver, each added CPU buys less than the one before.
//!
//! Memory: the server keeps rendered product pages in its memory (a quarter
//! of its memory limit, see `services/app/src/page_cache.rs`), and users ask
//! for pages by popularity (a Zipf law: a few pages are everywhere, a long
//! tail is rare). A page in memory costs a copy; one that is not costs a
//! product read in the database, whose CPU is the bottleneck. Doubling the
//! memory keeps twice the pages, but each new slice is less popular than the
//! last, and the part of a request memory cannot remove stays: every page
//! also costs the server its own work for the user (name, cart, prices:
//! some ms of CPU, sized on this machine by [`page_work_ms`]). Once memory
//! has removed most database reads, that work is what limits, and capacity
//! rises by less with each doubling.
//! The course puts it at about 1.4x for 2x the memory, 2x for 4x, 2.5x for
//! 8x.
//!
//! Without that per-page work the database would be the only limit, and
//! capacity would follow 1 / (share of pages not in memory): with a Zipf law
//! that grows about as fast per MiB at 8x as at 2x (measured in CI: +0.55,
//! +0.60, +0.56 requests/s per MiB, docs/labs/results/2026-11-30-ci-before-fixes.txt). The verdict below fails on such a run.

use std::time::Duration;

use lab_contract::app::{PageCacheStats, PAGE_BYTES};

use super::{one_server_topology, served, WORK_MS};
use crate::error::Result;
use crate::lessons::{step, Ctx, Lesson, Table};
use crate::load::{LoadPlan, Scenario};
use crate::topology::{ResourceSet, Resources, Topology};

pub const LESSON: Lesson = Lesson {
    name: "bigger-server",
    number: 2,
    summary: "one server with 0.5, 1, 2 CPUs, then 1x to 8x memory: capacity grows, each doubling by less",
    hypothesis: "a bigger server (more CPUs, more memory) serves more, but each doubling buys less than the one before (diminishing returns): about 1.4x the capacity for 2x the memory, 2x for 4x, 2.5x for 8x",
    body: |c| Box::pin(body(c)),
};

/// The server's CPU limits, smallest first.
const CPU_STEPS: [f64; 3] = [0.5, 1.0, 2.0];
/// The server's memory, in MiB: 1x, 2x, 4x, 8x.
const MEMORY_MIB: [u64; 4] = [32, 64, 128, 256];
/// The server's CPU limit while memory is measured.
const MEMORY_PART_CPUS: f64 = 1.0;
/// The database's CPU limit: what a page read from it costs is what memory saves.
const DB_CPUS: f64 = 0.5;
/// The database work of one product read, in ms of its CPU.
const PRODUCT_QUERY_MS: u32 = 10;
/// The server's CPU work per page besides its data, in ms: what memory
/// cannot remove. It is sized on this machine ([`page_work_ms`]) so that
/// the server's own CPU caps it at [`CAP_OVER_FIRST`] times what it serves
/// with 1x the memory, where the database is the limit.
///
/// Until 1 December it was a fixed 8 ms: on the machines of November that
/// capped the server near 2x its 1x capacity, but on a slower machine of
/// 1 December a database read cost more beside the server's work, the cap
/// came only at 8x, and the doublings' gains per MiB did not shrink
/// (+0.15, +0.38, +0.14 in CI). What shapes the curve is the
/// ratio of the two costs, so the lesson measures both and sets it.
///
/// The probe that measures them runs with this little page work, so that
/// the database, not the server, is its limit.
const PROBE_PAGE_MS: u32 = 2;
/// The server's cap over its 1x capacity. The database-bound capacity grows
/// about 1.3x, 1.9x and 2.6x with 2x, 4x and 8x the memory (the share of
/// pages in memory: about 45%, 58%, 71%, 79%), so a cap below 2x binds
/// near 4x the memory and the last doubling buys little (the course's 2.5x
/// at 8x needs a cap near 2.5x, which a first doubling that buys only
/// 1.15x, as one run did, no longer clears by half).
///
/// Why 1.8 and not 2: the probe's own cost of a page is measured at 1x,
/// where half the pages come from the database, and a 512 KiB page read
/// from it costs the server more than one copied from its memory. At 4x
/// and 8x a page costs it less, so the cap lands above the aim. With 2x,
/// a clean-clone CI run on 1 December gained +0.44, +0.21, +0.20
/// requests/s per MiB: the last 45% of the first, against a bar of 50%.
pub const CAP_OVER_FIRST: f64 = 1.8;
/// The sized page work's bounds, in ms.
const PAGE_WORK: std::ops::RangeInclusive<u32> = 1..=60;
/// The last doubling's gain per MiB is at most this share of the first's.
pub const LAST_GAIN_SHARE: f64 = 0.5;
/// How long each memory size is measured. The share of reads from memory is
/// a proportion of a few hundred requests (sampling noise about 2 points at
/// 500); consecutive sizes differ by about 10 points. 5 s once gave +3
/// points between 64 and 128 MiB: too close to call a rise.
const MEMORY_MEASURE: Duration = Duration::from_secs(8);
/// How long the sizing probe is measured.
const PROBE_MEASURE: Duration = Duration::from_secs(5);
/// Users asking for pages at once (closed model: each waits for its answer).
const PAGE_USERS: u32 = 16;
/// The course's capacity for 2x, 4x and 8x the memory.
pub const COURSE: [f64; 3] = [1.4, 2.0, 2.5];

/// The page work, in ms of the server's CPU, that caps a server of `cpus`
/// at [`CAP_OVER_FIRST`] times `first_capacity` (pages/s with 1x the memory,
/// measured with [`PROBE_PAGE_MS`] of page work), given that it spent
/// `server_ms_per_page` of CPU per page then: what is not page work is the
/// server's own cost of a page (HTTP, its memory, the database's answer),
/// and it stays.
pub fn page_work_ms(first_capacity: f64, server_ms_per_page: f64, cpus: f64) -> u32 {
    if first_capacity.is_nan() || first_capacity <= 0.0 || server_ms_per_page.is_nan() {
        return *PAGE_WORK.start();
    }
    let own = (server_ms_per_page - f64::from(PROBE_PAGE_MS)).max(0.0);
    let per_page = cpus * 1000.0 / (CAP_OVER_FIRST * first_capacity);
    let work = (per_page - own).round();
    (work.max(0.0) as u32).clamp(*PAGE_WORK.start(), *PAGE_WORK.end())
}

/// What `y` gains per unit of `x` between each point and the next.
pub fn marginal_gains(points: &[(f64, f64)]) -> Vec<f64> {
    points
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) / (w[1].0 - w[0].0))
        .collect()
}

/// Whether each step's gain per unit is smaller than the step before's:
/// diminishing returns, whatever the size of the steps.
pub fn diminishing(points: &[(f64, f64)]) -> bool {
    let g = marginal_gains(points);
    g.len() >= 2 && g.windows(2).all(|w| w[1] < w[0])
}

/// Diminishing returns over a range: the first step buys something (at
/// least 5% more), and the last gains at most `share` of what the first
/// gained per unit. Across several steps it asks for a clear bend, where
/// step-by-step comparisons of close gains would flip on noise.
pub fn last_gains_less(points: &[(f64, f64)], share: f64) -> bool {
    let g = marginal_gains(points);
    let bought = points.len() >= 2 && points[1].1 >= 1.05 * points[0].1;
    match (g.first(), g.last()) {
        (Some(&first), Some(&last)) if g.len() >= 2 => {
            bought && first > 0.0 && last <= share * first
        }
        _ => false,
    }
}

/// The CPU part's verdicts: `caps` is (CPUs, requests/s), smallest first.
pub fn cpu_verdicts(caps: &[(f64, f64)]) -> Vec<(String, String, bool)> {
    let [(x0, c0), (x1, c1), (x2, c2)] = caps else {
        return vec![(
            "three CPU sizes were measured".into(),
            format!("{} were", caps.len()),
            false,
        )];
    };
    let g = marginal_gains(caps);
    vec![
        (
            format!("a bigger server serves more ({x1} CPU at least 1.5x {x0} CPU)"),
            format!("{c0:.0} -> {c1:.0} requests/s ({:.2}x)", c1 / c0.max(0.001)),
            *c1 >= 1.5 * c0,
        ),
        (
            format!(
                "each added CPU buys less: requests/s gained per CPU added from {x1} to {x2} is below that from {x0} to {x1}"
            ),
            format!(
                "+{:.0}/s per CPU, then +{:.0}/s per CPU ({x0} -> {x2} CPUs gave {:.2}x for {:.0}x the CPUs)",
                g[0],
                g[1],
                c2 / c0.max(0.001),
                x2 / x0
            ),
            diminishing(caps),
        ),
    ]
}

/// One memory size and what it gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryStep {
    pub memory_mib: f64,
    /// Requests per second served.
    pub capacity: f64,
    /// Share of page reads answered from memory.
    pub hit_ratio: f64,
}

/// The memory part's verdicts, a pure function of what each size gave
/// (smallest first, each twice the one before).
pub fn memory_verdicts(steps: &[MemoryStep]) -> Vec<(String, String, bool)> {
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        return vec![(
            "memory sizes were measured".into(),
            "none were".into(),
            false,
        )];
    };
    let hits: Vec<String> = steps
        .iter()
        .map(|s| format!("{:.0}%", s.hit_ratio * 100.0))
        .collect();
    let ratios: Vec<String> = steps
        .iter()
        .skip(1)
        .zip(COURSE.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(s, course)| {
            format!(
                "{:.0}x -> {:.2}x{}",
                s.memory_mib / first.memory_mib,
                s.capacity / first.capacity.max(0.001),
                course
                    .map(|c| format!(" (course {c}x)"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let points: Vec<(f64, f64)> = steps.iter().map(|s| (s.memory_mib, s.capacity)).collect();
    let gains: Vec<String> = marginal_gains(&points)
        .iter()
        .map(|g| format!("{g:+.2}"))
        .collect();
    vec![
        (
            "more memory keeps more pages: the share of reads served from memory rises with each doubling".into(),
            hits.join(" -> "),
            steps.windows(2).all(|w| w[1].hit_ratio > w[0].hit_ratio),
        ),
        (
            format!(
                "more memory serves more: {:.0}x the memory serves at least 1.3x the requests",
                last.memory_mib / first.memory_mib
            ),
            ratios.join(", "),
            last.capacity >= 1.3 * first.capacity,
        ),
        (
            format!(
                "each doubling buys less: the first buys something (5% or more), the last gains at most {:.0}% of the requests/s per MiB added that the first gained",
                LAST_GAIN_SHARE * 100.0
            ),
            format!("{} requests/s per MiB", gains.join(", ")),
            last_gains_less(&points, LAST_GAIN_SHARE),
        ),
    ]
}

/// The most requests per second the server completes with plenty of users.
async fn cpu_capacity(c: &Ctx<'_>) -> Result<f64> {
    let r = c
        .load(LoadPlan {
            scenario: Scenario::Work,
            work_ms: WORK_MS,
            users: Some(16),
            duration: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            ..LoadPlan::default()
        })
        .await?;
    Ok(served(&r))
}

/// The server's page cache, asked directly on its published port.
async fn page_cache(c: &Ctx<'_>, http: &reqwest::Client) -> Result<PageCacheStats> {
    let addr = c.address("server-1", crate::roles::server::PORT).await?;
    let r = http
        .get(format!("http://{addr}/page-cache"))
        .send()
        .await
        .map_err(|e| step("ask server-1 for its page cache")(&e))?;
    r.json()
        .await
        .map_err(|e| step("read server-1's page cache")(&e))
}

fn pages(page_ms: u32, args_duration: Duration) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Pages,
        page_ms,
        users: Some(PAGE_USERS),
        duration: args_duration,
        timeout: Duration::from_secs(5),
        ..LoadPlan::default()
    }
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    c.say(&format!("one server; its CPU limit is raised live: 0.5, 1, then 2 CPUs (this machine has {host_cpus}, shared with the balancer and the load driver)"));
    let first_memory = format!("{}m", MEMORY_MIB[0]);
    c.up(Topology {
        resources: ResourceSet {
            server: Resources {
                cpus: Some(CPU_STEPS[0]),
                memory: Some(first_memory),
            },
            db: Resources {
                cpus: Some(DB_CPUS),
                memory: None,
            },
            ..ResourceSet::default()
        },
        product_query_ms: PRODUCT_QUERY_MS,
        ..one_server_topology(CPU_STEPS[0])
    })
    .await?;
    let mut table = Table::new(
        "Capacity of one server by CPU",
        &["CPUs", "requests/s", "x of 0.5 CPU", "requests/s per CPU"],
    );
    let mut caps = Vec::new();
    for cpus in CPU_STEPS {
        if cpus != CPU_STEPS[0] {
            c.faults()
                .resize("server-1", Some(cpus), None, None)
                .await?;
        }
        let cap = cpu_capacity(c).await?;
        caps.push((cpus, cap));
        table.row(vec![
            format!("{cpus}"),
            format!("{cap:.0}"),
            format!("{:.2}", cap / caps[0].1.max(0.001)),
            format!("{:.0}", cap / cpus),
        ]);
    }
    c.table(table);
    for (expectation, measured, passed) in cpu_verdicts(&caps) {
        c.expect(&expectation, measured, passed);
    }

    c.faults()
        .resize("server-1", Some(MEMORY_PART_CPUS), None, None)
        .await?;
    // The probe: with little page work the database is the limit; the
    // server's CPU over it says what a page costs the server besides.
    // Warmed longer than a step: the database's own memory is cold too
    // (3 s of warm-up measured 32 pages/s where the same size then served
    // 38).
    c.load(pages(PROBE_PAGE_MS, Duration::from_secs(6))).await?;
    let before = c.cpu_ms("server-1").await?;
    let probe = c.load(pages(PROBE_PAGE_MS, PROBE_MEASURE)).await?;
    let server_ms = (c.cpu_ms("server-1").await? - before) / probe.ok.max(1) as f64;
    let first = served(&probe);
    let page_ms = page_work_ms(first, server_ms, MEMORY_PART_CPUS);
    c.say(&format!(
        "now memory: {MEMORY_PART_CPUS} CPU, {PAGE_USERS} users asking for {} KiB product pages by popularity; the server keeps a quarter of its memory as pages, and a page it lacks costs a {PRODUCT_QUERY_MS} ms read in a database of {DB_CPUS} CPU",
        PAGE_BYTES / 1024
    ));
    c.say(&format!(
        "every page also costs {page_ms} ms of the server's CPU for its user, what memory cannot remove: with 1x the memory a probe served {first:.0} pages/s, each costing the server {server_ms:.1} ms of CPU with {PROBE_PAGE_MS} ms of page work, so {page_ms} ms caps the server near {CAP_OVER_FIRST}x that"
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| step("make an HTTP client")(&e))?;
    let mut table = Table::new(
        &format!("Capacity of one server by memory (product pages, Zipf popularity; {page_ms} ms of the server's work per page)"),
        &[
            "memory",
            "pages kept",
            "from memory",
            "db reads/s",
            "requests/s",
            "x of 1x",
            "course",
        ],
    );
    let mut steps: Vec<MemoryStep> = Vec::new();
    for (i, mib) in MEMORY_MIB.into_iter().enumerate() {
        if i > 0 {
            c.faults()
                .resize("server-1", None, Some(&format!("{mib}m")), None)
                .await?;
        }
        // Warm up: the server sees its new limit within a second, and the
        // popular pages settle in before anything is counted (at 1x the
        // probe did).
        if i > 0 {
            c.load(pages(page_ms, Duration::from_secs(3))).await?;
        }
        let before = page_cache(c, &http).await?;
        let r = c.load(pages(page_ms, MEMORY_MEASURE)).await?;
        let after = page_cache(c, &http).await?;
        let hits = after.hits.saturating_sub(before.hits);
        let misses = after.misses.saturating_sub(before.misses);
        let s = MemoryStep {
            memory_mib: mib as f64,
            capacity: served(&r),
            hit_ratio: hits as f64 / (hits + misses).max(1) as f64,
        };
        steps.push(s);
        table.row(vec![
            format!("{mib} MiB"),
            after.capacity_pages.to_string(),
            crate::lessons::pct(s.hit_ratio),
            format!("{:.0}", misses as f64 / r.duration_s.max(0.001)),
            format!("{:.0}", s.capacity),
            format!("{:.2}", s.capacity / steps[0].capacity.max(0.001)),
            if i == 0 {
                "1".into()
            } else {
                COURSE.get(i - 1).map(|c| c.to_string()).unwrap_or_default()
            },
        ]);
    }
    c.table(table);
    for (expectation, measured, passed) in memory_verdicts(&steps) {
        c.expect(&expectation, measured, passed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(v: Vec<(String, String, bool)>) -> Vec<bool> {
        v.into_iter().map(|v| v.2).collect()
    }

    #[test]
    fn cpus_with_shrinking_gains_pass() {
        assert_eq!(
            passed(cpu_verdicts(&[(0.5, 48.0), (1.0, 95.0), (2.0, 120.0)])),
            [true, true]
        );
    }

    #[test]
    fn cpus_whose_gains_do_not_shrink_fail() {
        // Linear: 2 CPUs did give twice 1 CPU; nothing diminished.
        assert_eq!(
            passed(cpu_verdicts(&[(0.5, 50.0), (1.0, 100.0), (2.0, 200.0)])),
            [true, false]
        );
        // The old check (below 4x from 0.5 to 2) passed this; the gain per
        // CPU grew from 1 to 2 CPUs (+40 per CPU, then +60).
        assert_eq!(
            passed(cpu_verdicts(&[(0.5, 50.0), (1.0, 70.0), (2.0, 130.0)])),
            [false, false]
        );
        assert_eq!(passed(cpu_verdicts(&[(0.5, 50.0)])), [false]);
    }

    fn memory(caps: [f64; 4], hits: [f64; 4]) -> Vec<MemoryStep> {
        [32.0, 64.0, 128.0, 256.0]
            .into_iter()
            .zip(caps)
            .zip(hits)
            .map(|((memory_mib, capacity), hit_ratio)| MemoryStep {
                memory_mib,
                capacity,
                hit_ratio,
            })
            .collect()
    }

    #[test]
    fn the_course_figures_pass() {
        // 1.4x, 2x, 2.5x: +0.4 per unit, then +0.3, then +0.125. (Per
        // doubling they are 1.4x, 1.43x and 1.25x: not each smaller, which
        // is why the verdict counts the gain per MiB added.)
        let s = memory([100.0, 140.0, 200.0, 250.0], [0.5, 0.65, 0.8, 0.9]);
        assert_eq!(passed(memory_verdicts(&s)), [true, true, true]);
        let text = &memory_verdicts(&s)[1].1;
        assert!(text.contains("2x -> 1.40x (course 1.4x)"), "{text}");
    }

    #[test]
    fn proportional_or_growing_returns_fail() {
        // Twice the memory, twice the capacity: no diminishing return.
        let s = memory([100.0, 200.0, 400.0, 800.0], [0.5, 0.65, 0.8, 0.9]);
        assert_eq!(passed(memory_verdicts(&s)), [true, true, false]);
        // A database-bound server whose misses halve: returns grow.
        let s = memory([100.0, 130.0, 200.0, 400.0], [0.5, 0.65, 0.8, 0.9]);
        assert_eq!(passed(memory_verdicts(&s)), [true, true, false]);
    }

    #[test]
    fn a_database_only_limit_gains_as_much_each_time_and_fails() {
        // Measured with no per-page work: 1/(miss share) grew about as fast
        // per MiB at the end as at the start.
        let s = memory([58.0, 75.6, 114.0, 185.7], [0.48, 0.58, 0.70, 0.80]);
        assert_eq!(passed(memory_verdicts(&s)), [true, true, false]);
        // Gains that shrink, but not to half: not a clear bend.
        let s = memory([100.0, 130.0, 180.0, 260.0], [0.5, 0.6, 0.7, 0.8]);
        assert_eq!(passed(memory_verdicts(&s)), [true, true, false]);
    }

    #[test]
    fn a_server_limit_bends_the_curve_and_passes() {
        // Near the server's own ceiling the last doubling buys little.
        let s = memory([58.0, 72.0, 92.0, 104.0], [0.48, 0.58, 0.70, 0.80]);
        assert_eq!(passed(memory_verdicts(&s)), [true, true, true]);
    }

    #[test]
    fn the_page_work_caps_the_server_near_twice_its_first_capacity() {
        // 48 pages/s at 1x, 2 ms of a page the server's own: 11.6 ms a
        // page in all caps it at 86 pages/s, 10 of them page work.
        assert_eq!(page_work_ms(48.0, 4.0, 1.0), 10);
        // A slower database (32 pages/s at 1x) and a server whose own cost
        // doubled: more page work, the same ratio.
        assert_eq!(page_work_ms(32.0, 6.0, 1.0), 13);
        // Half a CPU halves the time that caps it.
        assert_eq!(page_work_ms(48.0, 4.0, 0.5), 4);
        // A server whose own cost is the whole budget still does some work.
        assert_eq!(page_work_ms(100.0, 20.0, 1.0), 1);
        // Nothing served, or nothing measured: the least.
        assert_eq!(page_work_ms(0.0, 4.0, 1.0), 1);
        assert_eq!(page_work_ms(48.0, f64::NAN, 1.0), 1);
        // A very slow database: bounded.
        assert_eq!(page_work_ms(2.0, 3.0, 1.0), 60);
    }

    #[test]
    fn memory_that_buys_nothing_fails() {
        let s = memory([100.0, 101.0, 100.0, 102.0], [0.5, 0.5, 0.5, 0.5]);
        assert_eq!(passed(memory_verdicts(&s)), [false, false, false]);
        assert_eq!(passed(memory_verdicts(&[])), [false]);
    }
}
