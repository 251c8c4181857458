//! Helpers shared by rs2p's workspace integration tests.

use std::path::PathBuf;

/// The `rs2p` binary built for this test run (built by `cargo xtask test` before the tests).
pub fn rs2p_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RS2P_BIN") {
        return PathBuf::from(p);
    }
    let mut dir = std::env::current_exe().expect("the test binary's path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("rs2p")
}
