//! # lab-balancer: a small nginx-style HTTP load balancer
//!
//! The scaling lab puts this balancer in front of its web servers. It is
//! written to be read: each module below is one idea of load balancing.
//!
//! * [`config`]: the TOML file, every key with a default;
//! * [`upstream`]: the servers behind the balancer and their counters;
//! * [`strategy`]: round-robin, least-conn, ip-hash, sticky;
//! * [`health`]: active checks (fall/rise) and passive ones (max_fails);
//! * [`proxy`]: one request's trip: headers, pick, forward, retry, errors;
//! * [`admin`]: the JSON API to look at and change a running balancer;
//! * [`metrics`]: Prometheus counters and histograms;
//! * [`balancer`]: the state all of the above share;
//! * [`worker`]: what each proxy thread keeps to itself;
//! * [`sharded`]: counters split per worker, so workers never share a write;
//! * [`pool`]: keep-alive connections to the servers;
//! * [`http1`]: the HTTP/1.1 spoken to the servers, by hand;
//! * [`server`]: listening, and stopping without cutting requests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = lab_balancer::config::Config::parse(r#"
//!     listen = "127.0.0.1:8080"
//!     admin_listen = "127.0.0.1:9000"
//!     [[upstream]]
//!     name = "server-1"
//!     address = "127.0.0.1:8001"
//! "#)?;
//! let running = lab_balancer::server::start(config).await?;
//! running.shutdown();
//! running.wait().await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod balancer;
pub mod config;
pub mod health;
pub mod http1;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod sharded;
pub mod strategy;
pub mod upstream;
pub mod worker;

pub use balancer::Balancer;
pub use config::Config;
pub use server::{start, Running, ServeError};
