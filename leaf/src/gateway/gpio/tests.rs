//! The GPIO pipeline against the simulated kernel and a real in-process server: edges,
//! debounce, sequence gaps, naming through boards, sampling, outputs, reopening.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::gateway::config::gpio::{Bias, Edge, GpioInput, GpioOutput};
use crate::gateway::{Board, SourceState};
use leaf_core::server::{InternalSink, Msg, Publisher, Server, ServerOptions, Shared};
use leaf_proto::headers::get_str;

const MS: u64 = 1_000_000;
const WAIT: Duration = Duration::from_secs(5);

/// A message captured by an internal subscription.
#[derive(Debug)]
struct Captured {
    subject: String,
    headers: Option<Vec<u8>>,
    payload: serde_json::Value,
}

struct Capture(mpsc::UnboundedSender<Captured>);

impl InternalSink for Capture {
    fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
        let _ = self.0.send(Captured {
            subject: String::from_utf8_lossy(msg.subject).into_owned(),
            headers: msg.headers.map(<[u8]>::to_vec),
            payload: serde_json::from_slice(msg.payload)
                .unwrap_or_else(|_| String::from_utf8_lossy(msg.payload).into_owned().into()),
        });
    }
}

/// A server, a simulated kernel and one running group.
struct Harness {
    _server: Server,
    shared: Arc<Shared>,
    sim: SimHandle,
    registry: Registry,
    messages: mpsc::UnboundedReceiver<Captured>,
    replies: mpsc::UnboundedReceiver<Captured>,
    task: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Kernel line names of a Raspberry Pi 4 (`pinctrl-bcm2711`), abridged to the header.
fn pi4_names() -> Vec<String> {
    let mut names = vec!["ID_SDA".to_owned(), "ID_SCL".to_owned()];
    names.extend((2..28).map(|n| format!("GPIO{n}")));
    names.extend(["RGMII_MDIO".to_owned(), "RGMIO_MDC".to_owned()]);
    names
}

/// Kernel line names of a Raspberry Pi 5 whose device tree names header pins (`PIN11`).
fn pi5_names() -> Vec<String> {
    const PINS: [u32; 28] = [
        27, 28, 3, 5, 7, 29, 31, 26, 24, 21, 19, 23, 32, 33, 8, 10, 36, 11, 12, 35, 38, 40, 15, 16,
        18, 22, 37, 13,
    ];
    let mut names: Vec<String> = PINS.iter().map(|p| format!("PIN{p}")).collect();
    names[0] = "ID_SD".into();
    names[1] = "ID_SC".into();
    names
}

async fn harness(board: &str, group: GpioGroup, chip: Option<(&str, Vec<String>)>) -> Harness {
    let server = Server::bind(ServerOptions {
        port: 0,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let shared = server.shared().clone();
    let (tx, messages) = mpsc::unbounded_channel();
    shared
        .global()
        .subscribe_internal(b"gpio.>", None, Arc::new(Capture(tx)))
        .unwrap();
    let (tx, replies) = mpsc::unbounded_channel();
    shared
        .global()
        .subscribe_internal(b"_INBOX.>", None, Arc::new(Capture(tx)))
        .unwrap();
    let (source, sim) = SimSource::new();
    if let Some((label, names)) = chip {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        sim.add_chip(label, "/dev/gpiochip0", &names);
    }
    let board = Board::load(board, None).unwrap();
    let ctx = Context {
        board_name: board.name.clone(),
        server_name: "edge1".into(),
        board: Some(Arc::new(board)),
    };
    let registry = Registry::default();
    let task =
        start_with_source(&Outlet::new(&shared), &registry, &ctx, 0, &group, source).unwrap();
    Harness {
        _server: server,
        shared,
        sim,
        registry,
        messages,
        replies,
        task,
    }
}

impl Harness {
    async fn requested(&self, n: u64) {
        tokio::time::timeout(WAIT, self.sim.wait_requests(n))
            .await
            .expect("lines requested");
    }

    /// The next message the group published (the test's own requests, which the `gpio.>`
    /// capture also sees, are skipped).
    async fn next(&mut self) -> Captured {
        loop {
            let m = tokio::time::timeout(WAIT, self.messages.recv())
                .await
                .expect("a message within 5 s")
                .expect("capture open");
            if !is_request(&m) {
                return m;
            }
        }
    }

    /// Asserts nothing more is published for a while.
    async fn quiet(&mut self) {
        let until = tokio::time::Instant::now() + Duration::from_millis(150);
        while let Ok(got) = tokio::time::timeout_at(until, self.messages.recv()).await {
            assert!(
                got.as_ref().is_some_and(is_request),
                "unexpected message {got:?}"
            );
        }
    }

    /// Sends a request and returns the reply (`None` if none comes within 5 s).
    async fn request(&mut self, subject: &str, body: &str) -> Option<serde_json::Value> {
        self.shared.global().publish(&Msg {
            subject: subject.as_bytes(),
            reply: Some(b"_INBOX.test"),
            headers: None,
            payload: body.as_bytes(),
        });
        tokio::time::timeout(WAIT, self.replies.recv())
            .await
            .ok()
            .flatten()
            .map(|c| c.payload)
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.registry.sources().first().unwrap().clone()
    }

    async fn state(&self, want: SourceState) {
        let stats = self.stats();
        tokio::time::timeout(WAIT, async {
            while stats.state() != want {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("state {want:?}, got {:?}", stats.state()));
    }
}

fn is_request(m: &Captured) -> bool {
    m.subject.ends_with(".set") || m.subject.ends_with(".get")
}

fn input(line: &str) -> GpioInput {
    GpioInput {
        line: line.into(),
        ..GpioInput::default()
    }
}

fn group(inputs: Vec<GpioInput>, outputs: Vec<GpioOutput>) -> GpioGroup {
    GpioGroup {
        name: "panel".into(),
        inputs,
        outputs,
        reopen_max: Duration::from_millis(100),
        ..GpioGroup::default()
    }
}

#[tokio::test]
async fn edges_carry_value_timestamp_sequence_and_headers() {
    let g = group(vec![input("GPIO17")], vec![]);
    let mut h = harness("rpi4", g, Some(("pinctrl-bcm2711", pi4_names()))).await;
    h.requested(1).await;
    assert_eq!(h.stats().state(), SourceState::Open);
    assert!(
        h.stats().target().contains("GPIO17=17"),
        "{}",
        h.stats().target()
    );

    h.sim.set_level("GPIO17", true, 1_000 * MS);
    let m = h.next().await;
    assert_eq!(m.subject, "gpio.rpi4.GPIO17");
    assert_eq!(
        m.payload,
        serde_json::json!({"line": "GPIO17", "value": 1, "edge": "rising",
            "timestamp_ns": 1_000 * MS, "seq": 1, "clock": "realtime"})
    );
    let headers = m.headers.unwrap();
    assert_eq!(get_str(&headers, LINE_HEADER), Some("GPIO17"));
    assert_eq!(get_str(&headers, "Leaf-Seq"), Some("1"));
    assert!(get_str(&headers, "Leaf-Received").is_some());

    h.sim.set_level("GPIO17", false, 1_500 * MS);
    let m = h.next().await;
    assert_eq!(m.payload["edge"], "falling");
    assert_eq!(m.payload["value"], 0);
    assert_eq!(m.payload["timestamp_ns"], 1_500 * MS);
    assert_eq!(m.payload["seq"], 2);
    assert_eq!(get_str(&m.headers.unwrap(), "Leaf-Seq"), Some("2"));
    assert_eq!(h.stats().get("events"), 2);
    assert_eq!(h.stats().get("dropped"), 0);
}

#[tokio::test]
async fn debounce_swallows_short_bounces() {
    let mut i = input("GPIO4");
    i.debounce = Duration::from_millis(10);
    let mut h = harness(
        "rpi4",
        group(vec![i], vec![]),
        Some(("pinctrl-bcm2711", pi4_names())),
    )
    .await;
    h.requested(1).await;

    // A press that bounces for 3 ms: one rising edge, stamped 10 ms after the last bounce.
    h.sim.set_level("GPIO4", true, 100 * MS);
    h.sim.set_level("GPIO4", false, 101 * MS);
    h.sim.set_level("GPIO4", true, 102 * MS);
    h.sim.set_level("GPIO4", false, 102 * MS + 500_000);
    h.sim.set_level("GPIO4", true, 103 * MS);
    h.sim.advance(112 * MS);
    h.quiet().await;
    h.sim.advance(113 * MS);
    let m = h.next().await;
    assert_eq!(m.payload["edge"], "rising");
    assert_eq!(m.payload["timestamp_ns"], 113 * MS);
    assert_eq!(m.payload["seq"], 1);
    h.quiet().await;

    // A 4 ms glitch low: shorter than the period, so nothing.
    h.sim.set_level("GPIO4", false, 200 * MS);
    h.sim.set_level("GPIO4", true, 204 * MS);
    h.sim.advance(300 * MS);
    h.quiet().await;

    // A real release: reported once stable.
    h.sim.set_level("GPIO4", false, 400 * MS);
    h.sim.advance(410 * MS);
    let m = h.next().await;
    assert_eq!(m.payload["edge"], "falling");
    assert_eq!(m.payload["timestamp_ns"], 410 * MS);
    assert_eq!(m.payload["seq"], 2);
    assert_eq!(h.stats().get("events"), 2);
}

#[tokio::test]
async fn sequence_gaps_count_dropped_events() {
    let mut g = group(vec![input("GPIO17"), input("GPIO22")], vec![]);
    g.event_buffer = 4;
    let mut h = harness("rpi4", g, Some(("pinctrl-bcm2711", pi4_names()))).await;
    h.requested(1).await;

    h.sim.set_level("GPIO17", true, MS);
    assert_eq!(h.next().await.payload["seq"], 1);
    // The kernel lost 3 events of GPIO17.
    h.sim.inject_gap("GPIO17", 3);
    h.sim.set_level("GPIO17", false, 2 * MS);
    assert_eq!(h.next().await.payload["seq"], 5);
    assert_eq!(h.stats().get("dropped"), 3);

    // A reader that falls behind: 10 edges into a 4-event buffer lose the oldest 6.
    h.sim.hold(true);
    for n in 0..10u64 {
        h.sim.set_level("GPIO22", n % 2 == 0, (10 + n) * MS);
    }
    h.sim.hold(false);
    let seqs: Vec<serde_json::Value> = [
        h.next().await,
        h.next().await,
        h.next().await,
        h.next().await,
    ]
    .into_iter()
    .map(|m| m.payload["seq"].clone())
    .collect();
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    h.quiet().await;
    assert_eq!(h.stats().get("dropped"), 9);
    assert_eq!(h.stats().get("events"), 6);
}

#[tokio::test]
async fn pi5_lines_resolve_by_board_name_alias_and_offset() {
    // The Pi 5's kernel names its header lines PIN3...PIN40; the board's GPIO names still
    // find them (by offset), and so do header-pin aliases.
    let mut door = input("PIN11");
    door.edge = Edge::Rising;
    let mut alarm = input("GPIO27");
    alarm.name = Some("alarm".into());
    alarm.active_low = true;
    let mut g = group(vec![door, alarm], vec![]);
    g.subject = "site.{server}.{board}.{group}.{line}".into();
    let h = harness("rpi5", g, Some(("pinctrl-rp1", pi5_names()))).await;
    h.requested(1).await;
    let target = h.stats().target();
    assert!(
        target.contains("PIN11=17") && target.contains("alarm=27"),
        "{target}"
    );

    // The capture listens on gpio.>; listen on site.> too.
    let (tx, mut site) = mpsc::unbounded_channel();
    h.shared
        .global()
        .subscribe_internal(b"site.>", None, Arc::new(Capture(tx)))
        .unwrap();
    h.sim.set_level("PIN11", true, MS);
    h.sim.set_level("PIN11", false, 2 * MS); // falling: filtered out
    h.sim.set_level("PIN13", true, 3 * MS); // GPIO27, active low: high is a falling edge
    let a = tokio::time::timeout(WAIT, site.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.subject, "site.edge1.rpi5.panel.PIN11");
    assert_eq!(a.payload["line"], "PIN11");
    assert_eq!(a.payload["edge"], "rising");
    let b = tokio::time::timeout(WAIT, site.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.subject, "site.edge1.rpi5.panel.alarm");
    assert_eq!(b.payload["edge"], "falling");
    assert_eq!(b.payload["value"], 0);
    assert_eq!(get_str(&b.headers.unwrap(), LINE_HEADER), Some("alarm"));
}

#[tokio::test]
async fn sampling_publishes_levels() {
    let mut i = input("GPIO5");
    i.edge = Edge::None;
    i.bias = Bias::PullUp;
    i.sample_interval = Some(Duration::from_millis(20));
    let mut h = harness(
        "rpi4",
        group(vec![i], vec![]),
        Some(("pinctrl-bcm2711", pi4_names())),
    )
    .await;
    h.requested(1).await;
    // The first sample comes at once; the pull-up reads 1.
    let m = h.next().await;
    assert_eq!(m.subject, "gpio.rpi4.GPIO5.level");
    assert_eq!(m.payload, serde_json::json!({"line": "GPIO5", "value": 1}));
    assert!(get_str(&m.headers.unwrap(), "Leaf-Received").is_some());
    h.sim.set_level("GPIO5", false, MS);
    // No edges are watched: only samples, which now read 0.
    loop {
        let m = h.next().await;
        assert_eq!(m.subject, "gpio.rpi4.GPIO5.level");
        if m.payload["value"] == 0 {
            break;
        }
    }
    assert!(h.stats().get("samples") >= 2);
    assert_eq!(h.stats().get("events"), 0);
}

#[tokio::test]
async fn outputs_set_and_get_through_request_reply() {
    let relay = GpioOutput {
        line: "GPIO27".into(),
        ..GpioOutput::default()
    };
    let lamp = GpioOutput {
        line: "PIN12".into(),
        name: Some("lamp".into()),
        initial: true,
        active_low: true,
        ..GpioOutput::default()
    };
    let g = group(vec![input("GPIO17")], vec![relay, lamp]);
    let mut h = harness("rpi4", g, Some(("pinctrl-bcm2711", pi4_names()))).await;
    h.requested(1).await;
    assert_eq!(h.sim.level("GPIO27"), Some(false));
    // lamp is GPIO18, active low, initially on: electrically low.
    assert_eq!(h.sim.level("GPIO18"), Some(false));

    let reply = h.request("gpio.rpi4.GPIO27.set", "1").await.unwrap();
    assert_eq!(reply, serde_json::json!({"line": "GPIO27", "value": 1}));
    assert_eq!(h.sim.level("GPIO27"), Some(true));
    let reply = h.request("gpio.rpi4.GPIO27.get", "").await.unwrap();
    assert_eq!(reply["value"], 1);
    let reply = h
        .request("gpio.rpi4.lamp.set", "{\"value\": false}")
        .await
        .unwrap();
    assert_eq!(reply, serde_json::json!({"line": "lamp", "value": 0}));
    assert_eq!(h.sim.level("GPIO18"), Some(true));

    // Inputs can be read but not set; bad values are refused.
    h.sim.set_level("GPIO17", true, MS);
    let _edge = h.next().await;
    assert_eq!(
        h.request("gpio.rpi4.GPIO17.get", "").await.unwrap()["value"],
        1
    );
    let reply = h.request("gpio.rpi4.GPIO17.set", "1").await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("is an input"),
        "{reply}"
    );
    let reply = h.request("gpio.rpi4.GPIO27.set", "maybe").await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("cannot set"),
        "{reply}"
    );
    assert_eq!(h.sim.level("GPIO27"), Some(true));

    // Lines that are not configured are not served at all.
    let delivered = h.shared.global().publish(&Msg {
        subject: b"gpio.rpi4.GPIO5.set",
        reply: Some(b"_INBOX.x"),
        headers: None,
        payload: b"1",
    });
    assert_eq!(delivered, 1, "only the test's own gpio.> capture");
    assert!(
        tokio::time::timeout(Duration::from_millis(150), h.replies.recv())
            .await
            .is_err()
    );

    let stats = h.stats();
    assert_eq!(stats.get("sets"), 2);
    assert_eq!(stats.get("gets"), 2);
    assert_eq!(stats.get("errors"), 2);
}

#[tokio::test]
async fn unknown_lines_are_refused_at_start_with_the_key() {
    let server = Server::bind(ServerOptions {
        port: 0,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let outlet = Outlet::new(server.shared());
    let board = Arc::new(Board::load("rpi4", None).unwrap());
    let ctx = Context {
        board_name: "rpi4".into(),
        server_name: "s".into(),
        board: Some(board),
    };
    let registry = Registry::default();
    let g = group(vec![input("GPIO17"), input("GPIO40")], vec![]);
    let (source, _sim) = SimSource::new();
    let err = start_with_source(&outlet, &registry, &ctx, 0, &g, source).unwrap_err();
    let GatewayError::Config { key, message } = &err else {
        panic!("{err}");
    };
    assert_eq!(key, "gpio[0].inputs[1].line");
    assert!(
        message.contains("board `rpi4` has no line `GPIO40`"),
        "{message}"
    );

    // The same line twice under two names.
    let g = group(
        vec![input("GPIO17")],
        vec![GpioOutput {
            line: "PIN11".into(),
            ..GpioOutput::default()
        }],
    );
    let (source, _sim) = SimSource::new();
    let err = start_with_source(&outlet, &registry, &ctx, 0, &g, source).unwrap_err();
    assert_eq!(
        err.to_string(),
        "gpio[0].outputs[0].line: `PIN11` is the same line as gpio[0].inputs[0]"
    );

    // Without a board only chip:line works.
    let bare = Context {
        board_name: "board".into(),
        server_name: "s".into(),
        board: None,
    };
    let g = group(vec![input("GPIO17")], vec![]);
    let (source, _sim) = SimSource::new();
    let err = start_with_source(&outlet, &registry, &bare, 0, &g, source).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("gpio[0].inputs[0].line: no `board`"),
        "{err}"
    );
    let g = group(vec![input("/dev/gpiochip0:17")], vec![]);
    let (source, _sim) = SimSource::new();
    let task = start_with_source(&outlet, &registry, &bare, 0, &g, source).unwrap();
    task.abort();
}

#[tokio::test]
async fn missing_chips_are_waited_for_and_reopened() {
    let relay = GpioOutput {
        line: "GPIO27".into(),
        ..GpioOutput::default()
    };
    let g = group(vec![input("GPIO17")], vec![relay]);
    // No chip yet: the group waits and answers requests with an error.
    let mut h = harness("rpi4", g, None).await;
    h.state(SourceState::Waiting).await;
    assert!(h
        .stats()
        .last_error()
        .unwrap()
        .1
        .contains("no GPIO chip `pinctrl-bcm2711`"));
    let reply = h.request("gpio.rpi4.GPIO27.set", "1").await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("is not open"),
        "{reply}"
    );

    // The chip appears: the lines open and work.
    let names = pi4_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    h.sim.add_chip("pinctrl-bcm2711", "/dev/gpiochip0", &names);
    h.requested(1).await;
    h.state(SourceState::Open).await;
    assert_eq!(
        h.request("gpio.rpi4.GPIO27.set", "1").await.unwrap()["value"],
        1
    );
    h.sim.set_level("GPIO17", true, MS);
    assert_eq!(h.next().await.payload["seq"], 1);

    // Unplugged: waiting again; plugged back: reopened, the output driven as last set, and
    // the kernel's sequence numbers start again without counting drops.
    h.sim.remove_chip("pinctrl-bcm2711");
    h.state(SourceState::Waiting).await;
    h.sim.set_level("GPIO27", false, 2 * MS);
    h.sim.restore_chip("pinctrl-bcm2711");
    h.requested(2).await;
    h.state(SourceState::Open).await;
    assert_eq!(h.sim.level("GPIO27"), Some(true));
    h.sim.set_level("GPIO17", false, 3 * MS);
    let m = h.next().await;
    assert_eq!(
        (m.payload["seq"].clone(), m.payload["edge"].clone()),
        (1.into(), "falling".into())
    );
    assert_eq!(h.stats().get("dropped"), 0);

    // A busy line is waited for too.
    h.sim.set_busy("GPIO17", true);
    h.sim.remove_chip("pinctrl-bcm2711");
    h.state(SourceState::Waiting).await;
    h.sim.restore_chip("pinctrl-bcm2711");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(h.stats().state(), SourceState::Waiting);
    assert!(h.stats().last_error().unwrap().1.contains("busy"));
    h.sim.set_busy("GPIO17", false);
    h.requested(3).await;
    h.state(SourceState::Open).await;
}
