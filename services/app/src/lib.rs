//! `lab-app`: the web server that runs as `server-1` ... `server-N` in the lab.
//!
//! It is a small but honest web application: login sessions and a cart
//! ([`sessions`]), a product catalogue whose reads cost real database work
//! and can be cached in Redis ([`redis`]), bank accounts whose deposits go to
//! the PostgreSQL primary and whose balances are read from replicas ([`db`]),
//! an endpoint that burns CPU on demand, health checks and metrics
//! ([`metrics`]). Each piece exists to be broken by a lesson: crash a server
//! and watch memory sessions vanish, lag a replica and watch balances go
//! stale, kill Redis and watch the 503s name it.
//!
//! The crate is a library with a thin binary (`main.rs`), so tests can build
//! the whole app with [`app`] and call it without a network.
//!
//! Request path, outside in: `X-Served-By` header (so even errors say who
//! answered), panic guard, body size limit, metrics, session middleware
//! (memory and redis modes), then the handler in [`routes`].

pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod page_cache;
pub mod redis;
pub mod routes;
pub mod sessions;

#[cfg(test)]
mod handler_tests;

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tower_http::{catch_panic::CatchPanicLayer, set_header::SetResponseHeaderLayer};

pub use crate::config::Config;
use crate::{db::Db, error::AppError, metrics::Metrics, redis::Redis, sessions::SessionBackend};

/// The largest request body accepted: every endpoint takes a tiny JSON
/// object, so anything bigger is a mistake or an attack (413).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Everything the handlers share. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    served_by: HeaderValue,
    started: Instant,
    requests: AtomicU64,
    db: Db,
    redis: Option<Redis>,
    sessions: SessionBackend,
    metrics: Metrics,
    /// Turns for `/work`: see `Config::work_threads`.
    work_slots: tokio::sync::Semaphore,
    /// Rendered product pages, as many as the memory allows.
    pages: page_cache::PageCache,
}

impl AppState {
    /// Builds the state from a configuration. Opens no connection and waits
    /// for nothing (the database and Redis may not be up yet); must run
    /// inside a tokio runtime because the Redis client starts connecting in
    /// the background.
    pub fn new(config: Config) -> Result<Self, AppError> {
        let served_by = HeaderValue::from_str(&config.server_name)
            .map_err(|e| AppError::Internal(format!("SERVER_NAME: {e}")))?;
        let redis = match &config.redis_url {
            Some(url) if config.uses_redis() => Some(Redis::connect(url)?),
            _ => None,
        };
        let sessions = SessionBackend::new(
            config.session_store,
            config.session_secret.as_deref(),
            redis.as_ref().map(Redis::client),
        )?;
        let db = Db::new(&config)?;
        let metrics = Metrics::new();
        // Known series start at 0, so a scrape before the first query
        // already shows every database (rates need a starting point).
        for node in db.nodes() {
            metrics.db_queries_series(node.role, &node.name);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                work_slots: tokio::sync::Semaphore::new(config.work_threads),
                served_by,
                started: Instant::now(),
                requests: AtomicU64::new(0),
                db,
                redis,
                sessions,
                metrics,
                pages: page_cache::PageCache::from_env()?,
                config,
            }),
        })
    }

    /// The configuration this state was built from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A turn to burn CPU for `/work`; waiting for one costs no CPU.
    pub async fn work_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.inner.work_slots.acquire().await.ok()
    }

    /// `SERVER_NAME`.
    pub fn server_name(&self) -> &str {
        &self.inner.config.server_name
    }

    /// Time since the state was built (≈ since the process started).
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Requests received so far, the current one included.
    pub fn requests_served(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The databases.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The Redis client, when sessions or the cache use Redis.
    pub fn redis(&self) -> Option<&Redis> {
        self.inner.redis.as_ref()
    }

    /// Redis and the TTL, when `CACHE=on`.
    pub fn cache(&self) -> Option<(&Redis, Duration)> {
        if self.inner.config.cache {
            self.redis().map(|r| (r, self.inner.config.cache_ttl))
        } else {
            None
        }
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionBackend {
        &self.inner.sessions
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The in-process page cache.
    pub fn pages(&self) -> &page_cache::PageCache {
        &self.inner.pages
    }
}

/// The whole HTTP application for `state`.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/", get(routes::root))
        .route("/login", post(routes::login))
        .route("/me", get(routes::me))
        .route("/logout", post(routes::logout))
        .route("/cart/items", post(routes::add_item))
        .route("/products/{id}", get(routes::product))
        .route("/accounts/{id}", get(routes::account))
        .route("/accounts/{id}/deposit", post(routes::deposit))
        .route("/work", get(routes::work))
        .route("/pages/{id}", get(page_cache::page))
        .route("/page-cache", get(page_cache::stats))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state.clone());
    // `Router::layer` wraps each route, after routing: that is what lets the
    // metrics middleware see the matched route template.
    let router = state.sessions().install(router);
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-served-by"),
            state.inner.served_by.clone(),
        ))
}

/// A handler that panicked is a bug; the client still gets JSON, and the
/// connection and the server survive.
fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::Internal("a handler panicked".into()).into_response()
}

/// Serves `state` on `listener`, and on `local` (the fault proxy's link
/// in front of this server, run in this process) when there is one, until
/// `shutdown` resolves; then stops accepting and lets in-flight requests
/// finish. Also runs the database preparation (wait, migrate, calibrate)
/// and, when the primary can move, the search for it, in the background
/// meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    local: Option<lab_faultproxy::LocalListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use futures::FutureExt;
    use std::future::IntoFuture;

    let prepare = {
        let state = state.clone();
        tokio::spawn(async move { state.db().prepare().await })
    };
    // Finds the primary again after a failover (returns at once when the
    // primary cannot move).
    let follow = {
        let state = state.clone();
        tokio::spawn(async move { state.db().follow_primary().await })
    };
    let shutdown = shutdown.shared();
    let direct = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown.clone())
        .into_future();
    let result = match local {
        None => direct.await,
        Some(local) => {
            let proxied = axum::serve(local, app(state))
                .with_graceful_shutdown(shutdown)
                .into_future();
            let (direct, proxied) = tokio::join!(direct, proxied);
            direct.and(proxied)
        }
    };
    prepare.abort();
    follow.abort();
    result
}

/// Resolves on SIGTERM (how Docker stops a container) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; finishing in-flight requests"),
        () = term => tracing::info!("SIGTERM received; finishing in-flight requests"),
    }
}

/// A failure to start or serve, printed by `main` as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// `BIND:PORT`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The state could not be built.
    #[error("{0}")]
    State(#[from] AppError),
    /// The fault proxy in front of this server could not start.
    #[error("the fault proxy cannot start: {0}")]
    FaultProxy(#[from] lab_faultproxy::StartError),
    /// The server stopped with an I/O error.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Starts the server described by `config` and runs it until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), RunError> {
    let addr = format!("{}:{}", config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let mut proxy = match &config.fault_proxy {
        None => None,
        Some(fp) => Some(
            lab_faultproxy::start(lab_faultproxy::Config {
                links: fp.links.clone(),
                admin: fp.admin,
                connect_timeout: std::time::Duration::from_secs(5),
                in_process: fp.own_link.clone(),
            })
            .await?,
        ),
    };
    let local = proxy.as_mut().and_then(|p| p.local.take());
    tracing::info!(
        server = %config.server_name,
        %addr,
        fault_proxy = ?local.as_ref().map(|l| l.local_addr()),
        sessions = config.session_store.as_str(),
        cache = config.cache,
        primary = %config.primary.name,
        replicas = ?config.replicas.iter().map(|r| &r.name).collect::<Vec<_>>(),
        reads = ?config.reads,
        "lab-app listening"
    );
    let state = AppState::new(config)?;
    serve(listener, local, state, shutdown_signal())
        .await
        .map_err(RunError::Serve)?;
    if let Some(proxy) = proxy {
        proxy.shutdown();
    }
    tracing::info!("all in-flight requests finished; bye");
    Ok(())
}
