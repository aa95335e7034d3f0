//! Fuzz target for the route protocol parser: `leaf_proto::fuzzing::check_route_ops`
//! (limits from the first byte, every op parsed, re-encoded and parsed back; see there).
//! The same checks run on stable in CI through `proto/tests/fuzz_route.rs`.
//!
//! Run with `cargo +nightly fuzz run parse_route` from `proto/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| leaf_proto::fuzzing::check_route_ops(data));
