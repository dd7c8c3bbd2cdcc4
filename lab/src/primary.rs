//! Which database node is the primary now.
//!
//! Database nodes are named `db-1` … `db-K` and the names never say which
//! node takes the writes: after a failover the primary is another node, and
//! a name like `db-primary` would lie. So every command that needs the
//! primary asks the nodes themselves, at that moment. PostgreSQL knows its
//! own part: `pg_is_in_recovery()` is true on a replica (it replays another
//! node's changes) and false on the primary. That is also what a client
//! library's `target_session_attrs=read-write` asks when it looks for the
//! node to write to.
//!
//! The word `primary` is accepted wherever a service name is
//! ([`find`]); it means the node that says it is primary now.

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;

use crate::naming::{self, natural_key};
use crate::roles::{database, names};
use crate::runtime::{labels, ContainerInfo, Runtime, State};
use crate::topology::Role;

/// The part a database node plays now.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DbRole {
    /// Takes every write.
    Primary,
    /// Replays the primary's changes and serves reads.
    Replica,
    /// Its container is not running.
    Down,
    /// Running, but it did not say (starting, frozen, or cut off).
    Unknown,
}

impl std::fmt::Display for DbRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
            DbRole::Down => "down",
            DbRole::Unknown => "unknown",
        })
    }
}

/// What one database node says about itself.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct NodeView {
    pub role: DbRole,
    /// PostgreSQL's timeline: it goes up by one each time a replica is
    /// promoted, so two nodes on different timelines have diverged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
}

#[derive(Error, Debug, PartialEq)]
pub enum PrimaryError {
    #[error("no database node of lab {lab:?} is primary now ({nodes}): {hint}")]
    None {
        lab: String,
        nodes: String,
        hint: String,
    },
    #[error("{count} database nodes say they are primary at once ({nodes}): a split brain; `lab status` shows them, `lab heal --all` and a restart of the old one end it")]
    Several { count: usize, nodes: String },
    #[error("{verb} applies to a database node that is a replica now; {name} is {role} now (`lab status` shows each node's part)")]
    NotAReplica {
        verb: &'static str,
        name: String,
        role: DbRole,
    },
}

/// The lab's database nodes, in name order.
pub fn nodes(all: &[ContainerInfo]) -> Vec<&ContainerInfo> {
    let mut v: Vec<&ContainerInfo> = all
        .iter()
        .filter(|c| c.label(labels::ROLE) == Some(Role::Database.as_str()))
        .collect();
    v.sort_by_key(|c| natural_key(service(c)));
    v
}

fn service(c: &ContainerInfo) -> &str {
    c.label(labels::SERVICE).unwrap_or(&c.name)
}

/// `f|3` (psql's unaligned output of the query below) to a view.
pub fn parse_view(out: &str) -> NodeView {
    let mut f = out.trim().split('|');
    let role = match f.next() {
        Some("f") => DbRole::Primary,
        Some("t") => DbRole::Replica,
        _ => DbRole::Unknown,
    };
    let timeline = f.next().and_then(|t| t.trim().parse().ok());
    NodeView { role, timeline }
}

/// Asks one node what it is, through `psql` inside its container.
pub async fn view_of(rt: &dyn Runtime, c: &ContainerInfo) -> NodeView {
    if c.state != State::Running {
        return NodeView {
            role: DbRole::Down,
            timeline: None,
        };
    }
    // The last checkpoint's timeline lags after a promotion (no checkpoint
    // yet): a primary's own is in the name of the WAL file it writes now
    // (its first 8 hex digits); a replica's is the one it receives.
    let sql = "SELECT pg_is_in_recovery(), \
               CASE WHEN pg_is_in_recovery() THEN \
               GREATEST((pg_control_checkpoint()).timeline_id, \
               COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), 0)) \
               ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
    let out = rt
        .exec(
            &c.name,
            &[
                "psql", "-AtX", "-U", "postgres", "-d", "postgres", "-c", sql,
            ],
        )
        .await;
    match out {
        Ok(o) if o.code == 0 => parse_view(&o.stdout),
        _ => NodeView {
            role: DbRole::Unknown,
            timeline: None,
        },
    }
}

/// Every database node's view, by service name, asked all at once.
pub async fn views(rt: &dyn Runtime, all: &[ContainerInfo]) -> BTreeMap<String, NodeView> {
    let nodes = nodes(all);
    let got = futures::future::join_all(nodes.iter().map(|c| view_of(rt, c))).await;
    nodes
        .iter()
        .map(|c| service(c).to_string())
        .zip(got)
        .collect()
}

/// The primary among these views. Without a manager no node is ever
/// promoted, so when none answers (the primary crashed) the node the lab
/// made primary, db-1, is still the one: `lab start primary` brings it back.
pub fn choose(lab: &str, views: &BTreeMap<String, NodeView>) -> Result<String, PrimaryError> {
    let says: Vec<&String> = views
        .iter()
        .filter(|(_, v)| v.role == DbRole::Primary)
        .map(|(n, _)| n)
        .collect();
    match says[..] {
        [one] => Ok(one.clone()),
        [] => {
            let first = database::first();
            if views.get(&first).is_some_and(|v| v.role != DbRole::Replica) {
                return Ok(first);
            }
            let mut down: Vec<&String> = views
                .iter()
                .filter(|(_, v)| v.role == DbRole::Down)
                .map(|(n, _)| n)
                .collect();
            down.sort_by_key(|n| natural_key(n));
            let hint = match down.first() {
                Some(n) => format!("wait a few seconds for the failover, or start {n} with `lab start {n}`; `lab status` shows each node"),
                None => "wait a few seconds for the failover; `lab status` shows each node".into(),
            };
            Err(PrimaryError::None {
                lab: lab.to_string(),
                nodes: describe(views),
                hint,
            })
        }
        _ => Err(PrimaryError::Several {
            count: says.len(),
            nodes: describe(views),
        }),
    }
}

/// `db-1 down, db-2 replica`, for messages.
pub fn describe(views: &BTreeMap<String, NodeView>) -> String {
    let mut v: Vec<(&String, &NodeView)> = views.iter().collect();
    v.sort_by_key(|(n, _)| natural_key(n));
    v.iter()
        .map(|(n, v)| format!("{n} {}", v.role))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The service name of the primary now.
pub async fn current(
    rt: &dyn Runtime,
    lab: &str,
    all: &[ContainerInfo],
) -> crate::error::Result<String> {
    if all.is_empty() {
        return Err(naming::NameError::NoLab(lab.to_string()).into());
    }
    Ok(choose(lab, &views(rt, all).await)?)
}

/// Finds a service by name, where `primary` means the primary now.
pub async fn find<'a>(
    rt: &dyn Runtime,
    lab: &str,
    all: &'a [ContainerInfo],
    name: &str,
) -> crate::error::Result<&'a ContainerInfo> {
    if name == names::PRIMARY_ALIAS && !nodes(all).is_empty() {
        let p = current(rt, lab, all).await?;
        return Ok(naming::find(lab, all, &p)?);
    }
    Ok(naming::find(lab, all, name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(role: DbRole) -> NodeView {
        NodeView {
            role,
            timeline: None,
        }
    }

    fn views(list: &[(&str, DbRole)]) -> BTreeMap<String, NodeView> {
        list.iter().map(|(n, r)| (n.to_string(), v(*r))).collect()
    }

    #[test]
    fn psql_output_says_the_part() {
        assert_eq!(
            parse_view("f|1\n"),
            NodeView {
                role: DbRole::Primary,
                timeline: Some(1)
            }
        );
        assert_eq!(parse_view("t|3").role, DbRole::Replica);
        assert_eq!(parse_view("t|3").timeline, Some(3));
        assert_eq!(parse_view("").role, DbRole::Unknown);
    }

    #[test]
    fn the_node_that_says_so_is_the_primary() {
        let v = views(&[("db-1", DbRole::Replica), ("db-2", DbRole::Primary)]);
        assert_eq!(choose("lab", &v), Ok("db-2".into()));
    }

    #[test]
    fn a_crashed_first_node_is_still_the_primary_without_a_manager() {
        let v = views(&[("db-1", DbRole::Down), ("db-2", DbRole::Replica)]);
        assert_eq!(choose("lab", &v), Ok("db-1".into()));
    }

    #[test]
    fn no_primary_and_two_primaries_are_errors_that_say_why() {
        let v = views(&[("db-1", DbRole::Replica), ("db-2", DbRole::Down)]);
        let err = choose("lab", &v).unwrap_err().to_string();
        assert!(
            err.contains("db-1 replica, db-2 down") && err.contains("lab start db-2"),
            "{err}"
        );
        let v = views(&[("db-1", DbRole::Primary), ("db-2", DbRole::Primary)]);
        let err = choose("lab", &v).unwrap_err().to_string();
        assert!(err.contains("split brain"), "{err}");
    }
}
