//! Shared test helpers: a noop-waker `block_on` and a chunked in-memory async reader.

#![allow(dead_code)]

use core::convert::Infallible;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use embedded_io_async::{ErrorKind, ErrorType, Read};

/// Polls `fut` to completion with a waker that does nothing (our futures wake themselves).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// A future that is pending once, then ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: core::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Returns `data` in chunks whose sizes cycle through `sizes` (each at least 1 and at most
/// the caller's buffer), pending once before every other read; fails with `fail` once all
/// data is read if set, else returns EOF.
pub struct ChunkReader {
    pub data: Vec<u8>,
    pub pos: usize,
    pub sizes: Vec<usize>,
    pub reads: usize,
    pub fail: Option<ErrorKind>,
}

impl ChunkReader {
    pub fn new(data: Vec<u8>, sizes: Vec<usize>) -> Self {
        Self {
            data,
            pos: 0,
            sizes,
            reads: 0,
            fail: None,
        }
    }
}

impl ErrorType for ChunkReader {
    type Error = ErrorKind;
}

impl Read for ChunkReader {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        self.reads += 1;
        if self.reads.is_multiple_of(2) {
            YieldOnce(false).await;
        }
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return match self.fail {
                Some(kind) => Err(kind),
                None => Ok(0),
            };
        }
        let want = self
            .sizes
            .get(self.reads % self.sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let n = want.min(buf.len()).min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader that never fails, for `Infallible` checks.
pub struct Empty;

impl ErrorType for Empty {
    type Error = Infallible;
}

impl Read for Empty {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, Infallible> {
        Ok(0)
    }
}
