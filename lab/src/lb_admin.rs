//! A client for the balancer's admin API, reached through its loopback port.
//!
//! The balancer is the one service whose settings change without a restart:
//! its server list, strategy and retries. `lab` reads its view of every
//! server (up, down, draining, requests) for `lab status` and changes it live
//! when servers come and go.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// One upstream server as the balancer sees it.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
pub struct ServerView {
    pub name: String,
    #[serde(default)]
    pub address: String,
    pub state: String,
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct BalancerView {
    pub strategy: String,
    pub retries: bool,
    pub servers: Vec<ServerView>,
}

/// What the orchestrator asks of a balancer. The HTTP client below is the
/// real one; tests plug in a recording fake.
#[async_trait]
pub trait LbControl: Send + Sync {
    async fn view(&self) -> Result<BalancerView>;
    async fn set_servers(&self, servers: &[(String, String)]) -> Result<()>;
    async fn set_settings(&self, strategy: &str, retries: bool) -> Result<()>;
    async fn drain(&self, name: &str) -> Result<()>;
    async fn undrain(&self, name: &str) -> Result<()>;

    /// Wait until a server has nothing in flight (bounded).
    async fn wait_drained(&self, name: &str, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let v = self.view().await?;
            match v.servers.iter().find(|s| s.name == name) {
                Some(s) if s.in_flight > 0 => {}
                _ => return Ok(()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// Makes a balancer client from the admin API's published address.
pub type LbConnector = Arc<dyn Fn(&str) -> Box<dyn LbControl> + Send + Sync>;

/// The real connector: HTTP to 127.0.0.1:PORT.
pub fn http_connector() -> LbConnector {
    Arc::new(|addr: &str| Box::new(LbAdmin::new(addr)) as Box<dyn LbControl>)
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
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .no_proxy()
                .build()
                .unwrap_or_default(),
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

    async fn set_servers(&self, servers: &[(String, String)]) -> Result<()> {
        let body = serde_json::json!({
            "servers": servers.iter().map(|(n, a)| serde_json::json!({"name": n, "address": a})).collect::<Vec<_>>()
        });
        let r = self
            .http
            .put(format!("{}/servers", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| LabError::Admin(e.to_string()))?;
        check(r).await.map(|_| ())
    }

    async fn set_settings(&self, strategy: &str, retries: bool) -> Result<()> {
        let r = self
            .http
            .patch(format!("{}/settings", self.base))
            .json(&serde_json::json!({"strategy": strategy, "retries": retries}))
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

async fn check(r: reqwest::Response) -> Result<reqwest::Response> {
    if r.status().is_success() {
        Ok(r)
    } else {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(LabError::Admin(format!("{status}: {}", body.trim())))
    }
}

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

    async fn set_servers(&self, servers: &[(String, String)]) -> Result<()> {
        Self::lock(&self.calls).push(format!("servers {}", servers.len()));
        if let Some(v) = Self::lock(&self.state).as_mut() {
            v.servers = servers
                .iter()
                .map(|(n, a)| ServerView {
                    name: n.clone(),
                    address: a.clone(),
                    state: "up".into(),
                    in_flight: 0,
                    requests: 0,
                    failures: 0,
                    reason: None,
                })
                .collect();
        }
        Ok(())
    }

    async fn set_settings(&self, strategy: &str, retries: bool) -> Result<()> {
        Self::lock(&self.calls).push(format!("settings {strategy} {retries}"));
        if let Some(v) = Self::lock(&self.state).as_mut() {
            v.strategy = strategy.to_string();
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
