//! # Serving: listening sockets, and a graceful stop
//!
//! [`start`] binds the proxy port and the admin port, then runs three tasks:
//! the proxy's accept loop (one task per client connection, HTTP/1.1 with
//! keep-alive), the admin API, and the health-check loop.
//!
//! Stopping well matters to a load balancer: a deploy or `docker stop` sends
//! SIGTERM, and requests that are half way through must not be cut. So a
//! stop (see [`Running::shutdown`]) first **stops accepting** (the listening
//! socket is closed: new connections are refused and go to the other
//! balancer, if any), then tells every open connection to finish the request
//! in progress and close (idle keep-alive connections close at once), and
//! waits for them, at most `timeouts.shutdown`. Then the process exits 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::balancer::Balancer;
use crate::config::Config;
use crate::upstream::AddressError;
use crate::{admin, health, proxy};

/// Why the balancer could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A port could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `proxy` or `admin`.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A server address is invalid.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The admin server failed.
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    /// A task panicked.
    #[error("a balancer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started balancer.
#[derive(Debug)]
pub struct Running {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    balancer: Arc<Balancer>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    /// Where the proxy listens (the real port when 0 was asked for).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared state.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    /// Starts a graceful stop; [`Running::wait`] returns when it is done.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that, once cancelled, stops the balancer.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the balancer has stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        let mut first_error = None;
        for task in self.tasks {
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(ServeError::Task(e)),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Binds both ports and starts serving.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, what, source })
    };
    let proxy_listener = bind(config.listen, "proxy").await?;
    let admin_listener = bind(config.admin_listen, "admin").await?;
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            what: "proxy",
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: config.admin_listen,
            what: "admin",
            source,
        })?;
    let drain_time = config.timeouts.shutdown;
    let balancer = Arc::new(Balancer::new(config)?);
    let shutdown = CancellationToken::new();

    let proxy_task = tokio::spawn(serve_proxy(
        proxy_listener,
        balancer.clone(),
        shutdown.clone(),
        drain_time,
    ));
    let admin_token = shutdown.clone();
    let admin_router = admin::router(balancer.clone());
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(admin_token.cancelled_owned())
            .await
            .map_err(ServeError::Admin)
    });
    let health_task = {
        let lb = balancer.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            health::run(lb, token).await;
            Ok(())
        })
    };
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        strategy = %balancer.strategy(),
        retries = balancer.retries(),
        servers = balancer.upstreams().snapshot().len(),
        "balancer listening"
    );
    Ok(Running {
        proxy_addr,
        admin_addr,
        balancer,
        shutdown,
        tasks: vec![proxy_task, admin_task, health_task],
    })
}

async fn serve_proxy(
    listener: TcpListener,
    lb: Arc<Balancer>,
    shutdown: CancellationToken,
    drain_time: Duration,
) -> Result<(), ServeError> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // e.g. too many open files: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let lb = lb.clone();
        let service = service_fn(move |req| {
            let lb = lb.clone();
            async move { Ok::<_, Infallible>(proxy::handle(lb, req, peer).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain_time) => tracing::warn!(
            "connections still open after {}; closing them",
            humantime::format_duration(drain_time)
        ),
    }
    Ok(())
}
