//! Helpers for the fault proxy's tests: real servers on 127.0.0.1 behind a
//! real proxy, and a client for its admin API.

#![allow(dead_code)] // each test file uses its own share of the helpers

use std::net::SocketAddr;
use std::time::Duration;

use lab_contract::faultproxy::{Fault, LinkStatus};
use lab_faultproxy::{Config, LinkSpec, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// An echo server: every byte read is written back. Each read's arrival time
/// is sent on the returned channel, so a test can tell the two directions'
/// delays apart (the test and the server share one clock).
pub async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            s.set_nodelay(true).unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = tx.send(Instant::now());
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
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
    let config = Config {
        links: vec![LinkSpec {
            name: "svc".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            // Never dialled: the service is in this process.
            upstream: "127.0.0.1:1".into(),
        }],
        admin: "127.0.0.1:0".parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        in_process: Some("svc".into()),
    };
    let mut running = lab_faultproxy::start(config).await.unwrap();
    let mut local = running
        .local
        .take()
        .expect("the in-process link's listener");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((mut s, _peer)) = local.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = tx.send((Instant::now(), s.is_direct()));
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let proxy = Proxy {
        admin: format!("http://{}", running.admin),
        http: reqwest::Client::new(),
        running,
    };
    (proxy, rx)
}
