//! `lab load` on its own, without the rest of the lab: the same flags and the
//! same driver, pointed at any loopback URL (default http://127.0.0.1:8080).
//!
//! `bench/load/run.sh` uses it when the `lab` binary at hand has no `load`
//! subcommand, and it is handy for trying the live view against a toy server:
//!
//! ```text
//! cargo run --release -p lab --example load_bench_server &
//! cargo run --release -p lab --example load_cli -- --scenario ping --users 8 --duration 5s --target http://127.0.0.1:18080
//! ```

use clap::Parser;

/// Drive a loopback URL with the lab's load driver.
#[derive(Parser, Debug)]
#[command(name = "load_cli")]
struct Cli {
    #[command(flatten)]
    load: lab::cli::LoadArgs,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(lab::load::run(&cli.load.plan(), "http://127.0.0.1:8080")) {
        Ok(report) => {
            if cli.load.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
