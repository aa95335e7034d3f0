//! The `await-stream` mode: times a stream on a just-started hub filling up to a
//! message count, i.e. a backlog replayed over a leaf link (an uplink's, or a
//! stream sourcing from the leaf's JetStream).
//!
//! The clock that counts starts when the leaf link is up: a subscriber on the leaf
//! receives a probe published on the hub. Before that the leaf is only waiting
//! for its reconnect timer (1 s granularity in nats-server, configurable in
//! leafd), which is reported apart (`link_secs`).

use super::*;
use crate::args::{num, DEFAULT_URL};
use futures::StreamExt;

/// `loadgen await-stream` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The hub's client address (`HOST:PORT`).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// The leaf's client address: the time counts from a probe published on the hub
    /// reaching a subscriber there (the link is up).
    #[arg(long = "leaf-url")]
    leaf_url: Option<String>,
    /// The hub stream to watch.
    #[arg(long, default_value = "HUB")]
    stream: String,
    /// Message count that ends the wait.
    #[arg(long, default_value = "1000000", value_parser = num::<u64>)]
    msgs: u64,
    /// Seconds before giving up.
    #[arg(long, default_value = "300", value_parser = num::<f64>)]
    timeout: f64,
    /// Create the hub stream sourcing this stream first (with `--source-api`).
    #[arg(long)]
    source: Option<String>,
    /// The JetStream API prefix of `--source` (`$JS.<domain>.API`).
    #[arg(long = "source-api")]
    source_api: Option<String>,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// The row's name in the record.
    #[arg(long, default_value = "uplink")]
    row: String,
    /// The leaf's process: its RSS and CPU time are sampled (ignored unless a number).
    #[arg(long = "leaf-pid")]
    leaf_pid: Option<String>,
    /// The hub's process: its CPU time is sampled (ignored unless a number).
    #[arg(long = "hub-pid")]
    hub_pid: Option<String>,
    /// The pair of servers in the record.
    #[arg(long, default_value = "")]
    pair: String,
}

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
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), sub.next()).await {
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
pub fn run(args: &Args) -> Result<()> {
    let source = match (args.source.clone(), args.source_api.clone()) {
        (Some(name), Some(api)) => Some((name, api)),
        (None, None) => None,
        _ => return Err("--source and --source-api go together".into()),
    };
    let spec = Spec {
        url: args.url.clone(),
        leaf_url: args.leaf_url.clone(),
        stream: args.stream.clone(),
        msgs: args.msgs,
        limit: Duration::from_secs_f64(args.timeout),
        source,
    };
    let server = args.server.clone();
    let row = args.row.clone();
    let leaf_pid: Option<u32> = args.leaf_pid.as_ref().and_then(|p| p.parse().ok());
    let hub_pid: Option<u32> = args.hub_pid.as_ref().and_then(|p| p.parse().ok());
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
        "mode": "await-stream", "row": row, "server": server, "pair": args.pair,
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
        if let (Some(&start), Some(&max), Some(&end)) = (rss.first(), rss.iter().max(), rss.last())
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
