//! Frames delimited by line silence: everything received between two idle gaps.

use crate::{Decoder, FrameError};
use heapless::Vec;

/// Accumulates bytes until the host calls [`Decoder::idle`] (the line was silent for the
/// configured gap, or EOF), then emits everything received as one frame of at most `N` bytes.
///
/// `push` never returns anything. A frame larger than `N` is dropped and reported as
/// [`FrameError::Overlong`] at `idle`.
#[derive(Debug, Clone)]
pub struct GapDecoder<const N: usize> {
    /// The first `N` bytes received since the last idle. After `idle` emits a frame (and
    /// `count` is 0), it holds that frame, which the caller may be borrowing, until the next
    /// byte clears it.
    buf: Vec<u8, N>,
    /// Bytes received since the last idle, including those past capacity.
    count: usize,
}

impl<const N: usize> GapDecoder<N> {
    /// Creates an empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            count: 0,
        }
    }
}

impl<const N: usize> Default for GapDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder for GapDecoder<N> {
    fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if self.count == 0 {
            // First byte of a new frame: release the previous one.
            self.buf.clear();
        }
        // A full buffer drops the byte: the frame is overlong (`count > N`) and is reported
        // as such at idle.
        let _ = self.buf.push(byte);
        self.count = self.count.saturating_add(1);
        None
    }

    fn idle(&mut self) -> Option<Result<&[u8], FrameError>> {
        match core::mem::take(&mut self.count) {
            0 => None,
            len if len > N => Some(Err(FrameError::Overlong { len })),
            _ => Some(Ok(&self.buf)),
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_at_idle_only() {
        let mut d = GapDecoder::<4>::new();
        for &b in b"a\nb" {
            assert_eq!(d.push(b), None);
        }
        assert_eq!(d.idle(), Some(Ok(&b"a\nb"[..])));
        assert_eq!(d.idle(), None);
    }

    #[test]
    fn exactly_full_then_overlong_then_recovers() {
        let mut d = GapDecoder::<4>::new();
        b"abcd".iter().for_each(|&b| assert_eq!(d.push(b), None));
        assert_eq!(d.idle(), Some(Ok(&b"abcd"[..])));
        b"abcdef".iter().for_each(|&b| assert_eq!(d.push(b), None));
        assert_eq!(d.idle(), Some(Err(FrameError::Overlong { len: 6 })));
        assert_eq!(d.idle(), None);
        b"xy".iter().for_each(|&b| assert_eq!(d.push(b), None));
        assert_eq!(d.idle(), Some(Ok(&b"xy"[..])));
    }

    #[test]
    fn reset_drops_partial() {
        let mut d = GapDecoder::<4>::default();
        d.push(1);
        d.reset();
        assert_eq!(d.idle(), None);
    }
}
