//! One virtual user's line to the lab: a keep-alive HTTP/1.1 connection and a
//! cookie jar.
//!
//! A real browser keeps its connection open and sends its cookies back on every
//! request; so does each virtual user here. Two consequences a student can
//! observe:
//!
//! - Keep-alive: the balancer sees one long-lived connection per user, the way
//!   it sees real browsers, and the driver does not pay a TCP handshake per
//!   request (which would measure the kernel, not the lab).
//! - Cookies: the app's session cookie (`lab_session`) and the balancer's sticky
//!   cookie (`lab_server`) live in the user's own jar, so "sticky sessions" and
//!   "sessions in memory" behave for each user exactly as they would for a
//!   browser.
//!
//! Why not a general HTTP client library? Measuring a system means the measuring
//! tool must cost little: a general client does connection pooling, proxies,
//! redirects and URL parsing on every request. Here a user talks to exactly one
//! host over exactly one connection, so the driver speaks HTTP/1.1 through
//! hyper's bare connection API and stays close to `wrk`'s speed (see
//! `bench/README.md`).
//!
//! Failures are told apart precisely, because the bank checker depends on it:
//! if the TCP connection could not even be opened the request was certainly not
//! sent ("connect"); if the connection broke or the clock ran out after sending,
//! the server may or may not have acted on it.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

use super::LoadError;

const LOOPBACK_ONLY: &str =
    "the load driver only sends traffic to this machine (127.0.0.0/8, ::1 or localhost)";

/// Where the load goes: a loopback address and the `Host` header to send.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    /// Path prefix from the base URL (usually empty), prepended to every path.
    prefix: String,
    /// The base URL as given, for reports.
    url: String,
}

impl Target {
    /// Parses a base URL such as `http://127.0.0.1:8080`.
    ///
    /// Only loopback addresses are accepted: the lab publishes its balancer on
    /// 127.0.0.1, and a load generator pointed anywhere else by mistake would be
    /// an attack on somebody's network.
    pub fn parse(url: &str) -> Result<Self, LoadError> {
        let bad = |why: &str| LoadError::BadTarget {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| bad("not a URL; expected e.g. http://127.0.0.1:8080"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(bad("only plain http:// is supported")),
            None => return Err(bad("missing http://; expected e.g. http://127.0.0.1:8080")),
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("missing host; expected e.g. http://127.0.0.1:8080"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if bare.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bare.parse().map_err(|_| bad(LOOPBACK_ONLY))?
        };
        if !ip.is_loopback() {
            return Err(bad(LOOPBACK_ONLY));
        }
        let port = uri.port_u16().unwrap_or(80);
        let host_header = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let host = HeaderValue::from_str(&host_header).map_err(|_| bad("invalid host"))?;
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host,
            prefix,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL, as the user gave it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be opened: the request was certainly not sent.
    Connect,
    /// The connection broke after the request may have been sent.
    Broken,
    /// No complete answer within the per-request timeout.
    Timeout,
}

/// An HTTP answer, whatever its status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `X-Served-By` header: which app server (or balancer) answered.
    pub served_by: Option<HeaderValue>,
    pub body: Bytes,
}

/// A request body that is either empty or one chunk of bytes.
pub struct OneChunk(Option<Bytes>);

impl Body for OneChunk {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// The cookies one user holds. The lab talks to a single host, so domain and
/// path rules do not matter: a cookie is a name and a value, replaced when the
/// server sets it again and dropped when the server expires it.
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// Takes one `Set-Cookie` header value into the jar.
    pub fn store(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim().trim_matches('"'));
        if name.is_empty() {
            return;
        }
        let expired = parts.any(|attr| {
            let attr = attr.trim();
            let lower = attr.to_ascii_lowercase();
            lower.starts_with("max-age=")
                && attr[8..].trim().parse::<i64>().is_ok_and(|age| age <= 0)
        });
        self.cookies.retain(|(n, _)| n != name);
        if !expired && !value.is_empty() {
            self.cookies.push((name.to_string(), value.to_string()));
        }
    }

    /// The `Cookie` header to send, if the jar holds anything.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        let mut out = String::new();
        for (i, (n, v)) in self.cookies.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(n);
            out.push('=');
            out.push_str(v);
        }
        Some(out)
    }

    /// Forgets every cookie (a user who closes the browser).
    pub fn clear(&mut self) {
        self.cookies.clear();
    }
}

/// One user's connection to the target, opened lazily and reopened after any
/// failure (a broken connection cannot be trusted with the next request).
pub struct Conn {
    target: std::sync::Arc<Target>,
    sender: Option<SendRequest<OneChunk>>,
    pub jar: CookieJar,
    timeout: Duration,
}

impl Conn {
    pub fn new(target: std::sync::Arc<Target>, timeout: Duration) -> Self {
        Conn {
            target,
            sender: None,
            jar: CookieJar::default(),
            timeout,
        }
    }

    /// Sends one request and reads the whole answer, within the timeout.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<Answer, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, json)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => {
                self.sender = None;
                Err(failure)
            }
            Err(_elapsed) => {
                // An answer may still arrive on this connection later and be
                // mistaken for the next one: start afresh.
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<OneChunk>, Failure> {
        let stream = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Small requests must leave at once, not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        // The connection task ends by itself when `sender` is dropped or the
        // peer closes; its error, if any, shows up on the request instead.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<Answer, Failure> {
        let uri = build_uri(&self.target.prefix, path)?;
        let mut fresh_retry_used = false;
        loop {
            let reused = match &self.sender {
                Some(s) if !s.is_closed() => true,
                _ => {
                    self.sender = Some(self.connect().await?);
                    false
                }
            };
            let Some(sender) = self.sender.as_mut() else {
                return Err(Failure::Connect);
            };
            if sender.ready().await.is_err() {
                // The idle connection was closed by the server (keep-alive
                // timeout, restart) before we used it: nothing was sent.
                self.sender = None;
                if reused && !fresh_retry_used {
                    fresh_retry_used = true;
                    continue;
                }
                return Err(Failure::Connect);
            }
            let mut req = Request::new(OneChunk(json.clone()));
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            let headers = req.headers_mut();
            headers.insert(HOST, self.target.host.clone());
            if let Some(body) = &json {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            if let Some(cookie) = self.jar.header() {
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    headers.insert(COOKIE, v);
                }
            }
            let response = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) if e.is_canceled() && reused && !fresh_retry_used => {
                    // hyper says the request never left: safe to resend once
                    // on a fresh connection, even for a POST.
                    self.sender = None;
                    fresh_retry_used = true;
                    continue;
                }
                Err(_) => return Err(Failure::Broken),
            };
            let status = response.status().as_u16();
            let served_by = response.headers().get("x-served-by").cloned();
            for c in response.headers().get_all(SET_COOKIE) {
                if let Ok(s) = c.to_str() {
                    self.jar.store(s);
                }
            }
            let body = read_body(response.into_body()).await?;
            return Ok(Answer {
                status,
                served_by,
                body,
            });
        }
    }
}

fn build_uri(prefix: &str, path: &str) -> Result<Uri, Failure> {
    if prefix.is_empty() {
        if path == "/" {
            return Ok(Uri::from_static("/"));
        }
        return Uri::try_from(path).map_err(|_| Failure::Connect);
    }
    Uri::try_from(format!("{prefix}{path}")).map_err(|_| Failure::Connect)
}

async fn read_body(mut body: hyper::body::Incoming) -> Result<Bytes, Failure> {
    // Most answers arrive as one frame: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| Failure::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match (&mut first, &mut more) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(f.len() + data.len());
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                more = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, more) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jar_keeps_replaces_and_expires_cookies() {
        let mut jar = CookieJar::default();
        assert_eq!(jar.header(), None);
        jar.store("lab_session=abc; Path=/; HttpOnly");
        jar.store("lab_server=server-2; Path=/");
        assert_eq!(
            jar.header().as_deref(),
            Some("lab_session=abc; lab_server=server-2")
        );
        jar.store("lab_session=def; Path=/");
        assert_eq!(
            jar.header().as_deref(),
            Some("lab_server=server-2; lab_session=def")
        );
        jar.store("lab_server=; Max-Age=0");
        assert_eq!(jar.header().as_deref(), Some("lab_session=def"));
        jar.store("garbage");
        assert_eq!(jar.header().as_deref(), Some("lab_session=def"));
    }

    #[test]
    fn targets_must_be_loopback_http() {
        assert!(Target::parse("http://127.0.0.1:8080").is_ok());
        assert!(Target::parse("http://localhost:8080/").is_ok());
        assert!(Target::parse("http://[::1]:8080").is_ok());
        assert!(Target::parse("http://10.0.0.5:8080").is_err());
        assert!(Target::parse("http://example.com").is_err());
        assert!(Target::parse("https://127.0.0.1:8443").is_err());
        assert!(Target::parse("127.0.0.1:8080").is_err());
        let t = Target::parse("http://127.0.0.1:9000/base/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.prefix, "/base");
        assert_eq!(t.addr.port(), 9000);
    }
}
