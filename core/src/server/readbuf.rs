//! A connection's read buffer: it starts small (idle connections cost little) and doubles, up
//! to 64 KiB, while reads keep filling it (a fast sender gets large reads, few syscalls).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The smallest read size.
const MIN_READ: usize = 4 * 1024;
/// The largest read size.
const MAX_READ: usize = 64 * 1024;

/// Bytes read from a connection and not yet parsed.
#[derive(Debug)]
pub struct ReadBuffer {
    /// The unparsed bytes; the owner consumes them with `advance`.
    pub buf: BytesMut,
    read_size: usize,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer {
            buf: BytesMut::with_capacity(MIN_READ),
            read_size: MIN_READ,
        }
    }
}

impl ReadBuffer {
    /// Reads once from `reader`, appending to the buffer; `Ok(0)` means end of stream.
    /// Cancel-safe: a read that is dropped before completing loses nothing.
    pub async fn read_from<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let n = reader.read_buf(&mut self.buf).await?;
        // A read that filled the buffer: the peer sends faster than we read.
        if n >= spare.min(self.read_size) && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_while_reads_fill_it_and_keeps_every_byte() {
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut reader = &data[..];
        let mut rb = ReadBuffer::default();
        let mut sizes = Vec::new();
        let mut total = Vec::new();
        loop {
            let n = rb.read_from(&mut reader).await.unwrap();
            if n == 0 {
                break;
            }
            sizes.push(n);
            total.extend_from_slice(&rb.buf);
            rb.buf.clear();
        }
        assert_eq!(total, data);
        assert!(sizes.first().is_some_and(|&n| n <= 2 * MIN_READ));
        assert!(sizes.iter().any(|&n| n >= MAX_READ / 2), "{sizes:?}");
    }
}
