//! What the balancer writes to its servers and how it reads their answers
//! (services/balancer/src/http1.rs), through the whole balancer, against a
//! server that answers with hand-written bytes: chunked bodies, bodies that
//! end when the connection does, HEAD, interim `100 Continue`, `Connection:
//! close`, garbage, and request bodies passed on with a length or in chunks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use lab_balancer::config::{Config, UpstreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::Lb;

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    head: String,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Reads until `buf` holds `\r\n\r\n`; returns the head's length.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Reads a request body framed by `head` from `buf` (and the socket).
async fn read_body(s: &mut TcpStream, head: &str, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_more(s, buf).await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                read_more(s, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < length {
        read_more(s, buf).await?;
    }
    Some(buf.drain(..length).collect())
}

/// A server that answers each path with fixed bytes, and logs what it got.
async fn scripted_server() -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(len) = read_head(&mut s, &mut buf).await {
                    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
                    buf.drain(..len);
                    let Some(body) = read_body(&mut s, &head, &mut buf).await else {
                        return;
                    };
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let echo = body.clone();
                    seen.lock().unwrap().push(Seen { conn, head, body });
                    let (answer, close): (Vec<u8>, bool) = match path.as_str() {
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n".to_vec(),
                            false,
                        ),
                        "/until-close" => (b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(), true),
                        "/head" => (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n".to_vec(), false),
                        "/continue" => (
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                            false,
                        ),
                        "/conn-close" => (
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                            true,
                        ),
                        "/garbage" => (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), true),
                        "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(), true),
                        "/echo" => {
                            let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", echo.len())
                                .into_bytes();
                            a.extend_from_slice(&echo);
                            (a, false)
                        }
                        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false),
                    };
                    if s.write_all(&answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

async fn balancer(addr: &str) -> Lb {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: vec![UpstreamConfig {
            name: "s".into(),
            address: addr.into(),
        }],
        workers: 1,
        ..Config::default()
    };
    Lb::start(config).await
}

/// The connections (by number) that carried requests for `path`.
fn conns_for(log: &Log, path: &str) -> Vec<usize> {
    let mut conns: Vec<usize> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.head.split(' ').nth(1) == Some(path))
        .map(|s| s.conn)
        .collect();
    conns.dedup();
    conns
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_the_connection_kept() {
    let (addr, log) = scripted_server().await;
    let lb = balancer(&addr).await;
    for _ in 0..3 {
        let r = lb.get("/chunked").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "hello, world");
        assert!(r
            .headers
            .get("transfer-encoding")
            .is_none_or(|v| v == "chunked"));
    }
    assert_eq!(
        conns_for(&log, "/chunked").len(),
        1,
        "one kept-alive connection"
    );
}

#[tokio::test]
async fn a_body_that_ends_with_the_connection_is_read_whole() {
    let (addr, log) = scripted_server().await;
    let lb = balancer(&addr).await;
    assert_eq!(lb.get("/until-close").await.body, "until close");
    assert_eq!(lb.get("/until-close").await.body, "until close");
    assert_eq!(conns_for(&log, "/until-close").len(), 2, "never reused");
}

#[tokio::test]
async fn head_and_interim_answers_have_no_body_and_keep_the_connection() {
    let (addr, log) = scripted_server().await;
    let lb = balancer(&addr).await;
    let r = lb
        .client
        .send(Method::HEAD, &lb.url("/head"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-length"], "11");
    assert_eq!(r.body, "");
    let r = lb.get("/continue").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
    assert_eq!(lb.get("/").await.body, "ok");
    let conns: Vec<usize> = ["/head", "/continue", "/"]
        .iter()
        .flat_map(|p| conns_for(&log, p))
        .collect();
    assert!(
        conns.windows(2).all(|w| w[0] == w[1]),
        "one connection: {conns:?}"
    );
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let (addr, log) = scripted_server().await;
    let lb = balancer(&addr).await;
    for _ in 0..3 {
        assert_eq!(lb.get("/conn-close").await.body, "ok");
    }
    assert_eq!(conns_for(&log, "/conn-close").len(), 3);
}

#[tokio::test]
async fn broken_answers_become_502() {
    let (addr, _log) = scripted_server().await;
    let lb = balancer(&addr).await;
    let r = lb.get("/garbage").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("server failed"));

    // (the 502 counted against the server: a new balancer for the next case)
    let lb = balancer(&addr).await;
    // A body cut short cannot be answered with a clean status any more: the
    // client sees its connection end before the promised length.
    let cut = lb
        .client
        .send(Method::GET, &lb.url("/short"), &[], "")
        .await;
    match &cut {
        Err(_) => {}
        Ok(r) => assert!(r.body.len() < 10, "{r:?}"),
    }
}

/// The last request for `/echo` (health checks come in between).
fn last_echo(log: &Log) -> Seen {
    log.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s.head.starts_with("PUT /echo") || s.head.starts_with("POST /echo"))
        .cloned()
        .expect("an /echo request")
}

#[tokio::test]
async fn request_bodies_go_on_with_a_length_or_in_chunks() {
    let (addr, log) = scripted_server().await;
    let lb = balancer(&addr).await;
    // a known length (and a PUT, which is buffered for a retry)
    let r = lb
        .client
        .send(Method::PUT, &lb.url("/echo"), &[], "abc")
        .await
        .unwrap();
    assert_eq!(r.body, "abc");
    let seen = last_echo(&log);
    assert!(seen.head.contains("content-length: 3\r\n"), "{}", seen.head);

    // a POST whose body comes in chunks: streamed on, in chunks
    let mut s = TcpStream::connect(lb.running.proxy_addr()).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"abcde") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "{}", String::from_utf8_lossy(&answer));
    let seen = last_echo(&log);
    assert_eq!(seen.body, b"abcde");
    assert!(
        seen.head.contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen.head
    );
}
