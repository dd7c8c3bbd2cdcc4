//! # lab-contract: what the lab's programs promise each other
//!
//! The lab is several programs: the `lab` CLI, the web app (`lab-app`), the
//! load balancer (`lab-balancer`) and the fault proxy. They talk through
//! environment variables, a configuration file, admin APIs and JSON bodies.
//! Each of those is a promise between two programs, and a promise written
//! twice (once where it is made, once where it is kept) breaks silently when
//! one side is renamed. So every promise is a type here, used by both sides:
//! a rename is a compile error, not a surprise at run time.

pub mod faultproxy;
