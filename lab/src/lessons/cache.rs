//! Lesson 7: a cache in front of the database. Most reads ask for the same
//! few things; keeping recent answers in Redis (cache-aside: look in the
//! cache, and only on a miss ask the database and fill the cache) turns most
//! database queries into millisecond cache hits.

use std::time::{Duration, Instant};

use super::{pct, Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Scenario};
use crate::roles::server::PORT as APP_PORT;
use crate::topology::{Reads, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "cache",
    number: 7,
    summary: "the same browse load with a cache makes at most 10% of the database queries",
    hypothesis: "when most reads go to a few popular products (here 95% to 20 of 1,000), a cache-aside Redis cache cuts database queries by 90% or more, and a cache hit is many times faster than a database read",
    body: |c| Box::pin(body(c)),
};

/// The browse load both runs get: the same number of requests.
fn browse() -> LoadArgs {
    LoadArgs {
        scenario: Scenario::Browse,
        users: Some(16),
        requests: Some(3000),
        duration: Duration::from_secs(120),
        // Without the cache the database is the bottleneck and answers
        // queue: wait for them rather than count them as failures.
        timeout: Duration::from_secs(10),
        hot_share: Some(0.95),
        ..LoadArgs::default()
    }
}

/// Database queries so far, summed over every server's /metrics.
async fn db_queries(c: &Ctx<'_>, servers: u32) -> Result<f64> {
    let http = reqwest::Client::new();
    let mut total = 0.0;
    for i in 1..=servers {
        let addr = c.address(&format!("server-{i}"), APP_PORT).await?;
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .map_err(|e| super::step("read a server's metrics")(&e))?
            .text()
            .await
            .map_err(|e| super::step("read a server's metrics")(&e))?;
        total += text
            .lines()
            .filter(|l| l.starts_with("db_queries_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

/// Median time of a product read, for `expect_source` answers only.
async fn timed_reads(base: &str, ids: &[u32], expect_source: &str) -> Result<(f64, usize)> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for id in ids {
        let t = Instant::now();
        let v: serde_json::Value = http
            .get(format!("{base}/products/{id}"))
            .send()
            .await
            .map_err(|e| super::step("read a server's metrics")(&e))?
            .json()
            .await
            .map_err(|e| super::step("read a server's metrics")(&e))?;
        if v["source"] == expect_source {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        times.len(),
    ))
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    c.say("2 servers, cache off; users browse product pages, 95% of views on 20 popular products");
    c.up(Topology {
        servers: 2,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::On,
        ..Topology::default()
    })
    .await?;
    let mut table = Table::new(
        "3,000 product views",
        &["cache", "req/s", "p50 ms", "p99 ms", "database queries"],
    );
    let before = db_queries(c, 2).await?;
    let off = c.load(browse()).await?;
    let q_off = db_queries(c, 2).await? - before;
    table.row(vec![
        "off".into(),
        format!("{:.0}", off.rps),
        format!("{:.1}", off.latency_ms.p50),
        format!("{:.1}", off.latency_ms.p99),
        format!("{q_off:.0}"),
    ]);

    c.say("cache on (servers replaced one by one); the same 3,000 views");
    c.set(&["cache=on", "cache_ttl=60s"]).await?;
    let before = db_queries(c, 2).await?;
    let on = c.load(browse()).await?;
    let q_on = db_queries(c, 2).await? - before;
    table.row(vec![
        "on".into(),
        format!("{:.0}", on.rps),
        format!("{:.1}", on.latency_ms.p50),
        format!("{:.1}", on.latency_ms.p99),
        format!("{q_on:.0}"),
    ]);

    c.say(
        "one product at a time: a first read (miss, from the database), then the same again (hit)",
    );
    let base = c.entrypoint().await?;
    let ids: Vec<u32> = (981..=1000).collect();
    let (miss, n_miss) = timed_reads(&base, &ids, "db").await?;
    let (hit, n_hit) = timed_reads(&base, &ids, "cache").await?;
    let mut lat = Table::new("One product read", &["answered from", "median ms", "reads"]);
    lat.row(vec![
        "database (miss)".into(),
        format!("{miss:.1}"),
        n_miss.to_string(),
    ]);
    lat.row(vec![
        "cache (hit)".into(),
        format!("{hit:.1}"),
        n_hit.to_string(),
    ]);
    c.table(table);
    c.table(lat);

    let ratio = if q_off > 0.0 { q_on / q_off } else { f64::NAN };
    c.expect(
        "with the cache, at most 10% of the database queries",
        format!("{q_on:.0} vs {q_off:.0} queries ({} of them)", pct(ratio)),
        off.ok >= 2900 && q_off >= 0.9 * off.ok as f64 && ratio <= 0.10,
    );
    c.expect(
        "a cache hit is at least 3 times faster than a database read",
        format!("hit {hit:.1} ms, miss {miss:.1} ms"),
        n_hit > 10 && n_miss > 10 && hit * 3.0 <= miss,
    );
    Ok(())
}
