//! Binary records: the framing microcontrollers use to send tagged, timestamped payloads.
//!
//! # Wire format (format version 1)
//!
//! This section is the specification that device firmware implements.
//!
//! ```text
//! 0x00 | COBS( 0x01 | postcard(Record) | CRC32 ) | 0x00
//! ```
//!
//! 1. **Body**: the format version byte `0x01`, followed by the [postcard] encoding of
//!    [`Record`], which is, field by field:
//!    - `channel`: varint length, then that many UTF-8 bytes;
//!    - `timestamp_us`: varint (`u64`);
//!    - `payload`: varint length, then that many bytes.
//!
//!    A *varint* is unsigned LEB128: 7 bits per byte, least significant group first, the high
//!    bit set on every byte but the last (`0` → `00`, `300` → `AC 02`); at most 10 bytes.
//!    The body must end exactly after `payload`.
//! 2. **CRC**: CRC-32/ISO-HDLC (the zlib/Ethernet CRC: polynomial `0x04C11DB7` reflected,
//!    init `0xFFFFFFFF`, xorout `0xFFFFFFFF`; `crc32("123456789") = 0xCBF43926`) over the body
//!    (version byte included), appended as 4 bytes little-endian.
//! 3. **COBS**: body + CRC are COBS-encoded (see [`crate::cobs`]), so the result contains no
//!    `0x00`, and framed by a `0x00` on each side. The leading `0x00` lets the receiver drop any
//!    garbage received before the frame (line noise, a partial frame from before a device
//!    reset); receivers ignore the empty frame it creates. Back-to-back records may share one
//!    `0x00` between them.
//!
//! Field meaning:
//! - `channel`: the subject suffix: one or more NATS subject tokens separated by `.`
//!   (e.g. `temp`, `line1.temp`); tokens are non-empty, printable ASCII, without spaces, `*`
//!   or `>`. The receiver appends it to its configured subject prefix and may reject records
//!   whose channel is not a valid suffix.
//! - `timestamp_us`: the device clock in microseconds (any epoch the device and its consumers
//!   agree on), `0` if the device has no clock.
//! - `payload`: opaque bytes, published as the message body.
//!
//! Receivers reject (and count) a frame whose COBS encoding is invalid, whose CRC does not
//! match, whose version byte is not `0x01`, or whose body is not exactly one postcard
//! `Record`. A receiver buffer of [`encoded_len_max`] bytes always suffices.
//!
//! # Example
//!
//! ```
//! use leaf_frames::{decode_record, encode_record, Record};
//!
//! let record = Record { channel: "t", timestamp_us: 300, payload: &[0x00, 0x2A] };
//! let mut out = [0u8; 32];
//! let n = encode_record(&record, &mut out).unwrap();
//! // body:      01 | 01 74 | AC 02 | 02 00 2A      (version | "t" | 300 | [00 2A])
//! // + CRC LE:  30 3C AD 58                        (CRC-32 of the body = 0x58AD3C30)
//! // COBS:      07 01 01 74 AC 02 02 | 06 2A 30 3C AD 58
//! assert_eq!(
//!     &out[..n],
//!     [0x00, 0x07, 0x01, 0x01, 0x74, 0xAC, 0x02, 0x02, 0x06, 0x2A, 0x30, 0x3C, 0xAD, 0x58, 0x00]
//! );
//! assert_eq!(decode_record(&[0x01, 0x01, 0x74, 0xAC, 0x02, 0x02, 0x00, 0x2A, 0x30, 0x3C, 0xAD, 0x58]), Ok(record));
//! ```

use crate::cobs::CobsWriter;
use crate::{CobsDecoder, Decoder, EncodeError, FrameError};
use crc::{Crc, Digest, CRC_32_ISO_HDLC};
use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};

/// The format version byte that starts every record body.
pub const FORMAT_VERSION: u8 = 0x01;

/// Length of the CRC trailer.
const CRC_LEN: usize = 4;

/// Longest varint encoding of a `u64`.
const VARINT_MAX: usize = 10;

/// CRC-32/ISO-HDLC.
pub(crate) static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// One record: a payload tagged with a channel and a device timestamp. Borrows its strings
/// from the frame it was decoded from (or from the caller when encoding).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone, Copy)]
pub struct Record<'a> {
    /// Subject suffix: NATS subject token(s), e.g. `"temp"` or `"line1.temp"`.
    pub channel: &'a str,
    /// Device clock in microseconds; 0 if the device has no clock.
    pub timestamp_us: u64,
    /// The message body.
    #[serde(borrow)]
    pub payload: &'a [u8],
}

/// Decodes a record from a COBS-decoded frame (version byte, postcard body, CRC).
///
/// Checks, in order: length, CRC ([`FrameError::Crc`]), version byte, postcard body and the
/// absence of trailing bytes ([`FrameError::Record`]).
pub fn decode_record(frame: &[u8]) -> Result<Record<'_>, FrameError> {
    let body_len = frame
        .len()
        .checked_sub(CRC_LEN)
        .filter(|&n| n > 0)
        .ok_or(FrameError::Record)?;
    let (body, crc) = frame.split_at(body_len);
    let crc: [u8; CRC_LEN] = crc.try_into().map_err(|_| FrameError::Record)?;
    if CRC32.checksum(body) != u32::from_le_bytes(crc) {
        return Err(FrameError::Crc);
    }
    match body.split_first() {
        Some((&FORMAT_VERSION, rest)) => match postcard::take_from_bytes::<Record<'_>>(rest) {
            Ok((record, [])) => Ok(record),
            _ => Err(FrameError::Record),
        },
        _ => Err(FrameError::Record),
    }
}

/// Decodes the record wire format from a byte stream: a [`CobsDecoder`] of capacity `N`
/// followed by [`decode_record`].
#[derive(Debug, Clone, Default)]
pub struct RecordDecoder<const N: usize> {
    /// The frame decoder.
    cobs: CobsDecoder<N>,
}

impl<const N: usize> RecordDecoder<N> {
    /// Creates an empty decoder.
    pub const fn new() -> Self {
        Self {
            cobs: CobsDecoder::new(),
        }
    }

    /// Feeds one byte; returns a record (borrowing the decoder's buffer) or an error when a
    /// frame ends.
    pub fn push(&mut self, byte: u8) -> Option<Result<Record<'_>, FrameError>> {
        Some(match self.cobs.push(byte)? {
            Ok(frame) => decode_record(frame),
            Err(e) => Err(e),
        })
    }

    /// The line went silent (or EOF): drops a partial frame and reports it
    /// ([`FrameError::Truncated`] or [`FrameError::Overlong`]). Never yields a record.
    pub fn idle(&mut self) -> Option<FrameError> {
        self.cobs.idle()?.err()
    }

    /// Drops any partial frame (the port was reopened).
    pub fn reset(&mut self) {
        self.cobs.reset();
    }
}

/// Length of the varint encoding of `n`.
const fn varint_len(n: usize) -> usize {
    let mut len = 1;
    let mut rest = n >> 7;
    while rest != 0 {
        len += 1;
        rest >>= 7;
    }
    len
}

/// Upper bound of the full wire frame (both `0x00` delimiters included) for a record with a
/// payload of `payload_len` bytes and a channel of `channel_len` bytes. Also a sufficient
/// receiver capacity `N`.
pub const fn encoded_len_max(payload_len: usize, channel_len: usize) -> usize {
    let body = 1usize
        .saturating_add(varint_len(channel_len))
        .saturating_add(channel_len)
        .saturating_add(VARINT_MAX)
        .saturating_add(varint_len(payload_len))
        .saturating_add(payload_len)
        .saturating_add(CRC_LEN);
    crate::cobs_encoded_len_max(body).saturating_add(2)
}

/// A postcard output flavor that CRCs and COBS-encodes straight into the output slice.
struct RecordWriter<'a> {
    /// COBS encoder over the output slice.
    cobs: CobsWriter<'a>,
    /// CRC of the body so far.
    digest: Digest<'static, u32>,
}

impl Flavor for RecordWriter<'_> {
    type Output = Self;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.digest.update(data);
        data.iter().try_for_each(|&b| {
            self.cobs
                .push(b)
                .map_err(|_| postcard::Error::SerializeBufferFull)
        })
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<Self> {
        Ok(self)
    }
}

/// Encodes `record` as a complete wire frame (both `0x00` delimiters included) into `out`;
/// returns the number of bytes written (at most
/// [`encoded_len_max`]`(payload.len(), channel.len())`).
///
/// Allocation-free: the body is CRC'd and COBS-encoded while postcard serializes it.
pub fn encode_record(record: &Record<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut writer = RecordWriter {
        cobs: CobsWriter::start(out)?,
        digest: CRC32.digest(),
    };
    writer
        .try_push(FORMAT_VERSION)
        .map_err(|_| EncodeError::BufferTooSmall)?;
    let RecordWriter { mut cobs, digest } =
        postcard::serialize_with_flavor(record, writer).map_err(|_| EncodeError::BufferTooSmall)?;
    for b in digest.finalize().to_le_bytes() {
        cobs.push(b)?;
    }
    cobs.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn encode(record: &Record<'_>) -> Vec<u8> {
        let mut out = vec![0u8; encoded_len_max(record.payload.len(), record.channel.len())];
        let n = encode_record(record, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Decodes a COBS frame by hand from a wire frame.
    fn cobs_body(wire: &[u8]) -> Vec<u8> {
        let mut d = CobsDecoder::<4096>::new();
        let frames: Vec<Vec<u8>> = wire
            .iter()
            .filter_map(|&b| d.push(b).map(|r| r.unwrap().to_vec()))
            .collect();
        assert_eq!(frames.len(), 1);
        frames.into_iter().next().unwrap()
    }

    #[test]
    fn crc_is_iso_hdlc() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_layout() {
        let record = Record {
            channel: "line1.temp",
            timestamp_us: 1_700_000_000_000_000,
            payload: &[0, 1, 2, 0, 0, 255],
        };
        let wire = encode(&record);
        assert_eq!(wire[0], 0);
        assert_eq!(*wire.last().unwrap(), 0);
        assert!(!wire[1..wire.len() - 1].contains(&0));
        assert!(wire.len() <= encoded_len_max(6, 10));
        let body = cobs_body(&wire);
        assert_eq!(body[0], FORMAT_VERSION);
        assert_eq!(body[1], 10);
        assert_eq!(&body[2..12], b"line1.temp");
        assert_eq!(decode_record(&body), Ok(record));

        let mut d = RecordDecoder::<64>::new();
        let got: Vec<_> = wire
            .iter()
            .filter_map(|&b| {
                d.push(b)
                    .map(|r| r.map(|r| (r.channel.len(), r.timestamp_us, r.payload.to_vec())))
            })
            .collect();
        assert_eq!(
            got,
            [Ok((10, record.timestamp_us, record.payload.to_vec()))]
        );
        assert_eq!(d.idle(), None);
    }

    #[test]
    fn large_payload_round_trip_and_bound_is_tight_enough() {
        let payload: Vec<u8> = (0..2000u32).map(|i| (i % 7) as u8 + 1).collect();
        let record = Record {
            channel: "x",
            timestamp_us: u64::MAX,
            payload: &payload,
        };
        let wire = encode(&record);
        assert_eq!(wire.len(), encoded_len_max(2000, 1));
        assert_eq!(decode_record(&cobs_body(&wire)), Ok(record));
        let mut small = vec![0u8; wire.len() - 1];
        assert_eq!(
            encode_record(&record, &mut small),
            Err(EncodeError::BufferTooSmall)
        );
    }

    #[test]
    fn rejects_bad_frames() {
        let record = Record {
            channel: "a",
            timestamp_us: 5,
            payload: b"xyz",
        };
        let body = cobs_body(&encode(&record));
        assert_eq!(decode_record(&[]), Err(FrameError::Record));
        assert_eq!(
            decode_record(&body[body.len() - 4..]),
            Err(FrameError::Record)
        );
        let mut bad = body.clone();
        bad[3] ^= 0x10;
        assert_eq!(decode_record(&bad), Err(FrameError::Crc));

        // Re-CRC a modified body to get past the CRC check.
        let with_crc = |b: &[u8]| {
            let mut v = b.to_vec();
            v.extend(CRC32.checksum(b).to_le_bytes());
            v
        };
        let inner = &body[..body.len() - 4];
        let mut wrong_version = inner.to_vec();
        wrong_version[0] = 2;
        assert_eq!(
            decode_record(&with_crc(&wrong_version)),
            Err(FrameError::Record)
        );
        let mut trailing = inner.to_vec();
        trailing.push(0);
        assert_eq!(decode_record(&with_crc(&trailing)), Err(FrameError::Record));
        assert_eq!(
            decode_record(&with_crc(&inner[..inner.len() - 1])),
            Err(FrameError::Record)
        );
        assert_eq!(
            decode_record(&with_crc(&[FORMAT_VERSION, 1, 0xFF, 0, 0])),
            Err(FrameError::Record)
        );
        assert_eq!(
            decode_record(&with_crc(&[FORMAT_VERSION, 1, b'a', 0, 0])).map(|r| r.channel),
            Ok("a")
        );
    }

    #[test]
    fn record_decoder_errors_and_recovery() {
        let record = Record {
            channel: "c",
            timestamp_us: 0,
            payload: &[],
        };
        let wire = encode(&record);
        let mut d = RecordDecoder::<16>::new();
        let mut stream = vec![0x55, 0x66];
        stream.extend(&wire);
        stream.extend([1, 0]); // empty COBS frame: not a record
        stream.extend(&wire[..4]);
        let results: Vec<_> = stream
            .iter()
            .filter_map(|&b| d.push(b).map(|r| r.map(|r| r.channel.len())))
            .collect();
        assert_eq!(
            results,
            [Err(FrameError::Cobs), Ok(1), Err(FrameError::Record)]
        );
        assert_eq!(d.idle(), Some(FrameError::Truncated { len: 3 }));
        d.push(3);
        d.reset();
        assert_eq!(d.idle(), None);
    }

    #[test]
    fn varint_len_matches_postcard() {
        for n in [0usize, 1, 127, 128, 16383, 16384, usize::MAX] {
            let mut buf = [0u8; 16];
            let used = postcard::to_slice(&n, &mut buf).unwrap().len();
            assert_eq!(varint_len(n), used, "{n}");
        }
    }
}
