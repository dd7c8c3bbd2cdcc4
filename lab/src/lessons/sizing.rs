//! Lessons 1 to 3: how big one machine is, and what shares it.
//!
//! `one-server`: push more and more requests at a single server and watch
//! its CPU reach its limit; past that point requests queue and latency
//! climbs steeply. `bigger-server`: give it more CPUs (vertical scaling) and
//! measure what that buys. `separate-db`: put the web server and the database
//! on the same processor, then on their own, and see how much a busy web
//! server slows the database's queries when they share, and what a crash of
//! the shared machine takes down.

use std::time::Duration;

use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Scenario};
use crate::topology::{Reads, ResourceSet, Resources, Topology};

/// The one database node of these labs (no replica: nothing moves).
const DB: &str = "db-1";

pub const ONE_SERVER: Lesson = Lesson {
    name: "one-server",
    number: 1,
    summary: "raise the rate on one server: its CPU hits the limit and latency climbs past a point",
    hypothesis: "as the request rate on one server rises, its CPU approaches its limit, and past that point latency climbs sharply instead of the server doing more",
    body: |c| Box::pin(one_server(c)),
};

pub const BIGGER_SERVER: Lesson = Lesson {
    name: "bigger-server",
    number: 2,
    summary: "the same server with 0.5, 1 and 2 CPUs: capacity grows, but not in proportion",
    hypothesis: "a bigger server (more CPUs) serves more requests, but each added CPU buys less than the one before (diminishing returns)",
    body: |c| Box::pin(bigger_server(c)),
};

pub const SEPARATE_DB: Lesson = Lesson {
    name: "separate-db",
    number: 3,
    summary: "web and database on one processor vs their own: query latency under web load, and a crash",
    hypothesis: "when the web server and the database share a machine, a busy web server slows the database down and a crash of the machine takes both; on separate machines the database is slowed less, and a database crash leaves the web server answering",
    body: |c| Box::pin(separate_db(c)),
};

/// CPU-bound requests: each burns this many ms of server CPU.
const WORK_MS: u32 = 10;

fn one_server_topology(cpus: f64) -> Topology {
    Topology {
        servers: 1,
        replicas: 0,
        reads: Reads::Primary,
        resources: ResourceSet {
            server: Resources {
                cpus: Some(cpus),
                memory: None,
            },
            ..ResourceSet::default()
        },
        ..Topology::default()
    }
}

/// CPU use of a service during a load, sampled in its middle.
async fn cpu_during(
    c: &Ctx<'_>,
    service: &str,
    args: LoadArgs,
    after: Duration,
) -> Result<(crate::load::Report, f64)> {
    let name = crate::naming::container(&c.lab, service);
    let cpu = std::sync::Mutex::new(0.0);
    let (report, _) = c
        .load_with(args, after, || async {
            let u = c.rt.usage(&name).await?;
            *cpu.lock().unwrap_or_else(|p| p.into_inner()) = u.cpu_percent;
            Ok(())
        })
        .await?;
    let cpu = *cpu.lock().unwrap_or_else(|p| p.into_inner());
    Ok((report, cpu))
}

async fn one_server(c: &mut Ctx<'_>) -> Result<()> {
    let cpus = 0.5;
    c.say(&format!("one server limited to {cpus} CPU; each request burns {WORK_MS} ms of CPU, so it can do about {:.0} per second", cpus * 1000.0 / WORK_MS as f64));
    c.up(one_server_topology(cpus)).await?;
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
    let mut rows = Vec::new();
    for rate in [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0] {
        let args = LoadArgs {
            scenario: Scenario::Work,
            work_ms: WORK_MS,
            rate: Some(rate),
            duration: Duration::from_secs(4),
            ..LoadArgs::default()
        };
        let (r, cpu) = cpu_during(c, "server-1", args, Duration::from_secs(2)).await?;
        table.row(vec![
            format!("{rate:.0}"),
            format!("{:.0}", r.ok as f64 / r.duration_s.max(0.001)),
            format!("{cpu:.0}%"),
            format!("{:.1}", r.latency_ms.p50),
            format!("{:.1}", r.latency_ms.p99),
            r.errors.total().to_string(),
        ]);
        rows.push((rate, cpu, r.latency_ms.p50));
    }
    c.table(table);
    // The median, not the tail: on a shared laptop the p99 of a light load
    // is noise, while the median moves only when requests really queue.
    let base = rows[0].2;
    let knee = rows
        .iter()
        .find(|(_, _, p50)| *p50 > 3.0 * base)
        .map(|r| r.0);
    let (top_rate, top_cpu, top_p50) = *rows.last().unwrap_or(&(0.0, 0.0, 0.0));
    c.expect(
        &format!(
            "at the top rate the server's CPU is near its limit ({:.0}%)",
            cpus * 100.0
        ),
        format!("{top_cpu:.0}% at {top_rate:.0}/s"),
        top_cpu >= cpus * 100.0 * 0.8,
    );
    c.expect(
        "past a point latency climbs sharply (median at least 5x the lightest load's)",
        format!(
            "p50 {base:.1} ms at {:.0}/s, {top_p50:.1} ms at {top_rate:.0}/s; it passed 3x at {}",
            rows[0].0,
            knee.map(|k| format!("{k:.0}/s"))
                .unwrap_or_else(|| "no rate".into())
        ),
        top_p50 >= 5.0 * base,
    );
    Ok(())
}

/// The most requests per second the server completes with plenty of users.
async fn capacity(c: &Ctx<'_>) -> Result<f64> {
    let r = c
        .load(LoadArgs {
            scenario: Scenario::Work,
            work_ms: WORK_MS,
            users: Some(16),
            duration: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            ..LoadArgs::default()
        })
        .await?;
    Ok(r.ok as f64 / r.duration_s.max(0.001))
}

async fn bigger_server(c: &mut Ctx<'_>) -> Result<()> {
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    c.say(&format!("one server; its CPU limit is raised live: 0.5, 1, then 2 CPUs (this machine has {host_cpus}, shared with the balancer and the load driver)"));
    c.up(one_server_topology(0.5)).await?;
    let mut table = Table::new(
        "Capacity of one server",
        &["CPUs", "requests/s", "x of 0.5 CPU", "requests/s per CPU"],
    );
    let mut caps = Vec::new();
    for cpus in [0.5, 1.0, 2.0] {
        if cpus != 0.5 {
            c.faults()
                .resize("server-1", Some(cpus), None, None)
                .await?;
        }
        let cap = capacity(c).await?;
        caps.push((cpus, cap));
        table.row(vec![
            format!("{cpus}"),
            format!("{cap:.0}"),
            format!("{:.2}", cap / caps[0].1.max(0.001)),
            format!("{:.0}", cap / cpus),
        ]);
    }
    c.table(table);
    let (c05, c1, c2) = (caps[0].1, caps[1].1, caps[2].1);
    c.expect(
        "a bigger server serves more (1 CPU at least 1.5x 0.5 CPU)",
        format!(
            "{c05:.0} -> {c1:.0} requests/s ({:.2}x)",
            c1 / c05.max(0.001)
        ),
        c1 >= 1.5 * c05,
    );
    c.expect(
        "each added CPU buys less: capacity per CPU at 2 CPUs is below that at 0.5",
        format!(
            "{:.0} vs {:.0} requests/s per CPU; 0.5 -> 2 CPUs gave {:.2}x, not 4x",
            c2 / 2.0,
            c05 / 0.5,
            c2 / c05.max(0.001)
        ),
        c2 / 2.0 < c05 / 0.5,
    );
    Ok(())
}

/// Median of a few timed queries run inside the database itself (psql's
/// \timing: the server's own time, no network).
async fn db_query_ms(c: &Ctx<'_>) -> Result<f64> {
    let name = crate::naming::container(&c.lab, &crate::roles::database::first());
    let mut times = Vec::new();
    for _ in 0..5 {
        let out =
            c.rt.exec(
                &name,
                &[
                    "psql",
                    "-AtX",
                    "-U",
                    "postgres",
                    "-c",
                    "\\timing on",
                    "-c",
                    "SELECT count(*) FROM generate_series(1, 300000)",
                ],
            )
            .await?;
        if let Some(ms) = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Time: "))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse::<f64>().ok())
        {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    times
        .get(times.len() / 2)
        .copied()
        .ok_or_else(|| super::step("time a query")(&"psql printed no timing"))
}

/// Web load on the server while the database's own query time is measured.
/// The load is sized to keep one CPU about 90% busy (45 requests/s of 20 ms
/// each), so the balancer and the load driver leave the other CPU free: the
/// only difference between the two layouts is what shares CPU 0.
async fn db_under_web_load(c: &Ctx<'_>) -> Result<(f64, f64)> {
    let idle = db_query_ms(c).await?;
    let args = LoadArgs {
        scenario: Scenario::Work,
        work_ms: 20,
        rate: Some(45.0),
        duration: Duration::from_secs(7),
        timeout: Duration::from_secs(5),
        ..LoadArgs::default()
    };
    let busy = std::sync::Mutex::new(f64::NAN);
    c.load_with(args, Duration::from_secs(2), || async {
        let ms = db_query_ms(c).await?;
        *busy.lock().unwrap_or_else(|p| p.into_inner()) = ms;
        Ok(())
    })
    .await?;
    let busy = *busy.lock().unwrap_or_else(|p| p.into_inner());
    Ok((idle, busy))
}

async fn separate_db(c: &mut Ctx<'_>) -> Result<()> {
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if host_cpus < 2 {
        return Err(super::LessonError::TooFewCpus(2).into());
    }
    c.say("one server and the database, both pinned to CPU 0: one machine");
    c.up(one_server_topology(2.0)).await?;
    c.faults().resize("server-1", None, None, Some("0")).await?;
    c.faults().resize(DB, None, None, Some("0")).await?;
    let (idle_shared, busy_shared) = db_under_web_load(c).await?;
    c.say("now the database on CPU 1, the server on CPU 0: two machines");
    c.faults().resize(DB, None, None, Some("1")).await?;
    let (idle_sep, busy_sep) = db_under_web_load(c).await?;
    let mut t = Table::new(
        "A database query's own time (ms) while the web server is busy",
        &["layout", "web idle", "web busy", "slowdown"],
    );
    t.row(vec![
        "shared CPU".into(),
        format!("{idle_shared:.1}"),
        format!("{busy_shared:.1}"),
        format!("{:.2}x", busy_shared / idle_shared),
    ]);
    t.row(vec![
        "separate CPUs".into(),
        format!("{idle_sep:.1}"),
        format!("{busy_sep:.1}"),
        format!("{:.2}x", busy_sep / idle_sep),
    ]);
    c.table(t);
    c.expect(
        "sharing a machine, a busy web server slows the database (at least 1.3x)",
        format!(
            "{idle_shared:.1} -> {busy_shared:.1} ms ({:.2}x)",
            busy_shared / idle_shared
        ),
        busy_shared >= 1.3 * idle_shared,
    );
    c.expect(
        "on its own machine, the database is slowed less than when it shares one",
        format!(
            "{:.2}x separate vs {:.2}x shared",
            busy_sep / idle_sep,
            busy_shared / idle_shared
        ),
        busy_sep / idle_sep < busy_shared / idle_shared,
    );

    c.say("the database's machine crashes; the web server runs on");
    let base = c.entrypoint().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| super::step("make an HTTP client")(&e))?;
    c.faults().crash(DB).await?;
    let status = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let (home, product) = (
        status(format!("{base}/")).await,
        status(format!("{base}/products/1")).await,
    );
    let mut crash = Table::new(
        "What one machine's crash takes down",
        &["layout", "machine that crashed", "GET /", "GET /products/1"],
    );
    crash.row(vec![
        "separate".into(),
        "the database's".into(),
        home.to_string(),
        product.to_string(),
    ]);
    c.expect(
        "separate: a database crash leaves the web server answering (pages that need no data work, data pages say 503)",
        format!("GET / -> {home}, GET /products/1 -> {product}"),
        home == 200 && product == 503,
    );
    c.say("back to one shared machine, and that machine crashes: both processes die with it");
    c.faults().start(DB).await?;
    c.faults().resize(DB, None, None, Some("0")).await?;
    c.faults().crash("server-1").await?;
    c.faults().crash(DB).await?;
    let (home, product) = (
        status(format!("{base}/")).await,
        status(format!("{base}/products/1")).await,
    );
    crash.row(vec![
        "shared".into(),
        "the only one".into(),
        home.to_string(),
        product.to_string(),
    ]);
    c.table(crash);
    Ok(())
}
