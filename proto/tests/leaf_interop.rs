//! Interoperability of the leafnode codec (`leaf_proto::leaf`) with a real nats-server 2.9.
//!
//! Starts a nats-server with a client port and a leafnode port, plays the leaf side on a raw
//! socket with `parse_leaf_op` and the `write_*` leafnode writers, and a plain client on
//! another raw socket, then checks both directions: the hub's `INFO`, `LS+`, `LS-`, `LMSG` and
//! `HMSG` (plain and queue forms) decode as expected, ours reach the client, and the hub's loop
//! `-ERR` decodes.
//!
//! The test needs the `nats-server` binary (`$NATS_SERVER`, else `nats-server` on `PATH`, else
//! `/usr/sbin` or `/usr/bin`) and fails if it is missing. The server it starts is killed (by its
//! own handle) when the test ends, panics included.

mod common;

use std::time::Instant;

use common::{check_server_version, nats_server_bin, Conn, NatsServer, TIMEOUT};

use bytes::BytesMut;
use leaf_proto::{
    parse_leaf_op, write_leaf_op, write_lmsg, write_ls_minus, write_ls_plus, LeafOp, Limits,
};

/// Limits for the leaf side: nats-server applies none on leafnode links.
const LEAF_LIMITS: Limits = Limits {
    max_control_line: 64 * 1024,
    max_payload: 1024 * 1024,
};

/// Leaf side: decodes ops until `want` returns `Some`, answering the hub's `PING`s.
/// Every op decoded on the way is passed to `want`.
fn wait_leaf<T>(conn: &mut Conn, what: &str, mut want: impl FnMut(&LeafOp<'_>) -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        loop {
            let (found, n, ping) = match parse_leaf_op(&conn.buf, &LEAF_LIMITS) {
                Ok(Some((op, n))) => (want(&op), n, op == LeafOp::Ping),
                Ok(None) => break,
                Err(e) => panic!(
                    "parse error {e:?} on {:?}",
                    String::from_utf8_lossy(&conn.buf)
                ),
            };
            conn.buf.drain(..n);
            if ping {
                let mut out = BytesMut::new();
                write_leaf_op(&mut out, &LeafOp::Pong);
                conn.send(&out);
            }
            if let Some(found) = found {
                return found;
            }
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        conn.fill();
    }
}

fn leaf_send(conn: &mut Conn, f: impl FnOnce(&mut BytesMut)) {
    let mut out = BytesMut::new();
    f(&mut out);
    conn.send(&out);
}

/// Leaf side: `PING` and wait for the `PONG`, so the hub has processed everything sent before.
fn leaf_flush(conn: &mut Conn) {
    leaf_send(conn, |o| write_leaf_op(o, &LeafOp::Ping));
    wait_leaf(conn, "PONG", |op| (*op == LeafOp::Pong).then_some(()));
}

/// An owned copy of a decoded message.
#[derive(Debug, PartialEq, Eq)]
struct Msg {
    subject: Vec<u8>,
    reply: Option<Vec<u8>>,
    queues: Vec<Vec<u8>>,
    headers: Option<Vec<u8>>,
    payload: Vec<u8>,
}

fn wait_msg(conn: &mut Conn) -> Msg {
    wait_leaf(conn, "a message", |op| match *op {
        LeafOp::Msg {
            subject,
            reply,
            queues,
            headers,
            payload,
        } => Some(Msg {
            subject: subject.to_vec(),
            reply: reply.map(<[u8]>::to_vec),
            queues: queues.iter().map(<[u8]>::to_vec).collect(),
            headers: headers.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        }),
        _ => None,
    })
}

#[test]
fn leafnode_protocol_against_nats_server() {
    check_server_version(&nats_server_bin());
    let server = NatsServer::start("leaf", |port| {
        format!("leafnodes {{\n  listen: 127.0.0.1:{port}\n}}")
    });

    // The hub speaks first: INFO.
    let mut leaf = Conn::connect(server.other_port);
    let info = wait_leaf(&mut leaf, "INFO", |op| match *op {
        LeafOp::Info(json) => Some(json.to_vec()),
        other => panic!("expected INFO first, got {other:?}"),
    });
    let info: serde_json::Value = serde_json::from_slice(&info).expect("INFO json");
    assert!(info["server_id"].is_string(), "{info}");
    assert_eq!(info["headers"], true, "{info}");

    // CONNECT as a leaf (no "lang": that marks a client on the wrong port). The hub answers
    // with a second INFO carrying connect_info, then its LS+ burst, which includes its
    // loop-detection subject. The PONG to the PING sent right after CONNECT shows that the hub
    // has finished the connect: interest registered before that point may otherwise be lost
    // (nats-server snapshots the account's subscriptions before it starts tracking updates).
    let connect = br#"{"name":"leafproto-test","server_id":"NLEAFPROTOTEST","version":"2.9.10","headers":true,"tls_required":false}"#;
    leaf_send(&mut leaf, |o| {
        write_leaf_op(o, &LeafOp::Connect(connect));
        write_leaf_op(o, &LeafOp::Ping);
    });
    let mut lds = None;
    let mut connect_info = false;
    wait_leaf(
        &mut leaf,
        "INFO with connect_info, then PONG",
        |op| match *op {
            LeafOp::Info(json) => {
                let v: serde_json::Value = serde_json::from_slice(json).expect("INFO json");
                connect_info |= v["connect_info"] == true;
                None
            }
            LeafOp::Sub { subject, .. } if subject.starts_with(b"$LDS.") => {
                lds = Some(subject.to_vec());
                None
            }
            LeafOp::Pong => Some(()),
            _ => None,
        },
    );
    assert!(connect_info, "no INFO with connect_info before the PONG");
    let lds = lds.expect("the hub advertised its $LDS subject");

    // A client subscribes on the hub: plain and queue interest arrive as LS+.
    let mut client = Conn::connect(server.client_port);
    client.wait_bytes(b"\r\n");
    client.send(
        b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n\
          SUB foo 1\r\nSUB bar.q q1 2\r\nSUB bar.q q1 3\r\nPING\r\n",
    );
    client.wait_bytes(b"PONG\r\n");
    let mut plain = false;
    let mut weight = None;
    wait_leaf(&mut leaf, "LS+ foo and LS+ bar.q q1 2", |op| {
        match *op {
            LeafOp::Sub {
                subject: b"foo",
                queue: None,
                weight: None,
            } => plain = true,
            LeafOp::Sub {
                subject: b"bar.q",
                queue: Some(b"q1"),
                weight: w,
            } => weight = w,
            _ => {}
        }
        (plain && weight == Some(2)).then_some(())
    });

    // Leaf -> hub: plain, with reply, with headers, and queue-routed messages reach the client.
    leaf_send(&mut leaf, |o| {
        write_lmsg(o, b"foo", None, &[], None, b"hi");
        write_lmsg(o, b"foo", Some(b"_INBOX.r"), &[], None, b"yo");
        write_lmsg(
            o,
            b"foo",
            None,
            &[],
            Some(b"NATS/1.0\r\nK: v\r\n\r\n"),
            b"h!",
        );
        write_lmsg(o, b"bar.q", None, &[b"q1"], None, b"qq");
        write_lmsg(o, b"bar.q", Some(b"_INBOX.q"), &[b"q1"], None, b"qr");
    });
    client.wait_bytes(b"MSG foo 1 2\r\nhi\r\n");
    client.wait_bytes(b"MSG foo 1 _INBOX.r 2\r\nyo\r\n");
    client.wait_bytes(b"HMSG foo 1 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nh!\r\n");
    client.wait_bytes(b" 2\r\nqq\r\n");
    client.wait_bytes(b" _INBOX.q 2\r\nqr\r\n");

    // Hub -> leaf: our interest, then the client's publications arrive as LMSG/HMSG.
    leaf_send(&mut leaf, |o| {
        write_ls_plus(o, b"baz", None);
        write_ls_plus(o, b"work", Some((b"wq", 2)));
    });
    leaf_flush(&mut leaf);
    client.send(
        b"PUB baz 3\r\nabc\r\n\
          PUB baz reply.1 0\r\n\r\n\
          HPUB baz 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
          PUB work 1\r\nw\r\n\
          PUB work r.2 1\r\nx\r\n\
          HPUB work r.3 12 13\r\nNATS/1.0\r\n\r\ny\r\n\
          PING\r\n",
    );
    client.wait_bytes(b"PONG\r\n");
    let expect = |subject: &[u8],
                  reply: Option<&[u8]>,
                  queues: &[&[u8]],
                  headers: Option<&[u8]>,
                  payload: &[u8]| Msg {
        subject: subject.to_vec(),
        reply: reply.map(<[u8]>::to_vec),
        queues: queues.iter().map(|q| q.to_vec()).collect(),
        headers: headers.map(<[u8]>::to_vec),
        payload: payload.to_vec(),
    };
    let hdr: &[u8] = b"NATS/1.0\r\n\r\n";
    assert_eq!(wait_msg(&mut leaf), expect(b"baz", None, &[], None, b"abc"));
    assert_eq!(
        wait_msg(&mut leaf),
        expect(b"baz", Some(b"reply.1"), &[], None, b"")
    );
    assert_eq!(
        wait_msg(&mut leaf),
        expect(b"baz", None, &[], Some(hdr), b"hi")
    );
    assert_eq!(
        wait_msg(&mut leaf),
        expect(b"work", None, &[b"wq"], None, b"w")
    );
    assert_eq!(
        wait_msg(&mut leaf),
        expect(b"work", Some(b"r.2"), &[b"wq"], None, b"x")
    );
    assert_eq!(
        wait_msg(&mut leaf),
        expect(b"work", Some(b"r.3"), &[b"wq"], Some(hdr), b"y")
    );

    // Lost interest arrives as LS-; ours is accepted.
    client.send(b"UNSUB 1\r\nPING\r\n");
    client.wait_bytes(b"PONG\r\n");
    wait_leaf(&mut leaf, "LS- foo", |op| {
        (*op == LeafOp::Unsub {
            subject: b"foo",
            queue: None,
        })
        .then_some(())
    });
    leaf_send(&mut leaf, |o| {
        write_ls_minus(o, b"baz", None);
        write_ls_minus(o, b"work", Some(b"wq"));
    });
    leaf_flush(&mut leaf);

    // Sending the hub its own loop-detection subject back makes it report a loop.
    leaf_send(&mut leaf, |o| write_ls_plus(o, &lds, None));
    let text = wait_leaf(&mut leaf, "-ERR", |op| match *op {
        LeafOp::Err(text) => Some(text.to_vec()),
        _ => None,
    });
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("'Loop detected"), "{text}");
    assert!(text.ends_with('\''), "{text}");
    drop(server);
}
