//! Async driver: feeds a decoder from an [`embedded_io_async::Read`] stream.

use crate::{Decoder, FrameError};
use embedded_io_async::Read;

/// Reads `reader` in chunks of up to `chunk.len()` bytes until EOF (a read returning 0),
/// feeds every byte to `decoder` and passes each completed frame or frame error to
/// `on_frame`. At EOF calls [`Decoder::idle`] once, so a trailing partial frame is emitted
/// (gap decoder) or reported; then returns `Ok(())`.
///
/// Silence gaps are not detected here: a host that needs them (the gap decoder, resync of
/// fixed-length frames) races each read against its own timer and calls `idle()` itself
/// when the gap expires. `chunk` must not be empty (an empty buffer reads as EOF).
///
/// # Errors
///
/// Returns the reader's error as soon as a read fails; the decoder keeps its partial state.
pub async fn read_frames<R: Read, D: Decoder>(
    reader: &mut R,
    decoder: &mut D,
    chunk: &mut [u8],
    mut on_frame: impl FnMut(Result<&[u8], FrameError>),
) -> Result<(), R::Error> {
    loop {
        let n = reader.read(chunk).await?;
        if n == 0 {
            if let Some(result) = decoder.idle() {
                on_frame(result);
            }
            return Ok(());
        }
        for &byte in chunk.get(..n).unwrap_or_default() {
            if let Some(result) = decoder.push(byte) {
                on_frame(result);
            }
        }
    }
}
