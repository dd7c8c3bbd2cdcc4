//! # The admin API: looking at and steering a running balancer
//!
//! On its own port (`admin_listen`), never the proxy's, so that clients of
//! the web app cannot reach it. HAProxy's runtime API and nginx Plus's API
//! play the same role. Everything is JSON:
//!
//! | request | does |
//! |---|---|
//! | `GET /servers` | strategy, retries, and every server's state and counters |
//! | `PUT /servers` `{"servers":[{"name","address"}]}` | replaces the list live; servers that stay keep their state; requests in flight finish |
//! | `PATCH /settings` `{"strategy","retries"}` | changes either or both |
//! | `POST /servers/{name}/drain` | no new requests to that server; in-flight ones finish |
//! | `POST /servers/{name}/undrain` | back to normal |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /healthz` | 200 while the balancer runs |
//!
//! Mistakes answer 400 (bad JSON, unknown strategy, bad server list) or 404
//! (unknown server) with `{"error": "..."}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use lab_contract::admin::ErrorBody;
pub use lab_contract::admin::{PatchSettings, PutServers, ServerView, ServersView};

use crate::balancer::{Balancer, Settings};
use crate::config::validate_upstreams;
use crate::upstream::Upstream;

/// An error answer: a status and `{"error": ...}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Describes one server.
pub fn server_view(u: &Upstream) -> ServerView {
    let health = u.health();
    ServerView {
        name: u.name().to_owned(),
        address: u.address().to_owned(),
        state: u.state(),
        in_flight: u.in_flight() as u64,
        requests: u.requests(),
        failures: u.failures(),
        last_check: health
            .last_check()
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        last_check_ok: health.last_check_ok(),
        reason: health.reason().map(str::to_owned),
    }
}

/// Describes every server and the settings.
pub fn servers_view(lb: &Balancer) -> ServersView {
    let settings = lb.settings();
    ServersView {
        strategy: settings.strategy,
        retries: settings.retries,
        servers: lb
            .upstreams()
            .snapshot()
            .iter()
            .map(|u| server_view(u))
            .collect(),
    }
}

async fn get_servers(State(lb): State<Arc<Balancer>>) -> Json<ServersView> {
    Json(servers_view(&lb))
}

async fn put_servers(
    State(lb): State<Arc<Balancer>>,
    body: Bytes,
) -> Result<Json<ServersView>, ApiError> {
    let req: PutServers = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
    validate_upstreams(&req.servers).map_err(bad_request)?;
    lb.replace_upstreams(&req.servers)
        .map_err(|e| bad_request(e.to_string()))?;
    Ok(Json(servers_view(&lb)))
}

async fn patch_settings(
    State(lb): State<Arc<Balancer>>,
    body: Bytes,
) -> Result<Json<Settings>, ApiError> {
    let req: PatchSettings = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
    Ok(Json(lb.update_settings(req.strategy, req.retries)))
}

fn find(lb: &Balancer, name: &str) -> Result<Arc<Upstream>, ApiError> {
    lb.upstreams().find(name).ok_or_else(|| {
        let known: Vec<String> = lb
            .upstreams()
            .snapshot()
            .iter()
            .map(|u| u.name().to_owned())
            .collect();
        ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown server {name:?} (known: {})", known.join(", ")),
        )
    })
}

async fn drain(
    State(lb): State<Arc<Balancer>>,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    let u = find(&lb, &name)?;
    u.set_draining(true);
    tracing::info!(server = %name, in_flight = u.in_flight(), "draining");
    Ok(Json(server_view(&u)))
}

async fn undrain(
    State(lb): State<Arc<Balancer>>,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    let u = find(&lb, &name)?;
    u.set_draining(false);
    tracing::info!(server = %name, "undrained");
    Ok(Json(server_view(&u)))
}

async fn metrics(State(lb): State<Arc<Balancer>>) -> impl IntoResponse {
    let text = lb.metrics().render(&lb.upstreams().snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such admin endpoint: try GET /servers, PUT /servers, PATCH /settings, POST /servers/{name}/drain|undrain, GET /metrics, GET /healthz".into(),
    )
}

/// The admin API's routes.
pub fn router(lb: Arc<Balancer>) -> Router {
    Router::new()
        .route("/servers", get(get_servers).put(put_servers))
        .route("/settings", patch(patch_settings))
        .route("/servers/{name}/drain", post(drain))
        .route("/servers/{name}/undrain", post(undrain))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(lb)
}
