//! The `rs2p` command: `rs2p demo` and `rs2p node`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    // One thread: no hand-offs between threads for each message (a node's work is a chain of
    // small steps: read, decrypt, apply, answer).
    let mut builder = match args.threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rs2p: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(cli::run(args));
    // `rs2p node` reads standard input on a blocking thread, which may still wait for a line
    // after `quit`: do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rs2p: {e}");
            ExitCode::FAILURE
        }
    }
}
