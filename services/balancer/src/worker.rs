//! # A worker: what one proxy thread keeps to itself
//!
//! Like an nginx worker process, each worker thread (see [`crate::server`])
//! serves a request from start to end on its own: its own event loop, its
//! own [pool](crate::pool) of connections to the servers, its own copy of
//! the server list, and its own slot in every counter
//! ([`crate::sharded`]). What all workers share, the [`Balancer`] (settings,
//! each server's health, the list's generation), they read on every request
//! but write only when something changes: a health check flips a server, an
//! operator edits the list.
//!
//! Why bother: a core that writes memory another core wrote a moment ago
//! must first fetch it from that core. With shared counters and a shared
//! list, a second worker cost this balancer 1.3 µs of CPU per request
//! against nginx's 0.4 µs (bench/README.md).

use std::sync::{Arc, Mutex};

use crate::balancer::{Balancer, UpstreamClient};
use crate::upstream::ServerList;

/// One worker's own state.
#[derive(Debug)]
pub struct Worker {
    id: usize,
    lb: Arc<Balancer>,
    pool: UpstreamClient,
    servers: Mutex<Arc<ServerList>>,
}

impl Worker {
    /// Worker number `id` (from 0) of balancer `lb`, with an empty pool.
    pub fn new(lb: Arc<Balancer>, id: usize) -> Self {
        let pool = lb.new_client();
        let servers = Mutex::new(lb.upstreams().list());
        Self {
            id,
            lb,
            pool,
            servers,
        }
    }

    /// The worker's number: its slot in sharded counters.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The shared state.
    pub fn balancer(&self) -> &Balancer {
        &self.lb
    }

    /// The worker's keep-alive connections to the servers.
    pub fn pool(&self) -> &UpstreamClient {
        &self.pool
    }

    /// The worker's copy of the server list, renewed first if the list has
    /// changed since it was taken.
    pub fn servers(&self) -> Arc<ServerList> {
        let now = self.lb.upstreams().generation();
        // Only this worker's thread takes this lock: it is never contended.
        let mut mine = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if mine.generation() != now {
            *mine = self.lb.upstreams().list();
        }
        mine.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamConfig};

    #[test]
    fn the_copy_follows_the_shared_list() {
        let config = Config::parse(
            r#"
            [[upstream]]
            name = "a"
            address = "a:1"
            "#,
        )
        .unwrap();
        let lb = Arc::new(Balancer::new(config).unwrap());
        let worker = Worker::new(lb.clone(), 0);
        let first = worker.servers();
        assert_eq!(first.len(), 1);
        assert!(
            Arc::ptr_eq(&first, &worker.servers()),
            "unchanged: same copy"
        );
        lb.upstreams()
            .replace(&[
                UpstreamConfig {
                    name: "a".into(),
                    address: "a:1".into(),
                },
                UpstreamConfig {
                    name: "b".into(),
                    address: "b:1".into(),
                },
            ])
            .unwrap();
        let second = worker.servers();
        assert_eq!(second.len(), 2);
        assert!(
            Arc::ptr_eq(&first[0], &second[0]),
            "a server that stays is kept"
        );
        assert_eq!(first.len(), 1, "the old copy is unchanged");
    }
}
