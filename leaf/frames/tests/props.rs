//! Property tests: frames survive arbitrary chunking, garbage between frames never harms a
//! good frame, and single bit flips never turn a record into a different valid one.

mod common;

use common::{block_on, ChunkReader};
use leaf_frames::{
    decode_record, encode_cobs, encode_line, encode_record, encoded_len_max, read_frames,
    CobsDecoder, Decoder, FrameError, LineDecoder, Record, RecordDecoder,
};
use proptest::prelude::*;

/// Delimiters with and without self-overlapping prefixes.
const DELIMITERS: [&[u8]; 6] = [b"\n", b"\r\n", b"ab", b"aab", b"abab", b"\0\0"];

/// Bytes drawn mostly from the delimiters' alphabet so that partial matches are common.
fn line_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(vec![b'a', b'b', b'\r', b'\n', 0u8, b'x']),
        1 => any::<u8>(),
    ]
}

/// Encodes a line, or `None` if the payload is empty or would be split by the receiver.
fn line(payload: &[u8], delimiter: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; payload.len() + delimiter.len()];
    match encode_line(payload, delimiter, &mut out) {
        Ok(n) if !payload.is_empty() => Some(out[..n].to_vec()),
        _ => None,
    }
}

/// Feeds `stream` through `read_frames` in chunks of the given sizes.
fn decode_chunked<D: Decoder>(
    d: &mut D,
    stream: Vec<u8>,
    sizes: Vec<usize>,
) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut reader = ChunkReader::new(stream, sizes);
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    block_on(read_frames(&mut reader, d, &mut chunk, |r| {
        out.push(r.map(<[u8]>::to_vec))
    }))
    .unwrap();
    out
}

/// Feeds bytes one by one, collecting the results.
fn feed<D: Decoder>(d: &mut D, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
    bytes
        .iter()
        .filter_map(|&b| d.push(b).map(|r| r.map(<[u8]>::to_vec)))
        .collect()
}

/// An owned record, for strategies.
#[derive(Debug, Clone, PartialEq)]
struct OwnedRecord {
    channel: String,
    timestamp_us: u64,
    payload: Vec<u8>,
}

impl OwnedRecord {
    fn as_record(&self) -> Record<'_> {
        Record {
            channel: &self.channel,
            timestamp_us: self.timestamp_us,
            payload: &self.payload,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; encoded_len_max(self.payload.len(), self.channel.len())];
        let n = encode_record(&self.as_record(), &mut out).unwrap();
        out.truncate(n);
        out
    }
}

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        "[a-z][a-z0-9_-]{0,7}(\\.[a-z0-9]{1,8}){0,2}",
        prop_oneof![Just(0u64), any::<u64>()],
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..600),
        ],
    )
        .prop_map(|(channel, timestamp_us, payload)| OwnedRecord {
            channel,
            timestamp_us,
            payload,
        })
}

/// Record decoder capacity used below: enough for the largest generated record.
const RECORD_CAP: usize = 1024;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lines_survive_any_chunking(
        delim in 0..DELIMITERS.len(),
        payloads in prop::collection::vec(prop::collection::vec(line_byte(), 1..20), 0..12),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        let delimiter = DELIMITERS[delim];
        let mut expected = Vec::new();
        let mut stream = Vec::new();
        for p in &payloads {
            if let Some(enc) = line(p, delimiter) {
                stream.extend(enc);
                expected.push(Ok(p.clone()));
            }
        }
        let mut d = LineDecoder::<32>::new(delimiter).unwrap();
        prop_assert_eq!(decode_chunked(&mut d, stream, sizes), expected);
    }

    #[test]
    fn line_garbage_never_harms_good_lines(
        delim in 0..DELIMITERS.len(),
        segments in prop::collection::vec(
            (prop::collection::vec(line_byte(), 1..20), prop::collection::vec(line_byte(), 0..80)),
            1..10,
        ),
    ) {
        let delimiter = DELIMITERS[delim];
        let mut d = LineDecoder::<32>::new(delimiter).unwrap();
        for (good, garbage) in &segments {
            // Garbage: anything without the delimiter, then the delimiter.
            // (Garbage that contains the delimiter is several lines, not one; skip it.)
            if let Some(garbage_line) = line(garbage, delimiter) {
                let out = feed(&mut d, &garbage_line);
                prop_assert!(out.len() <= 1);
                if garbage.len() > 32 {
                    prop_assert_eq!(&out, &[Err(FrameError::Overlong { len: garbage.len() })]);
                } else {
                    prop_assert_eq!(&out, &[Ok(garbage.clone())]);
                }
            }
            if let Some(good_line) = line(good, delimiter) {
                prop_assert_eq!(feed(&mut d, &good_line), [Ok(good.clone())]);
            }
        }
    }

    #[test]
    fn cobs_frames_survive_any_chunking(
        frames in prop::collection::vec(prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..700), 0..6),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut stream = Vec::new();
        for f in &frames {
            let mut out = vec![0u8; f.len() + f.len() / 254 + 3];
            let n = encode_cobs(f, &mut out).unwrap();
            stream.extend(&out[..n]);
        }
        let expected: Vec<_> = frames.iter().cloned().map(Ok).collect();
        let mut d = CobsDecoder::<700>::new();
        prop_assert_eq!(decode_chunked(&mut d, stream, sizes), expected);
    }

    #[test]
    fn records_survive_any_chunking(
        records in prop::collection::vec(record(), 0..6),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let stream: Vec<u8> = records.iter().flat_map(OwnedRecord::encode).collect();
        // Through the generic driver (COBS frames, then decode_record)...
        let mut d = CobsDecoder::<RECORD_CAP>::new();
        let decoded: Vec<OwnedRecord> = decode_chunked(&mut d, stream.clone(), sizes.clone())
            .into_iter()
            .map(|frame| {
                let frame = frame.unwrap();
                let r = decode_record(&frame).unwrap();
                OwnedRecord { channel: r.channel.into(), timestamp_us: r.timestamp_us, payload: r.payload.into() }
            })
            .collect();
        prop_assert_eq!(&decoded, &records);
        // ...and through RecordDecoder, chunk by chunk.
        let mut d = RecordDecoder::<RECORD_CAP>::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() { break; }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            for &b in chunk {
                if let Some(r) = d.push(b) {
                    let r = r.unwrap();
                    got.push(OwnedRecord { channel: r.channel.into(), timestamp_us: r.timestamp_us, payload: r.payload.into() });
                }
            }
        }
        prop_assert_eq!(d.idle(), None);
        prop_assert_eq!(got, records);
    }

    #[test]
    fn record_garbage_never_harms_good_records(
        segments in prop::collection::vec(
            (record(), prop::collection::vec(any::<u8>(), 0..1200), any::<bool>()),
            1..6,
        ),
    ) {
        let mut d = RecordDecoder::<RECORD_CAP>::new();
        for (good, mut garbage, nonzero) in segments {
            if nonzero {
                // One frame of garbage: at most one error.
                garbage.iter_mut().for_each(|b| *b = (*b).max(1));
            }
            let frames_in_garbage = garbage.iter().filter(|&&b| b == 0).count() + 1;
            garbage.push(0);
            let mut errors = 0;
            for &b in &garbage {
                match d.push(b) {
                    Some(Ok(r)) => prop_assert!(false, "garbage decoded as a record: {:?}", r),
                    Some(Err(_)) => errors += 1,
                    None => {}
                }
            }
            prop_assert!(errors <= frames_in_garbage);
            if nonzero {
                prop_assert!(errors <= 1);
            }
            let mut got = Vec::new();
            for b in good.encode() {
                if let Some(r) = d.push(b) {
                    got.push(r.map(|r| r.channel.len() + r.payload.len()).map_err(|e| e.to_string()));
                    prop_assert_eq!(r, Ok(good.as_record()));
                }
            }
            prop_assert_eq!(got.len(), 1);
        }
    }

    #[test]
    fn single_bit_flip_never_yields_a_different_record(
        rec in record(),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut wire = rec.encode();
        let bit = bit.index(wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        wire.push(0);
        let mut d = RecordDecoder::<RECORD_CAP>::new();
        let mut valid = 0;
        for &b in &wire {
            if let Some(Ok(r)) = d.push(b) {
                prop_assert_eq!(r, rec.as_record());
                valid += 1;
            }
        }
        prop_assert!(d.idle().is_none());
        // The flipped bit lies in the record's own frame or its delimiters, so the record
        // itself cannot come through intact either.
        prop_assert_eq!(valid, 0);
    }

    #[test]
    fn record_round_trip(rec in record()) {
        let wire = rec.encode();
        prop_assert!(wire.len() <= encoded_len_max(rec.payload.len(), rec.channel.len()));
        prop_assert_eq!(wire[0], 0);
        prop_assert_eq!(wire[wire.len() - 1], 0);
        prop_assert!(!wire[1..wire.len() - 1].contains(&0));
        let mut d = CobsDecoder::<RECORD_CAP>::new();
        let frames = feed(&mut d, &wire);
        prop_assert_eq!(frames.len(), 1);
        let frame = frames[0].clone().unwrap();
        prop_assert_eq!(decode_record(&frame), Ok(rec.as_record()));
    }
}
