//! Fuzz target for the leafnode protocol parser: `leaf_proto::fuzzing::check_leaf_ops`
//! (limits from the first byte, every op parsed, re-encoded and parsed back; see there).
//! The same checks run on stable in CI through `proto/tests/fuzz_leaf.rs`.
//!
//! Run with `cargo +nightly fuzz run parse_leaf` from `proto/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| leaf_proto::fuzzing::check_leaf_ops(data));
