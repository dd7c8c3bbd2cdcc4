//! # The fast path: a healthy connection, both ways, in one task
//!
//! Most of the time no fault is set, and every request in the lab crosses
//! the proxy, so what a healthy hop costs matters more than anything else
//! here. While the link has no fault, a connection's two directions are
//! copied by one task with one buffer each (much like
//! `tokio::io::copy_bidirectional`): a wake-up from either socket moves
//! whatever can move, and there is no second task, no channel and no
//! per-read registration with the fault's watch channel.
//!
//! A fault must still reach this connection at once, even while it sits
//! idle in a pool. So the copy also waits on the link's watch channel,
//! registered once for the whole fast path, and after every read it checks
//! (one atomic load) whether the fault changed while those bytes arrived.
//! Either way the fast path stops and hands the connection over to the
//! [pumps](crate::pump), together with the bytes it had read and not yet
//! written: they are the first to feel the new fault. tokio's own
//! `copy_bidirectional` cannot be used for this, because stopping it loses
//! the bytes in its buffers.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::fault::ActiveFault;
use crate::pump::Leftover;

/// Bytes read per system call: an HTTP request, an answer page or a query
/// fits in one read, and a bulk transfer moves in large steps.
const BUF_SIZE: usize = 16 * 1024;

/// How the fast path ended.
#[derive(Debug)]
pub enum End {
    /// Both closes were passed on: the connection is over.
    Closed,
    /// The link's fault changed: the pumps take over with what each way had
    /// read and not yet written.
    Changed {
        to_service: Leftover,
        from_service: Leftover,
    },
    /// A socket failed: the connection must be cut.
    Failed(io::Error),
}

/// Copies `client` ⇄ `service` until both sides have closed, a socket
/// fails, or the link's fault changes. `faults` must have been seen
/// (`borrow_and_update`) with no fault set.
pub async fn both_ways(
    client: &mut TcpStream,
    service: &mut TcpStream,
    faults: &mut watch::Receiver<Arc<ActiveFault>>,
    to_service_bytes: &AtomicU64,
    from_service_bytes: &AtomicU64,
) -> End {
    // Two receivers: one is borrowed by the waiting future, the other checks
    // after each read whether a change slipped in between two polls.
    let check = faults.clone();
    let changed = faults.changed();
    tokio::pin!(changed);
    // Once the proxy shuts down its sender is gone: keep copying.
    let mut watching = true;
    let mut to_service = Half::new();
    let mut from_service = Half::new();

    poll_fn(|cx| {
        if watching {
            match changed.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => {
                    return Poll::Ready(End::Changed {
                        to_service: to_service.take(),
                        from_service: from_service.take(),
                    })
                }
                Poll::Ready(Err(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        let there = to_service.poll_copy(cx, client, service, to_service_bytes, &check);
        let back = from_service.poll_copy(cx, service, client, from_service_bytes, &check);
        match (there, back) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(End::Failed(e)),
            (Poll::Ready(Ok(Step::Changed)), _) | (_, Poll::Ready(Ok(Step::Changed))) => {
                Poll::Ready(End::Changed {
                    to_service: to_service.take(),
                    from_service: from_service.take(),
                })
            }
            (Poll::Ready(Ok(Step::Closed)), Poll::Ready(Ok(Step::Closed))) => {
                Poll::Ready(End::Closed)
            }
            _ => Poll::Pending,
        }
    })
    .await
}

enum Step {
    /// This way's close was passed on.
    Closed,
    /// The fault changed while bytes (or a close) were arriving.
    Changed,
}

/// One way of the copy: a buffer and where it stands.
struct Half {
    buf: Box<[u8]>,
    /// `buf[pos..end]` has been read and not yet written.
    pos: usize,
    end: usize,
    /// The peer's close was read and is still to be passed on.
    eof_read: bool,
    /// The close was passed on; this way is over.
    closed: bool,
}

impl Half {
    fn new() -> Self {
        Self {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof_read: false,
            closed: false,
        }
    }

    /// What this way still owes the other side, for the pumps.
    fn take(&mut self) -> Leftover {
        Leftover {
            data: self.buf[self.pos..self.end].to_vec(),
            eof: self.eof_read && !self.closed,
            closed: self.closed,
        }
    }

    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        bytes: &AtomicU64,
        check: &watch::Receiver<Arc<ActiveFault>>,
    ) -> Poll<io::Result<Step>> {
        loop {
            if self.closed {
                return Poll::Ready(Ok(Step::Closed));
            }
            if self.pos < self.end {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                continue;
            }
            if self.eof_read {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.closed = true;
                continue;
            }
            let mut read = ReadBuf::new(&mut self.buf);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            (self.pos, self.end) = (0, n);
            if n == 0 {
                self.eof_read = true;
            } else {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            if check.has_changed().unwrap_or(false) {
                return Poll::Ready(Ok(Step::Changed));
            }
        }
    }
}
