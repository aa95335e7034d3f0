//! Delimiter-terminated frames ("lines"), and the matching encoder.
//!
//! The delimiter is matched with a Knuth–Morris–Pratt automaton, so delimiters whose prefix
//! repeats (`\r` `\r\n`, `a` `ab` with input `aab`) and delimiters split across reads are
//! matched exactly where they end, at O(1) amortized cost per byte.

use crate::{ConfigError, Decoder, EncodeError, FrameError};
use heapless::Vec;

/// Longest line delimiter accepted, in bytes.
pub const MAX_DELIMITER_LEN: usize = 8;

/// Splits a byte stream at a delimiter of 1 to [`MAX_DELIMITER_LEN`] bytes.
///
/// Frames exclude the delimiter and hold at most `N` bytes. Nothing is stripped: with the
/// delimiter `\n`, a line ending `\r\n` yields a frame ending in `\r` (configure `\r\n` for
/// that). Empty frames (two delimiters back to back) are skipped.
#[derive(Debug, Clone)]
pub struct LineDecoder<const N: usize> {
    /// The first `N` frame bytes committed so far. After a frame is emitted (and `count` is
    /// 0), it holds that frame, which the caller may be borrowing, until the next commit
    /// clears it.
    buf: Vec<u8, N>,
    /// Frame bytes committed so far, including those discarded past capacity.
    count: usize,
    /// The delimiter (1 to `MAX_DELIMITER_LEN` bytes).
    delim: Vec<u8, MAX_DELIMITER_LEN>,
    /// KMP failure function: `fail[i]` is the length of the longest proper prefix of
    /// `delim[..=i]` that is also its suffix.
    fail: [u8; MAX_DELIMITER_LEN],
    /// How many trailing input bytes match a delimiter prefix (not yet committed).
    matched: usize,
}

impl<const N: usize> LineDecoder<N> {
    /// Creates a decoder for `delimiter` (1 to [`MAX_DELIMITER_LEN`] bytes).
    pub fn new(delimiter: &[u8]) -> Result<Self, ConfigError> {
        if delimiter.is_empty() {
            return Err(ConfigError::EmptyDelimiter);
        }
        let delim = Vec::from_slice(delimiter).map_err(|_| ConfigError::DelimiterTooLong {
            len: delimiter.len(),
        })?;
        Ok(Self {
            buf: Vec::new(),
            count: 0,
            fail: failure_function(&delim),
            delim,
            matched: 0,
        })
    }

    /// The configured delimiter.
    pub fn delimiter(&self) -> &[u8] {
        &self.delim
    }

    /// Appends one byte to the current frame, or counts it if the frame is over capacity.
    fn commit(&mut self, byte: u8) {
        if self.count == 0 {
            // First byte of a new frame: release the previous one.
            self.buf.clear();
        }
        // A full buffer drops the byte: the frame is overlong (`count > N`) and is reported
        // as such at its delimiter or idle.
        let _ = self.buf.push(byte);
        self.count = self.count.saturating_add(1);
    }

    /// Ends the current frame at a delimiter.
    fn finish(&mut self) -> Option<Result<&[u8], FrameError>> {
        let count = core::mem::take(&mut self.count);
        self.matched = 0;
        if count == 0 {
            None
        } else if count > N {
            Some(Err(FrameError::Overlong { len: count }))
        } else {
            Some(Ok(&self.buf))
        }
    }
}

impl<const N: usize> Decoder for LineDecoder<N> {
    fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        loop {
            if self.delim.get(self.matched) == Some(&byte) {
                self.matched += 1;
                break;
            }
            if self.matched == 0 {
                self.commit(byte);
                break;
            }
            // The pending match `delim[..matched]` failed; keep its longest suffix that is
            // still a delimiter prefix and commit the bytes before it.
            let keep = usize::from(self.fail.get(self.matched - 1).copied().unwrap_or(0));
            for i in 0..self.matched - keep {
                if let Some(&b) = self.delim.get(i) {
                    self.commit(b);
                }
            }
            self.matched = keep;
        }
        if self.matched == self.delim.len() {
            self.finish()
        } else {
            None
        }
    }

    fn idle(&mut self) -> Option<Result<&[u8], FrameError>> {
        // A pending partial delimiter match is part of the frame.
        let total = self.count.saturating_add(self.matched);
        self.reset();
        match total {
            0 => None,
            len if len > N => Some(Err(FrameError::Overlong { len })),
            len => Some(Err(FrameError::Truncated { len })),
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.matched = 0;
        self.buf.clear();
    }
}

/// Computes the KMP failure function of `delim` (at most [`MAX_DELIMITER_LEN`] bytes; the
/// rest is ignored).
fn failure_function(delim: &[u8]) -> [u8; MAX_DELIMITER_LEN] {
    let mut fail = [0u8; MAX_DELIMITER_LEN];
    let mut k = 0usize;
    for i in 1..delim.len().min(MAX_DELIMITER_LEN) {
        while k > 0 && delim.get(i) != delim.get(k) {
            k = usize::from(fail.get(k - 1).copied().unwrap_or(0));
        }
        if delim.get(i) == delim.get(k) {
            k += 1;
        }
        if let Some(slot) = fail.get_mut(i) {
            // k < MAX_DELIMITER_LEN, so it fits in a u8.
            *slot = k as u8;
        }
    }
    fail
}

/// Writes `payload` followed by `delimiter` into `out`; returns the number of bytes written.
///
/// Refuses a payload that the receiver would split: one that contains the delimiter, or whose
/// end together with the delimiter contains it earlier (e.g. payload `xa` with delimiter
/// `aa`). An empty payload encodes to the bare delimiter, which receivers skip.
pub fn encode_line(payload: &[u8], delimiter: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    if delimiter.is_empty() || delimiter.len() > MAX_DELIMITER_LEN {
        return Err(EncodeError::BadDelimiter);
    }
    let total = payload
        .len()
        .checked_add(delimiter.len())
        .ok_or(EncodeError::BufferTooSmall)?;
    let frame = out.get_mut(..total).ok_or(EncodeError::BufferTooSmall)?;
    let (head, tail) = frame.split_at_mut(payload.len());
    head.copy_from_slice(payload);
    tail.copy_from_slice(delimiter);
    let first = frame.windows(delimiter.len()).position(|w| w == delimiter);
    if first == Some(payload.len()) {
        Ok(total)
    } else {
        Err(EncodeError::DelimiterInPayload)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Feeds `input` and collects every result (frames copied out).
    fn feed<const N: usize>(
        d: &mut LineDecoder<N>,
        input: &[u8],
    ) -> Vec<Result<Vec<u8>, FrameError>> {
        input
            .iter()
            .filter_map(|&b| d.push(b).map(|r| r.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn splits_on_newline_keeping_cr() {
        let mut d = LineDecoder::<16>::new(b"\n").unwrap();
        assert_eq!(
            feed(&mut d, b"ab\ncd\r\n"),
            [Ok(b"ab".to_vec()), Ok(b"cd\r".to_vec())]
        );
        assert_eq!(d.idle(), None);
    }

    #[test]
    fn crlf_with_extra_cr() {
        let mut d = LineDecoder::<16>::new(b"\r\n").unwrap();
        assert_eq!(
            feed(&mut d, b"x\r\r\ny\r\n\r\n"),
            [Ok(b"x\r".to_vec()), Ok(b"y".to_vec())]
        );
    }

    #[test]
    fn overlapping_prefixes() {
        let mut d = LineDecoder::<16>::new(b"ab").unwrap();
        assert_eq!(feed(&mut d, b"aab"), [Ok(b"a".to_vec())]);
        let mut d = LineDecoder::<16>::new(b"aab").unwrap();
        assert_eq!(feed(&mut d, b"aaab"), [Ok(b"a".to_vec())]);
        let mut d = LineDecoder::<16>::new(b"abab").unwrap();
        assert_eq!(feed(&mut d, b"xabababy"), [Ok(b"x".to_vec())]);
        assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 3 })));
        assert_eq!(feed(&mut d, b"xabaababy"), [Ok(b"xaba".to_vec())]);
        assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 1 })));
        let mut d = LineDecoder::<16>::new(b"aa").unwrap();
        assert_eq!(feed(&mut d, b"xaaa"), [Ok(b"x".to_vec())]);
        assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 1 })));
    }

    #[test]
    fn delimiter_split_across_pushes_and_partial_prefix_kept() {
        let mut d = LineDecoder::<16>::new(b"END").unwrap();
        assert_eq!(feed(&mut d, b"aEN"), []);
        assert_eq!(feed(&mut d, b"xEND"), [Ok(b"aENx".to_vec())]);
    }

    #[test]
    fn empty_frames_skipped() {
        let mut d = LineDecoder::<16>::new(b"\n").unwrap();
        assert_eq!(feed(&mut d, b"\n\n\na\n\n"), [Ok(b"a".to_vec())]);
    }

    #[test]
    fn overlong_reported_once_then_recovers() {
        let mut d = LineDecoder::<4>::new(b"\r\n").unwrap();
        assert_eq!(
            feed(&mut d, b"abcd\r\nabcdefgh\r\r\nok\r\n"),
            [
                Ok(b"abcd".to_vec()),
                Err(FrameError::Overlong { len: 9 }),
                Ok(b"ok".to_vec())
            ]
        );
        // Overlong pending at idle is reported there.
        assert_eq!(feed(&mut d, b"abcdef"), []);
        assert_eq!(d.idle(), Some(Err(FrameError::Overlong { len: 6 })));
        assert_eq!(d.idle(), None);
    }

    #[test]
    fn truncated_at_idle_and_reset() {
        let mut d = LineDecoder::<8>::new(b"\r\n").unwrap();
        assert_eq!(feed(&mut d, b"abc\r"), []);
        assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 4 })));
        assert_eq!(feed(&mut d, b"xy"), []);
        d.reset();
        assert_eq!(feed(&mut d, b"\nz\r\n"), [Ok(b"\nz".to_vec())]);
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            LineDecoder::<8>::new(b"").unwrap_err(),
            ConfigError::EmptyDelimiter
        );
        assert_eq!(
            LineDecoder::<8>::new(b"123456789").unwrap_err(),
            ConfigError::DelimiterTooLong { len: 9 }
        );
        assert_eq!(
            LineDecoder::<8>::new(b"12345678").unwrap().delimiter(),
            b"12345678"
        );
    }

    #[test]
    fn failure_function_values() {
        assert_eq!(&failure_function(b"aabaab")[..6], &[0, 1, 0, 1, 2, 3]);
    }

    #[test]
    fn encode_line_checks() {
        let mut out = [0u8; 8];
        assert_eq!(encode_line(b"hi", b"\r\n", &mut out), Ok(4));
        assert_eq!(&out[..4], b"hi\r\n");
        assert_eq!(
            encode_line(b"h\ni", b"\n", &mut out),
            Err(EncodeError::DelimiterInPayload)
        );
        assert_eq!(
            encode_line(b"xa", b"aa", &mut out),
            Err(EncodeError::DelimiterInPayload)
        );
        assert_eq!(
            encode_line(b"toolong", b"\r\n", &mut out),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(
            encode_line(b"x", b"", &mut out),
            Err(EncodeError::BadDelimiter)
        );
        assert_eq!(encode_line(b"", b"\n", &mut out), Ok(1));
    }
}
