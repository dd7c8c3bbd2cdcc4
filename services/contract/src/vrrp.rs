//! # An HA pair of balancers: what the balancer image and the CLI share
//!
//! With `lab up --balancers 2`, lb-1 and lb-2 each run keepalived beside
//! our balancer. keepalived speaks VRRP with the other node and puts the
//! floating (virtual) address on the node it elects master. The image's
//! entrypoint is configured through the environment variables of [`env`];
//! keepalived's notify hook writes [`STATE_FILE`] on every change of role,
//! and `lab status` reads it back as a [`VrrpState`].
//!
//! The file says what keepalived believes; the address on the interface is
//! the fact. They agreed in every round of the trial
//! (docs/ha-balancers-notes.md).

use serde::{Deserialize, Serialize};

/// Where the notify hook writes the node's role, inside the container.
pub const STATE_FILE: &str = "/run/lab/vrrp/state.json";

/// The environment the balancer image's entrypoint reads (pair mode when
/// [`env::VIP`] is set; without it the image runs the balancer alone).
pub mod env {
    /// The floating address, e.g. 172.18.255.254.
    pub const VIP: &str = "VRRP_VIP";
    /// The other balancer's fixed address.
    pub const PEERS: &str = "VRRP_PEERS";
    /// This node's fixed address (what its adverts come from).
    pub const SRC_IP: &str = "VRRP_SRC_IP";
    /// 1-254; the higher wins an election.
    pub const PRIORITY: &str = "VRRP_PRIORITY";
    /// Seconds between adverts.
    pub const ADVERT_INT: &str = "VRRP_ADVERT_INT";
    /// `off`: a node that comes back stays backup; `on`: it takes the address back.
    pub const PREEMPT: &str = "VRRP_PREEMPT";
    /// VRRPv2's simple password, 1-8 characters.
    pub const PASSWORD: &str = "VRRP_PASSWORD";
}

/// A node's role as keepalived reports it, lower-cased by the notify hook.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VipRole {
    /// The entrypoint wrote the file; keepalived has not decided yet.
    Starting,
    /// Holds the floating address.
    Master,
    /// Ready to take it over.
    Backup,
    /// Its balancer fails the health check: it will not take the address.
    Fault,
    /// keepalived is shutting down.
    Stop,
    /// Not readable: the container is paused or stopped, or the file is
    /// not what we expect.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for VipRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VipRole::Starting => "starting",
            VipRole::Master => "master",
            VipRole::Backup => "backup",
            VipRole::Fault => "fault",
            VipRole::Stop => "stop",
            VipRole::Unknown => "unknown",
        })
    }
}

/// The body of [`STATE_FILE`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VrrpState {
    pub state: VipRole,
    /// When the node entered that role, UTC, RFC 3339 with milliseconds.
    pub since: String,
    pub since_unix_ms: u64,
    pub priority: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_notify_hook_writes() {
        // The exact line images/balancer/vrrp-notify.sh prints.
        let line = r#"{"state": "master", "since": "2026-11-30T11:25:00.653Z", "since_unix_ms": 1796037900653, "priority": 150}"#;
        let s: VrrpState = serde_json::from_str(line).unwrap();
        assert_eq!(s.state, VipRole::Master);
        assert_eq!(s.priority, 150);
        let odd: VrrpState = serde_json::from_str(
            r#"{"state": "weird", "since": "", "since_unix_ms": 0, "priority": 0}"#,
        )
        .unwrap();
        assert_eq!(odd.state, VipRole::Unknown);
    }
}
