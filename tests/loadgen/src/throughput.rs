//! The `pub` and `pubsub` modes.

use super::*;
use crate::args::{num, DEFAULT_URL};
use wire::{Credentials, Reader};

/// `loadgen pub` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct PubArgs {
    /// The server (`HOST:PORT`).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// Payload bytes per message.
    #[arg(long, default_value = "16", value_parser = num::<usize>)]
    size: usize,
    /// Messages to publish.
    #[arg(long, default_value = "5000000", value_parser = num::<u64>)]
    msgs: u64,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
}

/// `loadgen pubsub` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct PubsubArgs {
    /// The server the publisher connects to (`HOST:PORT`).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// The server the subscribers connect to (a hub behind the publisher's leaf): probes
    /// are sent until interest has arrived. Default: `--url`.
    #[arg(long = "sub-url")]
    sub_url: Option<String>,
    /// Payload bytes per message.
    #[arg(long, default_value = "16", value_parser = num::<usize>)]
    size: usize,
    /// Messages to publish.
    #[arg(long, default_value = "2000000", value_parser = num::<u64>)]
    msgs: u64,
    /// Subscribers, each on its own connection.
    #[arg(long, default_value = "1", value_parser = num::<usize>)]
    subs: usize,
    /// Seconds of quiet after which the stream is over.
    #[arg(long, default_value = "2", value_parser = num::<f64>)]
    idle: f64,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// The row's name in the record (default `pubsub<subs>/<size>`).
    #[arg(long)]
    row: Option<String>,
    /// The pair of servers in the record.
    #[arg(long, default_value = "")]
    pair: String,
    /// User name the publisher and the subscribers log in with (unless their URL carries
    /// credentials, `nats://user:password@host:port`).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password of `--user`.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// A bystander: a subscriber on the same subject logged in (credentials in the URL) as a
    /// user of another account. It subscribes before the publisher starts and must receive
    /// nothing; anything it gets is reported as an error. Repeatable.
    #[arg(long = "other-sub")]
    other_sub: Vec<String>,
}

/// A bystander subscriber (`--other-sub`): its connection and what it was given.
struct Bystander {
    /// The URL it connected to (credentials left out).
    addr: String,
    /// Its connection and reader.
    conn: (TcpStream, Reader),
}

impl Bystander {
    /// Connects to `url`, subscribes to [`SUBJECT`] and waits for the server's `PONG`.
    fn subscribe(url: &str) -> Result<Bystander> {
        let (mut stream, mut reader) = wire::connect(url)?;
        stream.write_all(format!("SUB {SUBJECT} 1\r\nPING\r\n").as_bytes())?;
        reader.wait_pong(&mut stream)?;
        let addr = wire::split_url(url).0.to_owned();
        Ok(Bystander {
            addr,
            conn: (stream, reader),
        })
    }

    /// Round-trips a `PING` and returns how many messages arrived since the subscription.
    fn received(self) -> Result<u64> {
        let (mut stream, mut reader) = self.conn;
        stream.write_all(b"PING\r\n")?;
        reader.wait_pong(&mut stream)
    }
}

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
pub fn run_pub(args: &PubArgs) -> Result<()> {
    let url = args.url.clone();
    let size = args.size;
    let msgs = args.msgs;
    let server = args.server.clone();
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
    creds: Option<&Credentials>,
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
        let (mut stream, mut reader) = wire::connect_as(url, creds)?;
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
pub fn run_pubsub(args: &PubsubArgs) -> Result<()> {
    let url = args.url.clone();
    let sub_url = args.sub_url.clone().unwrap_or_else(|| url.clone());
    let probe_needed = sub_url != url;
    let size = args.size;
    let msgs = args.msgs;
    let subs = args.subs;
    let idle = Duration::from_secs_f64(args.idle);
    let server = args.server.clone();
    if subs == 0 {
        return Err("--subs must be at least 1".into());
    }
    let creds = args.user.clone().zip(args.password.clone());
    let creds = creds.map(|(user, pass)| Credentials { user, pass });
    // Bystanders first: their interest exists before any message is published.
    let bystanders = args
        .other_sub
        .iter()
        .map(|u| Bystander::subscribe(u).map_err(|e| format!("--other-sub: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;

    let shared = Arc::new(Shared {
        pub_done: AtomicBool::new(false),
        pub_failed: AtomicBool::new(false),
        probed: AtomicUsize::new(0),
    });
    let ready = Arc::new(Barrier::new(subs + 1));
    let start = Arc::new(std::sync::OnceLock::new());
    let handles: Vec<_> = (1..=subs)
        .map(|sid| {
            let (url, creds, ready, start, shared) = (
                sub_url.clone(),
                creds.clone(),
                ready.clone(),
                start.clone(),
                shared.clone(),
            );
            thread::Builder::new()
                .name(format!("sub-{sid}"))
                .spawn(move || {
                    let creds = creds.as_ref();
                    subscriber(
                        &url,
                        creds,
                        sid,
                        probe_needed,
                        msgs,
                        idle,
                        &ready,
                        &start,
                        &shared,
                    )
                })
        })
        .collect::<std::io::Result<_>>()?;

    let conn = wire::connect_as(&url, creds.as_ref());
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
    let mut other_received = Vec::new();
    for b in bystanders {
        let addr = b.addr.clone();
        match b.received() {
            Ok(0) => other_received.push(0),
            Ok(n) => {
                other_received.push(n);
                errors.push(format!(
                    "--other-sub {addr} (another account) received {n} messages"
                ));
            }
            Err(e) => errors.push(format!("--other-sub {addr}: {e}")),
        }
    }
    let per_sub: Vec<u64> = results.iter().map(|r| r.received).collect();
    let row = args.row.clone().unwrap_or(format!("pubsub{subs}/{size}"));
    let pair = args.pair.clone();
    emit(
        serde_json::json!({
            "mode": "pubsub", "row": row, "server": server, "pair": pair,
            "url": url, "sub_url": sub_url, "probe_ms": probe_ms,
            "subs": subs, "size": size, "msgs": msgs, "expected": expected,
            "received": received, "lost": lost, "per_sub": per_sub,
            "secs": secs, "pub_secs": pub_secs,
            "deliveries_per_sec": rate, "pub_msgs_per_sec": msgs as f64 / pub_secs,
            "user": args.user, "other_subs": args.other_sub.len(),
            "other_received": other_received, "errors": errors,
        }),
        &format!(
            "pubsub   {server:12} size {size:4} B  subs {subs}  {received}/{expected} delivered in {secs:.3} s = {:.3} M deliveries/s, lost {lost}{}",
            rate / 1e6,
            if errors.is_empty() { String::new() } else { format!("  errors: {}", errors.join("; ")) }
        ),
    );
    Ok(())
}
