#![no_main]
//! Fuzz target: see `rs2p_testkit::fuzz::messages`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rs2p_testkit::fuzz::messages(data));
