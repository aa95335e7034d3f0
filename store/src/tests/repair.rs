//! Quick repair (`QuickRepair`): after a real SIGKILL, a store whose newest commit recorded
//! redb's allocator state opens without redb's repair walk, and keeps every acknowledged
//! message. Whether redb repaired is seen through its repair callback, which aborts the open
//! when called: the file is opened with redb directly first, then as a store.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{check_consistent, msg, rt};
use crate::{QuickRepair, Store, StoreOptions, FILE_NAME};

const CHILD_ENV: &str = "LEAF_STORE_REPAIR_CHILD_DIR";
const MODE_ENV: &str = "LEAF_STORE_REPAIR_CHILD_MODE";

fn mode(name: &str) -> QuickRepair {
    match name {
        "off" => QuickRepair::Off,
        "every" => QuickRepair::EveryCommit,
        _ => QuickRepair::default(),
    }
}

/// Child mode (a no-op unless `LEAF_STORE_REPAIR_CHILD_DIR` is set): appends 16 at a time
/// and prints every acknowledged append. In `idle` mode it appends 2,000 messages, waits
/// (at most 10 s) until the writer recorded the allocator state and prints `IDLE`; in the
/// other modes it appends until killed.
#[test]
fn repair_child_mode() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let name = std::env::var(MODE_ENV).unwrap_or_default();
    let opts = StoreOptions {
        quick_repair: mode(&name),
        ..StoreOptions::default()
    };
    let s = Store::open(Path::new(&dir), opts).unwrap();
    let rt = rt();
    rt.block_on(s.create_stream("Q", vec![])).unwrap();
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    while Instant::now() < deadline && (name != "idle" || n < 2_000) {
        let futs: Vec<_> = (0..16).map(|i| s.append("Q", msg("q", n + i))).collect();
        for (i, f) in futs.into_iter().enumerate() {
            let a = rt.block_on(f).unwrap();
            writeln!(out, "ACK {} {} END", a.seq, n + i as u64).unwrap();
        }
        out.flush().unwrap();
        n += 16;
    }
    let waited = Instant::now() + Duration::from_secs(10);
    while !s.allocator_state_recorded() && Instant::now() < waited {
        std::thread::sleep(Duration::from_millis(1));
    }
    if s.allocator_state_recorded() {
        writeln!(out, "IDLE").unwrap();
        out.flush().unwrap();
    }
    std::thread::sleep(Duration::from_secs(30));
}

/// Runs the child in `mode` on `dir`, SIGKILLs it once it printed `IDLE` (`idle` mode) or
/// after 300-500 ms, and returns the (seq, n) pairs it acknowledged.
fn run_child(dir: &Path, mode: &str) -> Vec<(u64, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::repair::repair_child_mode",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[..] {
                ["ACK", seq, n, "END"] => {
                    acked.push((seq.parse::<u64>().unwrap(), n.parse::<u64>().unwrap()))
                }
                ["IDLE"] => drop(tx.send(())),
                _ => {}
            }
        }
        acked
    });
    if mode == "idle" {
        let idle = rx.recv_timeout(Duration::from_secs(60));
        assert!(idle.is_ok(), "the idle writer did not record its state");
    } else {
        std::thread::sleep(Duration::from_millis(
            300 + u64::from(std::process::id() % 200),
        ));
    }
    child.kill().unwrap(); // SIGKILL, only our own child
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    assert!(!acked.is_empty(), "the child acknowledged nothing");
    acked
}

/// Opens the file with redb, failing instead of repairing.
fn open_without_repair(dir: &Path) -> Result<(), redb::DatabaseError> {
    redb::Builder::new()
        .set_repair_callback(|session| session.abort())
        .create(dir.join(FILE_NAME))
        .map(drop)
}

/// Every acknowledged message is stored once with its content, and the stream is
/// consistent.
fn check_acked(dir: &Path, acked: &[(u64, u64)]) {
    let s = Store::open(dir, StoreOptions::default()).unwrap();
    for (seq, n) in acked {
        let m = s
            .get("Q", *seq)
            .unwrap()
            .unwrap_or_else(|| panic!("acked seq {seq} lost"));
        assert_eq!(m.payload, msg("x", *n).payload, "seq {seq}");
    }
    let all = check_consistent(&s, "Q");
    let mut payloads: Vec<_> = all.iter().map(|m| m.payload.clone()).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), all.len(), "a message stored twice");
}

/// Kills a child in `mode`, then checks whether redb repairs at open (`repairs`) and that
/// every acknowledged message is there once.
fn kill_and_check(mode: &str, repairs: bool) {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child(dir.path(), mode);
    match open_without_repair(dir.path()) {
        Ok(()) => assert!(!repairs, "{mode}: opened without the repair"),
        Err(redb::DatabaseError::RepairAborted) => assert!(repairs, "{mode}: repaired"),
        Err(e) => panic!("{mode}: {e}"),
    }
    check_acked(dir.path(), &acked);
}

#[test]
fn idle_writer_records_state_so_sigkill_needs_no_repair() {
    kill_and_check("idle", false);
}

#[test]
fn sigkill_mid_append_with_every_commit_recorded_needs_no_repair() {
    kill_and_check("every", false);
}

/// The control: without a record, redb repairs (so the tests above can fail), and the
/// repair keeps every acknowledged message too.
#[test]
fn sigkill_without_record_repairs() {
    kill_and_check("off", true);
}
