//! The balancer's admin API, as both ends see it.
//!
//! The balancer answers on its admin port; `lab` asks, to show the
//! balancer's view in `lab status` and to change the server list, the
//! strategy or a drain without restarting anything (HAProxy's runtime API
//! and nginx Plus's API play the same role). Every body that crosses that
//! port is a type here.

use serde::{Deserialize, Serialize};

use crate::balancer::UpstreamConfig;
use crate::knobs::Strategy;

/// A server's state in the balancer's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    /// Gets traffic.
    Up,
    /// Failed its health checks; gets no traffic.
    Down,
    /// Taken out by an operator; in-flight requests finish.
    Draining,
}

impl ServerState {
    /// `up`, `down` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Draining => "draining",
        }
    }
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One server as `GET /servers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerView {
    /// Name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Up, down or draining.
    pub state: ServerState,
    /// Requests being served now.
    pub in_flight: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Requests that failed on it.
    pub failures: u64,
    /// Time of the last active check (RFC 3339), or null.
    #[serde(default)]
    pub last_check: Option<String>,
    /// Whether the last active check passed, or null before the first.
    #[serde(default)]
    pub last_check_ok: Option<bool>,
    /// Why it is down, or null.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer of `GET /servers` and `PUT /servers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServersView {
    /// Current strategy.
    pub strategy: Strategy,
    /// Whether retries are on.
    pub retries: bool,
    /// Every server, in list order.
    pub servers: Vec<ServerView>,
}

/// The body of `PUT /servers`: the whole new list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PutServers {
    /// Servers that stay keep their state; the others come and go.
    pub servers: Vec<UpstreamConfig>,
}

/// The body of `PATCH /settings`; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatchSettings {
    /// A new strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Retries on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<bool>,
}

/// Settings that can change while the balancer runs: the answer of
/// `PATCH /settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// How servers are picked.
    pub strategy: Strategy,
    /// Whether idempotent requests are retried on another server.
    pub retries: bool,
}

/// Every error answer of the admin API (and of the app): `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// One line naming what went wrong.
    pub error: String,
}
