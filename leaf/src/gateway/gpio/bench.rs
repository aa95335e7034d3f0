//! The GPIO event pipeline benchmark: edge events per second from the in-process source
//! ([`super::SimSource`]) through the pipeline into a real in-process server, where an
//! internal subscription counts them.
//!
//! Run it with
//! `cargo test --release -p leaf --lib gateway::gpio::bench::tests::bench_gpio_events -- --ignored --nocapture --exact`
//! (`GPIO_BENCH_EVENTS` sets the number of events, default 200000). It prints one line:
//! `gpio events: 200000 events in 250.1ms: 799680 events/s (dropped 0)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{start_with_source, SimSource};
use crate::gateway::config::gpio::{Edge, GpioGroup, GpioInput};
use crate::gateway::{Board, Context, Outlet, Registry};
use leaf_core::server::{InternalSink, Msg, Publisher, Server, ServerOptions};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Events published.
    pub events: u64,
    /// From the first level change to the last message delivered.
    pub elapsed: Duration,
    /// Events the pipeline counted as dropped (0 unless the reader fell behind the
    /// simulated kernel buffer).
    pub dropped: u64,
}

impl BenchReport {
    /// Events per second.
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gpio events: {} events in {:.1?}: {:.0} events/s (dropped {})",
            self.events,
            self.elapsed,
            self.per_second(),
            self.dropped
        )
    }
}

/// Counts delivered messages and wakes the benchmark at the target.
struct Counter {
    count: AtomicU64,
    target: u64,
    done: Notify,
}

impl InternalSink for Counter {
    fn deliver(&self, _msg: &Msg<'_>, _: &Publisher) {
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

/// Pushes `events` alternating levels (no debounce, both edges) on one simulated line
/// through the pipeline into an in-process server. Needs a tokio runtime (use a
/// multi-threaded one, so the producer and the pipeline run side by side).
///
/// # Panics
/// If the server cannot bind a loopback port or the events do not arrive within a minute.
pub async fn bench_events(events: u64) -> BenchReport {
    let server = Server::bind(ServerOptions {
        port: 0,
        ..ServerOptions::default()
    })
    .await
    .expect("bind a loopback port");
    let shared = server.shared().clone();
    let counter = Arc::new(Counter {
        count: AtomicU64::new(0),
        target: events,
        done: Notify::new(),
    });
    let sub = shared
        .global()
        .subscribe_internal(b"gpio.>", None, counter.clone())
        .expect("subscribe");
    let (source, sim) = SimSource::new();
    let names: Vec<String> = (0..28).map(|n| format!("GPIO{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sim.add_chip("pinctrl-bcm2711", "/dev/gpiochip0", &names);
    let board = Board::load("rpi4", None).expect("built-in board");
    let ctx = Context {
        board_name: board.name.clone(),
        server_name: "bench".into(),
        board: Some(Arc::new(board)),
    };
    let group = GpioGroup {
        name: "bench".into(),
        inputs: vec![GpioInput {
            line: "GPIO17".into(),
            edge: Edge::Both,
            ..GpioInput::default()
        }],
        event_buffer: 1024,
        ..GpioGroup::default()
    };
    let registry = Registry::default();
    let task = start_with_source(&Outlet::new(&shared), &registry, &ctx, 0, &group, source)
        .expect("start the pipeline");
    tokio::time::timeout(Duration::from_secs(10), sim.wait_requests(1))
        .await
        .expect("lines requested");

    let done = counter.done.notified();
    tokio::pin!(done);
    done.as_mut().enable();
    let start = Instant::now();
    for i in 0..events {
        if sim.queued() >= 1024 {
            sim.wait_room().await;
        }
        sim.set_level("GPIO17", i % 2 == 0, i * 1000);
    }
    if events > 0 {
        tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .expect("every event delivered within a minute");
    }
    let elapsed = start.elapsed();
    let dropped = registry.sources().first().map_or(0, |s| s.get("dropped"));
    task.abort();
    shared.global().unsubscribe_internal(&sub);
    drop(server);
    BenchReport {
        events: counter.count.load(Ordering::Relaxed),
        elapsed,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_smoke() {
        let report = bench_events(2_000).await;
        assert_eq!(report.events, 2_000);
        assert_eq!(report.dropped, 0);
        assert!(report
            .to_string()
            .starts_with("gpio events: 2000 events in "));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: run with --release --ignored --nocapture"]
    async fn bench_gpio_events() {
        let events = std::env::var("GPIO_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let report = bench_events(events).await;
        println!("{report}");
    }
}
