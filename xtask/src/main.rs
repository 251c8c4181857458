//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask codegen [--check]`: regenerate the protobuf code of `rs2p-wire` from `proto/`.
//! - `cargo xtask test`: everything CI runs (format, codegen freshness, clippy, tests, fuzz build,
//!   the network-namespace tier when root).
//! - `cargo xtask bench [--quick] [SCENARIO…]`: the performance scenarios.
//! - `cargo xtask fuzz [--seconds S] [--stable]`: every fuzz target for S seconds.
//! - `cargo xtask soak [--minutes M]`: randomised simulated runs for M minutes (default 10).

mod bench;
mod codegen;
mod fuzz;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("codegen") => codegen::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("soak") => soak(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <codegen [--check] | test [--quick] | bench [--quick] [SCENARIO…] | fuzz [--seconds S] [--stable] | soak [--minutes M]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask soak [--minutes M]`: the `soak` binary of `rs2p-tests` (see its docs).
pub(crate) fn soak(args: &[String]) -> Result<(), String> {
    let minutes = match args {
        [] => "10".to_owned(),
        [flag, m] if flag == "--minutes" && m.parse::<f64>().is_ok() => m.clone(),
        _ => return Err("usage: cargo xtask soak [--minutes M]".into()),
    };
    run_test_bin("soak", &["--minutes", &minutes])
}

/// Runs one of `rs2p-tests`' binaries (`fuzz-stable`, `soak`) with `args`.
pub(crate) fn run_test_bin(bin: &str, args: &[&str]) -> Result<(), String> {
    run_cmd(
        cargo()
            .args(["run", "-q", "-p", "rs2p-tests", "--bin", bin, "--"])
            .args(args),
    )
}

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it, and fails when it fails.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", show(cmd)))
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
