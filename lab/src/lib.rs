//! scaling-lab: start, break and measure a small web architecture on one laptop.
pub mod load;
