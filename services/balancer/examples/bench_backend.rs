//! A tiny HTTP server for benchmarks: answers every request with `ok` and
//! `X-Served-By: NAME`, on one thread, as fast as hyper allows. Used by
//! `bench/balancer/run.sh` as the servers behind lab-balancer and nginx.
//!
//! `cargo run --release --example bench_backend -- 127.0.0.1:18081 server-1`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18081".into())
        .parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("bench_backend only listens on loopback, not {addr}").into());
    }
    let name = args.next().unwrap_or_else(|| "server-1".into());
    let name: &'static str = Box::leak(name.into_boxed_str());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(addr, name))
}

async fn serve(addr: SocketAddr, name: &'static str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("x-served-by", name)
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(b"ok\n")))
                        .unwrap_or_default(),
                )
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
