//! `soak`: randomised sync-socket runs in the deterministic simulator, one after another, for a
//! number of wall-clock minutes: each run has 3–7 nodes, random writes, frame loss, duplication
//! and reordering, partitions, crashes with restarts (from a simulated data directory in two
//! runs of three: group-committed or durable), and clock skew, then heals and checks that
//! every node holds the same dictionary, shows the fold of its records, refused no honest record
//! and kept every acknowledged write (see `rs2p_tests::sync_world::run`). Prints the totals; a
//! failed check is a divergence, printed with its seed (which replays it), and makes the exit
//! status 1. Run by `cargo xtask soak [--minutes M]`.
//!
//! Usage: `soak [--minutes M] [--seed N]`

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rs2p_tests::sync_world::{run, Counts};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut minutes = 2.0f64;
    let mut seed: u64 = rand::random::<u32>().into();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => minutes = it.next().and_then(|s| s.parse().ok()).unwrap_or(minutes),
            "--seed" => seed = it.next().and_then(|s| s.parse().ok()).unwrap_or(seed),
            other => {
                eprintln!("unknown argument {other:?}; usage: soak [--minutes M] [--seed N]");
                std::process::exit(2);
            }
        }
    }
    std::panic::set_hook(Box::new(|info| eprintln!("divergence: {info}")));
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut total = Counts::default();
    let (mut runs, mut divergences) = (0u64, 0u64);
    let first = seed;
    while Instant::now() < deadline {
        // Alternate plain runs and runs that prune finalised records.
        let prune = seed % 2 == 1;
        match catch_unwind(AssertUnwindSafe(|| run(seed, prune))) {
            Ok(c) => {
                total.nodes += c.nodes;
                total.writes += c.writes;
                total.acked += c.acked;
                total.kills += c.kills;
                total.restored += c.restored;
                total.verified += c.verified;
                total.partitions += c.partitions;
                total.repaired += c.repaired;
                total.frames_lost += c.frames_lost;
            }
            Err(_) => {
                divergences += 1;
                eprintln!("seed {seed} (prune {prune}) failed; replay with --seed {seed}");
            }
        }
        runs += 1;
        seed += 1;
    }
    println!(
        "soak: {minutes} min, seeds {first}..{seed}: {runs} runs, {} nodes, {} writes ({} acknowledged, {} checked present at the end), {} kills and restarts ({} from a data directory), {} partitions, {} records repaired, {} frames lost, {divergences} divergences",
        total.nodes, total.writes, total.acked, total.verified, total.kills, total.restored, total.partitions, total.repaired, total.frames_lost
    );
    if divergences > 0 {
        std::process::exit(1);
    }
}
