//! The `reqrep` mode: sequential request/reply latency via async-nats.

use super::*;
use crate::args::{num, DEFAULT_URL};
use futures::StreamExt;

/// `loadgen reqrep` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The server the requester connects to (`HOST:PORT`).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// Payload bytes per request.
    #[arg(long, default_value = "16", value_parser = num::<usize>)]
    size: usize,
    /// Requests measured.
    #[arg(long, default_value = "20000", value_parser = num::<usize>)]
    msgs: usize,
    /// Requests sent before measuring.
    #[arg(long, default_value = "1000", value_parser = num::<usize>)]
    warmup: usize,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// Runtime threads (0: one current-thread tokio runtime for both ends).
    #[arg(long, default_value = "0", value_parser = num::<usize>)]
    threads: usize,
    /// The server the responder connects to (a hub behind the requester's leaf); requests
    /// are retried until one gets through first. Default: `--url`.
    #[arg(long = "responder-url")]
    responder_url: Option<String>,
    /// The row's name in the record (default `reqrep/<size>`).
    #[arg(long)]
    row: Option<String>,
    /// The pair of servers in the record.
    #[arg(long, default_value = "")]
    pair: String,
}

/// `loadgen reqrep`.
pub fn run(args: &Args) -> Result<()> {
    let url = args.url.clone();
    let size = args.size;
    let msgs = args.msgs;
    let warmup = args.warmup;
    let server = args.server.clone();
    let threads = args.threads;
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
    let responder_url = args.responder_url.clone().unwrap_or_else(|| url.clone());
    let (mut lat_ns, probe_ms) = rt.block_on(measure(&url, &responder_url, size, msgs, warmup))?;
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
            "mode": "reqrep", "row": args.row.clone().unwrap_or(format!("reqrep/{size}")),
            "server": server, "pair": args.pair,
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
            return Err(format!("reply of {} bytes, expected {size}", reply.payload.len()).into());
        }
    }
    task.abort();
    Ok((lat, probe_ms))
}
