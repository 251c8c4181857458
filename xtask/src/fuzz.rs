//! `cargo xtask fuzz [--seconds S] [--stable]`: every fuzz target for S seconds each (default
//! 60). With nightly and cargo-fuzz installed, under libFuzzer (coverage-guided, new inputs join
//! `fuzz/corpus/`); otherwise, or with `--stable`, the stable mutation fuzzer
//! (`rs2p-tests`'s `fuzz-stable` binary) over the committed corpus. Any crash fails, and the
//! crashing input is saved under `fuzz/artifacts/<target>/`: minimise it, add it to the corpus,
//! fix the bug.

use std::process::Command;

use crate::{run_cmd, run_test_bin};

/// libFuzzer targets, as named in `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &[
    "frame_stream",
    "messages",
    "handshake",
    "mesh_frames",
    "sync_messages",
    "chord_messages",
];

fn nightly_fuzz_available() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut stable = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds takes a number")?;
            }
            "--stable" => stable = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo xtask fuzz [--seconds S] [--stable]"
                ))
            }
        }
    }
    if !stable && nightly_fuzz_available() {
        for t in TARGETS {
            eprintln!("\n==> libFuzzer: {t}, {seconds} s");
            run_cmd(
                Command::new("cargo")
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", t, "--"])
                    .arg(format!("-max_total_time={seconds}")),
            )?;
        }
        return Ok(());
    }
    if !stable {
        eprintln!("nightly cargo-fuzz not found: using the stable mutation fuzzer");
    }
    run_test_bin("fuzz-stable", &["--seconds", &seconds.to_string()])
}
