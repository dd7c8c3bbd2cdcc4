//! One error type for every handler, turned into a JSON answer.
//!
//! Every failure a client can see is an [`AppError`]. Its variant decides the
//! HTTP status, and the body is always `{"error": "..."}` so the load driver
//! and a student's `curl` read the same shape whatever went wrong.
//!
//! The status tells *whose* fault it is, which is the point of several lessons:
//! 4xx means the client sent something wrong (never retried, never a server
//! fault); 503 means a dependency (PostgreSQL, Redis) is unavailable and names
//! it; 504 means a write was sent but its outcome is unknown. A 500 is kept
//! for real bugs only.
//!
//! axum's own extractors answer bad input with plain-text bodies, so this
//! module also provides [`AppJson`], [`AppPath`] and [`AppQuery`]: the same
//! extractors with their rejections converted into `AppError`.

use axum::{
    extract::{
        rejection::{JsonRejection, PathRejection, QueryRejection},
        FromRequest, FromRequestParts,
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use lab_contract::app::ErrorBody;

/// Everything that can go wrong in a request, from the client's point of view.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or a value is out of range (400, or the
    /// status axum chose for a rejected body: 413, 415, 422).
    #[error("{message}")]
    BadRequest {
        /// The HTTP status to answer.
        status: StatusCode,
        /// What was wrong, for a human.
        message: String,
    },
    /// No valid session cookie (401).
    #[error("not logged in")]
    NotLoggedIn,
    /// No such route or resource (404).
    #[error("{0}")]
    NotFound(String),
    /// An account that was never deposited into (404, naming the database
    /// asked, so a stale replica can be told from a missing account).
    #[error("no such account")]
    NoSuchAccount {
        /// The database that answered.
        db: String,
    },
    /// The request is valid but cannot be applied to the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A dependency is down or not ready (503), named in the message.
    #[error("{dependency} is unavailable: {reason}")]
    Unavailable {
        /// `redis`, `db-1`, `db-2`, ...
        dependency: String,
        /// What we saw, short.
        reason: String,
    },
    /// A write was sent but not confirmed in time (504): the client must not
    /// assume it failed, nor that it succeeded.
    #[error("{db} did not confirm the write within {timeout} (a synchronous replica may be unreachable); the outcome is unknown")]
    WriteTimeout {
        /// The database written to.
        db: String,
        /// How long we waited, human-readable.
        timeout: String,
    },
    /// A bug on our side (500). The detail goes to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// A 400 with the given message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 503 naming `dependency`.
    pub fn unavailable(dependency: impl Into<String>, reason: impl ToString) -> Self {
        Self::Unavailable {
            dependency: dependency.into(),
            reason: reason.to_string(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { status, .. } => *status,
            Self::NotLoggedIn => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) | Self::NoSuchAccount { .. } => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::WriteTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            Self::Unavailable { .. } | Self::WriteTimeout { .. } => {
                tracing::warn!(error = %self, "dependency failure")
            }
            _ => tracing::debug!(error = %self, %status, "client error"),
        }
        let body = ErrorBody {
            error: self.to_string(),
            db: match &self {
                Self::NoSuchAccount { db } => Some(db.clone()),
                _ => None,
            },
            outcome_unknown: matches!(self, Self::WriteTimeout { .. }),
        };
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        // Keep axum's status (400 syntax, 422 wrong shape, 413 too large,
        // 415 wrong content type): each is a precise, well-known answer.
        Self::BadRequest {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        // A path that does not parse (`/products/abc`) is the client's
        // mistake: always 400, even where axum would say 500 for a
        // mismatched route definition (that would be our bug, caught by tests).
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

/// `axum::Json`, with rejections answered as JSON [`AppError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct AppJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `axum::extract::Path`, with rejections answered as JSON [`AppError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct AppPath<T>(pub T);

/// `axum::extract::Query`, with rejections answered as JSON [`AppError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct AppQuery<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_whose_fault_it_is() {
        assert_eq!(AppError::bad_request("x").status(), 400);
        assert_eq!(AppError::NotLoggedIn.status(), 401);
        assert_eq!(AppError::Conflict("x".into()).status(), 409);
        assert_eq!(AppError::unavailable("redis", "down").status(), 503);
        assert_eq!(
            AppError::unavailable("redis", "connection refused").to_string(),
            "redis is unavailable: connection refused"
        );
        let timeout = AppError::WriteTimeout {
            db: "db-1".into(),
            timeout: "5s".into(),
        };
        assert_eq!(timeout.status(), 504);
        assert_eq!(
            timeout.to_string(),
            "db-1 did not confirm the write within 5s (a synchronous replica may be unreachable); the outcome is unknown"
        );
    }
}
