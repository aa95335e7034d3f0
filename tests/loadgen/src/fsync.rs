//! The `fsync` mode: this machine's cost of making one small record durable, the floor under
//! a JetStream publish that is acknowledged only after an fsync (issue 24: "sync publish
//! within 1.2x of this machine's fsync latency, measured in the same run").
//!
//! It appends `--count` records of `--size` bytes to a new file in `--dir` (the directory the
//! servers' stores use, so the same disk and file system) and calls `fdatasync` after each
//! append, as a store commit does at the least; the latency of append + fdatasync is
//! reported in percentiles. The file is removed afterwards.

use super::*;

use crate::args::num;

/// `loadgen fsync` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The directory the file is written in (the stores' disk).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Bytes per record.
    #[arg(long, default_value = "128", value_parser = num::<usize>)]
    size: usize,
    /// Records measured.
    #[arg(long, default_value = "2000", value_parser = num::<u64>)]
    count: u64,
    /// Records written (and synced) before measuring.
    #[arg(long, default_value = "100", value_parser = num::<u64>)]
    warmup: u64,
    /// The name in the record's `server` field (the column it is shown in).
    #[arg(long, default_value = "")]
    server: String,
    /// The row's name in the record.
    #[arg(long, default_value = "fsync/128")]
    row: String,
}

/// Runs the mode: prints one JSON record on stdout, a human line on stderr.
pub fn run(args: &Args) -> Result<()> {
    let path = args
        .dir
        .join(format!("loadgen-fsync-{}.tmp", std::process::id()));
    let result = measure(&path, args.size, args.count, args.warmup);
    let _ = std::fs::remove_file(&path);
    let mut lat = result?;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        let idx = ((lat.len().saturating_sub(1)) as f64 * p).round() as usize;
        lat.get(idx).map_or(0.0, |&ns| ns as f64 / 1e3)
    };
    let (p50, p90, p99, max) = (pct(0.5), pct(0.9), pct(0.99), pct(1.0));
    let record = serde_json::json!({
        "mode": "fsync", "row": args.row, "server": args.server, "size": args.size,
        "count": args.count, "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max,
        "errors": [],
    });
    eprintln!(
        "fsync  {:12} {} B appends + fdatasync x {}: p50 {p50:.0} us  p90 {p90:.0} us  p99 {p99:.0} us  max {max:.0} us",
        args.server, args.size, args.count
    );
    println!("{record}");
    Ok(())
}

/// Appends `warmup + count` records of `size` bytes to a new file at `path`, each followed by
/// `fdatasync`; the latencies (ns) of the last `count`.
fn measure(path: &std::path::Path, size: usize, count: u64, warmup: u64) -> Result<Vec<u64>> {
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let record = vec![0x5a_u8; size];
    let mut lat = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..warmup + count {
        let start = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        if i >= warmup {
            lat.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(lat)
}
