//! The outbound queue of one connection: what the server has to send to a client.
//!
//! Producers (the read tasks of *other* connections that publish, and the connection itself for
//! PONG, `+OK` and `-ERR`) append encoded protocol bytes under a short mutex; one writer task per
//! connection drains the queue with vectored writes. This gives the two properties the message
//! path depends on:
//!
//! * **Coalescing.** Every message appended while the previous write was in flight goes out in the
//!   next single `writev`, so a burst of small messages costs one syscall, not one per message.
//!   Producers only *wake* the writer once per read buffer they processed (see
//!   [`crate::server::client`]), not once per message.
//! * **Shared payloads.** Small payloads are copied next to their `MSG` line (copying 16 bytes is
//!   cheaper than an iovec). Payloads of [`SHARE_THRESHOLD`] bytes or more are appended as a
//!   reference-counted [`Bytes`] chunk, so a fan-out to N subscribers holds the payload once.
//!
//! Memory is bounded: `pending` counts bytes queued or in flight. Above the *stall* mark the
//! producer is asked to wait for the writer (it stops reading its own socket for a while, which
//! pushes back on the publishing client through TCP, as nats-server does); above the connection's
//! `max_pending` the connection is closed as a slow consumer.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// Payloads at least this large are shared between subscribers instead of copied.
pub const SHARE_THRESHOLD: usize = 4096;

/// The most a queue holds before its producers are asked to wait: enough for large vectored
/// writes, small enough that a fan-out to many slow readers stays within a small device's RAM.
const STALL_MARK_MAX: usize = 512 * 1024;

/// How many chunks one vectored write hands to the kernel at most.
const MAX_IOVECS: usize = 64;

/// The most capacity an idle queue keeps in its append buffer. A burst leaves a buffer as
/// large as the burst (a leafnode link's first interest is one line per subscription of the
/// account: 250 KB with 10,000 gateways), and the buffer would keep that allocation for the
/// connection's life; the writer frees a larger one once everything is written.
const IDLE_KEEP: usize = 8 * 1024;

/// A producer of a long stream of protocol bytes that is written into the queue step by step,
/// as the socket takes it, instead of all at once (a leafnode link's first `LS+` burst: one
/// line per subscription of the account, for every link of a fleet reconnecting at once).
pub trait Refill: Send + Sync {
    /// Appends the next step to `out`; returns whether more is to come (`false` ends it).
    fn refill(&self, out: &Outbound) -> bool;
}

/// Why an append was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Appended; nothing to worry about.
    Queued,
    /// Appended, but the queue is above the stall mark: the producer should wait for the writer.
    Stalled,
    /// Not appended: the connection is closed (or was just closed as a slow consumer).
    Closed,
}

struct Queue {
    /// Completed chunks waiting to be written.
    chunks: VecDeque<Bytes>,
    /// The chunk being appended to.
    current: BytesMut,
}

/// The outbound side of one connection, shared by every producer that delivers to it.
pub struct Outbound {
    queue: Mutex<Queue>,
    /// Bytes queued or being written.
    pending: AtomicUsize,
    /// Set once: the connection is going away; appends are refused.
    closed: AtomicBool,
    /// Set when `closed` was caused by exceeding `max_pending`.
    slow_consumer: AtomicBool,
    /// Wakes the writer task.
    wake_writer: Notify,
    /// Wakes producers stalled on this connection once the writer drained a batch.
    drained: Notify,
    /// Wakes whoever waits for the queue to close ([`Outbound::closed`]).
    closing: Notify,
    max_pending: usize,
    stall_mark: usize,
    /// What feeds the queue as it drains, if anything ([`Outbound::set_refill`]).
    refill: Mutex<Option<Arc<dyn Refill>>>,
    /// Whether `refill` is set (read by the writer without the lock).
    has_refill: AtomicBool,
    /// `PONG`s owed to the peer once the refill is done ([`Outbound::pong`]); changed only
    /// under the `refill` lock.
    owed_pongs: AtomicUsize,
}

impl Outbound {
    /// An empty queue that refuses to hold more than `max_pending` bytes.
    pub fn new(max_pending: usize) -> Self {
        let max_pending = max_pending.max(64 * 1024);
        Outbound {
            queue: Mutex::new(Queue {
                chunks: VecDeque::new(),
                current: BytesMut::new(),
            }),
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            slow_consumer: AtomicBool::new(false),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            closing: Notify::new(),
            max_pending,
            stall_mark: (max_pending / 4).min(STALL_MARK_MAX),
            refill: Mutex::new(None),
            has_refill: AtomicBool::new(false),
            owed_pongs: AtomicUsize::new(0),
        }
    }

    /// Appends bytes produced by `encode` (which writes into the current chunk) plus an optional
    /// shared payload chunk and a trailer. Returns what the producer should do next.
    ///
    /// `encode` must be cheap: it runs under the queue's mutex.
    pub fn append(
        &self,
        encode: impl FnOnce(&mut BytesMut),
        shared: Option<&Bytes>,
        trailer: &[u8],
    ) -> AppendOutcome {
        if self.closed.load(Ordering::Relaxed) {
            return AppendOutcome::Closed;
        }
        let pending;
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let before = q.current.len();
            encode(&mut q.current);
            let mut n = q.current.len() - before;
            if let Some(payload) = shared {
                let head = q.current.split().freeze();
                q.chunks.push_back(head);
                q.chunks.push_back(payload.clone());
                n += payload.len();
            }
            q.current.extend_from_slice(trailer);
            let added = n + trailer.len();
            // Counted under the lock: the writer subtracts what it took under the same lock's
            // protection, so `pending` never goes below zero.
            pending = self.pending.fetch_add(added, Ordering::Relaxed) + added;
        }
        if pending > self.max_pending {
            self.slow_consumer.store(true, Ordering::Relaxed);
            self.close();
            return AppendOutcome::Closed;
        }
        if pending > self.stall_mark {
            AppendOutcome::Stalled
        } else {
            AppendOutcome::Queued
        }
    }

    /// Appends raw protocol bytes (PONG, +OK, -ERR, INFO, PING).
    pub fn append_bytes(&self, bytes: &[u8]) -> AppendOutcome {
        self.append(|b| b.extend_from_slice(bytes), None, &[])
    }

    /// Wakes the writer task: call after a batch of appends.
    pub fn flush(&self) {
        self.wake_writer.notify_one();
    }

    /// Hands the queue a producer that the writer asks for one step each time it has written
    /// what was queued (before its next write), until it says it is done (replacing any
    /// earlier one). The producer thus goes at the socket's pace and is never starved by other
    /// traffic on the connection: the queue holds that traffic plus one step.
    pub fn set_refill(&self, refill: Arc<dyn Refill>) {
        *self.refill.lock().unwrap_or_else(|e| e.into_inner()) = Some(refill);
        self.has_refill.store(true, Ordering::Release);
        self.wake_writer.notify_one();
    }

    /// Asks the queue's producer for its next step; forgets the producer once it is done.
    /// Called by the writer only, once per write.
    fn refill(&self) {
        if !self.has_refill.load(Ordering::Acquire) {
            return;
        }
        let refill = self
            .refill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let more = refill.is_some_and(|r| r.refill(self));
        if !more {
            let owed = {
                let mut slot = self.refill.lock().unwrap_or_else(|e| e.into_inner());
                *slot = None;
                self.has_refill.store(false, Ordering::Release);
                self.owed_pongs.swap(0, Ordering::Relaxed)
            };
            for _ in 0..owed {
                if self.append_bytes(leaf_proto::PONG) == AppendOutcome::Closed {
                    break;
                }
            }
        }
    }

    /// Answers a `PING`: at once, or, while a refill is under way, right after it. A `PONG`
    /// tells the peer that it has everything the server had to say before it (a leafnode
    /// link's first burst of interest, as nats-server writes it whole before reading on).
    /// Owed `PONG`s are a count: a peer pinging without reading costs no memory until the
    /// refill ends, and then no more than its queue may hold.
    pub fn pong(&self) -> AppendOutcome {
        if self.has_refill.load(Ordering::Acquire) {
            let slot = self.refill.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_some() {
                self.owed_pongs.fetch_add(1, Ordering::Relaxed);
                return AppendOutcome::Queued;
            }
        }
        self.append_bytes(leaf_proto::PONG)
    }

    /// Closes the queue: further appends are refused and the writer exits after draining what is
    /// already queued.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake_writer.notify_one();
        self.drained.notify_waiters();
        self.closing.notify_waiters();
    }

    /// Resolves once the queue is closed (by [`Outbound::close`]: by the connection itself,
    /// a slow consumer detected by a producer, or a replacement), woken by the close only.
    pub async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether the queue was closed because the client could not keep up.
    pub fn is_slow_consumer(&self) -> bool {
        self.slow_consumer.load(Ordering::Relaxed)
    }

    /// Bytes queued or in flight.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) until this queue is below its stall mark again.
    pub async fn wait_drained(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending() > self.stall_mark && !self.is_closed() {
            let notified = self.drained.notified();
            if self.pending() <= self.stall_mark || self.is_closed() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }

    /// Moves everything queued into `into`.
    fn take(&self, into: &mut Vec<Bytes>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        into.extend(q.chunks.drain(..));
        if !q.current.is_empty() {
            let tail = q.current.split().freeze();
            into.push(tail);
        }
    }

    /// Frees the append buffer's allocation when nothing is queued and it is larger than
    /// [`IDLE_KEEP`] (called by the writer when it finds the queue empty: what it wrote is
    /// dropped by then, so the whole allocation goes back).
    fn release_idle_buffer(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.current.is_empty() && q.chunks.is_empty() && q.current.capacity() > IDLE_KEEP {
            q.current = BytesMut::new();
        }
    }

    /// The capacity of the append buffer (tests).
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .capacity()
    }

    /// The writer task: drains the queue into `sink` until the queue is closed and empty, or a
    /// write fails or exceeds `write_deadline`. Returns the write error, if any.
    pub async fn run_writer<W>(
        &self,
        sink: &mut W,
        write_deadline: Duration,
    ) -> Result<(), WriteError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut batch: Vec<Bytes> = Vec::with_capacity(16);
        loop {
            let notified = self.wake_writer.notified();
            if !self.is_closed() {
                self.refill();
            }
            self.take(&mut batch);
            if batch.is_empty() {
                if self.is_closed() {
                    break;
                }
                self.release_idle_buffer();
                notified.await;
                continue;
            }
            // Everything in `batch` was counted in `pending` before it was queued.
            let total: usize = batch.iter().map(Bytes::len).sum();
            let result =
                tokio::time::timeout(write_deadline, write_all_vectored(sink, &mut batch)).await;
            batch.clear();
            self.pending.fetch_sub(total, Ordering::Relaxed);
            self.drained.notify_waiters();
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.close();
                    return Err(WriteError::Io(e));
                }
                Err(_) => {
                    self.slow_consumer.store(true, Ordering::Relaxed);
                    self.close();
                    return Err(WriteError::Deadline);
                }
            }
        }
        let _ = sink.flush().await;
        let _ = sink.shutdown().await;
        Ok(())
    }
}

/// Why the writer stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The socket failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// One write took longer than the write deadline: the client is not reading.
    #[error("write deadline exceeded")]
    Deadline,
}

/// Writes every chunk, using vectored writes of up to [`MAX_IOVECS`] chunks.
async fn write_all_vectored<W>(sink: &mut W, chunks: &mut [Bytes]) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut first = 0;
    while first < chunks.len() {
        let end = (first + MAX_IOVECS).min(chunks.len());
        let slices: Vec<IoSlice<'_>> = chunks[first..end].iter().map(|c| IoSlice::new(c)).collect();
        let mut written = sink.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        drop(slices);
        while written > 0 && first < chunks.len() {
            let len = chunks[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                let rest = chunks[first].slice(written..);
                chunks[first] = rest;
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn coalesces_and_shares_payloads() {
        let out = Outbound::new(1 << 20);
        let big = Bytes::from(vec![b'x'; SHARE_THRESHOLD]);
        assert_eq!(out.append_bytes(b"PONG\r\n"), AppendOutcome::Queued);
        out.append(
            |b| b.extend_from_slice(b"MSG a 1 4096\r\n"),
            Some(&big),
            b"\r\n",
        );
        out.append_bytes(b"+OK\r\n");
        out.close();
        let mut sink = Vec::new();
        out.run_writer(&mut sink, Duration::from_secs(1))
            .await
            .unwrap();
        let mut expected = b"PONG\r\nMSG a 1 4096\r\n".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"\r\n+OK\r\n");
        assert_eq!(sink, expected);
        assert_eq!(out.pending(), 0);
    }

    /// A long stream handed over as a [`Refill`] is written whole and in order, and produced
    /// step by step as the (slow) reader takes it: the queue never holds much more than one
    /// step. A `PONG` asked for meanwhile follows the stream.
    #[tokio::test]
    async fn a_refill_is_produced_as_the_socket_drains() {
        const STEP: usize = 4096;
        const STEPS: usize = 100;
        struct Counter {
            next: std::sync::atomic::AtomicUsize,
            most_queued: std::sync::atomic::AtomicUsize,
        }
        impl Refill for Counter {
            fn refill(&self, out: &Outbound) -> bool {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let byte = b'a' + (n % 26) as u8;
                out.append(|b| b.extend_from_slice(&[byte; STEP]), None, &[]);
                self.most_queued.fetch_max(out.pending(), Ordering::Relaxed);
                n + 1 < STEPS
            }
        }
        let out = Arc::new(Outbound::new(1 << 20));
        let counter = Arc::new(Counter {
            next: 0.into(),
            most_queued: 0.into(),
        });
        // A pipe much smaller than the stream: the writer waits on the reader.
        let (mut sink, mut peer) = tokio::io::duplex(8 * 1024);
        let writer_out = out.clone();
        let writer = tokio::spawn(async move {
            writer_out
                .run_writer(&mut sink, Duration::from_secs(5))
                .await
        });
        out.set_refill(counter.clone());
        // A PING answered while the stream is written: its PONG comes after all of it.
        out.pong();
        out.flush();
        let mut got = vec![0u8; STEP * STEPS + leaf_proto::PONG.len()];
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got),
        )
        .await
        .expect("the whole stream arrives")
        .unwrap();
        let (stream, pong) = got.split_at(STEP * STEPS);
        for (n, step) in stream.chunks(STEP).enumerate() {
            assert!(step.iter().all(|&b| b == b'a' + (n % 26) as u8), "step {n}");
        }
        assert_eq!(pong, leaf_proto::PONG);
        assert_eq!(out.pong(), AppendOutcome::Queued, "answered at once now");
        assert_eq!(counter.next.load(Ordering::Relaxed), STEPS);
        let most = counter.most_queued.load(Ordering::Relaxed);
        assert!(most <= 2 * STEP, "{most} bytes queued at once");
        out.close();
        writer.await.unwrap().unwrap();
    }

    /// Other traffic keeping the queue full (a leafd uplink replaying through a slow WAN while
    /// its link's first burst is written) does not starve the refill: it gets one step per
    /// write, and the `PONG` owed after it goes out (a CI run once saw a nats-server hub
    /// close such a link as stale: the burst waited for a queue that never ran low).
    #[tokio::test]
    async fn a_busy_queue_does_not_starve_its_refill() {
        const STEPS: usize = 5;
        struct Steps(std::sync::atomic::AtomicUsize);
        impl Refill for Steps {
            fn refill(&self, out: &Outbound) -> bool {
                out.append_bytes(b"step\r\n");
                self.0.fetch_add(1, Ordering::Relaxed) + 1 < STEPS
            }
        }
        let out = Arc::new(Outbound::new(64 << 20));
        let steps = Arc::new(Steps(0.into()));
        let (mut sink, mut peer) = tokio::io::duplex(16 * 1024);
        // The link is busy before its burst starts.
        out.append_bytes(&[b'x'; 64 * 1024]);
        out.set_refill(steps.clone());
        out.pong();
        let writer_out = out.clone();
        let writer = tokio::spawn(async move {
            writer_out
                .run_writer(&mut sink, Duration::from_secs(5))
                .await
        });
        // The other traffic: before each of its reads (at most 16 KiB) the peer has 16 KiB more
        // queued (a replay that keeps the link full), as long as the refill runs: the queue is
        // never below 16 KiB when the writer comes back for more.
        let reader_out = out.clone();
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                if reader_out.has_refill.load(Ordering::Acquire) {
                    reader_out.append_bytes(&[b'x'; 16 * 1024]);
                    reader_out.flush();
                }
                match tokio::io::AsyncReadExt::read(&mut peer, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend(buf[..n].iter().filter(|&&b| b != b'x')),
                }
            }
            seen
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while out.has_refill.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the refill finishes while the queue stays busy");
        assert_eq!(steps.0.load(Ordering::Relaxed), STEPS);
        out.close();
        writer.await.unwrap().unwrap();
        let seen = String::from_utf8(reader.await.unwrap()).unwrap();
        assert_eq!(seen, format!("{}PONG\r\n", "step\r\n".repeat(STEPS)));
    }

    /// A burst larger than [`IDLE_KEEP`] (a leafnode link's first interest) leaves no large
    /// allocation behind once written; a small buffer is kept for the next appends.
    #[tokio::test]
    async fn an_idle_queue_frees_the_buffer_of_a_burst() {
        let out = Arc::new(Outbound::new(1 << 20));
        let writer_out = out.clone();
        let (mut sink, mut peer) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            writer_out
                .run_writer(&mut sink, Duration::from_secs(5))
                .await
        });
        let drained = |out: Arc<Outbound>| async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while out.pending() > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the writer drains the queue");
        };
        let line = b"LS+ $G _FLEET.1234.>\r\n";
        for _ in 0..10_000 {
            out.append_bytes(line);
        }
        assert!(out.buffer_capacity() > 100 * 1024, "the burst is buffered");
        out.flush();
        drained(out.clone()).await;
        // The writer frees the buffer when it finds the queue empty after the write.
        tokio::time::timeout(Duration::from_secs(5), async {
            while out.buffer_capacity() > IDLE_KEEP {
                out.flush();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the burst's buffer is freed once written");
        out.append_bytes(b"PING\r\n");
        out.flush();
        drained(out.clone()).await;
        out.close();
        writer.await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut got)
            .await
            .unwrap();
        assert_eq!(got.len(), 10_000 * line.len() + 6, "every byte was written");
        assert!(got.ends_with(b"PING\r\n"));
    }

    /// Producers on other threads racing the writer: `pending` must never underflow (it used to
    /// when it was counted after the bytes were queued) and must end at zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producers_keep_pending_exact() {
        let out = Arc::new(Outbound::new(64 * 1024 * 1024));
        let writer_out = out.clone();
        let writer = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            writer_out
                .run_writer(&mut sink, Duration::from_secs(5))
                .await
        });
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let out = out.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        assert_ne!(
                            out.append_bytes(b"MSG a 1 2\r\nhi\r\n"),
                            AppendOutcome::Closed
                        );
                        out.flush();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        out.close();
        writer.await.unwrap().unwrap();
        assert_eq!(out.pending(), 0);
        assert!(!out.is_slow_consumer());
    }

    #[test]
    fn over_max_pending_closes_as_slow_consumer() {
        let out = Outbound::new(64 * 1024);
        let chunk = vec![0u8; 1024];
        let mut outcome = AppendOutcome::Queued;
        for _ in 0..100 {
            outcome = out.append_bytes(&chunk);
            if outcome == AppendOutcome::Closed {
                break;
            }
        }
        assert_eq!(outcome, AppendOutcome::Closed);
        assert!(out.is_slow_consumer());
        assert_eq!(out.append_bytes(b"x"), AppendOutcome::Closed);
    }

    #[test]
    fn stall_mark_reported() {
        let out = Outbound::new(64 * 1024);
        let chunk = vec![0u8; 17 * 1024];
        assert_eq!(out.append_bytes(&chunk), AppendOutcome::Stalled);
    }
}
