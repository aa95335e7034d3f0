//! The leafnode parser fuzzed on stable Rust: mutations of valid leafnode ops through
//! `leaf_proto::fuzzing::check_leaf_ops` (the `parse_leaf` libFuzzer target's checks).
//! `cargo test` runs 20,000 cases; CI runs it for 60 s (`LEAF_FUZZ_SECS=60`, `scripts/fuzz`).

use leaf_proto::fuzzing::{check_leaf_ops, run, Budget};

/// Valid leafnode traffic, each behind a limits selector byte (even: the default limits).
const SEEDS: &[&[u8]] = &[
    b"\x00INFO {\"server_id\":\"N\",\"leafnode_urls\":[\"127.0.0.1:7422\"],\"nonce\":\"abc\"}\r\n",
    b"\x00CONNECT {\"name\":\"leaf\",\"headers\":true,\"deny_pub\":[\"x.>\"]}\r\n",
    b"\x00PING\r\nPONG\r\n+OK\r\n-ERR 'Loop detected'\r\n",
    b"\x00LS+ foo.bar\r\nLS+ foo.* q 3\r\nLS- foo.bar\r\nLS- foo.* q\r\n",
    b"\x00LMSG foo.bar 5\r\nhello\r\nLMSG foo.bar reply.x 2\r\nhi\r\n",
    b"\x00LMSG foo.bar + reply q1 q2 3\r\nabc\r\nLMSG foo.bar | q1 1\r\nx\r\n",
    b"\x00HMSG foo.bar 12 14\r\nNATS/1.0\r\n\r\nab\r\n",
    b"\x00HMSG foo.bar reply + q 22 25\r\nNATS/1.0\r\nA: b\r\n\r\n\r\nabc\r\n",
    b"\x07LS+ a.very.long.subject.that.breaks.tiny.limits\r\nLMSG a 100\r\n",
];

#[test]
fn leafnode_parser_survives_mutated_input() {
    let cases = run(
        "leafnode parser",
        SEEDS,
        Budget::from_env(20_000, 0x1eaf),
        check_leaf_ops,
    );
    assert!(cases >= SEEDS.len() as u64, "ran {cases} cases");
}
