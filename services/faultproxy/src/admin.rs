//! # The admin API: how the `lab` CLI sets and heals faults
//!
//! A small HTTP API on its own port (published on the host's 127.0.0.1 only):
//!
//! ```text
//! GET    /links               every link: addresses, fault, connections, bytes
//! PUT    /links/{name}/fault  set the link's fault (JSON body, replaces the old one)
//! DELETE /links/{name}/fault  heal one link
//! DELETE /faults              heal every link
//! GET    /healthz             "ok"
//! ```
//!
//! The bodies are the types of `lab_contract::faultproxy`, so the CLI and the
//! proxy cannot disagree on a field name. Errors are JSON too
//! (`{"error": "..."}`), one line naming the cause and the fix: an unknown
//! link lists the valid ones, a bad body says what is wrong with it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use lab_contract::faultproxy::{ErrorBody, Fault, LinkStatus, LinksResponse};

use crate::link::Link;

/// The links the admin API acts on, in the order they were given.
pub type Links = Arc<Vec<Arc<Link>>>;

/// The admin API's routes.
pub fn router(links: Links) -> Router {
    Router::new()
        .route("/links", get(list))
        .route("/links/{name}/fault", put(set_fault).delete(heal_one))
        .route("/faults", delete(heal_all))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(links)
}

async fn list(State(links): State<Links>) -> Json<LinksResponse> {
    Json(LinksResponse {
        links: links.iter().map(|l| l.status()).collect(),
    })
}

async fn set_fault(
    State(links): State<Links>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<LinkStatus>, ApiError> {
    let link = find(&links, &name)?;
    // Parsed here rather than by axum's `Json` extractor so every bad body
    // gets a JSON error (axum's are plain text) and no Content-Type is needed.
    let fault: Fault = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a fault ({e}); send JSON such as {{\"latency_ms\": 200, \"jitter_ms\": 20}}"
        ))
    })?;
    fault
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    link.set_fault(Some(fault));
    Ok(Json(link.status()))
}

async fn heal_one(
    State(links): State<Links>,
    Path(name): Path<String>,
) -> Result<Json<LinkStatus>, ApiError> {
    let link = find(&links, &name)?;
    link.set_fault(None);
    Ok(Json(link.status()))
}

async fn heal_all(State(links): State<Links>) -> Json<LinksResponse> {
    for link in links.iter() {
        link.set_fault(None);
    }
    list(State(links)).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        body: ErrorBody {
            error: format!(
                "no endpoint {method} {}; the admin API has GET /links, PUT and DELETE /links/{{name}}/fault, DELETE /faults, GET /healthz",
                uri.path()
            ),
            valid_links: None,
        },
    }
}

fn find<'a>(links: &'a Links, name: &str) -> Result<&'a Arc<Link>, ApiError> {
    links.iter().find(|l| l.name == name).ok_or_else(|| {
        let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
        ApiError {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody {
                error: format!(
                    "no link named {name:?}; this proxy has: {}",
                    names.join(", ")
                ),
                valid_links: Some(names),
            },
        }
    })
}

/// An error answer: a status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn bad_request(error: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error,
                valid_links: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
