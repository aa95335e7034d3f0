//! The `leaves` mode: many raw leafnode connections held open on a hub, so that a benchmark
//! can measure what they cost the hub (its RSS).
//!
//! Each connection plays a nats-server 2.9 leaf with no clients: it reads the hub's `INFO`,
//! sends a leafnode `CONNECT` (`user`/`pass`, `name`, `server_id`, `headers`, as nats-server's
//! `leafConnectInfo`), one `LS+ bench.leaf.<i>` and a `PING`; it counts as established when
//! the `PONG` arrives (a hub that refuses the login closes the connection first). It then
//! answers the hub's `PING`s and skips everything else (`INFO`, `LS+`/`LS-` of the other
//! leaves in its account, `LMSG`/`HMSG` payloads) until the run ends: on SIGTERM or SIGINT,
//! or after `--hold` seconds. Once every connection is established or has failed, the line
//! `established N of M` is written to `--ready-file` (the benchmark script waits for it
//! before it reads the hub's RSS).

use super::*;
use crate::args::num;
use crate::wire::{split_url, Credentials};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

/// At most this many handshakes under way at once (keeps the hub's accept backlog short).
const HANDSHAKES_AT_ONCE: usize = 64;

/// Errors kept in the record (the first ones; the rest are only counted).
const ERRORS_KEPT: usize = 5;

/// `loadgen leaves` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The hub's leafnode port (`[nats-leaf://]HOST:PORT`).
    #[arg(long)]
    url: String,
    /// Connections to open.
    #[arg(long, default_value = "1000", value_parser = num::<usize>)]
    count: usize,
    /// Leafnode users, `user:password` separated by commas; connection i logs in as user
    /// i mod their number. Default: the URL's credentials, or none.
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Seconds to hold the connections once established (0: until SIGTERM or SIGINT).
    #[arg(long, default_value = "0", value_parser = num::<f64>)]
    hold: f64,
    /// Seconds allowed for establishing all the connections.
    #[arg(long, default_value = "60", value_parser = num::<f64>)]
    timeout: f64,
    /// File written (`established N of M`) once every connection is up or has failed.
    #[arg(long = "ready-file")]
    ready_file: Option<std::path::PathBuf>,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// The row's name in the record (default `leaves`).
    #[arg(long)]
    row: Option<String>,
}

/// How one connection ended.
#[derive(Debug)]
enum Outcome {
    /// Established and held until the end of the run.
    Held,
    /// Established, then closed by the hub (or broken) before the end of the run.
    Dropped(String),
    /// Never established.
    Failed(String),
}

/// `loadgen leaves`.
pub fn run(args: &Args) -> Result<()> {
    let (addr, url_creds) = split_url(&args.url);
    let users = args
        .users
        .iter()
        .map(|u| {
            let (user, pass) = u
                .split_once(':')
                .ok_or_else(|| format!("--users: {u:?} is not user:password"))?;
            Ok(Credentials {
                user: user.to_owned(),
                pass: pass.to_owned(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let users = if users.is_empty() {
        url_creds.into_iter().collect()
    } else {
        users
    };
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (outcomes, connect_secs, held_secs) = rt.block_on(hold_all(args, addr, &users))?;

    let count = args.count;
    let (mut failed, mut dropped, mut held) = (Vec::new(), Vec::new(), 0usize);
    for outcome in &outcomes {
        match outcome {
            Outcome::Held => held += 1,
            Outcome::Dropped(e) => dropped.push(e),
            Outcome::Failed(e) => failed.push(e),
        }
    }
    let established = count - failed.len();
    let mut errors: Vec<String> = failed
        .iter()
        .take(ERRORS_KEPT)
        .map(|e| format!("not established: {e}"))
        .chain(
            dropped
                .iter()
                .take(ERRORS_KEPT)
                .map(|e| format!("dropped: {e}")),
        )
        .collect();
    if failed.len() + dropped.len() > errors.len() {
        errors.push(format!(
            "{} not established and {} dropped in all",
            failed.len(),
            dropped.len()
        ));
    }
    let server = &args.server;
    emit(
        serde_json::json!({
            "mode": "leaves", "row": args.row.clone().unwrap_or("leaves".into()),
            "server": server, "url": addr, "count": count, "users": users.len(),
            "established": established, "held": held, "dropped": dropped.len(),
            "connect_secs": connect_secs, "held_secs": held_secs, "errors": errors,
        }),
        &format!(
            "leaves   {server:12} {established}/{count} established in {connect_secs:.2} s, \
             {held} held for {held_secs:.1} s{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!("  errors: {}", errors.join("; "))
            }
        ),
    );
    Ok(())
}

/// Opens every connection, signals readiness, holds them until the end of the run and
/// returns each one's outcome, the seconds establishing took and the seconds they were held.
async fn hold_all(
    args: &Args,
    addr: &str,
    users: &[Credentials],
) -> Result<(Vec<Outcome>, f64, f64)> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel::<bool>(args.count);
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let timeout = Duration::from_secs_f64(args.timeout);
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        let creds = users.get(i % users.len().max(1)).cloned();
        let (addr, gate, up_tx, stop_rx) = (
            addr.to_owned(),
            gate.clone(),
            up_tx.clone(),
            stop_rx.clone(),
        );
        tasks.spawn(async move {
            let conn = tokio::time::timeout_at(deadline, async {
                let _permit = gate.acquire().await;
                handshake(&addr, i, creds.as_ref()).await
            })
            .await;
            let conn = match conn {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    let _ = up_tx.send(false).await;
                    return (i, Outcome::Failed(e.to_string()));
                }
                Err(_) => {
                    let _ = up_tx.send(false).await;
                    return (i, Outcome::Failed(format!("no PONG within {timeout:?}")));
                }
            };
            let _ = up_tx.send(true).await;
            (i, keep(conn, stop_rx).await)
        });
    }
    drop(up_tx);

    // Every connection reports once, established or not (each within `timeout`).
    let (mut up, mut done) = (0usize, 0usize);
    while done < args.count {
        match up_rx.recv().await {
            Some(ok) => {
                done += 1;
                up += usize::from(ok);
            }
            None => break,
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "leaves: {up} of {} established in {connect_secs:.2} s",
        args.count
    );
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("established {up} of {}\n", args.count))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }

    let t1 = Instant::now();
    wait_for_stop(args.hold).await?;
    let held_secs = t1.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);

    let mut outcomes: Vec<Option<Outcome>> = (0..args.count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome) = joined.map_err(|e| format!("connection task: {e}"))?;
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Failed("task lost".into())))
        .collect();
    Ok((outcomes, connect_secs, held_secs))
}

/// Returns after `hold` seconds (if not 0) or at SIGTERM or SIGINT, whichever comes first.
async fn wait_for_stop(hold: f64) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hold = async {
        if hold > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = hold => {}
    }
    Ok(())
}

/// An established leafnode connection: its reading side and its writing side.
pub(crate) struct Leaf {
    /// Buffered reading side.
    pub(crate) read: LineReader,
    /// Writing side.
    pub(crate) write: tokio::net::tcp::OwnedWriteHalf,
}

/// Connects as leaf `i` and returns once the hub has answered the `PING` after `CONNECT`
/// and `LS+`.
async fn handshake(addr: &str, i: usize, creds: Option<&Credentials>) -> Result<Leaf> {
    let name = format!("bench-leaf-{i}");
    let interest = format!("bench.leaf.{i}");
    handshake_as(addr, &name, i, &interest, creds).await
}

/// Connects as a leaf named `name` (server id from `i`) announcing interest in `interest`,
/// and returns once the hub has answered the `PING` after `CONNECT` and `LS+`.
pub(crate) async fn handshake_as(
    addr: &str,
    name: &str,
    i: usize,
    interest: &str,
    creds: Option<&Credentials>,
) -> Result<Leaf> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = LineReader::new(read);
    let info = read.line().await?;
    if !info.starts_with("INFO ") {
        return Err(format!("expected INFO, got {info:?}").into());
    }
    let mut connect = serde_json::json!({
        "name": name,
        "server_id": format!("NBENCHLEAF{i:06}"),
        "version": "2.9.10",
        "headers": true,
        "tls_required": false,
    });
    if let (Some(c), Some(obj)) = (creds, connect.as_object_mut()) {
        obj.insert("user".into(), c.user.clone().into());
        obj.insert("pass".into(), c.pass.clone().into());
    }
    write
        .write_all(format!("CONNECT {connect}\r\nLS+ {interest}\r\nPING\r\n").as_bytes())
        .await?;
    loop {
        match read.next().await? {
            Incoming::Pong => return Ok(Leaf { read, write }),
            Incoming::Ping => write.write_all(b"PONG\r\n").await?,
            Incoming::Err(e) => return Err(format!("hub said {e}").into()),
            Incoming::Other => {}
        }
    }
}

/// Holds an established connection until a value is sent on `stop`, answering `PING`s.
async fn keep(mut leaf: Leaf, mut stop: watch::Receiver<bool>) -> Outcome {
    loop {
        tokio::select! {
            _ = stop.changed() => return Outcome::Held,
            got = leaf.read.next() => match got {
                Ok(Incoming::Ping) => {
                    if let Err(e) = leaf.write.write_all(b"PONG\r\n").await {
                        return Outcome::Dropped(e.to_string());
                    }
                }
                Ok(Incoming::Err(e)) => return Outcome::Dropped(format!("hub said {e}")),
                Ok(_) => {}
                Err(e) => return Outcome::Dropped(e.to_string()),
            },
        }
    }
}

/// What the hub sent, as far as a silent leaf cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// `PING`: answer `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `-ERR` and its text.
    Err(String),
    /// Anything else (`INFO`, `LS+`, `LS-`, a message, `+OK`).
    Other,
}

/// Reads protocol lines of bounded length and skips message payloads.
pub(crate) struct LineReader {
    /// The buffered socket.
    inner: BufReader<OwnedReadHalf>,
    /// The line being read.
    buf: Vec<u8>,
}

impl LineReader {
    /// A reader on `read`.
    pub(crate) fn new(read: OwnedReadHalf) -> LineReader {
        LineReader {
            inner: BufReader::with_capacity(4096, read),
            buf: Vec::new(),
        }
    }

    /// Reads one line, without its CRLF (at most [`MAX_LINE`] bytes).
    pub(crate) async fn line(&mut self) -> Result<String> {
        self.buf.clear();
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Err("hub closed the connection".into());
            }
            let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(n) => (n + 1, true),
                None => (avail.len(), false),
            };
            self.buf
                .extend_from_slice(avail.get(..take).unwrap_or_default());
            self.inner.consume(take);
            if self.buf.len() > MAX_LINE {
                return Err("protocol line too long".into());
            }
            if done {
                let line = self.buf.strip_suffix(b"\n").unwrap_or(self.buf.as_slice());
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
        }
    }

    /// Reads `n` bytes.
    pub(crate) async fn exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; n];
        tokio::io::AsyncReadExt::read_exact(&mut self.inner, &mut out)
            .await
            .map_err(|e| format!("hub closed the connection: {e}"))?;
        Ok(out)
    }

    /// Discards `n` bytes.
    pub(crate) async fn skip(&mut self, mut n: usize) -> Result<()> {
        while n > 0 {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Err("hub closed the connection".into());
            }
            let take = avail.len().min(n);
            self.inner.consume(take);
            n -= take;
        }
        Ok(())
    }

    /// Reads the next operation (skipping a message's payload).
    async fn next(&mut self) -> Result<Incoming> {
        let line = self.line().await?;
        Ok(match classify(&line)? {
            Classified::Op(op) => op,
            Classified::Payload(n) => {
                self.skip(n + 2).await?;
                Incoming::Other
            }
        })
    }
}

/// A line's meaning: an operation, or a message header followed by a payload of N bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Classified {
    /// A complete operation.
    Op(Incoming),
    /// `LMSG`/`HMSG`/`MSG`: this many payload bytes (plus CRLF) follow.
    Payload(usize),
}

/// Classifies one protocol line from the hub.
pub(crate) fn classify(line: &str) -> Result<Classified> {
    let op = line.split(' ').next().unwrap_or_default();
    Ok(match op.to_ascii_uppercase().as_str() {
        "PING" => Classified::Op(Incoming::Ping),
        "PONG" => Classified::Op(Incoming::Pong),
        "-ERR" => Classified::Op(Incoming::Err(line.to_owned())),
        "LMSG" | "HMSG" | "MSG" => {
            // The last field is the (total) payload size.
            let size = line.rsplit(' ').next().unwrap_or_default();
            let size = size
                .parse::<usize>()
                .map_err(|_| format!("bad message line {line:?}"))?;
            Classified::Payload(size)
        }
        _ => Classified::Op(Incoming::Other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hub_lines() {
        let op = |l: &str| classify(l).ok();
        assert_eq!(op("PING"), Some(Classified::Op(Incoming::Ping)));
        assert_eq!(op("PONG"), Some(Classified::Op(Incoming::Pong)));
        assert_eq!(
            op("-ERR 'Authorization Violation'"),
            Some(Classified::Op(Incoming::Err(
                "-ERR 'Authorization Violation'".into()
            )))
        );
        assert_eq!(
            op("LS+ bench.leaf.3"),
            Some(Classified::Op(Incoming::Other))
        );
        assert_eq!(op("LMSG a.b 5"), Some(Classified::Payload(5)));
        assert_eq!(op("LMSG a.b | r q1 q2 12"), Some(Classified::Payload(12)));
        assert_eq!(op("HMSG a.b 4 10"), Some(Classified::Payload(10)));
        assert!(classify("LMSG a.b x").is_err());
    }
}
