//! The grammar, errors with positions, includes, variables, bounds and the key table.

use super::keys::{rule, Kind, RULES};
use super::*;
use crate::config::{parse_str, ConfigError, Format};

fn map(text: &str) -> Map {
    parse(text, "t.conf", None).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn value<'a>(m: &'a Map, key: &str) -> &'a Value {
    &m.get(key)
        .unwrap_or_else(|| panic!("no key `{key}` in {m:?}"))
        .value
        .value
}

fn err(text: &str) -> ParseError {
    parse(text, "t.conf", None).expect_err(text)
}

fn s(v: &str) -> Value {
    Value::Str(v.to_owned())
}

#[test]
fn separators_and_comments() {
    let m = map("a: 1\nb = 2\nc 3\n# comment\n// also\nd: 4 # trailing\ne: 5; f: 6, g: 7\n");
    for (k, n) in [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
        ("e", 5),
        ("f", 6),
        ("g", 7),
    ] {
        assert_eq!(value(&m, k), &Value::Int(n), "{k}");
    }
    // The whole file may sit in braces.
    let m = map("{\n  port: 4222\n  host: h\n}\n");
    assert_eq!(value(&m, "port"), &Value::Int(4222));
    assert_eq!(value(&m, "host"), &s("h"));
}

#[test]
fn blocks_and_arrays() {
    let m = map(
        "a { x: 1, y: 2 }\nb: {\n  x: 1\n  y { z = true }\n}\nc: [1, 2, 3]\nd: [\n  one\n  \"two\"\n  {k: v}\n]\ne: []\nf {}\n",
    );
    let Value::Map(a) = value(&m, "a") else {
        panic!()
    };
    assert_eq!(value(a, "y"), &Value::Int(2));
    let Value::Map(b) = value(&m, "b") else {
        panic!()
    };
    let Value::Map(y) = value(b, "y") else {
        panic!()
    };
    assert_eq!(value(y, "z"), &Value::Bool(true));
    let Value::Array(c) = value(&m, "c") else {
        panic!()
    };
    assert_eq!(c.len(), 3);
    let Value::Array(d) = value(&m, "d") else {
        panic!()
    };
    assert_eq!(d[0].value, s("one"));
    assert_eq!(d[1].value, s("two"));
    assert!(matches!(&d[2].value, Value::Map(m) if value(m, "k") == &s("v")));
    assert_eq!(value(&m, "e"), &Value::Array(vec![]));
    assert_eq!(value(&m, "f"), &Value::Map(Map::default()));
}

#[test]
fn strings() {
    let m = map(concat!(
        "a: \"x y\\t\\\"q\\\"\\\\ \\x41\"\n",
        "b: 'raw \\t $X'\n",
        "c: bare-string.with/chars\n",
        "d: nats://user:pw@host:4222\n",
        "e: 0.0.0.0:4222\n",
        "f: 127.0.0.1\n",
        "g: localhost:8222\n",
        "h: (\nline one\nline \"two\"\n)\n",
        "i: \"multi\nline\"\n",
        "\"quoted key\": 1\n",
        "'single key' = 2\n",
        "j: $2a$11$abcdefghijklmnopqrstuv\n",
    ));
    assert_eq!(value(&m, "a"), &s("x y\t\"q\"\\ A"));
    assert_eq!(value(&m, "b"), &s("raw \\t $X"));
    assert_eq!(value(&m, "c"), &s("bare-string.with/chars"));
    assert_eq!(value(&m, "d"), &s("nats://user:pw@host:4222"));
    assert_eq!(value(&m, "e"), &s("0.0.0.0:4222"));
    assert_eq!(value(&m, "f"), &s("127.0.0.1"));
    assert_eq!(value(&m, "g"), &s("localhost:8222"));
    assert_eq!(value(&m, "h"), &s("\nline one\nline \"two\""));
    assert_eq!(value(&m, "i"), &s("multi\nline"));
    assert_eq!(value(&m, "quoted key"), &Value::Int(1));
    assert_eq!(value(&m, "single key"), &Value::Int(2));
    assert_eq!(value(&m, "j"), &s("$2a$11$abcdefghijklmnopqrstuv"));
}

#[test]
fn numbers_sizes_booleans_dates_durations() {
    let m = map(concat!(
        "a: 42\nb: -7\nc: 1.5\nd: 1K\ne: 1KB\nf: 1kib\ng: 2MB\nh: 2M\ni: 1G\nj: 1GB\nk: 3TB\n",
        "l: true\nm: FALSE\nn: yes\no: No\np: on\nq: off\n",
        "r: 2023-01-02T03:04:05Z\n",
        "s: \"30s\"\nt: 30s\nu: 500ms\nv: 1h30m\nw: 2m\nx: 4222abc\n",
    ));
    let ints = [
        ("a", 42),
        ("b", -7),
        ("d", 1000),
        ("e", 1024),
        ("f", 1024),
        ("g", 2 << 20),
        ("h", 2_000_000),
        ("i", 1_000_000_000),
        ("j", 1 << 30),
        ("k", 3 << 40),
        // Bare `2m` is two million, as in nats-server (`m` is mega).
        ("w", 2_000_000),
    ];
    for (k, n) in ints {
        assert_eq!(value(&m, k), &Value::Int(n), "{k}");
    }
    assert_eq!(value(&m, "c"), &Value::Float(1.5));
    for (k, b) in [
        ("l", true),
        ("m", false),
        ("n", true),
        ("o", false),
        ("p", true),
        ("q", false),
    ] {
        assert_eq!(value(&m, k), &Value::Bool(b), "{k}");
    }
    assert_eq!(value(&m, "r"), &s("2023-01-02T03:04:05Z"));
    for (k, text) in [
        ("s", "30s"),
        ("t", "30s"),
        ("u", "500ms"),
        ("v", "1h30m"),
        ("x", "4222abc"),
    ] {
        assert_eq!(value(&m, k), &s(text), "{k}");
    }
}

#[test]
fn later_keys_replace_earlier_ones_in_place() {
    let m = map("a: 1\nb: 2\na: 3\n");
    let keys: Vec<&str> = m.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(value(&m, "a"), &Value::Int(3));
}

#[test]
fn positions_of_keys_and_values() {
    let m = map("a: 1\n  bb = { c: x }\n");
    let bb = m.get("bb").unwrap();
    assert_eq!((bb.key_pos.line, bb.key_pos.column), (2, 3));
    assert_eq!((bb.value.pos.line, bb.value.pos.column), (2, 8));
    let Value::Map(inner) = &bb.value.value else {
        panic!()
    };
    let c = inner.get("c").unwrap();
    assert_eq!((c.key_pos.line, c.key_pos.column), (2, 10));
    assert_eq!(c.key_pos.to_string(), "t.conf:2:10");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let cases = [
        ("a: 1\nb: \"open\n", (2, 4), "unclosed"),
        ("a: {\n  b: 1\n", (1, 4), "never closed"),
        ("a: [1, 2\n", (1, 4), "never closed"),
        ("a: 1 2\n", (1, 6), "expected a new line"),
        ("a: { b: 1 c }\n", (1, 11), "expected"),
        ("a:\n", (1, 3), "expected a value for `a`"),
        ("a: \"\\q\"\n", (1, 7), "invalid escape"),
        ("a: .5\n", (1, 4), "must start with a digit"),
        ("a: 99999999999999999999\n", (1, 4), "out of range"),
        ("a: 9999999999GB\n", (1, 4), "out of range"),
        ("a: 1kbb\n", (1, 4), "invalid size suffix"),
        ("a: 2023-01-02\n", (1, 14), "date"),
        ("a: [,]\n", (1, 5), "unexpected `,`"),
        ("a: (\nno end\n", (1, 4), "unclosed `(`"),
        (": 1\n", (1, 1), "expected a key"),
    ];
    for (text, (line, column), message) in cases {
        let e = err(text);
        assert_eq!((e.pos.line, e.pos.column), (line, column), "{text:?}: {e}");
        assert!(e.message.contains(message), "{text:?}: {e}");
    }
}

#[test]
fn variables_from_the_file_and_enclosing_blocks() {
    let m = map(concat!(
        "PASS: s3cret\nlimit: 1MB\n",
        "authorization {\n  USER: alice\n  users [ { user: $USER, password: $PASS } ]\n}\n",
        "max_payload: $limit\n",
        "quoted: \"$PASS\"\n",
    ));
    assert_eq!(value(&m, "max_payload"), &Value::Int(1 << 20));
    assert_eq!(value(&m, "quoted"), &s("$PASS"));
    assert!(m.get("PASS").unwrap().used_as_variable);
    let Value::Map(auth) = value(&m, "authorization") else {
        panic!()
    };
    let Value::Array(users) = value(auth, "users") else {
        panic!()
    };
    let Value::Map(user) = &users[0].value else {
        panic!()
    };
    assert_eq!(value(user, "user"), &s("alice"));
    assert_eq!(value(user, "password"), &s("s3cret"));
    // The value's position is the reference's.
    let pw = user.get("password").unwrap();
    assert_eq!(pw.value.pos.line, 5);
    // A variable must be defined before it is used.
    let e = err("a: $LATER_UNDEFINED_XYZ\nLATER_UNDEFINED_XYZ: 1\n");
    assert!(
        e.message.contains("`$LATER_UNDEFINED_XYZ` is not defined"),
        "{e}"
    );
    assert_eq!((e.pos.line, e.pos.column), (1, 4));
}

#[test]
fn variables_from_the_environment() {
    // Names no other test uses; set once (tests run in threads of one process).
    std::env::set_var("LEAF_NATSCONF_TEST_PORT", "4333");
    std::env::set_var("LEAF_NATSCONF_TEST_NAME", "edge-1");
    std::env::set_var("LEAF_NATSCONF_TEST_LOOP", "$LEAF_NATSCONF_TEST_LOOP");
    std::env::set_var("LEAF_NATSCONF_TEST_BAD", "\"open");
    let m = map("port: $LEAF_NATSCONF_TEST_PORT\nname: $LEAF_NATSCONF_TEST_NAME\n");
    assert_eq!(value(&m, "port"), &Value::Int(4333));
    assert_eq!(value(&m, "name"), &s("edge-1"));
    let e = err("a: $LEAF_NATSCONF_TEST_LOOP\n");
    assert!(e.message.contains("deep"), "{e}");
    let e = err("x: 1\na: $LEAF_NATSCONF_TEST_BAD\n");
    assert!(e.message.contains("LEAF_NATSCONF_TEST_BAD"), "{e}");
    assert_eq!(e.pos.line, 2);
}

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "leaf-natsconf-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn includes_relative_to_the_including_file() {
    let dir = temp_dir("include");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("main.conf"),
        "port: 1\ninclude sub/a.conf\nauth {\n  include 'sub/b.conf'\n}\n",
    )
    .unwrap();
    // Relative to sub/a.conf, not to the main file.
    std::fs::write(
        dir.join("sub/a.conf"),
        "host: h\ninclude \"c.conf\"\nport: 2\n",
    )
    .unwrap();
    std::fs::write(dir.join("sub/b.conf"), "user: u\n").unwrap();
    std::fs::write(dir.join("sub/c.conf"), "name: from-c\n").unwrap();
    let path = dir.join("main.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let m = parse(&text, "main.conf", Some(&path)).unwrap();
    assert_eq!(value(&m, "port"), &Value::Int(2));
    assert_eq!(value(&m, "host"), &s("h"));
    assert_eq!(value(&m, "name"), &s("from-c"));
    let Value::Map(auth) = value(&m, "auth") else {
        panic!()
    };
    assert_eq!(value(auth, "user"), &s("u"));
    // Positions in an included file name that file.
    assert!(m.get("name").unwrap().key_pos.file.ends_with("c.conf"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn include_cycles_depth_and_missing_files_are_refused() {
    let dir = temp_dir("cycle");
    std::fs::write(dir.join("a.conf"), "x: 1\ninclude b.conf\n").unwrap();
    std::fs::write(dir.join("b.conf"), "include a.conf\n").unwrap();
    std::fs::write(dir.join("self.conf"), "include self.conf\n").unwrap();
    for name in ["a.conf", "self.conf"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let e = parse(&text, name, Some(&path)).unwrap_err();
        assert!(e.message.contains("include cycle"), "{name}: {e}");
    }
    // A chain deeper than the bound.
    for i in 0..=MAX_INCLUDE_DEPTH {
        std::fs::write(
            dir.join(format!("d{i}.conf")),
            format!("include d{}.conf\n", i + 1),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join(format!("d{}.conf", MAX_INCLUDE_DEPTH + 1)),
        "x: 1\n",
    )
    .unwrap();
    let path = dir.join("d0.conf");
    let e = parse("include d0.conf\n", "top.conf", Some(&dir.join("top.conf"))).unwrap_err();
    assert!(e.message.contains("deeper"), "{e}");
    let _ = path;
    let e = parse(
        "x: 1\ninclude missing.conf\n",
        "t.conf",
        Some(&dir.join("t.conf")),
    )
    .unwrap_err();
    assert!(e.message.contains("include `missing.conf`"), "{e}");
    assert_eq!((e.pos.line, e.pos.column), (2, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bounds() {
    let deep = format!(
        "a: {}{}\n",
        "[".repeat(MAX_DEPTH + 1),
        "]".repeat(MAX_DEPTH + 1)
    );
    assert!(err(&deep).message.contains("nested deeper"));
    let big = format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
    assert!(err(&big).message.contains("too large"));
    // Variables that copy values grow exponentially: the node budget stops them.
    let mut text = String::from("v0: [1, 2, 3, 4, 5, 6, 7, 8]\n");
    for i in 1..12 {
        let prev = format!("$v{}", i - 1);
        text.push_str(&format!(
            "v{i}: [{prev}, {prev}, {prev}, {prev}, {prev}, {prev}, {prev}, {prev}]\n"
        ));
    }
    assert!(err(&text).message.contains("values"));
}

fn conf(text: &str) -> Result<crate::config::Config, ConfigError> {
    parse_str(text, Format::NatsConf, "leafd.conf")
}

#[test]
fn nats_server_names_map_onto_ours() {
    let cfg = conf(concat!(
        "listen: 0.0.0.0:4333\nhttp: 0.0.0.0:8333\nserver_name: edge\nmax_payload: 2MB\n",
        "max_conn: 10\nping_interval: \"30s\"\nwrite_deadline: 5s\n",
        "leaf { listen: 7433\n  remotes [ { url: \"nats-leaf://hub:7422\", deny_import: \"a.>\" } ] }\n",
        "jetstream { store: /tmp/js, max_mem: 1G, max_file: 10GB, domain: edge }\n",
        "system: SYS\naccounts { SYS { users [ {user: sys, pass: x} ] } }\n",
    ))
    .unwrap();
    assert_eq!((cfg.host.as_str(), cfg.port), ("0.0.0.0", 4333));
    assert_eq!(cfg.http_port, Some(8333));
    assert_eq!(cfg.max_payload, 2 << 20);
    assert_eq!(cfg.max_connections, 10);
    assert_eq!(cfg.ping_interval, std::time::Duration::from_secs(30));
    assert_eq!(cfg.write_deadline, std::time::Duration::from_secs(5));
    assert_eq!(cfg.leafnodes.listen.as_ref().unwrap().port, 7433);
    assert_eq!(cfg.leafnodes.remotes[0].deny_imports, ["a.>"]);
    assert!(cfg.jetstream.enabled);
    assert_eq!(cfg.jetstream.domain.as_deref(), Some("edge"));
    assert_eq!(cfg.jetstream.max_memory_store, Some(1_000_000_000));
    assert_eq!(cfg.jetstream.max_file_store, Some(10 << 30));
    assert_eq!(cfg.system_account.as_deref(), Some("SYS"));
    let cfg = conf("port: 4444\nmonitor_port: 8222\njetstream: enabled\nnet: 10.0.0.1\n").unwrap();
    assert_eq!((cfg.port, cfg.http_port), (4444, Some(8222)));
    assert_eq!(cfg.host, "10.0.0.1");
    assert!(cfg.jetstream.enabled);
    let cfg = conf("http: 8222\n").unwrap();
    assert_eq!(cfg.http_port, Some(8222));
}

#[test]
fn refused_and_cosmetic_keys() {
    let e = conf("port: 1\ngateway {\n  name: x\n}\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "leafd.conf:2:1: gateway: not supported yet (gateways between clusters \
         (superclusters)); remove it"
    );
    let e = conf("leafnodes {\n  remotes [ {\n    url: x\n    no_randomize: true\n  } ]\n}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("leafd.conf:4:5: leafnodes.remotes.no_randomize: not supported yet"),
        "{e}"
    );
    let e = conf("tls { cert_file: a, key_file: b, cipher_suites: [x] }\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls.cipher_suites: not supported yet"), "{e}");
    // leafd has no cluster; hubd reads it (its extension's key).
    let e = conf("cluster { port: 6222 }\n").unwrap_err().to_string();
    assert!(e.contains("cluster: not supported yet"), "{e}");
    let cfg = conf("logtime: false\nport: 5\ntrace_verbose: true\nserver_tags: [a]\n").unwrap();
    assert_eq!(cfg.port, 5);
    assert_eq!(
        cfg.ignored_settings,
        [
            "logtime (leafd.conf:1:1)",
            "trace_verbose (leafd.conf:3:1)",
            "server_tags (leafd.conf:4:1)"
        ]
    );
    // A key nats-server does not know is an error, as in TOML.
    let e = conf("port: 1\n  prot: 2\n").unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, .. } if key == "prot"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("leafd.conf:2:3: unknown key `prot`"),
        "{e}"
    );
}

#[test]
fn value_errors_name_file_line_column_and_key() {
    let e = conf("authorization {\n  users [\n    { user: a, password: 5 }\n  ]\n}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "leafd.conf:3:26: authorization.users[0].password: invalid type: integer `5`"
        ),
        "{e}"
    );
    let e = conf("listen: 1.2.3.4\n").unwrap_err().to_string();
    assert!(
        e.starts_with("leafd.conf:1:1: listen: invalid listen address"),
        "{e}"
    );
    let e = conf("listen: 4222\nport: 5\n").unwrap_err().to_string();
    assert!(e.contains("either `listen` or `host`/`port`"), "{e}");
    let e = conf("host: 127.0.0.1\nhttp: 0.0.0.0:8222\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("leafd.conf:2:1: http: not supported yet"),
        "{e}"
    );
    let e = conf("max_conn: 1\nmax_connections: 2\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("either `max_conn` or `max_connections`"), "{e}");
}

#[test]
fn variable_definitions_are_not_settings() {
    let cfg = conf("PORT: 4555\nSECRET: pw\nport: $PORT\nauthorization { U: me, user: $U, password: $SECRET }\n")
        .unwrap();
    assert_eq!(cfg.port, 4555);
    assert_eq!(cfg.authorization.user.as_deref(), Some("me"));
    // An unused unknown key is still an error.
    assert!(conf("UNUSED: 1\n").is_err());
}

/// Every key of nats-server 2.9.10's `server/opts.go` examined for this table: the top
/// level (`processConfigFileLine`) and the blocks we read.
#[test]
fn table_covers_the_keys_of_nats_server() {
    const TOP: &[&str] = &[
        "listen",
        "client_advertise",
        "port",
        "server_name",
        "host",
        "net",
        "debug",
        "trace",
        "trace_verbose",
        "logtime",
        "mappings",
        "maps",
        "disable_sublist_cache",
        "no_sublist_cache",
        "accounts",
        "authorization",
        "http",
        "https",
        "http_port",
        "monitor_port",
        "https_port",
        "http_base_path",
        "cluster",
        "gateway",
        "leaf",
        "leafnodes",
        "store_dir",
        "storedir",
        "jetstream",
        "logfile",
        "log_file",
        "logfile_size_limit",
        "log_size_limit",
        "syslog",
        "remote_syslog",
        "pidfile",
        "pid_file",
        "ports_file_dir",
        "prof_port",
        "max_control_line",
        "max_payload",
        "max_pending",
        "max_connections",
        "max_conn",
        "max_traced_msg_len",
        "max_subscriptions",
        "max_subs",
        "max_sub_tokens",
        "max_subscription_tokens",
        "ping_interval",
        "ping_max",
        "tls",
        "ocsp",
        "allow_non_tls",
        "write_deadline",
        "lame_duck_duration",
        "lame_duck_grace_period",
        "operator",
        "operators",
        "roots",
        "root",
        "root_operators",
        "root_operator",
        "resolver",
        "account_resolver",
        "accounts_resolver",
        "resolver_tls",
        "resolver_preload",
        "resolver_pinned_accounts",
        "no_auth_user",
        "system_account",
        "system",
        "no_system_account",
        "no_system",
        "no_sys_acc",
        "no_header_support",
        "trusted",
        "trusted_keys",
        "connect_error_reports",
        "reconnect_error_reports",
        "websocket",
        "ws",
        "mqtt",
        "server_tags",
        "default_js_domain",
    ];
    let blocks: &[(&str, &[&str])] = &[
        (
            "jetstream",
            &[
                "enabled",
                "enable",
                "disabled",
                "disable",
                "store",
                "store_dir",
                "storedir",
                "max_memory_store",
                "max_mem_store",
                "max_mem",
                "max_file_store",
                "max_file",
                "domain",
                "key",
                "ek",
                "encryption_key",
                "cipher",
                "extension_hint",
                "limits",
                "unique_tag",
                "max_outstanding_catchup",
            ],
        ),
        (
            "leafnodes",
            &[
                "listen",
                "port",
                "host",
                "net",
                "authorization",
                "remotes",
                "reconnect",
                "reconnect_delay",
                "reconnect_interval",
                "tls",
                "leafnode_advertise",
                "advertise",
                "no_advertise",
                "min_version",
                "minimum_version",
            ],
        ),
        (
            "websocket",
            &[
                "listen",
                "port",
                "host",
                "net",
                "advertise",
                "no_tls",
                "tls",
                "same_origin",
                "allowed_origins",
                "allowed_origin",
                "allow_origins",
                "allow_origin",
                "origins",
                "origin",
                "handshake_timeout",
                "compress",
                "compression",
                "authorization",
                "authentication",
                "jwt_cookie",
                "no_auth_user",
            ],
        ),
        (
            "leafnodes.remotes",
            &[
                "no_randomize",
                "dont_randomize",
                "url",
                "urls",
                "account",
                "local",
                "creds",
                "credentials",
                "tls",
                "hub",
                "deny_imports",
                "deny_import",
                "deny_exports",
                "deny_export",
                "ws_compress",
                "ws_compression",
                "websocket_compress",
                "websocket_compression",
                "ws_no_masking",
                "websocket_no_masking",
                "jetstream_cluster_migrate",
                "js_cluster_migrate",
            ],
        ),
        (
            "authorization",
            &[
                "user",
                "username",
                "pass",
                "password",
                "token",
                "timeout",
                "users",
                "default_permission",
                "default_permissions",
                "permissions",
            ],
        ),
        (
            "authorization.users",
            &[
                "nkey",
                "user",
                "username",
                "pass",
                "password",
                "permission",
                "permissions",
                "authorization",
                "allowed_connection_types",
                "connection_types",
                "clients",
            ],
        ),
        (
            "accounts.*.users.permissions",
            &[
                "pub",
                "publish",
                "import",
                "sub",
                "subscribe",
                "export",
                "publish_allow_responses",
                "allow_responses",
            ],
        ),
        (
            "cluster",
            &[
                "name",
                "listen",
                "port",
                "host",
                "net",
                "authorization",
                "routes",
                "tls",
                "cluster_advertise",
                "advertise",
                "no_advertise",
                "connect_retries",
                "permissions",
            ],
        ),
        (
            "tls",
            &[
                "cert_file",
                "key_file",
                "ca_file",
                "insecure",
                "verify",
                "verify_and_map",
                "verify_cert_and_check_known_urls",
                "cipher_suites",
                "curve_preferences",
                "timeout",
                "connection_rate_limit",
                "pinned_certs",
            ],
        ),
        (
            "leafnodes.remotes.tls",
            &["cert_file", "cipher_suites", "pinned_certs"],
        ),
        (
            "accounts.*",
            &[
                "nkey",
                "imports",
                "exports",
                "jetstream",
                "users",
                "default_permissions",
                "mappings",
                "maps",
                "limits",
            ],
        ),
    ];
    let mut missing = Vec::new();
    for key in TOP {
        if rule(key).is_none() {
            missing.push(key.to_string());
        }
    }
    for (block, keys) in blocks {
        for key in *keys {
            let path = format!("{block}.{key}");
            if rule(&path).is_none() {
                missing.push(path);
            }
        }
    }
    assert!(missing.is_empty(), "keys without a rule: {missing:?}");
    // Every alias names a key that is itself supported (or a hook for one).
    for (path, kind) in RULES {
        if let Kind::Alias(to) = kind {
            let target = match path.rsplit_once('.') {
                Some((parent, _)) => format!("{parent}.{to}"),
                None => to.to_string(),
            };
            assert!(rule(&target).is_some(), "{path} -> {target} has no rule");
        }
    }
}

#[test]
fn a_huge_file_is_refused_without_being_read_whole() {
    let dir = temp_dir("huge");
    let path = dir.join("huge.conf");
    let mut text = String::from("port: 1\n# ");
    text.push_str(&"x".repeat(MAX_FILE_BYTES));
    std::fs::write(&path, &text).unwrap();
    assert_eq!(read_file(&path).unwrap().len(), MAX_FILE_BYTES + 1);
    let e = crate::config::load_file(&path).unwrap_err().to_string();
    assert!(e.contains("too large"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
