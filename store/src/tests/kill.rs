//! Real process kills: the test binary re-runs itself as a child that appends forever and
//! prints every acknowledged append; the parent SIGKILLs it at a random moment and checks
//! that every printed (acked) message is stored with its content.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{check_consistent, msg, rt, Rng};
use crate::{Store, StoreError, StoreOptions};

const CHILD_ENV: &str = "LEAF_STORE_KILL_CHILD_DIR";
/// Set: the child seals every 64 KiB of blocks, so kills land while segments are written,
/// adopted and released.
const SEAL_ENV: &str = "LEAF_STORE_KILL_SEAL";

fn open(dir: &std::path::Path, sealing: bool) -> Store {
    let opts = StoreOptions {
        seal_bytes: Some(if sealing { 64 << 10 } else { crate::SEAL_BYTES }),
        ..StoreOptions::default()
    };
    Store::open(dir, opts).expect("open")
}

/// Child mode: a no-op unless `LEAF_STORE_KILL_CHILD_DIR` is set.
#[test]
fn child_mode() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("LEAF_STORE_KILL_ROUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let s = open(std::path::Path::new(&dir), std::env::var(SEAL_ENV).is_ok());
    let rt = rt();
    match rt.block_on(s.create_stream("K", vec![])) {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = round * 10_000_000;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while Instant::now() < deadline {
        let futs: Vec<_> = (0..16)
            .map(|i| s.append("K", msg(["k.a", "k.b"][(i % 2) as usize], n + i)))
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let a = rt.block_on(f).unwrap();
            writeln!(out, "ACK {} {} END", a.seq, n + i as u64).unwrap();
        }
        out.flush().unwrap();
        n += 16;
    }
}

#[test]
fn sigkill_keeps_every_acked_message() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    kill_rounds(false);
}

#[test]
fn sigkill_while_sealing_keeps_every_acked_message() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (dir, segments) = kill_rounds(true);
    assert!(segments > 0, "the child never sealed a segment");
    // Sealed files were closed clean: each opens read-only, which redb refuses for a file
    // that needs a repair (only the active file is walked after a kill).
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seg-")
        {
            redb::ReadOnlyDatabase::open(&path)
                .unwrap_or_else(|e| panic!("{} does not open clean: {e}", path.display()))
                .close()
                .unwrap();
        }
    }
}

/// Four rounds of a child appending, SIGKILLed at a random moment; after each, every acked
/// message is there. Returns the directory and the segments of the last open.
fn kill_rounds(sealing: bool) -> (tempfile::TempDir, usize) {
    let mut segments = 0;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(std::process::id() as u64);
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for round in 1..=4u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "tests::kill::child_mode",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("LEAF_STORE_KILL_ROUND", round.to_string())
            .envs(sealing.then_some((SEAL_ENV, "1")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.split(' ').collect();
                if let ["ACK", seq, n, "END"] = parts[..] {
                    v.push((seq.parse::<u64>().unwrap(), n.parse::<u64>().unwrap()));
                }
            }
            v
        });
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        child.kill().unwrap(); // SIGKILL, only our own child
        let status = child.wait().unwrap();
        let got = reader.join().unwrap();
        assert!(
            !got.is_empty(),
            "round {round}: the child acked nothing ({status}; exit status 127: the test binary \
             could not be executed again, as under qemu-user without binfmt_misc)"
        );
        acked.extend(got);
        let s = open(dir.path(), sealing);
        segments = s.segments();
        for (seq, n) in &acked {
            let m = s
                .get("K", *seq)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acked seq {seq} lost"));
            assert_eq!(m.payload, msg("x", *n).payload, "round {round} seq {seq}");
        }
        check_consistent(&s, "K");
    }
    (dir, segments)
}
