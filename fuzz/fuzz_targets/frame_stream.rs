#![no_main]
//! Fuzz target: see `rs2p_testkit::fuzz::frame_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rs2p_testkit::fuzz::frame_stream(data));
