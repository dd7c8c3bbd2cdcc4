//! A client for the fault proxy's admin API, reached through its loopback
//! port.
//!
//! Every service but the balancer has our fault proxy in front of its port
//! (see `roles::proxy`). `lab slow` sets a fault on one of its links, `lab
//! status` reads them back, `lab heal` removes them. The bodies are the
//! shared contract's types, the ones the proxy itself uses.

use lab_contract::faultproxy::{ErrorBody, Fault, LinkStatus, LinksResponse};
use thiserror::Error;

#[derive(Error, Debug)]
pub enum ProxyError {
    #[error("the fault proxy of {service} did not answer ({reason}); is it running? see `lab status` and `lab logs {service}`")]
    Unreachable { service: String, reason: String },
    #[error("the fault proxy of {service} refused the fault: {reason}")]
    Refused { service: String, reason: String },
}

/// The admin API of one service's proxy.
pub struct ProxyAdmin {
    service: String,
    base: String,
    http: reqwest::Client,
}

impl ProxyAdmin {
    /// `addr` is the admin port as published on the host, `127.0.0.1:PORT`.
    pub fn new(service: &str, addr: &str) -> ProxyAdmin {
        ProxyAdmin {
            service: service.to_string(),
            base: format!("http://{addr}"),
            http: crate::lb_admin::admin_client(),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ProxyError {
        ProxyError::Unreachable {
            service: self.service.clone(),
            reason: e.to_string(),
        }
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        r: reqwest::Response,
    ) -> Result<T, ProxyError> {
        if r.status().is_success() {
            return r.json().await.map_err(|e| self.unreachable(e));
        }
        let status = r.status();
        let reason = match r.json::<ErrorBody>().await {
            Ok(b) => b.error,
            Err(_) => status.to_string(),
        };
        Err(ProxyError::Refused {
            service: self.service.clone(),
            reason,
        })
    }

    /// Every link and its fault.
    pub async fn links(&self) -> Result<Vec<LinkStatus>, ProxyError> {
        let r = self
            .http
            .get(format!("{}/links", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.answer::<LinksResponse>(r).await?.links)
    }

    /// Sets (replaces) the fault of one link.
    pub async fn set(&self, link: &str, fault: &Fault) -> Result<LinkStatus, ProxyError> {
        let r = self
            .http
            .put(format!("{}/links/{link}/fault", self.base))
            .json(fault)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(r).await
    }

    /// Heals every link.
    pub async fn heal(&self) -> Result<Vec<LinkStatus>, ProxyError> {
        let r = self
            .http
            .delete(format!("{}/faults", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(self.answer::<LinksResponse>(r).await?.links)
    }
}
