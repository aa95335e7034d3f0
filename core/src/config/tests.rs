//! Tests for loading config files: defaults, TOML/JSON parity, error
//! locations, the alternative forms nats-server accepts, and the example file.

use super::*;
use std::path::PathBuf;

fn toml(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Format::Toml, "leafd.toml")
}

fn json(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Format::Json, "leafd.json")
}

fn toml_err(text: &str) -> String {
    toml(text).unwrap_err().to_string()
}

fn json_err(text: &str) -> String {
    json(text).unwrap_err().to_string()
}

#[test]
fn defaults() {
    let cfg = Config::default();
    assert_eq!(cfg.host, "127.0.0.1");
    assert_eq!(cfg.port, 4222);
    assert_eq!(cfg.http_port, None);
    assert_eq!(cfg.server_name, None);
    assert_eq!(cfg.max_payload, 1_048_576);
    assert_eq!(cfg.max_control_line, 4096);
    assert_eq!(cfg.max_pending, 8_388_608);
    assert_eq!(cfg.max_connections, 65536);
    assert_eq!(cfg.max_subscriptions, None);
    assert_eq!(cfg.leafnodes.max_connections, 1024);
    assert_eq!(cfg.ping_interval, Duration::from_secs(120));
    assert_eq!(cfg.ping_max, 2);
    assert_eq!(cfg.write_deadline, Duration::from_secs(10));
    assert_eq!(cfg.log_level, LogLevel::Info);
    assert!(!cfg.debug && !cfg.trace);
    assert!(!cfg.authorization.is_required());
    assert_eq!(cfg.authorization.timeout, Duration::from_secs(2));
    assert!(!cfg.jetstream.enabled);
    assert_eq!(cfg.leafnodes, LeafNodes::default());
    assert_eq!(cfg.leafnode_listen(), None);
    // An empty file (TOML or JSON) is the defaults.
    assert_eq!(toml("").unwrap(), cfg);
    assert_eq!(json("{}").unwrap(), cfg);
}

const FULL_TOML: &str = r#"
host = "0.0.0.0"
port = 4333
http_port = 8222
server_name = "edge1"
max_payload = "2MB"
max_control_line = 8192
max_pending = 100000000
max_connections = 100
max_subscriptions = 500
ping_interval = "30s"
ping_max = 3
write_deadline = 5
log_level = "debug"
debug = false
trace = true

[authorization]
users = [
  { user = "x", password = "y", permissions = { publish = { allow = ["foo.>"], deny = ["foo.secret"] }, subscribe = ["bar.*"] } },
  { user = "z", pass = "w" },
]
timeout = 0.5

[jetstream]
store_dir = "/var/lib/leafd"
domain = "edge"
max_memory_store = "1GB"
max_file_store = 1000

[leafnodes]
listen = "0.0.0.0:7422"
max_connections = 50
remotes = [ { url = "nats-leaf://hub:7422" }, { urls = ["nats-leaf://a:1", "nats-leaf://b:2"] } ]
"#;

const FULL_JSON: &str = r#"{
  "host": "0.0.0.0",
  "port": 4333,
  "http_port": 8222,
  "server_name": "edge1",
  "max_payload": "2MB",
  "max_control_line": 8192,
  "max_pending": 100000000,
  "max_connections": 100,
  "max_subs": 500,
  "ping_interval": "30s",
  "ping_max": 3,
  "write_deadline": 5,
  "log_level": "debug",
  "debug": false,
  "trace": true,
  "authorization": {
    "users": [
      {"user": "x", "password": "y", "permissions": {"publish": {"allow": ["foo.>"], "deny": ["foo.secret"]}, "subscribe": ["bar.*"]}},
      {"user": "z", "pass": "w"}
    ],
    "timeout": 0.5
  },
  "jetstream": {"store_dir": "/var/lib/leafd", "domain": "edge", "max_memory_store": "1GB", "max_file_store": 1000},
  "leafnodes": {
    "listen": "0.0.0.0:7422",
    "max_connections": 50,
    "remotes": [{"url": "nats-leaf://hub:7422"}, {"urls": ["nats-leaf://a:1", "nats-leaf://b:2"]}]
  }
}"#;

#[test]
fn toml_and_json_load_the_same_structures() {
    let from_toml = toml(FULL_TOML).unwrap();
    let from_json = json(FULL_JSON).unwrap();
    assert_eq!(from_toml, from_json);
    from_toml.validate().unwrap();

    let cfg = from_toml;
    assert_eq!(cfg.host, "0.0.0.0");
    assert_eq!(cfg.port, 4333);
    assert_eq!(cfg.http_port, Some(8222));
    assert_eq!(cfg.server_name.as_deref(), Some("edge1"));
    assert_eq!(cfg.max_payload, 2 << 20);
    assert_eq!(cfg.max_pending, 100_000_000);
    assert_eq!(
        cfg.max_subscriptions,
        Some(500),
        "max_subs is nats-server's alias"
    );
    assert_eq!(cfg.leafnodes.max_connections, 50);
    assert_eq!(cfg.ping_interval, Duration::from_secs(30));
    assert_eq!(cfg.write_deadline, Duration::from_secs(5));
    assert_eq!(cfg.effective_log_level(), LogLevel::Trace);
    let users = &cfg.authorization.users;
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].permissions.publish.allow, ["foo.>"]);
    assert_eq!(users[0].permissions.publish.deny, ["foo.secret"]);
    assert_eq!(users[0].permissions.subscribe.allow, ["bar.*"]);
    assert!(users[0].permissions.subscribe.deny.is_empty());
    assert_eq!(users[1].password.as_deref(), Some("w"));
    assert_eq!(users[1].permissions, Permissions::default());
    assert_eq!(cfg.authorization.timeout, Duration::from_millis(500));
    assert_eq!(
        cfg.jetstream,
        JetStream {
            enabled: true,
            store_dir: Some("/var/lib/leafd".into()),
            domain: Some("edge".into()),
            max_memory_store: Some(1 << 30),
            max_file_store: Some(1000),
        }
    );
    assert_eq!(cfg.leafnode_listen(), Some(("0.0.0.0", 7422)));
    assert_eq!(cfg.leafnodes.remotes[0].urls, ["nats-leaf://hub:7422"]);
    assert_eq!(
        cfg.leafnodes.remotes[1].urls,
        ["nats-leaf://a:1", "nats-leaf://b:2"]
    );
}

#[test]
fn load_file_picks_format_by_extension() {
    let dir = std::env::temp_dir().join(format!("leaf-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("leafd.toml");
    let json_path = dir.join("leafd.JSON");
    std::fs::write(&toml_path, FULL_TOML).unwrap();
    std::fs::write(&json_path, FULL_JSON).unwrap();
    assert_eq!(
        load_file(&toml_path).unwrap(),
        load_file(&json_path).unwrap()
    );

    // Errors name the file as given.
    std::fs::write(&toml_path, "port = \"x\"\n").unwrap();
    let err = load_file(&toml_path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:1: port: invalid type: string \"x\", expected u16",
            toml_path.display()
        )
    );
    let missing = dir.join("missing.toml");
    let err = load_file(&missing).unwrap_err();
    assert!(matches!(&err, ConfigError::Io { path, .. } if path == &missing));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_keys_name_key_and_line() {
    let err = toml_err("host = \"a\"\nport = 1\nprot = 2\n");
    assert!(
        err.starts_with("leafd.toml:3: unknown key `prot` (expected one of host, port, http_port,"),
        "{err}"
    );
    let err = toml_err("[authorization]\nuser = \"a\"\npasword = \"b\"\n");
    assert!(
        err.starts_with("leafd.toml:3: unknown key `authorization.pasword` (expected one of user,"),
        "{err}"
    );
    let err = toml_err("[authorization]\nusers = [\n  { user = \"a\", password = \"b\" },\n  { user = \"c\", pwd = \"d\" },\n]\n");
    assert!(
        err.starts_with("leafd.toml:4: unknown key `authorization.users[1].pwd`"),
        "{err}"
    );
    let err = toml_err("[jetstream]\nstoredir = \"/x\"\n");
    assert!(
        err.starts_with("leafd.toml:2: unknown key `jetstream.storedir`"),
        "{err}"
    );
    let err = toml_err("[leafnodes]\nremotes = [{ uri = \"x\" }]\n");
    assert!(
        err.starts_with("leafd.toml:2: unknown key `leafnodes.remotes[0].uri`"),
        "{err}"
    );
    let err = toml_err(
        "[authorization]\nusers = [{ user = \"a\", password = \"b\", permissions = { publish = { alow = [] } } }]\n",
    );
    assert!(
        err.starts_with("leafd.toml:2: unknown key `authorization.users[0].permissions.publish.alow` (expected allow or deny)"),
        "{err}"
    );

    let err = json_err("{\n  \"port\": 1,\n  \"prot\": 2\n}");
    assert!(
        err.starts_with("leafd.json:3: unknown key `prot` (expected one of host, port,"),
        "{err}"
    );
    let err = json_err("{\"authorization\": {\n\"users\": [{\"user\": \"a\",\n \"pwd\": \"b\"}]}}");
    assert!(
        err.starts_with("leafd.json:3: unknown key `authorization.users[0].pwd`"),
        "{err}"
    );
    assert!(matches!(
        json("{\"prot\": 1}"),
        Err(ConfigError::UnknownKey { .. })
    ));
}

#[test]
fn wrong_types_name_key_and_line() {
    let text = "port = 1\n\n[[authorization.users]]\nuser = \"a\"\npassword = \"b\"\n[[authorization.users]]\npassword = 5\nuser = \"c\"\n";
    assert_eq!(
        toml_err(text),
        "leafd.toml:7: authorization.users[1].password: invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        toml_err("port = 70000\n"),
        "leafd.toml:1: port: invalid value: integer `70000`, expected u16"
    );
    assert_eq!(
        toml_err("debug = \"yes\"\n"),
        "leafd.toml:1: debug: invalid type: string \"yes\", expected a boolean"
    );
    assert_eq!(
        toml_err("[authorization]\nusers = [{ password = \"b\" }]\n"),
        "leafd.toml:2: authorization.users[0]: missing key `user`"
    );
    assert_eq!(
        json_err("{\"authorization\": {\"users\": [\n{\"user\": \"c\", \"password\": 5}]}}"),
        "leafd.json:2: authorization.users[0].password: invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        json_err("{\"port\": -1}"),
        "leafd.json:1: port: invalid value: integer `-1`, expected u16"
    );
    // A wrong type inside a list names the index.
    let err = toml_err("[authorization]\nusers = [{ user = \"a\", password = \"b\", permissions = { publish = [\"ok\", 7] } }]\n");
    assert!(
        err.starts_with("leafd.toml:2: authorization.users[0].permissions.publish[1]: invalid type: integer `7`"),
        "{err}"
    );
    let err = toml_err("[jetstream]\ndomain = 3\n");
    assert!(
        err.starts_with("leafd.toml:2: jetstream.domain: invalid type: integer"),
        "{err}"
    );
}

#[test]
fn bad_durations_sizes_and_levels_name_key_and_line() {
    let err = toml_err("port = 1\nping_interval = \"2 minutes\"\n");
    assert!(
        err.starts_with(
            "leafd.toml:2: ping_interval: invalid value: string \"2 minutes\", expected a duration"
        ),
        "{err}"
    );
    let err = toml_err("write_deadline = -3\n");
    assert!(
        err.starts_with("leafd.toml:1: write_deadline: invalid value: integer `-3`"),
        "{err}"
    );
    let err = toml_err("write_deadline = true\n");
    assert!(
        err.starts_with("leafd.toml:1: write_deadline: invalid type: boolean `true`"),
        "{err}"
    );
    let err = toml_err("\nmax_payload = \"1XB\"\n");
    assert!(
        err.starts_with(
            "leafd.toml:2: max_payload: invalid value: string \"1XB\", expected a size"
        ),
        "{err}"
    );
    let err = toml_err("max_pending = -1\n");
    assert!(
        err.starts_with("leafd.toml:1: max_pending: invalid value: integer `-1`"),
        "{err}"
    );
    let err = toml_err("[jetstream]\nmax_file_store = \"lots\"\n");
    assert!(
        err.starts_with("leafd.toml:2: jetstream.max_file_store: invalid value"),
        "{err}"
    );
    assert_eq!(
        toml_err("log_level = \"loud\"\n"),
        "leafd.toml:1: log_level: invalid value: string \"loud\", expected one of error, warn, info, debug, trace"
    );
    assert_eq!(
        json_err("{\n\"log_level\": \"loud\"}"),
        "leafd.json:2: log_level: invalid value: string \"loud\", expected one of error, warn, info, debug, trace"
    );
    let err = json_err("{\"authorization\": {\"timeout\": \"soon\"}}");
    assert!(
        err.starts_with("leafd.json:1: authorization.timeout: invalid value: string \"soon\""),
        "{err}"
    );
    let err = json_err("{\"max_payload\": \"1XB\"}");
    assert!(
        err.starts_with("leafd.json:1: max_payload: invalid value: string \"1XB\""),
        "{err}"
    );
    let err = toml_err("[leafnodes]\nlisten = \"0.0.0.0\"\n");
    assert!(
        err.starts_with("leafd.toml:2: leafnodes.listen: invalid listen address `0.0.0.0`"),
        "{err}"
    );
    let err = toml_err("[leafnodes]\nlisten = \":7422\"\nport = 7422\n");
    assert!(
        err.contains("leafnodes: set either `listen` or `host`/`port`"),
        "{err}"
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let err = toml("port = 1\nhost = \n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Syntax { at, .. } if at.line == Some(2)),
        "{err}"
    );
    assert!(err.to_string().starts_with("leafd.toml:2: "), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let err = json("{\"port\": 1,\n}").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Syntax { at, .. } if at.line == Some(2)),
        "{err}"
    );
    let err = json("{} {}").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("leafd.json:1: trailing characters"),
        "{err}"
    );
    // serde derive would accept a struct as a list of its field values; a
    // config file never means that.
    for text in ["[]", "[\"0.0.0.0\"]"] {
        let err = json(text).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("expected a table"), "{err}");
    }
    let err = toml_err("authorization = [\"a\", \"b\"]\n");
    assert!(
        err.starts_with("leafd.toml:1: authorization: invalid type: sequence, expected a table"),
        "{err}"
    );
    let err = toml_err("[leafnodes]\nremotes = [[\"nats-leaf://hub:7422\"]]\n");
    assert!(
        err.contains("leafnodes.remotes[0]: invalid type: sequence, expected a table"),
        "{err}"
    );
    let err = json_err("{\"authorization\": {\"users\": [[\"a\", \"b\"]]}}");
    assert!(
        err.contains("authorization.users[0]: invalid type: sequence, expected a table"),
        "{err}"
    );
    let err = json_err("{\"authorization\": {\"users\": {\"user\": \"a\"}}}");
    assert!(
        err.contains("authorization.users: invalid type: map, expected a list of tables"),
        "{err}"
    );
}

#[test]
fn permissions_bare_list_and_string_forms() {
    let cfg = toml(
        r#"
        [authorization]
        users = [
          { user = "a", password = "p", permissions = { publish = ["foo.>", "bar"], subscribe = "baz.*" } },
          { user = "b", password = "p", permissions = { pub = { allow = "x", deny = ["x.y"] }, sub = { deny = ">" } } },
        ]
        "#,
    )
    .unwrap();
    let a = &cfg.authorization.users[0].permissions;
    assert_eq!(
        a.publish,
        SubjectPermission {
            allow: vec!["foo.>".into(), "bar".into()],
            deny: vec![]
        }
    );
    assert_eq!(a.subscribe.allow, ["baz.*"]);
    let b = &cfg.authorization.users[1].permissions;
    assert_eq!(b.publish.allow, ["x"]);
    assert_eq!(b.publish.deny, ["x.y"]);
    assert!(b.subscribe.allow.is_empty());
    assert_eq!(b.subscribe.deny, [">"]);
    assert_eq!(b.subscribe.allow_list(), None);
    assert_eq!(b.publish.allow_list(), Some(&["x".to_owned()][..]));
    assert!(!b.is_unrestricted() && Permissions::default().is_unrestricted());
    cfg.validate().unwrap();

    let err = toml_err("[authorization]\nusers = [{ user = \"a\", password = \"p\", permissions = { publish = 5 } }]\n");
    assert!(
        err.contains("authorization.users[0].permissions.publish: invalid type: integer `5`, expected a subject"),
        "{err}"
    );
}

#[test]
fn jetstream_bool_and_table_forms() {
    assert!(toml("jetstream = true").unwrap().jetstream.enabled);
    assert!(!toml("jetstream = false").unwrap().jetstream.enabled);
    assert!(toml("jetstream = \"enabled\"").unwrap().jetstream.enabled);
    assert!(json("{\"jetstream\": true}").unwrap().jetstream.enabled);
    let cfg = toml("[jetstream]\nstore_dir = \"/x\"\n").unwrap();
    assert!(cfg.jetstream.enabled);
    assert_eq!(cfg.jetstream.store_dir, Some(PathBuf::from("/x")));
    let cfg = toml("[jetstream]\nenabled = false\nstore_dir = \"/x\"\n").unwrap();
    assert!(!cfg.jetstream.enabled);
    assert!(toml("[jetstream]\n").unwrap().jetstream.enabled);
    let cfg = toml("[jetstream]\nmax_mem = \"64MB\"\nmax_file = \"1G\"\n").unwrap();
    assert_eq!(cfg.jetstream.max_memory_store, Some(64 << 20));
    assert_eq!(cfg.jetstream.max_file_store, Some(1_000_000_000));
    let err = toml_err("jetstream = 1\n");
    assert!(
        err.starts_with(
            "leafd.toml:1: jetstream: invalid type: integer `1`, expected true, false, or a table"
        ),
        "{err}"
    );
    let err = toml_err("jetstream = \"maybe\"\n");
    assert!(
        err.starts_with("leafd.toml:1: jetstream: invalid value"),
        "{err}"
    );
}

#[test]
fn durations_and_sizes_in_files() {
    let cfg = toml("ping_interval = 45\nwrite_deadline = \"500ms\"\nmax_payload = 65536\nmax_pending = \"8MiB\"\n").unwrap();
    assert_eq!(cfg.ping_interval, Duration::from_secs(45));
    assert_eq!(cfg.write_deadline, Duration::from_millis(500));
    assert_eq!(cfg.max_payload, 65536);
    assert_eq!(cfg.max_pending, 8 << 20);
    let cfg = toml("ping_interval = \"1h\"\n[authorization]\ntimeout = \"1m30s\"\n").unwrap();
    assert_eq!(cfg.ping_interval, Duration::from_secs(3600));
    assert_eq!(cfg.authorization.timeout, Duration::from_secs(90));
}

#[test]
fn leafnodes_listen_forms() {
    let listen = |text: &str| {
        toml(text)
            .unwrap()
            .leafnode_listen()
            .map(|(h, p)| (h.to_owned(), p))
    };
    assert_eq!(
        listen("[leafnodes]\nlisten = \"0.0.0.0:7422\""),
        Some(("0.0.0.0".into(), 7422))
    );
    assert_eq!(
        listen("[leafnodes]\nlisten = \"[::1]:7000\""),
        Some(("::1".into(), 7000))
    );
    assert_eq!(
        listen("[leafnodes]\nlisten = \":7000\""),
        Some(("127.0.0.1".into(), 7000))
    );
    assert_eq!(
        listen("host = \"10.1.1.1\"\n[leafnodes]\nlisten = \"7000\""),
        Some(("10.1.1.1".into(), 7000))
    );
    assert_eq!(
        listen("[leafnodes]\nhost = \"0.0.0.0\"\nport = 0"),
        Some(("0.0.0.0".into(), 0))
    );
    assert_eq!(
        listen("[leafnodes]\nport = 7001"),
        Some(("127.0.0.1".into(), 7001))
    );
    assert_eq!(
        listen("[leafnodes]\nhost = \"0.0.0.0\""),
        Some(("0.0.0.0".into(), 7422))
    );
    assert_eq!(listen("[leafnodes]\nremotes = []"), None);
    for bad in ["::1:7000", "[::1:7000", "host:", "host:port"] {
        assert!(bad.parse::<Listen>().is_err(), "{bad}");
    }
    for text in ["0.0.0.0:7422", "[::1]:7000", ":7000"] {
        assert_eq!(text.parse::<Listen>().unwrap().to_string(), text);
    }
}

#[test]
fn debug_output_redacts_secrets() {
    let cfg = toml("[authorization]\nuser = \"u\"\npassword = \"hunter2\"\ntoken = \"tok3n\"\nusers = [{ user = \"x\", password = \"hunter3\" }]\n\
                    [leafnodes]\nremotes = [{ urls = [\"nats-leaf://u:hunter4@hub\", \"nats-leaf://tok4n@hub\"] }]\n").unwrap();
    let shown = format!("{cfg:?}");
    for secret in ["hunter2", "hunter3", "tok3n", "hunter4", "tok4n"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("[REDACTED]"));
    assert!(
        shown.contains("\"nats-leaf://u:[REDACTED]@hub\""),
        "{shown}"
    );
}

#[test]
fn leafnodes_authorization_and_timings() {
    let cfg = toml(
        "[leafnodes]\nlisten = \":7422\"\nreconnect = \"2s\"\nping_interval = \"5s\"\nping_max = 3\n\
         authorization = { user = \"leaf\", password = \"pw\", timeout = 1 }\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    let ln = &cfg.leafnodes;
    assert_eq!(ln.authorization.user.as_deref(), Some("leaf"));
    assert_eq!(ln.authorization.password.as_deref(), Some("pw"));
    assert_eq!(ln.authorization.timeout, Duration::from_secs(1));
    assert_eq!(ln.reconnect, Duration::from_secs(2));
    assert_eq!(ln.ping_interval, Duration::from_secs(5));
    assert_eq!(ln.ping_max, 3);
    assert!(!format!("{:?}", ln.authorization).contains("pw"));

    // nats-server's spelling, in JSON.
    let cfg = json(
        r#"{"leafnodes": {"listen": "127.0.0.1:7422", "reconnect_interval": 1,
            "authorization": {"token": "s3cr3t"}}}"#,
    )
    .unwrap();
    assert_eq!(cfg.leafnodes.authorization.token.as_deref(), Some("s3cr3t"));
    assert_eq!(cfg.leafnodes.reconnect, Duration::from_secs(1));
    assert_eq!(cfg.leafnodes.ping_max, DEFAULT_LEAFNODE_PING_MAX);

    let defaults = toml("[leafnodes]\n").unwrap().leafnodes;
    assert_eq!(defaults, LeafNodes::default());
    assert_eq!(defaults.reconnect, DEFAULT_LEAFNODE_RECONNECT);

    let err = toml("[leafnodes]\nauthorization = { user = \"a\", secret = 1 }\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown key `leafnodes.authorization.secret`"),
        "{err}"
    );
}

#[test]
fn leafnode_remote_keys_not_implemented_are_recorded() {
    let cfg = toml(
        "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub:7422\", account = \"A\", tls = { ca_file = \"ca\" } }]\n",
    )
    .unwrap();
    assert!(cfg.leafnodes.remotes[0].unsupported.is_empty());
    assert_eq!(cfg.leafnodes.remotes[0].account.as_deref(), Some("A"));
    assert!(cfg.leafnodes.remotes[0].tls.is_some());
    let cfg = json(r#"{"leafnodes": {"remotes": [{"url": "nats-leaf://hub:7422", "hub": true}]}}"#)
        .unwrap();
    assert_eq!(cfg.leafnodes.remotes[0].unsupported, ["hub"]);
    assert!(
        toml("[leafnodes]\nremotes = [{ url = \"nats-leaf://h:1\" }]\n")
            .unwrap()
            .leafnodes
            .remotes[0]
            .unsupported
            .is_empty()
    );
}

#[test]
fn leafnodes_tls_tables() {
    let cfg = toml(
        "[leafnodes]\nlisten = \":7422\"\n\
         tls = { cert_file = \"hub.pem\", key_file = \"hub-key.pem\", ca_file = \"ca.pem\", verify = true, timeout = 0.5 }\n\
         remotes = [{ url = \"tls://hub:7422\", tls = { ca_file = \"ca.pem\", cert_file = \"leaf.pem\", \
         key_file = \"leaf-key.pem\", server_name = \"hub.example\", handshake_first = true, timeout = \"3s\" } }]\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    let ln = &cfg.leafnodes;
    let listener = ln.tls.as_ref().unwrap();
    assert_eq!(listener.cert_file.as_deref(), Some(Path::new("hub.pem")));
    assert_eq!(listener.key_file.as_deref(), Some(Path::new("hub-key.pem")));
    assert_eq!(listener.ca_file.as_deref(), Some(Path::new("ca.pem")));
    assert!(listener.verify && !listener.handshake_first);
    assert_eq!(listener.timeout, Duration::from_millis(500));
    let remote = &ln.remotes[0];
    assert!(remote.unsupported.is_empty());
    let tls = remote.tls.as_ref().unwrap();
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(tls.cert_file.as_deref(), Some(Path::new("leaf.pem")));
    assert_eq!(tls.key_file.as_deref(), Some(Path::new("leaf-key.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("hub.example"));
    assert!(tls.handshake_first && !tls.insecure);
    assert_eq!(tls.timeout, Some(Duration::from_secs(3)));

    // The same in nats-server's JSON spelling; defaults for what is not given.
    let cfg = json(
        r#"{"leafnodes": {"listen": "127.0.0.1:7422", "tls": {"cert_file": "c", "key_file": "k"},
            "remotes": [{"url": "nats-leaf://hub", "tls": {"ca_file": "ca.pem"}}]}}"#,
    )
    .unwrap();
    let listener = cfg.leafnodes.tls.as_ref().unwrap();
    assert!(!listener.verify);
    assert_eq!(listener.timeout, DEFAULT_TLS_TIMEOUT);
    let tls = cfg.leafnodes.remotes[0].tls.as_ref().unwrap();
    assert_eq!(tls.timeout, None);
    assert!(tls.server_name.is_none() && !tls.handshake_first);
    assert!(toml("[leafnodes]\n").unwrap().leafnodes.tls.is_none());

    // Unknown keys are errors naming the key.
    let err =
        toml_err("[leafnodes]\nremotes = [{ url = \"tls://h\", tls = { cafile = \"x\" } }]\n");
    assert!(
        err.contains("unknown key `leafnodes.remotes[0].tls.cafile`"),
        "{err}"
    );
    let err = json_err(r#"{"leafnodes": {"tls": {"cert_file": "c", "verify_and_map": true}}}"#);
    assert!(
        err.contains("unknown key `leafnodes.tls.verify_and_map`"),
        "{err}"
    );
    let err = toml_err("[leafnodes]\ntls = { timeout = \"soon\" }\n");
    assert!(err.contains("leafnodes.tls.timeout"), "{err}");
}

#[test]
fn nkey_and_credentials_of_remotes() {
    let cfg = toml(
        "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub:7422\", credentials = \"/x.creds\" }, \
         { url = \"nats-leaf://hub:7422\", seed = \"SUSECRET\" }]\n",
    )
    .unwrap();
    let remotes = &cfg.leafnodes.remotes;
    assert_eq!(
        remotes[0].credentials.as_deref(),
        Some(Path::new("/x.creds"))
    );
    assert!(remotes[0].nkey.is_none() && remotes[0].unsupported.is_empty());
    assert_eq!(remotes[1].nkey.as_deref(), Some("SUSECRET"));
    assert!(remotes[1].unsupported.is_empty());
    // The seed is not shown when the config is logged.
    let shown = format!("{:?}", cfg.leafnodes);
    assert!(!shown.contains("SUSECRET"), "{shown}");
    let cfg = json(
        r#"{"leafnodes": {"remotes": [{"url": "nats-leaf://hub:7422", "creds": "u.creds"}]}}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.leafnodes.remotes[0].credentials.as_deref(),
        Some(Path::new("u.creds"))
    );
    let err = toml(
        "[leafnodes]\nremotes = [{ url = \"nats-leaf://h:1\", credentials = \"/x.creds\", nkey = \"SU\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("set either `credentials` or `nkey`, not both"),
        "{err}"
    );
    assert!(!err.contains("SU\""), "{err}");
}

#[test]
fn nkey_users_of_the_leafnode_listener() {
    let cfg = toml(
        "[leafnodes]\nlisten = \":7422\"\n[leafnodes.authorization]\n\
         users = [{ nkey = \"UABC\" }, { user = \"a\", password = \"pw\" }]\n",
    )
    .unwrap();
    let users = &cfg.leafnodes.authorization.users;
    assert_eq!(users[0].login, LeafLogin::Nkey("UABC".into()));
    assert_eq!(
        users[1].login,
        LeafLogin::Password {
            user: "a".into(),
            password: "pw".into()
        }
    );
    assert!(users[1].permissions.is_unrestricted());
    let shown = format!("{:?}", cfg.leafnodes.authorization);
    assert!(!shown.contains("pw"), "{shown}");
    // nats-server's spelling.
    let cfg = json(
        r#"{"leafnodes": {"authorization": {"users": [{"username": "a", "pass": "b"}, {"nkey": "UX"}]}}}"#,
    )
    .unwrap();
    assert_eq!(cfg.leafnodes.authorization.users.len(), 2);
    for (text, needle) in [
        ("users = [{ user = \"a\", nkey = \"U\" }]", "not both"),
        (
            "users = [{ password = \"a\" }]",
            "missing key `user` or `nkey`",
        ),
        ("users = [{ user = \"a\" }]", "missing key `password`"),
        ("users = [{ nkey = \"U\", acount = \"A\" }]", "unknown key"),
    ] {
        let err = toml(&format!("[leafnodes.authorization]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{text}: {err}");
        assert!(
            err.contains("leafnodes.authorization.users[0]"),
            "{text}: {err}"
        );
    }
}

#[test]
fn permissions_of_leafnode_users() {
    let cfg = toml(
        "[leafnodes.authorization]\n\
         users = [{ user = \"a\", password = \"pw\", permissions = { publish = [\"up.>\"], \
         subscribe = { allow = [\"down.>\"], deny = [\"down.secret\"] } } },\n\
         { nkey = \"UABC\", permissions = { pub = \"up.nk\" } }]\n",
    )
    .unwrap();
    let users = &cfg.leafnodes.authorization.users;
    assert_eq!(users[0].permissions.publish.allow, ["up.>"]);
    assert_eq!(users[0].permissions.subscribe.allow, ["down.>"]);
    assert_eq!(users[0].permissions.subscribe.deny, ["down.secret"]);
    assert_eq!(users[1].permissions.publish.allow, ["up.nk"]);
    let shown = format!("{:?}", cfg.leafnodes.authorization);
    assert!(shown.contains("up.>") && !shown.contains("pw"), "{shown}");
    // Subjects are checked as for client users.
    let cfg = toml(
        "[leafnodes.authorization]\n\
         users = [{ user = \"a\", password = \"pw\", permissions = { publish = [\"a..b\"] } }]\n",
    )
    .unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("leafnodes.authorization.users[0].permissions.publish"),
        "{err}"
    );
}

#[test]
fn empty_passwords_are_refused_naming_the_key() {
    for (text, key) in [
        (
            "[authorization]\nuser = \"u\"\npassword = \"\"\n",
            "authorization.password",
        ),
        (
            "[authorization]\nusers = [{ user = \"u\", password = \"\" }]\n",
            "authorization.users[0].password",
        ),
        (
            "[leafnodes.authorization]\nuser = \"u\"\npassword = \"\"\n",
            "leafnodes.authorization.password",
        ),
        (
            "[leafnodes.authorization]\nusers = [{ user = \"u\", password = \"\" }]\n",
            "leafnodes.authorization.users[0]",
        ),
    ] {
        let err = toml(text)
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
        assert!(err.contains("must not be empty"), "{text}: {err}");
    }
}

#[test]
fn accounts_are_read_in_both_formats() {
    let from_toml = toml(
        "system_account = \"SYS\"\n\
         [jetstream]\nstore_dir = \"/var/lib/x\"\n\
         [accounts.A]\nusers = [{ user = \"a\", password = \"pa\" }]\n\
         jetstream = { max_mem = \"1MB\", max_file = -1 }\n\
         [accounts.SYS]\nusers = [{ user = \"s\", password = \"ps\" }]\n\
         [leafnodes]\nremotes = [{ url = \"nats-leaf://h:7422\", account = \"A\" }]\n",
    )
    .unwrap();
    let from_json = json(
        r#"{"system_account": "SYS", "jetstream": {"store_dir": "/var/lib/x"},
            "accounts": {"A": {"users": [{"user": "a", "password": "pa"}],
                               "jetstream": {"max_mem": "1MB", "max_file": -1}},
                         "SYS": {"users": [{"user": "s", "password": "ps"}]}},
            "leafnodes": {"remotes": [{"url": "nats-leaf://h:7422", "account": "A"}]}}"#,
    )
    .unwrap();
    assert_eq!(from_toml, from_json);
    let a = &from_toml.accounts["A"];
    assert!(a.jetstream.enabled);
    assert_eq!(a.jetstream.max_memory, Some(1 << 20));
    assert_eq!(a.jetstream.max_file, None, "-1 is unlimited");
    assert!(!from_toml.accounts["SYS"].jetstream.enabled);
    for form in ["\"enabled\"", "true"] {
        let cfg = toml(&format!(
            "[jetstream]\nstore_dir = \"/x\"\n[accounts.A]\njetstream = {form}\n"
        ))
        .unwrap();
        assert!(cfg.accounts["A"].jetstream.enabled, "{form}");
    }
    let err = toml_err("[accounts.A]\njetstream = \"maybe\"\n");
    assert!(
        err.contains("leafd.toml:2:") && err.contains("maybe"),
        "{err}"
    );
    let err = toml_err("[accounts.A]\nuserz = []\n");
    assert!(
        err.contains("leafd.toml:2:") && err.contains("userz"),
        "{err}"
    );
}

#[test]
fn accounts_are_checked() {
    let invalid = |text: &str| match toml(text) {
        Ok(cfg) => match cfg.validate() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {text}"),
        },
        Err(e) => panic!("not parsed: {e}: {text}"),
    };
    let err = invalid(
        "[authorization]\nusers = [{ user = \"a\", password = \"x\" }]\n\
         [accounts.A]\nusers = [{ user = \"a\", password = \"y\" }]\n",
    );
    assert!(
        err.contains("accounts.A.users[0].user") && err.contains("duplicate user `a`"),
        "{err}"
    );
    let err = invalid("[accounts.\"a/b\"]\nusers = []\n");
    assert!(err.contains("accounts.a/b"), "{err}");
    let err = invalid("[authorization]\nusers = [{ nkey = \"UNOTAKEY\" }]\n");
    assert!(err.contains("authorization.users[0].nkey"), "{err}");
    let err = invalid("[accounts.A]\nusers = [{ nkey = \"SUABC\" }]\n");
    assert!(
        err.contains("accounts.A.users[0].nkey") && err.contains("seed"),
        "{err}"
    );
    let key = nkeys::KeyPair::new_user().public_key();
    let err = invalid(&format!(
        "[authorization]\nusers = [{{ nkey = \"{key}\", user = \"u\", password = \"p\" }}]\n"
    ));
    assert!(err.contains("not both"), "{err}");
    let err = invalid(&format!(
        "[authorization]\nusers = [{{ nkey = \"{key}\" }}]\n[accounts.A]\nusers = [{{ nkey = \"{key}\" }}]\n"
    ));
    assert!(
        err.contains("accounts.A.users[0].nkey") && err.contains("duplicate"),
        "{err}"
    );
    let err = invalid("[accounts.\"$G\"]\nusers = []\n");
    assert!(err.contains("accounts.$G"), "{err}");
    let err = invalid("[accounts.A]\njetstream = \"enabled\"\n");
    assert!(
        err.contains("accounts.A.jetstream") && err.contains("not enabled on this server"),
        "{err}"
    );
    let err = invalid("system_account = \"NOPE\"\n");
    assert!(
        err.contains("system_account") && err.contains("NOPE"),
        "{err}"
    );
    let err = invalid(
        "[leafnodes.authorization]\nusers = [{ user = \"l\", password = \"p\", account = \"X\" }]\n",
    );
    assert!(
        err.contains("leafnodes.authorization.users[0].account") && err.contains("`X`"),
        "{err}"
    );
    let err = invalid("[leafnodes]\nremotes = [{ url = \"nats-leaf://h:1\", account = \"X\" }]\n");
    assert!(err.contains("leafnodes.remotes[0].account"), "{err}");
    let err = invalid(
        "[authorization]\ntoken = \"t\"\n[accounts.A]\nusers = [{ user = \"a\", password = \"p\" }]\n",
    );
    assert!(err.contains("authorization.token"), "{err}");
}

#[test]
fn exports_and_imports_are_checked() {
    let check = |text: &str| {
        toml(text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.to_string()))
    };
    let a_exports = "[accounts.A]\nexports = [{ service = \"svc.>\" }, { stream = \"ev.>\", accounts = [\"B\"] }]\n";
    // Accepted: within the exports, to an allowed account.
    check(&format!(
        "{a_exports}[accounts.B]\nimports = [{{ service = {{ account = \"A\", subject = \"svc.echo\" }}, to = \"echo\" }}, \
         {{ stream = {{ account = \"A\", subject = \"ev.x.>\" }}, prefix = \"pa\" }}]\n"
    ))
    .unwrap();
    let cfg = toml(&format!(
        "{a_exports}[accounts.B]\nimports = [{{ stream = {{ account = \"A\", subject = \"ev.>\" }}, prefix = \"pa\" }}]\n"
    ))
    .unwrap();
    assert_eq!(cfg.accounts["B"].imports[0].local, "pa.ev.>");
    for (text, key, needle) in [
        (
            "[accounts.A]\nusers = []\n[accounts.B]\nimports = [{ stream = { account = \"A\", subject = \"ev.>\" } }]\n".to_string(),
            "accounts.B.imports[0].stream",
            "exports no stream",
        ),
        (
            format!("{a_exports}[accounts.B]\nusers = []\n[accounts.C]\nimports = [{{ stream = {{ account = \"A\", subject = \"ev.>\" }} }}]\n"),
            "accounts.C.imports[0].stream",
            "exports no stream covering `ev.>` to `C`",
        ),
        (
            format!("{a_exports}[accounts.B]\nimports = [{{ service = {{ account = \"NOPE\", subject = \"svc.x\" }} }}]\n"),
            "accounts.B.imports[0].service.account",
            "no account `NOPE`",
        ),
        (
            "[accounts.A]\nexports = [{ stream = \"x.>\", accounts = [\"Z\"] }]\n".to_string(),
            "accounts.A.exports[0].accounts",
            "no account `Z`",
        ),
        (
            // A's events go to B and come back to A on the same subjects: a loop.
            "[accounts.A]\nexports = [{ stream = \"ev.>\" }]\nimports = [{ stream = { account = \"B\", subject = \"ev.>\" } }]\n\
             [accounts.B]\nexports = [{ stream = \"ev.>\" }]\nimports = [{ stream = { account = \"A\", subject = \"ev.>\" } }]\n"
                .to_string(),
            "imports[0]",
            "stream import cycle",
        ),
    ] {
        let err = check(&text).unwrap_err();
        assert!(err.contains(key) && err.contains(needle), "{text}\n=> {err}");
    }
    // Both ways on subjects that do not chain is no cycle.
    check(
        "[accounts.A]\nexports = [{ stream = \"ev.>\" }]\nimports = [{ stream = { account = \"B\", subject = \"cmd.>\" } }]\n\
         [accounts.B]\nexports = [{ stream = \"cmd.>\" }]\nimports = [{ stream = { account = \"A\", subject = \"ev.>\" } }]\n",
    )
    .unwrap();
    for (text, needle) in [
        ("exports = [{ stream = \"a\", service = \"b\" }]", "exactly one of"),
        ("exports = [{ stream = \"a\", response_type = \"stream\" }]", "for services"),
        ("imports = [{ service = { account = \"B\", subject = \"s\" }, prefix = \"p\" }]", "`prefix` is for stream"),
        ("imports = [{ stream = { account = \"B\", subject = \"s\" }, prefix = \"p\", to = \"t\" }]", "not both"),
    ] {
        let err = toml_err(&format!("[accounts.A]\n{text}\n"));
        assert!(err.contains("leafd.toml:2:") && err.contains(needle), "{text}\n=> {err}");
    }
}

#[test]
fn tls_and_https_port_are_checked_by_key() {
    let cfg = toml(
        "https_port = 8443\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\ntimeout = \"500ms\"\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    let tls = cfg.tls.as_ref().unwrap();
    assert_eq!(tls.timeout, Duration::from_millis(500));
    assert!(!tls.verifies());

    let both =
        toml("http_port = 8222\nhttps_port = 8443\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n")
            .unwrap();
    let err = both.validate().unwrap_err().to_string();
    assert!(
        err.contains("https_port: cannot be combined with http_port"),
        "{err}"
    );
    let bare = toml("https_port = 8443\n").unwrap();
    let err = bare.validate().unwrap_err().to_string();
    assert!(err.contains("https_port: needs the `tls` table"), "{err}");
    let err = toml_err("[tls]\ncert_file = \"c\"\ncipher_suites = []\n");
    assert!(
        err.starts_with("leafd.toml:3: unknown key `tls.cipher_suites`"),
        "{err}"
    );

    // Users without a password only with verify_and_map.
    let text =
        "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nca_file = \"ca\"\nverify_and_map = true\n\
                [authorization]\nusers = [{ user = \"CN=bob\" }]\n";
    toml(text).unwrap().validate().unwrap();
    let err = toml(&text.replace("verify_and_map", "verify"))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("authorization.users[0].password: missing password"),
        "{err}"
    );
}

#[test]
fn process_keys_as_nats_server() {
    let cfg = Config::default();
    assert_eq!(cfg.lame_duck_duration, Duration::from_secs(120));
    assert_eq!(cfg.lame_duck_grace_period, Duration::from_secs(10));
    let cfg = toml(
        "lame_duck_duration = \"30s\"\nlame_duck_grace_period = \"1s\"\n\
         pidfile = \"/run/x.pid\"\nlogfile = \"/var/log/x.log\"\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.lame_duck_duration, Duration::from_secs(30));
    assert_eq!(cfg.pid_file, Some(PathBuf::from("/run/x.pid")));
    assert_eq!(cfg.log_file, Some(PathBuf::from("/var/log/x.log")));
    let short = toml("lame_duck_duration = \"10s\"\n").unwrap();
    let err = short.validate().unwrap_err().to_string();
    assert!(
        err.contains("lame_duck_duration") && err.contains("minimum is 30 seconds"),
        "{err}"
    );
    let long_grace = toml("lame_duck_grace_period = \"2m\"\n").unwrap();
    let err = long_grace.validate().unwrap_err().to_string();
    assert!(err.contains("lame_duck_grace_period"), "{err}");
    let syslog = toml("syslog = true\n").unwrap();
    let err = syslog.validate().unwrap_err().to_string();
    assert!(
        err.contains("syslog") && err.contains("not supported yet"),
        "{err}"
    );
    assert!(toml_err("lame_duck_duration = \"soon\"\n").contains("lame_duck_duration"));
}
