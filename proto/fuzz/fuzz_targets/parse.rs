//! Fuzz target for the client protocol parser.
//!
//! The first input byte picks the limits (default ones, or tiny ones that make the limit checks
//! fire often); the rest is parsed op after op, advancing by the consumed length, until the
//! input is exhausted, incomplete or invalid. The parser must never panic, and every consumed
//! length must be non-zero and within the input.
//!
//! Run with `cargo +nightly fuzz run parse` from `proto/`.

#![no_main]

use leaf_proto::{parse_client_op, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let limits = if selector & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_control_line: usize::from(selector >> 1),
            max_payload: usize::from(selector),
        }
    };
    while let Ok(Some((op, consumed))) = parse_client_op(rest, &limits) {
        assert!(consumed > 0 && consumed <= rest.len());
        let _ = op.name();
        rest = &rest[consumed..];
    }
});
