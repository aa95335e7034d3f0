//! The `js` mode: JetStream publish throughput and acknowledgement latency,
//! through async-nats, followed by a `STREAM.INFO` check of what was stored.

use super::*;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use std::collections::VecDeque;

use crate::args::{num, DEFAULT_URL};

/// `loadgen js` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The server (`HOST:PORT`).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// `sync` (one publish at a time: PubAck latency) or `async` (`--inflight` at a time).
    #[arg(long, default_value = "sync")]
    mode: String,
    /// Payload bytes per message.
    #[arg(long, default_value = "128", value_parser = num::<usize>)]
    size: usize,
    /// Messages measured.
    #[arg(long, default_value = "3000", value_parser = num::<u64>)]
    msgs: u64,
    /// Messages published before measuring.
    #[arg(long, default_value = "100", value_parser = num::<u64>)]
    warmup: u64,
    /// Publishes in flight (`async`).
    #[arg(long, default_value = "256", value_parser = num::<usize>)]
    inflight: usize,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// `true`: (re)create the stream on `bench.>`; `false`: publish into an existing one (an
    /// uplink's `UPLINK_<name>`).
    #[arg(long, default_value = "true")]
    create: String,
    /// The stream.
    #[arg(long, default_value = STREAM)]
    stream: String,
    /// The row's name in the record (default `js-<mode>/<size>`).
    #[arg(long)]
    row: Option<String>,
    /// Replicas of the stream loadgen creates (`num_replicas`; > 1 needs a JetStream
    /// cluster). With more than one, loadgen first waits (bounded) until the cluster
    /// creates the stream and acknowledges a publish: a new cluster elects its leaders first.
    #[arg(long, default_value = "1", value_parser = num::<usize>)]
    replicas: usize,
    /// `true`: afterwards, read the whole stream back through an ephemeral pull consumer
    /// (no acks, batches of `--inflight`) and emit a second record, row `<row>-pull`.
    #[arg(long, default_value = "false")]
    pull: String,
}

/// Default name of the benchmark stream (subjects `bench.>`).
pub const STREAM: &str = "BENCH";

/// Where the run publishes: which stream, whether loadgen (re)creates it (with how many
/// replicas) and reads it back.
struct Target {
    /// Stream name (`--stream`, default [`STREAM`]).
    stream: String,
    /// `--create true` (default): delete and create the stream on `bench.>`;
    /// `false`: use a stream that already exists (e.g. an uplink's `UPLINK_<name>`).
    create: bool,
    /// `num_replicas` of a created stream.
    replicas: usize,
    /// `--pull true`: read the stream back afterwards through a pull consumer.
    read_back: bool,
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
pub fn run(args: &Args) -> Result<()> {
    let url = args.url.clone();
    let mode = args.mode.clone();
    let size = args.size;
    let msgs = args.msgs;
    let warmup = args.warmup;
    let inflight = args.inflight;
    let server = args.server.clone();
    if mode != "sync" && mode != "async" {
        return Err(format!("--mode must be sync or async, not {mode:?}").into());
    }
    let pull = match args.pull.as_str() {
        "true" | "yes" => true,
        "false" | "no" => false,
        other => return Err(format!("--pull must be true or false, not {other:?}").into()),
    };
    let create = args.create.clone();
    let target = Target {
        stream: args.stream.clone(),
        create: match create.as_str() {
            "true" | "yes" => true,
            "false" | "no" => false,
            _ => return Err(format!("--create must be true or false, not {create:?}").into()),
        },
        replicas: args.replicas.max(1),
        read_back: pull,
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu0 = cpu_secs();
    let (out, stored, read) = rt.block_on(measure(
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
    let row = args.row.clone().unwrap_or(format!("js-{mode}/{size}"));
    let mut record = serde_json::json!({
        "mode": "js", "row": row, "server": server, "replicas": target.replicas,
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
    if let Some(read) = read {
        let rate = read.msgs as f64 / read.secs;
        let mut errors = Vec::new();
        if read.msgs != stored {
            errors.push(format!(
                "read {} of the stream's {stored} messages",
                read.msgs
            ));
        }
        let record = serde_json::json!({
            "mode": "js", "row": format!("{row}-pull"), "server": server,
            "replicas": target.replicas, "stream": target.stream, "size": size,
            "msgs": read.msgs, "batch": inflight, "secs": read.secs, "msgs_per_sec": rate,
            "errors": errors,
        });
        let human = format!(
            "js-pull   {server:12} size {size:4} B  {} msgs in {:.3} s = {:.1} k msgs/s{}",
            read.msgs,
            read.secs,
            rate / 1e3,
            if errors.is_empty() {
                String::new()
            } else {
                format!("  errors: {}", errors.join("; "))
            }
        );
        emit(record, &human);
    }
    Ok(())
}

/// What reading the stream back through a pull consumer measured.
struct Read {
    /// Messages received.
    msgs: u64,
    /// Wall time from the consumer's creation to the last message.
    secs: f64,
}

/// Upper bound on waiting for a new cluster to create the stream and acknowledge a publish.
const CLUSTER_READY_LIMIT: Duration = Duration::from_secs(60);

/// Creates the stream, retrying while a JetStream cluster is not ready yet (no meta leader,
/// no stream leader: errors or timeouts), until a publish is acknowledged.
async fn create_when_ready(
    ctx: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream> {
    let deadline = Instant::now() + CLUSTER_READY_LIMIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match ctx.get_or_create_stream(config.clone()).await {
            Ok(stream) => {
                match async { ctx.publish("bench.ready", "".into()).await?.await }.await {
                    Ok(_) => return Ok(stream),
                    Err(e) => last = format!("first publish: {e}"),
                }
            }
            Err(e) => last = format!("create stream {}: {e}", config.name),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("the cluster was not ready within {CLUSTER_READY_LIMIT:?}: {last}").into())
}

/// Reads every message of `stream` through an ephemeral pull consumer without acks, in
/// batches of `batch`, until `expected` arrived or the stream stays quiet for 5 s.
async fn read_back(stream: &stream::Stream, expected: u64, batch: usize) -> Result<Read> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let t0 = Instant::now();
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create pull consumer: {e}"))?;
    let mut msgs = 0u64;
    while msgs < expected {
        let want = usize::try_from(expected - msgs).unwrap_or(batch).min(batch);
        let mut batch = consumer
            .fetch()
            .max_messages(want)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| format!("fetch: {e}"))?;
        let before = msgs;
        while let Some(m) = batch.next().await {
            m.map_err(|e| format!("fetch: {e}"))?;
            msgs += 1;
        }
        if msgs == before {
            break; // quiet for a whole fetch: the count tells what is missing
        }
    }
    Ok(Read {
        msgs,
        secs: t0.elapsed().as_secs_f64(),
    })
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
) -> Result<(Outcome, u64, Option<Read>)> {
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
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec!["bench.>".to_owned()],
            num_replicas: target.replicas,
            ..Default::default()
        };
        if target.replicas > 1 {
            create_when_ready(&ctx, config).await?
        } else {
            ctx.create_stream(config)
                .await
                .map_err(|e| format!("create stream {name}: {e}"))?
        }
    } else {
        ctx.get_stream(name)
            .await
            .map_err(|e| format!("stream {name} (expected to exist): {e}"))?
    };
    // A created replicated stream holds its one readiness probe before the run: not
    // counted in `stored` (not read back either: the member answering may not have applied
    // it yet). An existing stream's earlier messages are counted: `stored` is then what the
    // stream holds in all (`scripts/arm-smoke` checks that total after a restart).
    let before = u64::from(target.create && target.replicas > 1);
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
    let mut stored = stream_messages(&mut stream).await?;
    // A member of a cluster answers from its copy, which may trail the PubAcks by a
    // heartbeat: wait (bounded) for it to hold what was acknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.replicas > 1 && stored < out.acked + before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = stream_messages(&mut stream).await?;
    }
    let stored = stored.saturating_sub(before);
    let read = if target.read_back {
        // Everything the stream holds, the probe included, is read back and counted.
        let mut read = read_back(&stream, stored + before, inflight).await?;
        read.msgs = read.msgs.saturating_sub(before);
        Some(read)
    } else {
        None
    };
    Ok((out, stored, read))
}

/// The number of messages `STREAM.INFO` reports.
async fn stream_messages(stream: &mut stream::Stream) -> Result<u64> {
    Ok(stream
        .info()
        .await
        .map_err(|e| format!("stream info: {e}"))?
        .state
        .messages)
}
