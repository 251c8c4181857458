#![no_main]
//! Fuzz target: see `rs2p_chord::sim::fuzz_messages`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rs2p_chord::sim::fuzz_messages(data));
