//! The `fleet` mode: many gateways replaying their backlogs into one hub at once, as a
//! fleet of leafd uplinks does when the WAN comes back (issue 24: the hub at fleet scale).
//!
//! Each gateway is one raw leafnode connection, as a nats-server 2.9 leaf (and leafd) opens
//! it: `INFO` from the hub, `CONNECT`, `LS+ _FLEET.<i>.>` (its acknowledgement inbox), `PING`,
//! established at the `PONG`. Once every gateway is up (the line `established N of M` goes to
//! `--ready-file`, so that the benchmark can read the hub's RSS with the connections idle),
//! and `--go-file` exists if one is given, all of them replay at once: gateway `i` sends
//! `--backlog` messages of `--size` bytes on `<prefix>.<i>.data`, each an `HMSG` with a
//! `Nats-Msg-Id` header and the reply subject `_FLEET.<i>.<n>`, keeping at most `--window`
//! unanswered, as leafd's uplink does. The hub's stream (created here through
//! `--client-url` before the replay: subjects `<prefix>.>`, file storage) answers each with a
//! PubAck that comes back over the link. A PubAck with an error (hubd's ingest bound is full)
//! is counted in `ack_errors` and its message sent again 100 ms later with the same
//! `Nats-Msg-Id`, as leafd's uplink resends; `acked` counts successful PubAcks only. The
//! replay ends when every message is acknowledged
//! (or `--timeout`); the record gives the aggregate ingest, the time until all were stored,
//! the per-gateway completion times, and the stream's message count afterwards (every
//! message exactly once).
//!
//! With `--storm`, the gateways then hold their links (`replayed` goes to `--ready-file`)
//! until the hub drops them (the benchmark restarts the hub), and reconnect as leafd does
//! (exponential backoff from 100 ms to a 10 s ceiling, each wait drawn from the upper half
//! of the ceiling). The record adds how long until every gateway was back, counted from the
//! first successful reconnection (the hub being up again), the attempts refused after that
//! moment, and the longest time one gateway waited after it.

use super::*;
use crate::args::num;
use crate::leaves::{classify, handshake_as, Classified, Incoming, Leaf, LineReader};
use crate::wire::{split_url, Credentials};
use async_nats::jetstream::{self, stream};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify, Semaphore};

/// At most this many handshakes under way at once (keeps the hub's accept backlog short).
const HANDSHAKES_AT_ONCE: usize = 64;

/// Errors kept in the record (the first ones; the rest are only counted).
const ERRORS_KEPT: usize = 5;

/// The first reconnection wait's ceiling, and the cap of the ceiling (leafd's defaults).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// How long a reconnecting gateway waits for the hub's handshake before it counts the
/// attempt as refused and backs off (leafd's link waits 2 s for each handshake step). Without
/// it, a connection the hub's full accept queue dropped after the client saw it established
/// waits for an INFO forever.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(2);

/// `loadgen fleet` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The hub's leafnode port (`[nats-leaf://][user:pass@]HOST:PORT`).
    #[arg(long)]
    url: String,
    /// The hub's client port, to create the stream and count it afterwards.
    #[arg(long = "client-url")]
    client_url: String,
    /// Gateways (leafnode connections).
    #[arg(long, default_value = "1000", value_parser = num::<usize>)]
    gateways: usize,
    /// Messages each gateway replays.
    #[arg(long, default_value = "500", value_parser = num::<u64>)]
    backlog: u64,
    /// Payload bytes per message.
    #[arg(long, default_value = "128", value_parser = num::<usize>)]
    size: usize,
    /// Unacknowledged messages each gateway keeps in flight.
    #[arg(long, default_value = "64", value_parser = num::<u64>)]
    window: u64,
    /// Subject prefix (and the stream's subjects `<prefix>.>`).
    #[arg(long, default_value = "fleet")]
    prefix: String,
    /// The stream's name.
    #[arg(long, default_value = "FLEET")]
    stream: String,
    /// Seconds allowed for connecting, and again for the replay, and for the storm.
    #[arg(long, default_value = "300", value_parser = num::<f64>)]
    timeout: f64,
    /// File written when the gateways are up (`established N of M`) and after the replay
    /// (`replayed N of M`).
    #[arg(long = "ready-file")]
    ready_file: Option<std::path::PathBuf>,
    /// Replay only once this file exists (polled every 10 ms).
    #[arg(long = "go-file")]
    go_file: Option<std::path::PathBuf>,
    /// After the replay, hold the links until the hub drops them, and time the reconnections.
    #[arg(long)]
    storm: bool,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// The row's name in the record (default `fleet`).
    #[arg(long)]
    row: Option<String>,
}

/// What one gateway did.
#[derive(Debug, Default)]
struct Gateway {
    /// Why it failed, if it did.
    error: Option<String>,
    /// Messages acknowledged.
    acked: u64,
    /// Acknowledgements carrying an error (each message sent again).
    ack_errors: u64,
    /// Seconds from the start of the replay to its last acknowledgement.
    done_secs: Option<f64>,
    /// Storm: when it was back, in seconds since the hub dropped it.
    back_after: Option<f64>,
    /// Storm: the instant it was back.
    back_at: Option<Instant>,
    /// Storm: the instants of its refused attempts.
    refused_at: Vec<Instant>,
}

/// `loadgen fleet`.
pub fn run(args: &Args) -> Result<()> {
    if args.gateways == 0 || args.backlog == 0 || args.window == 0 {
        return Err("--gateways, --backlog and --window must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(fleet(args))
}

async fn fleet(args: &Args) -> Result<()> {
    let client_url = format!(
        "nats://{}",
        args.client_url
            .strip_prefix("nats://")
            .unwrap_or(&args.client_url)
    );
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(client_url.as_str())
        .await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(&args.stream).await;
    js.create_stream(stream::Config {
        name: args.stream.clone(),
        subjects: vec![format!("{}.>", args.prefix)],
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create stream {}: {e}", args.stream))?;

    let (addr, url_creds) = split_url(&args.url);
    let addr = addr.to_owned();
    let timeout = Duration::from_secs_f64(args.timeout);
    let (go_tx, go_rx) = watch::channel::<Option<Instant>>(None);
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel::<bool>(args.gateways);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(args.gateways);
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let payload: Arc<[u8]> = vec![b'f'; args.size].into();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.gateways {
        let plan = Plan {
            addr: addr.clone(),
            creds: url_creds.clone(),
            i,
            backlog: args.backlog,
            window: args.window,
            prefix: args.prefix.clone(),
            payload: payload.clone(),
            timeout,
            storm: args.storm,
        };
        let (gate, up_tx, done_tx, go_rx) =
            (gate.clone(), up_tx.clone(), done_tx.clone(), go_rx.clone());
        tasks.spawn(async move { (i, gateway(plan, gate, up_tx, done_tx, go_rx).await) });
    }
    drop((up_tx, done_tx));

    // Every gateway reports once, up or not.
    let (mut up, mut reported) = (0usize, 0usize);
    while reported < args.gateways {
        match up_rx.recv().await {
            Some(ok) => {
                reported += 1;
                up += usize::from(ok);
            }
            None => break,
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "fleet: {up} of {} gateways up in {connect_secs:.2} s",
        args.gateways
    );
    write_ready(args, &format!("established {up} of {}", args.gateways))?;
    if let Some(go) = &args.go_file {
        let deadline = Instant::now() + timeout;
        while !go.exists() {
            if Instant::now() > deadline {
                return Err(format!("{} did not appear within {timeout:?}", go.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    // Every gateway that is up reports the end of its replay (or its failure).
    for _ in 0..up {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    let replay_secs = start.elapsed().as_secs_f64();
    write_ready(args, &format!("replayed {up} of {}", args.gateways))?;

    let mut gateways: Vec<Gateway> = (0..args.gateways).map(|_| Gateway::default()).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, gw) = joined.map_err(|e| format!("gateway task: {e}"))?;
        if let Some(slot) = gateways.get_mut(i) {
            *slot = gw;
        }
    }
    let stored = js
        .get_stream(&args.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", args.stream))?
        .info()
        .await
        .map_err(|e| format!("stream {} info: {e}", args.stream))?
        .state
        .messages;
    report(args, &gateways, up, connect_secs, replay_secs, stored);
    Ok(())
}

/// Writes `line` to `--ready-file`, if given.
fn write_ready(args: &Args, line: &str) -> Result<()> {
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{line}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The record and the human summary.
fn report(
    args: &Args,
    gateways: &[Gateway],
    up: usize,
    connect_secs: f64,
    replay_secs: f64,
    stored: u64,
) {
    let acked: u64 = gateways.iter().map(|g| g.acked).sum();
    let ack_errors: u64 = gateways.iter().map(|g| g.ack_errors).sum();
    let expected = args.backlog * args.gateways as u64;
    let mut done: Vec<f64> = gateways.iter().filter_map(|g| g.done_secs).collect();
    done.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if done.is_empty() {
            return f64::NAN;
        }
        let idx = ((done.len() - 1) as f64 * p).round() as usize;
        done.get(idx).copied().unwrap_or(f64::NAN)
    };
    let errors: Vec<String> = gateways
        .iter()
        .filter_map(|g| g.error.clone())
        .take(ERRORS_KEPT)
        .collect();
    let failed = gateways.iter().filter(|g| g.error.is_some()).count();
    let storm = args.storm.then(|| storm_summary(gateways));
    let mut record = serde_json::json!({
        "mode": "fleet", "row": args.row.clone().unwrap_or("fleet".into()),
        "server": args.server, "gateways": args.gateways, "backlog": args.backlog,
        "size": args.size, "window": args.window, "established": up,
        "connect_secs": connect_secs, "replay_secs": replay_secs,
        "msgs_per_sec": acked as f64 / replay_secs, "acked": acked, "expected": expected,
        "ack_errors": ack_errors, "stored": stored,
        "gateway_done_p50_secs": pct(0.5), "gateway_done_p99_secs": pct(0.99),
        "gateway_done_max_secs": pct(1.0), "failed": failed, "errors": errors,
    });
    // The storm's figures at the top level, as `storm_<key>` (the report reads top-level keys).
    if let (Some(serde_json::Value::Object(storm)), Some(out)) = (&storm, record.as_object_mut()) {
        for (k, v) in storm {
            out.insert(format!("storm_{k}"), v.clone());
        }
    }
    let human = format!(
        "fleet    {:12} {up}/{} up in {connect_secs:.2} s; {acked}/{expected} acked in \
         {replay_secs:.2} s ({:.0} msgs/s; {ack_errors} refused and sent again), stream holds \
         {stored}; gateways done p50 {:.2} s, max {:.2} s{}{}",
        args.server,
        args.gateways,
        acked as f64 / replay_secs,
        pct(0.5),
        pct(1.0),
        storm
            .as_ref()
            .map(|s| format!("; storm {s}"))
            .unwrap_or_default(),
        if errors.is_empty() {
            String::new()
        } else {
            format!("  errors ({failed}): {}", errors.join("; "))
        }
    );
    emit(record, &human);
}

/// The storm's figures: gateways back, seconds from the first one back (the hub is up again)
/// to the last, attempts refused after the first was back, and the longest outage of one
/// gateway (hub restart included).
fn storm_summary(gateways: &[Gateway]) -> serde_json::Value {
    let first_back = gateways.iter().filter_map(|g| g.back_at).min();
    let back = gateways.iter().filter(|g| g.back_at.is_some()).count();
    let (all_back_secs, refused_after) = match first_back {
        Some(first) => {
            let last = gateways
                .iter()
                .filter_map(|g| g.back_at)
                .max()
                .unwrap_or(first);
            let refused = gateways
                .iter()
                .flat_map(|g| g.refused_at.iter())
                .filter(|t| **t > first)
                .count();
            (last.duration_since(first).as_secs_f64(), refused)
        }
        None => (f64::NAN, 0),
    };
    let mut outage: Vec<f64> = gateways.iter().filter_map(|g| g.back_after).collect();
    outage.sort_by(f64::total_cmp);
    serde_json::json!({
        "back": back, "all_back_secs": all_back_secs, "refused_after_hub_up": refused_after,
        "outage_max_secs": outage.last().copied().unwrap_or(f64::NAN),
    })
}

/// What one gateway does.
struct Plan {
    addr: String,
    creds: Option<Credentials>,
    i: usize,
    backlog: u64,
    window: u64,
    prefix: String,
    payload: Arc<[u8]>,
    timeout: Duration,
    storm: bool,
}

/// One gateway: connects, replays on the go signal, and with `storm` reconnects after the
/// hub drops it.
async fn gateway(
    plan: Plan,
    gate: Arc<Semaphore>,
    up_tx: tokio::sync::mpsc::Sender<bool>,
    done_tx: tokio::sync::mpsc::Sender<()>,
    mut go_rx: watch::Receiver<Option<Instant>>,
) -> Gateway {
    let mut gw = Gateway::default();
    let name = format!("fleet-gw-{}", plan.i);
    let inbox = format!("_FLEET.{}.>", plan.i);
    let connected = tokio::time::timeout(plan.timeout, async {
        let _permit = gate.acquire().await;
        handshake_as(&plan.addr, &name, plan.i, &inbox, plan.creds.as_ref()).await
    })
    .await;
    let leaf = match connected {
        Ok(Ok(leaf)) => leaf,
        Ok(Err(e)) => {
            let _ = up_tx.send(false).await;
            gw.error = Some(format!("gateway {}: not established: {e}", plan.i));
            return gw;
        }
        Err(_) => {
            let _ = up_tx.send(false).await;
            gw.error = Some(format!(
                "gateway {}: no PONG within {:?}",
                plan.i, plan.timeout
            ));
            return gw;
        }
    };
    let _ = up_tx.send(true).await;
    let start = loop {
        if let Some(start) = *go_rx.borrow_and_update() {
            break start;
        }
        if go_rx.changed().await.is_err() {
            return gw;
        }
    };
    let leaf = match tokio::time::timeout(plan.timeout, replay(&plan, leaf, &mut gw)).await {
        Ok(Ok(leaf)) => {
            gw.done_secs = Some(start.elapsed().as_secs_f64());
            Some(leaf)
        }
        Ok(Err(e)) => {
            gw.error = Some(format!("gateway {}: replay: {e}", plan.i));
            None
        }
        Err(_) => {
            gw.error = Some(format!(
                "gateway {}: {} of {} acknowledged within {:?}",
                plan.i, gw.acked, plan.backlog, plan.timeout
            ));
            None
        }
    };
    let _ = done_tx.send(()).await;
    if let (true, Some(leaf)) = (plan.storm, leaf) {
        storm(&plan, leaf, &name, &inbox, &mut gw).await;
    }
    gw
}

/// How long a gateway waits before sending again what the hub refused (an error PubAck:
/// its ingest bound is full), as leafd's uplink backs off before it resends.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// What the writer and the reader of one replaying gateway share.
#[derive(Default)]
struct Progress {
    /// Successful PubAcks.
    acked: std::sync::atomic::AtomicU64,
    /// PubAcks carrying an error (each message is sent again).
    ack_errors: std::sync::atomic::AtomicU64,
    /// The sequence numbers refused, to send again (same `Nats-Msg-Id`).
    refused: std::sync::Mutex<Vec<u64>>,
    /// The hub sent a `PING`: the writer answers it.
    pong: AtomicBool,
    /// Wakes the writer.
    wake: Notify,
}

impl Progress {
    /// PubAcks received, successful or not.
    fn answered(&self) -> u64 {
        self.acked.load(Ordering::Acquire) + self.ack_errors.load(Ordering::Acquire)
    }
}

/// Appends message `seq` of gateway `plan.i` (an `HMSG` with its `Nats-Msg-Id`) to `buf`.
fn encode(plan: &Plan, seq: u64, buf: &mut Vec<u8>) {
    let headers = format!("NATS/1.0\r\nNats-Msg-Id: fleet-{}-{seq}\r\n\r\n", plan.i);
    let total = headers.len() + plan.payload.len();
    buf.extend_from_slice(
        format!(
            "HMSG {}.{}.data _FLEET.{}.{seq} {} {total}\r\n{headers}",
            plan.prefix,
            plan.i,
            plan.i,
            headers.len()
        )
        .as_bytes(),
    );
    buf.extend_from_slice(&plan.payload);
    buf.extend_from_slice(b"\r\n");
}

/// Sends the backlog keeping at most `window` unanswered, sends again (after
/// [`RETRY_DELAY`]) what the hub refused; returns the link once every message is
/// acknowledged.
async fn replay(plan: &Plan, leaf: Leaf, gw: &mut Gateway) -> Result<Leaf> {
    let Leaf { read, mut write } = leaf;
    let progress = Arc::new(Progress::default());
    let reader = tokio::spawn(read_acks(read, plan.i, plan.backlog, progress.clone()));
    let mut next = 0u64;
    let mut transmissions = 0u64;
    let mut last_retry = Instant::now();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let in_flight = |t: u64| t.saturating_sub(progress.answered());
        if last_retry.elapsed() >= RETRY_DELAY {
            let mut refused = std::mem::take(
                &mut *progress
                    .refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            refused.sort_unstable();
            let mut again = refused.into_iter();
            while in_flight(transmissions) < plan.window {
                let Some(seq) = again.next() else { break };
                encode(plan, seq, &mut buf);
                transmissions += 1;
            }
            let rest: Vec<u64> = again.collect();
            if !rest.is_empty() {
                progress
                    .refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(rest);
            }
            last_retry = Instant::now();
        }
        while next < plan.backlog && in_flight(transmissions) < plan.window {
            encode(plan, next, &mut buf);
            next += 1;
            transmissions += 1;
        }
        if progress.pong.swap(false, Ordering::AcqRel) {
            buf.extend_from_slice(b"PONG\r\n");
        }
        if !buf.is_empty() {
            write.write_all(&buf).await?;
            buf.clear();
        }
        if progress.acked.load(Ordering::Acquire) >= plan.backlog || reader.is_finished() {
            break;
        }
        let retry_due = !progress
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
        tokio::select! {
            () = progress.wake.notified() => {}
            () = tokio::time::sleep(RETRY_DELAY), if retry_due => {}
        }
    }
    gw.acked = progress.acked.load(Ordering::Acquire);
    gw.ack_errors = progress.ack_errors.load(Ordering::Acquire);
    let read = reader.await.map_err(|e| format!("reader task: {e}"))??;
    Ok(Leaf { read, write })
}

/// Reads the hub's side during the replay: counts acknowledgements on `_FLEET.<i>.` (a
/// refusal puts its sequence number up to be sent again), asks for a `PONG` on each `PING`,
/// and returns the reader once `backlog` messages are acknowledged.
async fn read_acks(
    mut read: LineReader,
    i: usize,
    backlog: u64,
    progress: Arc<Progress>,
) -> Result<LineReader> {
    let inbox = format!("_FLEET.{i}.");
    while progress.acked.load(Ordering::Acquire) < backlog {
        let line = match read.line().await {
            Ok(line) => line,
            Err(e) => {
                progress.wake.notify_one();
                return Err(e);
            }
        };
        match classify(&line)? {
            Classified::Op(Incoming::Ping) => {
                progress.pong.store(true, Ordering::Release);
                progress.wake.notify_one();
            }
            Classified::Op(Incoming::Err(e)) => {
                progress.wake.notify_one();
                return Err(format!("hub said {e}").into());
            }
            Classified::Op(_) => {}
            Classified::Payload(n) => {
                let body = read.exact(n + 2).await?;
                let subject = line.split(' ').nth(1).unwrap_or_default();
                if let Some(seq) = subject.strip_prefix(&inbox) {
                    if String::from_utf8_lossy(&body).contains("\"error\"") {
                        if let Ok(seq) = seq.parse::<u64>() {
                            progress
                                .refused
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(seq);
                        }
                        progress.ack_errors.fetch_add(1, Ordering::AcqRel);
                    } else {
                        progress.acked.fetch_add(1, Ordering::AcqRel);
                    }
                    progress.wake.notify_one();
                }
            }
        }
    }
    progress.wake.notify_one();
    Ok(read)
}

/// Holds the link (answering `PING`s) until the hub drops it, then reconnects as leafd does
/// and notes when the gateway is back and which attempts were refused.
async fn storm(plan: &Plan, mut leaf: Leaf, name: &str, inbox: &str, gw: &mut Gateway) {
    let deadline = Instant::now() + plan.timeout;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), leaf.read.line()).await;
        match next {
            Err(_) => {
                gw.error = Some(format!(
                    "gateway {}: the hub never dropped the link",
                    plan.i
                ));
                return;
            }
            Ok(Err(_)) => break,
            Ok(Ok(line)) => match classify(&line) {
                Ok(Classified::Op(Incoming::Ping)) => {
                    if leaf.write.write_all(b"PONG\r\n").await.is_err() {
                        break;
                    }
                }
                Ok(Classified::Payload(n)) => {
                    if leaf.read.skip(n + 2).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    let dropped = Instant::now();
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(backoff(failures)).await;
        if Instant::now() > deadline + plan.timeout {
            gw.error = Some(format!(
                "gateway {}: not back within {:?}",
                plan.i, plan.timeout
            ));
            return;
        }
        let attempt = tokio::time::timeout(
            HANDSHAKE_LIMIT,
            handshake_as(&plan.addr, name, plan.i, inbox, plan.creds.as_ref()),
        );
        match attempt
            .await
            .unwrap_or_else(|_| Err("handshake timed out".into()))
        {
            Ok(_) => {
                let now = Instant::now();
                gw.back_at = Some(now);
                gw.back_after = Some(now.duration_since(dropped).as_secs_f64());
                return;
            }
            Err(_) => {
                gw.refused_at.push(Instant::now());
                failures += 1;
            }
        }
    }
}

/// leafd's reconnection wait before attempt `failures` (0-based): a ceiling from 100 ms
/// doubling to 10 s, the wait drawn from its upper half.
fn backoff(failures: u32) -> Duration {
    let ceiling = RECONNECT_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(RECONNECT_MAX);
    let half = ceiling / 2;
    let extra = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(fastrand::u64(..=extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_leafd() {
        for _ in 0..100 {
            let first = backoff(0);
            assert!(first >= Duration::from_millis(50) && first <= RECONNECT_MIN);
            let late = backoff(40);
            assert!(late >= RECONNECT_MAX / 2 && late <= RECONNECT_MAX);
        }
    }
}
