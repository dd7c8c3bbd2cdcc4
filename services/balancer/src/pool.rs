//! # The connection pool: keep-alive connections to the servers
//!
//! Opening a TCP connection per request would cost a round trip and, under
//! load, run out of ports, so the balancer keeps connections to the servers
//! open between requests (nginx's `keepalive` directive does the same).
//!
//! Each worker thread has its own [`Pool`], as each nginx worker process has
//! its own: a request takes an idle connection to its server from the pool
//! (or opens one), and **drives it itself**: the request's task writes the
//! request, reads the answer's head and then its body, with no other task in
//! between (the bytes are [HTTP/1.1 written and read by hand](crate::http1)).
//! When the body has been read to its end the connection goes back to the
//! pool; a connection whose answer was not read to the end, that failed,
//! that the server asked to close, or that the server closed, is dropped.
//!
//! A pooled connection is not watched while idle. When it is taken, the
//! event loop is asked whether anything arrived meanwhile (this costs no
//! system call when nothing did): a server that closed it is noticed then,
//! and the next idle one (or a new connection) is used. Idle connections
//! older than `timeouts.upstream_keepalive` are closed. The server's address
//! is resolved by DNS for every new connection.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http1::{self, BodyDecoder, BodyFraming, Decoded, Parsed};
use crate::proxy::RequestBody;
use crate::upstream::ServerRef;

/// How much the read buffer grows by when it is nearly full.
const READ_CHUNK: usize = 16 * 1024;

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
}

/// Why a request to a server got no answer head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A new connection could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request failed on an open connection.
    #[error("{error}")]
    Http {
        /// What went wrong: an I/O error (reset; closed before a complete
        /// answer: kind `UnexpectedEof`), or an answer that is not HTTP
        /// (kind `InvalidData`).
        error: io::Error,
        /// Whether the connection had served requests before (it may have
        /// been closed by the server while idle).
        reused: bool,
    },
    /// The client's request body could not be read while sending it.
    #[error("could not read the request body: {0}")]
    RequestBody(hyper::Error),
}

/// The server closed the connection before a complete answer.
fn closed_early() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed before a complete answer",
    )
}

/// One open connection to a server.
#[derive(Debug)]
pub struct UpstreamConn {
    io: TcpStream,
    /// Bytes read and not used yet (the answer's head, then its body).
    read_buf: BytesMut,
    /// The request's head, encoded (the allocation is kept between requests).
    write_buf: Vec<u8>,
    reused: bool,
}

impl UpstreamConn {
    fn new(io: TcpStream) -> Self {
        Self {
            io,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: Vec::with_capacity(1024),
            reused: false,
        }
    }

    /// Whether a new request can be sent now: the server has neither closed
    /// the connection nor sent anything unasked. The event loop is asked
    /// first, so a quiet connection costs no system call.
    fn is_reusable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the server sent into the buffer; `Ok(0)` means it closed.
    /// (Through `AsyncRead`, which takes a short read to mean the socket is
    /// drained: the next read then waits for the event loop instead of
    /// costing a system call that would only say "nothing yet".)
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < 1024 {
            self.read_buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
    }

    /// Writes the request (head and body), then reads the answer's head.
    async fn send(&mut self, req: Request<RequestBody>) -> Result<http1::Head, UpstreamError> {
        let reused = self.reused;
        let http_err = |error| UpstreamError::Http { error, reused };
        let (parts, mut body) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let known = match &body {
            RequestBody::Empty => Some(0),
            RequestBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Stream(s) => s.size_hint().exact(),
        };
        self.write_buf.clear();
        let framing = http1::encode_head(&head, known, &mut self.write_buf);
        if let RequestBody::Full(b) = &mut body {
            // small and already in memory: one write with the head
            if let Some(b) = b.take() {
                self.write_buf.extend_from_slice(&b);
            }
        }
        self.io.write_all(&self.write_buf).await.map_err(http_err)?;
        if let RequestBody::Stream(_) = body {
            self.send_stream(&mut body, framing).await?;
        }
        loop {
            match http1::parse_head(&mut self.read_buf, head.method())
                .map_err(|e| http_err(e.into()))?
            {
                // The balancer never asks to switch protocols (it removes
                // `Upgrade`): an unasked 101 would turn the client's
                // connection into a tunnel the client does not expect, so it
                // is a broken answer (nginx: "upstream sent 101 for a
                // non-upgrade request", 502).
                Parsed::Final(answer)
                    if answer.response.status() == StatusCode::SWITCHING_PROTOCOLS =>
                {
                    return Err(http_err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "101 Switching Protocols to a request that asked for no upgrade",
                    )));
                }
                Parsed::Final(answer) => return Ok(answer),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
            let n = poll_fn(|cx| self.poll_fill(cx)).await.map_err(http_err)?;
            if n == 0 {
                return Err(http_err(closed_early()));
            }
        }
    }

    /// Streams the client's body to the server, in chunks when its length
    /// is not known.
    async fn send_stream(
        &mut self,
        body: &mut RequestBody,
        framing: BodyFraming,
    ) -> Result<(), UpstreamError> {
        let reused = self.reused;
        let http_err = |error| UpstreamError::Http { error, reused };
        let chunked = framing == BodyFraming::Chunked;
        // What the head promised; a body that says otherwise is cut off
        // here rather than let its surplus reach the server as a request.
        // (hyper's server already holds a client to its length: this is
        // the second lock on the same door.)
        let mut left = match framing {
            BodyFraming::Empty => 0,
            BodyFraming::Length(n) => n,
            BodyFraming::Chunked => u64::MAX,
        };
        let wrong_length = || UpstreamError::Http {
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                "request body not of its announced length",
            ),
            reused,
        };
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            let frame = frame.map_err(UpstreamError::RequestBody)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            left = left
                .checked_sub(data.len() as u64)
                .ok_or_else(wrong_length)?;
            if chunked {
                self.write_buf.clear();
                http1::chunk_size_line(data.len(), &mut self.write_buf);
                self.write_buf.extend_from_slice(&data);
                self.write_buf.extend_from_slice(b"\r\n");
                self.io.write_all(&self.write_buf).await.map_err(http_err)?;
            } else {
                self.io.write_all(&data).await.map_err(http_err)?;
            }
        }
        if !chunked && left != 0 {
            return Err(wrong_length());
        }
        if chunked {
            self.io
                .write_all(http1::LAST_CHUNK)
                .await
                .map_err(http_err)?;
        }
        Ok(())
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
        Ok(Box::new(UpstreamConn::new(stream)))
    }

    /// Sends `req` to `upstream` on an idle connection or a new one, and
    /// waits for the answer's head. The connection then travels with the
    /// answer's body ([`UpstreamBody`]) and comes back to the pool when the
    /// body has been read to its end.
    ///
    /// `fresh`: open a new connection even if idle ones wait.
    pub async fn request(
        &self,
        upstream: &ServerRef,
        req: Request<RequestBody>,
        fresh: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
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
        let http1::Head {
            response,
            framing,
            keep_alive,
        } = conn.send(req).await?;
        let state = BodyDecoder::new(framing);
        Ok(response.map(|()| UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive,
            pool: self.clone(),
            upstream: upstream.clone(),
        }))
    }
}

/// A server's answer body, with the connection it arrives on: reading the
/// body reads the connection, and once the body has been read to its end
/// the connection goes back to the pool.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Box<UpstreamConn>>,
    state: BodyDecoder,
    keep_alive: bool,
    pool: Pool,
    upstream: ServerRef,
}

impl UpstreamBody {
    /// The next piece of body, reading the connection when the buffer has
    /// nothing for it.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match self.state.decode(&mut conn.read_buf) {
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
            }
            // nothing in the buffer for the body: read
            if ready!(conn.poll_fill(cx))? == 0 {
                if self.state.closed() {
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(closed_early())));
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match this.poll_next(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.conn = None; // broken: close it
                Poll::Ready(Some(Err(e)))
            }
            other => other.map(|next| next.map(|data| data.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Only a connection whose answer was read to its end, and that the
        // server did not ask to close, can carry another request.
        if !self.is_end_stream() || !self.keep_alive {
            return;
        }
        if let Some(mut conn) = self.conn.take() {
            if conn.is_reusable() {
                conn.reused = true;
                self.pool.put(self.upstream.address(), conn);
            }
        }
    }
}
