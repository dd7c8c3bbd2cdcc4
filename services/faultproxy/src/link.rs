//! # A link: one listening port, one upstream, one fault
//!
//! A link is the proxy's picture of one network path: clients dial its
//! listening address, and each connection is forwarded to its upstream (an
//! address or a DNS name, resolved again for every connection, so a
//! container that comes back with a new address is found), or, when the
//! service runs the link in its own process, handed to it
//! ([`local`](crate::local)). The link's fault
//! lives in a `tokio::sync::watch` channel: setting a fault stores a new
//! value and wakes every connection (on the [fast path](crate::fast) or in
//! its pumps), which is how a fault reaches connections that are already
//! open.
//!
//! `reset` is the one fault the listener itself obeys: while it holds, the
//! port refuses connections (the client's SYN gets an RST, exactly what a
//! crashed service looks like). To give the port back on heal without any
//! risk of another program taking it in between, the link binds a second
//! socket to the same address (SO_REUSEPORT) *before* it closes the
//! listener; that socket holds the port without listening, and listening on
//! it again is the heal.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lab_contract::faultproxy::{Direction, Fault, LinkStatus};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::fast;
use crate::fault::ActiveFault;
use crate::local::{Accepted, LocalStream};
use crate::pump::{pump, Cut, Leftover, NoFinOnDrop, ReadEnd, WriteEnd};
use crate::LinkSpec;

const BACKLOG: u32 = 1024;

/// One link's shared state: its addresses, its fault, its counters.
#[derive(Debug)]
pub struct Link {
    pub name: String,
    /// The address actually bound (a `:0` port in the spec is resolved here).
    pub listen: SocketAddr,
    pub upstream: String,
    connect_timeout: Duration,
    /// For an [in-process](crate::local) link: where accepted connections
    /// go, instead of being dialled through to the upstream.
    local: Option<mpsc::Sender<Accepted>>,
    faults: watch::Sender<Arc<ActiveFault>>,
    open: AtomicU64,
    total: AtomicU64,
    pub(crate) to_service: AtomicU64,
    pub(crate) from_service: AtomicU64,
}

impl Link {
    /// Binds the link's listening port; the caller then runs [`Link::serve`].
    /// With `local`, the link is [in-process](crate::local): its connections
    /// are sent there rather than dialled through to the upstream.
    pub(crate) fn bind(
        spec: &LinkSpec,
        connect_timeout: Duration,
        local: Option<mpsc::Sender<Accepted>>,
    ) -> io::Result<(Arc<Self>, TcpListener)> {
        if spec.listen.port() != 0 {
            // SO_REUSEPORT (needed to hold the port during a reset) would let
            // a second proxy share the port without a word; a probe without
            // it fails if anything already listens there.
            let probe = if spec.listen.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            probe.set_reuseaddr(true)?;
            probe.bind(spec.listen)?;
        }
        let socket = reusable_socket(spec.listen)?;
        socket.bind(spec.listen)?;
        let listener = socket.listen(BACKLOG)?;
        let link = Arc::new(Self {
            name: spec.name.clone(),
            listen: listener.local_addr()?,
            upstream: spec.upstream.clone(),
            connect_timeout,
            local,
            faults: watch::Sender::new(Arc::new(ActiveFault::healthy())),
            open: AtomicU64::new(0),
            total: AtomicU64::new(0),
            to_service: AtomicU64::new(0),
            from_service: AtomicU64::new(0),
        });
        Ok((link, listener))
    }

    /// Sets (`Some`) or heals (`None`) the link's fault. Setting the fault
    /// the link already has changes nothing (no wake-up, the bandwidth
    /// bucket keeps its bookings): both calls are idempotent.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let changed = self.faults.send_if_modified(|current| {
            if current.spec == fault {
                return false;
            }
            *current = Arc::new(
                fault
                    .clone()
                    .map_or_else(ActiveFault::healthy, ActiveFault::new),
            );
            true
        });
        if changed {
            match &fault {
                Some(f) => tracing::info!(link = %self.name, fault = ?f, "fault set"),
                None => tracing::info!(link = %self.name, "fault healed"),
            }
        }
    }

    /// The link as `GET /links` shows it.
    pub fn status(&self) -> LinkStatus {
        LinkStatus {
            name: self.name.clone(),
            listen: self.listen.to_string(),
            upstream: self.upstream.clone(),
            fault: self.faults.borrow().spec.clone(),
            open_connections: self.open.load(Ordering::Relaxed),
            total_connections: self.total.load(Ordering::Relaxed),
            bytes_to_service: self.to_service.load(Ordering::Relaxed),
            bytes_from_service: self.from_service.load(Ordering::Relaxed),
        }
    }

    /// Accepts connections until the task is aborted, obeying `reset`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut faults = self.faults.subscribe();
        let mut listener = Some(listener);
        // The socket that holds the port while `reset` refuses connections.
        let mut held: Option<TcpSocket> = None;
        loop {
            let reset = faults.borrow_and_update().reset;
            if reset && listener.is_some() {
                match self.hold_port() {
                    Ok(socket) => {
                        held = Some(socket);
                        listener = None;
                    }
                    Err(e) => tracing::error!(link = %self.name, error = %e,
                        "cannot hold the port to refuse connections; new connections are reset instead"),
                }
            } else if !reset && listener.is_none() {
                match held.take().map(|s| s.listen(BACKLOG)) {
                    Some(Ok(l)) => listener = Some(l),
                    Some(Err(e)) => {
                        // Cannot happen on Linux for a socket we bound; try
                        // a fresh bind rather than give up the link.
                        tracing::error!(link = %self.name, error = %e, "cannot listen again; retrying");
                        if let Ok(s) = self.hold_port() {
                            held = Some(s);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    None => match self.hold_port().and_then(|s| s.listen(BACKLOG)) {
                        Ok(l) => listener = Some(l),
                        Err(e) => {
                            tracing::error!(link = %self.name, error = %e, "cannot listen again; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                }
            }

            let Some(l) = &listener else {
                if faults.changed().await.is_err() {
                    return;
                }
                continue;
            };
            tokio::select! {
                changed = faults.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                accepted = l.accept() => match accepted {
                    Ok((client, peer)) => {
                        tokio::spawn(Arc::clone(&self).connection(client, peer));
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: wait a little
                        // rather than spin.
                        tracing::warn!(link = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    fn hold_port(&self) -> io::Result<TcpSocket> {
        let socket = reusable_socket(self.listen)?;
        socket.bind(self.listen)?;
        Ok(socket)
    }

    /// Serves one client connection from accept to close.
    async fn connection(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let open = Open::new(&self);
        let _ = client.set_nodelay(true);

        let mut faults = self.faults.subscribe();
        loop {
            let fault = faults.borrow_and_update().clone();
            if fault.reset {
                let _ = client.set_zero_linger();
                return;
            }
            if !fault.holds_new_connections() {
                break;
            }
            if faults.changed().await.is_err() {
                return;
            }
        }

        if let Some(service) = &self.local {
            // The service is in this process: it takes the socket itself.
            let stream = LocalStream::new(client, Arc::clone(&self), faults, open);
            let _ = service.send((stream, peer)).await;
            return;
        }
        let _open = open;

        let upstream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.upstream.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(link = %self.name, upstream = %self.upstream, error = %e, "cannot reach the upstream; resetting the client");
                let _ = client.set_zero_linger();
                return;
            }
            Err(_) => {
                tracing::warn!(link = %self.name, upstream = %self.upstream, timeout = ?self.connect_timeout, "the upstream did not answer in time; resetting the client");
                let _ = client.set_zero_linger();
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let mut client = client;
        let mut upstream = upstream;

        // A healthy link: both ways in this one task, until a fault is set.
        let (there, back) = if faults.borrow_and_update().is_clear() {
            match fast::both_ways(
                &mut client,
                &mut upstream,
                &mut faults,
                &self.to_service,
                &self.from_service,
            )
            .await
            {
                fast::End::Closed => return,
                fast::End::Failed(e) => {
                    tracing::debug!(link = %self.name, error = %e, "connection failed");
                    let _ = client.set_zero_linger();
                    let _ = upstream.set_zero_linger();
                    return;
                }
                fast::End::Changed {
                    to_service,
                    from_service,
                } => (to_service, from_service),
            }
        } else {
            Default::default()
        };

        let (client_r, client_w) = client.into_split();
        let (upstream_r, upstream_w) = upstream.into_split();
        self.relay(
            (client_r, client_w),
            (upstream_r, upstream_w),
            faults,
            there,
            back,
        )
        .await;
    }

    /// Copies a connection both ways through the link's fault (the pumps)
    /// until both closes are passed on or the connection is cut. `there`
    /// and `back` are what the fast path had read and not yet written.
    pub(crate) async fn relay<CR, CW, UR, UW>(
        self: &Arc<Self>,
        (client_r, client_w): (CR, CW),
        (upstream_r, upstream_w): (UR, UW),
        faults: watch::Receiver<Arc<ActiveFault>>,
        there: Leftover,
        back: Leftover,
    ) where
        CR: ReadEnd,
        CW: WriteEnd,
        UR: ReadEnd,
        UW: WriteEnd,
    {
        let (client_w, upstream_w) = (NoFinOnDrop::new(client_w), NoFinOnDrop::new(upstream_w));
        // The answers get a task of their own, so each direction's pump is
        // woken only by its own socket.
        let back = {
            let link = Arc::clone(self);
            let faults = faults.clone();
            tokio::spawn(async move {
                pump(
                    upstream_r,
                    client_w,
                    Direction::FromService,
                    faults,
                    &link.from_service,
                    back,
                )
                .await
            })
        };
        let mut back = AbortOnDrop(back);
        let forth = pump(
            client_r,
            upstream_w,
            Direction::ToService,
            faults,
            &self.to_service,
            there,
        );
        tokio::pin!(forth);
        tokio::select! {
            r = &mut forth => {
                // Cut: the other pump is cut with it (drop aborts it).
                // Closed: answers may still flow (a half-close).
                if r.is_ok() {
                    let _ = (&mut back.0).await;
                }
            }
            r = &mut back.0 => {
                match r {
                    Ok(Ok(())) => {
                        let _ = forth.await;
                    }
                    Ok(Err(cut)) => log_cut(&self.name, &cut),
                    Err(_) => {}
                }
            }
        }
    }
}

fn log_cut(link: &str, cut: &Cut) {
    match cut {
        Cut::Reset => tracing::debug!(link, "connection cut by a reset fault"),
        Cut::Io(e) => tracing::debug!(link, error = %e, "connection failed"),
    }
}

fn reusable_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    Ok(socket)
}

/// Counts a connection as open for as long as it is held.
pub(crate) struct Open(Arc<Link>);

impl Open {
    fn new(link: &Arc<Link>) -> Self {
        link.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(link))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
