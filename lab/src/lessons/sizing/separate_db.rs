//! Lesson 3: the web server and the database on one machine, and on two.
//!
//! One machine is one container (`box`): its entrypoint starts a PostgreSQL
//! beside the app (`LOCAL_DATABASE=on`), so the two share the container's
//! CPU limit exactly as two programs share one box's processors: the
//! kernel hands the CPU out thread by thread, and a busy web server has many
//! threads. Two machines are the lab's usual `server-1` and `db-1`,
//! each with the same CPU limit as the box.
//!
//! Both layouts run side by side. Web traffic rises past what a machine's
//! CPU can do (CPU-bound pages), the same on both web servers at the same
//! time, and each database's own time for one query (psql's `\timing`,
//! measured inside the machine the database runs on) is taken in turns at
//! the same moments, so the other programs of a busy laptop weigh on both
//! alike. On one machine the database starves as the web server fills the
//! CPU; on its own it stays about as fast as when idle. Nothing is stopped
//! or killed by the lesson: the only difference is what shares the CPU.

use std::collections::BTreeMap;
use std::time::Duration;

use lab_contract::app::{env, AppEnv};
use lab_contract::knobs::{Sessions, Toggle};

use super::{one_server_topology, served};
use crate::error::{LabError, Result};
use crate::images::Image;
use crate::lessons::{step, Ctx, Lesson, LessonError, Table};
use crate::load::{LoadPlan, Scenario};
use crate::runtime::{labels, ContainerSpec, PortSpec};
use crate::topology::{Reads, ResourceSet, Resources, Topology};

pub const LESSON: Lesson = Lesson {
    name: "separate-db",
    number: 3,
    summary: "web and database on one machine vs two, under rising web load: on one the database starves",
    hypothesis: "when the web server and the database share a machine, web traffic past the machine's CPU stalls the database with it; on separate machines the database stays healthy under the same traffic",
    body: |c| Box::pin(body(c)),
};

/// Each machine's CPU limit: the box's, and each of the two machines'. Half
/// a CPU, so both web servers together fill only one of a laptop's two.
const MACHINE_CPUS: f64 = 0.5;
/// CPU-bound web requests: each burns this many ms of the web server's CPU.
const PAGE_MS: u32 = 20;
/// Web requests per second: half the machine's CPU, nearly all of it, past it.
const RATES: [f64; 3] = [12.0, 22.0, 30.0];
/// The database's own query, timed inside its machine: pure CPU work,
/// counting `rows` generated rows (in the select list, so nothing is
/// written to a temporary file). The number of rows is sized on this
/// machine ([`query_rows`]).
///
/// Until 1 December it was a million rows in `FROM`: about 110 ms idle on
/// an AMD EPYC, but PostgreSQL then writes the rows to a temporary file and
/// reads them back, and on a slower machine of that evening (595 ms idle,
/// in CI) probably the disk rather than the CPU set its time (not measured
/// apart): the database sharing its machine with a web server past its CPU
/// was only 1.3x slower than idle. Counting in the select list is CPU only, and the kernel's sharing
/// of the CPU is what the lesson shows.
fn db_query(rows: u64) -> String {
    format!("SELECT count(*) FROM (SELECT generate_series(1, {rows})) AS g")
}
/// Rows counted to size the query, and the CPU time the sized query aims
/// at: long enough that the moments a busy laptop takes from it stay small
/// beside it (a pure-CPU query of 7 ms measured up to 2.7x idle on the
/// machine of its own; 300,000 rows in `FROM`, about 22 ms, 1.5x to 2.3x),
/// short enough that [`LOADED_ROUNDS`] timings of a starved database fit
/// in one web load (with 60 ms of CPU the starved database measured 3.3x
/// its idle time where 100 ms measured 4.3x, against a bar of 3x; one run
/// each, 1 December). A million rows fit in the first slice of CPU time the
/// machine's limit allows (50 ms of each 100 ms), so they time the CPU
/// alone; the sized query outlasts a slice and, at half a CPU, takes about
/// two and a half times its CPU time idle (100 ms of CPU took 240 to 260
/// ms).
const SIZING_ROWS: u64 = 1_000_000;
/// Timings of [`SIZING_ROWS`]; the fastest is kept (a busy moment only ever
/// makes one slower).
const SIZING_RUNS: usize = 5;
/// The CPU time the sized query aims at (see [`SIZING_ROWS`]).
pub const TARGET_CPU_MS: f64 = 100.0;
/// The sized query's bounds, in rows.
const ROWS: std::ops::RangeInclusive<u64> = 500_000..=40_000_000;

/// The rows that make the query take about [`TARGET_CPU_MS`] of CPU, from
/// the fastest idle time `sizing_ms` of [`SIZING_ROWS`].
pub fn query_rows(sizing_ms: f64) -> u64 {
    if sizing_ms.is_nan() || sizing_ms <= 0.0 {
        return *ROWS.start();
    }
    let rows = (SIZING_ROWS as f64 * TARGET_CPU_MS / sizing_ms).round() as u64;
    // Round to 100,000 rows: the query reads the same in every report.
    let rows = rows.div_ceil(100_000) * 100_000;
    rows.clamp(*ROWS.start(), *ROWS.end())
}
/// How long each web load lasts: long enough for [`LOADED_ROUNDS`] timings
/// of both databases (each a `docker exec`, slower on a busy laptop) to
/// fall inside it, after the load has settled. A starved database takes
/// about ten times the query's CPU time (1,022 ms for 100 ms of CPU, with
/// the other machine's 314 ms: 9.4 s for seven rounds of both).
const WEB_LOAD: Duration = Duration::from_secs(15);
/// Timings of each database under each load. Their median is the verdict's
/// figure: with three, two unlucky moments of a busy laptop were enough to
/// move it.
const LOADED_ROUNDS: usize = 7;
/// The one-machine container's short name.
pub(crate) const BOX: &str = "box";

/// One web load and what the database did meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Web requests per second sent.
    pub rate: f64,
    /// Answered per second.
    pub served: f64,
    /// The database's own time for [`db_query`], median of a few, in ms.
    pub db_ms: f64,
}

/// One layout: the database idle, then under each web load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    pub idle_db_ms: f64,
    pub steps: Vec<Step>,
}

impl Layout {
    /// The database's query time under the heaviest web load, over idle.
    pub fn top_slowdown(&self) -> Option<f64> {
        let top = self.steps.last()?;
        (self.idle_db_ms > 0.0).then(|| top.db_ms / self.idle_db_ms)
    }
}

/// A database this much slower than idle is stalled. The bound comes from
/// the app: up to 4 threads burn CPU for `/work` (`WORK_THREADS`), so on one
/// machine a database backend competing with them gets about a fifth of the
/// CPU, 5x slower; 3x leaves room for a noisy laptop.
pub const STALLED: f64 = 3.0;
/// At most this much slower than idle, it is healthy: a second machine on a
/// laptop still shares the laptop with the balancer and the load driver.
pub const HEALTHY: f64 = 2.0;
/// Timed at the same moments, the database on one machine is at least this
/// much slower than the one on its own.
pub const APART: f64 = 2.0;

/// The verdicts, as (expectation, measured, passed): a pure function of the
/// two layouts' measurements.
pub fn verdicts(shared: &Layout, separate: &Layout) -> Vec<(String, String, bool)> {
    let describe = |l: &Layout| match (l.steps.last(), l.top_slowdown()) {
        (Some(top), Some(x)) => format!(
            "{:.1} ms idle, {:.1} ms at {:.0} web requests/s ({x:.1}x)",
            l.idle_db_ms, top.db_ms, top.rate
        ),
        _ => "not measured".into(),
    };
    let shared_x = shared.top_slowdown();
    let separate_x = separate.top_slowdown();
    vec![
        (
            format!(
                "one machine: web traffic past its CPU stalls the database (its query takes at least {STALLED}x its idle time)"
            ),
            describe(shared),
            shared_x.is_some_and(|x| x >= STALLED),
        ),
        (
            format!(
                "separate machines: under the same traffic the database stays healthy (at most {HEALTHY}x its idle time)"
            ),
            describe(separate),
            separate_x.is_some_and(|x| x <= HEALTHY),
        ),
        (
            format!(
                "at the same moments, the database sharing its machine is at least {APART}x slower than the one on its own"
            ),
            match (shared.steps.last(), separate.steps.last()) {
                (Some(a), Some(b)) => format!(
                    "{:.1} ms against {:.1} ms at {:.0} web requests/s ({:.1}x)",
                    a.db_ms,
                    b.db_ms,
                    a.rate,
                    a.db_ms / b.db_ms.max(0.001)
                ),
                _ => "not measured".into(),
            },
            matches!((shared.steps.last(), separate.steps.last()), (Some(a), Some(b)) if a.db_ms >= APART * b.db_ms),
        ),
    ]
}

/// Timings of [`db_query`] by PostgreSQL itself (psql's `\timing`: the
/// server's time, no network), `runs` in one session inside `container`.
async fn db_query_ms(
    c: &Ctx<'_>,
    container: &str,
    psql: &[&str],
    rows: u64,
    runs: usize,
) -> Result<Vec<f64>> {
    let query = db_query(rows);
    let mut cmd = psql.to_vec();
    cmd.extend(["-AtX", "-U", "postgres", "-c", "\\timing on"]);
    for _ in 0..runs {
        cmd.extend(["-c", query.as_str()]);
    }
    let out = c.rt.exec(container, &cmd).await?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .collect())
}

/// The median of some timings.
fn median(mut v: Vec<f64>) -> Result<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2)
        .copied()
        .ok_or_else(|| step("time a database query")(&"psql printed no timing"))
}

/// A machine's web server (a loopback base URL) and where its database runs.
struct Machine<'a> {
    web: String,
    db: String,
    psql: &'a [&'a str],
    /// Rows the query counts (the same on both machines).
    rows: u64,
}

/// Times the query `rounds` times in each machine's database, taking turns,
/// so both see the same moments of a laptop whose other programs come and
/// go; returns the two medians.
async fn both_db_ms(
    c: &Ctx<'_>,
    one: &Machine<'_>,
    two: &Machine<'_>,
    rounds: usize,
) -> Result<(f64, f64)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.extend(db_query_ms(c, &one.db, one.psql, one.rows, 1).await?);
        b.extend(db_query_ms(c, &two.db, two.psql, two.rows, 1).await?);
    }
    Ok((median(a)?, median(b)?))
}

fn web_load(rate: f64) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Work,
        work_ms: PAGE_MS,
        rate: Some(rate),
        duration: WEB_LOAD,
        timeout: Duration::from_secs(5),
        live: crate::load::LiveView::Off,
        ..LoadPlan::default()
    }
}

/// Both layouts at once: the databases idle, then the same rising web load
/// on each web server at the same time, the databases timed in its middle.
async fn measure(
    c: &Ctx<'_>,
    one: &Machine<'_>,
    two: &Machine<'_>,
) -> Result<(Layout, Layout, Table)> {
    let (idle_one, idle_two) = both_db_ms(c, one, two, 5).await?;
    let mut shared = Layout {
        idle_db_ms: idle_one,
        steps: Vec::new(),
    };
    let mut separate = Layout {
        idle_db_ms: idle_two,
        steps: Vec::new(),
    };
    let mut table = Table::new(
        &format!("The database's own query time (ms) under the same web load, both layouts at once (the query counts {} rows)", one.rows),
        &[
            "web requests/s",
            "one machine: answered/s",
            "db ms",
            "x idle",
            "two machines: answered/s",
            "db ms",
            "x idle",
        ],
    );
    table.row(vec![
        "0".into(),
        "-".into(),
        format!("{idle_one:.1}"),
        "1.0".into(),
        "-".into(),
        format!("{idle_two:.1}"),
        "1.0".into(),
    ]);
    for rate in RATES {
        let args = web_load(rate);
        let probe = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            both_db_ms(c, one, two, LOADED_ROUNDS).await
        };
        let (r_one, r_two, dbs) = tokio::join!(
            crate::load::run(&args, &one.web),
            crate::load::run(&args, &two.web),
            probe
        );
        let (r_one, r_two, (db_one, db_two)) = (r_one?, r_two?, dbs?);
        table.row(vec![
            format!("{rate:.0}"),
            format!("{:.0}", served(&r_one)),
            format!("{db_one:.1}"),
            format!("{:.1}", db_one / idle_one.max(0.001)),
            format!("{:.0}", served(&r_two)),
            format!("{db_two:.1}"),
            format!("{:.1}", db_two / idle_two.max(0.001)),
        ]);
        shared.steps.push(Step {
            rate,
            served: served(&r_one),
            db_ms: db_one,
        });
        separate.steps.push(Step {
            rate,
            served: served(&r_two),
            db_ms: db_two,
        });
    }
    Ok((shared, separate, table))
}

/// Creates the one-machine container: the app image with its own
/// PostgreSQL, on the lab's network, its port published on loopback, its
/// CPU limited to `cpus`, each product read costing its database
/// `product_query_ms`. Returns its base URL once it is ready.
pub(crate) async fn start_box(c: &Ctx<'_>, cpus: f64, product_query_ms: u32) -> Result<String> {
    let name = crate::naming::container(&c.lab, BOX);
    let app = AppEnv {
        server_name: BOX.into(),
        port: crate::roles::server::PORT,
        session_store: Sessions::Memory,
        redis_url: None,
        database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        replica_urls: Vec::new(),
        reads: Reads::Primary,
        cache: Toggle::Off,
        cache_ttl: Duration::from_secs(30),
        product_query_ms: product_query_ms.into(),
        session_secret: None,
        log: "info".into(),
        // One database, its own: nothing to follow.
        follow_primary: Toggle::Off,
    };
    let mut env: BTreeMap<String, String> = app
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.insert(env::LOCAL_DATABASE.into(), Toggle::On.to_string());
    // Only the lab's label: `lab down` removes it with the rest, and `lab
    // up` (which plans by service) leaves it alone.
    let labels = BTreeMap::from([(labels::LAB.to_string(), c.lab.clone())]);
    c.rt.create_container(&ContainerSpec {
        name: name.clone(),
        alias: BOX.into(),
        image: Image::App.tag(),
        cmd: None,
        env,
        labels,
        ports: vec![PortSpec {
            name: "http".into(),
            container_port: crate::roles::server::PORT,
            host_port: 0,
        }],
        volumes: Vec::new(),
        network: crate::naming::network(&c.lab),
        healthcheck: None,
        cpus: Some(cpus),
        memory: None,
        cap_add: Vec::new(),
        files: Vec::new(),
        stop_timeout: Some(5),
        hashed_extra: None,
        ipv4: None,
    })
    .await?;
    c.rt.start_container(&name).await?;
    let all = c.containers().await?;
    let addr = all
        .iter()
        .find(|x| x.name == name)
        .and_then(|x| x.ports.get(&crate::roles::server::PORT))
        .cloned()
        .ok_or_else(|| {
            LabError::from(LessonError::NoPort {
                service: BOX.into(),
                port: crate::roles::server::PORT,
            })
        })?;
    let base = format!("http://{addr}");
    // Ready once its own database answers and the schema is in.
    crate::lessons::wait_ready(&base, "the one-machine container").await?;
    Ok(base)
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let machine = Resources {
        cpus: Some(MACHINE_CPUS),
        memory: None,
    };
    c.say(&format!(
        "two machines, server-1 and db-1, {MACHINE_CPUS} CPU each; and one machine, a container of {MACHINE_CPUS} CPU running the app and its own PostgreSQL"
    ));
    c.up(Topology {
        resources: ResourceSet {
            server: machine.clone(),
            db: machine,
            ..ResourceSet::default()
        },
        ..one_server_topology(MACHINE_CPUS)
    })
    .await?;
    let boxed = start_box(c, MACHINE_CPUS, 0).await?;
    let db_1 = crate::naming::container(&c.lab, &crate::roles::names::db(1));
    let sizing = db_query_ms(c, &db_1, &["psql"], SIZING_ROWS, SIZING_RUNS)
        .await?
        .into_iter()
        .min_by(f64::total_cmp)
        .ok_or_else(|| step("time a database query")(&"psql printed no timing"))?;
    let rows = query_rows(sizing);
    c.say(&format!(
        "the database's own query counts {rows} rows: pure CPU, sized to about {TARGET_CPU_MS:.0} ms of it on this machine (a million rows took {sizing:.1} ms in db-1)"
    ));
    let one = Machine {
        web: boxed,
        db: crate::naming::container(&c.lab, BOX),
        psql: &["psql", "-h", "127.0.0.1"],
        rows,
    };
    let two = Machine {
        web: format!(
            "http://{}",
            c.address("server-1", crate::roles::server::PORT).await?
        ),
        db: db_1,
        psql: &["psql"],
        rows,
    };
    c.say(&format!(
        "web pages burn {PAGE_MS} ms of CPU, so a machine serves about {:.0} a second; both web servers get {} pages/s at the same time, and each database's query is timed in the middle",
        MACHINE_CPUS * 1000.0 / f64::from(PAGE_MS),
        RATES.map(|r| format!("{r:.0}")).join(", then ")
    ));
    let (shared, separate, table) = measure(c, &one, &two).await?;
    c.table(table);
    for (expectation, measured, passed) in verdicts(&shared, &separate) {
        c.expect(&expectation, measured, passed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(idle: f64, db: [f64; 3]) -> Layout {
        Layout {
            idle_db_ms: idle,
            steps: RATES
                .iter()
                .zip(db)
                .map(|(&rate, db_ms)| Step {
                    rate,
                    served: rate.min(50.0),
                    db_ms,
                })
                .collect(),
        }
    }

    fn passed(shared: &Layout, separate: &Layout) -> Vec<bool> {
        verdicts(shared, separate)
            .into_iter()
            .map(|v| v.2)
            .collect()
    }

    #[test]
    fn a_starved_shared_database_and_a_calm_separate_one_pass() {
        let shared = layout(25.0, [40.0, 90.0, 160.0]);
        let separate = layout(25.0, [26.0, 30.0, 31.0]);
        assert_eq!(passed(&shared, &separate), [true, true, true]);
    }

    #[test]
    fn a_shared_database_that_keeps_up_fails() {
        let shared = layout(25.0, [26.0, 35.0, 50.0]);
        let separate = layout(25.0, [26.0, 30.0, 31.0]);
        assert_eq!(passed(&shared, &separate), [false, true, false]);
    }

    #[test]
    fn a_separate_database_that_also_stalls_fails() {
        let shared = layout(25.0, [40.0, 90.0, 160.0]);
        let separate = layout(25.0, [30.0, 60.0, 100.0]);
        assert_eq!(passed(&shared, &separate), [true, false, false]);
    }

    #[test]
    fn the_query_is_sized_to_the_machine() {
        // A million rows in 28 ms (an AMD EPYC): about 3.6 million.
        assert_eq!(query_rows(28.0), 3_600_000);
        // Four times slower: a quarter of the rows, the same CPU time.
        assert_eq!(query_rows(112.0), 900_000);
        // Bounded both ways, and a missing timing takes the smallest.
        assert_eq!(query_rows(1000.0), 500_000);
        assert_eq!(query_rows(0.1), 40_000_000);
        assert_eq!(query_rows(f64::NAN), 500_000);
        assert_eq!(query_rows(0.0), 500_000);
    }

    #[test]
    fn nothing_measured_fails() {
        let none = Layout::default();
        assert_eq!(passed(&none, &none), [false, false, false]);
    }
}
