//! Lesson 8: replication. An asynchronous replica confirms nothing: the
//! primary answers at once and the replica applies the change later, so a
//! read from it may be stale. A synchronous one makes the primary wait until
//! the replica has applied each commit: no stale reads, slower writes, and no
//! writes at all while the replica is unreachable.

use std::time::{Duration, Instant};

use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Scenario};
use crate::topology::{Replication, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "replication",
    number: 8,
    summary: "async replicas serve stale reads; sync ones do not, but block writes when cut off",
    hypothesis: "with an asynchronous replica that lags, users read balances older than their own deposits; with synchronous replication they never do and no acknowledged write is lost, but a partitioned replica blocks every write until it is back",
    body: |c| Box::pin(body(c)),
};

fn bank() -> LoadArgs {
    LoadArgs {
        scenario: Scenario::Bank,
        users: Some(10),
        duration: Duration::from_secs(8),
        ..LoadArgs::default()
    }
}

/// One line of the lesson's table for a bank run.
fn row(mode: &str, lag: &str, r: &crate::load::Report) -> Vec<String> {
    vec![
        mode.into(),
        lag.into(),
        r.requests.to_string(),
        format!("{:.0}", r.rps),
        format!("{:.1}", r.latency_ms.p50),
        format!("{:.1}", r.latency_ms.p99),
        r.stale_reads.to_string(),
        r.lost_writes.to_string(),
    ]
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let mut table = Table::new(
        "Users deposit, then read their balance from a replica",
        &[
            "replication",
            "replica lag",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "stale reads",
            "lost writes",
        ],
    );
    c.say("2 servers, a primary and one asynchronous replica; reads go to the replica");
    c.up(Topology {
        servers: 2,
        replicas: 1,
        replication: Replication::Async,
        retries: Toggle::On,
        ..Topology::default()
    })
    .await?;
    c.faults().lag("db-2", Some(Duration::from_secs(1))).await?;
    c.say("the replica applies every change 1 s late");
    let r = c.load(bank()).await?;
    table.row(row("async", "1 s", &r));
    c.expect(
        "an async replica that lags serves stale balances",
        format!("{} stale reads", r.stale_reads),
        r.stale_reads > 0,
    );

    c.faults().lag("db-2", None).await?;
    c.faults()
        .replication(crate::topology::Replication::Sync)
        .await?;
    c.say("synchronous replication: a commit returns once the replica has applied it");
    let r = c.load(bank()).await?;
    table.row(row("sync", "-", &r));
    c.table(table);
    c.expect(
        "sync replication: no stale read",
        format!("{} stale reads in {} requests", r.stale_reads, r.requests),
        r.stale_reads == 0 && r.requests > 50,
    );
    c.expect(
        "sync replication: no acknowledged write lost",
        format!("{} lost writes", r.lost_writes),
        r.lost_writes == 0,
    );

    c.say("the sync replica is cut off the network; a user deposits");
    c.faults().partition("db-2").await?;
    let base = c.entrypoint().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| super::step("make an HTTP client")(&e))?;
    let account = 7_000_000 + (std::process::id() % 100_000) as i64;
    let url = format!("{base}/accounts/{account}/deposit");
    let started = Instant::now();
    let r = http
        .post(&url)
        .json(&serde_json::json!({"amount": 100}))
        .send()
        .await
        .map_err(|e| super::step("deposit through the balancer")(&e))?;
    let waited = started.elapsed();
    c.expect(
        "with the sync replica cut off, a write blocks until the app gives up",
        format!(
            "HTTP {} after {:.1} s",
            r.status().as_u16(),
            waited.as_secs_f64()
        ),
        r.status() == 504 && waited >= Duration::from_secs(4),
    );
    c.faults().heal("db-2").await?;
    c.say("healed: the replica is back");
    let started = Instant::now();
    let mut ok = false;
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = http
            .post(&url)
            .json(&serde_json::json!({"amount": 100}))
            .send()
            .await
        {
            if r.status().is_success() {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    c.expect(
        "once healed, writes go through again",
        if ok {
            format!(
                "a deposit succeeded {:.1} s after the heal",
                started.elapsed().as_secs_f64()
            )
        } else {
            "no deposit succeeded within 30 s".into()
        },
        ok,
    );
    Ok(())
}
