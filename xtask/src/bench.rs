//! `cargo xtask bench [--quick] [SCENARIO…]`: builds the scenarios in release mode and runs them.
//! The table goes to standard output, the figures to `target/bench/results.json`.

use crate::{cargo, run_cmd};

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    for a in args {
        if a.starts_with("--") && a != "--quick" {
            return Err(format!(
                "unknown option {a:?}; usage: cargo xtask bench [--quick] [SCENARIO…]"
            ));
        }
    }
    // The multi-process scenarios run the release `rs2p` binary.
    run_cmd(cargo().args(["build", "--release", "-q", "-p", "rs2p"]))?;
    run_cmd(
        cargo()
            .args(["run", "--release", "-q", "-p", "rs2p-bench", "--"])
            .args(args),
    )
}
