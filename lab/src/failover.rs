//! Automatic failover of the primary, and why it is not always possible.
//!
//! When the primary dies, something must pick a replica and promote it, and
//! every node must agree on which one, or two nodes take writes at once
//! (a split brain). Agreement needs a majority: a group of N voters can
//! decide only while more than N/2 of them are up. One database node has no
//! one to fail over to; two nodes can never tell "the other died" from "I
//! am cut off", so either one's death leaves the survivor without a
//! majority; three is the smallest group that survives the loss of one.
//! This module says, from the number of nodes, whether a lab can fail over
//! and, when it cannot, why.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::patroni::{Patroni, PatroniError};
use crate::primary::{self, DbRole};
use crate::roles::database::{self, PATRONI_PORT};
use crate::runtime::{labels, ContainerInfo, Runtime, State};

/// Whether the database fails over by itself.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub available: bool,
    /// One sentence a student can read: why (not).
    pub why: String,
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.available {
            write!(f, "automatic failover: on ({})", self.why)
        } else {
            write!(f, "automatic failover: unavailable: {}", self.why)
        }
    }
}

/// The smallest number of votes that decides among `members`.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// How many voters may be lost while the rest still decide.
pub fn tolerated(members: usize) -> usize {
    members.saturating_sub(majority(members))
}

/// With a manager: `up` of the `members` etcd voters are running and on
/// the lab's network; `pause` is Patroni's maintenance mode.
pub fn managed_availability(up: usize, members: usize, pause: bool) -> Availability {
    let need = majority(members);
    if pause {
        return Availability {
            available: false,
            why: "failover is paused in Patroni (maintenance mode)".into(),
        };
    }
    if up < need {
        return Availability {
            available: false,
            why: format!(
                "etcd has {up} of {members} members up; a majority needs {need}: no node can take the leader key, and a primary that cannot renew it stops taking writes"
            ),
        };
    }
    Availability {
        available: true,
        why: format!(
            "Patroni with etcd on {members} nodes, {up} up: it can lose {} more and still promote a replica",
            up - need
        ),
    }
}

/// The sentence for a lab with `nodes` database nodes and no manager.
pub fn availability(nodes: usize) -> Availability {
    let why = match nodes {
        0 => "the lab has no database".to_string(),
        1 => "one database node: there is no replica to promote (add --replicas 2 for a failover)".to_string(),
        n if tolerated(n) == 0 => format!(
            "automatic failover needs 3 database nodes (--replicas 2): a consensus of {n} members needs {} votes, so losing either node loses the majority",
            majority(n)
        ),
        _ => "failover is off (lab up --failover off): nothing promotes a replica; the primary stays down until you start it again".to_string(),
    };
    Availability {
        available: false,
        why,
    }
}

/// Whether this lab's database fails over by itself now, read from its
/// containers: the etcd members (the first three nodes) that run and are
/// connected, and Patroni's pause.
pub async fn availability_of(lab: &str, all: &[ContainerInfo]) -> Option<Availability> {
    let network = crate::naming::network(lab);
    let nodes = primary::nodes(all);
    if nodes.is_empty() {
        return None;
    }
    if !nodes.iter().any(|c| database::is_managed(c)) {
        return Some(availability(nodes.len()));
    }
    let members: Vec<&&ContainerInfo> = nodes.iter().take(database::ETCD_MEMBERS.into()).collect();
    let up = members
        .iter()
        .filter(|c| c.state == State::Running && c.networks.contains(&network))
        .count();
    let pause = match manager(all).await {
        Ok(p) => p.cluster().await.map(|c| c.pause).unwrap_or(false),
        Err(_) => false,
    };
    Some(managed_availability(up, members.len(), pause))
}

/// Patroni on the first running node that answers.
pub async fn manager(all: &[ContainerInfo]) -> Result<Patroni> {
    let nodes = primary::nodes(all);
    if !nodes.iter().any(|c| database::is_managed(c)) {
        return Err(PatroniError::Unavailable(format!(
            "this lab has no failover manager: {}",
            availability(nodes.len()).why
        ))
        .into());
    }
    let mut last = None;
    for c in nodes.iter().filter(|c| c.state == State::Running) {
        let Some(addr) = c.ports.get(&PATRONI_PORT) else {
            continue;
        };
        let p = Patroni::new(c.label(labels::SERVICE).unwrap_or(&c.name), addr);
        match p.cluster().await {
            Ok(_) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| {
            PatroniError::Unavailable(
                "no database node is running: start one with `lab start db-1`".into(),
            )
        })
        .into())
}

/// A change of primary, as it happened.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Switched {
    pub from: Option<String>,
    pub to: String,
    /// From the request to the new primary taking writes.
    pub seconds: f64,
}

/// Waits until `want` (or any node but `from`) says it is primary.
async fn wait_for_primary(
    rt: &dyn Runtime,
    lab: &str,
    from: Option<&str>,
    want: Option<&str>,
    started: Instant,
) -> Result<String> {
    let deadline = started + Duration::from_secs(60);
    loop {
        let all = crate::up::containers(rt, lab).await?;
        let views = primary::views(rt, &all).await;
        let now: Vec<&String> = views
            .iter()
            .filter(|(_, v)| v.role == DbRole::Primary)
            .map(|(n, _)| n)
            .collect();
        if let [one] = now[..] {
            let good = match want {
                Some(w) => one == w,
                None => Some(one.as_str()) != from,
            };
            if good {
                return Ok(one.clone());
            }
        }
        if Instant::now() > deadline {
            return Err(PatroniError::Unavailable(format!(
                "no new primary after 60 s ({}); see `lab status` and `lab logs primary`",
                primary::describe(&views)
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `lab failover`: a planned switchover to the healthiest replica.
pub async fn switchover(rt: &dyn Runtime, lab: &str) -> Result<Switched> {
    let all = crate::up::containers(rt, lab).await?;
    let p = manager(&all).await?;
    let cluster = p.cluster().await?;
    let leader = cluster
        .leader()
        .map(|m| m.name.clone())
        .ok_or_else(|| {
            PatroniError::Unavailable(
                "there is no primary to switch over from (a failover is under way?): see `lab status`, or `lab promote NODE`".into(),
            )
        })?;
    let started = Instant::now();
    p.switchover(&leader, None).await?;
    let to = wait_for_primary(rt, lab, Some(&leader), None, started).await?;
    Ok(Switched {
        from: Some(leader),
        to,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `lab promote NODE`: make this node the primary (a manual failover).
pub async fn promote(rt: &dyn Runtime, lab: &str, name: &str) -> Result<Option<Switched>> {
    let all = crate::up::containers(rt, lab).await?;
    let c = primary::find(rt, lab, &all, name).await?;
    let node = c.label(labels::SERVICE).unwrap_or(&c.name).to_string();
    if c.label(labels::ROLE) != Some(crate::topology::Role::Database.as_str()) {
        return Err(crate::faults::FaultError::WrongRole {
            verb: "promote",
            what: "database nodes",
            name: node,
            role_article: "a",
            role: c
                .label(labels::ROLE)
                .and_then(crate::topology::Role::parse)
                .unwrap_or(crate::topology::Role::Server),
        }
        .into());
    }
    let p = manager(&all).await?;
    let cluster = p.cluster().await?;
    let from = cluster.leader().map(|m| m.name.clone());
    if from.as_deref() == Some(node.as_str()) {
        return Ok(None);
    }
    let started = Instant::now();
    p.failover(&node).await?;
    let to = wait_for_primary(rt, lab, from.as_deref(), Some(&node), started).await?;
    Ok(Some(Switched {
        from,
        to,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_is_the_smallest_group_that_survives_a_loss() {
        assert_eq!((majority(1), tolerated(1)), (1, 0));
        assert_eq!((majority(2), tolerated(2)), (2, 0));
        assert_eq!((majority(3), tolerated(3)), (2, 1));
        assert_eq!((majority(4), tolerated(4)), (3, 1));
        assert_eq!((majority(5), tolerated(5)), (3, 2));
    }

    #[test]
    fn two_nodes_are_told_why_not() {
        let a = availability(2);
        assert!(!a.available);
        assert!(
            a.why.contains("needs 3 database nodes (--replicas 2)") && a.why.contains("majority"),
            "{}",
            a.why
        );
        assert!(availability(1).why.contains("no replica"));
        assert!(a.to_string().starts_with("automatic failover: unavailable"));
    }

    #[test]
    fn a_manager_needs_a_majority_of_its_voters() {
        let ok = managed_availability(3, 3, false);
        assert!(ok.available && ok.why.contains("lose 1 more"), "{}", ok.why);
        let one_down = managed_availability(2, 3, false);
        assert!(one_down.available && one_down.why.contains("lose 0 more"));
        let two_down = managed_availability(1, 3, false);
        assert!(!two_down.available);
        assert!(two_down
            .why
            .contains("1 of 3 members up; a majority needs 2"));
        assert!(!managed_availability(3, 3, true).available);
    }
}
