//! # An in-process link: the proxy inside the service's own process
//!
//! A proxy in its own process costs every request a second TCP hop: the
//! proxy receives the request and sends it on over loopback, and the
//! service receives it again, and the answer crosses the same two sockets
//! back. For a service that answers in a few microseconds (a web server's
//! cheapest page) that hop costs about as much as the answer, and a busy
//! machine serves a quarter fewer requests (docs/architecture.md has the
//! measurement). When the service is ours, it can do better: it runs the
//! proxy's links inside its own process, and the link of its own port hands
//! each accepted connection to it instead of dialling it.
//!
//! While the link has no fault, the service reads and writes the client's
//! socket itself, through a [`LocalStream`] that only counts the bytes and
//! looks (one atomic load per read or write) for a new fault. When a fault
//! is set, even on a connection that sits idle in a balancer's pool, the
//! stream moves the socket to the proxy's [pumps](crate::pump) and gives
//! the service the other end of an in-memory pipe instead: from then on
//! every byte goes through the fault, exactly as through the proxy's own
//! process, and the connection stays there after a heal. Nothing is lost in
//! the move: the stream holds no bytes of its own, so whatever had not been
//! read is still in the kernel's socket, where the pumps find it.
//!
//! The service sees the stream as an ordinary connection: [`LocalListener`]
//! is what `axum::serve` accepts from.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::fault::ActiveFault;
use crate::link::{Link, Open};
use crate::pump::Leftover;

/// Bytes the pipe between the pumps and the service holds each way: an
/// answer page fits, and a larger one waits for the pump like on a socket.
const PIPE_SIZE: usize = 64 * 1024;

/// Connections accepted for the service and not yet taken by it; beyond
/// this the link stops accepting and clients wait in the kernel's backlog.
pub(crate) const QUEUE: usize = 1024;

/// What the link's accept loop sends the service: a connection and its peer.
pub(crate) type Accepted = (LocalStream, SocketAddr);

/// The service's side of an in-process link: the connections its clients
/// made to the link's port, in the order they were accepted.
pub struct LocalListener {
    accepted: mpsc::Receiver<Accepted>,
    listen: SocketAddr,
}

impl LocalListener {
    pub(crate) fn new(accepted: mpsc::Receiver<Accepted>, listen: SocketAddr) -> Self {
        Self { accepted, listen }
    }

    /// The next connection; `None` once the proxy has stopped.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.accepted.recv().await
    }

    /// The link's port, where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }
}

impl axum::serve::Listener for LocalListener {
    type Io = LocalStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The proxy stopped: no connection will come any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.listen)
    }
}

/// One client connection, as the service reads and writes it.
pub struct LocalStream {
    io: Io,
    link: Arc<Link>,
    /// The link's fault, as last seen: `has_changed` is one atomic load.
    faults: watch::Receiver<Arc<ActiveFault>>,
    /// Waits for the fault to change while the service waits on the socket
    /// (made once per wait, not on every poll). Resolves to false once the
    /// proxy has stopped and nothing can change any more.
    change: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    watching: bool,
    _open: Open,
}

enum Io {
    /// No fault yet: the client's own socket.
    Direct(TcpStream),
    /// A fault was set: the service's end of the pipe to the pumps.
    Relayed(DuplexStream),
    /// Only while moving from one to the other.
    Moving,
}

impl LocalStream {
    pub(crate) fn new(
        socket: TcpStream,
        link: Arc<Link>,
        faults: watch::Receiver<Arc<ActiveFault>>,
        open: Open,
    ) -> Self {
        let mut stream = Self {
            io: Io::Direct(socket),
            link,
            faults,
            change: None,
            watching: true,
            _open: open,
        };
        // A fault set between the accept and now applies already.
        stream.apply();
        stream
    }

    /// Whether the connection still goes straight to the client's socket
    /// (false once a fault has moved it to the pumps).
    pub fn is_direct(&self) -> bool {
        matches!(self.io, Io::Direct(_))
    }

    /// Takes a new fault into account: one that does anything moves the
    /// connection to the pumps, which start with it.
    fn follow(&mut self) {
        if self.watching && self.is_direct() && self.faults.has_changed().unwrap_or(false) {
            self.apply();
        }
    }

    /// Applies the link's current fault to a connection still on its own
    /// socket.
    fn apply(&mut self) {
        let fault = self.faults.borrow_and_update().clone();
        // The version seen moved on: the next wait starts from it.
        self.change = None;
        if fault.is_clear() {
            return;
        }
        let Io::Direct(socket) = std::mem::replace(&mut self.io, Io::Moving) else {
            unreachable!("checked above");
        };
        let (service_end, proxy_end) = tokio::io::duplex(PIPE_SIZE);
        let link = Arc::clone(&self.link);
        let faults = self.faults.clone();
        tokio::spawn(async move {
            let client = socket.into_split();
            let service = tokio::io::split(proxy_end);
            link.relay(
                client,
                service,
                faults,
                Leftover::default(),
                Leftover::default(),
            )
            .await;
        });
        self.io = Io::Relayed(service_end);
    }

    /// Registers the task to be woken by a fault change while the socket
    /// has nothing for it: a connection idle in a pool feels a new fault at
    /// once. True if a change has already come.
    fn wait_for_change(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.watching || !self.is_direct() {
            return false;
        }
        let change = self.change.get_or_insert_with(|| {
            let mut faults = self.faults.clone();
            Box::pin(async move { faults.changed().await.is_ok() })
        });
        match change.as_mut().poll(cx) {
            Poll::Pending => false,
            Poll::Ready(changed) => {
                self.change = None;
                self.watching = changed;
                changed
            }
        }
    }
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            this.follow();
            match &mut this.io {
                Io::Direct(socket) => {
                    let before = buf.filled().len();
                    match Pin::new(socket).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let n = buf.filled().len() - before;
                            this.link.to_service.fetch_add(n as u64, Ordering::Relaxed);
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending if this.wait_for_change(cx) => continue,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Io::Relayed(pipe) => return Pin::new(pipe).poll_read(cx, buf),
                Io::Moving => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            }
        }
    }
}

/// What a write is, as either kind of connection end takes it.
type Write<'a> = &'a mut dyn FnMut(
    Pin<&mut (dyn AsyncWrite + Unpin)>,
    &mut Context<'_>,
) -> Poll<io::Result<usize>>;

impl LocalStream {
    /// Runs `write` on the socket while the link has no fault (counting the
    /// bytes), on the pipe to the pumps once a fault has moved it there.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: Write<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            self.follow();
            match &mut self.io {
                Io::Direct(socket) => match write(Pin::new(socket), cx) {
                    Poll::Ready(Ok(n)) => {
                        self.link
                            .from_service
                            .fetch_add(n as u64, Ordering::Relaxed);
                        return Poll::Ready(Ok(n));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending if self.wait_for_change(cx) => continue,
                    Poll::Pending => return Poll::Pending,
                },
                Io::Relayed(pipe) => return write(Pin::new(pipe), cx),
                Io::Moving => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            }
        }
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, &mut |io, cx| io.poll_write(cx, data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, &mut |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        // Asked once, when the connection starts: on its own socket.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Direct(socket) => Pin::new(socket).poll_flush(cx),
            Io::Relayed(pipe) => Pin::new(pipe).poll_flush(cx),
            Io::Moving => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Direct(socket) => Pin::new(socket).poll_shutdown(cx),
            Io::Relayed(pipe) => Pin::new(pipe).poll_shutdown(cx),
            Io::Moving => Poll::Ready(Ok(())),
        }
    }
}
