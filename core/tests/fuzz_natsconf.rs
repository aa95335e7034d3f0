//! nats-server's config format fuzzed on stable Rust: mutations of valid files, and token
//! soups of the grammar's pieces, through the whole loader (parser, key table,
//! deserialization onto `Config`, validation). Every input must end in a configuration or
//! an error naming a position: no panic, and each case within a time bound (the parser's
//! size, depth and value bounds keep memory small). `cargo test` runs 5,000 + 5,000
//! cases; CI runs it for 30 s (`scripts/fuzz`).

use std::time::{Duration, Instant};

use leaf_core::config::{parse_str, Format};
use leaf_proto::fuzzing::{run, run_generated, Budget, Rng};

/// Files in the forms nats-server's documentation shows.
const SEEDS: &[&[u8]] = &[
    b"listen: 0.0.0.0:4222\nhttp: 8222\nserver_name: edge\nmax_payload: 2MB\n",
    b"port = 4222\n# comment\n// comment\nauthorization {\n  user: a\n  password: \"p w\"\n  timeout: 2\n}\n",
    b"authorization: {\n  users: [\n    {user: a, password: b, permissions: {publish: {allow: [\"x.>\"]}, subscribe: [\"y.*\", \"_INBOX.>\"]}}\n    {user: c, password: $2a$11$abcdefghijklmnopqrstuv}\n  ]\n}\n",
    b"jetstream {\n  store_dir: \"/tmp/js\"\n  max_mem: 1G\n  max_file: 10GB\n  domain: hub\n}\n",
    b"jetstream: enabled\naccounts: {\n  A: { users: [ {user: a, pass: a} ], jetstream: enabled }\n  SYS: { users = [ {user: s, pass: s} ] }\n}\nsystem_account: SYS\n",
    b"leafnodes {\n  remotes = [\n    { url: \"nats-leaf://u:p@hub:7422\", credentials: \"/x.creds\", account: A, deny_imports: [\"a.>\"] }\n  ]\n  reconnect: \"5s\"\n}\n",
    b"leafnodes { listen: 7422, authorization { users [ {user: l, password: p, account: A} ] } }\n",
    b"PASS: secret\nauthorization { USER: me\n  user: $USER; password: $PASS }\nping_interval: \"2m\"; ping_max: 3\n",
    b"{\n  port: 1, debug: true, trace: no, logtime: off\n  text: (\nblock string\n)\n  date: 2023-01-02T03:04:05Z\n  f: 1.5, ip: 127.0.0.1, 'q k': 'raw', \"esc\": \"\\t\\x41\\\\\"\n}\n",
    b"gateway { name: x }\nmqtt { port: 1883 }\ncluster { listen: 6222, routes: [nats://a:6222] }\n",
];

/// The grammar's pieces, for token soups.
const PIECES: &[&str] = &[
    "port",
    "listen",
    "authorization",
    "users",
    "user",
    "password",
    "jetstream",
    "accounts",
    "leafnodes",
    "remotes",
    "url",
    "include",
    "include x.conf",
    "$PASS",
    "$HOME",
    "$",
    ":",
    "=",
    " ",
    "\t",
    "\n",
    "\r\n",
    ",",
    ";",
    "{",
    "}",
    "[",
    "]",
    "(",
    "\n)\n",
    "\"",
    "'",
    "#",
    "//",
    "\\",
    "\\x4",
    "1",
    "-1",
    "4222",
    "1K",
    "1KB",
    "2mb",
    "1.5",
    "0.0.0.0:4222",
    "2023-01-02T03:04:05Z",
    "true",
    "off",
    "\"30s\"",
    "2m",
    "é",
    "\u{feff}",
    "$2a$",
    "99999999999999999999",
];

fn check(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let start = Instant::now();
    match parse_str(&text, Format::NatsConf, "fuzz.conf") {
        Ok(cfg) => {
            let _ = cfg.validate();
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a {} byte input took {:?}",
        input.len(),
        start.elapsed()
    );
}

#[test]
fn nats_config_parser_survives_mutated_files() {
    let cases = run(
        "natsconf (mutated)",
        SEEDS,
        Budget::from_env(5_000, 0x2a7c),
        check,
    );
    assert!(cases >= SEEDS.len() as u64, "ran {cases} cases");
}

#[test]
fn nats_config_parser_survives_token_soup() {
    let soup = |rng: &mut Rng, _case: u64| {
        let len = rng.below(64);
        (0..len)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect::<String>()
            .into_bytes()
    };
    let cases = run_generated(
        "natsconf (token soup)",
        Budget::from_env(5_000, 0x50f7),
        soup,
        check,
    );
    assert!(cases > 0);
}
