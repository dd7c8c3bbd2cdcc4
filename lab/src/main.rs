//! `lab`: parse the command line, hand it to the library, turn an error into
//! one `error: ...` line and an exit code. Everything else lives in the library.

use clap::Parser;

fn main() {
    let cli = lab::cli::Cli::parse();
    lab::telemetry::init(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(lab::run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
