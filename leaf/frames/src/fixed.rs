//! Fixed-length frames: one frame every `len` bytes.

use crate::{ConfigError, Decoder, FrameError};
use heapless::Vec;

/// Emits a frame every `len` bytes (`1 <= len <= N`).
///
/// There is no delimiter, so the host uses [`Decoder::idle`] as the resync point: a partial
/// frame pending when the line goes silent is dropped and reported as
/// [`FrameError::Truncated`], and the next byte starts a new frame.
#[derive(Debug, Clone)]
pub struct FixedDecoder<const N: usize> {
    /// Bytes of the current frame (fewer than `len`), or the last emitted frame (exactly
    /// `len`), which the caller may be borrowing until the next byte clears it.
    buf: Vec<u8, N>,
    /// Frame length.
    len: usize,
}

impl<const N: usize> FixedDecoder<N> {
    /// Creates a decoder for frames of `len` bytes; refuses `len` outside `1..=N`.
    pub fn new(len: usize) -> Result<Self, ConfigError> {
        if len == 0 || len > N {
            return Err(ConfigError::BadFrameLength { len, capacity: N });
        }
        Ok(Self {
            buf: Vec::new(),
            len,
        })
    }

    /// The configured frame length.
    pub fn frame_len(&self) -> usize {
        self.len
    }
}

impl<const N: usize> Decoder for FixedDecoder<N> {
    fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if self.buf.len() >= self.len {
            // The previous frame was emitted: release it.
            self.buf.clear();
        }
        // Cannot fail: the buffer now holds fewer than `len <= N` bytes.
        let _ = self.buf.push(byte);
        if self.buf.len() >= self.len {
            Some(Ok(&self.buf))
        } else {
            None
        }
    }

    fn idle(&mut self) -> Option<Result<&[u8], FrameError>> {
        let pending = self.buf.len();
        self.buf.clear();
        if pending == 0 || pending >= self.len {
            None
        } else {
            Some(Err(FrameError::Truncated { len: pending }))
        }
    }

    fn reset(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn frames_every_len_bytes() {
        let mut d = FixedDecoder::<8>::new(3).unwrap();
        let frames: Vec<Vec<u8>> = b"abcdefgh"
            .iter()
            .filter_map(|&b| d.push(b).map(|r| r.unwrap().to_vec()))
            .collect();
        assert_eq!(frames, [b"abc".to_vec(), b"def".to_vec()]);
        assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 2 })));
        assert_eq!(d.idle(), None);
        // Resynchronized after idle.
        assert_eq!(d.push(b'x'), None);
        assert_eq!(d.push(b'y'), None);
        assert_eq!(d.push(b'z'), Some(Ok(&b"xyz"[..])));
    }

    #[test]
    fn len_one_and_full_capacity() {
        let mut d = FixedDecoder::<2>::new(1).unwrap();
        assert_eq!(d.push(7), Some(Ok(&[7u8][..])));
        let mut d = FixedDecoder::<2>::new(2).unwrap();
        assert_eq!(d.frame_len(), 2);
        assert_eq!(d.push(7), None);
        d.reset();
        assert_eq!(d.push(8), None);
        assert_eq!(d.push(9), Some(Ok(&[8u8, 9][..])));
    }

    #[test]
    fn bad_lengths_refused() {
        assert_eq!(
            FixedDecoder::<4>::new(0).unwrap_err(),
            ConfigError::BadFrameLength {
                len: 0,
                capacity: 4
            }
        );
        assert!(FixedDecoder::<4>::new(5).is_err());
    }
}
