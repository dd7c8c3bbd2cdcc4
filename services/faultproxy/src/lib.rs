//! # lab-faultproxy: network faults without the kernel's help
//!
//! Real networks are slow, thin, flaky and sometimes simply dead, and a lab
//! that teaches scaling has to show what that does to an app. Linux can do
//! it to packets (`tc qdisc ... netem`), but the `sch_netem` module is
//! missing on many kernels a student runs Docker on: Docker Desktop's VM on
//! Apple silicon, Hyper-V's and WSL2's, minikube's, many CI runners. So the
//! lab does it to bytes instead, in user space: each service's port is
//! fronted, inside the service's own container, by this proxy. The service
//! listens on an internal port; the proxy listens on the service's port and
//! copies bytes both ways, slowing them, throttling them, holding them or
//! cutting the connection when told to. It needs no capability, no kernel
//! module and no extra container.
//!
//! One process serves several *links* (`NAME=LISTEN->UPSTREAM`), each with
//! its own fault, set and healed live through the admin HTTP API
//! ([`admin`]). The parts: [`link`] (a port, its upstream, its fault),
//! [`fast`] (copying a connection both ways while there is no fault),
//! [`pump`] (copying one direction of one connection through the fault),
//! [`fault`] (a fault made ready for the pumps), [`local`] (the same links
//! run inside a service of ours, which saves its port the second hop).
//!
//! What it cannot do, netem can: lose or reorder individual packets. TCP
//! over a lossy link shows up here as latency (the retransmissions), which
//! is what an application sees of it.

pub mod admin;
pub mod fast;
pub mod fault;
pub mod link;
pub mod local;
pub mod pump;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use link::Link;
pub use local::{LocalListener, LocalStream};

/// One link as given on the command line: `NAME=LISTEN->UPSTREAM`, for
/// example `clients=0.0.0.0:5432->127.0.0.1:15432` or
/// `wal=127.0.0.1:5499->db-1:5432`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub name: String,
    /// An IP address and port (`:0` picks a free port).
    pub listen: SocketAddr,
    /// `HOST:PORT`; a DNS name is resolved for every new connection.
    pub upstream: String,
}

/// Why a link spec cannot be read; the message shows the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkSpecError {
    #[error(
        "link {0:?} is not NAME=LISTEN->UPSTREAM (e.g. clients=0.0.0.0:5432->127.0.0.1:15432)"
    )]
    Shape(String),
    #[error("link name {0:?} must be letters, digits, '-' or '_' (it is part of the admin URL)")]
    Name(String),
    #[error("listen address {0:?} is not IP:PORT (e.g. 0.0.0.0:5432)")]
    Listen(String),
    #[error("upstream {0:?} is not HOST:PORT (e.g. 127.0.0.1:15432 or db-1:5432)")]
    Upstream(String),
}

impl FromStr for LinkSpec {
    type Err = LinkSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| LinkSpecError::Shape(s.to_string()))?;
        let (listen, upstream) = rest
            .split_once("->")
            .ok_or_else(|| LinkSpecError::Shape(s.to_string()))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(LinkSpecError::Name(name.to_string()));
        }
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| LinkSpecError::Listen(listen.to_string()))?;
        let port_ok = upstream.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(LinkSpecError::Upstream(upstream.to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            listen,
            upstream: upstream.to_string(),
        })
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}->{}", self.name, self.listen, self.upstream)
    }
}

/// Everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub links: Vec<LinkSpec>,
    pub admin: SocketAddr,
    /// How long dialling an upstream may take before the client is reset.
    pub connect_timeout: Duration,
    /// The link, if any, whose connections the caller serves itself, in
    /// this process ([`local`]): they come out of [`Running::local`]
    /// instead of being dialled through to the link's upstream.
    pub in_process: Option<String>,
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no link given: add --link NAME=LISTEN->UPSTREAM")]
    NoLinks,
    #[error("two links are named {0:?}: each link needs its own name")]
    DuplicateName(String),
    #[error("no link is named {0:?}, so it cannot be served in process")]
    NoInProcessLink(String),
    #[error(
        "cannot listen on {addr} for link {link:?}: {source} (is another program on that port?)"
    )]
    Listen {
        link: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(
        "cannot listen on {addr} for the admin API: {source} (is another program on that port?)"
    )]
    Admin { addr: SocketAddr, source: io::Error },
}

/// A started proxy: its links (with their bound addresses) and tasks.
pub struct Running {
    pub links: Vec<Arc<Link>>,
    pub admin: SocketAddr,
    /// The in-process link's connections (see [`Config::in_process`]), for
    /// the caller to take and serve.
    pub local: Option<LocalListener>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The link called `name`.
    pub fn link(&self, name: &str) -> Option<&Arc<Link>> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Stops accepting and serving the admin API. Open connections end
    /// with the runtime.
    pub fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds every link and the admin port, then serves them on the current
/// tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    if config.links.is_empty() {
        return Err(StartError::NoLinks);
    }
    if let Some(name) = &config.in_process {
        if !config.links.iter().any(|l| &l.name == name) {
            return Err(StartError::NoInProcessLink(name.clone()));
        }
    }
    let mut links = Vec::new();
    let mut listeners = Vec::new();
    let mut local = None;
    for spec in &config.links {
        if links.iter().any(|l: &Arc<Link>| l.name == spec.name) {
            return Err(StartError::DuplicateName(spec.name.clone()));
        }
        let (to_service, accepted) = if config.in_process.as_ref() == Some(&spec.name) {
            let (tx, rx) = tokio::sync::mpsc::channel(local::QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (link, listener) =
            Link::bind(spec, config.connect_timeout, to_service).map_err(|source| {
                StartError::Listen {
                    link: spec.name.clone(),
                    addr: spec.listen,
                    source,
                }
            })?;
        if let Some(rx) = accepted {
            local = Some(LocalListener::new(rx, link.listen));
        }
        links.push(link);
        listeners.push(listener);
    }
    let admin_listener =
        TcpListener::bind(config.admin)
            .await
            .map_err(|source| StartError::Admin {
                addr: config.admin,
                source,
            })?;
    let admin = admin_listener
        .local_addr()
        .map_err(|source| StartError::Admin {
            addr: config.admin,
            source,
        })?;

    let mut tasks = Vec::new();
    for (link, listener) in links.iter().zip(listeners) {
        tracing::info!(link = %link.name, listen = %link.listen, upstream = %link.upstream, "link ready");
        tasks.push(tokio::spawn(Arc::clone(link).serve(listener)));
    }
    let app = admin::router(Arc::new(links.clone()));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, app).await {
            tracing::error!(error = %e, "the admin API stopped");
        }
    }));
    tracing::info!(%admin, "admin API ready");
    Ok(Running {
        links,
        admin,
        local,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `lab up` writes into FAULTPROXY_LINKS is what the proxy reads.
    #[test]
    fn the_links_lab_writes_read_back() {
        let text = lab_contract::faultproxy::link("wal", "127.0.0.1:5499", "db-1:5432");
        let spec: LinkSpec = text.parse().unwrap();
        assert_eq!(spec.name, "wal");
        assert_eq!(spec.listen, "127.0.0.1:5499".parse().unwrap());
        assert_eq!(spec.upstream, "db-1:5432");
    }

    #[test]
    fn link_spec_reads_the_documented_forms() {
        let l: LinkSpec = "clients=0.0.0.0:5432->127.0.0.1:15432".parse().unwrap();
        assert_eq!(l.name, "clients");
        assert_eq!(l.listen, "0.0.0.0:5432".parse().unwrap());
        assert_eq!(l.upstream, "127.0.0.1:15432");
        let dns: LinkSpec = "wal=127.0.0.1:5499->db-1:5432".parse().unwrap();
        assert_eq!(dns.upstream, "db-1:5432");
        let v6: LinkSpec = "x=[::1]:80->[::1]:8080".parse().unwrap();
        assert_eq!(v6.upstream, "[::1]:8080");
        assert_eq!(dns.to_string(), "wal=127.0.0.1:5499->db-1:5432");
    }

    #[test]
    fn link_spec_refuses_what_it_cannot_use() {
        assert!(matches!(
            "clients".parse::<LinkSpec>(),
            Err(LinkSpecError::Shape(_))
        ));
        assert!(matches!(
            "a b=0.0.0.0:1->h:2".parse::<LinkSpec>(),
            Err(LinkSpecError::Name(_))
        ));
        assert!(matches!(
            "a=localhost:1->h:2".parse::<LinkSpec>(),
            Err(LinkSpecError::Listen(_))
        ));
        assert!(matches!(
            "a=0.0.0.0:1->db-1".parse::<LinkSpec>(),
            Err(LinkSpecError::Upstream(_))
        ));
        assert!(matches!(
            "a=0.0.0.0:1->db-1:0".parse::<LinkSpec>(),
            Err(LinkSpecError::Upstream(_))
        ));
    }
}
