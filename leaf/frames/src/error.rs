//! Error types: per-frame errors reported by decoders, configuration errors refused by
//! constructors, and encoder errors.

use core::fmt;

/// A problem with one frame, reported by a decoder in place of that frame.
///
/// A decoder that reports an error has already dropped the bad bytes and is ready for the
/// next frame; the host only counts and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The frame exceeded the decoder's capacity. Its bytes were discarded up to the next
    /// delimiter (or the next `idle()` for the gap decoder); the error is reported once, when
    /// that delimiter (or idle) arrives.
    Overlong {
        /// How many frame bytes arrived (excluding the delimiter; for COBS, encoded bytes).
        len: usize,
    },
    /// The line went idle (or reached EOF) in the middle of a frame; the partial frame was
    /// dropped.
    Truncated {
        /// How many bytes of the partial frame had arrived.
        len: usize,
    },
    /// The bytes between two `0x00` delimiters are not a valid COBS encoding.
    Cobs,
    /// The record's CRC-32 does not match its contents.
    Crc,
    /// The record has a bad format version byte, or its postcard body does not decode to a
    /// [`Record`](crate::Record) that spans exactly the bytes before the CRC.
    Record,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlong { len } => write!(f, "frame of {len} bytes exceeds the buffer capacity"),
            Self::Truncated { len } => write!(f, "partial frame of {len} bytes dropped"),
            Self::Cobs => f.write_str("invalid COBS encoding"),
            Self::Crc => f.write_str("record CRC mismatch"),
            Self::Record => f.write_str("malformed record (bad version byte or postcard body)"),
        }
    }
}

impl core::error::Error for FrameError {}

/// A decoder configuration refused by a constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The line delimiter is empty.
    EmptyDelimiter,
    /// The line delimiter is longer than [`MAX_DELIMITER_LEN`](crate::MAX_DELIMITER_LEN).
    DelimiterTooLong {
        /// The length that was given.
        len: usize,
    },
    /// The fixed frame length is 0 or larger than the decoder's capacity.
    BadFrameLength {
        /// The length that was given.
        len: usize,
        /// The decoder's capacity (`N`).
        capacity: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyDelimiter => f.write_str("line delimiter is empty"),
            Self::DelimiterTooLong { len } => write!(
                f,
                "line delimiter of {len} bytes is longer than {} bytes",
                crate::MAX_DELIMITER_LEN
            ),
            Self::BadFrameLength { len, capacity } => {
                write!(f, "fixed frame length {len} is not within 1..={capacity}")
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// A frame that could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small for the encoded frame.
    BufferTooSmall,
    /// The line delimiter is empty or longer than [`MAX_DELIMITER_LEN`](crate::MAX_DELIMITER_LEN).
    BadDelimiter,
    /// The payload contains the line delimiter (or ends in a way that makes the delimiter
    /// match early), so the receiver would split it.
    DelimiterInPayload,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("output buffer too small"),
            Self::BadDelimiter => f.write_str("line delimiter is empty or too long"),
            Self::DelimiterInPayload => f.write_str("payload contains the line delimiter"),
        }
    }
}

impl core::error::Error for EncodeError {}
