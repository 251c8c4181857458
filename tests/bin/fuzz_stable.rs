//! `fuzz-stable`: a mutation fuzzer on the stable toolchain, for machines without cargo-fuzz
//! (`cargo xtask fuzz` uses libFuzzer when nightly and cargo-fuzz are there, this otherwise).
//!
//! For each target it replays the committed corpus, then for `--seconds S` feeds mutations of
//! corpus inputs (bit flips, byte changes, insertions, deletions, truncations, splices, random
//! tails) through the same entry point as `fuzz/`. Not coverage-guided, so it finds less than
//! libFuzzer, but every decoder a peer reaches gets new inputs on every CI run. A panic saves the
//! input under `fuzz/artifacts/<target>/` and exits with status 1.
//!
//! Usage: `fuzz-stable [--seconds S] [--seed N] [TARGET…]`

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rs2p_testkit::fuzz::{Target, TARGETS};

fn mutate(rng: &mut ChaCha8Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = if corpus.is_empty() {
        Vec::new()
    } else {
        corpus[rng.gen_range(0..corpus.len())].clone()
    };
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..7) {
            0 if !data.is_empty() => {
                let i = rng.gen_range(0..data.len());
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = rng.gen_range(0..data.len());
                data[i] = *[0u8, 1, 0x7f, 0x80, 0xff]
                    .get(rng.gen_range(0..5))
                    .unwrap_or(&0);
            }
            2 => {
                let i = rng.gen_range(0..=data.len());
                data.insert(i, rng.gen());
            }
            3 if !data.is_empty() => {
                let i = rng.gen_range(0..data.len());
                data.remove(i);
            }
            4 if !data.is_empty() => data.truncate(rng.gen_range(0..data.len())),
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                let at = rng.gen_range(0..=data.len());
                let from = rng.gen_range(0..=other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.gen_range(0..32);
                data.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
    }
    data.truncate(4096);
    data
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 10u64;
    let mut seed: u64 = rand::random();
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--seed" => seed = it.next().and_then(|s| s.parse().ok()).unwrap_or(seed),
            other => only.push(other.to_owned()),
        }
    }
    let chord: &[(&str, Target)] = &[("chord_messages", rs2p_chord::sim::fuzz_messages)];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    // Panics are the findings: keep their messages short.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut failed = false;
    for &(name, target) in TARGETS.iter().chain(chord) {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(root.join("corpus").join(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect();
        corpus.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name.len() as u64);
        let started = Instant::now();
        let mut runs = 0u64;
        let mut crash = None;
        let inputs = corpus.clone();
        for data in &inputs {
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| target(data))).is_err() {
                crash = Some(data.clone());
                break;
            }
        }
        while crash.is_none() && started.elapsed() < Duration::from_secs(seconds) {
            let data = mutate(&mut rng, &corpus);
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                crash = Some(data);
            }
        }
        match crash {
            Some(data) => {
                failed = true;
                let dir = root.join("artifacts").join(name);
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("crash-stable-{seed}"));
                let _ = std::fs::write(&path, &data);
                println!(
                    "{name:<16} CRASH after {runs} runs; input saved to {}",
                    path.display()
                );
            }
            None => println!(
                "{name:<16} {runs:>8} runs in {:.1} s ({} corpus inputs), no crash (seed {seed})",
                started.elapsed().as_secs_f64(),
                inputs.len()
            ),
        }
        corpus.shrink_to_fit();
    }
    if failed {
        std::process::exit(1);
    }
}
