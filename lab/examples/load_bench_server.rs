//! A deliberately trivial HTTP server for benchmarking the load driver itself.
//!
//! To measure how much a load generator costs, point it at a server that does
//! almost nothing: then the requests per second you see are limited by the
//! generator (and the kernel), not by the app. `bench/load/run.sh` starts this
//! server and drives it with `lab load --scenario ping`, `wrk` and `oha` in turn.
//!
//! Usage: `load_bench_server [PORT] [THREADS]` (defaults 18080 and 1). It binds
//! 127.0.0.1 only and answers every request with `200 ok` and an
//! `X-Served-By: bench` header, like the lab's app does.

use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::Router;

async fn ok() -> impl IntoResponse {
    ([("x-served-by", HeaderValue::from_static("bench"))], "ok")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(18080);
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("load_bench_server listening on http://127.0.0.1:{port}");
        let app = Router::new().fallback(ok);
        axum::serve(listener, app).await
    });
    if let Err(e) = result {
        eprintln!("error: load_bench_server on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    }
}
