//! `loadgen`: a load generator for NATS-protocol servers (leafd, hubd, nats-server).
//!
//! It drives the servers for `scripts/bench` and prints one JSON line per run on
//! stdout (a human-readable line goes to stderr).
//!
//! Subcommands:
//!
//! * `pub --url HOST:PORT --size N --msgs M`: publish-only ingest, msgs/s. The
//!   publisher writes pre-encoded `PUB` frames in large chunks, then sends `PING`
//!   and waits for the `PONG`, so the clock stops only once the server has read
//!   everything.
//! * `pubsub --subs K --size N --msgs M`: one publisher and K subscribers, each on
//!   its own connection; deliveries/s and loss (expected - received) after the
//!   stream goes quiet for `--idle` seconds (default 2).
//! * `reqrep --msgs M --size N`: sequential request/reply latency percentiles in
//!   microseconds, through async-nats on both ends.
//!   With `--responder-url` the responder connects there (e.g. a hub behind the
//!   requester's leaf); requests are retried until one gets through first.
//! * `pubsub --sub-url HOST:PORT`: subscribers on another server than the publisher
//!   (leaf link); the publisher sends probes until interest has arrived.
//! * `js --mode sync|async`: JetStream publish throughput (and, sync, PubAck
//!   latency) on stream `BENCH` (subjects `bench.>`), via async-nats; afterwards
//!   `STREAM.INFO` must report every acknowledged message. `--stream NAME --create
//!   false` publishes into an existing stream instead (an uplink's buffer).
//! * `await-stream --url HUB --stream NAME --msgs N --leaf-url LEAF`: after the hub
//!   has been started, times from the leaf link coming up until stream NAME on the
//!   hub holds N messages (a backlog replay); samples the leaf's RSS and CPU time.
//! * `startup [--runs R] [--js-stream NAME] -- CMD ARGS...`: spawns CMD (every
//!   `{port}` in ARGS is replaced by a free loopback port), times spawn to first
//!   `INFO` line (and to the first `STREAM.INFO NAME` answer), kills it (SIGKILL).
//! * `stream-info --url HOST:PORT --stream NAME [--expect N]`: prints the state of
//!   stream NAME (`STREAM.INFO`: messages, bytes, first and last sequence); with
//!   `--expect` it waits (up to `--timeout` seconds) for exactly N messages and fails
//!   otherwise (used by `scripts/arm-smoke` after a restart).
//! * `serial-feed --peer PTY --url HOST:PORT --frames N --line-len 64 --bps 92160
//!   [--pid PID]`: plays a serial device: writes N lines of `--line-len` bytes into the test
//!   end of a PTY pair (leafd reads the other end) paced at `--bps` bytes per second (0: as
//!   fast as the PTY takes them), counts the messages a subscriber on `--subject` receives,
//!   and samples the CPU time of process PID. Without `--peer` the same lines are published
//!   as `PUB`s to `--url` at the same pace (a client bridging the port into nats-server).
//! * `freeport`: prints a free loopback TCP port.
//! * `report FILE [--baseline NAME]`: renders the JSON lines collected in FILE as
//!   a Markdown table of medians and ratios against the baseline server.
//!
//! The raw-protocol modes use blocking `std::net::TcpStream`s on plain threads: one
//! thread per connection keeps the tool cheap enough that the server, not the
//! load generator, is the bottleneck.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The error type of this tool.
///
/// A boxed error is enough here: every failure ends the run with a message on
/// stderr and a non-zero exit status, nothing is matched on or recovered.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Result alias using [`Error`].
type Result<T> = std::result::Result<T, Error>;

/// Subject used by the throughput modes.
const SUBJECT: &str = "bench.s";

/// Subject the request/reply responder listens on.
const RR_SUBJECT: &str = "bench.rr";

/// Subject of the interest probes sent before a measurement across a leaf link.
const PROBE_SUBJECT: &str = "bench.probe";

/// Upper bound on waiting for interest to cross a leaf link.
const PROBE_LIMIT: Duration = Duration::from_secs(15);

/// Size of one write of pre-encoded `PUB` frames.
const WRITE_CHUNK: usize = 128 * 1024;

/// Size of the read buffer of a subscriber connection.
const READ_BUF: usize = 256 * 1024;

/// Longest protocol line (outside payloads) accepted before giving up.
const MAX_LINE: usize = 64 * 1024;

/// Upper bound on any single wait for the server (handshake, PONG, startup).
const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches on the subcommand.
fn run(argv: Vec<String>) -> Result<()> {
    let Some((cmd, rest)) = argv.split_first() else {
        return Err(USAGE.into());
    };
    let args = args::Args::parse(rest)?;
    match cmd.as_str() {
        "pub" => throughput::run_pub(&args),
        "pubsub" => throughput::run_pubsub(&args),
        "reqrep" => reqrep::run(&args),
        "js" => js::run(&args),
        "startup" => startup::run(&args),
        "await-stream" => await_stream::run(&args),
        "stream-info" => stream_info::run(&args),
        "serial-feed" => serial_feed::run(&args),
        "freeport" => {
            println!("{}", startup::free_port()?);
            Ok(())
        }
        "report" => report::run(&args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}").into()),
    }
}

/// Usage text.
const USAGE: &str = "usage:
  loadgen pub    [--url HOST:PORT] [--size 16] [--msgs 5000000] [--server NAME]
  loadgen pubsub [--url HOST:PORT] [--subs 1] [--size 16] [--msgs 2000000] [--idle 2] [--server NAME]
                 [--sub-url HOST:PORT] [--row NAME] [--pair NAME]
                 (--sub-url: subscribers there, e.g. a hub; probes until interest has arrived)
  loadgen reqrep [--url HOST:PORT] [--size 16] [--msgs 20000] [--warmup 1000] [--threads 0] [--server NAME]
                 [--responder-url HOST:PORT] [--row NAME] [--pair NAME]
                 (--threads 0: one current-thread tokio runtime for both ends)
  loadgen js     [--url HOST:PORT] [--mode sync|async] [--size 128] [--msgs 3000] [--warmup 100]
                 [--inflight 256] [--row NAME] [--server NAME] [--stream BENCH] [--create true|false]
                 (stream BENCH on bench.>, recreated; --create false: publish into an existing
                 stream, e.g. an uplink's UPLINK_<name>; checks the stored count with STREAM.INFO)
  loadgen serial-feed [--peer PTY] [--url HOST:PORT] [--subject sensors.>] [--frames 14400]
                 [--line-len 64] [--bps 92160] [--pid PID] [--server NAME]
                 (lines into a PTY that leafd reads, or as PUBs to --url without --peer)
  loadgen await-stream --url HUB --stream HUB --msgs N [--leaf-url LEAF] [--timeout 300]
                 [--source NAME --source-api PREFIX] [--leaf-pid PID] [--hub-pid PID]
                 [--row uplink] [--server NAME] [--pair NAME]
                 (times stream HUB on a just-started hub reaching N messages, from the moment a
                 probe published on the hub reaches a subscriber on LEAF; --source: create HUB
                 sourcing NAME via the API PREFIX first; --leaf-pid: sample its RSS every 200 ms)
  loadgen startup [--runs 3] [--server NAME] [--row startup] [--js-stream NAME] -- CMD ARGS...
                 ({port} in ARGS = a free port; --js-stream: also time the first STREAM.INFO answer)
  loadgen stream-info --url HOST:PORT --stream NAME [--expect N] [--timeout 30]
                 (prints the stream's message count and sequences; --expect: retries until the
                 stream exists and holds exactly N messages, fails after --timeout seconds)
  loadgen freeport
  loadgen report FILE [--baseline nats-server]";

/// Prints a run's JSON record on stdout and its human summary on stderr.
fn emit(record: serde_json::Value, human: &str) {
    println!("{record}");
    eprintln!("{human}");
}

mod args {
    //! Minimal `--key value` argument parsing (no external parser needed).

    use super::Result;
    use std::collections::HashMap;
    use std::str::FromStr;

    /// Parsed arguments: `--key value` options, positionals, and everything after `--`.
    #[derive(Debug, Default)]
    pub struct Args {
        /// Options given as `--key value`.
        opts: HashMap<String, String>,
        /// Arguments that are not options.
        pub positional: Vec<String>,
        /// Arguments after a literal `--`.
        pub trailing: Vec<String>,
    }

    impl Args {
        /// Parses `argv` (without the program name and subcommand).
        pub fn parse(argv: &[String]) -> Result<Args> {
            let mut out = Args::default();
            let mut it = argv.iter();
            while let Some(a) = it.next() {
                if a == "--" {
                    out.trailing = it.cloned().collect();
                    break;
                }
                if let Some(key) = a.strip_prefix("--") {
                    let Some(value) = it.next() else {
                        return Err(format!("option --{key} needs a value").into());
                    };
                    out.opts.insert(key.to_owned(), value.clone());
                } else {
                    out.positional.push(a.clone());
                }
            }
            Ok(out)
        }

        /// The string value of `--key`, or `default`.
        pub fn str_or(&self, key: &str, default: &str) -> String {
            self.opts
                .get(key)
                .cloned()
                .unwrap_or_else(|| default.to_owned())
        }

        /// The string value of `--key`, if given.
        pub fn str_opt(&self, key: &str) -> Option<String> {
            self.opts.get(key).cloned()
        }

        /// The parsed value of `--key`, or `default`.
        pub fn num_or<T: FromStr>(&self, key: &str, default: T) -> Result<T> {
            match self.opts.get(key) {
                None => Ok(default),
                Some(v) => v
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("bad value for --{key}: {v:?}").into()),
            }
        }
    }
}

mod wire {
    //! Just enough of the NATS client protocol, over a blocking `TcpStream`.

    use super::{Result, MAX_LINE, WAIT_LIMIT};
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// Connects to `url` (`HOST:PORT`, an optional `nats://` prefix is ignored),
    /// reads `INFO`, sends `CONNECT` and a `PING`, and waits for the `PONG`.
    ///
    /// Returns the stream and a [`Reader`] holding any bytes read past the `PONG`.
    pub fn connect(url: &str) -> Result<(TcpStream, Reader)> {
        let addr = url.strip_prefix("nats://").unwrap_or(url);
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        // A server that stops reading must not hang a publisher forever.
        stream.set_write_timeout(Some(WAIT_LIMIT))?;
        let mut reader = Reader::new();
        let info = reader.read_line(&mut stream)?;
        if !info.starts_with(b"INFO") {
            return Err(format!("expected INFO, got {:?}", String::from_utf8_lossy(&info)).into());
        }
        stream.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false,\
              \"name\":\"loadgen\",\"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1}\r\n\
              PING\r\n",
        )?;
        reader.wait_pong(&mut stream)?;
        Ok((stream, reader))
    }

    /// What a [`Reader`] saw in one call to [`Reader::feed`].
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Seen {
        /// `MSG`/`HMSG` frames completed.
        pub msgs: u64,
        /// `PING`s from the server that need a `PONG`.
        pub pings: u32,
        /// `PONG`s from the server.
        pub pongs: u32,
        /// `MSG` frames completed on the probe subscription (sid [`PROBE_SID`]).
        pub probes: u64,
    }

    /// Subscription id whose messages count as probes, not as measured messages.
    pub const PROBE_SID: &[u8] = b"p";

    /// Incremental parser of server-to-client traffic that counts messages
    /// without copying payloads.
    #[derive(Debug)]
    pub struct Reader {
        /// Payload bytes (plus CRLF) still to skip.
        skip: usize,
        /// Whether the message being skipped belongs to the probe subscription.
        skip_probe: bool,
        /// Partial protocol line carried over between reads.
        line: Vec<u8>,
        /// Bytes read during the handshake and not consumed yet.
        pending: Vec<u8>,
        /// First `-ERR` line received, if any.
        pub error: Option<String>,
    }

    impl Reader {
        /// A reader at the start of a connection.
        pub fn new() -> Reader {
            Reader {
                skip: 0,
                skip_probe: false,
                line: Vec::new(),
                pending: Vec::new(),
                error: None,
            }
        }

        /// Reads one raw CRLF-terminated line (handshake use only).
        fn read_line(&mut self, stream: &mut TcpStream) -> Result<Vec<u8>> {
            let deadline = Instant::now() + WAIT_LIMIT;
            let mut buf = [0u8; 4096];
            loop {
                if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                    let rest = self.pending.split_off(i + 1);
                    let line = std::mem::replace(&mut self.pending, rest);
                    return Ok(line);
                }
                if self.pending.len() > MAX_LINE {
                    return Err("protocol line too long".into());
                }
                if Instant::now() > deadline {
                    return Err("timed out waiting for a line from the server".into());
                }
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                match stream.read(&mut buf) {
                    Ok(0) => return Err("server closed the connection".into()),
                    Ok(n) => self
                        .pending
                        .extend_from_slice(buf.get(..n).unwrap_or_default()),
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        /// Reads until a `PONG` arrives, answering `PING`s and counting nothing else.
        pub fn wait_pong(&mut self, stream: &mut TcpStream) -> Result<u64> {
            let deadline = Instant::now() + WAIT_LIMIT;
            let mut msgs = 0u64;
            let pending = std::mem::take(&mut self.pending);
            let mut seen = self.feed(&pending)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                msgs += seen.msgs;
                for _ in 0..seen.pings {
                    stream.write_all(b"PONG\r\n")?;
                }
                if seen.pongs > 0 {
                    stream.set_read_timeout(None)?;
                    return Ok(msgs);
                }
                if let Some(err) = &self.error {
                    return Err(format!("server error: {err}").into());
                }
                if Instant::now() > deadline {
                    return Err("timed out waiting for PONG".into());
                }
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                seen = match stream.read(&mut buf) {
                    Ok(0) => return Err("server closed the connection".into()),
                    Ok(n) => self.feed(buf.get(..n).unwrap_or_default())?,
                    Err(e) if is_timeout(&e) => Seen::default(),
                    Err(e) => return Err(e.into()),
                };
            }
        }

        /// Takes the bytes read past the handshake (to be fed before new reads).
        pub fn take_pending(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.pending)
        }

        /// Consumes `buf`, counting complete messages and control lines.
        pub fn feed(&mut self, mut buf: &[u8]) -> Result<Seen> {
            let mut seen = Seen::default();
            loop {
                if self.skip > 0 {
                    let n = self.skip.min(buf.len());
                    self.skip -= n;
                    buf = buf.get(n..).unwrap_or_default();
                    if self.skip > 0 {
                        return Ok(seen);
                    }
                    if self.skip_probe {
                        seen.probes += 1;
                    } else {
                        seen.msgs += 1;
                    }
                }
                if buf.is_empty() {
                    return Ok(seen);
                }
                match buf.iter().position(|&b| b == b'\n') {
                    None => {
                        self.line.extend_from_slice(buf);
                        if self.line.len() > MAX_LINE {
                            return Err("protocol line too long".into());
                        }
                        return Ok(seen);
                    }
                    Some(i) => {
                        let (head, tail) = buf.split_at(i + 1);
                        buf = tail;
                        if self.line.is_empty() {
                            self.control(head, &mut seen)?;
                        } else {
                            let mut line = std::mem::take(&mut self.line);
                            line.extend_from_slice(head);
                            self.control(&line, &mut seen)?;
                            line.clear();
                            self.line = line;
                        }
                    }
                }
            }
        }

        /// Handles one complete line (with its `\r\n`).
        fn control(&mut self, line: &[u8], seen: &mut Seen) -> Result<()> {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
                // The last field is the payload size (total size for HMSG).
                let size_field = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
                let size = parse_usize(size_field)
                    .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(line)))?;
                self.skip = size + 2;
                // `MSG subject sid ...`: the second field is the subscription id.
                self.skip_probe = line.split(|&b| b == b' ').nth(2) == Some(PROBE_SID);
            } else if line.starts_with(b"PING") {
                seen.pings += 1;
            } else if line.starts_with(b"PONG") {
                seen.pongs += 1;
            } else if line.starts_with(b"-ERR") {
                if self.error.is_none() {
                    self.error = Some(String::from_utf8_lossy(line).into_owned());
                }
            } else if line.starts_with(b"+OK") || line.starts_with(b"INFO") || line.is_empty() {
                // Nothing to do.
            } else {
                return Err(format!(
                    "unexpected protocol line {:?}",
                    String::from_utf8_lossy(line)
                )
                .into());
            }
            Ok(())
        }
    }

    /// Parses ASCII decimal digits.
    fn parse_usize(digits: &[u8]) -> Option<usize> {
        if digits.is_empty() || digits.len() > 12 {
            return None;
        }
        digits.iter().try_fold(0usize, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + usize::from(d - b'0'))
        })
    }

    /// True for the errors a socket read timeout produces.
    pub fn is_timeout(e: &std::io::Error) -> bool {
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    }

    /// Pre-encodes as many `PUB subject size` frames as fit in about `target`
    /// bytes (at least one).
    pub fn pub_frames(subject: &str, size: usize, target: usize) -> (Vec<u8>, usize) {
        let mut frame = format!("PUB {subject} {size}\r\n").into_bytes();
        frame.extend((0..size).map(|i| b'a' + (i % 26) as u8));
        frame.extend_from_slice(b"\r\n");
        let count = (target / frame.len()).max(1);
        (frame.repeat(count), count)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn counts_split_messages() {
            let wire = b"MSG a 1 3\r\nabc\r\nPING\r\nMSG a 1 reply 0\r\n\r\nHMSG a 1 12 14\r\nNATS/1.0\r\n\r\nxy\r\n";
            for cut in 0..wire.len() {
                let mut r = Reader::new();
                let (a, b) = wire.split_at(cut);
                let s1 = r.feed(a).unwrap_or_default();
                let s2 = r.feed(b).unwrap_or_default();
                assert_eq!(s1.msgs + s2.msgs, 3, "cut at {cut}");
                assert_eq!(s1.pings + s2.pings, 1, "cut at {cut}");
            }
        }

        #[test]
        fn separates_probes() {
            let wire = b"MSG bench.probe p 0\r\n\r\nMSG bench.s 1 2\r\nab\r\nMSG x p r 1\r\nz\r\n";
            for cut in 0..wire.len() {
                let mut r = Reader::new();
                let (a, b) = wire.split_at(cut);
                let s1 = r.feed(a).unwrap_or_default();
                let s2 = r.feed(b).unwrap_or_default();
                assert_eq!(s1.msgs + s2.msgs, 1, "cut at {cut}");
                assert_eq!(s1.probes + s2.probes, 2, "cut at {cut}");
            }
        }
    }
}

mod throughput {
    //! The `pub` and `pubsub` modes.

    use super::*;
    use wire::Reader;

    /// Publishes `msgs` frames of `size` bytes as fast as the socket takes them,
    /// then waits for a `PONG` (so every message has been processed).
    fn blast(stream: &mut TcpStream, reader: &mut Reader, size: usize, msgs: u64) -> Result<()> {
        let (chunk, per_chunk) = wire::pub_frames(SUBJECT, size, WRITE_CHUNK);
        let per_chunk = per_chunk as u64;
        let frame_len = chunk.len() / per_chunk as usize;
        let mut left = msgs;
        while left >= per_chunk {
            stream.write_all(&chunk)?;
            left -= per_chunk;
        }
        let tail = chunk.get(..frame_len * left as usize).unwrap_or_default();
        stream.write_all(tail)?;
        stream.write_all(b"PING\r\n")?;
        reader.wait_pong(stream)?;
        Ok(())
    }

    /// `loadgen pub`: publish-only ingest.
    pub fn run_pub(args: &args::Args) -> Result<()> {
        let url = args.str_or("url", "127.0.0.1:4222");
        let size: usize = args.num_or("size", 16)?;
        let msgs: u64 = args.num_or("msgs", 5_000_000)?;
        let server = args.str_or("server", "");
        let (mut stream, mut reader) = wire::connect(&url)?;
        let start = Instant::now();
        blast(&mut stream, &mut reader, size, msgs)?;
        let secs = start.elapsed().as_secs_f64();
        let rate = msgs as f64 / secs;
        emit(
            serde_json::json!({
                "mode": "pub", "row": format!("pub/{size}"), "server": server,
                "size": size, "msgs": msgs, "secs": secs,
                "msgs_per_sec": rate, "mb_per_sec": rate * size as f64 / 1e6,
            }),
            &format!(
                "pub      {server:12} size {size:4} B  {msgs} msgs in {secs:.3} s = {:.3} M msgs/s ({:.1} MB/s payload)",
                rate / 1e6,
                rate * size as f64 / 1e6
            ),
        );
        Ok(())
    }

    /// State shared by the publisher and the subscriber threads.
    struct Shared {
        /// Set once the publisher has received its final `PONG`.
        pub_done: AtomicBool,
        /// Set if the publisher failed (subscribers stop waiting).
        pub_failed: AtomicBool,
        /// Subscribers that have received at least one probe.
        probed: AtomicUsize,
    }

    /// What one subscriber saw.
    struct SubResult {
        /// Messages received.
        received: u64,
        /// When the last message arrived.
        last: Option<Instant>,
        /// Why the subscriber stopped early, if it did.
        error: Option<String>,
    }

    /// One subscriber connection: subscribes, confirms with PING/PONG, waits at
    /// `ready`, then counts messages until it has `expected` or the stream is idle.
    #[allow(clippy::too_many_arguments)]
    fn subscriber(
        url: &str,
        sid: usize,
        probe: bool,
        expected: u64,
        idle: Duration,
        ready: &Barrier,
        start: &std::sync::OnceLock<Instant>,
        shared: &Shared,
    ) -> SubResult {
        let mut res = SubResult {
            received: 0,
            last: None,
            error: None,
        };
        let setup = || -> Result<(TcpStream, Reader)> {
            let (mut stream, mut reader) = wire::connect(url)?;
            let mut subs = format!("SUB {SUBJECT} {sid}\r\n");
            if probe {
                // After the measured subscription, so that on an ordered link the
                // probe's interest arriving implies the measured one has arrived.
                let probe_sid = String::from_utf8_lossy(wire::PROBE_SID);
                subs.push_str(&format!("SUB {PROBE_SUBJECT} {probe_sid}\r\n"));
            }
            subs.push_str("PING\r\n");
            stream.write_all(subs.as_bytes())?;
            reader.wait_pong(&mut stream)?;
            Ok((stream, reader))
        };
        let conn = setup();
        ready.wait();
        let (mut stream, mut reader) = match conn {
            Ok(c) => c,
            Err(e) => {
                res.error = Some(format!("setup: {e}"));
                return res;
            }
        };
        if let Err(e) = stream.set_read_timeout(Some(Duration::from_millis(100))) {
            res.error = Some(e.to_string());
            return res;
        }
        let mut buf = vec![0u8; READ_BUF];
        let mut quiet_since = Instant::now();
        let mut pending = reader.take_pending();
        let mut probed = false;
        loop {
            let got = if pending.is_empty() {
                stream.read(&mut buf)
            } else {
                let n = pending.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), pending.get(..n)) {
                    dst.copy_from_slice(src);
                }
                pending.drain(..n);
                Ok(n)
            };
            match got {
                Ok(0) => {
                    res.error = Some(match &reader.error {
                        Some(e) => format!("server closed the connection after {e}"),
                        None => "server closed the connection".into(),
                    });
                    break;
                }
                Ok(n) => {
                    let seen = match reader.feed(buf.get(..n).unwrap_or_default()) {
                        Ok(s) => s,
                        Err(e) => {
                            res.error = Some(e.to_string());
                            break;
                        }
                    };
                    if seen.probes > 0 && !probed {
                        probed = true;
                        shared.probed.fetch_add(1, Ordering::AcqRel);
                    }
                    if seen.msgs > 0 {
                        res.received += seen.msgs;
                        let now = Instant::now();
                        res.last = Some(now);
                        quiet_since = now;
                    }
                    for _ in 0..seen.pings {
                        if let Err(e) = stream.write_all(b"PONG\r\n") {
                            res.error = Some(e.to_string());
                        }
                    }
                    if res.received >= expected {
                        break;
                    }
                }
                Err(e) if wire::is_timeout(&e) => {
                    if shared.pub_failed.load(Ordering::Acquire) {
                        res.error = Some("publisher failed".into());
                        break;
                    }
                    if shared.pub_done.load(Ordering::Acquire) {
                        // Count quiet time from the later of last message and publisher end.
                        if let Some(t) = start.get() {
                            if quiet_since < *t {
                                quiet_since = *t;
                            }
                        }
                        if quiet_since.elapsed() >= idle {
                            break;
                        }
                    } else {
                        quiet_since = Instant::now();
                    }
                }
                Err(e) => {
                    res.error = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = &reader.error {
            if res.error.is_none() {
                res.error = Some(e.clone());
            }
        }
        res
    }

    /// Publishes probes on [`PROBE_SUBJECT`] every 10 ms until every subscriber
    /// has seen one (interest has crossed any leaf link), at most `limit`.
    fn probe(stream: &mut TcpStream, subs: usize, shared: &Shared, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        while shared.probed.load(Ordering::Acquire) < subs {
            if t0.elapsed() > limit {
                return Err(format!(
                    "interest did not arrive within {limit:?}: {} of {subs} subscribers got a probe",
                    shared.probed.load(Ordering::Acquire)
                )
                .into());
            }
            stream.write_all(format!("PUB {PROBE_SUBJECT} 0\r\n\r\n").as_bytes())?;
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// `loadgen pubsub`: one publisher, K subscribers.
    ///
    /// With `--sub-url`, the subscribers connect there instead of `--url` (e.g. a hub
    /// behind the publisher's leaf); the publisher then sends probes until every
    /// subscriber has one, before the clock starts.
    pub fn run_pubsub(args: &args::Args) -> Result<()> {
        let url = args.str_or("url", "127.0.0.1:4222");
        let sub_url = args.str_or("sub-url", &url);
        let probe_needed = sub_url != url;
        let size: usize = args.num_or("size", 16)?;
        let msgs: u64 = args.num_or("msgs", 2_000_000)?;
        let subs: usize = args.num_or("subs", 1)?;
        let idle = Duration::from_secs_f64(args.num_or("idle", 2.0)?);
        let server = args.str_or("server", "");
        if subs == 0 {
            return Err("--subs must be at least 1".into());
        }

        let shared = Arc::new(Shared {
            pub_done: AtomicBool::new(false),
            pub_failed: AtomicBool::new(false),
            probed: AtomicUsize::new(0),
        });
        let ready = Arc::new(Barrier::new(subs + 1));
        let start = Arc::new(std::sync::OnceLock::new());
        let handles: Vec<_> = (1..=subs)
            .map(|sid| {
                let (url, ready, start, shared) = (
                    sub_url.clone(),
                    ready.clone(),
                    start.clone(),
                    shared.clone(),
                );
                thread::Builder::new()
                    .name(format!("sub-{sid}"))
                    .spawn(move || {
                        subscriber(&url, sid, probe_needed, msgs, idle, &ready, &start, &shared)
                    })
            })
            .collect::<std::io::Result<_>>()?;

        let conn = wire::connect(&url);
        ready.wait();
        let mut probe_ms = 0.0;
        let outcome = conn.and_then(|(mut stream, mut reader)| {
            if probe_needed {
                let t = Instant::now();
                probe(&mut stream, subs, &shared, PROBE_LIMIT)?;
                // Let probes still in flight arrive before the clock starts.
                thread::sleep(Duration::from_millis(50));
                probe_ms = t.elapsed().as_secs_f64() * 1e3;
            }
            let t0 = Instant::now();
            let _ = start.set(t0);
            blast(&mut stream, &mut reader, size, msgs)?;
            let pub_secs = t0.elapsed().as_secs_f64();
            Ok((t0, pub_secs, stream))
        });
        let (t0, pub_secs, pub_error, _pub_stream) = match outcome {
            Ok((t0, secs, stream)) => {
                shared.pub_done.store(true, Ordering::Release);
                (t0, secs, None, Some(stream))
            }
            Err(e) => {
                shared.pub_failed.store(true, Ordering::Release);
                (Instant::now(), f64::NAN, Some(e.to_string()), None)
            }
        };
        let results: Vec<SubResult> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or(SubResult {
                    received: 0,
                    last: None,
                    error: Some("subscriber thread panicked".into()),
                })
            })
            .collect();

        let received: u64 = results.iter().map(|r| r.received).sum();
        let expected = msgs * subs as u64;
        let lost = expected.saturating_sub(received);
        let last = results.iter().filter_map(|r| r.last).max();
        let secs = last.map_or(f64::NAN, |l| l.duration_since(t0).as_secs_f64());
        let rate = received as f64 / secs;
        let mut errors: Vec<String> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.error.as_ref().map(|e| format!("sub {}: {e}", i + 1)))
            .collect();
        if let Some(e) = pub_error {
            errors.insert(0, format!("publisher: {e}"));
        }
        let per_sub: Vec<u64> = results.iter().map(|r| r.received).collect();
        let row = args.str_or("row", &format!("pubsub{subs}/{size}"));
        let pair = args.str_or("pair", "");
        emit(
            serde_json::json!({
                "mode": "pubsub", "row": row, "server": server, "pair": pair,
                "url": url, "sub_url": sub_url, "probe_ms": probe_ms,
                "subs": subs, "size": size, "msgs": msgs, "expected": expected,
                "received": received, "lost": lost, "per_sub": per_sub,
                "secs": secs, "pub_secs": pub_secs,
                "deliveries_per_sec": rate, "pub_msgs_per_sec": msgs as f64 / pub_secs,
                "errors": errors,
            }),
            &format!(
                "pubsub   {server:12} size {size:4} B  subs {subs}  {received}/{expected} delivered in {secs:.3} s = {:.3} M deliveries/s, lost {lost}{}",
                rate / 1e6,
                if errors.is_empty() { String::new() } else { format!("  errors: {}", errors.join("; ")) }
            ),
        );
        Ok(())
    }
}

mod reqrep {
    //! The `reqrep` mode: sequential request/reply latency via async-nats.

    use super::*;
    use futures::StreamExt;

    /// `loadgen reqrep`.
    pub fn run(args: &args::Args) -> Result<()> {
        let url = args.str_or("url", "127.0.0.1:4222");
        let size: usize = args.num_or("size", 16)?;
        let msgs: usize = args.num_or("msgs", 20_000)?;
        let warmup: usize = args.num_or("warmup", 1_000)?;
        let server = args.str_or("server", "");
        let threads: usize = args.num_or("threads", 0)?;
        let rt = if threads == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
        };
        let responder_url = args.str_or("responder-url", &url);
        let (mut lat_ns, probe_ms) =
            rt.block_on(measure(&url, &responder_url, size, msgs, warmup))?;
        if lat_ns.is_empty() {
            return Err("no requests measured".into());
        }
        lat_ns.sort_unstable();
        let pct = |p: f64| -> f64 {
            let idx = ((lat_ns.len() - 1) as f64 * p).round() as usize;
            lat_ns.get(idx).copied().unwrap_or_default() as f64 / 1e3
        };
        let total: u64 = lat_ns.iter().sum();
        let mean = total as f64 / lat_ns.len() as f64 / 1e3;
        let (p50, p90, p99, p999, max) = (pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1.0));
        emit(
            serde_json::json!({
                "mode": "reqrep", "row": args.str_or("row", &format!("reqrep/{size}")),
                "server": server, "pair": args.str_or("pair", ""),
                "url": url, "responder_url": responder_url, "probe_ms": probe_ms,
                "size": size, "msgs": msgs, "mean_us": mean,
                "p50_us": p50, "p90_us": p90, "p99_us": p99, "p999_us": p999, "max_us": max,
                "req_per_sec": 1e6 / mean,
            }),
            &format!(
                "reqrep   {server:12} size {size:4} B  {msgs} reqs  p50 {p50:.1} us  p90 {p90:.1} us  p99 {p99:.1} us  max {max:.1} us  mean {mean:.1} us"
            ),
        );
        Ok(())
    }

    /// `nats://HOST:PORT` from `HOST:PORT` (with or without the scheme).
    fn nats_url(url: &str) -> String {
        format!("nats://{}", url.strip_prefix("nats://").unwrap_or(url))
    }

    /// Starts a responder on `responder_url`, then times `msgs` sequential requests
    /// sent through `url` after `warmup`. Returns the latencies in ns and how long
    /// the first successful request took to get through (interest crossing a leaf
    /// link in both directions), in ms.
    async fn measure(
        url: &str,
        responder_url: &str,
        size: usize,
        msgs: usize,
        warmup: usize,
    ) -> Result<(Vec<u64>, f64)> {
        let url = nats_url(url);
        let responder = async_nats::connect(nats_url(responder_url)).await?;
        let mut sub = responder.subscribe(RR_SUBJECT).await?;
        responder.flush().await?;
        let echo = responder.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    if echo.publish(reply, msg.payload).await.is_err() {
                        break;
                    }
                }
            }
        });

        let requester = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(5)))
            .connect(url.as_str())
            .await?;
        let payload = bytes::Bytes::from(vec![b'r'; size]);
        // Until the responder's interest has reached the requester's server and the
        // requester's reply interest the responder's, requests fail or time out.
        let t_probe = Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_millis(250),
                requester.request(RR_SUBJECT, payload.clone()),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                break;
            }
            if t_probe.elapsed() > PROBE_LIMIT {
                return Err(format!("no reply within {PROBE_LIMIT:?}: {attempt:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let probe_ms = t_probe.elapsed().as_secs_f64() * 1e3;
        for _ in 0..warmup {
            requester.request(RR_SUBJECT, payload.clone()).await?;
        }
        let mut lat = Vec::with_capacity(msgs);
        for _ in 0..msgs {
            let t = Instant::now();
            let reply = requester.request(RR_SUBJECT, payload.clone()).await?;
            lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            if reply.payload.len() != size {
                return Err(
                    format!("reply of {} bytes, expected {size}", reply.payload.len()).into(),
                );
            }
        }
        task.abort();
        Ok((lat, probe_ms))
    }
}

mod js {
    //! The `js` mode: JetStream publish throughput and acknowledgement latency,
    //! through async-nats, followed by a `STREAM.INFO` check of what was stored.

    use super::*;
    use async_nats::jetstream::{self, context::PublishAckFuture, stream};
    use std::collections::VecDeque;

    /// Default name of the benchmark stream (subjects `bench.>`).
    pub const STREAM: &str = "BENCH";

    /// Where the run publishes: which stream, and whether loadgen (re)creates it.
    struct Target {
        /// Stream name (`--stream`, default [`STREAM`]).
        stream: String,
        /// `--create true` (default): delete and create the stream on `bench.>`;
        /// `false`: use a stream that already exists (e.g. an uplink's `UPLINK_<name>`).
        create: bool,
    }

    /// CPU time (user + system) this process has used so far, in seconds.
    pub fn cpu_secs() -> f64 {
        // SAFETY: `getrusage` only writes into the zeroed struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF is valid and `ru` is a valid, writable rusage.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return f64::NAN;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    /// What one run measured.
    struct Outcome {
        /// Publishes acknowledged without error (warm-up included).
        acked: u64,
        /// Publishes whose acknowledgement was an error or never came.
        failed: u64,
        /// First failure, if any.
        first_error: Option<String>,
        /// Wall time of the timed part.
        secs: f64,
        /// Per-publish acknowledgement latencies in ns (sync mode only).
        lat_ns: Vec<u64>,
    }

    /// Records the outcome of one acknowledgement.
    fn tally<T, E: std::fmt::Display>(out: &mut Outcome, r: std::result::Result<T, E>) {
        match r {
            Ok(_) => out.acked += 1,
            Err(e) => {
                out.failed += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(e.to_string());
                }
            }
        }
    }

    /// `loadgen js --mode sync|async`.
    pub fn run(args: &args::Args) -> Result<()> {
        let url = args.str_or("url", "127.0.0.1:4222");
        let mode = args.str_or("mode", "sync");
        let size: usize = args.num_or("size", 128)?;
        let msgs: u64 = args.num_or("msgs", 3_000)?;
        let warmup: u64 = args.num_or("warmup", 100)?;
        let inflight: usize = args.num_or("inflight", 256)?;
        let server = args.str_or("server", "");
        if mode != "sync" && mode != "async" {
            return Err(format!("--mode must be sync or async, not {mode:?}").into());
        }
        let create = args.str_or("create", "true");
        let target = Target {
            stream: args.str_or("stream", STREAM),
            create: match create.as_str() {
                "true" | "yes" => true,
                "false" | "no" => false,
                _ => return Err(format!("--create must be true or false, not {create:?}").into()),
            },
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cpu0 = cpu_secs();
        let (out, stored) = rt.block_on(measure(
            &url,
            &target,
            &mode,
            size,
            msgs,
            warmup,
            inflight.max(1),
        ))?;
        let cpu = cpu_secs() - cpu0;
        let total = msgs + warmup;
        // Loss: acknowledged publishes that the stream does not hold.
        let lost = out.acked.saturating_sub(stored);
        let rate = msgs as f64 / out.secs;
        let mut lat = out.lat_ns;
        lat.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            let idx = ((lat.len().checked_sub(1)?) as f64 * p).round() as usize;
            lat.get(idx).map(|&ns| ns as f64 / 1e3)
        };
        let mut errors = Vec::new();
        if let Some(e) = &out.first_error {
            errors.push(format!("{} failed acks, first: {e}", out.failed));
        }
        if stored != out.acked {
            errors.push(format!(
                "stream holds {stored} messages, {} were acknowledged ({total} sent)",
                out.acked
            ));
        }
        let mut record = serde_json::json!({
            "mode": "js", "row": args.str_or("row", &format!("js-{mode}/{size}")), "server": server,
            "stream": target.stream, "size": size, "msgs": msgs, "warmup": warmup, "sent": total,
            "inflight": if mode == "sync" { 1 } else { inflight },
            "acked": out.acked, "failed": out.failed, "stored": stored,
            "expected": total, "lost": lost, "secs": out.secs, "msgs_per_sec": rate,
            "client_cpu_secs": cpu, "errors": errors,
        });
        let mut human = format!(
            "js-{mode:5}  {server:12} size {size:4} B  {msgs} msgs in {:.3} s = {:.1} k msgs/s, acked {}/{total}, stored {stored}, lost {lost}, client CPU {:.0} %",
            out.secs,
            rate / 1e3,
            out.acked,
            100.0 * cpu / out.secs
        );
        if let (Some(p50), Some(p90), Some(p99), Some(max), Some(obj)) = (
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0),
            record.as_object_mut(),
        ) {
            obj.insert("p50_us".into(), p50.into());
            obj.insert("p90_us".into(), p90.into());
            obj.insert("p99_us".into(), p99.into());
            obj.insert("max_us".into(), max.into());
            human.push_str(&format!(
                "  ack p50 {p50:.0} us  p90 {p90:.0} us  p99 {p99:.0} us  max {max:.0} us"
            ));
        }
        if !errors.is_empty() {
            human.push_str(&format!("  errors: {}", errors.join("; ")));
        }
        emit(record, &human);
        Ok(())
    }

    /// (Re)creates the stream (unless told to use an existing one), publishes, and
    /// returns the outcome and the number of messages `STREAM.INFO` reports afterwards.
    async fn measure(
        url: &str,
        target: &Target,
        mode: &str,
        size: usize,
        msgs: u64,
        warmup: u64,
        inflight: usize,
    ) -> Result<(Outcome, u64)> {
        let url = format!("nats://{}", url.strip_prefix("nats://").unwrap_or(url));
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .connect(url.as_str())
            .await?;
        let ctx = jetstream::new(client);
        let name = target.stream.as_str();
        let mut stream = if target.create {
            // A leftover stream from an earlier run would skew the count.
            let _ = ctx.delete_stream(name).await;
            ctx.create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec!["bench.>".to_owned()],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create stream {name}: {e}"))?
        } else {
            ctx.get_stream(name)
                .await
                .map_err(|e| format!("stream {name} (expected to exist): {e}"))?
        };
        let payload = bytes::Bytes::from(vec![b'j'; size]);
        let mut out = Outcome {
            acked: 0,
            failed: 0,
            first_error: None,
            secs: f64::NAN,
            lat_ns: Vec::new(),
        };
        if mode == "sync" {
            for _ in 0..warmup {
                let r = async { ctx.publish(SUBJECT, payload.clone()).await?.await }.await;
                tally(&mut out, r.map_err(|e| e.to_string()));
            }
            out.lat_ns.reserve(msgs as usize);
            let t0 = Instant::now();
            for _ in 0..msgs {
                let t = Instant::now();
                let r = async { ctx.publish(SUBJECT, payload.clone()).await?.await }.await;
                out.lat_ns
                    .push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                tally(&mut out, r.map_err(|e| e.to_string()));
            }
            out.secs = t0.elapsed().as_secs_f64();
        } else {
            let mut window: VecDeque<PublishAckFuture> = VecDeque::with_capacity(inflight);
            let mut t0 = Instant::now();
            for i in 0..warmup + msgs {
                if i == warmup {
                    // Drain the warm-up so the timed part starts from an empty pipe.
                    while let Some(f) = window.pop_front() {
                        tally(&mut out, f.await);
                    }
                    t0 = Instant::now();
                }
                if window.len() >= inflight {
                    if let Some(f) = window.pop_front() {
                        tally(&mut out, f.await);
                    }
                }
                match ctx.publish(SUBJECT, payload.clone()).await {
                    Ok(f) => window.push_back(f),
                    Err(e) => tally::<(), _>(&mut out, Err(e)),
                }
            }
            while let Some(f) = window.pop_front() {
                tally(&mut out, f.await);
            }
            out.secs = t0.elapsed().as_secs_f64();
        }
        let stored = stream
            .info()
            .await
            .map_err(|e| format!("stream info: {e}"))?
            .state
            .messages;
        Ok((out, stored))
    }
}

mod await_stream {
    //! The `await-stream` mode: times a stream on a just-started hub filling up to a
    //! message count, i.e. a backlog replayed over a leaf link (an uplink's, or a
    //! stream sourcing from the leaf's JetStream).
    //!
    //! The clock that counts starts when the leaf link is up: a subscriber on the leaf
    //! receives a probe published on the hub. Before that the leaf is only waiting
    //! for its reconnect timer (1 s granularity in nats-server, configurable in
    //! leafd), which is reported apart (`link_secs`).

    use super::*;
    use futures::StreamExt;

    /// Subject of the link probes (outside `bench.>`, so no uplink captures them).
    const LINK_PROBE: &str = "uplinkprobe.link";

    /// Interval between two `STREAM.INFO` polls.
    const POLL: Duration = Duration::from_millis(20);

    /// Interval between two samples of the watched process's memory.
    const RSS_EVERY: Duration = Duration::from_millis(200);

    /// `VmRSS` of process `pid` in KiB.
    fn rss_kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time (user + system) process `pid` has used so far, in seconds.
    pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces: fields are counted after its ')'.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
    }

    /// Samples the RSS of a process every [`RSS_EVERY`] on its own thread.
    struct RssSampler {
        /// Cleared to stop the thread.
        running: Arc<AtomicBool>,
        /// The thread; it returns the samples in KiB.
        handle: thread::JoinHandle<Vec<u64>>,
    }

    impl RssSampler {
        /// Starts sampling process `pid` (the first sample is taken at once).
        fn start(pid: u32) -> RssSampler {
            let running = Arc::new(AtomicBool::new(true));
            let flag = Arc::clone(&running);
            let handle = thread::spawn(move || {
                let mut samples = Vec::new();
                loop {
                    samples.extend(rss_kib(pid));
                    if !flag.load(Ordering::Relaxed) {
                        return samples;
                    }
                    thread::sleep(RSS_EVERY);
                }
            });
            RssSampler { running, handle }
        }

        /// Stops sampling (after one last sample) and returns the samples in KiB.
        fn stop(self) -> Vec<u64> {
            self.running.store(false, Ordering::Relaxed);
            self.handle.join().unwrap_or_default()
        }
    }

    /// The processes watched during the replay (leaf: RSS and CPU; hub: CPU), from
    /// the link coming up until the stream is complete.
    struct Watch {
        /// The leaf's process id.
        leaf_pid: Option<u32>,
        /// The hub's process id.
        hub_pid: Option<u32>,
        /// The leaf's RSS sampler while the replay runs.
        sampler: Option<RssSampler>,
        /// CPU seconds of leaf and hub when the link came up.
        cpu_at_link: (Option<f64>, Option<f64>),
        /// RSS samples of the leaf in KiB (once done).
        rss: Vec<u64>,
        /// CPU seconds leaf and hub used during the replay (once done).
        cpu_used: (Option<f64>, Option<f64>),
    }

    impl Watch {
        /// The link is up: start sampling.
        fn link(&mut self) {
            self.sampler = self.leaf_pid.map(RssSampler::start);
            self.cpu_at_link = (
                self.leaf_pid.and_then(proc_cpu_secs),
                self.hub_pid.and_then(proc_cpu_secs),
            );
        }

        /// The stream is complete (or the wait failed): stop sampling.
        fn done(&mut self) {
            let used = |pid: Option<u32>, at_link: Option<f64>| -> Option<f64> {
                Some(proc_cpu_secs(pid?)? - at_link?)
            };
            self.cpu_used = (
                used(self.leaf_pid, self.cpu_at_link.0),
                used(self.hub_pid, self.cpu_at_link.1),
            );
            if let Some(s) = self.sampler.take() {
                self.rss = s.stop();
            }
        }
    }

    /// What to wait for and how.
    struct Spec {
        /// The hub's client address.
        url: String,
        /// The leaf's client address (for the link probe), if any.
        leaf_url: Option<String>,
        /// The hub stream to watch.
        stream: String,
        /// Message count that ends the wait.
        msgs: u64,
        /// Give up after this long.
        limit: Duration,
        /// With `--source NAME --source-api PREFIX`: once the link is up, create the
        /// hub stream sourcing stream NAME through the JetStream API at PREFIX.
        source: Option<(String, String)>,
    }

    /// Times measured by one wait (seconds since loadgen started unless noted).
    struct Times {
        /// Connected to the hub.
        connected: f64,
        /// Link up (probe received on the leaf).
        link: f64,
        /// The hub stream first held a message.
        first: Option<f64>,
        /// The hub stream held `msgs` messages.
        done: f64,
        /// Messages the stream held then.
        stored: u64,
        /// Messages it held 500 ms later (late duplicates would show here).
        stored_after: u64,
        /// Polls sent.
        polls: u64,
    }

    /// `nats://HOST:PORT` from `HOST:PORT`.
    fn nats_url(url: &str) -> String {
        format!("nats://{}", url.strip_prefix("nats://").unwrap_or(url))
    }

    /// The message count of `STREAM.INFO` for `stream`, or `None` if the answer is
    /// an error (no such stream yet) or does not come.
    async fn stream_msgs(client: &async_nats::Client, stream: &str) -> Option<u64> {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(format!("$JS.API.STREAM.INFO.{stream}"), bytes::Bytes::new()),
        )
        .await
        .ok()?
        .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
        v.get("state")?.get("messages")?.as_u64()
    }

    /// Connects to the hub (retrying while it starts), waits for the link, creates
    /// the sourcing stream if asked, and polls until the stream holds `msgs`; then
    /// polls once more 500 ms later. `watch` runs from link up to complete.
    async fn measure(spec: &Spec, watch: &mut Watch) -> Result<Times> {
        let t0 = Instant::now();
        let since = |t: Instant| t.duration_since(t0).as_secs_f64();
        let hub = loop {
            match async_nats::ConnectOptions::new()
                .request_timeout(Some(Duration::from_secs(5)))
                .connect(nats_url(&spec.url))
                .await
            {
                Ok(c) => break c,
                Err(e) if t0.elapsed() > WAIT_LIMIT => {
                    return Err(format!("cannot connect to the hub {}: {e}", spec.url).into())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let connected = since(Instant::now());
        if let Some(leaf_url) = &spec.leaf_url {
            let leaf = async_nats::connect(nats_url(leaf_url)).await?;
            let mut sub = leaf.subscribe(LINK_PROBE).await?;
            leaf.flush().await?;
            loop {
                hub.publish(LINK_PROBE, bytes::Bytes::new()).await?;
                hub.flush().await?;
                if let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(10), sub.next()).await
                {
                    break;
                }
                if t0.elapsed() > spec.limit {
                    return Err(
                        format!("the leaf link did not come up within {:?}", spec.limit).into(),
                    );
                }
            }
        }
        let t_link = Instant::now();
        watch.link();
        if let Some((name, api)) = &spec.source {
            let config = serde_json::json!({
                "name": spec.stream,
                "storage": "file",
                "sources": [{ "name": name, "external": { "api": api } }],
            });
            let reply = hub
                .request(
                    format!("$JS.API.STREAM.CREATE.{}", spec.stream),
                    config.to_string().into(),
                )
                .await
                .map_err(|e| format!("create stream {}: {e}", spec.stream))?;
            let v: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            if let Some(err) = v.get("error") {
                return Err(format!("create stream {}: {err}", spec.stream).into());
            }
        }
        let mut first = None;
        let mut polls = 0u64;
        let (done, stored) = loop {
            polls += 1;
            let n = stream_msgs(&hub, &spec.stream).await.unwrap_or(0);
            let now = Instant::now();
            if n > 0 && first.is_none() {
                first = Some(since(now));
            }
            if n >= spec.msgs {
                watch.done();
                break (since(now), n);
            }
            if t_link.elapsed() > spec.limit {
                return Err(format!(
                    "stream {} holds {n} of {} messages after {:?}",
                    spec.stream, spec.msgs, spec.limit
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stored_after = stream_msgs(&hub, &spec.stream).await.unwrap_or(0);
        Ok(Times {
            connected,
            link: since(t_link),
            first,
            done,
            stored,
            stored_after,
            polls,
        })
    }

    /// `loadgen await-stream`.
    pub fn run(args: &args::Args) -> Result<()> {
        let source = match (args.str_opt("source"), args.str_opt("source-api")) {
            (Some(name), Some(api)) => Some((name, api)),
            (None, None) => None,
            _ => return Err("--source and --source-api go together".into()),
        };
        let spec = Spec {
            url: args.str_or("url", "127.0.0.1:4222"),
            leaf_url: args.str_opt("leaf-url"),
            stream: args.str_or("stream", "HUB"),
            msgs: args.num_or("msgs", 1_000_000)?,
            limit: Duration::from_secs_f64(args.num_or("timeout", 300.0)?),
            source,
        };
        let server = args.str_or("server", "");
        let row = args.str_or("row", "uplink");
        let leaf_pid: Option<u32> = args.str_opt("leaf-pid").and_then(|p| p.parse().ok());
        let hub_pid: Option<u32> = args.str_opt("hub-pid").and_then(|p| p.parse().ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut watch = Watch {
            leaf_pid,
            hub_pid,
            sampler: None,
            cpu_at_link: (None, None),
            rss: Vec::new(),
            cpu_used: (None, None),
        };
        let times = rt.block_on(measure(&spec, &mut watch));
        if times.is_err() {
            // Stop the sampler thread (on success `measure` did when the stream was full).
            watch.done();
        }
        let t = times?;
        let (rss, (leaf_cpu, hub_cpu)) = (watch.rss, watch.cpu_used);
        let secs = t.done - t.link;
        let rate = spec.msgs as f64 / secs;
        let mut errors = Vec::new();
        if t.stored_after != spec.msgs {
            errors.push(format!(
                "stream {} holds {} messages 0.5 s after reaching {}, expected exactly {}",
                spec.stream, t.stored_after, t.stored, spec.msgs
            ));
        }
        let lost = spec.msgs.saturating_sub(t.stored_after);
        let mut record = serde_json::json!({
            "mode": "await-stream", "row": row, "server": server, "pair": args.str_or("pair", ""),
            "stream": spec.stream, "msgs": spec.msgs, "expected": spec.msgs,
            "stored": t.stored, "stored_after": t.stored_after, "lost": lost,
            "secs": secs, "msgs_per_sec": rate,
            "secs_from_start": t.done, "connect_secs": t.connected, "link_secs": t.link,
            "first_msg_secs": t.first.map(|f| f - t.link), "polls": t.polls,
            "errors": errors,
        });
        let mut human = format!(
            "{row:8} {server:12} {} msgs on {} in {secs:.3} s after the link came up \
             = {:.1} k msgs/s ({:.3} s from start, link up after {:.3} s, \
             first message after {:.3} s)",
            spec.msgs,
            spec.stream,
            rate / 1e3,
            t.done,
            t.link,
            t.first.map_or(f64::NAN, |f| f - t.link),
        );
        if let Some(obj) = record.as_object_mut() {
            if let (Some(&start), Some(&max), Some(&end)) =
                (rss.first(), rss.iter().max(), rss.last())
            {
                obj.insert("rss_start_kib".into(), start.into());
                obj.insert("rss_max_kib".into(), max.into());
                obj.insert("rss_end_kib".into(), end.into());
                obj.insert("rss_samples_kib".into(), rss.clone().into());
                human.push_str(&format!(
                    ", leaf RSS {:.1} MiB at start, max {:.1}, end {:.1} ({} samples)",
                    start as f64 / 1024.0,
                    max as f64 / 1024.0,
                    end as f64 / 1024.0,
                    rss.len()
                ));
            }
            if let Some(c) = leaf_cpu {
                obj.insert("leaf_cpu_secs".into(), c.into());
                human.push_str(&format!(", leaf CPU {c:.2} s"));
            }
            if let Some(c) = hub_cpu {
                obj.insert("hub_cpu_secs".into(), c.into());
                human.push_str(&format!(", hub CPU {c:.2} s"));
            }
        }
        if !errors.is_empty() {
            human.push_str(&format!("  errors: {}", errors.join("; ")));
        }
        emit(record, &human);
        Ok(())
    }
}

mod stream_info {
    //! The `stream-info` mode: the state of one stream, optionally checked against
    //! an expected message count (e.g. after a server restart on the same store).

    use super::*;

    /// The state `STREAM.INFO` reported.
    struct State {
        /// Messages stored.
        messages: u64,
        /// Bytes stored.
        bytes: u64,
        /// Sequence of the first stored message.
        first_seq: u64,
        /// Sequence of the last stored message.
        last_seq: u64,
    }

    /// Asks `$JS.API.STREAM.INFO.<stream>` once (with a 5 s deadline; an emulated
    /// server can be slow) and returns the state, or why there is none.
    async fn ask(client: &async_nats::Client, stream: &str) -> Result<State> {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(format!("$JS.API.STREAM.INFO.{stream}"), bytes::Bytes::new()),
        )
        .await
        .map_err(|_| "no STREAM.INFO answer within 5 s")??;
        let v: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        if let Some(err) = v.get("error") {
            return Err(format!("STREAM.INFO {stream}: {err}").into());
        }
        let field = |key: &str| -> Result<u64> {
            v.get("state")
                .and_then(|st| st.get(key))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("STREAM.INFO {stream}: no state.{key} in the answer").into())
        };
        Ok(State {
            messages: field("messages")?,
            bytes: field("bytes")?,
            first_seq: field("first_seq")?,
            last_seq: field("last_seq")?,
        })
    }

    /// `loadgen stream-info --url HOST:PORT --stream NAME [--expect N] [--timeout 30]`.
    pub fn run(args: &args::Args) -> Result<()> {
        let url = args.str_or("url", "127.0.0.1:4222");
        let url = format!("nats://{}", url.strip_prefix("nats://").unwrap_or(&url));
        let Some(stream) = args.str_opt("stream") else {
            return Err("stream-info needs --stream NAME".into());
        };
        let expect: Option<u64> = match args.str_opt("expect") {
            None => None,
            Some(_) => Some(args.num_or("expect", 0)?),
        };
        let timeout = Duration::from_secs(args.num_or("timeout", 30)?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let t0 = Instant::now();
        let state = rt.block_on(async {
            let client = tokio::time::timeout(timeout, async_nats::connect(url.as_str()))
                .await
                .map_err(|_| format!("connect to {url}: no answer within {timeout:?}"))??;
            loop {
                let last = match ask(&client, &stream).await {
                    Ok(st) if expect.is_none_or(|n| n == st.messages) => return Ok(st),
                    Ok(st) => format!("stream {stream} holds {} messages", st.messages),
                    Err(e) => e.to_string(),
                };
                if expect.is_none() || t0.elapsed() >= timeout {
                    let want = expect
                        .map(|n| format!(", expected {n}"))
                        .unwrap_or_default();
                    return Err::<State, Error>(format!("{last}{want}").into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })?;
        let record = serde_json::json!({
            "mode": "stream-info", "stream": stream, "messages": state.messages,
            "bytes": state.bytes, "first_seq": state.first_seq, "last_seq": state.last_seq,
            "expected": expect, "secs": t0.elapsed().as_secs_f64(),
        });
        let human = format!(
            "stream {stream}: {} messages, {} bytes, seq {}..{} (after {:.2} s)",
            state.messages,
            state.bytes,
            state.first_seq,
            state.last_seq,
            t0.elapsed().as_secs_f64()
        );
        emit(record, &human);
        Ok(())
    }
}

mod startup {
    //! The `startup` and `freeport` helpers.

    use super::*;

    /// Binds an ephemeral loopback port and returns its number.
    pub fn free_port() -> Result<u16> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    /// Times of one start: first `INFO`, and (if asked) first `STREAM.INFO` answer.
    struct Times {
        /// Spawn to the first `INFO` bytes.
        info: Duration,
        /// Spawn to the first `STREAM.INFO` reply carrying the stream's state.
        js: Option<Duration>,
        /// Messages that reply reported.
        js_msgs: Option<u64>,
    }

    /// On a connection that has just sent `INFO`: asks `$JS.API.STREAM.INFO.<stream>`
    /// every 50 ms until a reply with the stream's state arrives. Returns the
    /// message count it reports.
    fn wait_stream(s: &mut TcpStream, stream: &str, t0: Instant) -> Result<u64> {
        s.write_all(
            format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}}\r\n\
                 SUB _bench.ready 1\r\nPUB $JS.API.STREAM.INFO.{stream} _bench.ready 0\r\n\r\n"
            )
            .as_bytes(),
        )?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut asked = Instant::now();
        loop {
            if t0.elapsed() > WAIT_LIMIT {
                return Err(format!("no STREAM.INFO {stream} answer within {WAIT_LIMIT:?}").into());
            }
            match s.read(&mut buf) {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => seen.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if wire::is_timeout(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let text = String::from_utf8_lossy(&seen);
            if let Some(i) = text.find("\"state\"") {
                let rest = text.get(i..).unwrap_or_default();
                if let Some(j) = rest.find("\"messages\":") {
                    let digits: String = rest
                        .get(j + 11..)
                        .unwrap_or_default()
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    if let (Ok(n), true) = (digits.parse(), rest.len() > j + 11 + digits.len()) {
                        return Ok(n);
                    }
                }
            }
            if text.contains("PING\r\n") {
                s.write_all(b"PONG\r\n")?;
            }
            // An error reply (JetStream not ready yet) or no reply: ask again.
            if asked.elapsed() >= Duration::from_millis(50) || text.contains("\"error\"") {
                seen.clear();
                s.write_all(
                    format!("PUB $JS.API.STREAM.INFO.{stream} _bench.ready 0\r\n\r\n").as_bytes(),
                )?;
                asked = Instant::now();
            }
        }
    }

    /// Spawns the command once and returns the time until the first `INFO` line,
    /// and with `js_stream` until the stream's info is served.
    fn once(cmd: &[String], js_stream: Option<&str>) -> Result<Times> {
        let port = free_port()?;
        let argv: Vec<String> = cmd
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let Some((prog, rest)) = argv.split_first() else {
            return Err("startup: no command given after --".into());
        };
        let addr = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        let mut child = Command::new(prog)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {prog}: {e}"))?;
        let outcome = (|| -> Result<Times> {
            loop {
                if let Some(status) = child.try_wait()? {
                    return Err(format!("{prog} exited early with {status}").into());
                }
                if t0.elapsed() > WAIT_LIMIT {
                    return Err(format!("{prog} did not accept connections on {addr}").into());
                }
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    thread::sleep(Duration::from_micros(100));
                    continue;
                };
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut buf = [0u8; 4];
                match s.read_exact(&mut buf) {
                    Ok(()) if &buf == b"INFO" => {
                        let info = t0.elapsed();
                        let Some(name) = js_stream else {
                            return Ok(Times {
                                info,
                                js: None,
                                js_msgs: None,
                            });
                        };
                        let n = wait_stream(&mut s, name, t0)?;
                        return Ok(Times {
                            info,
                            js: Some(t0.elapsed()),
                            js_msgs: Some(n),
                        });
                    }
                    Ok(()) => return Err(format!("{prog} sent {buf:?}, not INFO").into()),
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        })();
        let _ = child.kill();
        let _ = child.wait();
        outcome
    }

    /// `loadgen startup`.
    pub fn run(args: &args::Args) -> Result<()> {
        let runs: usize = args.num_or("runs", 3)?;
        let server = args.str_or("server", "");
        let row = args.str_or("row", "startup");
        let js_stream = args.str_opt("js-stream");
        let mut ms = Vec::with_capacity(runs);
        let mut js_ms = Vec::new();
        let mut js_msgs = Vec::new();
        for _ in 0..runs.max(1) {
            let t = once(&args.trailing, js_stream.as_deref())?;
            ms.push(t.info.as_secs_f64() * 1e3);
            js_ms.extend(t.js.map(|d| d.as_secs_f64() * 1e3));
            js_msgs.extend(t.js_msgs);
        }
        let median = report::median(&mut ms.clone()).unwrap_or(f64::NAN);
        let mut record = serde_json::json!({
            "mode": "startup", "row": row, "server": server,
            "runs_ms": ms, "ms": median,
        });
        let mut human = format!(
            "{row:8} {server:12} median {median:.2} ms to INFO over {} runs ({ms:.2?})",
            ms.len()
        );
        if let (Some(js_median), Some(obj)) =
            (report::median(&mut js_ms.clone()), record.as_object_mut())
        {
            obj.insert("js_runs_ms".into(), js_ms.clone().into());
            obj.insert("js_ms".into(), js_median.into());
            obj.insert("js_msgs".into(), js_msgs.clone().into());
            human.push_str(&format!(
                "; {js_median:.2} ms to STREAM.INFO ({js_ms:.2?}), messages {js_msgs:?}"
            ));
        }
        emit(record, &human);
        Ok(())
    }
}

mod report {
    //! The `report` subcommand: JSON lines in, Markdown table out.

    use super::*;

    /// Which direction of a metric is better.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Better {
        /// Bigger numbers are better (throughput).
        Higher,
        /// Smaller numbers are better (latency, memory, size).
        Lower,
    }

    /// One table row: label, record `row` key, field, direction, display scale,
    /// target ratio (ours/baseline) and which servers the target applies to.
    struct RowSpec {
        /// Label in the table.
        label: &'static str,
        /// Value of the record's `row` field.
        row: &'static str,
        /// Numeric field of the record.
        field: &'static str,
        /// Which direction is better.
        better: Better,
        /// Divisor applied before display.
        scale: f64,
        /// Target ratio ours/baseline, if there is one.
        target: Option<f64>,
        /// Servers the target applies to (empty: all).
        target_for: &'static [&'static str],
    }

    /// Shorthand constructor for [`RowSpec`].
    const fn spec(
        label: &'static str,
        row: &'static str,
        field: &'static str,
        better: Better,
        scale: f64,
        target: Option<f64>,
        target_for: &'static [&'static str],
    ) -> RowSpec {
        RowSpec {
            label,
            row,
            field,
            better,
            scale,
            target,
            target_for,
        }
    }

    /// Uplink replay target: at least this many messages per second.
    const UPLINK_TARGET_RATE: f64 = 100_000.0;

    /// Uplink replay target: at least this many times the nats-server way's rate.
    const UPLINK_TARGET_RATIO: f64 = 2.0;

    /// The rows of the table, in order.
    const ROWS: &[RowSpec] = &[
        spec(
            "startup to first INFO (ms)",
            "startup",
            "ms",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "idle RSS (MiB)",
            "idle_rss",
            "kib",
            Better::Lower,
            1024.0,
            Some(1.0 / 3.0),
            &["leafd"],
        ),
        spec(
            "pub 16 B (M msgs/s)",
            "pub/16",
            "msgs_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "pub 128 B (M msgs/s)",
            "pub/128",
            "msgs_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "pubsub 1 sub 16 B (M deliveries/s)",
            "pubsub1/16",
            "deliveries_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "pubsub 1 sub 128 B (M deliveries/s)",
            "pubsub1/128",
            "deliveries_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "pubsub 4 subs 16 B (M deliveries/s)",
            "pubsub4/16",
            "deliveries_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "pubsub 4 subs 128 B (M deliveries/s)",
            "pubsub4/128",
            "deliveries_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "req/rep 16 B p50 (us)",
            "reqrep/16",
            "p50_us",
            Better::Lower,
            1.0,
            Some(1.0),
            &[],
        ),
        spec(
            "req/rep 16 B p90 (us)",
            "reqrep/16",
            "p90_us",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "req/rep 16 B p99 (us)",
            "reqrep/16",
            "p99_us",
            Better::Lower,
            1.0,
            Some(1.0),
            &[],
        ),
        spec(
            "JS sync publish 128 B (k msgs/s) †",
            "js-sync/128",
            "msgs_per_sec",
            Better::Higher,
            1e3,
            None,
            &[],
        ),
        spec(
            "JS sync publish 128 B, ack p50 (us) †",
            "js-sync/128",
            "p50_us",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "JS sync publish 128 B, ack p99 (us) †",
            "js-sync/128",
            "p99_us",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "JS async publish 128 B, 256 in flight (k msgs/s) †",
            "js-async/128",
            "msgs_per_sec",
            Better::Higher,
            1e3,
            None,
            &[],
        ),
        spec(
            "leaf link pub 128 B, leaf→hub (M deliveries/s) ‡",
            "leafpub/128",
            "deliveries_per_sec",
            Better::Higher,
            1e6,
            Some(1.2),
            &[],
        ),
        spec(
            "leaf link req/rep 128 B p50 (us) ‡",
            "leafrr/128",
            "p50_us",
            Better::Lower,
            1.0,
            Some(1.0),
            &[],
        ),
        spec(
            "leaf link req/rep 128 B p90 (us) ‡",
            "leafrr/128",
            "p90_us",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "leaf link req/rep 128 B p99 (us) ‡",
            "leafrr/128",
            "p99_us",
            Better::Lower,
            1.0,
            Some(1.0),
            &[],
        ),
        spec(
            "restart after SIGKILL, 1M-msg store: first INFO (ms)",
            "recovery",
            "ms",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "restart after SIGKILL, 1M-msg store: STREAM.INFO served (ms)",
            "recovery",
            "js_ms",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "Store::open after SIGKILL, 1M msgs (ms, store test)",
            "store_open",
            "ms",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "uplink backlog fill, JS async publish 128 B (k msgs/s) §",
            "uplink-fill",
            "msgs_per_sec",
            Better::Higher,
            1e3,
            None,
            &[],
        ),
        spec(
            "uplink replay of the backlog to the hub (k msgs/s) §",
            "uplink",
            "msgs_per_sec",
            Better::Higher,
            1e3,
            Some(UPLINK_TARGET_RATIO),
            &[],
        ),
        spec(
            "uplink replay: seconds from link up §",
            "uplink",
            "secs",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "uplink replay: seconds from hub start §",
            "uplink",
            "secs_from_start",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "uplink replay: leaf RSS at link up (MiB) §",
            "uplink",
            "rss_start_kib",
            Better::Lower,
            1024.0,
            None,
            &[],
        ),
        spec(
            "uplink replay: leaf RSS max during replay (MiB) §",
            "uplink",
            "rss_max_kib",
            Better::Lower,
            1024.0,
            None,
            &[],
        ),
        spec(
            "uplink replay: leaf CPU (s) §",
            "uplink",
            "leaf_cpu_secs",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "uplink replay: hub CPU (s) §",
            "uplink",
            "hub_cpu_secs",
            Better::Lower,
            1.0,
            None,
            &[],
        ),
        spec(
            "peak RSS (MiB)",
            "peak_rss",
            "kib",
            Better::Lower,
            1024.0,
            None,
            &[],
        ),
        spec(
            "binary size, stripped (MiB)",
            "binary",
            "bytes",
            Better::Lower,
            1048576.0,
            Some(0.5),
            &["leafd"],
        ),
    ];

    /// Median of `v` (sorts it); `None` if empty.
    pub fn median(v: &mut [f64]) -> Option<f64> {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => v.get(n / 2).copied(),
            _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
        }
    }

    /// Formats a number with a precision suited to its magnitude.
    fn fmt_num(x: f64) -> String {
        if !x.is_finite() {
            "n/a".into()
        } else if x >= 100.0 {
            format!("{x:.0}")
        } else if x >= 10.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        }
    }

    /// `loadgen report FILE [--baseline NAME]`.
    pub fn run(args: &args::Args) -> Result<()> {
        let Some(path) = args.positional.first() else {
            return Err("report: FILE missing".into());
        };
        let baseline = args.str_or("baseline", "nats-server");
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let records: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?;

        // Servers in order of first appearance.
        let mut servers: Vec<String> = Vec::new();
        for r in &records {
            if let Some(s) = r.get("server").and_then(|s| s.as_str()) {
                if !s.is_empty() && !servers.iter().any(|x| x == s) {
                    servers.push(s.to_owned());
                }
            }
        }
        let has_base = servers.contains(&baseline);

        // (server, row, field) -> values
        let mut values: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
        let mut notes: Vec<String> = Vec::new();
        for r in &records {
            let server = r.get("server").and_then(|v| v.as_str()).unwrap_or_default();
            let row = r.get("row").and_then(|v| v.as_str()).unwrap_or_default();
            if let Some(obj) = r.as_object() {
                for (k, v) in obj {
                    if let Some(x) = v.as_f64() {
                        values
                            .entry((server.to_owned(), row.to_owned(), k.clone()))
                            .or_default()
                            .push(x);
                    }
                }
            }
            let lost = r.get("lost").and_then(|v| v.as_u64()).unwrap_or(0);
            let errors: Vec<&str> = r
                .get("errors")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
                .unwrap_or_default();
            let error = r.get("error").and_then(|v| v.as_str());
            if lost > 0 || !errors.is_empty() || error.is_some() {
                let mut note = format!("{server} {row}:");
                if lost > 0 {
                    let exp = r.get("expected").and_then(|v| v.as_u64()).unwrap_or(0);
                    note.push_str(&format!(" lost {lost} of {exp}"));
                }
                if !errors.is_empty() {
                    note.push_str(&format!(" ({})", errors.join("; ")));
                }
                if let Some(e) = error {
                    note.push_str(&format!(" {e}"));
                }
                notes.push(note);
            }
        }

        let get = |server: &str, spec: &RowSpec| -> Option<f64> {
            let mut v = values
                .get(&(
                    server.to_owned(),
                    spec.row.to_owned(),
                    spec.field.to_owned(),
                ))?
                .clone();
            median(&mut v).map(|m| m / spec.scale)
        };

        let mut header = String::from("| metric |");
        let mut rule = String::from("|---|");
        for s in &servers {
            header.push_str(&format!(" {s} |"));
            rule.push_str("---:|");
            if has_base && *s != baseline {
                header.push_str(&format!(" {s} / {baseline} |"));
                rule.push_str("---:|");
            }
        }
        println!("{header}");
        println!("{rule}");
        for spec in ROWS {
            let mut line = format!("| {} |", spec.label);
            let base = get(&baseline, spec);
            for s in &servers {
                let v = get(s, spec);
                line.push_str(&format!(" {} |", v.map_or("n/a".into(), fmt_num)));
                if has_base && *s != baseline {
                    let cell = match (v, base) {
                        (Some(v), Some(b)) if b > 0.0 && v.is_finite() => {
                            let ratio = v / b;
                            let applies = spec.target_for.is_empty()
                                || spec.target_for.iter().any(|t| t == s);
                            let mark = match (spec.target, applies) {
                                (Some(t), true) => {
                                    let ok = match spec.better {
                                        Better::Higher => ratio >= t,
                                        Better::Lower => ratio <= t,
                                    };
                                    if ok {
                                        " ok"
                                    } else {
                                        " MISS"
                                    }
                                }
                                _ => "",
                            };
                            format!("{ratio:.2}x{mark}")
                        }
                        _ => "n/a".into(),
                    };
                    line.push_str(&format!(" {cell} |"));
                }
            }
            println!("{line}");
        }
        let has_row = |row: &str| values.keys().any(|(_, r, _)| r == row);
        if has_row("js-sync/128") || has_row("js-async/128") {
            println!();
            println!(
                "† nats-server 2.9 acknowledges a JetStream publish before any fsync; leafd and \
                 hubd send the PubAck only after the commit holding the message is fsynced. \
                 These ratios compare a durable server with a non-durable one."
            );
        }
        if has_row("leafpub/128") || has_row("leafrr/128") {
            println!();
            println!(
                "‡ Leaf link rows are pairs, leaf → hub: column nats-server = nats-server → \
                 nats-server, leafd = leafd → nats-server, hubd = leafd → hubd. Publisher and \
                 requester on the leaf, subscriber and responder on the hub."
            );
        }
        if has_row("uplink") {
            let backlog = records
                .iter()
                .filter(|r| r.get("row").and_then(|v| v.as_str()) == Some("uplink"))
                .find_map(|r| r.get("msgs").and_then(|v| v.as_u64()))
                .unwrap_or(0);
            let rates: Vec<String> = servers
                .iter()
                .filter(|s| **s != baseline)
                .filter_map(|s| {
                    let mut v = values
                        .get(&(s.clone(), "uplink".into(), "msgs_per_sec".into()))?
                        .clone();
                    let rate = median(&mut v)?;
                    let mark = if rate >= UPLINK_TARGET_RATE {
                        "ok"
                    } else {
                        "MISS"
                    };
                    Some(format!("{s} {:.1} k {mark}", rate / 1e3))
                })
                .collect();
            println!();
            println!(
                "§ Uplink rows: a backlog of {backlog} × 128 B stored on the leaf while its hub \
                 is down, replayed into hub stream HUB once the hub starts; seconds and msgs/s \
                 from the leaf link coming up. Pairs as ‡; the nats-server column is the \
                 nats-server way: a leaf with a JetStream domain, its stream sourced by the \
                 hub's stream. Targets: ≥ {:.0} k msgs/s ({}) and ≥ {UPLINK_TARGET_RATIO}× the \
                 nats-server way; the leaf's RSS flat during the replay.",
                UPLINK_TARGET_RATE / 1e3,
                if rates.is_empty() {
                    "n/a".to_owned()
                } else {
                    rates.join(", ")
                }
            );
        }
        if !notes.is_empty() {
            println!();
            println!("Problems seen during the run:");
            println!();
            for n in notes {
                println!("- {n}");
            }
        }
        Ok(())
    }
}

mod serial_feed {
    //! The `serial-feed` mode: a device writing lines into a serial port (the test end of
    //! a PTY pair) at a baud-rate-like pace, and a subscriber counting what arrives.

    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Interval between two paced writes.
    const TICK: Duration = Duration::from_millis(5);
    /// Time without a new message after which the run ends.
    const IDLE: Duration = Duration::from_secs(2);

    pub fn run(args: &args::Args) -> Result<()> {
        let url = args.str_or("url", "127.0.0.1:4222");
        let subject = args.str_or("subject", "sensors.>");
        let frames: u64 = args.num_or("frames", 14_400)?;
        let line_len: usize = args.num_or("line-len", 64)?;
        let bps: u64 = args.num_or("bps", 92_160)?;
        let server = args.str_or("server", "leafd");
        let pid: Option<u32> = args.str_opt("pid").map(|p| p.parse()).transpose()?;
        let peer = args.str_opt("peer");
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
}
