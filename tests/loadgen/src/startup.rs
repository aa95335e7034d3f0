//! The `startup` and `freeport` helpers.

use super::*;
use crate::args::num;

/// `loadgen startup` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// Runs (the median is reported).
    #[arg(long, default_value = "3", value_parser = num::<usize>)]
    runs: usize,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
    /// The row's name in the record.
    #[arg(long, default_value = "startup")]
    row: String,
    /// Also time the first `STREAM.INFO` answer for this stream.
    #[arg(long = "js-stream")]
    js_stream: Option<String>,
    /// With `--js-stream`: then publish one message to this subject (of that stream) and
    /// also time its `PubAck` (a server that rebuilds state in the background before it
    /// stores again shows it here).
    #[arg(long = "js-publish", requires = "js_stream")]
    js_publish: Option<String>,
    /// The server command after `--` (`{port}` in it: a free loopback port).
    #[arg(last = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

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
    /// Spawn to the `PubAck` of the publish that followed (with `js_publish`).
    publish: Option<Duration>,
}

/// Appends what the server sent next to `seen` (nothing when the read times out). An error
/// once `t0` is [`WAIT_LIMIT`] old, naming what did not come (`waited_for`), or when the
/// server closed the connection.
fn read_more(
    s: &mut TcpStream,
    buf: &mut [u8],
    seen: &mut Vec<u8>,
    t0: Instant,
    waited_for: &dyn Fn() -> String,
) -> Result<()> {
    if t0.elapsed() > WAIT_LIMIT {
        return Err(format!("no {} within {WAIT_LIMIT:?}", waited_for()).into());
    }
    match s.read(buf) {
        Ok(0) => Err("server closed the connection".into()),
        Ok(n) => {
            seen.extend_from_slice(buf.get(..n).unwrap_or_default());
            Ok(())
        }
        Err(e) if wire::is_timeout(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// On a connection where `wait_stream` got its answer: publishes one message to `subject`
/// and waits for its `PubAck` (an error reply is an error).
fn publish_once(s: &mut TcpStream, subject: &str, t0: Instant) -> Result<()> {
    s.write_all(format!("SUB _bench.ack 2\r\nPUB {subject} _bench.ack 1\r\nx\r\n").as_bytes())?;
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        read_more(s, &mut buf, &mut seen, t0, &|| {
            format!("PubAck for {subject}")
        })?;
        let text = String::from_utf8_lossy(&seen);
        if let Some(i) = text.find("MSG _bench.ack 2") {
            let rest = text.get(i..).unwrap_or_default();
            if rest.contains("\"error\"") {
                return Err(format!("publish refused: {rest}").into());
            }
            if rest.contains("\"seq\"") && rest.contains('}') {
                return Ok(());
            }
        }
        if text.contains("PING\r\n") {
            s.write_all(b"PONG\r\n")?;
            seen.clear();
        }
    }
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
        read_more(s, &mut buf, &mut seen, t0, &|| {
            format!("STREAM.INFO {stream} answer")
        })?;
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
fn once(cmd: &[String], js_stream: Option<&str>, js_publish: Option<&str>) -> Result<Times> {
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
                            publish: None,
                        });
                    };
                    let n = wait_stream(&mut s, name, t0)?;
                    let js = Some(t0.elapsed());
                    let publish = match js_publish {
                        Some(subject) => {
                            publish_once(&mut s, subject, t0)?;
                            Some(t0.elapsed())
                        }
                        None => None,
                    };
                    return Ok(Times {
                        info,
                        js,
                        js_msgs: Some(n),
                        publish,
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
pub fn run(args: &Args) -> Result<()> {
    let runs = args.runs;
    let server = args.server.clone();
    let row = args.row.clone();
    let js_stream = args.js_stream.clone();
    let mut ms = Vec::with_capacity(runs);
    let mut js_ms = Vec::new();
    let mut js_msgs = Vec::new();
    let mut pub_ms = Vec::new();
    for _ in 0..runs.max(1) {
        let t = once(
            &args.command,
            js_stream.as_deref(),
            args.js_publish.as_deref(),
        )?;
        ms.push(t.info.as_secs_f64() * 1e3);
        js_ms.extend(t.js.map(|d| d.as_secs_f64() * 1e3));
        js_msgs.extend(t.js_msgs);
        pub_ms.extend(t.publish.map(|d| d.as_secs_f64() * 1e3));
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
    if let (Some(pub_median), Some(obj)) =
        (report::median(&mut pub_ms.clone()), record.as_object_mut())
    {
        obj.insert("pub_runs_ms".into(), pub_ms.clone().into());
        obj.insert("pub_ms".into(), pub_median.into());
        human.push_str(&format!(
            "; {pub_median:.2} ms to the first PubAck ({pub_ms:.2?})"
        ));
    }
    emit(record, &human);
    Ok(())
}
