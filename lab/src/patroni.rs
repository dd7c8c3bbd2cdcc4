//! A client for Patroni's REST API, the failover manager of a lab with 3 or
//! more database nodes, reached through each node's published loopback port.
//!
//! Patroni runs on every database node and agrees with the others, through
//! etcd, on who holds the leader key (the primary). The CLI never decides
//! anything about failover itself: it asks Patroni (`GET /cluster`), and
//! asks it to act (`POST /switchover` for a planned change of primary,
//! `POST /failover` to promote a chosen node, `PATCH /config` for the
//! cluster-wide settings Patroni owns, such as synchronous replication).

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

#[derive(Error, Debug, PartialEq)]
pub enum PatroniError {
    #[error("Patroni on {node} did not answer ({reason}); is the node running? see `lab status` and `lab logs {node}`")]
    Unreachable { node: String, reason: String },
    #[error("Patroni refused the {what} ({status}): {reason}")]
    Refused {
        what: &'static str,
        status: u16,
        reason: String,
    },
    #[error("{0}")]
    Unavailable(String),
}

/// One member as `GET /cluster` lists it.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`.
    pub role: String,
    /// `running`, `streaming`, `stopped`, `starting`, ...
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes behind the leader's last known position, or `"unknown"`.
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
}

impl Member {
    pub fn is_leader(&self) -> bool {
        self.role == "leader" || self.role == "standby_leader"
    }

    /// The bytes of WAL it has not replayed yet, when Patroni knows.
    pub fn lag_bytes(&self) -> Option<u64> {
        self.lag.as_ref().and_then(|v| v.as_u64())
    }
}

/// The cluster as one node's Patroni sees it.
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Cluster {
    #[serde(default)]
    pub members: Vec<Member>,
    /// Failover switched off (Patroni's maintenance mode).
    #[serde(default)]
    pub pause: bool,
}

impl Cluster {
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.is_leader())
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Patroni's API on one node.
pub struct Patroni {
    node: String,
    base: String,
    http: reqwest::Client,
}

impl Patroni {
    /// `addr` is the node's Patroni port as published, `127.0.0.1:PORT`.
    pub fn new(node: &str, addr: &str) -> Patroni {
        Patroni {
            node: node.to_string(),
            base: format!("http://{addr}"),
            // A switchover answers once it is done: give it Patroni's time.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> PatroniError {
        PatroniError::Unreachable {
            node: self.node.clone(),
            reason: e.to_string(),
        }
    }

    pub async fn cluster(&self) -> Result<Cluster, PatroniError> {
        let r = self
            .http
            .get(format!("{}/cluster", self.base))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        r.json().await.map_err(|e| self.unreachable(e))
    }

    async fn send(
        &self,
        what: &'static str,
        r: reqwest::RequestBuilder,
    ) -> Result<String, PatroniError> {
        let r = r.send().await.map_err(|e| self.unreachable(e))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body.trim().to_string());
        }
        Err(PatroniError::Refused {
            what,
            status: status.as_u16(),
            reason: body.trim().to_string(),
        })
    }

    /// A planned change of primary: `leader` hands over to `candidate`, or
    /// to the replica Patroni finds healthiest.
    pub async fn switchover(
        &self,
        leader: &str,
        candidate: Option<&str>,
    ) -> Result<String, PatroniError> {
        let mut body = serde_json::json!({ "leader": leader });
        if let Some(c) = candidate {
            body["candidate"] = c.into();
        }
        self.send(
            "switchover",
            self.http
                .post(format!("{}/switchover", self.base))
                .json(&body),
        )
        .await
    }

    /// Make `candidate` the primary, whether or not the primary is alive.
    pub async fn failover(&self, candidate: &str) -> Result<String, PatroniError> {
        self.send(
            "failover",
            self.http
                .post(format!("{}/failover", self.base))
                .json(&serde_json::json!({ "candidate": candidate })),
        )
        .await
    }

    /// Change the cluster-wide settings (a JSON merge patch; null removes).
    pub async fn patch_config(&self, patch: &serde_json::Value) -> Result<String, PatroniError> {
        self.send(
            "configuration change",
            self.http.patch(format!("{}/config", self.base)).json(patch),
        )
        .await
    }
}

/// The configuration patch for `lab replication`: Patroni names the
/// synchronous standby itself. Strict: with no replica able to confirm,
/// writes wait instead of going on unconfirmed (which a crash would lose).
pub fn replication_patch(sync: bool) -> serde_json::Value {
    serde_json::json!({
        "synchronous_mode": sync,
        "synchronous_mode_strict": sync,
        "postgresql": {"parameters": {
            "synchronous_commit": if sync { "remote_apply" } else { "on" }
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cluster_as_patroni_writes_it() {
        let text = r#"{"members": [
            {"name": "db-1", "role": "leader", "state": "running", "api_url": "http://db-1:8008/patroni", "host": "db-1", "port": 5433, "timeline": 2},
            {"name": "db-2", "role": "sync_standby", "state": "streaming", "host": "db-2", "port": 5433, "timeline": 2, "lag": 0},
            {"name": "db-3", "role": "replica", "state": "stopped", "lag": "unknown"}
        ], "scope": "lab"}"#;
        let c: Cluster = serde_json::from_str(text).unwrap();
        assert_eq!(c.leader().unwrap().name, "db-1");
        assert_eq!(c.member("db-2").unwrap().lag_bytes(), Some(0));
        assert_eq!(c.member("db-3").unwrap().lag_bytes(), None);
        assert!(!c.pause);
    }

    #[test]
    fn sync_means_strict() {
        let p = replication_patch(true);
        assert_eq!(p["synchronous_mode_strict"], true);
        assert_eq!(
            p["postgresql"]["parameters"]["synchronous_commit"],
            "remote_apply"
        );
        assert_eq!(replication_patch(false)["synchronous_mode"], false);
    }
}
