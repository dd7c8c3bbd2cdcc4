//! Who may act on the lab through the dashboard.
//!
//! The dashboard listens on 127.0.0.1 only, so no other machine reaches it.
//! But the student's own browser runs pages from anywhere, and any of them
//! can make it send requests to 127.0.0.1: a page on another site can post
//! a form to `http://127.0.0.1:8099/...` (cross-site request forgery), and a
//! site whose name is made to resolve to 127.0.0.1 for a moment can even
//! read the answers, as if it were the dashboard (DNS rebinding). Three
//! checks, made before any handler runs, stop both:
//!
//! - **Host.** Every request, reads included, must be addressed to
//!   `127.0.0.1:PORT` or `localhost:PORT`. A rebinding page's requests still
//!   carry its own name (`evil.example:PORT`), so it learns nothing.
//! - **Token.** Every change (any method but GET and HEAD) carries the
//!   header `X-Lab-Token` with a random value made when the dashboard
//!   starts. It is printed in the URL's fragment (`#token=...`), which a
//!   browser never sends to any server, so no other page can learn it. A
//!   custom header also makes a cross-site `fetch` ask permission first (a
//!   CORS preflight), which the dashboard never grants.
//! - **Origin.** When a browser says which page a request comes from, it
//!   must be the dashboard's own origin. Browsers also say, in
//!   `Sec-Fetch-Site`, whether a request was made by another site even
//!   where they send no `Origin` (an `<img>` or `<script>` pointing here):
//!   only `same-origin` and `none` (the student typed or pasted the URL)
//!   pass, so no other page can make the dashboard read the lab for it.
//!
//! A change without `Origin` is accepted when its token is right: browsers
//! send `Origin` on every POST, same-origin ones included, so a request
//! without one did not come from a web page. It is `curl` or a script of the
//! student's, who had to read the token from the terminal.
//!
//! Reads (the page, its files, `/events`) need no token: they pass the Host
//! check, a foreign page cannot read their answers (the browser's
//! same-origin rule; no CORS header is ever sent), and they show what
//! `lab status` shows any local user anyway. That lets a second browser
//! watch with the plain URL, and keeps the token out of `EventSource`,
//! which cannot send headers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use thiserror::Error;

/// The header a change must carry.
pub const TOKEN_HEADER: &str = "x-lab-token";

/// Why a request was refused; each message says what to do instead.
#[derive(Error, Debug, PartialEq, Eq)]
pub enum Refusal {
    #[error("refused: this dashboard answers to 127.0.0.1:{port} and localhost:{port} only, not to host {host:?}; open the URL `lab dashboard` printed")]
    ForeignHost { host: String, port: u16 },
    #[error("refused: a page from {origin} may not use this dashboard; open the URL `lab dashboard` printed")]
    ForeignOrigin { origin: String },
    #[error("refused: a change needs the X-Lab-Token header; open the URL `lab dashboard` printed, with its #token= part")]
    NoToken,
    #[error("refused: wrong X-Lab-Token (a page from an earlier `lab dashboard`?); open the URL it printed this time")]
    WrongToken,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ForeignHost { .. } | Refusal::ForeignOrigin { .. } => StatusCode::FORBIDDEN,
            Refusal::NoToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        super::json_error(self.status(), &self.to_string())
    }
}

/// The per-run secret and the one address the dashboard answers to.
#[derive(Clone, Debug)]
pub struct Guard {
    token: Arc<str>,
    port: u16,
}

impl Guard {
    /// A guard with a fresh token, for the port the dashboard listens on
    /// (the real one: with `--port 0`, the one the system picked).
    pub fn new(port: u16) -> Guard {
        // ThreadRng is a cryptographic generator, seeded by the system.
        let bytes: [u8; 16] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Guard::with_token(port, &token)
    }

    /// A guard with a known token (tests; a later `--token` flag).
    pub fn with_token(port: u16, token: &str) -> Guard {
        Guard {
            token: token.into(),
            port,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The origins a browser gives the dashboard's own page.
    fn own_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| self.own_host(host))
    }

    fn own_host(&self, host: &str) -> bool {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().ok()),
            // A browser leaves out the port only when it is HTTP's default.
            None => (host, Some(80)),
        };
        port == Some(self.port) && (name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost"))
    }

    /// Checks one request's method and headers; see the module comment.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !self.own_host(host) {
            return Err(Refusal::ForeignHost {
                host: host.to_string(),
                port: self.port,
            });
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !self.own_origin(origin) {
                return Err(Refusal::ForeignOrigin {
                    origin: origin.to_string(),
                });
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("(not text)");
            if site != "same-origin" && site != "none" {
                return Err(Refusal::ForeignOrigin {
                    origin: format!("another site (Sec-Fetch-Site: {site})"),
                });
            }
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        match headers.get(TOKEN_HEADER) {
            None => Err(Refusal::NoToken),
            Some(t) if same(t.as_bytes(), self.token.as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::WrongToken),
        }
    }
}

/// Compares in time that does not depend on where the first difference
/// is, so the token cannot be guessed a character at a time by timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: a refused request never reaches a handler.
pub async fn layer(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    match guard.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::warn!(method = %req.method(), uri = %req.uri(), "{refusal}");
            refusal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (Guard::new(1), Guard::new(1));
        assert_ne!(a.token(), b.token());
        assert_eq!(a.token().len(), 32);
        assert!(a.token().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn hosts_are_loopback_names_with_our_port() {
        let g = Guard::with_token(8099, "t");
        assert!(g.own_host("127.0.0.1:8099"));
        assert!(g.own_host("LOCALHOST:8099"));
        assert!(!g.own_host("127.0.0.1:8098"));
        assert!(!g.own_host("127.0.0.1"));
        assert!(!g.own_host("evil.example:8099"));
        assert!(!g.own_host("127.0.0.1.evil.example:8099"));
        assert!(!g.own_host(""));
        assert!(Guard::with_token(80, "t").own_host("localhost"));
        assert!(g.own_origin("http://localhost:8099"));
        assert!(!g.own_origin("https://localhost:8099"));
        assert!(!g.own_origin("null"));
    }

    #[test]
    fn a_change_needs_the_token_and_a_read_does_not() {
        let g = Guard::with_token(8099, "secret");
        let host = ("host", "127.0.0.1:8099");
        assert_eq!(g.check(&Method::GET, &headers(&[host])), Ok(()));
        assert_eq!(
            g.check(&Method::POST, &headers(&[host])),
            Err(Refusal::NoToken)
        );
        assert_eq!(
            g.check(&Method::DELETE, &headers(&[host, (TOKEN_HEADER, "secreT")])),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            g.check(&Method::POST, &headers(&[host, (TOKEN_HEADER, "secret")])),
            Ok(())
        );
    }

    #[test]
    fn a_request_another_site_made_is_refused_even_without_origin() {
        let g = Guard::with_token(8099, "secret");
        let host = ("host", "127.0.0.1:8099");
        // An <img src="http://127.0.0.1:8099/events"> on another site.
        let img = headers(&[host, ("sec-fetch-site", "cross-site")]);
        assert!(matches!(
            g.check(&Method::GET, &img),
            Err(Refusal::ForeignOrigin { .. })
        ));
        // A page on localhost:3000 is the same site, not the same origin.
        let near = headers(&[host, ("sec-fetch-site", "same-site")]);
        assert!(g.check(&Method::GET, &near).is_err());
        for ours in ["same-origin", "none"] {
            let h = headers(&[host, ("sec-fetch-site", ours)]);
            assert_eq!(g.check(&Method::GET, &h), Ok(()), "{ours}");
        }
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
