//! Helpers for the fault proxy's tests: real servers on 127.0.0.1 behind a
//! real proxy, and a client for its admin API.

#![allow(dead_code)] // each test file uses its own share of the helpers

use std::net::SocketAddr;
use std::time::Duration;

use lab_contract::faultproxy::{Fault, LinkStatus};
use lab_faultproxy::{Config, LinkSpec, LocalStream, Running};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// An echo server: every byte read is written back. Each read's arrival time
/// is sent on the returned channel, so a test can tell the two directions'
/// delays apart (the test and the server share one clock).
pub async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            s.set_nodelay(true).unwrap();
            let tx = tx.clone();
            tokio::spawn(echo(s, move |_| {
                let _ = tx.send(Instant::now());
            }));
        }
    });
    (addr, rx)
}

/// Writes back every byte read from `s` until it closes, calling `read`
/// after each read, before the answer.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, mut read: impl FnMut(&S)) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                read(&s);
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A server that reads everything and reports, per connection, the byte
/// count and the times of the first and last bytes.
pub async fn sink_server() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(usize, Instant, Instant)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0;
                let mut first = None;
                let mut last = Instant::now();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    total += n;
                }
                let _ = tx.send((total, first.unwrap_or(last), last));
            });
        }
    });
    (addr, rx)
}

/// A proxy with one link per (name, upstream), every port on 127.0.0.1.
pub async fn proxy(links: &[(&str, String)]) -> Proxy {
    let config = Config {
        links: links
            .iter()
            .map(|(name, upstream)| LinkSpec {
                name: name.to_string(),
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream: upstream.clone(),
            })
            .collect(),
        admin: "127.0.0.1:0".parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        in_process: None,
    };
    let running = lab_faultproxy::start(config).await.unwrap();
    Proxy {
        admin: format!("http://{}", running.admin),
        http: reqwest::Client::new(),
        running,
    }
}

pub struct Proxy {
    pub running: Running,
    pub admin: String,
    pub http: reqwest::Client,
}

impl Proxy {
    /// The address clients dial for `link`.
    pub fn addr(&self, link: &str) -> SocketAddr {
        self.running.link(link).unwrap().listen
    }

    pub async fn connect(&self, link: &str) -> TcpStream {
        let s = TcpStream::connect(self.addr(link)).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sets a fault through the admin API, as the CLI will.
    pub async fn set(&self, link: &str, fault: Fault) -> LinkStatus {
        let r = self
            .http
            .put(format!("{}/links/{link}/fault", self.admin))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "PUT fault: {}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn heal(&self, link: &str) -> LinkStatus {
        let r = self
            .http
            .delete(format!("{}/links/{link}/fault", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// Writes `msg`, reads as many bytes back; returns the round trip.
pub async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("no echo within 5 s")
        .unwrap();
    assert_eq!(back, msg);
    start.elapsed()
}

pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A proxy whose one link, `svc`, is served in this process (as lab-app
/// serves its own port) by an echo service that reads the accepted streams
/// itself. Each read's arrival time is sent on the returned channel, with
/// whether the stream was still on its own socket (not yet moved to the
/// pumps by a fault).
pub async fn in_process_echo() -> (Proxy, mpsc::UnboundedReceiver<(Instant, bool)>) {
    let mut running = lab_faultproxy::start(in_process_config("svc"))
        .await
        .unwrap();
    let mut local = running
        .local
        .take()
        .expect("the in-process link's listener");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((s, _peer)) = local.accept().await {
            let tx = tx.clone();
            tokio::spawn(echo(s, move |s: &LocalStream| {
                let _ = tx.send((Instant::now(), s.is_direct()));
            }));
        }
    });
    let proxy = Proxy {
        admin: format!("http://{}", running.admin),
        http: reqwest::Client::new(),
        running,
    };
    (proxy, rx)
}

/// One link, `svc`, on 127.0.0.1, whose connections the link named
/// `in_process` takes in this process.
pub fn in_process_config(in_process: &str) -> Config {
    Config {
        links: vec![LinkSpec {
            name: "svc".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            // Never dialled: the service is in this process.
            upstream: "127.0.0.1:1".into(),
        }],
        admin: "127.0.0.1:0".parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        in_process: Some(in_process.into()),
    }
}

/// A blackhole on `svc` (an echo behind it) hangs an open connection and a
/// new one, and a heal delivers what each had sent.
pub async fn blackhole_hangs_the_link_and_heal_delivers(p: &Proxy) {
    let mut open = p.connect("svc").await;
    round_trip(&mut open, b"warm").await;

    p.set(
        "svc",
        Fault {
            blackhole: true,
            ..Fault::default()
        },
    )
    .await;
    open.write_all(b"anyone?").await.unwrap();
    let mut buf = [0u8; 7];
    assert!(
        timeout(Duration::from_millis(400), open.read_exact(&mut buf))
            .await
            .is_err(),
        "an answer came through a blackhole"
    );
    // A new connection is accepted, and hangs too.
    let mut fresh = timeout(Duration::from_secs(1), TcpStream::connect(p.addr("svc")))
        .await
        .unwrap()
        .unwrap();
    fresh.write_all(b"hello?!").await.unwrap();
    let mut buf2 = [0u8; 7];
    assert!(
        timeout(Duration::from_millis(300), fresh.read_exact(&mut buf2))
            .await
            .is_err()
    );

    p.heal("svc").await;
    timeout(Duration::from_secs(2), open.read_exact(&mut buf))
        .await
        .expect("held bytes not delivered after heal")
        .unwrap();
    assert_eq!(&buf, b"anyone?");
    timeout(Duration::from_secs(2), fresh.read_exact(&mut buf2))
        .await
        .expect("held connection not served after heal")
        .unwrap();
    assert_eq!(&buf2, b"hello?!");
}

/// A reset on `svc` (an echo behind it) cuts an open connection with an
/// RST, refuses new ones and lets go of the cut one; a heal opens the port
/// again.
pub async fn reset_refuses_and_cuts_open_connections(p: &Proxy) {
    let mut open = p.connect("svc").await;
    round_trip(&mut open, b"warm").await;

    p.set(
        "svc",
        Fault {
            reset: true,
            ..Fault::default()
        },
    )
    .await;
    let mut buf = [0u8; 1];
    let read = timeout(Duration::from_secs(2), open.read(&mut buf))
        .await
        .expect("open connection not cut");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "the open connection should see an RST"
    );
    let refused = TcpStream::connect(p.addr("svc")).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    // The cut connection is let go of (at once by the proxy's own pumps,
    // as soon as it reads its end by a service in this process).
    let link = p.running.link("svc").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while link.status().open_connections > 0 {
        assert!(
            Instant::now() < deadline,
            "the cut connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    p.heal("svc").await;
    let mut again = p.connect("svc").await;
    round_trip(&mut again, b"back").await;
}
