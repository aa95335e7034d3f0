//! Fuzzing harness shared by the cargo-fuzz target (`fuzz/fuzz_targets/decoders.rs`) and a
//! unit test. Not part of the stable API.

use crate::{
    decode_record, encode_record, encoded_len_max, CobsDecoder, Decoder, FixedDecoder, GapDecoder,
    LineDecoder, RecordDecoder,
};

/// Line delimiters exercised, chosen by the first input byte.
const DELIMITERS: [&[u8]; 6] = [b"\n", b"\r\n", b"ab", b"aab", b"abab", b"\x00\x00\x00"];

/// Feeds `data` to every decoder type (and to [`decode_record`]); panics if any of them
/// panics, emits a frame larger than its capacity, or breaks its own invariants.
///
/// The first byte selects the line delimiter and the fixed frame length; the rest is the
/// byte stream. Bytes `0xFE` in the stream are not fed but mean "call `idle()`".
pub fn decoders(data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let delimiter = DELIMITERS
        .get(usize::from(config) % DELIMITERS.len())
        .copied()
        .unwrap_or(b"\n");
    if let Ok(mut d) = LineDecoder::<16>::new(delimiter) {
        drive(&mut d, stream, 16, |f| {
            assert!(!f.is_empty());
            assert!(f.windows(delimiter.len()).all(|w| w != delimiter));
        });
    }
    drive(&mut GapDecoder::<16>::new(), stream, 16, |f| {
        assert!(!f.is_empty())
    });
    let fixed_len = usize::from(config >> 4) + 1;
    if let Ok(mut d) = FixedDecoder::<16>::new(fixed_len) {
        drive(&mut d, stream, 16, |f| assert_eq!(f.len(), fixed_len));
    }
    drive(&mut CobsDecoder::<16>::new(), stream, 16, |_| {});

    let mut records = RecordDecoder::<64>::new();
    for &byte in stream {
        if byte == 0xFE {
            let _ = records.idle();
        } else if let Some(Ok(record)) = records.push(byte) {
            check_record(&record);
        }
    }
    let _ = records.idle();
    if let Ok(record) = decode_record(stream) {
        check_record(&record);
    }
    // The same bytes with a valid CRC appended, so the version and postcard checks are
    // reached (random bytes almost never carry a valid CRC).
    let mut framed = heapless::Vec::<u8, 260>::new();
    let crc = crate::record::CRC32.checksum(stream).to_le_bytes();
    if framed.extend_from_slice(stream).is_ok() && framed.extend_from_slice(&crc).is_ok() {
        if let Ok(record) = decode_record(&framed) {
            check_record(&record);
        }
    }
}

/// Drives one decoder over `stream`, checking every frame with `check`.
fn drive<D: Decoder>(d: &mut D, stream: &[u8], capacity: usize, mut check: impl FnMut(&[u8])) {
    let mut on_result = |result: Option<Result<&[u8], crate::FrameError>>| {
        if let Some(Ok(frame)) = result {
            assert!(frame.len() <= capacity);
            check(frame);
        }
    };
    for &byte in stream {
        if byte == 0xFE {
            on_result(d.idle());
            assert!(
                d.idle().is_none(),
                "idle twice yields nothing the second time"
            );
        } else {
            on_result(d.push(byte));
        }
    }
    on_result(d.idle());
    d.reset();
}

/// A decoded record re-encodes within the bound and decodes to itself.
fn check_record(record: &crate::Record<'_>) {
    let mut out = [0u8; 256];
    let bound = encoded_len_max(record.payload.len(), record.channel.len());
    let n = encode_record(record, &mut out).unwrap_or(0);
    if bound <= out.len() {
        assert!(n > 0 && n <= bound);
    }
    if n > 0 {
        let mut d = RecordDecoder::<256>::new();
        let mut decoded = 0;
        for &byte in out.get(..n).unwrap_or_default() {
            if let Some(result) = d.push(byte) {
                assert_eq!(result, Ok(*record));
                decoded += 1;
            }
        }
        assert_eq!(decoded, 1);
    }
}
