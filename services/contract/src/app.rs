//! The web app's side of the contract: the environment `lab` starts it
//! with, and the JSON it answers.
//!
//! A container gets its settings the twelve-factor way, through its
//! environment. `lab up` builds an [`AppEnv`] for each `server-N` and turns
//! it into variables with [`AppEnv::to_env`]; the app reads the same names
//! (the constants in [`env`]) back. The load driver reads the app's answers
//! through the body types below, the ones the app writes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::knobs::{Reads, Sessions, Toggle};

/// The names of the app's environment variables.
pub mod env {
    /// Who this server is, sent back in `X-Served-By`.
    pub const SERVER_NAME: &str = "SERVER_NAME";
    /// The address to listen on.
    pub const BIND: &str = "BIND";
    /// The port to listen on.
    pub const PORT: &str = "PORT";
    /// memory, redis or jwt.
    pub const SESSION_STORE: &str = "SESSION_STORE";
    /// `redis://…`, when sessions or the cache need Redis.
    pub const REDIS_URL: &str = "REDIS_URL";
    /// The primary's `postgres://…` URL.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// The replicas' URLs, comma-separated.
    pub const REPLICA_URLS: &str = "REPLICA_URLS";
    /// on: the primary can move (a failover manager runs); find it by
    /// asking every database node, and follow it without a restart.
    pub const FOLLOW_PRIMARY: &str = "FOLLOW_PRIMARY";
    /// primary or replicas.
    pub const READS: &str = "READS";
    /// on or off: cache-aside for product reads.
    pub const CACHE: &str = "CACHE";
    /// How long a cached product lives, e.g. `30s`.
    pub const CACHE_TTL: &str = "CACHE_TTL";
    /// The deliberate database cost of one product read, in ms.
    pub const PRODUCT_QUERY_MS: &str = "PRODUCT_QUERY_MS";
    /// Signs cookies and JWTs (at least 32 bytes).
    pub const SESSION_SECRET: &str = "SESSION_SECRET";
    /// How long a deposit may wait for the primary, e.g. `5s`.
    pub const WRITE_TIMEOUT: &str = "WRITE_TIMEOUT";
    /// How many `/work` requests burn CPU at once.
    pub const WORK_THREADS: &str = "WORK_THREADS";
    /// The log filter, as `tracing` reads it.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// The memory the page cache sizes itself from, e.g. `64m`; unset: the
    /// container's own memory limit (cgroup), read again every second so a
    /// live `lab resize --memory` is seen.
    pub const PAGE_CACHE_MEMORY: &str = "PAGE_CACHE_MEMORY";
    /// `on`: the container is a whole machine: its entrypoint starts a
    /// PostgreSQL beside the app, sharing the container's CPU and memory
    /// limits (the one-machine layout of lesson 3, `separate-db`).
    pub const LOCAL_DATABASE: &str = "LOCAL_DATABASE";
}

/// The size of one rendered product page (`GET /pages/{id}`), in bytes: what
/// one entry of the app's in-process page cache holds (a page with its
/// pictures inlined).
pub const PAGE_BYTES: usize = 512 * 1024;

/// The page cache takes this share of the memory it is given (1/4): the
/// rest is for the process itself, its connections and the kernel, much as
/// a database is told to take a quarter of a machine's memory for its buffers.
pub const PAGE_CACHE_SHARE: u64 = 4;

/// `GET /page-cache`: what the in-process page cache holds and has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCacheStats {
    /// The memory it sized itself from, in bytes (None: no limit found,
    /// the default size is used).
    pub memory_bytes: Option<u64>,
    /// How many pages it may hold.
    pub capacity_pages: u64,
    /// How many it holds now.
    pub pages: u64,
    /// Page reads answered from memory.
    pub hits: u64,
    /// Page reads that queried the database.
    pub misses: u64,
}

/// Everything `lab` tells one app server.
#[derive(Debug, Clone, PartialEq)]
pub struct AppEnv {
    /// `server-N`.
    pub server_name: String,
    /// The port inside the container.
    pub port: u16,
    /// Where sessions live.
    pub session_store: Sessions,
    /// Redis, when sessions or the cache use it.
    pub redis_url: Option<String>,
    /// The primary.
    pub database_url: String,
    /// The replicas, possibly none.
    pub replica_urls: Vec<String>,
    /// Whether the primary can move to one of the replicas.
    pub follow_primary: Toggle,
    /// Where reads go.
    pub reads: Reads,
    /// Cache-aside for products.
    pub cache: Toggle,
    /// How long a cached product lives.
    pub cache_ttl: Duration,
    /// The cost of one uncached product read, in ms.
    pub product_query_ms: u64,
    /// The shared signing secret.
    pub session_secret: Option<String>,
    /// The log filter.
    pub log: String,
}

impl AppEnv {
    /// The variables, in a stable order.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            (env::SERVER_NAME, self.server_name.clone()),
            (env::PORT, self.port.to_string()),
            (env::SESSION_STORE, self.session_store.to_string()),
            (env::DATABASE_URL, self.database_url.clone()),
            (env::REPLICA_URLS, self.replica_urls.join(",")),
            (env::FOLLOW_PRIMARY, self.follow_primary.to_string()),
            (env::READS, self.reads.to_string()),
            (env::CACHE, self.cache.to_string()),
            (
                env::CACHE_TTL,
                humantime::format_duration(self.cache_ttl).to_string(),
            ),
            (env::PRODUCT_QUERY_MS, self.product_query_ms.to_string()),
            (env::RUST_LOG, self.log.clone()),
        ];
        if let Some(url) = &self.redis_url {
            v.push((env::REDIS_URL, url.clone()));
        }
        if let Some(secret) = &self.session_secret {
            v.push((env::SESSION_SECRET, secret.clone()));
        }
        v
    }
}

/// Where a product answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Redis had it.
    Cache,
    /// PostgreSQL was asked.
    Db,
}

/// `GET /`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Who answered.
    pub server: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Requests it has served.
    pub requests: u64,
}

/// The body of `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The user's name.
    pub user: String,
}

/// The answer of `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedIn {
    /// Who logged in.
    pub user: String,
    /// Which server made the session.
    pub server: String,
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// A product id.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
}

/// The answer of `GET /me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// Who is logged in.
    pub user: String,
    /// Their cart.
    pub cart: Vec<CartLine>,
    /// Which server answered.
    pub server: String,
}

/// The body of `POST /cart/items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddItem {
    /// A product id.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
}

/// A product page's second query: where the product ranks among the best
/// sellers (`$1` the product). Ranking one product needs every product's
/// total, so PostgreSQL reads and sums every order line each time: the real,
/// measurable cost of an uncached product page (the app's migrations seed
/// the lines). The app runs it; lesson 13 times it in the database, to know
/// what a page's real work costs this machine (a faster core does it in
/// less time).
pub const SALES_RANK_SQL: &str = "SELECT rank, sold FROM ( \
         SELECT product_id, sum(quantity)::bigint AS sold, \
                rank() OVER (ORDER BY sum(quantity) DESC) AS rank \
         FROM order_lines GROUP BY product_id \
     ) AS ranked WHERE product_id = $1";

/// At most this many different products in a cart: a JWT cookie must stay
/// well under the browsers' 4 KB cookie limit. Past it, `POST /cart/items`
/// answers 409.
pub const MAX_CART_LINES: usize = 50;

/// The answer of `POST /cart/items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// The whole cart after the change.
    pub cart: Vec<CartLine>,
}

/// The answer of `GET /products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price_cents: i64,
    /// Its place among the best sellers (1 sold the most), worked out from
    /// every order line: the costly part of an uncached page. None if it
    /// never sold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_rank: Option<i64>,
    /// Units sold, every order together.
    #[serde(default)]
    pub units_sold: i64,
    /// Cache or database.
    pub source: Source,
    /// Which server answered.
    pub server: String,
}

/// The body of `POST /accounts/{id}/deposit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    /// Cents, at least 1.
    pub amount: i64,
}

/// The answer of a deposit and of `GET /accounts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account.
    pub account: i64,
    /// Its balance in cents, as the database that answered sees it.
    pub balance: i64,
    /// Which database answered.
    pub db: String,
    /// Which server answered.
    pub server: String,
}

/// The body of every error answer: 4xx for the client's mistakes, 503 when
/// a dependency is unavailable (named in `error`), 504 when a write was sent
/// but its outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
    /// The database that answered, when one did (a 404 for an account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// True when a write may or may not have been applied (a 504, or a
    /// connection cut during its commit): retrying may apply it twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}
