#![no_main]
//! Fuzz target: see `rs2p_testkit::fuzz::mesh_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rs2p_testkit::fuzz::mesh_frames(data));
