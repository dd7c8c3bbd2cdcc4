//! `lab-faultproxy --link NAME=LISTEN->UPSTREAM ... --admin ADDR`: fronts a
//! service's ports and injects network faults set through the admin API,
//! until SIGTERM or Ctrl-C.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lab_faultproxy::{Config, LinkSpec};
use tracing_subscriber::EnvFilter;

// A proxy allocates a little per connection and per delayed chunk; mimalloc
// is cheaper than glibc's malloc for that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A TCP proxy that injects network faults (latency, jitter, bandwidth,
/// blackhole, reset, slow close), set live through an HTTP admin API.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Example:\n  lab-faultproxy --link clients=0.0.0.0:5432->127.0.0.1:15432 \\\n                 --link wal=127.0.0.1:5499->db-1:5432 --admin 0.0.0.0:9100\n  curl -X PUT localhost:9100/links/clients/fault -d '{\"latency_ms\": 200}'"
)]
struct Args {
    /// A link: NAME=LISTEN->UPSTREAM (repeat for more; in the environment,
    /// separate them with commas). UPSTREAM may be a DNS name, resolved for
    /// every connection.
    #[arg(
        long = "link",
        value_name = "NAME=LISTEN->UPSTREAM",
        env = lab_contract::faultproxy::env::LINKS,
        value_delimiter = ',',
        required = true
    )]
    links: Vec<LinkSpec>,
    /// Where the admin HTTP API listens.
    #[arg(
        long,
        value_name = "IP:PORT",
        env = lab_contract::faultproxy::env::ADMIN,
        default_value = "127.0.0.1:9100"
    )]
    admin: SocketAddr,
    /// How long dialling an upstream may take before the client is reset.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Worker threads (the proxy shares its container's CPUs with the
    /// service it fronts; one or two are plenty).
    #[arg(
        long,
        value_name = "N",
        env = lab_contract::faultproxy::env::WORKERS,
        default_value_t = 1
    )]
    workers: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in `docker logs`.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    // One worker: a single-threaded runtime, which skips the work-stealing
    // machinery (and its wake-ups) that only pays off with several threads.
    let runtime = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        links: args.links,
        admin: args.admin,
        connect_timeout: args.connect_timeout,
        in_process: None,
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), lab_faultproxy::StartError> {
    let running = lab_faultproxy::start(config).await?;
    wait_for_signal().await;
    tracing::info!("signal received: shutting down");
    running.shutdown();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
