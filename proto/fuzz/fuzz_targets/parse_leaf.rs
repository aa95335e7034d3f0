//! Fuzz target for the leafnode protocol parser.
//!
//! The first input byte picks the limits (default ones, or tiny ones that make the limit checks
//! fire often); the rest is parsed op after op, advancing by the consumed length, until the
//! input is exhausted, incomplete or invalid. The parser must never panic, every consumed
//! length must be non-zero and within the input, and every decoded op must re-encode to bytes
//! that decode back to an equal op.
//!
//! Run with `cargo +nightly fuzz run parse_leaf` from `proto/`.

#![no_main]

use bytes::BytesMut;
use leaf_proto::{parse_leaf_op, write_leaf_op, Limits};
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
    let unlimited = Limits {
        max_control_line: usize::MAX,
        max_payload: usize::MAX,
    };
    let mut out = BytesMut::new();
    while let Ok(Some((op, consumed))) = parse_leaf_op(rest, &limits) {
        assert!(consumed > 0 && consumed <= rest.len());
        let _ = op.name();
        out.clear();
        write_leaf_op(&mut out, &op);
        match parse_leaf_op(&out, &unlimited) {
            Ok(Some((again, n))) => {
                assert_eq!(again, op);
                assert_eq!(n, out.len());
            }
            other => panic!("{op:?} re-encoded to {out:?}: {other:?}"),
        }
        rest = &rest[consumed..];
    }
});
