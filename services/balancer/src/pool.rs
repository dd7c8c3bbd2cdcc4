//! # The connection pool: keep-alive connections to the servers
//!
//! Opening a TCP connection per request would cost a round trip and, under
//! load, run out of ports, so the balancer keeps connections to the servers
//! open between requests (nginx's `keepalive` directive does the same).
//!
//! Each worker thread has its own [`Pool`], as each nginx worker process has
//! its own: a request takes an idle connection to its server from the pool
//! (or opens one), and **drives it itself**: the request's task writes the
//! request, reads the response headers and then the body, with no other
//! task in between (hyper's low-level `client::conn::http1`). When the body
//! has been read to its end the connection goes back to the pool; a
//! connection whose response was not read to the end, that failed, or that
//! the server closed, is dropped (closed).
//!
//! A pooled connection is not watched while idle. When it is taken it is
//! polled once: a server that closed it meanwhile is noticed then, and
//! the next idle one (or a new connection) is used. A request that an idle
//! connection could not even send goes out on another connection to the same
//! server. Idle connections older than `timeouts.upstream_keepalive` are
//! closed. The server's address is resolved by DNS for every new connection.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::RequestBody;
use crate::upstream::ServerRef;

type Conn = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// Why a new connection to a server could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No TCP handshake within `timeouts.connect`.
    #[error("connect timed out")]
    Timeout,
    /// The name could not be resolved.
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TCP connection failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Io(std::io::Error),
    /// The HTTP/1 handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(hyper::Error),
}

/// Why a request to a server got no response headers.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A new connection could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request failed on an open connection.
    #[error("{error}")]
    Http {
        /// What hyper said.
        error: hyper::Error,
        /// Whether the connection had served requests before (it may have
        /// been closed by the server while idle).
        reused: bool,
    },
}

/// One open connection to a server, driven by whoever holds it.
#[derive(Debug)]
pub struct UpstreamConn {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended.
    conn: Option<Conn>,
    reused: bool,
}

impl UpstreamConn {
    /// Polls the connection (reads, writes); drops it when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            if Pin::new(conn).poll(cx).is_ready() {
                self.conn = None;
            }
        }
    }

    /// Polls without a task to wake (only to let the connection notice what
    /// already happened: a close, the end of a response).
    fn drive_now(&mut self) {
        self.drive(&mut Context::from_waker(Waker::noop()));
    }

    /// Whether a new request can be sent now.
    fn is_reusable(&mut self) -> bool {
        self.drive_now();
        self.conn.is_some() && self.sender.is_ready()
    }

    /// Sends `req` and waits for the response headers, driving the
    /// connection meanwhile. A request that could not be sent at all comes
    /// back in the error.
    async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>> {
        let mut response = pin!(self.sender.try_send_request(req));
        let this_conn = &mut self.conn;
        poll_fn(|cx| {
            if let Some(conn) = this_conn {
                if Pin::new(conn).poll(cx).is_ready() {
                    // Dropping it hands any pending request its error.
                    *this_conn = None;
                }
            }
            response.as_mut().poll(cx)
        })
        .await
    }
}

#[derive(Debug)]
struct Idle {
    since: Instant,
    conn: Box<UpstreamConn>,
}

#[derive(Debug)]
struct Inner {
    idle: Mutex<HashMap<Box<str>, Vec<Idle>>>,
    connect_timeout: Duration,
    keepalive: Duration,
    builder: http1::Builder,
}

/// One worker's keep-alive connections to the servers, by server address.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// An empty pool: new connections time out after `connect_timeout`, idle
    /// ones are closed after `keepalive`.
    pub fn new(connect_timeout: Duration, keepalive: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(HashMap::new()),
                connect_timeout,
                keepalive,
                builder: http1::Builder::new(),
            }),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Idle>>> {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long an idle connection is kept.
    pub fn keepalive(&self) -> Duration {
        self.inner.keepalive
    }

    /// Idle connections to `address` (for tests and metrics).
    pub fn idle_count(&self, address: &str) -> usize {
        self.idle().get(address).map_or(0, Vec::len)
    }

    /// An idle connection to `address` that still works, if any.
    fn take_idle(&self, address: &str) -> Option<Box<UpstreamConn>> {
        loop {
            let idle = self.idle().get_mut(address).and_then(Vec::pop)?;
            let mut conn = idle.conn;
            if idle.since.elapsed() < self.inner.keepalive && conn.is_reusable() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    fn put(&self, address: &str, conn: Box<UpstreamConn>) {
        let idle = Idle {
            since: Instant::now(),
            conn,
        };
        let mut map = self.idle();
        match map.get_mut(address) {
            Some(list) => list.push(idle),
            None => {
                map.insert(address.into(), vec![idle]);
            }
        }
    }

    /// Closes idle connections older than the keep-alive time, and those the
    /// server closed.
    pub fn evict(&self) {
        let keepalive = self.inner.keepalive;
        let mut map = self.idle();
        for list in map.values_mut() {
            list.retain_mut(|i| i.since.elapsed() < keepalive && i.conn.is_reusable());
        }
        map.retain(|_, list| !list.is_empty());
    }

    /// Opens a new connection to `address`, resolving it now.
    async fn connect(&self, address: &str) -> Result<Box<UpstreamConn>, ConnectError> {
        let open = async {
            let addrs =
                tokio::net::lookup_host(address)
                    .await
                    .map_err(|source| ConnectError::Resolve {
                        address: address.to_owned(),
                        source,
                    })?;
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => ConnectError::Io(e),
                None => ConnectError::Resolve {
                    address: address.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found"),
                },
            })
        };
        let stream = tokio::time::timeout(self.inner.connect_timeout, open)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = self
            .inner
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        Ok(Box::new(UpstreamConn {
            sender,
            conn: Some(conn),
            reused: false,
        }))
    }

    /// Sends `req` to `upstream` on an idle connection or a new one, and
    /// waits for the response headers. The connection then travels with the
    /// response body ([`UpstreamBody`]) and comes back to the pool when the
    /// body has been read to its end.
    ///
    /// `fresh`: open a new connection even if idle ones wait.
    pub async fn request(
        &self,
        upstream: &ServerRef,
        mut req: Request<RequestBody>,
        fresh: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        loop {
            let idle = if fresh {
                None
            } else {
                self.take_idle(upstream.address())
            };
            let mut conn = match idle {
                Some(conn) => conn,
                // Boxed: connecting is rare with keep-alive, and its large
                // future would otherwise be moved along with every request.
                None => Box::pin(self.connect(upstream.address())).await?,
            };
            match conn.send(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|body| UpstreamBody {
                        body: Some(body),
                        conn: Some(conn),
                        finished: false,
                        pool: self.clone(),
                        upstream: upstream.clone(),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never sent: the idle connection had been closed. Try
                    // the next one (in the end a new connection).
                    Some(back) if conn.reused => req = back,
                    _ => {
                        return Err(UpstreamError::Http {
                            error: e.into_error(),
                            reused: conn.reused,
                        })
                    }
                },
            }
        }
    }
}

/// A server's response body, with the connection it arrives on: reading the
/// body drives the connection, and once the body has been read to its end
/// the connection goes back to the pool.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Option<Incoming>,
    conn: Option<Box<UpstreamConn>>,
    finished: bool,
    pool: Pool,
    upstream: ServerRef,
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            conn.drive(cx);
        }
        let Some(body) = &mut this.body else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finished = true,
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.is_end_stream() {
            return; // the rest of the body is still coming: close
        }
        if let Some(mut conn) = self.conn.take() {
            if conn.is_reusable() {
                conn.reused = true;
                self.pool.put(self.upstream.address(), conn);
            }
        }
    }
}
