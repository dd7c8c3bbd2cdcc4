//! Lesson 6: where sessions live. A session kept in one server's memory is
//! unknown to the others; sticky sessions hide that until the sticky server
//! dies, and they pin each user's whole load to one server, so a few heavy
//! users keep their servers hot while another idles; sessions in Redis or in
//! a signed token survive any server.
//!
//! Each verdict is a pure function of the measured figures and of the knobs
//! (servers, users), tested below where the claim holds and where it fails.

use std::collections::BTreeMap;
use std::time::Duration;

use super::health_checks::wait_all_up;
use super::more_servers::load_with_cpu;
use super::{pct, Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadPlan, Report, Scenario};
use crate::roles::names;
use crate::topology::{Reads, Topology};

const SERVERS: u32 = 3;
const USERS: u32 = 12;

/// The uneven load: a few heavy users who keep a server busy, each
/// request burning WORK_MS of CPU on a server limited to CPUS, beside
/// light users who come now and then.
const HEAVY_USERS: u32 = 2;
const LIGHT_RATE: f64 = 9.0;
const CPUS: f64 = 0.2;
const WORK_MS: u32 = 10;
const UNEVEN_SECS: u64 = 6;

pub const LESSON: Lesson = Lesson {
    name: "sessions",
    number: 6,
    summary: "memory sessions get lost across servers; sticky until a crash, and uneven load; redis and jwt survive",
    hypothesis: "sessions in one server's memory are lost when the next request lands elsewhere; sticky sessions keep them until the sticky server crashes, and spread load unevenly (a few heavy users keep their servers hot while another idles); sessions in Redis or in a JWT survive a server crash",
    body: |c| Box::pin(body(c)),
};

/// (expectation, measured, passed).
type Check = (String, String, bool);

// ---------------------------------------------------------------------------
// Verdicts.

/// The share of requests that find no session when sessions live in one
/// server's memory behind round-robin over `servers`: each request after the
/// login lands on the login's server with chance 1/N, so a user makes on
/// average 1 / (1 - 1/N) requests until one is lost, plus its login again.
pub fn expected_loss_share(servers: u32) -> f64 {
    let lost = 1.0 - 1.0 / f64::from(servers.max(1));
    lost / (1.0 + lost)
}

/// Memory sessions behind round-robin.
pub fn memory_verdict(servers: u32, requests: u64, losses: u64) -> Check {
    let expected = expected_loss_share(servers);
    let share = losses as f64 / requests.max(1) as f64;
    (
        format!(
            "memory sessions are lost when requests move between servers: about {} of requests with {servers} servers (within 10 points)",
            pct(expected)
        ),
        format!("{losses} losses in {requests} requests ({})", pct(share)),
        requests > 100 && losses > 0 && (share - expected).abs() <= 0.10,
    )
}

/// Sticky sessions, with the session losses before and after a server
/// crashed.
pub fn sticky_verdicts(servers: u32, users: u32, before: u64, after: u64) -> Vec<Check> {
    let pinned = f64::from(users) / f64::from(servers.max(1));
    vec![
        (
            "sticky sessions lose nothing while every server lives".into(),
            format!("{before} losses before the crash"),
            before == 0,
        ),
        (
            format!(
                "the crashed server's users lose their session, once each: about {users} users / {servers} servers = {pinned:.0} (between 1 and {:.0})",
                2.0 * pinned
            ),
            format!("{after} losses after the crash"),
            after >= 1 && after as f64 <= 2.0 * pinned,
        ),
    ]
}

/// Sessions in a shared store (or a token) through a server crash.
pub fn store_verdict(store: &str, requests: u64, losses: u64) -> Check {
    (
        format!("{store} sessions survive a server crash"),
        format!("{losses} losses in {requests} requests"),
        losses == 0 && requests > 100,
    )
}

/// Where the uneven load went under one strategy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spread {
    /// Answers per server, both loads together.
    pub per_server: BTreeMap<String, u64>,
    /// Each server's CPU in the middle of the run, % of one CPU.
    pub cpu: Vec<f64>,
    pub failed: u64,
}

impl Spread {
    /// Each of servers 1..=n's share of the answers.
    pub fn shares(&self, n: u32) -> Vec<f64> {
        let total = self.per_server.values().sum::<u64>().max(1) as f64;
        (1..=n)
            .map(|i| {
                self.per_server
                    .get(&names::server(i as u8))
                    .map_or(0.0, |k| *k as f64 / total)
            })
            .collect()
    }
}

fn fold(v: &[f64], start: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
    v.iter().copied().fold(start, f)
}

/// A few heavy users among light ones, round-robin against sticky.
pub fn uneven_verdicts(servers: u32, heavy_users: u32, rr: &Spread, sticky: &Spread) -> Vec<Check> {
    let fair = 1.0 / f64::from(servers.max(1));
    let (rr_s, st_s) = (rr.shares(servers), sticky.shares(servers));
    let rr_gap = fold(&rr_s, 0.0, |m, s| m.max((s - fair).abs()));
    let (st_min, st_max) = (fold(&st_s, 1.0, f64::min), fold(&st_s, 0.0, f64::max));
    let (hot, cool) = (
        fold(&sticky.cpu, 0.0, f64::max),
        fold(&sticky.cpu, f64::INFINITY, f64::min),
    );
    let shares = |s: &[f64]| s.iter().map(|x| pct(*x)).collect::<Vec<_>>().join(" ");
    let idle = servers.saturating_sub(heavy_users);
    vec![
        (
            format!("round-robin spreads heavy and light users alike: each server within 5 points of 1/{servers}"),
            format!("shares {} ({} failed)", shares(&rr_s), rr.failed),
            rr.failed == 0 && rr_s.len() == servers as usize && rr_gap <= 0.05,
        ),
        (
            format!(
                "sticky pins each of the {heavy_users} heavy users to one server, so {idle} of the {servers} servers get light users only: the quietest gets less than half its fair share ({}) and the busiest at least 3 times the quietest",
                pct(fair / 2.0)
            ),
            format!("shares {} ({} failed)", shares(&st_s), sticky.failed),
            sticky.failed == 0 && idle >= 1 && st_min < fair / 2.0 && st_max >= 3.0 * st_min,
        ),
        (
            format!(
                "with sticky, a heavy user's server stays hot (CPU at 80% or more of its {:.0}% limit) while another idles (under half of that)",
                CPUS * 100.0
            ),
            format!(
                "CPU {}",
                sticky
                    .cpu
                    .iter()
                    .map(|c| format!("{c:.0}%"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            sticky.cpu.len() == servers as usize
                && hot >= 0.8 * CPUS * 100.0
                && cool <= 0.5 * hot,
        ),
    ]
}

// ---------------------------------------------------------------------------
// The lesson.

fn load(secs: u64) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Sessions,
        users: Some(USERS),
        duration: Duration::from_secs(secs),
        ..LoadPlan::default()
    }
}

/// Session losses up to and after second `at` of the run.
fn split(r: &Report, at: Duration) -> (u64, u64) {
    let cut = at.as_secs();
    let before = r
        .timeline
        .iter()
        .filter(|s| s.t <= cut)
        .map(|s| s.session_losses)
        .sum();
    (before, r.session_losses - before)
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let mut table = Table::new(
        "Users logged in, asking GET /me again and again",
        &[
            "sessions",
            "balancer",
            "fault",
            "requests",
            "session losses",
        ],
    );
    c.say("3 servers, round-robin, sessions in each server's memory");
    c.up(Topology {
        servers: SERVERS as u8,
        replicas: 0,
        reads: Reads::Primary,
        ..Topology::default()
    })
    .await?;
    let r = c.load(load(6)).await?;
    table.row(vec![
        "memory".into(),
        "round-robin".into(),
        "-".into(),
        r.requests.to_string(),
        r.session_losses.to_string(),
    ]);
    let (e, m, p) = memory_verdict(SERVERS, r.requests, r.session_losses);
    c.expect(&e, m, p);

    c.say("sticky sessions: the balancer pins each user to one server; server-1 crashes at 4 s");
    c.set(&["lb=sticky"]).await?;
    let cr = &*c;
    let victim = names::server(1);
    let (r, at) = cr
        .load_with(load(10), Duration::from_secs(4), || async {
            cr.faults().crash(&victim).await.map(|_| ())
        })
        .await?;
    let (before, after) = split(&r, at);
    table.row(vec![
        "memory".into(),
        "sticky".into(),
        format!("crash {victim}"),
        r.requests.to_string(),
        format!("{before} before, {after} after"),
    ]);
    for (e, m, p) in sticky_verdicts(SERVERS, USERS, before, after) {
        c.expect(&e, m, p);
    }

    uneven(c).await?;

    for (store, victim) in [("redis", names::server(2)), ("jwt", names::server(3))] {
        c.say(&format!(
            "sessions in {store}, round-robin, retries on; {victim} crashes at 4 s"
        ));
        c.faults().heal_all().await?;
        c.set(&[&format!("sessions={store}"), "lb=round-robin", "retries=on"])
            .await?;
        wait_all_up(c).await?;
        let cr = &*c;
        let (r, _) = cr
            .load_with(load(10), Duration::from_secs(4), || async {
                cr.faults().crash(&victim).await.map(|_| ())
            })
            .await?;
        table.row(vec![
            store.into(),
            "round-robin".into(),
            format!("crash {victim}"),
            r.requests.to_string(),
            r.session_losses.to_string(),
        ]);
        let (e, m, p) = store_verdict(store, r.requests, r.session_losses);
        c.expect(&e, m, p);
    }
    c.table(table);
    Ok(())
}

/// Heavy users beside light ones, with sticky sessions then round-robin.
async fn uneven(c: &mut Ctx<'_>) -> Result<()> {
    c.say(&format!(
        "every server back and limited to {CPUS} CPU; {HEAVY_USERS} heavy users send {WORK_MS} ms requests back to back, light users {LIGHT_RATE:.0} requests/s in all"
    ));
    c.faults().heal_all().await?;
    wait_all_up(c).await?;
    let servers: Vec<String> = (1..=SERVERS).map(|i| names::server(i as u8)).collect();
    for s in &servers {
        c.faults().resize(s, Some(CPUS), None, None).await?;
    }
    let mut table = Table::new(
        "A few heavy users among light ones",
        &["balancer", "requests", "share per server", "CPU per server"],
    );
    let mut spreads = Vec::new();
    for strategy in ["sticky", "round-robin"] {
        c.set(&[&format!("lb={strategy}")]).await?;
        let work = |users, rate| LoadPlan {
            scenario: Scenario::Work,
            work_ms: WORK_MS,
            users,
            rate,
            duration: Duration::from_secs(UNEVEN_SECS),
            timeout: Duration::from_secs(5),
            ..LoadPlan::default()
        };
        let cr = &*c;
        let (heavy, light) = tokio::join!(
            load_with_cpu(
                cr,
                work(Some(HEAVY_USERS), None),
                Duration::from_secs(2),
                &servers
            ),
            cr.load(work(None, Some(LIGHT_RATE)))
        );
        let ((heavy, cpu), light) = (heavy?, light?);
        let mut per_server = heavy.per_server.clone();
        for (s, k) in &light.per_server {
            *per_server.entry(s.clone()).or_default() += k;
        }
        let spread = Spread {
            per_server,
            cpu,
            failed: heavy.errors.total() + light.errors.total(),
        };
        table.row(vec![
            strategy.into(),
            (heavy.requests + light.requests).to_string(),
            spread
                .shares(SERVERS)
                .iter()
                .map(|s| pct(*s))
                .collect::<Vec<_>>()
                .join(" "),
            spread
                .cpu
                .iter()
                .map(|x| format!("{x:.0}%"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
        spreads.push(spread);
    }
    c.table(table);
    for (e, m, p) in uneven_verdicts(SERVERS, HEAVY_USERS, &spreads[1], &spreads[0]) {
        c.expect(&e, m, p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(checks: &[Check]) -> Vec<bool> {
        checks.iter().map(|c| c.2).collect()
    }

    #[test]
    fn memory_sessions_lose_about_two_in_five_requests_on_three_servers() {
        assert!((expected_loss_share(3) - 0.4).abs() < 1e-9);
        assert_eq!(expected_loss_share(1), 0.0);
        assert!(memory_verdict(3, 17996, 7228).2);
        // No loss at all: the servers shared the sessions after all.
        assert!(!memory_verdict(3, 17996, 0).2);
        // Far fewer than round-robin over 3 servers gives: the balancer
        // was not spreading the users.
        assert!(!memory_verdict(3, 17996, 900).2);
        assert!(!memory_verdict(3, 50, 20).2);
    }

    #[test]
    fn sticky_sessions_losing_only_the_crashed_servers_users_hold() {
        assert_eq!(passed(&sticky_verdicts(3, 12, 0, 4)), [true, true]);
        assert_eq!(passed(&sticky_verdicts(3, 12, 0, 1)), [true, true]);
    }

    #[test]
    fn sticky_sessions_that_leak_or_survive_the_crash_fail() {
        assert_eq!(passed(&sticky_verdicts(3, 12, 5, 4)), [false, true]);
        assert_eq!(passed(&sticky_verdicts(3, 12, 0, 0)), [true, false]);
        // Everyone logged out again and again: not only server-1's users.
        assert_eq!(passed(&sticky_verdicts(3, 12, 0, 40)), [true, false]);
    }

    #[test]
    fn shared_stores_must_lose_nothing() {
        assert!(store_verdict("redis", 26516, 0).2);
        assert!(!store_verdict("redis", 26516, 3).2);
        assert!(!store_verdict("jwt", 20, 0).2);
    }

    fn spread(counts: &[u64], cpu: &[f64]) -> Spread {
        Spread {
            per_server: counts
                .iter()
                .enumerate()
                .map(|(i, k)| (names::server(i as u8 + 1), *k))
                .collect(),
            cpu: cpu.to_vec(),
            failed: 0,
        }
    }

    #[test]
    fn sticky_heavy_users_on_two_servers_of_three_hold() {
        let rr = spread(&[300, 298, 301], &[19.0, 18.0, 19.5]);
        // Heavy users on server-1 and server-2, server-3 light only.
        let sticky = spread(&[140, 138, 18], &[20.0, 19.5, 4.0]);
        assert_eq!(
            passed(&uneven_verdicts(3, 2, &rr, &sticky)),
            [true, true, true]
        );
        // Both heavy users on server-1.
        let sticky = spread(&[140, 18, 17], &[20.0, 3.0, 3.5]);
        assert_eq!(
            passed(&uneven_verdicts(3, 2, &rr, &sticky)),
            [true, true, true]
        );
    }

    #[test]
    fn an_even_sticky_spread_or_an_uneven_round_robin_fail() {
        // Sticky, but the load stayed even (three heavy users, one each).
        let even = spread(&[150, 148, 151], &[20.0, 19.0, 19.5]);
        assert_eq!(
            passed(&uneven_verdicts(3, 2, &even, &even)),
            [true, false, false]
        );
        // Round-robin that was not even.
        let skewed = spread(&[400, 250, 250], &[20.0, 15.0, 15.0]);
        let sticky = spread(&[140, 138, 18], &[20.0, 19.5, 4.0]);
        assert_eq!(
            passed(&uneven_verdicts(3, 2, &skewed, &sticky)),
            [false, true, true]
        );
        // A server that answered nothing under round-robin.
        let two = spread(&[450, 450], &[20.0, 20.0]);
        assert!(!uneven_verdicts(3, 2, &two, &sticky)[0].2);
        // As many heavy users as servers: nothing forces an idle one.
        assert!(!uneven_verdicts(3, 3, &even, &sticky)[1].2);
        // No CPU measured.
        let blind = spread(&[140, 138, 18], &[]);
        assert!(!uneven_verdicts(3, 2, &even, &blind)[2].2);
    }
}
