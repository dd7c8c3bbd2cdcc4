//! # Serving: worker threads, listening sockets, and a graceful stop
//!
//! [`start`] binds the proxy port and the admin port and starts:
//!
//! * **worker threads** (nginx's `worker_processes`): each runs its own
//!   single-threaded event loop, accepts from the one listening socket
//!   (whichever worker is free takes the next connection), and keeps its own
//!   [state](crate::worker): connections to the servers, a copy of the
//!   server list, its slot in each counter. A request then lives on one
//!   thread from start to end, with no hand-off between threads: this is how
//!   nginx and HAProxy get their speed, and it matters here too;
//! * on the caller's runtime, the admin API and the health-check loop, which
//!   share the servers' state with the workers.
//!
//! Stopping well matters to a load balancer: a deploy or `docker stop` sends
//! SIGTERM, and requests that are half way through must not be cut. So a
//! stop (see [`Running::shutdown`]) first **stops accepting** (the listening
//! sockets are closed: new connections are refused and go to the other
//! balancer, if any), then tells every open connection to finish the request
//! in progress and close (idle keep-alive connections close at once), and
//! waits for them, at most `timeouts.shutdown`. Then the process exits 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::balancer::Balancer;
use crate::config::Config;
use crate::proxy::ClientAddr;
use crate::upstream::AddressError;
use crate::worker::Worker;
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
    /// A worker thread could not start.
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
    /// The admin server failed.
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    /// A task panicked.
    #[error("a balancer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A worker thread stopped without saying so (it panicked).
    #[error("a worker thread died")]
    WorkerDied,
}

/// A started balancer.
#[derive(Debug)]
pub struct Running {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    balancer: Arc<Balancer>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), ServeError>>>,
    workers: Vec<oneshot::Receiver<Result<(), ServeError>>>,
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

    /// Waits until the balancer has stopped (after [`Running::shutdown`]).
    pub async fn wait(self) -> Result<(), ServeError> {
        let mut first_error = None;
        for worker in self.workers {
            let result = worker.await.unwrap_or(Err(ServeError::WorkerDied));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
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

/// The proxy's listening socket (`SO_REUSEADDR`, so a restart does not wait
/// for old connections in TIME_WAIT).
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)?.into_std()
}

/// Binds both ports and starts serving. Must be called inside a tokio
/// runtime, which then runs the admin API and the health checks.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let workers = config.worker_count();
    let bind_err = |addr, what| move |source| ServeError::Bind { addr, what, source };

    // One listening socket, shared by every worker: whichever is free first
    // accepts the next connection (nginx with `accept_mutex off`).
    let first = bind_listener(config.listen).map_err(bind_err(config.listen, "proxy"))?;
    let proxy_addr = first
        .local_addr()
        .map_err(bind_err(config.listen, "proxy"))?;
    let mut listeners = Vec::with_capacity(workers);
    for _ in 1..workers {
        listeners.push(first.try_clone().map_err(bind_err(proxy_addr, "proxy"))?);
    }
    listeners.push(first);
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(bind_err(config.admin_listen, "admin"))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(bind_err(config.admin_listen, "admin"))?;

    let drain_time = config.timeouts.shutdown;
    let balancer = Arc::new(Balancer::new(config)?);
    let shutdown = CancellationToken::new();

    let load: Arc<[AtomicUsize]> = (0..workers).map(|_| AtomicUsize::new(0)).collect();
    let mut done = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let worker = Worker::new(balancer.clone(), i);
        let token = shutdown.clone();
        let load = WorkerLoad {
            all: load.clone(),
            me: i,
        };
        std::thread::Builder::new()
            .name(format!("lb-worker-{i}"))
            .spawn(move || {
                let _ = tx.send(run_worker(listener, worker, token, drain_time, load));
            })
            .map_err(ServeError::Worker)?;
        done.push(rx);
    }

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
        workers,
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
        tasks: vec![admin_task, health_task],
        workers: done,
    })
}

/// Open client connections per worker, so that a worker far ahead of the
/// others lets them accept first (every worker is woken by a new connection
/// on the shared socket, and the first one awake would otherwise take most:
/// nginx spreads them with `EPOLLEXCLUSIVE` and `accept_mutex`).
#[derive(Debug, Clone)]
struct WorkerLoad {
    all: Arc<[AtomicUsize]>,
    me: usize,
}

impl WorkerLoad {
    /// Connections this worker may hold beyond the least busy one's.
    const SLACK: usize = 2;

    fn should_wait(&self) -> bool {
        let mine = self.all[self.me].load(Ordering::Relaxed);
        let least = self
            .all
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        mine > least + Self::SLACK
    }

    /// Counts an accepted connection until the guard is dropped.
    fn open(&self) -> ConnGuard {
        self.all[self.me].fetch_add(1, Ordering::Relaxed);
        ConnGuard(self.clone())
    }
}

struct ConnGuard(WorkerLoad);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.all[self.0.me].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker thread: its own single-threaded runtime and state.
fn run_worker(
    listener: std::net::TcpListener,
    worker: Worker,
    shutdown: CancellationToken,
    drain_time: Duration,
    load: WorkerLoad,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Worker)?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).map_err(|source| ServeError::Bind {
            addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            what: "proxy",
            source,
        })?;
        let sweeper = worker.pool().clone();
        tokio::spawn(async move {
            // close idle connections past their keep-alive time
            let every =
                (sweeper.keepalive() / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                sweeper.evict();
            }
        });
        serve_proxy(listener, Arc::new(worker), shutdown, drain_time, load).await;
        Ok(())
    })
}

async fn serve_proxy(
    listener: TcpListener,
    worker: Arc<Worker>,
    shutdown: CancellationToken,
    drain_time: Duration,
    load: WorkerLoad,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        // A worker well ahead of another waits a little (at most 5 ms, in
        // case the other is stuck) so the other accepts the next connection.
        for _ in 0..5 {
            if !load.should_wait() || shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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
        let open = load.open();
        let worker = worker.clone();
        let client = Arc::new(ClientAddr::new(peer));
        let service = service_fn(move |req| {
            let worker = worker.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(proxy::handle(&worker, req, &client).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    tracing::debug!("worker stopped accepting; draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("worker drained"),
        _ = tokio::time::sleep(drain_time) => tracing::warn!(
            "connections still open after {}; closing them",
            humantime::format_duration(drain_time)
        ),
    }
}
