//! # Pumps: copying one connection's bytes, one way, through the link's fault
//!
//! A proxied connection is two ends (the client's socket, and the
//! service's: a socket, or a pipe to a service in this
//! [process](crate::local)) and two pumps: one copies client → service, the other service → client. Each pump
//! holds a `watch::Receiver` on its link's fault, so a fault set through the
//! admin API reaches connections that are already open (a pooled database
//! connection feels a new latency on its very next query): the pump waits on
//! "bytes to read" *and* "the fault changed" at the same time.
//!
//! A connection starts on the [fast path](crate::fast), both ways in one
//! task, and comes here once the link's fault changes; it stays here after
//! a heal. With no fault, a pump is a plain copy: read into a buffer, write
//! it out. With a fault, it becomes
//! a *delay line*: every chunk read is stamped with the time it is due
//! (now + latency ± jitter, never earlier than the chunk before it, so the
//! bytes of one connection never overtake each other), queued, and written
//! when due, through the link's token bucket when there is a bandwidth limit.
//! Reading goes on while earlier chunks wait, as on a real long link where
//! many packets are in flight at once. A close (the peer's FIN) travels
//! through the same line, after the data, plus the slow-close delay.
//! A blackhole stops both reading and writing: the bytes wait in the
//! kernel's buffers, like packets a dead link keeps dropping and TCP keeps
//! resending, and flow again once it is healed.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lab_contract::faultproxy::Direction;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::fault::ActiveFault;

/// Bytes read per system call. An HTTP request or a query fits in one read.
const BUF_SIZE: usize = 16 * 1024;

/// At most this many bytes wait in a pump's delay line; beyond it the pump
/// stops reading and the sender's TCP window closes, as on a real link.
const MAX_IN_FLIGHT: usize = 1024 * 1024;

/// Why a pump stopped before a clean close: either way the whole
/// connection is cut with RST on both sides.
#[derive(Debug)]
pub enum Cut {
    /// The link's fault is `reset`.
    Reset,
    /// A socket failed (the peer reset, or vanished).
    Io(io::Error),
}

/// What the [fast path](crate::fast) had in hand when a fault was set, for
/// the pump of the same way to send first (through the new fault).
#[derive(Debug, Default)]
pub struct Leftover {
    /// Read from one side, not yet written to the other.
    pub data: Vec<u8>,
    /// The peer's close was read and not yet passed on.
    pub eof: bool,
    /// The close was already passed on: this way is over, no pump needed.
    pub closed: bool,
}

enum Item {
    Data(Bytes),
    /// The peer closed its side: pass the close on.
    Eof,
}

/// One end of a connection as a pump reads it: a TCP socket's read half, or
/// the proxy's end of an [in-process](crate::local) pipe to the app.
pub trait ReadEnd: AsyncRead + Unpin + Send + 'static {
    /// Makes the connection end abruptly once this end is dropped: an RST
    /// for TCP. A pipe needs nothing: dropping it ends it.
    fn sever(&self) {}
}

/// One end of a connection as a pump writes to it.
pub trait WriteEnd: AsyncWrite + Unpin + Send + 'static {
    /// As [`ReadEnd::sever`].
    fn sever(&self) {}
    /// Lets go of the end without passing a close on. tokio's TCP write
    /// half would send a FIN when dropped, and a cut connection must end
    /// with an RST alone.
    fn release(self)
    where
        Self: Sized,
    {
    }
}

impl ReadEnd for OwnedReadHalf {
    fn sever(&self) {
        // SO_LINGER 0: closing sends RST instead of FIN, at once.
        let _ = self.as_ref().set_zero_linger();
    }
}

impl WriteEnd for OwnedWriteHalf {
    fn sever(&self) {
        let _ = self.as_ref().set_zero_linger();
    }

    fn release(self) {
        self.forget();
    }
}

impl ReadEnd for ReadHalf<DuplexStream> {}
impl WriteEnd for WriteHalf<DuplexStream> {}

/// Copies `from` → `to` until the close has been passed on (`Ok`) or the
/// connection must be cut (`Err`; both ends are then [severed](ReadEnd::sever),
/// which takes effect when their last half is dropped).
pub async fn pump<R: ReadEnd, W: WriteEnd>(
    mut from: R,
    mut to: NoFinOnDrop<W>,
    way: Direction,
    faults: watch::Receiver<Arc<ActiveFault>>,
    bytes: &AtomicU64,
    first: Leftover,
) -> Result<(), Cut> {
    let Some(w) = to.0.as_mut() else {
        return Ok(());
    };
    if first.closed {
        return Ok(());
    }
    let result = copy(&mut from, w, way, faults, bytes, first).await;
    if result.is_err() {
        from.sever();
        w.sever();
    }
    result
}

/// A write end that passes no close on when dropped: the close is sent
/// only where one is passed on (`shutdown` in the pump), and a dropped end
/// just lets go (see [`WriteEnd::release`]). The end is wrapped before the
/// pump's future is made: a pump dropped before its first poll (its partner
/// was cut at once) sends no FIN either.
pub struct NoFinOnDrop<W: WriteEnd>(Option<W>);

impl<W: WriteEnd> NoFinOnDrop<W> {
    pub fn new(half: W) -> Self {
        Self(Some(half))
    }
}

impl<W: WriteEnd> Drop for NoFinOnDrop<W> {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.release();
        }
    }
}

async fn copy<R: ReadEnd, W: WriteEnd>(
    from: &mut R,
    to: &mut W,
    way: Direction,
    mut faults: watch::Receiver<Arc<ActiveFault>>,
    bytes: &AtomicU64,
    first: Leftover,
) -> Result<(), Cut> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut fault = faults.borrow_and_update().clone();
    // When the proxy shuts down the sender goes away: keep the last fault.
    let mut watching = true;
    let mut line: VecDeque<(Instant, Item)> = VecDeque::new();
    let mut line_bytes = 0usize;
    // A piece taken from the line that waits for its slot in the bucket.
    let mut pending: Option<(Instant, Bytes)> = None;
    let mut last_due = Instant::now();
    let mut eof_read = false;

    // What the fast path handed over is sent first, as if just read: the
    // fault that stopped the fast path is the first thing it feels.
    let shape = fault.shaping(way);
    if !first.data.is_empty() {
        last_due += shape.sample_delay();
        line_bytes += first.data.len();
        line.push_back((last_due, Item::Data(Bytes::from(first.data))));
    }
    if first.eof {
        eof_read = true;
        let due = (Instant::now() + shape.latency + shape.slow_close).max(last_due);
        line.push_back((due, Item::Eof));
    }

    loop {
        if fault.reset {
            return Err(Cut::Reset);
        }
        let shape = fault.shaping(way);

        if shape.is_clear() && line.is_empty() && pending.is_none() {
            // Fast path: a plain copy, watching for a fault at every read.
            let n = tokio::select! {
                biased;
                r = from.read(&mut buf) => r.map_err(Cut::Io)?,
                changed = faults.changed(), if watching => {
                    watching = changed.is_ok();
                    fault = faults.borrow_and_update().clone();
                    continue;
                }
            };
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            if watching && faults.has_changed().unwrap_or(false) {
                // The fault changed while these bytes (or this close) were
                // arriving: they are the first to feel it.
                fault = faults.borrow_and_update().clone();
                let shape = fault.shaping(way);
                let now = Instant::now();
                if n == 0 {
                    eof_read = true;
                    line.push_back((now + shape.latency + shape.slow_close, Item::Eof));
                } else {
                    last_due = now + shape.sample_delay();
                    line_bytes += n;
                    line.push_back((last_due, Item::Data(Bytes::copy_from_slice(&buf[..n]))));
                }
                continue;
            }
            if n == 0 {
                to.shutdown().await.map_err(Cut::Io)?;
                return Ok(());
            }
            to.write_all(&buf[..n]).await.map_err(Cut::Io)?;
            continue;
        }

        // Slow path: the delay line.
        let now = Instant::now();
        let wake = if shape.blackhole {
            None
        } else if let Some((at, _)) = &pending {
            Some(*at)
        } else {
            line.front()
                .map(|(due, _)| if shape.delays() { *due } else { now })
        };
        let can_read = !eof_read && !shape.blackhole && line_bytes < MAX_IN_FLIGHT;

        if wake.is_some_and(|at| at <= now) {
            // Something is due: send it now. (Sleeping until "now" would
            // cost a timer tick, up to a millisecond, on every chunk.)
            if let Some((_, piece)) = pending.take() {
                to.write_all(&piece).await.map_err(Cut::Io)?;
                continue;
            }
            let Some((due, item)) = line.pop_front() else {
                continue;
            };
            match item {
                Item::Eof => {
                    to.shutdown().await.map_err(Cut::Io)?;
                    return Ok(());
                }
                Item::Data(mut data) => match &shape.bucket {
                    None => {
                        line_bytes -= data.len();
                        to.write_all(&data).await.map_err(Cut::Io)?;
                    }
                    Some(bucket) => {
                        let piece = data.split_to(data.len().min(bucket.max_chunk));
                        line_bytes -= piece.len();
                        if !data.is_empty() {
                            line.push_front((due, Item::Data(data)));
                        }
                        let at = bucket.reserve(piece.len());
                        if at <= Instant::now() {
                            to.write_all(&piece).await.map_err(Cut::Io)?;
                        } else {
                            pending = Some((at, piece));
                        }
                    }
                },
            }
            continue;
        }

        tokio::select! {
            biased;
            changed = faults.changed(), if watching => {
                watching = changed.is_ok();
                fault = faults.borrow_and_update().clone();
            }
            // Due: the next turn of the loop sends it.
            _ = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            r = from.read(&mut buf), if can_read => {
                let n = r.map_err(Cut::Io)?;
                let now = Instant::now();
                if n == 0 {
                    eof_read = true;
                    let due = (now + shape.latency + shape.slow_close).max(last_due);
                    line.push_back((due, Item::Eof));
                } else {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let due = (now + shape.sample_delay()).max(last_due);
                    last_due = due;
                    line_bytes += n;
                    line.push_back((due, Item::Data(Bytes::copy_from_slice(&buf[..n]))));
                }
            }
            else => {
                // Nothing can move and nobody can change the fault any more:
                // the proxy is shutting down.
                return Ok(());
            }
        }
    }
}
