//! `cargo xtask test`: everything a newcomer and CI run, in order, stopping at the first failure.
//!
//! 1. formatting (`cargo fmt --check`)
//! 2. generated code is fresh (`cargo xtask codegen --check`)
//! 3. clippy on every target, warnings denied
//! 4. the mesh state machine builds without tokio
//! 5. the fuzz targets compile (`fuzz/`, its own workspace)
//! 6. the `rs2p` binary the multi-process tests spawn
//! 7. every unit, property, simulation, loopback and multi-process test
//! 8. the network-namespace tier and the five-host chaos tier, when running as root (skipped
//!    with a message otherwise)

use std::process::Command;

use crate::{cargo, root, run_cmd};

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        return Err(format!("unknown argument {a:?}; usage: cargo xtask test"));
    }
    let started = std::time::Instant::now();
    step("formatting");
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("generated code");
    crate::codegen::run(&["--check".to_string()])?;
    step("clippy");
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    for krate in ["rs2p-mesh", "rs2p-sync", "rs2p-chord"] {
        step(&format!("the {krate} state machine without tokio"));
        run_cmd(cargo().args(["check", "-p", krate, "--no-default-features"]))?;
        let tree = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "tree",
                "-p",
                krate,
                "--no-default-features",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .current_dir(root())
            .output()
            .map_err(|e| format!("cargo tree: {e}"))?;
        let tree = String::from_utf8_lossy(&tree.stdout);
        if tree.lines().any(|l| l.starts_with("tokio ")) {
            return Err(format!("{krate} --no-default-features depends on tokio"));
        }
        eprintln!("{krate} --no-default-features: no tokio in its dependency tree");
    }
    step("fuzz targets compile");
    run_cmd(cargo().args(["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"]))?;
    step("the rs2p binary");
    run_cmd(cargo().args(["build", "-p", "rs2p"]))?;
    step("tests");
    run_cmd(cargo().args(["test", "--workspace"]))?;
    // The corpus is replayed by the tests above; here every target also gets new inputs.
    step("fuzzing each target briefly (stable mutation fuzzer)");
    crate::fuzz::run(&["--stable".into(), "--seconds".into(), "5".into()])?;
    step("soak: randomised simulated runs for 2 minutes");
    crate::soak(&["--minutes".into(), "2".into()])?;
    step("network namespaces");
    if is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        run_cmd(cargo().args([
            "test",
            "-p",
            "rs2p-tests",
            "--test",
            "netns",
            "--",
            "--ignored",
            "--test-threads=1",
        ]))?;
        step("chaos: five hosts with data directories (partition, SIGKILL, loss, stalled link)");
        if Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            run_cmd(cargo().args([
                "test",
                "-p",
                "rs2p-tests",
                "--test",
                "chaos",
                "--",
                "--ignored",
                "--nocapture",
            ]))?;
        } else {
            eprintln!("chaos tier SKIPPED: it needs nft (nftables) for partitions and loss");
        }
    } else {
        eprintln!(
            "network-namespace and chaos tiers SKIPPED: they need root and iproute2 (`ip`); \
             not running as root here"
        );
    }
    eprintln!(
        "\ncargo xtask test: all passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
