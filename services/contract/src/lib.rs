//! # lab-contract: what the lab's programs promise each other
//!
//! The lab is several programs: the `lab` CLI, the web app (`lab-app`), the
//! load balancer (`lab-balancer`) and the fault proxy. They talk through
//! environment variables, a configuration file, admin APIs and JSON bodies.
//! Each of those is a promise between two programs, and a promise written
//! twice (once where it is made, once where it is kept) breaks silently when
//! one side is renamed. So every promise is a type here, used by both sides:
//! a rename is a compile error, not a surprise at run time.
//!
//! * [`knobs`]: the settings several programs understand (strategy,
//!   sessions, reads, replication, on/off), one spelling each;
//! * [`balancer`]: the balancer's configuration file;
//! * [`admin`]: the balancer's admin API;
//! * [`app`]: the app's environment and its JSON answers;
//! * [`faultproxy`]: the fault proxy's admin API;
//! * [`vrrp`]: an HA pair's settings and the state file `lab status` reads.

pub mod admin;
pub mod app;
pub mod balancer;
pub mod faultproxy;
pub mod knobs;
pub mod vrrp;

/// Durations as people write them, `"500ms"` or `"2s"`, in TOML and JSON
/// (`#[serde(with = "lab_contract::human_duration")]`).
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `1s 500ms`-style text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `500ms`, `2s`, `1m`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"500ms\" or \"2s\""
            ))
        })
    }
}
