//! The route parser fuzzed on stable Rust: mutations of valid route ops through
//! `leaf_proto::fuzzing::check_route_ops` (the `parse_route` libFuzzer target's checks).
//! `cargo test` runs 20,000 cases; CI runs it for 60 s (`LEAF_FUZZ_SECS=60`, `scripts/fuzz`).

use leaf_proto::fuzzing::{check_route_ops, run, Budget};

/// Valid route traffic, each behind a limits selector byte (even: the default limits).
const SEEDS: &[&[u8]] = &[
    b"\x00INFO {\"server_id\":\"N\",\"cluster\":\"C\",\"headers\":true,\"connect_urls\":[\"127.0.0.1:4222\"]}\r\n",
    b"\x00CONNECT {\"echo\":true,\"name\":\"N2\",\"cluster\":\"C\",\"headers\":true}\r\n",
    b"\x00PING\r\nPONG\r\n+OK\r\n-ERR 'Rejecting connection, cluster name does not match'\r\n",
    b"\x00RS+ $G foo.bar\r\nRS+ ACC foo.* q 3\r\nRS- $G foo.bar\r\nRS- ACC foo.* q\r\n",
    b"\x00RMSG $G foo.bar 5\r\nhello\r\nRMSG A foo.bar reply.x 2\r\nhi\r\n",
    b"\x00RMSG $G foo.bar + reply q1 q2 3\r\nabc\r\nRMSG $G foo.bar | q1 1\r\nx\r\n",
    b"\x00HMSG $G foo.bar 12 14\r\nNATS/1.0\r\n\r\nab\r\n",
    b"\x00HMSG A foo.bar + reply q 22 25\r\nNATS/1.0\r\nA: b\r\n\r\n\r\nabc\r\n",
    b"\x07RS+ $G a.very.long.subject.that.breaks.tiny.limits\r\nRMSG $G a 100\r\n",
];

#[test]
fn route_parser_survives_mutated_input() {
    let cases = run(
        "route parser",
        SEEDS,
        Budget::from_env(20_000, 0x2047e),
        check_route_ops,
    );
    assert!(cases >= SEEDS.len() as u64, "ran {cases} cases");
}
