//! Changing a running lab: `lab scale` and `lab set`.
//!
//! Both start from the topology that runs now (read back from Docker by
//! [`crate::current`]), change a knob or two, and hand the result to the same
//! reconcile as `lab up`. So a new server joins the balancer live, a removed
//! one is drained first, and servers that must be replaced (new sessions
//! store, cache on) are rolled one at a time behind the balancer.

use std::time::Duration;

use clap::ValueEnum;
use thiserror::Error;

use crate::current::current;
use crate::error::Result;
use crate::naming::did_you_mean;
use crate::runtime::Runtime;
use crate::topology::{Reads, Sessions, Strategy, Toggle, Topology, MAX_SERVERS};
use crate::up::{up, UpOptions, UpReport};

/// The knobs `lab set` changes on a running lab.
pub const KEYS: [&str; 14] = [
    "sessions",
    "cache",
    "cache_ttl",
    "reads",
    "lb",
    "retries",
    "product_query_ms",
    "health_interval",
    "health_timeout",
    "health_fall",
    "health_rise",
    "passive",
    "balancers",
    "advert_int",
];

#[derive(Error, Debug, PartialEq)]
pub enum SetError {
    #[error("{0:?} is not KEY=VALUE: write e.g. `lab set sessions=redis`")]
    Syntax(String),
    #[error("unknown key {key:?}{}; the keys are: {}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(), KEYS.join(", "))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    #[error("invalid value {value:?} for {key}: use {hint}")]
    Value {
        key: String,
        value: String,
        hint: String,
    },
    #[error("servers {0} is out of range: use 1 to {MAX_SERVERS}")]
    Servers(u32),
    #[error("{key} is not changed by `lab set`: {how}")]
    NotHere { key: String, how: &'static str },
}

/// Knobs of `lab up` that `lab set` does not change, and what does.
/// Replicas and failover decide how the database nodes are made (plain
/// streaming copies, or a Patroni cluster that needs 3 nodes for its
/// consensus): changing them means new nodes and new data, not a live edit.
pub fn not_here(key: &str) -> Option<&'static str> {
    Some(match key {
        "servers" => "use `lab scale N` (new servers join the balancer live, removed ones are drained first)",
        "replication" => "use `lab replication async|sync`",
        "replicas" | "failover" => "it decides how the database nodes are made (plain copies, or a Patroni cluster of 3 or more), so it is set when the lab starts: `lab down`, then e.g. `lab up --replicas 2` (automatic failover) or `lab up --replicas 2 --failover off`",
        _ => return None,
    })
}

fn enum_value<T: ValueEnum>(key: &str, value: &str) -> std::result::Result<T, SetError> {
    T::from_str(value, true).map_err(|_| SetError::Value {
        key: key.to_string(),
        value: value.to_string(),
        hint: T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn duration_value(key: &str, value: &str) -> std::result::Result<Duration, SetError> {
    humantime::parse_duration(value).map_err(|_| SetError::Value {
        key: key.into(),
        value: value.into(),
        hint: "a duration such as 500ms or 1s".into(),
    })
}

fn count_value(key: &str, value: &str) -> std::result::Result<u32, SetError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=20).contains(n))
        .ok_or_else(|| SetError::Value {
            key: key.into(),
            value: value.into(),
            hint: "a count of checks from 1 to 20".into(),
        })
}

/// Applies `KEY=VALUE` pairs to a topology.
pub fn apply(t: &mut Topology, pairs: &[String]) -> std::result::Result<(), SetError> {
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| SetError::Syntax(pair.clone()))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "sessions" => t.sessions = enum_value::<Sessions>(key, value)?,
            "cache" => t.cache = enum_value::<Toggle>(key, value)?,
            "reads" => t.reads = enum_value::<Reads>(key, value)?,
            "lb" | "strategy" => t.lb = enum_value::<Strategy>(key, value)?,
            "retries" => t.retries = enum_value::<Toggle>(key, value)?,
            "cache_ttl" => {
                humantime::parse_duration(value).map_err(|_| SetError::Value {
                    key: key.into(),
                    value: value.into(),
                    hint: "a duration such as 30s".into(),
                })?;
                t.cache_ttl = value.to_string();
            }
            "health_interval" => t.health.interval = duration_value(key, value)?,
            "health_timeout" => t.health.timeout = duration_value(key, value)?,
            "health_fall" => t.health.fall = count_value(key, value)?,
            "health_rise" => t.health.rise = count_value(key, value)?,
            "passive" => t.health.passive = enum_value::<Toggle>(key, value)?,
            // 2 adds lb-2 and the edge (lb-1 is made again with keepalived);
            // 1 removes them.
            "balancers" => {
                t.balancers = match value {
                    "1" => 1,
                    "2" => 2,
                    _ => {
                        return Err(SetError::Value {
                            key: key.into(),
                            value: value.into(),
                            hint: "1 (one balancer) or 2 (an HA pair with a floating address)"
                                .into(),
                        })
                    }
                }
            }
            "advert_int" => t.advert_int = duration_value(key, value)?,
            "product_query_ms" => {
                t.product_query_ms =
                    value
                        .parse()
                        .ok()
                        .filter(|v| *v <= 10_000)
                        .ok_or_else(|| SetError::Value {
                            key: key.into(),
                            value: value.into(),
                            hint: "a number of milliseconds from 0 to 10000".into(),
                        })?
            }
            other => {
                if let Some(how) = not_here(other) {
                    return Err(SetError::NotHere {
                        key: other.to_string(),
                        how,
                    });
                }
                return Err(SetError::UnknownKey {
                    key: other.to_string(),
                    suggestion: did_you_mean(other, KEYS),
                });
            }
        }
    }
    Ok(())
}

pub async fn set(
    rt: &dyn Runtime,
    lab: &str,
    pairs: &[String],
    opts: &UpOptions,
) -> Result<UpReport> {
    // A wrong key or value is named before Docker is asked anything.
    apply(&mut Topology::default(), pairs)?;
    let mut t = current(rt, lab, &opts.lb).await?;
    apply(&mut t, pairs)?;
    t.validate()?;
    up(rt, lab, &t, opts).await
}

pub async fn scale_servers(
    rt: &dyn Runtime,
    lab: &str,
    n: u32,
    opts: &UpOptions,
) -> Result<UpReport> {
    if !(1..=u32::from(MAX_SERVERS)).contains(&n) {
        return Err(SetError::Servers(n).into());
    }
    let mut t = current(rt, lab, &opts.lb).await?;
    t.servers = n as u8;
    up(rt, lab, &t, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_set_at_start_say_what_changes_them() {
        let mut t = Topology::default();
        for key in ["replicas", "failover"] {
            let e = apply(&mut t, &[format!("{key}=2")]).unwrap_err();
            let line = e.to_string();
            assert!(matches!(e, SetError::NotHere { .. }), "{line}");
            assert!(
                line.contains("lab down") && line.contains("--replicas 2"),
                "{line}"
            );
            assert!(!line.contains('\n'), "one line: {line}");
        }
        let e = apply(&mut t, &["servers=3".to_string()]).unwrap_err();
        assert!(e.to_string().contains("lab scale"), "{e}");
        let e = apply(&mut t, &["replication=sync".to_string()]).unwrap_err();
        assert!(e.to_string().contains("lab replication"), "{e}");
        // A key nobody knows is still unknown, with a suggestion.
        let e = apply(&mut t, &["sesions=redis".to_string()]).unwrap_err();
        assert!(matches!(e, SetError::UnknownKey { .. }), "{e}");
    }

    #[test]
    fn set_parses_pairs() {
        let mut t = Topology::default();
        apply(
            &mut t,
            &[
                "sessions=redis".into(),
                "cache=on".into(),
                "lb=sticky".into(),
                "retries=on".into(),
            ],
        )
        .unwrap();
        assert_eq!(t.sessions, Sessions::Redis);
        assert_eq!(t.cache, Toggle::On);
        assert_eq!(t.lb, Strategy::Sticky);
        assert_eq!(t.retries, Toggle::On);
    }

    #[test]
    fn set_turns_the_pair_on_and_refuses_three() {
        let mut t = Topology::default();
        apply(&mut t, &["balancers=2".into(), "advert_int=2s".into()]).unwrap();
        assert_eq!((t.balancers, t.advert_int), (2, Duration::from_secs(2)));
        let e = apply(&mut t, &["balancers=3".into()]).unwrap_err();
        assert!(e.to_string().contains("1 (one balancer) or 2"), "{e}");
    }

    #[test]
    fn set_refuses_with_the_fix() {
        let mut t = Topology::default();
        let e = apply(&mut t, &["sesions=redis".into()]).unwrap_err();
        assert!(e.to_string().contains("did you mean sessions"), "{e}");
        let e = apply(&mut t, &["sessions=disk".into()]).unwrap_err();
        assert!(e.to_string().contains("memory, redis, jwt"), "{e}");
        let e = apply(&mut t, &["sessions".into()]).unwrap_err();
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
    }
}
