//! COBS (Consistent Overhead Byte Stuffing) frames delimited by `0x00`: an incremental
//! decoder and a streaming encoder.
//!
//! COBS removes every `0x00` from the data: the encoded frame is a sequence of blocks, each a
//! code byte `c` (1..=255) followed by `c - 1` non-zero data bytes. A block with `c < 255` is
//! followed by an implicit `0x00` in the decoded data, except at the end of the frame; a block
//! with `c == 255` is not. Overhead is at most one byte per 254 data bytes, plus one.

use crate::{Decoder, EncodeError, FrameError};
use heapless::Vec;

/// Worst-case COBS encoding of `len` bytes, without delimiters: `len + len / 254 + 1`.
pub const fn cobs_encoded_len_max(len: usize) -> usize {
    len.saturating_add(len / 254).saturating_add(1)
}

/// Decodes `0x00`-delimited COBS frames as the bytes arrive; emits the decoded bytes
/// (at most `N`).
///
/// No bytes between two delimiters is not a frame and yields nothing (so a sender may start
/// every frame with `0x00` to flush garbage). The encoding of an empty payload (`01 00`) is a
/// valid, empty frame and is emitted. Invalid encoding yields [`FrameError::Cobs`]; a decoded
/// frame longer than `N` is discarded up to the next `0x00` and reported there once as
/// [`FrameError::Overlong`] (with the encoded length).
#[derive(Debug, Clone)]
pub struct CobsDecoder<const N: usize> {
    /// Decoded bytes of the current frame. While no frame is in progress (`raw == 0`) it
    /// still holds the last emitted frame, which the caller may be borrowing; the first byte
    /// of the next frame clears it.
    buf: Vec<u8, N>,
    /// Encoded bytes received for the current frame (excluding delimiters).
    raw: usize,
    /// Data bytes still expected in the current block; 0 means the next byte is a code byte.
    remaining: u8,
    /// The current block implies a `0x00` if another block follows.
    pending_zero: bool,
    /// The decoded frame exceeded `N`; discard until the delimiter.
    overlong: bool,
}

impl<const N: usize> CobsDecoder<N> {
    /// Creates an empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            raw: 0,
            remaining: 0,
            pending_zero: false,
            overlong: false,
        }
    }

    /// Appends one decoded byte, or switches to discarding if the buffer is full.
    fn store(&mut self, byte: u8) {
        if self.buf.push(byte).is_err() {
            self.overlong = true;
        }
    }

    /// Ends the current frame, keeping its decoded bytes in `buf` so they can be emitted;
    /// returns the state it had as `(raw, complete, overlong)`.
    fn end_frame(&mut self) -> (usize, bool, bool) {
        let state = (self.raw, self.remaining == 0, self.overlong);
        self.raw = 0;
        self.remaining = 0;
        self.pending_zero = false;
        self.overlong = false;
        state
    }
}

impl<const N: usize> Default for CobsDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder for CobsDecoder<N> {
    fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte == 0 {
            let (raw, complete, overlong) = self.end_frame();
            return if raw == 0 {
                None
            } else if overlong {
                Some(Err(FrameError::Overlong { len: raw }))
            } else if !complete {
                Some(Err(FrameError::Cobs))
            } else {
                Some(Ok(&self.buf))
            };
        }
        if self.raw == 0 {
            // First byte of a new frame: release the previous one.
            self.buf.clear();
        }
        self.raw = self.raw.saturating_add(1);
        if self.overlong {
            return None;
        }
        if self.remaining == 0 {
            // Code byte: the previous block's implicit zero is real now that a block follows.
            if self.pending_zero {
                self.store(0);
            }
            self.remaining = byte - 1;
            self.pending_zero = byte != 0xFF;
        } else {
            self.store(byte);
            self.remaining -= 1;
        }
        None
    }

    fn idle(&mut self) -> Option<Result<&[u8], FrameError>> {
        let state = self.end_frame();
        self.buf.clear();
        match state {
            (0, ..) => None,
            (len, _, true) => Some(Err(FrameError::Overlong { len })),
            (len, ..) => Some(Err(FrameError::Truncated { len })),
        }
    }

    fn reset(&mut self) {
        self.end_frame();
        self.buf.clear();
    }
}

/// Streaming COBS encoder writing into a slice.
pub(crate) struct CobsWriter<'a> {
    /// Output buffer.
    out: &'a mut [u8],
    /// Next write position.
    pos: usize,
    /// Position reserved for the current block's code byte.
    code_pos: usize,
    /// Code of the current block: 1 + its data bytes so far.
    code: u8,
}

impl<'a> CobsWriter<'a> {
    /// Starts a frame: writes the leading `0x00` delimiter and reserves the first code byte.
    pub(crate) fn start(out: &'a mut [u8]) -> Result<Self, EncodeError> {
        *out.first_mut().ok_or(EncodeError::BufferTooSmall)? = 0;
        if out.len() < 2 {
            return Err(EncodeError::BufferTooSmall);
        }
        Ok(Self {
            out,
            pos: 2,
            code_pos: 1,
            code: 1,
        })
    }

    /// Writes `byte` at `pos` and advances.
    fn put(&mut self, byte: u8) -> Result<(), EncodeError> {
        *self
            .out
            .get_mut(self.pos)
            .ok_or(EncodeError::BufferTooSmall)? = byte;
        self.pos += 1;
        Ok(())
    }

    /// Writes the current block's code byte and reserves the next one.
    fn close_block(&mut self) -> Result<(), EncodeError> {
        self.write_code();
        self.code_pos = self.pos;
        self.code = 1;
        self.put(0)
    }

    /// Writes the current code into its reserved position.
    fn write_code(&mut self) {
        if let Some(slot) = self.out.get_mut(self.code_pos) {
            *slot = self.code;
        }
    }

    /// Encodes one data byte.
    pub(crate) fn push(&mut self, byte: u8) -> Result<(), EncodeError> {
        if byte == 0 {
            return self.close_block();
        }
        self.put(byte)?;
        self.code += 1;
        if self.code == 0xFF {
            self.close_block()?;
        }
        Ok(())
    }

    /// Ends the frame: writes the last code byte and the trailing `0x00`; returns the total
    /// length written.
    pub(crate) fn finish(mut self) -> Result<usize, EncodeError> {
        self.write_code();
        self.put(0)?;
        Ok(self.pos)
    }
}

/// Writes `0x00 | COBS(data) | 0x00` into `out`; returns the number of bytes written, at most
/// `cobs_encoded_len_max(data.len()) + 2`.
///
/// The leading `0x00` flushes any garbage the receiver holds; [`CobsDecoder`] ignores the
/// empty frame it creates.
pub fn encode_cobs(data: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut writer = CobsWriter::start(out)?;
    for &b in data {
        writer.push(b)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn feed<const N: usize>(
        d: &mut CobsDecoder<N>,
        input: &[u8],
    ) -> Vec<Result<Vec<u8>, FrameError>> {
        input
            .iter()
            .filter_map(|&b| d.push(b).map(|r| r.map(<[u8]>::to_vec)))
            .collect()
    }

    fn encode(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; cobs_encoded_len_max(data.len()) + 2];
        let n = encode_cobs(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn known_vectors() {
        // Examples from the COBS paper / Wikipedia.
        assert_eq!(encode(&[]), [0, 1, 0]);
        assert_eq!(encode(&[0]), [0, 1, 1, 0]);
        assert_eq!(encode(&[0, 0]), [0, 1, 1, 1, 0]);
        assert_eq!(
            encode(&[0x11, 0x22, 0, 0x33]),
            [0, 3, 0x11, 0x22, 2, 0x33, 0]
        );
        assert_eq!(encode(&[0x11, 0, 0, 0]), [0, 2, 0x11, 1, 1, 1, 0]);
        let data: Vec<u8> = (1..=254).collect();
        let enc = encode(&data);
        assert_eq!(enc.len(), 254 + 4);
        assert_eq!(enc[1], 0xFF);
        assert_eq!(&enc[enc.len() - 2..], [1, 0]);
    }

    #[test]
    fn round_trips_including_long_runs() {
        for data in [
            Vec::new(),
            vec![0; 600],
            (0..=255u8).cycle().take(1000).collect(),
            vec![7u8; 254],
            vec![7u8; 255],
            vec![7u8; 508],
        ] {
            let mut d = CobsDecoder::<1000>::new();
            assert_eq!(feed(&mut d, &encode(&data)), [Ok(data.clone())]);
            // Without the redundant trailing 0x01 code (other encoders omit it).
            let mut enc = encode(&data);
            if data.len() % 254 == 0 && !data.is_empty() && !data.contains(&0) {
                enc.remove(enc.len() - 2);
                assert_eq!(feed(&mut d, &enc), [Ok(data.clone())]);
            }
        }
    }

    #[test]
    fn empty_frames_skipped_and_empty_payload_emitted() {
        let mut d = CobsDecoder::<8>::new();
        assert_eq!(feed(&mut d, &[0, 0, 0]), []);
        assert_eq!(feed(&mut d, &[1, 0]), [Ok(Vec::new())]);
    }

    #[test]
    fn invalid_encoding() {
        let mut d = CobsDecoder::<8>::new();
        // Code 5 promises 4 data bytes, only 2 arrive.
        assert_eq!(
            feed(&mut d, &[5, 1, 2, 0, 2, 9, 0]),
            [Err(FrameError::Cobs), Ok(vec![9])]
        );
    }

    #[test]
    fn overlong_reported_once_then_recovers() {
        let mut d = CobsDecoder::<4>::new();
        let mut input = encode(&[1, 2, 3, 4]);
        input.extend(encode(&[1, 2, 3, 4, 5]));
        input.extend(encode(&[0, 0, 0, 0, 0]));
        input.extend(encode(&[9]));
        assert_eq!(
            feed(&mut d, &input),
            [
                Ok(vec![1, 2, 3, 4]),
                Err(FrameError::Overlong { len: 6 }),
                Err(FrameError::Overlong { len: 6 }),
                Ok(vec![9])
            ]
        );
        feed(&mut d, &[9, 1, 1, 1, 1, 1, 1]);
        assert_eq!(d.idle(), Some(Err(FrameError::Overlong { len: 7 })));
    }

    #[test]
    fn truncated_at_idle() {
        let mut d = CobsDecoder::<8>::new();
        assert_eq!(feed(&mut d, &[0, 3, 1]), []);
        assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 2 })));
        assert_eq!(d.idle(), None);
        assert_eq!(feed(&mut d, &[2, 5, 0]), [Ok(vec![5])]);
    }

    #[test]
    fn buffer_too_small() {
        let mut out = [0u8; 4];
        assert_eq!(encode_cobs(&[1], &mut out), Ok(4));
        assert_eq!(
            encode_cobs(&[1, 2], &mut out),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(
            encode_cobs(&[], &mut out[..2]),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(encode_cobs(&[], &mut out[..3]), Ok(3));
    }
}
