//! Redis: the shared session store and the product cache.
//!
//! One [`fred`](tower_sessions_redis_store::fred) client serves both uses. It
//! multiplexes every request over one connection and, when Redis goes away,
//! reconnects by itself with exponential backoff (100 ms doubling to 2 s,
//! forever). Meanwhile each command gives up after [`COMMAND_TIMEOUT`], so a
//! dead Redis costs a request at most that long and answers
//! `503 {"error": "redis is unavailable: ..."}` instead of hanging.
//!
//! The product cache is *cache-aside*: the app asks Redis first; on a miss it
//! queries PostgreSQL and stores the answer with a TTL. Redis never talks to
//! PostgreSQL itself, and a stale entry lives at most `CACHE_TTL`.
//!
//! The two uses fail differently. Sessions live only in Redis, so without it
//! a logged-in user cannot be recognised: a 503. The cache only holds copies
//! of what the database has, so without it a product read goes to the
//! database, slower but right: losing a cache must not take the site down
//! with it. A cache command waits at most [`CACHE_TIMEOUT`], and after one
//! fails the cache is skipped for [`CACHE_PAUSE`] (a small circuit breaker),
//! so a dead Redis costs one read in a while half a second, not every read
//! the command timeout.

use std::time::Duration;

use tower_sessions_redis_store::fred::{
    self,
    prelude::{ClientLike, KeysInterface},
    types::{config::ReconnectPolicy, Builder, Expiration},
};

use crate::{db::Product, error::AppError};

/// How long one Redis command may take, queueing during a reconnect included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a cache command may take before the read goes to the database.
pub const CACHE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the cache is left alone after a command failed.
pub const CACHE_PAUSE: Duration = Duration::from_secs(1);

/// The dependency name used in errors and in `/readyz`.
pub const NAME: &str = "redis";

/// A reconnecting Redis client.
#[derive(Clone)]
pub struct Redis {
    client: fred::clients::Client,
    /// Until when the cache is skipped, after a failed command.
    cache_paused_until: std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// Builds the client and starts connecting in the background. Never
    /// waits for Redis: the server must start (and answer `/healthz`) even
    /// when Redis is not up yet. Must be called inside a tokio runtime.
    pub fn connect(url: &str) -> Result<Self, AppError> {
        let mut config = fred::prelude::Config::from_url(url)
            .map_err(|e| AppError::Internal(format!("REDIS_URL: {e}")))?;
        // Without this, a Redis that is down at start-up would be a fatal
        // error instead of something to retry.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(|e| AppError::Internal(format!("REDIS_URL: {e}")))?;
        // The handle resolves only when the client shuts down; the
        // reconnect loop runs inside it.
        let _connection_task = client.connect();
        Ok(Self {
            client,
            cache_paused_until: Default::default(),
        })
    }

    /// The underlying client, shared with the session store.
    pub fn client(&self) -> &fred::clients::Client {
        &self.client
    }

    /// `PING`, for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        let reply = tokio::time::timeout(
            COMMAND_TIMEOUT + Duration::from_millis(500),
            self.client.ping::<String>(None),
        )
        .await;
        match reply {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(crate::db::short(&err)),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// Runs one cache command within [`CACHE_TIMEOUT`], unless the cache is
    /// paused after a recent failure; a failure pauses it.
    async fn cache_command<T>(
        &self,
        command: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, AppError> {
        let paused = self
            .pause_lock()
            .is_some_and(|until| tokio::time::Instant::now() < until);
        if paused {
            return Err(unavailable("skipped after a recent failure"));
        }
        let outcome = match tokio::time::timeout(CACHE_TIMEOUT, command).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(err)) => unavailable(err),
            Err(_) => unavailable("no answer in time"),
        };
        *self.pause_lock() = Some(tokio::time::Instant::now() + CACHE_PAUSE);
        Err(outcome)
    }

    fn pause_lock(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.cache_paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cached product, if any.
    pub async fn cached_product(&self, id: i64) -> Result<Option<Product>, AppError> {
        let raw: Option<String> = self.cache_command(self.client.get(key(id))).await?;
        // An entry we cannot decode (written by another version, say) is a
        // miss, not an error: the database has the truth.
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Stores a product for `ttl`.
    pub async fn cache_product(&self, product: &Product, ttl: Duration) -> Result<(), AppError> {
        let value =
            serde_json::to_string(product).map_err(|e| AppError::Internal(e.to_string()))?;
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self.cache_command(self.client.set::<(), _, _>(
            key(product.id),
            value,
            Some(Expiration::PX(ms)),
            None,
            false,
        ))
        .await
    }
}

fn key(id: i64) -> String {
    format!("product:{id}")
}

/// A Redis failure, as the client sees it.
pub fn unavailable(err: impl std::fmt::Display) -> AppError {
    AppError::unavailable(NAME, crate::db::short(&err))
}
