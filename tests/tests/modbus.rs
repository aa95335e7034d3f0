//! Modbus RTU buses (`[[modbus]]`) of leafd, against a simulated slave on the other end of
//! a real PTY pair (socat).
//!
//! The slave is written here (CRC-16/MODBUS, function codes 1, 2, 3, 4, 5, 6 and 16 over
//! an in-memory table) so every byte it sends is under the test's control: it can stay
//! silent once (a timeout) or answer with a broken CRC (a garbled frame).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use e2e::async_nats::{self, HeaderMap};
use e2e::pty::{PtyPair, PtyPeer};
use e2e::serde_json::{json, Value};
use e2e::{bounded, free_port, http_get, next_msg, wait_for_log, ServerKind, TestServer};
use futures::StreamExt;

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial value 0xFFFF).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Appends the CRC, low byte first.
fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// The slave's tables, fault switches and what it has seen.
#[derive(Default)]
struct Table {
    holding: HashMap<u16, u16>,
    input: HashMap<u16, u16>,
    coils: HashMap<u16, bool>,
    discrete: HashMap<u16, bool>,
    /// Requests to leave unanswered.
    ignore: usize,
    /// Answers to send with a broken CRC.
    corrupt: usize,
    /// Requests left unanswered so far.
    ignored: usize,
    /// Answers sent with a broken CRC so far.
    corrupted: usize,
    /// Well-formed requests received, by function code.
    requests: HashMap<u8, usize>,
}

/// A Modbus RTU slave on a thread, serving `table` as slave `id`.
struct Slave {
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Slave {
    fn start(mut peer: PtyPeer, id: u8, table: Table) -> Slave {
        let table = Arc::new(Mutex::new(table));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (table, stop) = (table.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf: Vec<u8> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let chunk = peer.read_within(Duration::from_millis(20));
                    if chunk.is_empty() {
                        // Silence ends a frame: drop an incomplete one.
                        buf.clear();
                        continue;
                    }
                    buf.extend_from_slice(&chunk);
                    let Some(len) = request_len(&buf) else {
                        continue;
                    };
                    if buf.len() < len {
                        continue;
                    }
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    buf.clear();
                    let (body, crc) = frame.split_at(len - 2);
                    if crc16(body).to_le_bytes() != crc[..] || body[0] != id {
                        continue;
                    }
                    let mut t = table.lock().unwrap();
                    *t.requests.entry(body[1]).or_default() += 1;
                    if t.ignore > 0 {
                        t.ignore -= 1;
                        t.ignored += 1;
                        continue;
                    }
                    let mut answer = with_crc(handle(&mut t, body));
                    if t.corrupt > 0 {
                        t.corrupt -= 1;
                        t.corrupted += 1;
                        let last = answer.len() - 1;
                        answer[last] ^= 0x5A;
                    }
                    drop(t);
                    peer.write(&answer);
                }
            })
        };
        Slave {
            table,
            stop,
            thread: Some(thread),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        f(&mut self.table.lock().unwrap())
    }
}

impl Drop for Slave {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The length of the request frame starting `buf`, once it can be told.
fn request_len(buf: &[u8]) -> Option<usize> {
    match *buf.get(1)? {
        1..=6 => Some(8),
        15 | 16 => buf.get(6).map(|&n| 9 + usize::from(n)),
        // Unknown function: take what arrived and let the CRC check drop it.
        _ => Some(buf.len().max(4)),
    }
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The answer (without CRC) to the request `req` (without CRC).
fn handle(t: &mut Table, req: &[u8]) -> Vec<u8> {
    let (id, fc) = (req[0], req[1]);
    let exception = |code: u8| vec![id, fc | 0x80, code];
    match fc {
        1 | 2 => {
            let (addr, n) = (word(req, 2), word(req, 4));
            let table = if fc == 1 { &t.coils } else { &t.discrete };
            let mut bytes = vec![0u8; usize::from(n).div_ceil(8)];
            for i in 0..n {
                let Some(&on) = table.get(&(addr + i)) else {
                    return exception(2);
                };
                if on {
                    bytes[usize::from(i / 8)] |= 1 << (i % 8);
                }
            }
            let mut out = vec![id, fc, bytes.len() as u8];
            out.extend(bytes);
            out
        }
        3 | 4 => {
            let (addr, n) = (word(req, 2), word(req, 4));
            let table = if fc == 3 { &t.holding } else { &t.input };
            let mut out = vec![id, fc, (n * 2) as u8];
            for i in 0..n {
                let Some(&w) = table.get(&(addr + i)) else {
                    return exception(2);
                };
                out.extend(w.to_be_bytes());
            }
            out
        }
        5 => {
            let addr = word(req, 2);
            if !t.coils.contains_key(&addr) {
                return exception(2);
            }
            t.coils.insert(addr, word(req, 4) == 0xFF00);
            req.to_vec()
        }
        6 => {
            let addr = word(req, 2);
            if !t.holding.contains_key(&addr) {
                return exception(2);
            }
            t.holding.insert(addr, word(req, 4));
            req.to_vec()
        }
        16 => {
            let (addr, n) = (word(req, 2), word(req, 4));
            for i in 0..n {
                if !t.holding.contains_key(&(addr + i)) {
                    return exception(2);
                }
            }
            for i in 0..n {
                let at = 7 + 2 * usize::from(i);
                t.holding.insert(addr + i, word(req, at));
            }
            req[..6].to_vec()
        }
        _ => exception(1),
    }
}

/// Starts leafd with one bus `meter` on `pair` (19200 baud) and the given registers, plus
/// `extra` keys for the bus; monitoring on `mport`.
async fn start_leafd(pair: &PtyPair, mport: u16, registers: Value, extra: Value) -> TestServer {
    let mut bus = json!({
        "name": "meter",
        "port": { "device": pair.device().display().to_string(), "baud": 19200 },
        "timeout": "300ms",
        "registers": registers,
    });
    if let (Some(bus), Value::Object(extra)) = (bus.as_object_mut(), extra) {
        bus.extend(extra);
    }
    TestServer::builder(ServerKind::Leafd)
        .config(json!({ "modbus": [bus] }))
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await
}

/// The payload of `msg` as JSON.
fn body(msg: &async_nats::Message) -> Value {
    e2e::serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}): {:?}",
            msg.subject,
            String::from_utf8_lossy(&msg.payload)
        )
    })
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// Waits for the next message on `sub` whose `value` is `want`.
async fn value_arrives(sub: &mut async_nats::Subscriber, want: &Value) -> async_nats::Message {
    bounded(&format!("a value of {want}"), async {
        loop {
            let msg = sub.next().await.expect("subscription ended");
            if &body(&msg)["value"] == want {
                return msg;
            }
        }
    })
    .await
}

/// Polls the bus `meter` in `/sourcesz` until `check` holds for it.
async fn sourcesz_until(mport: u16, what: &str, check: impl Fn(&Value) -> bool) {
    bounded(&format!("/sourcesz to show {what}"), async {
        loop {
            let (code, page) = http_get(mport, "/sourcesz").await;
            assert_eq!(code, 200, "{page}");
            let source = page["sources"]
                .as_array()
                .and_then(|list| {
                    list.iter()
                        .find(|s| s["kind"] == json!("modbus") && s["name"] == json!("meter"))
                })
                .unwrap_or_else(|| panic!("no modbus source in {page}"))
                .clone();
            if check(&source) {
                return;
            }
            // Polling a monitoring page: nothing to synchronise on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A counter of a `/sourcesz` source.
fn counter(source: &Value, name: &str) -> u64 {
    source["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {source}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_values_are_published_with_types_orders_and_scale() {
    let pair = PtyPair::new();
    let mut table = Table::default();
    table.holding.extend([
        (0, 215),    // temp: u16 * 0.1 = 21.5
        (1, 0xFFD6), // delta: i16 = -42
        (10, 0x4366),
        (11, 0x8000), // power: f32 230.5, high word first
        (12, 0x0000),
        (13, 0xBFA0), // power_lo: f32 -1.25, low word first
        (20, 1),
        (21, 0xFFFE),
        (22, 3),      // trio: i16 x 3
        (30, 0x3412), // swapped: u16, bytes swapped = 0x1234
    ]);
    table.input.extend([
        (0, 0x0001),
        (1, 0x0002), // count: u32 = 65538, high word first
        (2, 0xCD15),
        (3, 0x075B), // energy: u32 = 123456789, low word first
    ]);
    table.coils.extend([(3, true)]);
    table.discrete.extend([(7, false)]);
    let slave = Slave::start(pair.open_peer(), 1, table);
    let registers = json!([
        { "name": "temp", "address": 0, "scale": 0.1, "unit": "C", "interval": "200ms" },
        { "name": "delta", "address": 1, "type": "i16", "interval": "200ms" },
        { "name": "power", "address": 10, "type": "f32", "unit": "W", "interval": "200ms" },
        { "name": "power_lo", "address": 12, "type": "f32", "word_order": "little", "interval": "200ms" },
        { "name": "trio", "address": 20, "type": "i16", "count": 3, "interval": "200ms" },
        { "name": "swapped", "address": 30, "byte_order": "little", "interval": "200ms" },
        { "name": "count", "kind": "input", "address": 0, "type": "u32", "interval": "200ms" },
        { "name": "energy", "kind": "input", "address": 2, "type": "u32", "word_order": "little", "scale": 0.001, "unit": "kWh", "interval": "200ms" },
        { "name": "relay", "kind": "coil", "address": 3, "interval": "200ms" },
        { "name": "door", "kind": "discrete", "address": 7, "interval": "200ms" },
    ]);
    let mport = free_port();
    let server = start_leafd(&pair, mport, registers, json!({})).await;
    let client = server.client().await;
    let mut sub = client.subscribe("sensors.board.meter.>").await.unwrap();
    let want: HashMap<&str, Value> = HashMap::from([
        ("temp", json!({"value": 21.5, "unit": "C"})),
        ("delta", json!({"value": -42})),
        ("power", json!({"value": 230.5, "unit": "W"})),
        ("power_lo", json!({"value": -1.25})),
        ("trio", json!({"value": [1, -2, 3]})),
        ("swapped", json!({"value": 0x1234})),
        ("count", json!({"value": 65538})),
        ("energy", json!({"value": 123456.789, "unit": "kWh"})),
        ("relay", json!({"value": true})),
        ("door", json!({"value": false})),
    ]);
    let mut seen: HashMap<String, Value> = HashMap::new();
    bounded("a value of every register", async {
        while seen.len() < want.len() {
            let msg = sub.next().await.expect("subscription ended");
            let name = msg
                .subject
                .as_str()
                .strip_prefix("sensors.board.meter.")
                .unwrap()
                .to_owned();
            assert!(
                want.contains_key(name.as_str()),
                "unexpected {}",
                msg.subject
            );
            assert_eq!(header(msg.headers.as_ref(), "Leaf-Slave"), Some("1"));
            assert_eq!(
                header(msg.headers.as_ref(), "Leaf-Register"),
                Some(name.as_str())
            );
            let seq: u64 = header(msg.headers.as_ref(), "Leaf-Seq")
                .and_then(|s| s.parse().ok())
                .expect("Leaf-Seq");
            assert!(seq >= 1);
            assert!(header(msg.headers.as_ref(), "Leaf-Received").is_some());
            seen.insert(name, body(&msg));
        }
    })
    .await;
    for (name, value) in &want {
        assert_eq!(&seen[*name], value, "{name}");
    }
    // Values keep coming, with increasing sequence numbers per register.
    let mut temp = client.subscribe("sensors.board.meter.temp").await.unwrap();
    let first = next_msg(&mut temp).await;
    let second = next_msg(&mut temp).await;
    let seq = |m: &async_nats::Message| -> u64 {
        header(m.headers.as_ref(), "Leaf-Seq")
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(seq(&second), seq(&first) + 1);
    let device = pair.device().display().to_string();
    sourcesz_until(mport, "every register polled", |s| {
        assert_eq!(s["state"], json!("open"), "{s}");
        assert_eq!(s["target"], json!(device), "{s}");
        counter(s, "values") >= 10 && counter(s, "polls") >= counter(s, "values")
    })
    .await;
    drop(slave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_bad_crc_are_survived() {
    let pair = PtyPair::new();
    let mut table = Table::default();
    table.holding.extend([(0, 100), (5, 7)]);
    let slave = Slave::start(pair.open_peer(), 1, table);
    let registers = json!([
        { "name": "level", "address": 0, "interval": "100ms" },
        { "name": "other", "address": 5, "interval": "100ms" },
    ]);
    let mport = free_port();
    let server = start_leafd(&pair, mport, registers, json!({})).await;
    let client = server.client().await;
    let mut sub = client.subscribe("sensors.board.meter.level").await.unwrap();
    value_arrives(&mut sub, &json!(100)).await;

    // One request goes unanswered: a timeout, then polling resumes with fresh values.
    slave.with(|t| t.ignore = 1);
    bounded("the slave to ignore a request", async {
        while slave.with(|t| t.ignored) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    slave.with(|t| {
        t.holding.insert(0, 101);
    });
    value_arrives(&mut sub, &json!(101)).await;
    wait_for_log(&server, "no answer in time", 1).await;

    // One answer has a broken CRC: counted, the session recreated, polling resumes.
    slave.with(|t| t.corrupt = 1);
    bounded("the slave to corrupt an answer", async {
        while slave.with(|t| t.corrupted) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    slave.with(|t| {
        t.holding.insert(0, 102);
    });
    value_arrives(&mut sub, &json!(102)).await;
    let log = server.log();
    assert!(
        log.contains("garbled") || log.contains("bad response"),
        "the corrupted answer is not reported:\n{log}"
    );

    // A register the slave does not have: exceptions, the others unaffected.
    slave.with(|t| {
        t.holding.remove(&5);
        t.holding.insert(0, 103);
    });
    value_arrives(&mut sub, &json!(103)).await;
    wait_for_log(&server, "exception", 1).await;
    slave.with(|t| {
        t.holding.insert(0, 104);
    });
    value_arrives(&mut sub, &json!(104)).await;
    sourcesz_until(mport, "the faults counted", |s| {
        counter(s, "timeouts") >= 1 && counter(s, "errors") >= 1 && counter(s, "exceptions") >= 1
    })
    .await;
    drop(slave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_request_reply() {
    let pair = PtyPair::new();
    let mut table = Table::default();
    table.holding.extend([(40, 200), (41, 9), (42, 0), (43, 0)]);
    table.coils.extend([(5, false)]);
    let slave = Slave::start(pair.open_peer(), 3, table);
    let registers = json!([
        { "name": "setpoint", "slave": 3, "address": 40, "type": "i16", "scale": 0.1, "writable": true, "interval": "200ms" },
        { "name": "limit", "slave": 3, "address": 41, "interval": "200ms" },
        { "name": "target", "slave": 3, "address": 42, "type": "f32", "word_order": "little", "writable": true, "interval": "200ms" },
        { "name": "pump", "slave": 3, "kind": "coil", "address": 5, "writable": true, "interval": "200ms" },
    ]);
    let mport = free_port();
    let server = start_leafd(
        &pair,
        mport,
        registers,
        json!({ "write_subject": "modbus.{bus}.write" }),
    )
    .await;
    let client = server.client().await;
    let mut setpoint = client
        .subscribe("sensors.board.meter.setpoint")
        .await
        .unwrap();
    value_arrives(&mut setpoint, &json!(20.0)).await;

    let write = |body: Value| {
        let client = client.clone();
        async move {
            let reply = bounded(
                "a write reply",
                client.request("modbus.meter.write", body.to_string().into()),
            )
            .await
            .expect("request");
            e2e::serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };

    // A holding register (function 6), with inverse scaling.
    assert_eq!(
        write(json!({"register": "setpoint", "value": -21.5})).await,
        json!({"ok": true})
    );
    assert_eq!(slave.with(|t| t.holding[&40]), (-215i16) as u16);
    value_arrives(&mut setpoint, &json!(-21.5)).await;

    // A 32-bit register (function 16), low word first.
    assert_eq!(
        write(json!({"register": "target", "value": 1.5})).await,
        json!({"ok": true})
    );
    assert_eq!(
        slave.with(|t| (t.holding[&42], t.holding[&43])),
        (0x0000, 0x3FC0)
    );

    // A coil (function 5).
    assert_eq!(
        write(json!({"register": "pump", "value": true})).await,
        json!({"ok": true})
    );
    assert!(slave.with(|t| t.coils[&5]));

    // Refused: not writable, unknown, out of range, malformed.
    let refused = write(json!({"register": "limit", "value": 1})).await;
    assert!(
        refused["error"].as_str().unwrap().contains("not writable"),
        "{refused}"
    );
    assert_eq!(slave.with(|t| t.holding[&41]), 9);
    let unknown = write(json!({"register": "nope", "value": 1})).await;
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("unknown register"),
        "{unknown}"
    );
    let range = write(json!({"register": "setpoint", "value": 4000})).await;
    assert!(
        range["error"].as_str().unwrap().contains("out of range"),
        "{range}"
    );
    let bad = write(json!({"value": 1})).await;
    assert!(bad["error"].is_string(), "{bad}");
    assert_eq!(slave.with(|t| t.holding[&40]), (-215i16) as u16);
    assert_eq!(slave.with(|t| t.requests.get(&6).copied()), Some(1));
    assert_eq!(slave.with(|t| t.requests.get(&16).copied()), Some(1));
    assert_eq!(slave.with(|t| t.requests.get(&5).copied()), Some(1));
    sourcesz_until(mport, "three writes", |s| counter(s, "writes") == 3).await;
    drop(slave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_device_is_reopened() {
    let mut pair = PtyPair::new();
    let table = || {
        let mut t = Table::default();
        t.holding.extend([(0, 1), (1, 0)]);
        t
    };
    let slave = Slave::start(pair.open_peer(), 1, table());
    let registers = json!([
        { "name": "level", "address": 0, "interval": "100ms" },
        { "name": "valve", "address": 1, "writable": true, "interval": "100ms" },
    ]);
    let mport = free_port();
    let server = start_leafd(
        &pair,
        mport,
        registers,
        json!({ "write_subject": "modbus.meter.write", "port": {
            "device": pair.device().display().to_string(), "reopen_max": "200ms"
        } }),
    )
    .await;
    let client = server.client().await;
    let mut sub = client.subscribe("sensors.board.meter.level").await.unwrap();
    value_arrives(&mut sub, &json!(1)).await;

    drop(slave);
    pair.unplug();
    sourcesz_until(mport, "the bus waiting", |s| s["state"] == json!("waiting")).await;
    // Writes are refused while the device is away.
    let reply = bounded(
        "a write reply",
        client.request(
            "modbus.meter.write",
            json!({"register": "valve", "value": 1}).to_string().into(),
        ),
    )
    .await
    .expect("request");
    let reply: Value = e2e::serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("not open"),
        "{reply}"
    );

    pair.plug();
    let mut t = table();
    t.holding.insert(0, 2);
    let slave = Slave::start(pair.open_peer(), 1, t);
    value_arrives(&mut sub, &json!(2)).await;
    sourcesz_until(mport, "the reopen counted", |s| {
        s["state"] == json!("open") && counter(s, "reopens") == 1
    })
    .await;
    drop(slave);
}
