//! Prometheus metrics: what this server did, counted where it happened.
//!
//! `GET /metrics` answers in the Prometheus/OpenMetrics text format, the same
//! format the balancer uses, so a student can scrape both and compare. Each
//! server keeps its own registry (no process-global state), which is also what
//! lets the tests run two servers in one process and read each one's counters.
//!
//! Requests are labelled by the *route template* (`/products/{id}`), never by
//! the raw path: a label per product id would create a new time series per id,
//! the classic "cardinality explosion".

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::{db::Role, AppState};

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Route template, or `unmatched` for a 404 from the fallback.
    pub route: String,
    /// Status code answered.
    pub status: u16,
}

/// Labels of `http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of `db_queries_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    /// `primary` or `replica`.
    pub target: &'static str,
    /// The database's name (`db-2`).
    pub db: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s: covers a cached read as well as a stuck write.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency, by route.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Database operations made for requests, by target.
    pub db_queries: Family<DbLabels, Counter>,
    /// Product reads answered from Redis.
    pub cache_hits: Counter,
    /// Product reads that had to go to the database.
    pub cache_misses: Counter,
    /// Product reads that found the cache unavailable and went to the database.
    pub cache_errors: Counter,
    /// Sessions created by a successful login.
    pub sessions_created: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let db_queries = Family::<DbLabels, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let cache_errors = Counter::default();
        let sessions_created = Counter::default();
        // The text encoder adds `_total` to counters by itself.
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route template",
            latency.clone(),
        );
        registry.register(
            "db_queries",
            "Database queries made for requests (a product page makes two, its row and its sales rank; a deposit transaction counts once), by target",
            db_queries.clone(),
        );
        registry.register(
            "cache_hits",
            "Product reads answered from the Redis cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Product reads that missed the cache and queried the database",
            cache_misses.clone(),
        );
        registry.register(
            "cache_errors",
            "Product reads that found Redis unavailable and queried the database instead",
            cache_errors.clone(),
        );
        registry.register(
            "sessions_created",
            "Sessions created by a successful login",
            sessions_created.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            db_queries,
            cache_hits,
            cache_misses,
            cache_errors,
            sessions_created,
        }
    }

    /// Counts one database operation.
    pub fn db_query(&self, role: Role, db: &str) {
        self.db_queries_series(role, db).inc();
    }

    /// The `db_queries_total` series of one database (created at 0).
    pub fn db_queries_series(&self, role: Role, db: &str) -> Counter {
        let target = match role {
            Role::Primary => "primary",
            Role::Replica => "replica",
        };
        self.db_queries
            .get_or_create(&DbLabels {
                target,
                db: db.to_owned(),
            })
            .clone()
    }

    /// The whole registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in
        // the encoder, and an empty page is a better answer than a panic.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "could not encode metrics");
        }
        out
    }
}

/// Middleware around every route: counts the request for `GET /`, then
/// records its status and latency once answered.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.count_request();
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let metrics = state.metrics();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The content type Prometheus expects for this text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
