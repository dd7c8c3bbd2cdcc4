//! # Configuration: the balancer's one TOML file
//!
//! `lab up` writes the file and the balancer reads it, so its type lives in
//! the shared contract crate ([`lab_contract::balancer`]), where the two
//! sides cannot drift apart. The keys, their defaults and the nginx/HAProxy
//! directive each one corresponds to are in `services/balancer/README.md`.

pub use lab_contract::balancer::*;
