//! Lesson 4: more servers. Adding servers behind a round-robin balancer
//! splits the requests evenly: with N servers, each gets 1/N of them, and
//! when the servers are what limits the site, N servers do about N times the
//! work (horizontal scaling).

use std::time::Duration;

use super::{pct, Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Scenario};
use crate::topology::{Reads, ResourceSet, Resources, Toggle, Topology};

/// Each server gets a fifth of a CPU, so that four of them (0.8 CPU) still
/// fit on a 2-core laptop beside the balancer and the load driver.
const CPUS: f64 = 0.2;
/// CPU milliseconds per request: one server does about CPUS * 1000 / WORK_MS
/// requests per second.
const WORK_MS: u32 = 10;

pub const LESSON: Lesson = Lesson {
    name: "more-servers",
    number: 4,
    summary: "1 -> 2 -> 3 -> 4 servers: each gets 1/N of the requests, and capacity grows about N times",
    hypothesis: "adding servers behind a round-robin balancer spreads the load evenly (each of N servers serves 1/N of the requests, within 5 points), and 4 servers do at least 3 times the work of one",
    body: |c| Box::pin(body(c)),
};

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    c.say(&format!("1 server ({CPUS} CPU) behind a round-robin balancer; each request burns {WORK_MS} ms of CPU, so one server does about {:.0}/s", CPUS * 1000.0 / WORK_MS as f64));
    c.up(Topology {
        servers: 1,
        replicas: 0,
        reads: Reads::Primary,
        retries: Toggle::On,
        resources: ResourceSet {
            server: Resources {
                cpus: Some(CPUS),
                memory: None,
            },
            ..ResourceSet::default()
        },
        ..Topology::default()
    })
    .await?;
    let mut capacity = Vec::new();
    let mut table = Table::new(
        "Share of requests per server",
        &[
            "servers",
            "requests",
            "req/s",
            "p99 ms",
            "shares",
            "largest gap to 1/N",
        ],
    );
    for n in 1..=4u32 {
        if n > 1 {
            c.say(&format!(
                "scale to {n} servers (the balancer learns it live)"
            ));
            c.scale(n).await?;
        }
        let r = c
            .load(LoadArgs {
                scenario: Scenario::Work,
                work_ms: WORK_MS,
                users: Some(24),
                duration: Duration::from_secs(5),
                timeout: Duration::from_secs(5),
                ..LoadArgs::default()
            })
            .await?;
        let total: u64 = r.per_server.values().sum();
        let ideal = 1.0 / n as f64;
        let gap = (1..=n)
            .map(|i| {
                let got = r
                    .per_server
                    .get(&format!("server-{i}"))
                    .copied()
                    .unwrap_or(0);
                (got as f64 / total.max(1) as f64 - ideal).abs()
            })
            .fold(0.0, f64::max);
        let shares = r
            .per_server
            .iter()
            .map(|(s, k)| {
                format!(
                    "{}={}",
                    s.trim_start_matches("server-"),
                    pct(*k as f64 / total.max(1) as f64)
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let served = r.ok as f64 / r.duration_s.max(0.001);
        capacity.push(served);
        table.row(vec![
            n.to_string(),
            r.requests.to_string(),
            format!("{served:.0}"),
            format!("{:.1}", r.latency_ms.p99),
            shares,
            pct(gap),
        ]);
        c.expect(
            &format!("{n} server(s): each serves 1/{n} of the requests within 5 points"),
            format!("largest gap {} over {total} requests", pct(gap)),
            gap <= 0.05 && r.per_server.len() == n as usize && r.errors.total() == 0,
        );
    }
    c.table(table);
    let x4 = capacity[3] / capacity[0].max(0.001);
    c.expect(
        "4 servers do at least 3 times the work of one",
        format!(
            "{:.0} -> {:.0} requests/s ({x4:.2}x)",
            capacity[0], capacity[3]
        ),
        x4 >= 3.0,
    );
    Ok(())
}
