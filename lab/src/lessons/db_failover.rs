//! Lesson 11: database failover. The last row of the course's architecture
//! table adds replication so that the database is no longer a single point
//! of failure: when the primary dies, a replica takes its place. Something
//! must decide that, and everyone must agree; here Patroni does, with etcd
//! on the three database nodes as the vote (see `crate::failover`).
//!
//! The price is in what the replica had received when it was promoted. With
//! asynchronous replication the primary confirms a write before any replica
//! has it: cut the replicas off, keep writing, crash the primary, and either
//! the manager promotes a replica that never got those writes (they are lost,
//! and the bank audit finds them), or it refuses because the replica is too
//! far behind (and the site cannot write until the old primary is back).
//! With synchronous replication a write is confirmed only once a replica has
//! it, so the same scenario loses nothing that was confirmed.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Ctx, Lesson, Table};
use crate::error::Result;
use crate::faults::Slow;
use crate::load::{LoadPlan, Report, Scenario};
use crate::primary::DbRole;
use crate::roles::names::PRIMARY_ALIAS;
use crate::topology::{Replication, Toggle, Topology};

pub const LESSON: Lesson = Lesson {
    name: "db-failover",
    number: 11,
    summary: "crash the primary: a replica takes over in seconds; async loses confirmed writes, sync does not",
    hypothesis: "with 3 database nodes and a failover manager, writes succeed again within 10 s of the primary's crash while reads go on; with asynchronous replication and the replicas cut off from the primary's changes, a crash either loses confirmed writes or leaves the site unable to write; with synchronous replication it loses none",
    body: |c| Box::pin(body(c)),
};

/// The longest a student should wait for writes after the primary dies
/// (the target). The worst case of the lab's timings fits in it:
/// when etcd's leader dies with the primary, up to 2 election timeouts
/// (1 s) before etcd has a leader again, which then gives the leader key
/// its whole ttl (5 s) plus an election timeout (0.5 s); Patroni's next
/// loop (1 s) finds it gone and promotes a replica (about 1 s); the app
/// asks the nodes again within its probe's interval and timeout (1.5 s).
/// When etcd's leader survives, the first two terms drop: about 6 to 8 s.
pub const WRITE_OUTAGE_LIMIT_S: f64 = 10.0;
/// How many of the reads made while the primary is replaced must succeed.
pub const READS_KEPT: f64 = 0.9;

/// One operation of a history file, as this lesson reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// When it ended, seconds since the load started.
    pub t: f64,
    /// How long it took, seconds: it started at `t - took`.
    pub took: f64,
    pub kind: String,
    pub ok: bool,
}

/// The operations of a history file.
pub fn read_history(path: &Path) -> Vec<Op> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Op {
            t: v["t_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            took: v["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            kind: v["kind"].as_str().unwrap_or_default().to_string(),
            ok: v["outcome"] == "ok",
        })
        .collect()
}

/// Seconds from the crash at `at` until a deposit succeeded again after the
/// first one that failed; 0 when none failed; None when none succeeded again.
///
/// Only a deposit that *started* after that failure shows writes are back:
/// one sent before the crash can still be answered after a failure of
/// another user's (it committed on the old primary just before the end),
/// and counting it once made a site that never wrote again look as if it
/// had failed over in 0.6 s.
pub fn write_outage(ops: &[Op], at: f64) -> Option<f64> {
    let deposits = || ops.iter().filter(|o| o.kind == "deposit" && o.t >= at);
    let Some(first_fail) = deposits().filter(|o| !o.ok).map(|o| o.t).reduce(f64::min) else {
        return Some(0.0);
    };
    deposits()
        .filter(|o| o.ok && o.t - o.took > first_fail)
        .map(|o| o.t)
        .reduce(f64::min)
        .map(|t| t - at)
}

/// (succeeded, made) of the balance reads that ended between `from` and `to`.
pub fn reads_between(ops: &[Op], from: f64, to: f64) -> (u64, u64) {
    let reads: Vec<&Op> = ops
        .iter()
        .filter(|o| o.kind == "balance" && o.t >= from && o.t <= to)
        .collect();
    (
        reads.iter().filter(|o| o.ok).count() as u64,
        reads.len() as u64,
    )
}

/// Writes came back within the limit.
pub fn failover_in_time(outage: Option<f64>) -> bool {
    outage.is_some_and(|s| s <= WRITE_OUTAGE_LIMIT_S)
}

/// Reads went on while the primary was replaced.
pub fn reads_continued(ok: u64, made: u64) -> bool {
    made > 0 && ok as f64 >= READS_KEPT * made as f64
}

/// Async replication, replicas cut off, primary crashed: the lesson holds if
/// confirmed writes were lost, or if the manager refused to promote (writes
/// never came back). A failover that lost nothing means the cut did not cut.
pub fn async_shows_the_risk(lost_writes: u64, writes_came_back: bool) -> bool {
    lost_writes > 0 || !writes_came_back
}

/// Sync replication: no confirmed write is lost, with something to check.
pub fn sync_keeps_confirmed_writes(lost_writes: u64, acknowledged: u64) -> bool {
    lost_writes == 0 && acknowledged > 0
}

fn bank(seconds: u64, history: &Path) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Bank,
        users: Some(8),
        duration: Duration::from_secs(seconds),
        history: Some(history.to_path_buf()),
        ..LoadPlan::default()
    }
}

/// A bank load with the replicas cut off the primary's changes `cut` into
/// it, and the primary crashed `crash` later: the report, when the crash
/// happened, and the operations.
async fn cut_then_crash(
    c: &Ctx<'_>,
    history: &Path,
    seconds: u64,
) -> Result<(Report, f64, Vec<Op>)> {
    let crash_after = Duration::from_secs(6);
    let (report, at) = c
        .load_with(bank(seconds, history), Duration::from_secs(3), || async {
            // The WAL the primary sends arrives 30 s late: replicas time out
            // and stop receiving, while clients and the manager still talk.
            c.faults()
                .slow(
                    PRIMARY_ALIAS,
                    &Slow {
                        latency: Duration::from_secs(30),
                        link: Some(crate::roles::proxy::WAL.into()),
                        ..Slow::default()
                    },
                )
                .await?;
            tokio::time::sleep(crash_after).await;
            c.faults().crash(PRIMARY_ALIAS).await.map(|_| ())
        })
        .await?;
    let crashed_at = (at + crash_after).as_secs_f64();
    Ok((report, crashed_at, read_history(history)))
}

/// Waits until one node is primary and every other a replica; returns the
/// seconds it took, or None after `limit`.
async fn wait_cluster_whole(c: &Ctx<'_>, limit: Duration) -> Result<Option<f64>> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let all = c.containers().await?;
        let views = crate::primary::views(c.rt, &all).await;
        let primaries = views.values().filter(|v| v.role == DbRole::Primary).count();
        let replicas = views.values().filter(|v| v.role == DbRole::Replica).count();
        if primaries == 1 && primaries + replicas == views.len() {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(None)
}

fn row(phase: &str, r: &Report, outage: Option<f64>) -> Vec<String> {
    vec![
        phase.into(),
        r.requests.to_string(),
        r.errors.http_5xx.to_string(),
        outage.map_or("never".into(), |s| format!("{s:.1} s")),
        r.stale_reads.to_string(),
        r.lost_writes.to_string(),
        r.unknown_writes.to_string(),
    ]
}

async fn body(c: &mut Ctx<'_>) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| super::step("make a temporary directory")(&e))?;
    let mut table = Table::new(
        "Bank users while the primary dies",
        &[
            "phase",
            "requests",
            "5xx",
            "writes back after",
            "stale reads",
            "lost writes",
            "unknown writes",
        ],
    );
    c.say("2 servers, 3 database nodes with Patroni and etcd, asynchronous replication");
    c.up(Topology {
        servers: 2,
        replicas: 2,
        failover: Toggle::On,
        replication: Replication::Async,
        retries: Toggle::On,
        ..Topology::default()
    })
    .await?;
    if wait_cluster_whole(c, Duration::from_secs(60))
        .await?
        .is_none()
    {
        return Err(super::step("wait for a primary")(&"no primary after 60 s"));
    }

    c.say("bank users; 3 s in, the primary crashes");
    let history = dir.path().join("crash.jsonl");
    let old = {
        let all = c.containers().await?;
        crate::primary::current(c.rt, &c.lab, &all).await?
    };
    let (r, at) = c
        .load_with(bank(20, &history), Duration::from_secs(3), || async {
            c.faults().crash(PRIMARY_ALIAS).await.map(|_| ())
        })
        .await?;
    let ops = read_history(&history);
    let at = at.as_secs_f64();
    let outage = write_outage(&ops, at);
    table.row(row("async, crash", &r, outage));
    c.expect(
        "writes succeed again within 10 s of the crash",
        outage.map_or("no deposit succeeded after the crash".into(), |s| {
            format!("{s:.1} s")
        }),
        failover_in_time(outage),
    );
    let until = at + outage.unwrap_or(10.0).max(1.0);
    let (ok, made) = reads_between(&ops, at, until);
    c.expect(
        "reads go on while the primary is replaced (90% or more succeed)",
        format!("{ok} of {made} balance reads succeeded"),
        reads_continued(ok, made),
    );

    c.say(&format!("{old}, the old primary, starts again"));
    c.faults().start(&old).await?;
    let rejoined = wait_cluster_whole(c, Duration::from_secs(90)).await?;
    c.expect(
        "the old primary rejoins as a replica (pg_rewind)",
        rejoined.map_or("not within 90 s".into(), |s| format!("in {s:.1} s")),
        rejoined.is_some(),
    );

    c.say("the replicas are cut off the primary's changes, users keep depositing, then the primary crashes");
    let history = dir.path().join("async.jsonl");
    let (r, at, ops) = cut_then_crash(c, &history, 30).await?;
    let outage = write_outage(&ops, at);
    table.row(row("async, replicas cut off", &r, outage));
    c.expect(
        "async: confirmed writes are lost, or no replica is promoted",
        match outage {
            Some(s) => format!(
                "{} lost writes; writes came back after {s:.1} s, on a promoted replica",
                r.lost_writes
            ),
            // No node takes writes, so there is no primary to audit on
            // (the app answers 503): the deposits since the cut sit on the
            // crashed primary's disk, unreachable while it is down.
            None => format!(
                "no replica was promoted (writes never came back): {} lost writes found, {} of {} accounts could not be audited with no primary; the deposits since the cut are stranded on the crashed primary",
                r.lost_writes,
                r.audit.as_ref().map_or(0, |a| a.failed),
                r.audit.as_ref().map_or(0, |a| a.accounts)
            ),
        },
        async_shows_the_risk(r.lost_writes, outage.is_some()),
    );

    c.say("healed; synchronous replication");
    c.faults().heal_all().await?;
    if wait_cluster_whole(c, Duration::from_secs(90))
        .await?
        .is_none()
    {
        return Err(super::step("heal the cluster")(
            &"no whole cluster after 90 s",
        ));
    }
    c.faults().replication(Replication::Sync).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.say("the same again: replicas cut off, users deposit, the primary crashes");
    let history = dir.path().join("sync.jsonl");
    let (r, at, ops) = cut_then_crash(c, &history, 30).await?;
    let outage = write_outage(&ops, at);
    table.row(row("sync, replicas cut off", &r, outage));
    let acknowledged = r.audit.as_ref().map_or(0, |a| a.acknowledged_deposits);
    c.table(table);
    c.expect(
        "sync: no confirmed write is lost",
        format!(
            "{} lost of {acknowledged} confirmed deposits ({} of unknown outcome)",
            r.lost_writes, r.unknown_writes
        ),
        sync_keeps_confirmed_writes(r.lost_writes, acknowledged),
    );
    c.faults().heal_all().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(t: f64, kind: &str, ok: bool) -> Op {
        Op {
            t,
            took: 0.01,
            kind: kind.into(),
            ok,
        }
    }

    #[test]
    fn the_outage_runs_from_the_crash_to_the_first_write_after_a_failure() {
        let ops = [
            op(2.0, "deposit", true),
            op(3.2, "deposit", true),
            op(3.5, "deposit", false),
            op(4.0, "balance", true),
            op(7.9, "deposit", false),
            op(9.5, "deposit", true),
        ];
        let outage = write_outage(&ops, 3.0).unwrap();
        assert!((outage - 6.5).abs() < 1e-9, "{outage}");
        assert!(failover_in_time(Some(outage)));
        // No write failed: no outage.
        assert_eq!(write_outage(&ops[..2], 3.0), Some(0.0));
        // Writes never came back: no failover.
        assert_eq!(write_outage(&ops[..5], 3.0), None);
        assert!(!failover_in_time(None));
        assert!(!failover_in_time(Some(12.0)));
    }

    #[test]
    fn a_write_sent_before_the_failure_does_not_say_writes_are_back() {
        let late = Op {
            t: 3.6,
            took: 0.3,
            kind: "deposit".into(),
            ok: true,
        };
        let ops = [op(3.5, "deposit", false), late];
        // It ended after the failure but started before it: still no
        // write issued after the crash has succeeded.
        assert_eq!(write_outage(&ops, 3.0), None);
        let sent_after = Op {
            took: 0.05,
            ..ops[1].clone()
        };
        assert!((write_outage(&[ops[0].clone(), sent_after], 3.0).unwrap() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn reads_must_mostly_succeed() {
        let ops = [
            op(3.1, "balance", true),
            op(3.2, "balance", false),
            op(4.0, "balance", true),
            op(4.0, "deposit", false),
            op(20.0, "balance", false),
        ];
        assert_eq!(reads_between(&ops, 3.0, 10.0), (2, 3));
        assert!(!reads_continued(2, 3));
        assert!(reads_continued(9, 10));
        assert!(!reads_continued(0, 0), "no read made proves nothing");
    }

    #[test]
    fn async_must_lose_writes_or_refuse() {
        assert!(async_shows_the_risk(12, true));
        assert!(async_shows_the_risk(0, false));
        assert!(
            !async_shows_the_risk(0, true),
            "a failover that lost nothing did not show the risk"
        );
    }

    #[test]
    fn sync_must_lose_nothing_confirmed() {
        assert!(sync_keeps_confirmed_writes(0, 40));
        assert!(!sync_keeps_confirmed_writes(3, 40));
        assert!(!sync_keeps_confirmed_writes(0, 0));
    }
}
