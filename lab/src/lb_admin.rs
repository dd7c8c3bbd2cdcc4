//! A client for the balancer's admin API, reached through its loopback port.
//!
//! The balancer is the one service whose settings change without a restart:
//! its server list, strategy and retries. `lab` reads its view of every
//! server (up, down, draining, requests) for `lab status` and changes it live
//! when servers come and go.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{LabError, Result};

use lab_contract::admin::{PatchSettings, PutServers};
/// The balancer's view, in the types it answers with.
pub use lab_contract::admin::{ServerState, ServerView, ServersView as BalancerView};
pub use lab_contract::balancer::UpstreamConfig;
use lab_contract::knobs::Strategy;

/// What the orchestrator asks of a balancer. The HTTP client below is the
/// real one; tests plug in a recording fake.
#[async_trait]
pub trait LbControl: Send + Sync {
    async fn view(&self) -> Result<BalancerView>;
    async fn set_servers(&self, servers: &[UpstreamConfig]) -> Result<()>;
    async fn set_settings(&self, strategy: Strategy, retries: bool) -> Result<()>;
    async fn drain(&self, name: &str) -> Result<()>;
    async fn undrain(&self, name: &str) -> Result<()>;

    /// Wait until a server has nothing in flight, for at most `limit`;
    /// says how it ended, so a caller cannot mistake a timeout for a drain.
    async fn wait_drained(&self, name: &str, limit: Duration) -> Result<Drained> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.view().await?;
            let in_flight = match v.servers.iter().find(|s| s.name == name) {
                Some(s) if s.in_flight > 0 => s.in_flight,
                _ => return Ok(Drained::Empty),
            };
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(server = name, in_flight, "drain timed out");
                return Ok(Drained::TimedOut { in_flight });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How waiting for a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Nothing was in flight any more.
    Empty,
    /// The time ran out with requests still in flight; they will be cut.
    TimedOut { in_flight: u64 },
}

impl Drained {
    /// Requests that will be cut.
    pub fn cut(self) -> u64 {
        match self {
            Drained::Empty => 0,
            Drained::TimedOut { in_flight } => in_flight,
        }
    }
}

/// Makes a balancer client from the admin API's published address.
pub type LbConnector = Arc<dyn Fn(&str) -> Box<dyn LbControl> + Send + Sync>;

/// The real connector: HTTP to 127.0.0.1:PORT.
pub fn http_connector() -> LbConnector {
    Arc::new(|addr: &str| Box::new(LbAdmin::new(addr)) as Box<dyn LbControl>)
}

/// The HTTP client of every admin API the CLI calls on loopback: short
/// timeouts, and never through an HTTP proxy of the user's environment.
pub(crate) fn admin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

pub struct LbAdmin {
    base: String,
    http: reqwest::Client,
}

impl LbAdmin {
    /// `addr` is the admin port as published on the host, `127.0.0.1:PORT`.
    pub fn new(addr: &str) -> LbAdmin {
        LbAdmin {
            base: format!("http://{addr}"),
            http: admin_client(),
        }
    }
}

#[async_trait]
impl LbControl for LbAdmin {
    async fn view(&self) -> Result<BalancerView> {
        let r = self
            .http
            .get(format!("{}/servers", self.base))
            .send()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))?;
        check(r)
            .await?
            .json()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))
    }

    async fn set_servers(&self, servers: &[UpstreamConfig]) -> Result<()> {
        let body = PutServers {
            servers: servers.to_vec(),
        };
        let r = self
            .http
            .put(format!("{}/servers", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))?;
        check(r).await.map(|_| ())
    }

    async fn set_settings(&self, strategy: Strategy, retries: bool) -> Result<()> {
        let r = self
            .http
            .patch(format!("{}/settings", self.base))
            .json(&PatchSettings {
                strategy: Some(strategy),
                retries: Some(retries),
            })
            .send()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))?;
        check(r).await.map(|_| ())
    }

    /// Stop sending new requests to a server; those in flight finish.
    async fn drain(&self, name: &str) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/servers/{name}/drain", self.base))
            .send()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))?;
        check(r).await.map(|_| ())
    }

    async fn undrain(&self, name: &str) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/servers/{name}/undrain", self.base))
            .send()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))?;
        check(r).await.map(|_| ())
    }
}

/// One client for every running balancer: with an HA pair, every live
/// change (servers, strategy, retries, a drain) must reach both, or the
/// backup would take over with yesterday's view of the site. None when no
/// balancer runs; the one client itself when there is one.
pub fn fanout(addrs: Vec<String>, connect: &LbConnector) -> Option<Box<dyn LbControl>> {
    let mut nodes: Vec<Box<dyn LbControl>> = addrs.iter().map(|a| connect(a)).collect();
    match nodes.len() {
        0 => None,
        1 => nodes.pop(),
        _ => Some(Box::new(Fanout { nodes })),
    }
}

/// See [`fanout`].
struct Fanout {
    nodes: Vec<Box<dyn LbControl>>,
}

impl Fanout {
    /// A change succeeds when it reached every balancer that answers; one
    /// that does not answer (crashed, paused) reads its file when it starts
    /// again, and `up` rewrites that file on both.
    fn settle(results: Vec<Result<()>>) -> Result<()> {
        let total = results.len();
        let mut errors: Vec<LabError> = results.into_iter().filter_map(|r| r.err()).collect();
        if errors.len() == total {
            return Err(errors.remove(0));
        }
        for e in errors {
            tracing::warn!("one balancer of the pair missed a live change: {e}");
        }
        Ok(())
    }
}

#[async_trait]
impl LbControl for Fanout {
    /// The first balancer that answers: both hold the same settings.
    async fn view(&self) -> Result<BalancerView> {
        let mut last = None;
        for n in &self.nodes {
            match n.view().await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LabError::Admin("no balancer".into())))
    }

    async fn set_servers(&self, servers: &[UpstreamConfig]) -> Result<()> {
        let r = futures::future::join_all(self.nodes.iter().map(|n| n.set_servers(servers))).await;
        Self::settle(r)
    }

    async fn set_settings(&self, strategy: Strategy, retries: bool) -> Result<()> {
        let r =
            futures::future::join_all(self.nodes.iter().map(|n| n.set_settings(strategy, retries)))
                .await;
        Self::settle(r)
    }

    async fn drain(&self, name: &str) -> Result<()> {
        let r = futures::future::join_all(self.nodes.iter().map(|n| n.drain(name))).await;
        Self::settle(r)
    }

    async fn undrain(&self, name: &str) -> Result<()> {
        let r = futures::future::join_all(self.nodes.iter().map(|n| n.undrain(name))).await;
        Self::settle(r)
    }

    /// Drained when every balancer that answers has nothing in flight to it.
    async fn wait_drained(&self, name: &str, limit: Duration) -> Result<Drained> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut cut = 0;
        for n in &self.nodes {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match n.wait_drained(name, left).await {
                Ok(d) => cut += d.cut(),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(if cut == 0 {
            Drained::Empty
        } else {
            Drained::TimedOut { in_flight: cut }
        })
    }
}

async fn check(r: reqwest::Response) -> Result<reqwest::Response> {
    if r.status().is_success() {
        Ok(r)
    } else {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(LabError::Admin(format!("{status}: {}", body.trim())))
    }
}

/// A balancer that lives in memory, for tests of the orchestration; not
/// part of the shipped API (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub use fake::FakeLb;

#[cfg(any(test, feature = "testing"))]
mod fake {
    use super::*;

    /// A balancer that lives in memory, for tests of the orchestration.
    #[derive(Clone, Default)]
    pub struct FakeLb {
        pub state: Arc<std::sync::Mutex<Option<BalancerView>>>,
        pub calls: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl FakeLb {
        pub fn connector(&self) -> LbConnector {
            let me = self.clone();
            Arc::new(move |_addr: &str| Box::new(me.clone()) as Box<dyn LbControl>)
        }

        fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
            m.lock().unwrap_or_else(|p| p.into_inner())
        }

        pub fn calls(&self) -> Vec<String> {
            Self::lock(&self.calls).clone()
        }
    }

    #[async_trait]
    impl LbControl for FakeLb {
        async fn view(&self) -> Result<BalancerView> {
            Self::lock(&self.state)
                .clone()
                .ok_or_else(|| LabError::Admin("connection refused".into()))
        }

        async fn set_servers(&self, servers: &[UpstreamConfig]) -> Result<()> {
            Self::lock(&self.calls).push(format!("servers {}", servers.len()));
            if let Some(v) = Self::lock(&self.state).as_mut() {
                v.servers = servers
                    .iter()
                    .map(|u| ServerView {
                        name: u.name.clone(),
                        address: u.address.clone(),
                        state: ServerState::Up,
                        in_flight: 0,
                        requests: 0,
                        failures: 0,
                        last_check: None,
                        last_check_ok: None,
                        reason: None,
                    })
                    .collect();
            }
            Ok(())
        }

        async fn set_settings(&self, strategy: Strategy, retries: bool) -> Result<()> {
            Self::lock(&self.calls).push(format!("settings {strategy} {retries}"));
            if let Some(v) = Self::lock(&self.state).as_mut() {
                v.strategy = strategy;
                v.retries = retries;
            }
            Ok(())
        }

        async fn drain(&self, name: &str) -> Result<()> {
            Self::lock(&self.calls).push(format!("drain {name}"));
            Ok(())
        }

        async fn undrain(&self, name: &str) -> Result<()> {
            Self::lock(&self.calls).push(format!("undrain {name}"));
            Ok(())
        }
    }

    #[cfg(test)]
    #[tokio::test]
    async fn a_pair_gets_every_change_and_survives_one_silent_node() {
        let a = FakeLb::default();
        let b = FakeLb::default();
        *a.state.lock().unwrap() = Some(BalancerView {
            strategy: Strategy::RoundRobin,
            retries: false,
            servers: Vec::new(),
        });
        *b.state.lock().unwrap() = a.state.lock().unwrap().clone();
        let (ca, cb) = (a.connector(), b.connector());
        let connect: LbConnector = Arc::new(
            move |addr: &str| {
                if addr == "a" {
                    ca(addr)
                } else {
                    cb(addr)
                }
            },
        );
        let pair = fanout(vec!["a".into(), "b".into()], &connect).unwrap();
        pair.set_settings(Strategy::LeastConn, true).await.unwrap();
        pair.drain("server-1").await.unwrap();
        for lb in [&a, &b] {
            assert_eq!(lb.calls(), ["settings least-conn true", "drain server-1"]);
        }
        // b is down: the change still reaches a, and the view comes from a.
        *b.state.lock().unwrap() = None;
        pair.set_servers(&[]).await.unwrap();
        assert!(pair.view().await.unwrap().retries);
        assert!(fanout(Vec::new(), &connect).is_none());
    }
}
