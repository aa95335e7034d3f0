//! Interoperability of the route codec (`leaf_proto::route`) with a real nats-server 2.9.
//!
//! Starts a nats-server with a client port and a cluster port, plays a second cluster member
//! on a raw socket with `parse_route_op` and the route writers, and a plain client on another
//! raw socket, then checks both directions: nats-server's route `INFO`, `RS+` (plain and queue,
//! with weights), `RS-`, `RMSG` and `HMSG` (plain, reply and queue forms) decode as expected,
//! and ours reach the client, queue groups included.
//!
//! Needs the `nats-server` binary (see `common`); the server is killed when the test ends.

mod common;

use std::time::Instant;

use bytes::BytesMut;
use common::{check_server_version, nats_server_bin, Conn, NatsServer, TIMEOUT};
use leaf_proto::{
    parse_route_op, write_rmsg, write_route_op, write_rs_minus, write_rs_plus, Limits, RouteOp,
};

/// Limits for the route side: generous, as for leafnode links.
const ROUTE_LIMITS: Limits = Limits {
    max_control_line: 64 * 1024,
    max_payload: 1024 * 1024,
};

/// Decodes route ops until `want` returns `Some`, answering nats-server's `PING`s. Every op
/// decoded on the way is passed to `want`.
fn wait_route<T>(
    conn: &mut Conn,
    what: &str,
    mut want: impl FnMut(&RouteOp<'_>) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        loop {
            let (found, n, ping) = match parse_route_op(&conn.buf, &ROUTE_LIMITS) {
                Ok(Some((op, n))) => (want(&op), n, op == RouteOp::Ping),
                Ok(None) => break,
                Err(e) => panic!(
                    "parse error {e:?} on {:?}",
                    String::from_utf8_lossy(&conn.buf)
                ),
            };
            conn.buf.drain(..n);
            if ping {
                route_send(conn, |o| write_route_op(o, &RouteOp::Pong));
            }
            if let Some(found) = found {
                return found;
            }
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        conn.fill();
    }
}

fn route_send(conn: &mut Conn, f: impl FnOnce(&mut BytesMut)) {
    let mut out = BytesMut::new();
    f(&mut out);
    conn.send(&out);
}

/// `PING` and wait for the `PONG`: nats-server has processed everything sent before.
fn route_flush(conn: &mut Conn) {
    route_send(conn, |o| write_route_op(o, &RouteOp::Ping));
    wait_route(conn, "PONG", |op| (*op == RouteOp::Pong).then_some(()));
}

/// An owned copy of a decoded route message.
#[derive(Debug, PartialEq, Eq)]
struct Msg {
    account: Vec<u8>,
    subject: Vec<u8>,
    reply: Option<Vec<u8>>,
    queues: Vec<Vec<u8>>,
    headers: Option<Vec<u8>>,
    payload: Vec<u8>,
}

fn wait_msg(conn: &mut Conn) -> Msg {
    wait_route(conn, "a message", |op| match *op {
        RouteOp::Msg {
            account,
            subject,
            reply,
            queues,
            headers,
            payload,
        } => Some(Msg {
            account: account.to_vec(),
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
fn route_protocol_against_nats_server() {
    check_server_version(&nats_server_bin());
    let server = NatsServer::start("route", |port| {
        format!("server_name: n1\ncluster {{\n  name: C\n  listen: 127.0.0.1:{port}\n}}")
    });

    // The accepting server speaks first: INFO with its id, cluster name and headers support.
    let mut route = Conn::connect(server.other_port);
    let info = wait_route(&mut route, "INFO", |op| match *op {
        RouteOp::Info(json) => Some(json.to_vec()),
        other => panic!("expected INFO first, got {other:?}"),
    });
    let info: serde_json::Value = serde_json::from_slice(&info).expect("INFO json");
    assert!(info["server_id"].is_string(), "{info}");
    assert_eq!(info["cluster"], "C", "{info}");
    assert_eq!(info["headers"], true, "{info}");

    // The dialing side sends CONNECT (its "name" is its server id; no "lang", which marks a
    // client) and then its own INFO; the route is registered once the INFO is processed.
    let connect = br#"{"echo":true,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,"name":"NROUTEPROTOTEST","cluster":"C"}"#;
    let our_info = br#"{"server_id":"NROUTEPROTOTEST","server_name":"rt","version":"2.9.10","proto":1,"host":"127.0.0.1","port":1,"headers":true,"cluster":"C","max_payload":1048576}"#;
    route_send(&mut route, |o| {
        write_route_op(o, &RouteOp::Connect(connect));
        write_route_op(o, &RouteOp::Info(our_info));
    });
    route_flush(&mut route);

    // A client subscribes on nats-server: plain and queue interest arrive as RS+ in `$G`,
    // the queue interest with the number of members as its weight.
    let mut client = Conn::connect(server.client_port);
    client.wait_bytes(b"\r\n");
    client.send(
        b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n\
          SUB foo 1\r\nSUB bar.q q1 2\r\nSUB bar.q q1 3\r\nPING\r\n",
    );
    client.wait_bytes(b"PONG\r\n");
    let mut plain = false;
    let mut weight = None;
    wait_route(&mut route, "RS+ $G foo and RS+ $G bar.q q1 2", |op| {
        match *op {
            RouteOp::Sub {
                account: b"$G",
                subject: b"foo",
                queue: None,
                weight: None,
            } => plain = true,
            RouteOp::Sub {
                account: b"$G",
                subject: b"bar.q",
                queue: Some(b"q1"),
                weight: w,
            } => weight = w,
            _ => {}
        }
        (plain && weight == Some(2)).then_some(())
    });

    // Route -> nats-server: plain, with reply, with headers, and queue-routed messages reach
    // the client (a queue-routed copy only to the groups it lists).
    route_send(&mut route, |o| {
        write_rmsg(o, b"$G", b"foo", None, &[], None, b"hi");
        write_rmsg(o, b"$G", b"foo", Some(b"_INBOX.r"), &[], None, b"yo");
        write_rmsg(
            o,
            b"$G",
            b"foo",
            None,
            &[],
            Some(b"NATS/1.0\r\nK: v\r\n\r\n"),
            b"h!",
        );
        write_rmsg(o, b"$G", b"bar.q", None, &[b"q1"], None, b"qq");
        write_rmsg(o, b"$G", b"bar.q", Some(b"_INBOX.q"), &[b"q1"], None, b"qr");
    });
    client.wait_bytes(b"MSG foo 1 2\r\nhi\r\n");
    client.wait_bytes(b"MSG foo 1 _INBOX.r 2\r\nyo\r\n");
    client.wait_bytes(b"HMSG foo 1 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nh!\r\n");
    client.wait_bytes(b" 2\r\nqq\r\n");
    client.wait_bytes(b" _INBOX.q 2\r\nqr\r\n");

    // nats-server -> route: our interest, then the client's publications arrive as RMSG/HMSG,
    // a queue group's copy with its group listed.
    route_send(&mut route, |o| {
        write_rs_plus(o, b"$G", b"baz", None);
        write_rs_plus(o, b"$G", b"work", Some((b"wq", 2)));
    });
    route_flush(&mut route);
    client.send(
        b"PUB baz 2\r\nhi\r\nPUB baz _INBOX.x 2\r\nyo\r\n\
          HPUB baz 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nh!\r\n\
          PUB work _INBOX.w 2\r\nwk\r\nPING\r\n",
    );
    client.wait_bytes(b"PONG\r\n");
    let expect = |subject: &[u8],
                  reply: Option<&[u8]>,
                  queues: &[&[u8]],
                  headers: Option<Vec<u8>>,
                  payload: &[u8]| Msg {
        account: b"$G".to_vec(),
        subject: subject.to_vec(),
        reply: reply.map(<[u8]>::to_vec),
        queues: queues.iter().map(|q| q.to_vec()).collect(),
        headers,
        payload: payload.to_vec(),
    };
    assert_eq!(wait_msg(&mut route), expect(b"baz", None, &[], None, b"hi"));
    assert_eq!(
        wait_msg(&mut route),
        expect(b"baz", Some(b"_INBOX.x"), &[], None, b"yo")
    );
    assert_eq!(
        wait_msg(&mut route),
        expect(
            b"baz",
            None,
            &[],
            Some(b"NATS/1.0\r\nK: v\r\n\r\n".to_vec()),
            b"h!"
        )
    );
    assert_eq!(
        wait_msg(&mut route),
        expect(b"work", Some(b"_INBOX.w"), &[b"wq"], None, b"wk")
    );

    // The client leaves: RS- for its plain interest.
    client.send(b"UNSUB 1\r\nPING\r\n");
    client.wait_bytes(b"PONG\r\n");
    wait_route(&mut route, "RS- $G foo", |op| {
        matches!(
            *op,
            RouteOp::Unsub {
                account: b"$G",
                subject: b"foo",
                queue: None
            }
        )
        .then_some(())
    });

    // Our interest withdrawn: nothing more for it (the PONG comes first).
    route_send(&mut route, |o| write_rs_minus(o, b"$G", b"baz", None));
    route_flush(&mut route);
    client.send(b"PUB baz 4\r\ngone\r\nPING\r\n");
    client.wait_bytes(b"PONG\r\n");
    route_send(&mut route, |o| write_route_op(o, &RouteOp::Ping));
    wait_route(&mut route, "PONG, no message", |op| match *op {
        RouteOp::Pong => Some(()),
        RouteOp::Msg { subject, .. } => {
            panic!("a message after RS-: {}", String::from_utf8_lossy(subject))
        }
        _ => None,
    });
}
