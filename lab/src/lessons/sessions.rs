//! Lesson 6: where sessions live. A session kept in one server's memory is
//! unknown to the others; sticky sessions hide that until the sticky server
//! dies; sessions in Redis or in a signed token survive any server.

use std::time::Duration;

use super::health_checks::wait_all_up;
use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::load::{LoadArgs, Report, Scenario};
use crate::topology::{Reads, Topology};

pub const LESSON: Lesson = Lesson {
    name: "sessions",
    number: 6,
    summary: "memory sessions get lost across servers; sticky until a crash; redis and jwt survive",
    hypothesis: "sessions in one server's memory are lost when the next request lands elsewhere; sticky sessions keep them until the sticky server crashes; sessions in Redis or in a JWT survive a server crash",
    body: |c| Box::pin(body(c)),
};

fn load(secs: u64) -> LoadArgs {
    LoadArgs {
        scenario: Scenario::Sessions,
        users: Some(12),
        duration: Duration::from_secs(secs),
        ..LoadArgs::default()
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
        servers: 3,
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
    c.expect(
        "memory sessions are lost when requests move between servers",
        format!("{} losses in {} requests", r.session_losses, r.requests),
        r.session_losses > 0,
    );

    c.say("sticky sessions: the balancer pins each user to one server; server-1 crashes at 4 s");
    c.set(&["lb=sticky"]).await?;
    let cr = &*c;
    let (r, at) = cr
        .load_with(load(10), Duration::from_secs(4), || async {
            cr.faults().crash("server-1").await.map(|_| ())
        })
        .await?;
    let (before, after) = split(&r, at);
    table.row(vec![
        "memory".into(),
        "sticky".into(),
        "crash server-1".into(),
        r.requests.to_string(),
        format!("{before} before, {after} after"),
    ]);
    c.expect(
        "sticky sessions lose nothing while every server lives",
        format!("{before} losses before the crash"),
        before == 0,
    );
    c.expect(
        "the sticky server's users lose their session when it crashes",
        format!("{after} losses after the crash"),
        after > 0,
    );

    for (store, victim) in [("redis", "server-2"), ("jwt", "server-3")] {
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
                cr.faults().crash(victim).await.map(|_| ())
            })
            .await?;
        table.row(vec![
            store.into(),
            "round-robin".into(),
            format!("crash {victim}"),
            r.requests.to_string(),
            r.session_losses.to_string(),
        ]);
        c.expect(
            &format!("{store} sessions survive a server crash"),
            format!("{} losses in {} requests", r.session_losses, r.requests),
            r.session_losses == 0 && r.requests > 100,
        );
    }
    c.table(table);
    Ok(())
}
