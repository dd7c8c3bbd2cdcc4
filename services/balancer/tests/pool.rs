//! The per-worker connection pool: keep-alive connections are reused, and a
//! connection the server closed while idle is replaced without an error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use lab_balancer::pool::Pool;
use lab_balancer::proxy::RequestBody;
use lab_balancer::upstream::{ServerRef, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers `requests_per_conn` requests on each connection,
/// then closes it (as a server with a keep-alive limit or idle timeout does).
async fn server(requests_per_conn: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                for _ in 0..requests_per_conn {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if s.write_all(resp).await.is_err() {
                        return;
                    }
                }
                // close while the client thinks the connection is idle
            });
        }
    });
    (addr, accepted)
}

async fn get(pool: &Pool, upstream: &ServerRef) -> String {
    let req = Request::get("/")
        .header("host", "test")
        .body(RequestBody::Empty)
        .unwrap();
    let resp = pool.request(upstream, req, false).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (addr, accepted) = server(usize::MAX).await;
    let upstream = ServerRef::from(Arc::new(Upstream::new("s", addr.as_str()).unwrap()));
    let pool = Pool::new(Duration::from_millis(200), Duration::from_secs(60));
    for _ in 0..20 {
        assert_eq!(get(&pool, &upstream).await, "ok\n");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(&addr), 1);
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced() {
    let (addr, accepted) = server(1).await;
    let upstream = ServerRef::from(Arc::new(Upstream::new("s", addr.as_str()).unwrap()));
    let pool = Pool::new(Duration::from_millis(200), Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(get(&pool, &upstream).await, "ok\n");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn idle_connections_expire() {
    let (addr, accepted) = server(usize::MAX).await;
    let upstream = ServerRef::from(Arc::new(Upstream::new("s", addr.as_str()).unwrap()));
    let pool = Pool::new(Duration::from_millis(200), Duration::from_millis(50));
    assert_eq!(get(&pool, &upstream).await, "ok\n");
    tokio::time::sleep(Duration::from_millis(80)).await;
    pool.evict();
    assert_eq!(pool.idle_count(&addr), 0);
    assert_eq!(get(&pool, &upstream).await, "ok\n");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
