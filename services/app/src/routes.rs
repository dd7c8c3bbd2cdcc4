//! The HTTP endpoints, one small function each.
//!
//! Handlers check their input first and touch a dependency last, so a bad
//! request is refused with a 4xx before any database or Redis work happens:
//! a client's mistake must never cost a query, nor look like a server fault.

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json,
};
use lab_contract::app::{
    AddItem, Balance, Cart, Deposit, Hello, LoggedIn, Login, Me, Product, Source,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    config::valid_name,
    error::{AppError, AppJson, AppPath, AppQuery},
    metrics,
    sessions::{add_to_cart, SessionCtx},
    AppState,
};

/// Product ids of the seeded catalogue.
pub const PRODUCT_IDS: std::ops::RangeInclusive<i64> = 1..=1000;
/// Cart quantities accepted in one request.
pub const QUANTITY: std::ops::RangeInclusive<i64> = 1..=100;
/// The largest single deposit: 1 billion in cents. Big enough for any
/// scenario, small enough that no single request can overflow on its own.
pub const MAX_DEPOSIT_CENTS: i64 = 100_000_000_000;
/// Accepted `GET /work` durations, in ms.
pub const WORK_MS: std::ops::RangeInclusive<u64> = 1..=5000;

/// `GET /`: who answered, since when, and how busy it has been.
pub async fn root(State(state): State<AppState>) -> Json<Hello> {
    Json(Hello {
        server: state.server_name().to_owned(),
        uptime_s: (state.uptime().as_secs_f64() * 1000.0).round() / 1000.0,
        requests: state.requests_served(),
    })
}

/// `POST /login`: starts a session.
pub async fn login(
    State(state): State<AppState>,
    session: SessionCtx,
    AppJson(body): AppJson<Login>,
) -> Result<Response, AppError> {
    if !valid_name(&body.user) {
        return Err(AppError::bad_request(
            "user must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    let cookie = session.login(body.user.clone()).await?;
    state.metrics().sessions_created.inc();
    tracing::debug!(user = %body.user, "logged in");
    Ok((
        cookie,
        Json(LoggedIn {
            user: body.user,
            server: state.server_name().to_owned(),
        }),
    )
        .into_response())
}

/// `GET /me`: the session, or 401.
pub async fn me(State(state): State<AppState>, session: SessionCtx) -> Result<Json<Me>, AppError> {
    let data = session.current().await?.ok_or(AppError::NotLoggedIn)?;
    Ok(Json(Me {
        user: data.user,
        cart: data.cart,
        server: state.server_name().to_owned(),
    }))
}

/// `POST /logout`: ends the session.
pub async fn logout(session: SessionCtx) -> Result<Response, AppError> {
    let cookie = session.logout().await?;
    Ok((cookie, Json(json!({ "ok": true }))).into_response())
}

/// `POST /cart/items`: adds to the cart of the logged-in user.
pub async fn add_item(
    session: SessionCtx,
    AppJson(item): AppJson<AddItem>,
) -> Result<Response, AppError> {
    if !PRODUCT_IDS.contains(&item.product_id) {
        return Err(AppError::bad_request(format!(
            "product_id must be between {} and {}",
            PRODUCT_IDS.start(),
            PRODUCT_IDS.end()
        )));
    }
    if !QUANTITY.contains(&item.quantity) {
        return Err(AppError::bad_request(format!(
            "quantity must be between {} and {}",
            QUANTITY.start(),
            QUANTITY.end()
        )));
    }
    let mut data = session.current().await?.ok_or(AppError::NotLoggedIn)?;
    add_to_cart(&mut data.cart, item.product_id, item.quantity)?;
    let cart = data.cart.clone();
    let cookie = session.store(data).await?;
    Ok((cookie, Json(Cart { cart })).into_response())
}

/// `GET /products/{id}[?ms=N]`: a product page (its row and its sales
/// rank, two queries), through the cache when `CACHE=on` and Redis answers;
/// `ms` is the server's own work on the page, spent wherever the data came
/// from.
pub async fn product(
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppQuery(query): AppQuery<crate::page_cache::PageQuery>,
) -> Result<Json<Product>, AppError> {
    if id <= 0 {
        return Err(AppError::bad_request(
            "product id must be a positive integer",
        ));
    }
    if let Some(ms) = query.ms {
        burn(&state, ms).await?;
    }
    let answer = |p: crate::db::Product, source: Source| {
        Json(Product {
            id: p.id,
            name: p.name,
            price_cents: p.price_cents,
            sales_rank: p.sales_rank,
            units_sold: p.units_sold,
            source,
            server: state.server_name().to_owned(),
        })
    };
    let cache = state.cache();
    if let Some((redis, _)) = cache {
        match redis.cached_product(id).await {
            Ok(Some(p)) => {
                state.metrics().cache_hits.inc();
                return Ok(answer(p, Source::Cache));
            }
            Ok(None) => {
                state.metrics().cache_misses.inc();
            }
            // The database has the truth; a cache that is down makes the
            // read slower, never wrong or failed.
            Err(err) => {
                state.metrics().cache_errors.inc();
                tracing::debug!(%err, product = id, "cache unavailable, reading the database");
            }
        }
    }
    let p = state
        .db()
        .product(id, state.metrics())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no such product: {id}")))?;
    if let Some((redis, ttl)) = cache {
        // The answer is already good; a failed cache fill only means the
        // next read misses again, so it is logged, not returned.
        if let Err(err) = redis.cache_product(&p, ttl).await {
            tracing::warn!(%err, product = id, "could not fill the cache");
        }
    }
    Ok(answer(p, Source::Db))
}

fn account_id(id: i64) -> Result<i64, AppError> {
    if id <= 0 {
        return Err(AppError::bad_request(
            "account id must be a positive integer",
        ));
    }
    Ok(id)
}

/// `POST /accounts/{id}/deposit`: adds money, on the primary.
pub async fn deposit(
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppJson(body): AppJson<Deposit>,
) -> Result<Json<Balance>, AppError> {
    let id = account_id(id)?;
    if body.amount <= 0 || body.amount > MAX_DEPOSIT_CENTS {
        return Err(AppError::bad_request(format!(
            "amount must be a whole number of cents between 1 and {MAX_DEPOSIT_CENTS}"
        )));
    }
    let (balance, db) = state.db().deposit(id, body.amount, state.metrics()).await?;
    Ok(Json(Balance {
        account: id,
        balance,
        db: db.to_owned(),
        server: state.server_name().to_owned(),
    }))
}

/// Query of `GET /accounts/{id}`.
#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    consistency: Option<String>,
}

/// `GET /accounts/{id}`: a balance, from where `READS` says (or the primary).
pub async fn account(
    State(state): State<AppState>,
    AppPath(id): AppPath<i64>,
    AppQuery(query): AppQuery<ReadQuery>,
) -> Result<Json<Balance>, AppError> {
    let id = account_id(id)?;
    let force_primary = match query.consistency.as_deref() {
        None | Some("eventual") => false,
        Some("primary") => true,
        Some(other) => {
            return Err(AppError::bad_request(format!(
                "consistency must be primary or eventual (got {other:?})"
            )))
        }
    };
    let (balance, db) = state
        .db()
        .balance(id, force_primary, state.metrics())
        .await?;
    match balance {
        Some(balance) => Ok(Json(Balance {
            account: id,
            balance,
            db: db.to_owned(),
            server: state.server_name().to_owned(),
        })),
        None => Err(AppError::NoSuchAccount { db: db.to_owned() }),
    }
}

/// Query of `GET /work`.
#[derive(Debug, Deserialize)]
pub struct WorkQuery {
    ms: u64,
}

/// `GET /work?ms=N`: burns N ms of CPU time on one core.
pub async fn work(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<WorkQuery>,
) -> Result<Json<Value>, AppError> {
    burn(&state, query.ms).await?;
    Ok(Json(
        json!({ "ms": query.ms, "server": state.server_name() }),
    ))
}

/// Burns `ms` of this server's CPU for a request (`/work`, and the work a
/// page costs besides its data), `ms` within [`WORK_MS`].
pub async fn burn(state: &AppState, ms: u64) -> Result<(), AppError> {
    if !WORK_MS.contains(&ms) {
        return Err(AppError::bad_request(format!(
            "ms must be between {} and {}",
            WORK_MS.start(),
            WORK_MS.end()
        )));
    }
    // At most WORK_THREADS requests burn at once; the rest queue here. An
    // unbounded number of spinning threads under a small CPU limit would
    // starve the async workers, and with them /healthz: the balancer would
    // call a busy server dead.
    let _turn = state.work_slot().await;
    // A real busy loop, on a blocking thread so the async workers keep
    // serving other requests; a sleep would use no CPU and saturate nothing.
    tokio::task::spawn_blocking(move || burn_cpu(Duration::from_millis(ms)))
        .await
        .map_err(|e| AppError::Internal(format!("work task: {e}")))?;
    Ok(())
}

/// Spins until this thread has used `how_long` of CPU time, doing arithmetic
/// the optimiser can't remove. CPU time, not wall-clock time: under a CPU
/// limit (`lab resize --cpus`) a throttled thread's clock runs on while it
/// waits, so a wall-clock loop would do less work on a smaller server and
/// hide exactly the saturation the sizing lessons measure.
pub fn burn_cpu(how_long: Duration) -> u64 {
    let start = cpu_time::ThreadTime::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while start.elapsed() < how_long {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
    }
    x
}

/// `GET /healthz`: the process is alive. Touches nothing, on purpose: a
/// liveness check that fails when the database is down would make an
/// orchestrator restart perfectly healthy servers.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: can this server do its job? Checks every dependency it is
/// configured with, concurrently, each with a short timeout.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db_checks = futures::future::join_all(
        state
            .db()
            .nodes()
            .map(|node| async move { (node.name.clone(), crate::db::Db::check(node).await) }),
    );
    let redis_check = async {
        match state.redis() {
            Some(redis) => Some(redis.ping().await),
            None => None,
        }
    };
    let (db_results, redis_result) = tokio::join!(db_checks, redis_check);
    let mut checks = Map::new();
    let mut ready = true;
    let results = db_results
        .into_iter()
        .chain(redis_result.map(|r| (crate::redis::NAME.to_owned(), r)));
    for (name, result) in results {
        let value = match result {
            Ok(()) => "ok".to_owned(),
            Err(reason) => {
                ready = false;
                format!("down: {reason}")
            }
        };
        checks.insert(name, Value::String(value));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics().render(),
    )
        .into_response()
}

/// Any path we don't serve.
pub async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// A known path with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::BadRequest {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not allowed on {}", uri.path()),
    }
}
