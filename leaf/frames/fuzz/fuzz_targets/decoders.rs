//! Feeds arbitrary bytes to every decoder type and to `decode_record`; the checks (no panic,
//! frames within capacity, records re-encode to themselves) live in
//! `leaf_frames::fuzzing::decoders`, which a unit test also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    leaf_frames::fuzzing::decoders(data);
});
