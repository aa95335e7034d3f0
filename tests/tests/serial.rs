//! Serial ports end to end: leafd reads one end of a real pseudo-terminal pair made by socat
//! (`e2e::pty`), the test plays the device on the other end, and async-nats subscribers
//! (and, through an uplink, a nats-server hub's stream) see the frames as messages.
//!
//! Covered: line framing with headers (`Leaf-Received`, `Leaf-Seq`), `key=value` and JSON
//! splitting into one subject per field, COBS/postcard records written by `leaf-frames`'
//! device-side encoder (the firmware's code) with `{channel}` subjects and the device time,
//! garbage / overlong / bad-CRC input counted without losing the good frames around it,
//! silence-gap and fixed-length framing, the device unplugged and plugged back (socat
//! killed and restarted), a configuration naming an unknown device refused at startup, and
//! frames carried through an uplink into a hub stream.

use std::time::Duration;

use e2e::async_nats::{self, jetstream};
use e2e::pty::{PtyPair, PtyPeer};
use e2e::serde_json::{json, Value};
use e2e::{bounded_for, free_port, http_get, next_msg, ServerKind, StoreDir, TestServer};
use futures::StreamExt;
use leaf_frames::{encode_record, Record};

/// leafd with monitoring on and `serial` as its `[[serial]]` list (plus `extra` top-level
/// keys); returns it and its monitoring port.
async fn leafd_with(serial: Value, extra: Value) -> (TestServer, u16) {
    let mport = free_port();
    let mut config = json!({ "serial": serial });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let server = TestServer::builder(ServerKind::Leafd)
        .config(config)
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    (server, mport)
}

/// A `[[serial]]` entry reading `pty`'s device end, with `settings` merged in.
fn port(name: &str, pty: &PtyPair, settings: Value) -> Value {
    let mut entry = json!({
        "name": name,
        "port": { "device": pty.device().display().to_string(), "baud": 115200 },
    });
    if let (Some(c), Some(e)) = (entry.as_object_mut(), settings.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    entry
}

/// The `/sourcesz` entry of source `name`.
async fn gateway(mport: u16, name: &str) -> Value {
    let (code, body) = http_get(mport, "/sourcesz").await;
    assert_eq!(code, 200, "{body}");
    body["sources"]
        .as_array()
        .and_then(|l| l.iter().find(|g| g["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no gateway {name} in {body}"))
}

/// Waits (bounded) until source `name` is in `state`.
async fn await_state(mport: u16, name: &str, state: &str) -> Value {
    bounded_for(Duration::from_secs(15), &format!("{name} {state}"), async {
        loop {
            let g = gateway(mport, name).await;
            if g["state"] == state {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Opens the device end's peer once leafd has the port open (bytes written before leafd
/// opened it are flushed by leafd on open).
async fn open_peer(pty: &PtyPair, mport: u16, name: &str) -> PtyPeer {
    await_state(mport, name, "open").await;
    pty.open_peer()
}

/// The next message's payload as text.
async fn next_text(sub: &mut async_nats::Subscriber) -> (String, String) {
    let m = next_msg(sub).await;
    (
        m.subject.to_string(),
        String::from_utf8_lossy(&m.payload).into_owned(),
    )
}

/// A record as the firmware would write it.
fn record(channel: &str, timestamp_us: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 512];
    let n = encode_record(
        &Record {
            channel,
            timestamp_us,
            payload,
        },
        &mut out,
    )
    .expect("encode");
    out.truncate(n);
    out
}

#[tokio::test]
async fn lines_become_messages_with_time_and_sequence_headers() {
    let pty = PtyPair::new();
    let (leafd, mport) = leafd_with(json!([port("p1", &pty, json!({}))]), json!({})).await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("sensors.>").await.unwrap();
    let mut dev = open_peer(&pty, mport, "p1").await;
    e2e::sync(&client).await;
    // Split writes: a line arriving in pieces is still one frame.
    dev.write(b"temp=21.5\nhum");
    tokio::time::sleep(Duration::from_millis(50)).await;
    dev.write(b"idity=40\n\n");
    for (i, want) in ["temp=21.5", "humidity=40"].iter().enumerate() {
        let m = next_msg(&mut sub).await;
        assert_eq!(m.subject.as_str(), "sensors.board.p1");
        assert_eq!(&m.payload[..], want.as_bytes());
        let h = m.headers.expect("headers");
        assert_eq!(h.get("Leaf-Seq").unwrap().as_str(), (i + 1).to_string());
        let received = h.get("Leaf-Received").unwrap().as_str().to_owned();
        assert!(
            received.ends_with('Z') && received.contains('T'),
            "{received}"
        );
    }
    let g = gateway(mport, "p1").await;
    assert_eq!(g["kind"], "serial");
    assert_eq!(g["counters"]["frames"], 2, "{g}");
    assert_eq!(g["target"], pty.device().display().to_string());
    let metrics = e2e::http_get_text(mport, "/metrics").await;
    assert!(
        metrics.contains("leafd_gateway_up{kind=\"serial\",name=\"p1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "leafd_gateway_events_total{kind=\"serial\",name=\"p1\",counter=\"frames\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn key_value_and_json_frames_split_into_one_subject_per_field() {
    let kv = PtyPair::new();
    let js = PtyPair::new();
    let (leafd, mport) = leafd_with(
        json!([
            port(
                "kv",
                &kv,
                json!({ "format": "kv", "delimiter": "\r\n",
                                   "subject": "plant.{server}.{port}.{field}" })
            ),
            port(
                "js",
                &js,
                json!({ "format": "json", "subject": "plant.{port}.{field}" })
            ),
        ]),
        json!({ "server_name": "gw7" }),
    )
    .await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("plant.>").await.unwrap();
    let mut kv_dev = open_peer(&kv, mport, "kv").await;
    let mut js_dev = open_peer(&js, mport, "js").await;
    e2e::sync(&client).await;
    kv_dev.write(b"t=21.5 h=40\r\n");
    assert_eq!(
        next_text(&mut sub).await,
        ("plant.gw7.kv.t".into(), "21.5".into())
    );
    assert_eq!(
        next_text(&mut sub).await,
        ("plant.gw7.kv.h".into(), "40".into())
    );
    js_dev.write(b"{\"p\":1013,\"state\":\"ok\"}\n");
    let mut got = vec![next_text(&mut sub).await, next_text(&mut sub).await];
    got.sort();
    assert_eq!(
        got,
        vec![
            ("plant.js.p".into(), "1013".into()),
            ("plant.js.state".into(), "\"ok\"".into())
        ]
    );
    // A frame that is not JSON is counted, and the next one still splits.
    js_dev.write(b"not json\n{\"p\":1014}\n");
    assert_eq!(
        next_text(&mut sub).await,
        ("plant.js.p".into(), "1014".into())
    );
    assert_eq!(gateway(mport, "js").await["counters"]["bad_format"], 1);
}

#[tokio::test]
async fn cobs_records_garbage_and_overlong_frames() {
    let pty = PtyPair::new();
    let (leafd, mport) = leafd_with(
        json!([port(
            "mcu",
            &pty,
            json!({ "framing": "cobs", "max_frame": 256,
                                        "subject": "sensors.{port}.{channel}" })
        )]),
        json!({}),
    )
    .await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("sensors.>").await.unwrap();
    let mut dev = open_peer(&pty, mport, "mcu").await;
    e2e::sync(&client).await;

    let mut stream = Vec::new();
    stream.extend(record("temp", 1_000, b"21.5"));
    // Garbage that ends in a delimiter: one bad frame.
    stream.extend([0x13, 0x37, 0xff, 0x42, 0x00]);
    stream.extend(record("line1.hum", 2_000, &[0, 1, 2, 0, 255]));
    // A record with one payload bit flipped: the CRC catches it.
    let mut corrupt = record("temp", 3_000, b"99.9");
    let len = corrupt.len();
    corrupt[len - 4] ^= 0x01;
    stream.extend(corrupt);
    // A record larger than max_frame, then a good record.
    stream.extend(record("temp", 3_500, &[7u8; 400]));
    stream.extend(record("temp", 4_000, b"22.0"));
    // Written in uneven pieces.
    for chunk in stream.chunks(7) {
        dev.write(chunk);
    }
    let want: [(&str, &[u8], &str); 3] = [
        ("sensors.mcu.temp", b"21.5", "1000"),
        ("sensors.mcu.line1.hum", &[0, 1, 2, 0, 255], "2000"),
        ("sensors.mcu.temp", b"22.0", "4000"),
    ];
    for (subject, payload, device_time) in want {
        let m = next_msg(&mut sub).await;
        assert_eq!(m.subject.as_str(), subject);
        assert_eq!(&m.payload[..], payload);
        let h = m.headers.expect("headers");
        assert_eq!(h.get("Leaf-Device-Time").unwrap().as_str(), device_time);
    }
    let g = gateway(mport, "mcu").await;
    let c = &g["counters"];
    assert_eq!(c["frames"], 3, "{g}");
    let bad = c["bad_cobs"].as_u64().unwrap()
        + c["bad_record"].as_u64().unwrap()
        + c["bad_crc"].as_u64().unwrap();
    assert_eq!(bad, 2, "garbage and the corrupt record: {g}");
    assert_eq!(c["overlong"], 1, "{g}");
    assert!(g["last_error"]["message"].is_string(), "{g}");
    // The server is fine: a plain publish round trip still works.
    e2e::sync(&client).await;
}

#[tokio::test]
async fn gap_and_fixed_framing() {
    let gap = PtyPair::new();
    let fixed = PtyPair::new();
    let (leafd, mport) = leafd_with(
        json!([
            port("gap", &gap, json!({ "framing": "gap", "gap": "50ms" })),
            port("fix", &fixed, json!({ "framing": "fixed", "frame_len": 4 })),
        ]),
        json!({}),
    )
    .await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("sensors.board.*").await.unwrap();
    let mut g = open_peer(&gap, mport, "gap").await;
    let mut f = open_peer(&fixed, mport, "fix").await;
    e2e::sync(&client).await;
    // Two bursts separated by silence: two frames, whatever bytes they hold.
    g.write(b"\x01\x02\n\x03");
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.write(b"ab");
    assert_eq!(next_msg(&mut sub).await.payload.as_ref(), b"\x01\x02\n\x03");
    assert_eq!(next_msg(&mut sub).await.payload.as_ref(), b"ab");
    f.write(b"abcdefgh");
    assert_eq!(next_msg(&mut sub).await.payload.as_ref(), b"abcd");
    assert_eq!(next_msg(&mut sub).await.payload.as_ref(), b"efgh");
}

#[tokio::test]
async fn overlong_lines_and_garbage_lose_no_good_line() {
    let pty = PtyPair::new();
    let (leafd, mport) = leafd_with(
        json!([port("p", &pty, json!({ "max_frame": 64 }))]),
        json!({}),
    )
    .await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("sensors.>").await.unwrap();
    let mut dev = open_peer(&pty, mport, "p").await;
    e2e::sync(&client).await;
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for i in 0..200u32 {
        let good = format!("reading {i}");
        stream.extend_from_slice(good.as_bytes());
        stream.push(b'\n');
        want.push(good);
        if i % 20 == 7 {
            // An overlong line (the wrong baud rate looks like this: noise, no newline).
            stream.extend((0..300u32).map(|j| (j * 7 + i) as u8 | 0x80));
            stream.push(b'\n');
        }
    }
    for chunk in stream.chunks(61) {
        dev.write(chunk);
    }
    for w in &want {
        let (_, got) = next_text(&mut sub).await;
        assert_eq!(&got, w);
    }
    let g = gateway(mport, "p").await;
    assert_eq!(g["counters"]["frames"], 200, "{g}");
    assert_eq!(g["counters"]["overlong"], 10, "{g}");
}

#[tokio::test]
async fn unplugged_device_is_reopened_when_it_comes_back() {
    let mut pty = PtyPair::new();
    let (leafd, mport) = leafd_with(
        json!([port(
            "usb",
            &pty,
            json!({ "port": {
            "device": pty.device().display().to_string(), "reopen_max": "500ms" } })
        )]),
        json!({}),
    )
    .await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("sensors.>").await.unwrap();
    let mut dev = open_peer(&pty, mport, "usb").await;
    e2e::sync(&client).await;
    dev.write(b"before\n");
    assert_eq!(next_text(&mut sub).await.1, "before");
    for round in 0..3 {
        drop(dev);
        pty.unplug();
        let g = await_state(mport, "usb", "waiting").await;
        assert!(g["last_error"]["message"].is_string(), "{g}");
        // Stay unplugged across several reopen attempts.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(gateway(mport, "usb").await["state"], "waiting");
        pty.plug();
        dev = open_peer(&pty, mport, "usb").await;
        let line = format!("after {round}");
        dev.write(format!("{line}\n").as_bytes());
        assert_eq!(next_text(&mut sub).await.1, line);
    }
    let g = gateway(mport, "usb").await;
    assert!(g["counters"]["reopens"].as_u64().unwrap() >= 3, "{g}");
    // The server kept serving throughout.
    let (code, _) = http_get(mport, "/healthz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_missing_device_at_start_is_waited_for() {
    let mut pty = PtyPair::new();
    let device = pty.device().display().to_string();
    pty.unplug();
    let (leafd, mport) = leafd_with(
        json!([{ "name": "late", "port": { "device": device, "reopen_max": "300ms" } }]),
        json!({}),
    )
    .await;
    let g = await_state(mport, "late", "waiting").await;
    assert!(
        g["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such device"),
        "{g}"
    );
    let client = leafd.client().await;
    let mut sub = client.subscribe("sensors.>").await.unwrap();
    e2e::sync(&client).await;
    pty.plug();
    let mut dev = open_peer(&pty, mport, "late").await;
    dev.write(b"hello\n");
    assert_eq!(next_text(&mut sub).await.1, "hello");
}

#[test]
fn unknown_device_alias_is_refused_at_startup() {
    let dir = std::env::temp_dir().join(e2e::unique("serialcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("leafd.toml");
    std::fs::write(
        &file,
        "port = 0\n[[serial]]\nname = \"p\"\nport = { device = \"serial9\" }\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(ServerKind::Leafd.binary_path())
        .arg("-c")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("leafd did not refuse the configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("serial[0].port.device") && err.contains("serial9"),
        "{err}"
    );
    // `leafd check-config` finds the same problem without starting.
    let out = std::process::Command::new(ServerKind::Leafd.binary_path())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("serial[0].port.device"), "{err}");
    // With a board that defines the name, the same config is valid.
    std::fs::write(
        &file,
        "port = 0\nboard = \"rpi4\"\n[[serial]]\nname = \"p\"\nport = { device = \"serial0\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(ServerKind::Leafd.binary_path())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serial_frames_reach_the_hub_through_an_uplink() {
    let hub_store = StoreDir::new();
    let leaf_store = StoreDir::new();
    let hub_leaf_port = free_port();
    let hub = TestServer::builder(ServerKind::NatsServer)
        .config(json!({
            "jetstream": { "store_dir": hub_store.path() },
            "leafnodes": { "listen": format!("127.0.0.1:{hub_leaf_port}") },
        }))
        .start()
        .await;
    let pty = PtyPair::new();
    let (_leafd, mport) = leafd_with(
        json!([port("p1", &pty, json!({}))]),
        json!({
            "server_name": "gw1",
            "jetstream": { "store_dir": leaf_store.path() },
            "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{hub_leaf_port}") }],
                           "reconnect": "250ms" },
            "uplinks": [{ "name": "sensors", "subjects": ["sensors.>"], "hub_stream": "SERIAL",
                          "subject_prefix": "gw1", "create_hub_stream": true }],
        }),
    )
    .await;
    let mut dev = open_peer(&pty, mport, "p1").await;
    let lines: Vec<String> = (0..500).map(|i| format!("v={i}")).collect();
    for chunk in lines.chunks(50) {
        let mut bytes = Vec::new();
        for l in chunk {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        dev.write(&bytes);
    }
    let hub_client = hub.client().await;
    let js = jetstream::new(hub_client);
    let stream = bounded_for(Duration::from_secs(20), "hub stream SERIAL", async {
        loop {
            if let Ok(mut s) = js.get_stream("SERIAL").await {
                if s.info().await.map(|i| i.state.messages).unwrap_or(0) >= 500 {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    for (i, want) in lines.iter().enumerate() {
        let m = bounded_for(Duration::from_secs(10), "hub message", msgs.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.subject.as_str(), "gw1.sensors.board.p1");
        assert_eq!(std::str::from_utf8(&m.payload).unwrap(), want);
        let h = m.headers.as_ref().expect("headers");
        assert_eq!(h.get("Leaf-Seq").unwrap().as_str(), (i + 1).to_string());
    }
    assert_eq!(stream.clone().info().await.unwrap().state.messages, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_restarts_ports_with_new_settings_and_refuses_bad_ones() {
    let pty = PtyPair::new();
    let entry = |subject: &str, device: &str| {
        json!([{ "name": "p1", "subject": subject,
                 "port": { "device": device, "reopen_max": "300ms" } }])
    };
    let device = pty.device().display().to_string();
    let (leafd, mport) = leafd_with(entry("before.{port}", &device), json!({})).await;
    let client = leafd.client().await;
    let mut sub = client.subscribe("*.p1").await.unwrap();
    let mut dev = open_peer(&pty, mport, "p1").await;
    e2e::sync(&client).await;
    dev.write(b"one\n");
    assert_eq!(
        next_text(&mut sub).await,
        ("before.p1".into(), "one".into())
    );

    // A new subject template: the port is restarted with it.
    let write_config = |serial: Value| {
        let mut c: Value =
            e2e::serde_json::from_str(&std::fs::read_to_string(leafd.config_path()).unwrap())
                .unwrap();
        c["serial"] = serial;
        std::fs::write(leafd.config_path(), c.to_string()).unwrap();
    };
    write_config(entry("after.{port}", &device));
    leafd.signal(libc::SIGHUP);
    e2e::wait_for_log(&leafd, "gateways restarted", 1).await;
    await_state(mport, "p1", "open").await;
    dev.write(b"two\n");
    let got = next_text(&mut sub).await;
    assert_eq!(got, ("after.p1".into(), "two".into()));

    // A device name no board defines: refused, the running port goes on.
    write_config(entry("never.{port}", "serial7"));
    leafd.signal(libc::SIGHUP);
    e2e::wait_for_log(&leafd, "reload of the gateways refused", 1).await;
    dev.write(b"three\n");
    assert_eq!(
        next_text(&mut sub).await,
        ("after.p1".into(), "three".into())
    );
    assert_eq!(gateway(mport, "p1").await["state"], "open");
}
