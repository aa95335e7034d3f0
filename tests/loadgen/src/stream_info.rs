//! The `stream-info` mode: the state of one stream, optionally checked against
//! an expected message count (e.g. after a server restart on the same store).

use super::*;
use crate::args::{num, DEFAULT_URL};

/// `loadgen stream-info` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The server (`HOST:PORT`).
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// The stream (required).
    #[arg(long)]
    stream: Option<String>,
    /// Retry until the stream exists and holds exactly this many messages.
    #[arg(long, value_parser = num::<u64>)]
    expect: Option<u64>,
    /// Seconds before giving up.
    #[arg(long, default_value = "30", value_parser = num::<u64>)]
    timeout: u64,
}

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
pub fn run(args: &Args) -> Result<()> {
    let url = args.url.clone();
    let url = format!("nats://{}", url.strip_prefix("nats://").unwrap_or(&url));
    let Some(stream) = args.stream.clone() else {
        return Err("stream-info needs --stream NAME".into());
    };
    let expect = args.expect;
    let timeout = Duration::from_secs(args.timeout);
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
