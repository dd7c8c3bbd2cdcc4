//! The page itself: one HTML file, two scripts and one style sheet, written
//! by hand for this project and compiled into the binary, so the dashboard
//! works offline, fetches nothing from elsewhere and needs no front-end
//! toolchain. Editing a file under `assets/` and rebuilding `lab` is all.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const INDEX: &str = include_str!("assets/index.html");
pub const SCRIPT: &str = include_str!("assets/app.js");
pub const STYLE: &str = include_str!("assets/style.css");
/// The charts, shared by the page and the exported report (which inlines it).
pub const CHARTS: &str = include_str!("assets/charts.js");

/// The page may load only its own files and talk only to its own server,
/// and no other site may show it in a frame, where a student could be
/// tricked into clicking its buttons (clickjacking).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn file(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // A rebuilt `lab` serves new files on the same URL.
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn charts() -> Response {
    file(CHARTS, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}
