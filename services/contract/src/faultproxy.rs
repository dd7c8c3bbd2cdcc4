//! # The fault proxy's admin API: what the CLI sends, what the proxy answers
//!
//! A network fault (a slow link, a hung link, a link that resets) is
//! something a real network does to packets. The lab cannot count on the
//! kernel's `tc netem` to do it, so each service's port is fronted by a small
//! TCP proxy of ours (`lab-faultproxy`) that does it to the bytes it copies.
//! The proxy serves one or more named *links* (a listening address and the
//! upstream it forwards to); the CLI sets a fault on a link through the
//! proxy's admin HTTP port:
//!
//! ```text
//! GET    /links               -> LinksResponse
//! PUT    /links/{name}/fault  <- Fault          -> LinkStatus
//! DELETE /links/{name}/fault                    -> LinkStatus
//! DELETE /faults                                -> LinksResponse (every link healed)
//! GET    /healthz                               -> "ok"
//! errors                                        -> ErrorBody (400, 404)
//! ```
//!
//! Durations travel as integer milliseconds and bandwidth as bytes per
//! second, so the JSON reads without a parser for "200ms" or "1mbit".
//! A `Fault` is a whole description: putting one replaces the link's previous
//! fault (it does not add to it), so putting the same body twice leaves the
//! same state (idempotent), and so does healing a healthy link.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which bytes a fault touches, seen from the service the proxy fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Bytes from the clients to the service (requests, queries).
    ToService,
    /// Bytes from the service back to its clients (responses, rows).
    FromService,
    /// Both ways: what a slow or dead network cable does.
    #[default]
    Both,
}

impl Direction {
    /// Whether a fault set for `self` touches the bytes flowing `way`
    /// (`way` is `ToService` or `FromService`).
    pub fn covers(self, way: Direction) -> bool {
        self == Direction::Both || self == way
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ToService => "to-service",
            Direction::FromService => "from-service",
            Direction::Both => "both",
        })
    }
}

/// The fault of one link: the body of `PUT /links/{name}/fault`.
///
/// Parts combine (`latency_ms` with `bandwidth_bps` is a slow, thin link);
/// a field left out is "not faulty". Unknown fields are refused, so a typo
/// (`latency: 200`) is a 400, not a silently healthy link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Which bytes `latency_ms`, `jitter_ms`, `bandwidth_bps`, `blackhole`
    /// and `slow_close_ms` touch; `reset` cuts whole connections.
    #[serde(default)]
    pub direction: Direction,
    /// Each chunk of bytes arrives this much later (one way).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_ms: u64,
    /// Each chunk's delay is drawn from `latency_ms ± jitter_ms`, but a
    /// connection's bytes never overtake each other (TCP never reorders).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_ms: u64,
    /// The link carries at most this many bytes per second, all of its
    /// connections together (a token bucket per direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bps: Option<u64>,
    /// A hung link: connections are accepted, nothing gets through, the bytes
    /// wait (in the kernel's buffers) until the fault is healed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub blackhole: bool,
    /// New connections are refused and open ones are cut with a TCP RST.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset: bool,
    /// A close (FIN) is passed on only this long after it arrives.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_close_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// Why a `Fault` cannot be applied; the message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFault {
    #[error("the fault sets nothing: give latency_ms, bandwidth_bps, blackhole, reset or slow_close_ms (to heal, send DELETE)")]
    Empty,
    #[error("jitter_ms ({jitter_ms}) is larger than latency_ms ({latency_ms}): a delay cannot be negative; lower the jitter or raise the latency")]
    JitterAboveLatency { latency_ms: u64, jitter_ms: u64 },
    #[error("bandwidth_bps is 0: that is a blackhole; send \"blackhole\": true instead, or a positive rate")]
    ZeroBandwidth,
    #[error("reset cuts every connection, so it cannot be combined with other parts; send {{\"reset\": true}} alone")]
    ResetWithOthers,
    #[error("reset cuts whole connections and has no direction; leave \"direction\" out")]
    ResetWithDirection,
}

impl Fault {
    /// Checks that the fault means something and its parts fit together.
    pub fn validate(&self) -> Result<(), InvalidFault> {
        let shaping = self.latency_ms > 0
            || self.jitter_ms > 0
            || self.bandwidth_bps.is_some()
            || self.blackhole
            || self.slow_close_ms > 0;
        if self.reset {
            if shaping {
                return Err(InvalidFault::ResetWithOthers);
            }
            if self.direction != Direction::Both {
                return Err(InvalidFault::ResetWithDirection);
            }
            return Ok(());
        }
        if !shaping {
            return Err(InvalidFault::Empty);
        }
        if self.jitter_ms > self.latency_ms {
            return Err(InvalidFault::JitterAboveLatency {
                latency_ms: self.latency_ms,
                jitter_ms: self.jitter_ms,
            });
        }
        if self.bandwidth_bps == Some(0) {
            return Err(InvalidFault::ZeroBandwidth);
        }
        Ok(())
    }
}

/// One link as `GET /links` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    /// The address the proxy listens on (what clients dial).
    pub listen: String,
    /// Where it forwards, as configured (a DNS name is resolved per connection).
    pub upstream: String,
    /// The fault in force, `null` when the link is healthy.
    pub fault: Option<Fault>,
    /// Connections open through the link now.
    pub open_connections: u64,
    /// Connections accepted since the proxy started.
    pub total_connections: u64,
    /// Bytes passed from clients to the service since the proxy started.
    pub bytes_to_service: u64,
    /// Bytes passed from the service to clients since the proxy started.
    pub bytes_from_service: u64,
}

/// The body of `GET /links` and `DELETE /faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinksResponse {
    pub links: Vec<LinkStatus>,
}

/// Every error answer: one line naming the cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// On an unknown link: the names that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_links: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_combinations_and_refuses_nonsense() {
        let slow = Fault {
            latency_ms: 200,
            jitter_ms: 20,
            bandwidth_bps: Some(125_000),
            ..Fault::default()
        };
        assert_eq!(slow.validate(), Ok(()));
        assert_eq!(Fault::default().validate(), Err(InvalidFault::Empty));
        let jitter = Fault {
            latency_ms: 10,
            jitter_ms: 20,
            ..Fault::default()
        };
        assert!(matches!(
            jitter.validate(),
            Err(InvalidFault::JitterAboveLatency { .. })
        ));
        let reset_and_more = Fault {
            reset: true,
            latency_ms: 5,
            ..Fault::default()
        };
        assert_eq!(
            reset_and_more.validate(),
            Err(InvalidFault::ResetWithOthers)
        );
        let zero = Fault {
            bandwidth_bps: Some(0),
            ..Fault::default()
        };
        assert_eq!(zero.validate(), Err(InvalidFault::ZeroBandwidth));
    }

    #[test]
    fn direction_covers_its_own_way_and_both_covers_all() {
        assert!(Direction::Both.covers(Direction::ToService));
        assert!(Direction::Both.covers(Direction::FromService));
        assert!(Direction::ToService.covers(Direction::ToService));
        assert!(!Direction::ToService.covers(Direction::FromService));
        assert!(!Direction::FromService.covers(Direction::ToService));
    }

    #[test]
    fn json_reads_as_documented() {
        let f: Fault =
            serde_json::from_str(r#"{"latency_ms": 200, "direction": "to-service"}"#).unwrap();
        assert_eq!(f.latency_ms, 200);
        assert_eq!(f.direction, Direction::ToService);
        let both: Fault = serde_json::from_str(r#"{"blackhole": true}"#).unwrap();
        assert_eq!(both.direction, Direction::Both);
        assert!(serde_json::from_str::<Fault>(r#"{"latency": 200}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Fault {
                bandwidth_bps: Some(1000),
                ..Fault::default()
            })
            .unwrap(),
            r#"{"direction":"both","bandwidth_bps":1000}"#
        );
    }
}

/// The environment variables the proxy reads its links and admin address
/// from; `lab up` sets them on every container that has a proxy.
pub mod env {
    /// Comma-separated links, each `NAME=LISTEN->UPSTREAM`.
    pub const LINKS: &str = "FAULTPROXY_LINKS";
    /// `IP:PORT` of the admin API.
    pub const ADMIN: &str = "FAULTPROXY_ADMIN";
    /// Worker threads.
    pub const WORKERS: &str = "FAULTPROXY_WORKERS";
}

/// One link as the proxy's `--link` (and `FAULTPROXY_LINKS`) reads it:
/// `NAME=LISTEN->UPSTREAM`.
pub fn link(name: &str, listen: &str, upstream: &str) -> String {
    format!("{name}={listen}->{upstream}")
}
