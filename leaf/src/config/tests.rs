//! Tests for loading leafd's configuration: its example files and the uplink keys (the
//! shared keys are tested in `leaf_core::config`).

use std::time::Duration;

use leaf_core::config::{
    DEFAULT_HOST, DEFAULT_MAX_CONTROL_LINE, DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_PENDING,
    DEFAULT_PING_INTERVAL, DEFAULT_PORT, DEFAULT_WRITE_DEADLINE,
};

use super::*;

fn toml(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Format::Toml, "leafd.toml")
}

#[test]
fn leafd_keys_are_the_uplinks_fleet_and_the_gateways() {
    let gateway = <crate::gateway::config::Settings as Extension>::KEYS;
    assert_eq!(&Config::KEYS[..2], ["uplinks", "fleet"]);
    assert_eq!(&Config::KEYS[2..], gateway);
}

/// `[fleet]`: the interval of the status records, checked with the key (and, for a value
/// of the wrong type or an unknown key, the line) named.
#[test]
fn fleet_settings_are_checked() {
    let check = |text: &str| {
        toml(text)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        check("").unwrap().fleet.interval,
        crate::fleet::DEFAULT_INTERVAL
    );
    let c = check("[fleet]\ninterval = \"30s\"\n").unwrap();
    assert_eq!(c.fleet.interval, Duration::from_secs(30));
    assert!(check("fleet = { interval = 0 }\n")
        .unwrap()
        .fleet
        .interval
        .is_zero());
    let err = check("port = 1\n[fleet]\ninterval = \"200ms\"\n").unwrap_err();
    assert!(
        err.starts_with("fleet.interval: must be between 1s and 1h"),
        "{err}"
    );
    let err = check("port = 1\n[fleet]\ninterval = \"soon\"\n").unwrap_err();
    assert!(err.starts_with("leafd.toml:3: fleet.interval: "), "{err}");
    let err = check("port = 1\n[fleet]\nsubject = \"x\"\n").unwrap_err();
    assert!(
        err.starts_with("leafd.toml:3: unknown key `fleet.subject`"),
        "{err}"
    );
    assert!(check("fleet = 5\n").is_err());
}

/// The example file documents every key: it must parse and validate, and set
/// what its comments say.
#[test]
fn example_file_parses() {
    let text = include_str!("../../leafd.example.toml");
    let cfg = parse_str(text, Format::Toml, "leafd.example.toml").unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.server.host, DEFAULT_HOST);
    assert_eq!(cfg.server.port, DEFAULT_PORT);
    assert_eq!(cfg.server.max_payload, DEFAULT_MAX_PAYLOAD);
    assert_eq!(cfg.server.max_pending, DEFAULT_MAX_PENDING);
    assert_eq!(cfg.server.max_control_line, DEFAULT_MAX_CONTROL_LINE);
    assert_eq!(cfg.server.ping_interval, DEFAULT_PING_INTERVAL);
    assert_eq!(cfg.server.write_deadline, DEFAULT_WRITE_DEADLINE);
    assert_eq!(cfg.server.authorization.users.len(), 3);
    // Leafnode remotes are shown commented out.
    assert!(cfg.server.jetstream.enabled);
    assert_eq!(cfg.server.jetstream.domain.as_deref(), Some("edge"));
    assert!(cfg.server.leafnodes.remotes.is_empty());
    assert_eq!(cfg.fleet.interval, Duration::from_secs(10));

    // The commented-out alternatives are valid too: uncomment each
    // `# key = value` line (and the commented remote) in its own copy.
    for (i, line) in text.lines().enumerate() {
        let Some(code) = line.trim_start().strip_prefix("# ") else {
            continue;
        };
        let is_assignment = code.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
        let is_list_item = code.starts_with("{ urls = ");
        if !(is_assignment || is_list_item) {
            continue;
        }
        let uncommented: Vec<&str> = text
            .lines()
            .enumerate()
            .map(|(j, l)| if j == i { code } else { l })
            .collect();
        let variant = uncommented.join("\n");
        let parsed = parse_str(&variant, Format::Toml, "leafd.example.toml");
        let parsed = parsed.unwrap_or_else(|err| panic!("line {}: `{code}`: {err}", i + 1));
        assert_ne!(parsed, cfg, "line {}: `{code}` changes nothing", i + 1);
    }
}

/// The uplink example is a complete, valid gateway configuration, and its commented keys
/// parse too.
#[test]
fn uplink_example_file_parses() {
    let text = include_str!("../../uplink.example.toml");
    let cfg = parse_str(text, Format::Toml, "uplink.example.toml").unwrap();
    cfg.validate().unwrap();
    let up = &cfg.uplinks[0];
    assert_eq!(up.name, "sensors");
    assert_eq!(up.stream_name(), "UPLINK_sensors");
    assert_eq!(up.subject_prefix.as_deref(), Some("gw1"));
    assert_eq!(up.max_bytes, Some(2 << 30));
    assert_eq!(up.max_age, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(up.when_full, WhenFull::DropOldest);
    assert_eq!(cfg.server.http_port, Some(8222));
    for (i, line) in text.lines().enumerate() {
        let Some(code) = line.trim_start().strip_prefix("# ") else {
            continue;
        };
        if !code
            .split_once(" = ")
            .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            continue;
        }
        let variant: Vec<&str> = text
            .lines()
            .enumerate()
            .map(|(j, l)| if j == i { code } else { l })
            .collect();
        let parsed = parse_str(&variant.join("\n"), Format::Toml, "uplink.example.toml")
            .unwrap_or_else(|err| panic!("line {}: `{code}`: {err}", i + 1));
        parsed
            .validate()
            .unwrap_or_else(|err| panic!("line {}: `{code}`: {err}", i + 1));
        assert_ne!(parsed, cfg, "line {}: `{code}` changes nothing", i + 1);
    }
}

/// Uplink settings are checked with the key named.
#[test]
fn uplink_errors_name_the_key() {
    let base = "jetstream = true\n[leafnodes]\nremotes = [{ url = \"nats-leaf://h:7422\" }]\n";
    let check = |extra: &str| {
        toml(&format!("{base}[[uplinks]]\n{extra}"))
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| e.to_string())
    };
    let ok = check("name = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\n").unwrap();
    assert_eq!(ok.uplinks[0].subjects, ["s.>"]);
    let err = check("name = \"a b\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\n").unwrap_err();
    assert!(err.contains("uplinks[0].name"), "{err}");
    let err = check("name = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S.x\"\n").unwrap_err();
    assert!(err.contains("uplinks[0].hub_stream"), "{err}");
    let err =
        check("name = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\nremote = 3\n").unwrap_err();
    assert!(err.contains("uplinks[0].remote"), "{err}");
    let err =
        check("name = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\nwhen_full = \"explode\"\n")
            .unwrap_err();
    assert!(err.contains("when_full"), "{err}");
    let err = check("name = \"a\"\nsubjects = []\nhub_stream = \"S\"\n").unwrap_err();
    assert!(err.contains("uplinks[0].subjects"), "{err}");
    let err =
        check("name = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\nsubject_prefix = \"gw.*\"\n")
            .unwrap_err();
    assert!(err.contains("uplinks[0].subject_prefix"), "{err}");
    let err =
        check("name = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\nack_every = 0\n").unwrap_err();
    assert!(err.contains("uplinks[0].ack_every"), "{err}");
    assert_eq!(
        ok.uplinks[0].ack_every, 128,
        "chained acknowledgements by default"
    );
    let err = toml("[[uplinks]]\nname = \"a\"\nsubjects = \"s.>\"\nhub_stream = \"S\"\n")
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("enable `jetstream`"), "{err}");
}

/// A remote's deny lists that would keep an uplink from working are refused, naming the key;
/// one that covers only some of its subjects is accepted (those are counted as denied).
#[test]
fn uplink_deny_lists_that_cannot_work_are_refused() {
    let check = |remote: &str| {
        toml(&format!(
            "jetstream = true\n[leafnodes]\nremotes = [{{ url = \"nats-leaf://h:7422\", {remote} }}]\n\
             [[uplinks]]\nname = \"a\"\nsubjects = [\"s.>\", \"t.>\"]\nhub_stream = \"S\"\nsubject_prefix = \"gw\"\n"
        ))
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| e.to_string())
    };
    check("deny_exports = \"gw.s.secret.>\"").unwrap();
    let err = check("deny_exports = \"$JS.API.>\"").unwrap_err();
    assert!(err.contains("leafnodes.remotes[0].deny_exports"), "{err}");
    assert!(err.contains("JetStream API"), "{err}");
    let err = check("deny_imports = \"_UPLINK.>\"").unwrap_err();
    assert!(err.contains("leafnodes.remotes[0].deny_imports"), "{err}");
    let err = check("deny_exports = [\"gw.s.>\", \"gw.>\"]").unwrap_err();
    assert!(err.contains("uplinks[0].subjects"), "{err}");
}

/// `leaf/gateway.example.toml` parses, validates, and its board, devices and lines resolve
/// (the sources are started against a scratch server and stopped at once).
#[tokio::test]
async fn the_gateway_example_config_is_valid() {
    use crate::gateway::{Gateways, Outlet};
    use leaf_core::server::{Server, ServerOptions};

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.example.toml");
    let cfg = load_file(std::path::Path::new(path)).unwrap();
    cfg.validate().unwrap();
    let g = &cfg.gateways;
    assert_eq!((g.serial.len(), g.modbus.len(), g.gpio.len()), (2, 1, 1));
    let server = Server::bind(ServerOptions {
        port: 0,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let gateways = Gateways::start(&Outlet::new(server.shared()), g, "gw1").unwrap();
    assert_eq!(gateways.registry().sources().len(), 4);
}

/// The examples in nats-server's format give exactly the configuration of their TOML
/// twins, so neither can drift from the other (nor from the code: the TOML files are
/// checked key by key above). A build without nats-server's format (the `gateway` build: no cargo feature `natsconf`)
/// refuses the `.conf` files by the feature's name.
#[test]
fn nats_format_examples_match_the_toml_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["leafd.example", "uplink.example", "gateway.example"] {
        let toml = load_file(&dir.join(format!("{name}.toml"))).unwrap();
        let conf = load_file(&dir.join(format!("{name}.conf")));
        if !cfg!(feature = "natsconf") {
            let err = conf.unwrap_err().to_string();
            assert!(
                err.contains("built without cargo feature `natsconf`"),
                "{err}"
            );
            continue;
        }
        let conf = conf.unwrap_or_else(|e| panic!("{name}.conf: {e}"));
        conf.validate().unwrap();
        assert_eq!(conf, toml, "{name}.conf and {name}.toml differ");
        assert!(conf.server.ignored_settings.is_empty(), "{name}.conf");
    }
}

/// A build without a kind of gateway source (cargo features `serial`, `modbus`, `gpio`; all
/// in the default build) refuses its key by name, in `check-config` and at start; a build
/// with it accepts the same settings. Run with each feature set to see both sides.
#[test]
fn gateway_kinds_left_out_of_the_build_are_refused_by_name() {
    let text = include_str!("../../gateway.example.toml");
    let full = parse_str(text, Format::Toml, "gateway.example.toml").unwrap();
    let cases = [
        ("serial", cfg!(feature = "serial"), "serial port"),
        ("modbus", cfg!(feature = "modbus"), "Modbus"),
        ("gpio", cfg!(feature = "gpio"), "GPIO"),
    ];
    for (key, built, what) in cases {
        let mut only = full.gateways.clone();
        if key != "serial" {
            only.serial.clear();
        }
        if key != "modbus" {
            only.modbus.clear();
        }
        if key != "gpio" {
            only.gpio.clear();
        }
        let refused = only.not_built();
        if built {
            assert_eq!(refused, None, "{key}");
            only.validate().unwrap();
        } else {
            let expected = format!("{key}: built without {what} support (cargo feature `{key}`)");
            assert_eq!(refused.map(|k| k.key), Some(key));
            assert_eq!(only.validate().unwrap_err().to_string(), expected);
        }
    }
}
