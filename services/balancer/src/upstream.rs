//! # Upstreams: the servers behind the balancer
//!
//! nginx calls the group of servers behind a proxy an *upstream*; HAProxy
//! calls it a *backend*. Each [`Upstream`] here is one server with what the
//! balancer knows about it:
//!
//! * its **health** (up or down, decided by [`crate::health`]),
//! * whether an operator is **draining** it (no new requests; the ones in
//!   flight finish, as before a planned restart),
//! * how many requests it is serving right now (**in flight**, which
//!   `least-conn` reads), and counters of requests and failures.
//!
//! The list of servers can be replaced while requests run (`PUT /servers`).
//! Each worker keeps its own copy of the list ([`ServerList`]) and takes a
//! new one when the list's *generation* changes; requests hold a handle into
//! their worker's copy ([`ServerRef`]), so a server removed from the list
//! still finishes what it was doing, and servers that stay keep their health
//! and counters. Handing out those handles and counting requests touches
//! only the worker's own memory (see [`crate::sharded`]): the state shared by
//! all workers is read on every request but written only when something
//! changes. The address is resolved by DNS each time
//! a new connection is opened, so a container that comes back with a new IP
//! address is found again.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use http::uri::Authority;

use crate::config::UpstreamConfig;
use crate::health::HealthState;
use crate::metrics::{Metrics, ServerMetrics};
use crate::sharded;

pub use lab_contract::admin::ServerState;
pub use lab_contract::balancer::{parse_address, AddressError};

/// One server behind the balancer.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    address: String,
    authority: Authority,
    health: Mutex<HealthState>,
    /// Mirror of `health.is_up()`, read on every request without a lock.
    up: AtomicBool,
    draining: AtomicBool,
    in_flight: sharded::Gauge,
    requests: sharded::Counter,
    failures: AtomicU64,
    metrics: OnceLock<ServerMetrics>,
}

impl Upstream {
    /// A new server, up, with zero counters.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Result<Self, AddressError> {
        let address = address.into();
        let authority = parse_address(&address)?;
        Ok(Self {
            name: name.into(),
            address,
            authority,
            health: Mutex::new(HealthState::new()),
            up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: sharded::Gauge::default(),
            requests: sharded::Counter::default(),
            failures: AtomicU64::new(0),
            metrics: OnceLock::new(),
        })
    }

    /// The server's name (`server-1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port` as configured.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address as a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether a new request may be sent here: up and not draining.
    pub fn is_eligible(&self) -> bool {
        self.up.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Whether health checks say up (draining or not).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Up, down or draining.
    pub fn state(&self) -> ServerState {
        if self.draining.load(Ordering::Acquire) {
            ServerState::Draining
        } else if self.is_up() {
            ServerState::Up
        } else {
            ServerState::Down
        }
    }

    /// Starts or stops draining.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Requests sent here since the server was added (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Requests that failed here (refused, reset, timed out, ...).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// This server's request metrics, looked up in `metrics` the first time.
    pub fn metrics(&self, metrics: &Metrics) -> &ServerMetrics {
        self.metrics.get_or_init(|| metrics.server(&self.name))
    }

    /// Counts a failed request.
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Locks the health state to read or update it; call
    /// [`Upstream::sync_health`] after an update.
    pub fn health(&self) -> MutexGuard<'_, HealthState> {
        // A panic while holding this lock cannot leave the state half-written
        // in a way that matters, so a poisoned lock is simply taken over.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the health state's verdict into the lock-free flag.
    pub fn sync_health(&self, state: &HealthState) {
        self.up.store(state.is_up(), Ordering::Release);
    }
}

/// A copy of the server list as it was at one generation, owned by one
/// worker (or made for one admin call or test).
#[derive(Debug)]
pub struct ServerList {
    generation: u64,
    servers: Arc<[Arc<Upstream>]>,
}

impl ServerList {
    /// A list of `servers`, of generation 0 (for tests and tools).
    pub fn new(servers: impl Into<Arc<[Arc<Upstream>]>>) -> Arc<Self> {
        Arc::new(Self {
            generation: 0,
            servers: servers.into(),
        })
    }

    /// The generation of [`UpstreamSet`] this list was copied from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A handle on the server at `index`.
    ///
    /// # Panics
    /// If `index` is out of bounds.
    pub fn get(self: &Arc<Self>, index: usize) -> ServerRef {
        assert!(index < self.servers.len(), "server index out of bounds");
        ServerRef {
            list: self.clone(),
            index,
        }
    }
}

impl Deref for ServerList {
    type Target = [Arc<Upstream>];
    fn deref(&self) -> &Self::Target {
        &self.servers
    }
}

/// A handle on one server of a worker's [`ServerList`]. Cloning it only
/// touches the worker's copy of the list, never memory shared with other
/// workers.
#[derive(Debug, Clone)]
pub struct ServerRef {
    list: Arc<ServerList>,
    index: usize,
}

impl ServerRef {
    /// The server.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.list.servers[self.index]
    }

    /// Counts a request and marks it in flight until the guard is dropped.
    /// `worker` picks the counters' slot (see [`crate::sharded`]).
    pub fn begin_request(&self, worker: usize) -> InFlight {
        let u = self.upstream();
        u.requests.inc(worker);
        u.in_flight.inc(worker);
        InFlight {
            server: self.clone(),
            worker,
        }
    }
}

impl From<Arc<Upstream>> for ServerRef {
    /// A handle on a server outside any list (for tests and tools).
    fn from(upstream: Arc<Upstream>) -> Self {
        ServerList::new(vec![upstream]).get(0)
    }
}

impl Deref for ServerRef {
    type Target = Upstream;
    fn deref(&self) -> &Upstream {
        self.upstream()
    }
}

/// A request in flight on a server; dropping it ends the request (when the
/// response body has been sent, or the attempt failed).
#[derive(Debug)]
pub struct InFlight {
    server: ServerRef,
    worker: usize,
}

impl InFlight {
    /// The server this request went to.
    pub fn server(&self) -> &ServerRef {
        &self.server
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.in_flight.dec(self.worker);
    }
}

/// The current list of servers, replaceable at run time.
#[derive(Debug, Default)]
pub struct UpstreamSet {
    list: RwLock<(u64, Arc<[Arc<Upstream>]>)>,
    /// Bumped by every replacement; workers compare it with their copy's.
    generation: AtomicU64,
}

impl UpstreamSet {
    /// A set holding `servers` (checked with
    /// [`crate::config::validate_upstreams`] first).
    pub fn new(servers: &[UpstreamConfig]) -> Result<Self, AddressError> {
        let set = Self::default();
        set.replace(servers)?;
        Ok(set)
    }

    /// The list as it is now; later changes do not affect the copy.
    pub fn snapshot(&self) -> Arc<[Arc<Upstream>]> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The list's generation now: it changes with every replacement. A
    /// plain read, which workers make on every request.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A copy of the list for one worker, with its generation.
    pub fn list(&self) -> Arc<ServerList> {
        let (generation, servers) = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        Arc::new(ServerList {
            generation,
            servers,
        })
    }

    /// Finds a server by name.
    pub fn find(&self, name: &str) -> Option<Arc<Upstream>> {
        self.snapshot().iter().find(|u| u.name() == name).cloned()
    }

    /// Replaces the list. A server whose name and address both stay keeps its
    /// health, drain flag and counters; a new one starts up with zero
    /// counters. Requests in flight on removed servers finish normally.
    pub fn replace(&self, servers: &[UpstreamConfig]) -> Result<(), AddressError> {
        let mut guard = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(servers.len());
        for s in servers {
            let kept = guard
                .1
                .iter()
                .find(|u| u.name() == s.name && u.address() == s.address)
                .cloned();
            next.push(match kept {
                Some(u) => u,
                None => Arc::new(Upstream::new(&s.name, &s.address)?),
            });
        }
        let generation = guard.0 + 1;
        *guard = (generation, next.into());
        self.generation.store(generation, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, address: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            address: address.into(),
        }
    }

    #[test]
    fn addresses_need_a_port() {
        assert!(parse_address("server-1:8000").is_ok());
        assert!(parse_address("127.0.0.1:80").is_ok());
        assert!(parse_address("server-1").is_err());
        assert!(parse_address("http://server-1:80").is_err());
        assert!(parse_address("user@server-1:80").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn replace_keeps_servers_that_stay() {
        let set = UpstreamSet::new(&[cfg("a", "a:1"), cfg("b", "b:1")]).unwrap();
        let a = set.find("a").unwrap();
        let generation = set.generation();
        let guard = ServerRef::from(a.clone()).begin_request(0);
        a.set_draining(true);
        set.replace(&[cfg("a", "a:1"), cfg("c", "c:1")]).unwrap();
        assert_eq!(set.generation(), generation + 1);
        assert_eq!(set.list().generation(), generation + 1);
        let a2 = set.find("a").unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        assert_eq!(a2.requests(), 1);
        assert_eq!(a2.in_flight(), 1);
        assert_eq!(a2.state(), ServerState::Draining);
        assert!(set.find("b").is_none());
        assert_eq!(set.find("c").unwrap().state(), ServerState::Up);
        drop(guard);
        assert_eq!(a2.in_flight(), 0);
    }

    #[test]
    fn a_removed_server_finishes_its_requests() {
        let set = UpstreamSet::new(&[cfg("a", "a:1")]).unwrap();
        let list = set.list();
        let guard = list.get(0).begin_request(3);
        set.replace(&[]).unwrap();
        assert!(set.snapshot().is_empty());
        assert_eq!(guard.server().in_flight(), 1);
        let a = guard.server().upstream().clone();
        drop(guard);
        assert_eq!(a.in_flight(), 0);
    }
}
