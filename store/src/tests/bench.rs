//! Ignored benchmarks; run with
//! `cargo test --release --lib bench -- --ignored --nocapture --test-threads=1`.

use std::time::{Duration, Instant};

use super::{msg, rt};
use crate::{NewMessage, QuickRepair, Store, StoreOptions};

/// The options of the benchmarks: the defaults, with `quick_repair` from
/// `LEAF_STORE_QUICK_REPAIR` (`off`, `every` or `idle`, the default) to measure what each
/// costs and saves.
fn bench_opts() -> StoreOptions {
    opts_for(
        std::env::var("LEAF_STORE_QUICK_REPAIR")
            .as_deref()
            .unwrap_or("idle"),
    )
}

/// The default options with `quick_repair` named by `mode` (see [`bench_opts`]).
fn opts_for(mode: &str) -> StoreOptions {
    let quick_repair = match mode {
        "off" | "unsealed" => QuickRepair::Off,
        "every" => QuickRepair::EveryCommit,
        _ => QuickRepair::default(),
    };
    // "unsealed": every block stays in the active file (as before sealed segments).
    let seal_bytes = match mode {
        "unsealed" => None,
        _ => StoreOptions::default().seal_bytes,
    };
    StoreOptions {
        quick_repair,
        seal_bytes,
        ..StoreOptions::default()
    }
}

fn payload128(n: u64) -> NewMessage {
    let mut p = format!("{n}-").into_bytes();
    p.resize(128, b'p');
    NewMessage::new("bench.subject", p, 0)
}

/// appends/s with 1, 16 and 256 appends in flight (128 B payloads), and file size.
#[test]
#[ignore]
fn bench_append_throughput() {
    for in_flight in [1usize, 16, 256] {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), bench_opts()).unwrap();
        let rt = rt();
        rt.block_on(s.create_stream("B", vec![])).unwrap();
        let total = match in_flight {
            1 => 3_000,
            16 => 40_000,
            _ => 200_000,
        } as u64;
        let c0 = s.commits();
        let t = Instant::now();
        rt.block_on(async {
            let mut q = std::collections::VecDeque::new();
            for n in 0..total {
                q.push_back(s.append("B", payload128(n)));
                if q.len() >= in_flight {
                    q.pop_front().unwrap().await.unwrap();
                }
            }
            while let Some(f) = q.pop_front() {
                f.await.unwrap();
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let commits = s.commits() - c0;
        let len = s.file_size();
        let blocks = file_blocks(dir.path());
        println!(
            "quick_repair={:?}, in_flight={in_flight}: {total} appends in {secs:.2}s = {:.0}/s, {commits} commits ({:.1} msgs/commit), file {:.1} MB len / {:.1} MB allocated => {:.0} MB len per 1M msgs",
            bench_opts().quick_repair,
            total as f64 / secs,
            total as f64 / commits as f64,
            len as f64 / 1e6,
            blocks as f64 / 1e6,
            len as f64 / total as f64,
        );
    }
}

fn file_blocks(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join(crate::FILE_NAME))
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Child for the repair benchmark: builds 1M × 128 B messages, prints READY, then waits
/// to be killed (the store is never closed cleanly).
#[test]
#[ignore]
fn bench_repair_child() {
    let Ok(dir) = std::env::var("LEAF_STORE_REPAIR_DIR") else {
        return;
    };
    let s = Store::open(std::path::Path::new(&dir), bench_opts()).unwrap();
    let rt = rt();
    rt.block_on(s.create_stream("R", vec![])).unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let mut q = std::collections::VecDeque::new();
        for b in 0..(1_000_000 / 256) {
            let msgs = (0..256).map(|i| payload128(b * 256 + i)).collect();
            q.push_back(s.append_batch("R", msgs));
            if q.len() >= 4 {
                q.pop_front().unwrap().await.unwrap();
            }
        }
        while let Some(f) = q.pop_front() {
            f.await.unwrap();
        }
    });
    let msgs = s.stream_state("R").unwrap().unwrap().msgs;
    println!(
        "READY {msgs} appended in {:?} ({} commits)",
        t.elapsed(),
        s.commits()
    );
    std::thread::sleep(Duration::from_secs(600));
}

/// `Store::open` time after a SIGKILL with 1M messages stored, vs a clean open: first with
/// the default options, killed as soon as the last append is acknowledged (the line
/// `scripts/bench` reads), then killed 100 ms later (the writer was idle), then with the
/// allocator state recorded by every commit, then never.
#[test]
#[ignore]
fn bench_open_after_kill() {
    let after = Duration::from_millis(100);
    for (mode, label, wait) in [
        ("idle", "", Duration::ZERO),
        ("idle", "killed 100 ms after the last ack: ", after),
        ("every", "recorded by every commit: ", Duration::ZERO),
        ("off", "never recorded: ", Duration::ZERO),
        ("unsealed", "never recorded, never sealed: ", Duration::ZERO),
    ] {
        open_after_kill(mode, label, wait);
    }
}

fn open_after_kill(mode: &str, label: &str, wait: Duration) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::bench::bench_repair_child",
            "--ignored",
            "--nocapture",
        ])
        .env("LEAF_STORE_REPAIR_DIR", dir.path())
        .env("LEAF_STORE_QUICK_REPAIR", mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut ready = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("READY") {
            ready = Some(line);
            break;
        }
    }
    std::thread::sleep(wait);
    child.kill().unwrap();
    child.wait().unwrap();
    let ready = ready.expect("the child stored its messages");
    // Every file of the store: the active one and the sealed segments.
    let len: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let t = Instant::now();
    let s = Store::open(dir.path(), opts_for(mode)).unwrap();
    let dirty = t.elapsed();
    assert_eq!(s.stream_state("R").unwrap().unwrap().msgs, 999_936);
    drop(s);
    let t = Instant::now();
    let s = Store::open(dir.path(), opts_for(mode)).unwrap();
    let clean = t.elapsed();
    assert!(s.get("R", 1).unwrap().is_some());
    println!(
        "{label}files {:.0} MB ({} segments): open after SIGKILL {:?}, clean open {:?} (child: {ready})",
        len as f64 / 1e6,
        s.segments(),
        dirty,
        clean
    );
    let _ = msg("x", 0);
}
