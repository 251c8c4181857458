//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`, including every input that once
//! crashed) through the fuzz entry points: none may panic.

use rs2p_testkit::fuzz::{Target, TARGETS};

#[test]
fn every_corpus_input_runs_without_panicking() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut ran = 0;
    let chord: &[(&str, Target)] = &[("chord_messages", rs2p_chord::sim::fuzz_messages)];
    for &(name, target) in TARGETS.iter().chain(chord) {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            target(&data);
            ran += 1;
        }
        // And a few inputs every target must survive.
        for data in [&b""[..], &[0u8; 64], &[0xffu8; 300]] {
            target(data);
        }
    }
    assert!(
        ran > TARGETS.len(),
        "the corpus has at least one input per target"
    );
    println!("fuzz corpus: {ran} inputs replayed");
}
