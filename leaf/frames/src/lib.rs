//! Serial frame decoders and device-side encoders for leafd.
//!
//! leafd reads serial ports and turns each port's byte stream into frames, each published as
//! one NATS message. This crate holds those decoders and the small encoders devices use. It
//! is `#![no_std]` and allocation-free (every decoder is a state machine over a
//! [`heapless::Vec`] of const-generic capacity `N`, stored inline), so the same code runs in
//! leafd and on a microcontroller.
//!
//! # Decoding model
//!
//! Every decoder implements [`Decoder`]:
//! - [`push`](Decoder::push) feeds one byte and returns a completed frame (borrowing the
//!   decoder's buffer, valid until the next call) or a [`FrameError`] when one is detected;
//! - [`idle`](Decoder::idle) is called by the host when the line has been silent for its
//!   configured gap, and at EOF: the gap decoder emits its frame there; the other decoders
//!   drop a partial frame and report it as [`FrameError::Truncated`];
//! - [`reset`](Decoder::reset) drops any partial state (the port was reopened).
//!
//! Errors never stop a decoder: the bad bytes are dropped and decoding continues with the next
//! frame. A frame longer than the capacity `N` is discarded up to its delimiter and reported
//! once as [`FrameError::Overlong`]; the frames after it are intact.
//! [`read_frames`] drives a decoder from an [`embedded_io_async::Read`] stream.
//!
//! # Framings
//!
//! | framing | decoder | a frame is | notes |
//! | --- | --- | --- | --- |
//! | line | [`LineDecoder`] | the bytes before a delimiter of 1–8 bytes (e.g. `\n`, `\r\n`) | delimiter excluded, nothing stripped, empty lines skipped |
//! | gap | [`GapDecoder`] | everything received between two silences of the configured gap | for request/response protocols without framing |
//! | fixed | [`FixedDecoder`] | every `len` bytes | a silence resynchronizes (partial frame dropped) |
//! | COBS | [`CobsDecoder`] | the COBS-decoded bytes between two `0x00` bytes | binary-safe; empty frames skipped |
//! | record | [`RecordDecoder`] | a COBS frame holding a versioned, CRC-checked [`Record`] | the format for microcontrollers, below |
//!
//! # Record format (for firmware authors)
//!
//! ```text
//! 0x00 | COBS( 0x01 | postcard(Record { channel, timestamp_us, payload }) | CRC-32 LE ) | 0x00
//! ```
//!
//! A device sends each message as one record: the format version byte `0x01`, the
//! [postcard](https://docs.rs/postcard) encoding of [`Record`] (channel as varint length +
//! UTF-8, timestamp in microseconds as varint, payload as varint length + bytes), and the
//! CRC-32/ISO-HDLC (zlib CRC) of those bytes, little-endian; all of it COBS-encoded and
//! framed by `0x00` on both sides. The [`record`] module documents every byte and gives a
//! worked example. Rust firmware uses [`encode_record`] (no allocation; size the buffer
//! with [`encoded_len_max`]); other firmware follows the specification. Devices that just
//! print text use lines, encoded with [`encode_line`].
#![no_std]

pub mod cobs;
mod error;
pub mod fixed;
pub mod gap;
pub mod line;
pub mod read;
pub mod record;

#[doc(hidden)]
pub mod fuzzing;

pub use cobs::{cobs_encoded_len_max, encode_cobs, CobsDecoder};
pub use error::{ConfigError, EncodeError, FrameError};
pub use fixed::FixedDecoder;
pub use gap::GapDecoder;
pub use line::{encode_line, LineDecoder, MAX_DELIMITER_LEN};
pub use read::read_frames;
pub use record::{
    decode_record, encode_record, encoded_len_max, Record, RecordDecoder, FORMAT_VERSION,
};

/// A byte-at-a-time frame decoder.
pub trait Decoder {
    /// Feeds one byte. Returns a completed frame (borrowing the decoder's buffer until the
    /// next call) or an error when one is detected; `None` otherwise.
    fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>>;

    /// The line has been silent for the configured gap, or reached EOF. The gap decoder emits
    /// its frame; the others drop a partial frame and report it as
    /// [`FrameError::Truncated`] (or [`FrameError::Overlong`] if it was already too long).
    /// Returns `None` if nothing was pending.
    fn idle(&mut self) -> Option<Result<&[u8], FrameError>>;

    /// Drops any partial frame (the port was reopened).
    fn reset(&mut self);
}
