//! # The proxy: one request's trip through the balancer
//!
//! For each request a client sends, the balancer:
//!
//! 1. cleans the headers: *hop-by-hop* headers (`Connection`, `Keep-Alive`,
//!    `Transfer-Encoding`, `Upgrade`, `TE`, `Trailer`, `Proxy-*` and every
//!    header named in `Connection`) describe one TCP connection, not the
//!    request, so they are not forwarded; it appends the client's address to
//!    `X-Forwarded-For` (the server would otherwise only see the balancer's
//!    address) and gives the request an `X-Request-Id` (kept if the client
//!    sent one) so one request can be followed through every log;
//! 2. picks a server with the current [strategy](crate::strategy);
//! 3. sends the request over a pooled keep-alive connection (see
//!    [`crate::pool`]) and waits for the response headers at most
//!    `timeouts.response`;
//! 4. if the server failed before answering (connection refused, reset, or
//!    closed without a response) and the request is *idempotent* (GET, HEAD,
//!    PUT, DELETE, OPTIONS: sending it twice does no more harm than once) and
//!    retries are on, sends it once more to a **different** server. A POST is
//!    never replayed: the first server may have done the work (charged the
//!    card) before it died. To replay a body the balancer must keep a copy,
//!    so idempotent bodies are buffered (up to 1 MiB);
//! 5. streams the response back, passing `X-Served-By` through, or answers
//!    itself with a JSON body saying why: **502** the server failed,
//!    **503** no server is up, **504** the server was too slow.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::config::MAX_REPLAY_BODY;
use crate::health::FailureKind;
use crate::pool::{UpstreamBody, UpstreamError};
use crate::strategy::{PickRequest, Strategy};
use crate::upstream::{InFlight, ServerRef, Upstream};
use crate::worker::Worker;

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The body sent to a server: nothing, a buffered copy (replayable), or the
/// client's body streamed through.
#[derive(Debug)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A buffered body, sent in one frame.
    Full(Option<Bytes>),
    /// The client's body, streamed (cannot be replayed).
    Stream(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(data) => data.is_none(),
            Self::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Stream(body) => body.size_hint(),
        }
    }
}

/// The body sent back to the client: the server's, streamed, or the
/// balancer's own (errors). The server's body holds the request's
/// [`InFlight`] guard, so `least-conn` counts the request until its last
/// byte is sent, and the connection it arrives on (see [`UpstreamBody`]).
#[derive(Debug)]
pub enum ResponseBody {
    /// A body made by the balancer.
    Full(Option<Bytes>),
    /// The server's body.
    Upstream {
        /// The bytes from the server.
        body: UpstreamBody,
        /// Ends the request's in-flight count when dropped.
        guard: InFlight,
    },
}

impl ResponseBody {
    /// A body made of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(data) => data.is_none(),
            Self::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// Whether sending the request twice is as harmless as sending it once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is
    // cheaper than looking up each of the nine.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The client at the other end of a connection, with its address already
/// written out for `X-Forwarded-For` (once per connection, not per request).
#[derive(Debug, Clone)]
pub struct ClientAddr {
    addr: SocketAddr,
    forwarded: HeaderValue,
}

impl ClientAddr {
    /// The client at `addr` (an IPv4 address seen through an IPv6 socket is
    /// written as IPv4).
    pub fn new(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let forwarded = HeaderValue::try_from(ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, forwarded }
    }

    /// The client's address and port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Appends the client's address to `X-Forwarded-For` (joining repeated
/// headers into one list).
pub fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientAddr) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(&X_FORWARDED_FOR, client.forwarded.clone());
        return;
    }
    let mut list = String::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            let s = s.trim();
            if !s.is_empty() {
                list.push_str(s);
                list.push_str(", ");
            }
        }
    }
    list.push_str(client.forwarded.to_str().unwrap_or("unknown"));
    if let Ok(v) = HeaderValue::from_str(&list) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
        _ => {
            let id = uuid::Uuid::new_v4();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        }
    }
}

/// A response made by the balancer itself, with a JSON body saying why.
pub fn error_response(
    status: StatusCode,
    error: &str,
    server: Option<&str>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let mut body = serde_json::json!({ "error": error });
    if let Some(server) = server {
        body["server"] = server.into();
    }
    if let Ok(id) = request_id.to_str() {
        body["request_id"] = id.into();
    }
    let mut resp = Response::new(ResponseBody::full(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(&X_REQUEST_ID, request_id.clone());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// What the request's body became before the first attempt.
enum Prepared {
    Empty,
    Buffered(Bytes),
    Stream(Option<Incoming>),
}

impl Prepared {
    fn for_attempt(&mut self) -> RequestBody {
        match self {
            Self::Empty => RequestBody::Empty,
            Self::Buffered(b) => RequestBody::Full(Some(b.clone())),
            Self::Stream(s) => s.take().map_or(RequestBody::Empty, RequestBody::Stream),
        }
    }
}

/// The request target sent to a server: origin form (`/path?query`).
fn upstream_uri(original: &Uri) -> Uri {
    if original.scheme().is_none() && original.authority().is_none() {
        if let Some(pq) = original.path_and_query() {
            if pq.as_str().starts_with('/') {
                return original.clone();
            }
        }
    }
    match original.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Uri::from(pq.clone()),
        _ => Uri::from_static("/"),
    }
}

/// The request as sent to `upstream` (a `Host` header is added if the client
/// sent none).
fn outgoing(
    upstream: &Upstream,
    method: &Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: RequestBody,
) -> Request<RequestBody> {
    if !headers.contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::from_str(upstream.authority().as_str()) {
            headers.insert(header::HOST, host);
        }
    }
    let mut out = Request::new(body);
    *out.method_mut() = method.clone();
    *out.uri_mut() = upstream_uri(uri);
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;
    out
}

/// Whether a failure on a reused keep-alive connection looks like the server
/// had closed it while idle (worth one more try on a new connection).
fn stale_connection(err: &UpstreamError) -> bool {
    matches!(err, UpstreamError::Http { reused: true, .. })
        && matches!(
            FailureKind::classify_upstream(err),
            FailureKind::EmptyResponse | FailureKind::Reset
        )
}

/// Serves one client request on `worker`: picks a server, forwards,
/// retries, answers. Never fails: every problem becomes a 4xx/5xx response.
pub async fn handle(
    worker: &Worker,
    req: Request<Incoming>,
    peer: &ClientAddr,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let lb = worker.balancer();
    let me = worker.id();
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let id = request_id(&headers);
    strip_hop_by_hop(&mut headers);
    append_forwarded_for(&mut headers, peer);
    headers.insert(&X_REQUEST_ID, id.clone());

    if parts.method == Method::CONNECT {
        // A tunnel is not a request: forwarded, a server's 2xx would make
        // the client's connection a tunnel to nowhere (nginx refuses it too).
        lb.metrics()
            .record_response(me, None, 405, started.elapsed());
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: the balancer forwards requests, it opens no tunnels",
            None,
            &id,
        );
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
        );
        return resp;
    }

    let settings = lb.settings();
    let replayable = settings.retries && is_idempotent(&parts.method);
    let mut prepared = if body.is_end_stream() {
        Prepared::Empty
    } else if replayable {
        match Limited::new(body, MAX_REPLAY_BODY).collect().await {
            Ok(collected) => Prepared::Buffered(collected.to_bytes()),
            Err(e) => {
                let (status, msg) = if e.is::<http_body_util::LengthLimitError>() {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over {MAX_REPLAY_BODY} bytes: too large to keep for a retry"),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("could not read the request body: {e}"),
                    )
                };
                lb.metrics()
                    .record_response(me, None, status.as_u16(), started.elapsed());
                return error_response(status, &msg, None, &id);
            }
        }
    } else {
        Prepared::Stream(Some(body))
    };

    let sticky = settings.strategy == Strategy::Sticky;
    let cookie_name = &lb.config().sticky_cookie;
    let cookie_server = if sticky {
        find_cookie(&headers, cookie_name).map(str::to_owned)
    } else {
        None
    };

    let servers = worker.servers();
    let attempts = if replayable { 2 } else { 1 };
    let response_timeout = lb.config().timeouts.response;
    let mut failed: Option<(ServerRef, FailureKind)> = None;
    for attempt in 0..attempts {
        let pick = PickRequest {
            client_ip: peer.addr().ip(),
            cookie_server: cookie_server.as_deref(),
            exclude: failed.as_ref().map(|(u, _)| u.name()),
        };
        let Some(index) = lb.picker().pick(settings.strategy, &servers, &pick) else {
            break;
        };
        let upstream = servers.get(index);
        if let Some((from, kind)) = &failed {
            lb.metrics().record_retry(from.name());
            tracing::info!(request_id = ?id, from = from.name(), to = upstream.name(), why = kind.describe(), "retrying");
        }
        let guard = upstream.begin_request(me);
        let result = tokio::time::timeout(response_timeout, async {
            let out_headers = if replayable {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let out = outgoing(
                &upstream,
                &parts.method,
                &parts.uri,
                out_headers,
                prepared.for_attempt(),
            );
            match worker.pool().request(&upstream, out, false).await {
                // The server closed the idle connection as the request went
                // out: once more on a new connection (nothing was answered).
                Err(e) if replayable && stale_connection(&e) => {
                    tracing::debug!(request_id = ?id, server = upstream.name(), error = %e, "stale keep-alive connection; reconnecting");
                    let out = outgoing(
                        &upstream,
                        &parts.method,
                        &parts.uri,
                        headers.clone(),
                        prepared.for_attempt(),
                    );
                    worker.pool().request(&upstream, out, true).await
                }
                other => other,
            }
        })
        .await;

        match result {
            Ok(Ok(resp)) => {
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                if !rparts.headers.contains_key(&X_REQUEST_ID) {
                    rparts.headers.insert(&X_REQUEST_ID, id.clone());
                }
                if sticky && cookie_server.as_deref() != Some(upstream.name()) {
                    let cookie = format!(
                        "{cookie_name}={}; Path=/; HttpOnly; SameSite=Lax",
                        upstream.name()
                    );
                    if let Ok(v) = HeaderValue::from_str(&cookie) {
                        rparts.headers.append(header::SET_COOKIE, v);
                    }
                }
                upstream.metrics(lb.metrics()).record_response(
                    me,
                    rparts.status.as_u16(),
                    started.elapsed(),
                );
                tracing::debug!(request_id = ?id, server = upstream.name(), status = rparts.status.as_u16(), "proxied");
                return Response::from_parts(rparts, ResponseBody::Upstream { body: rbody, guard });
            }
            Ok(Err(UpstreamError::RequestBody(e))) => {
                // the client's fault, not the server's
                drop(guard);
                lb.metrics()
                    .record_response(me, Some(upstream.name()), 400, started.elapsed());
                let why = format!("could not read the request body: {e}");
                return error_response(StatusCode::BAD_REQUEST, &why, Some(upstream.name()), &id);
            }
            Ok(Err(e)) => {
                drop(guard);
                let kind = FailureKind::classify_upstream(&e);
                tracing::warn!(request_id = ?id, server = upstream.name(), error = %e, kind = kind.describe(), "server failed");
                lb.record_failure(&upstream, kind);
                if kind.is_retryable() && attempt + 1 < attempts {
                    failed = Some((upstream, kind));
                    continue;
                }
                let why = if kind.is_retryable() && !replayable {
                    let reason = if settings.retries {
                        "not idempotent"
                    } else {
                        "retries are off"
                    };
                    format!("server failed: {} (not retried: {reason})", kind.describe())
                } else {
                    format!("server failed: {}", kind.describe())
                };
                lb.metrics()
                    .record_response(me, Some(upstream.name()), 502, started.elapsed());
                return error_response(StatusCode::BAD_GATEWAY, &why, Some(upstream.name()), &id);
            }
            Err(_) => {
                drop(guard);
                tracing::warn!(request_id = ?id, server = upstream.name(), "server too slow");
                lb.record_failure(&upstream, FailureKind::ResponseTimeout);
                lb.metrics()
                    .record_response(me, Some(upstream.name()), 504, started.elapsed());
                let why = format!(
                    "server too slow: no response headers within {}",
                    humantime::format_duration(lb.config().timeouts.response)
                );
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    &why,
                    Some(upstream.name()),
                    &id,
                );
            }
        }
    }

    match failed {
        Some((upstream, kind)) => {
            lb.metrics()
                .record_response(me, Some(upstream.name()), 502, started.elapsed());
            let why = format!(
                "server failed: {} (no other healthy server to retry on)",
                kind.describe()
            );
            error_response(StatusCode::BAD_GATEWAY, &why, Some(upstream.name()), &id)
        }
        None => {
            lb.metrics()
                .record_response(me, None, 503, started.elapsed());
            let why = if servers.is_empty() {
                "no healthy server: the server list is empty".to_owned()
            } else {
                let down: Vec<String> = servers
                    .iter()
                    .map(|u| format!("{} {}", u.name(), u.state().as_str()))
                    .collect();
                format!("no healthy server ({})", down.join(", "))
            };
            error_response(StatusCode::SERVICE_UNAVAILABLE, &why, None, &id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_with_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ClientAddr::new("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        append_forwarded_for(
            &mut h,
            &ClientAddr::new("[::ffff:10.0.0.5]:5000".parse().unwrap()),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 198.51.100.2, 10.0.0.5");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; lab_server=server-2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(find_cookie(&h, "lab_server"), Some("server-2"));
        assert_eq!(find_cookie(&h, "b"), Some("2"));
        assert_eq!(find_cookie(&h, "lab"), None);
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m));
        }
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[test]
    fn request_ids_pass_through_or_are_made() {
        let mut h = HeaderMap::new();
        let made = request_id(&h);
        assert_eq!(made.len(), 36);
        assert_ne!(request_id(&h), made);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
    }
}
