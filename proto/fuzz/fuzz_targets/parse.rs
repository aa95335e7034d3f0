//! Fuzz target for the client protocol parser: `leaf_proto::fuzzing::check_client_ops` (the
//! first input byte picks the limits, default ones or tiny ones that make the limit checks
//! fire often; the rest is parsed op after op until exhausted, incomplete or invalid; the
//! parser must never panic, and every consumed length must be non-zero and within the input).
//!
//! Run with `cargo +nightly fuzz run parse` from `proto/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| leaf_proto::fuzzing::check_client_ops(data));
