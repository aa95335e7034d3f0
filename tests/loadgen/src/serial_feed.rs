//! The `serial-feed` mode: a device writing lines into a serial port (the test end of
//! a PTY pair) at a baud-rate-like pace, and a subscriber counting what arrives.

use super::*;
use crate::args::{num, DEFAULT_URL};
use std::sync::atomic::AtomicU64;

/// `loadgen serial-feed` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The server the counting subscriber connects to (and, without `--peer`, the lines are
    /// published to).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// The test end of the PTY pair leafd reads; without it the lines go to `--url` as PUBs.
    #[arg(long)]
    peer: Option<String>,
    /// The subject the subscriber counts.
    #[arg(long, default_value = "sensors.>")]
    subject: String,
    /// Lines written.
    #[arg(long, default_value = "14400", value_parser = num::<u64>)]
    frames: u64,
    /// Bytes per line (at least 2).
    #[arg(long = "line-len", default_value = "64", value_parser = num::<usize>)]
    line_len: usize,
    /// Bytes per second (0: as fast as the PTY takes them).
    #[arg(long, default_value = "92160", value_parser = num::<u64>)]
    bps: u64,
    /// The reading process: its CPU time is sampled.
    #[arg(long, value_parser = num::<u32>)]
    pid: Option<u32>,
    /// The server's name in the record.
    #[arg(long, default_value = "leafd")]
    server: String,
}

/// Interval between two paced writes.
const TICK: Duration = Duration::from_millis(5);
/// Time without a new message after which the run ends.
const IDLE: Duration = Duration::from_secs(2);

/// `loadgen serial-feed`.
pub fn run(args: &Args) -> Result<()> {
    let url = args.url.clone();
    let subject = args.subject.clone();
    let frames = args.frames;
    let line_len = args.line_len;
    let bps = args.bps;
    let server = args.server.clone();
    let pid = args.pid;
    let peer = args.peer.clone();
    if line_len < 2 {
        return Err("--line-len must be at least 2".into());
    }

    let (mut sub, mut reader) = wire::connect(&url)?;
    sub.write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())?;
    reader.wait_pong(&mut sub)?;
    sub.set_read_timeout(Some(Duration::from_millis(100)))?;
    let received = Arc::new(AtomicU64::new(0));
    let last_at = Arc::new(std::sync::Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, last_at, stop) = (received.clone(), last_at.clone(), stop.clone());
        thread::spawn(move || -> Result<()> {
            let mut buf = vec![0u8; READ_BUF];
            while !stop.load(Ordering::Relaxed) {
                match sub.read(&mut buf) {
                    Ok(0) => return Err("subscriber connection closed".into()),
                    Ok(n) => {
                        let seen = reader.feed(&buf[..n])?;
                        for _ in 0..seen.pings {
                            sub.write_all(b"PONG\r\n")?;
                        }
                        if seen.msgs > 0 {
                            received.fetch_add(seen.msgs, Ordering::Relaxed);
                            if let Ok(mut t) = last_at.lock() {
                                *t = Instant::now();
                            }
                        }
                    }
                    Err(e) if wire::is_timeout(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
    };

    let mut line: Vec<u8> = (0..line_len - 1).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\n');
    let mut out: Box<dyn Write> = match &peer {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| format!("open {path}: {e}"))?,
        ),
        None => {
            let (stream, _) = wire::connect(&url)?;
            Box::new(stream)
        }
    };
    let frame = |line: &[u8]| -> Vec<u8> {
        match &peer {
            Some(_) => line.to_vec(),
            None => {
                let payload = &line[..line.len() - 1];
                let mut f = format!("PUB sensors.bench.p {}\r\n", payload.len()).into_bytes();
                f.extend_from_slice(payload);
                f.extend_from_slice(b"\r\n");
                f
            }
        }
    };
    let one = frame(&line);
    let cpu0 = pid.and_then(await_stream::proc_cpu_secs);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(64 * 1024);
    while sent < frames {
        let due = if bps == 0 {
            frames
        } else {
            let bytes = (start.elapsed().as_secs_f64() * bps as f64) as u64;
            (bytes / line_len as u64).min(frames)
        };
        batch.clear();
        while sent < due && batch.len() < 60 * 1024 {
            batch.extend_from_slice(&one);
            sent += 1;
        }
        if !batch.is_empty() {
            out.write_all(&batch)?;
        }
        if bps > 0 && sent < frames {
            thread::sleep(TICK);
        }
    }
    out.flush()?;
    let send_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let got = received.load(Ordering::Relaxed);
        let idle = last_at.lock().map(|t| t.elapsed()).unwrap_or(IDLE);
        if got >= frames
            || (idle >= IDLE && Instant::now() > start + IDLE)
            || Instant::now() > deadline
        {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let end = last_at
        .lock()
        .map(|t| *t)
        .unwrap_or_else(|_| Instant::now());
    let secs = end
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(send_secs);
    let cpu1 = pid.and_then(await_stream::proc_cpu_secs);
    stop.store(true, Ordering::Relaxed);
    counter.join().map_err(|_| "subscriber thread panicked")??;
    let got = received.load(Ordering::Relaxed);
    let cpu_pct = match (cpu0, cpu1) {
        (Some(a), Some(b)) if secs > 0.0 => (b - a) / secs * 100.0,
        _ => f64::NAN,
    };
    let fps = got as f64 / secs;
    let mode = if peer.is_some() { "serial" } else { "client" };
    eprintln!(
        "serial-feed {server} ({mode}): {got}/{frames} frames in {secs:.2} s = {fps:.0} frames/s, \
         server CPU {cpu_pct:.1}%"
    );
    println!(
        "{}",
        serde_json::json!({
            "row": "serial", "server": server, "mode": mode, "frames": frames,
            "received": got, "lost": frames.saturating_sub(got), "secs": secs,
            "frames_per_sec": fps, "cpu_pct": if cpu_pct.is_finite() { Some(cpu_pct) } else { None },
            "bps": bps, "line_len": line_len,
        })
    );
    if got < frames {
        return Err(format!("{} frames lost", frames - got).into());
    }
    Ok(())
}
