//! Credentials in leafnode remote URLs (`nats-leaf://user:password@hub`,
//! `nats-leaf://TOKEN@hub`) are never displayed: not on any monitoring page (`/leafz`,
//! `/varz`, `/connz`, `/subsz`, `/jsz`, `/healthz`, leafd's `/uplinkz` and `/sourcesz`), not in
//! `/metrics` labels, not in the log (connects, refusals, connect errors, reconnects, at debug
//! level), not in reload messages, `leafd status` or `check-config`'s errors. Where a URL is
//! shown, its credentials read `[REDACTED]`.
//!
//! The same leaf (four remotes: one connected with a password, one with a token, one refused
//! for a wrong password, one whose hub is down) runs as leafd, hubd and nats-server (the
//! reference: it shows no remote URLs at all, and the test holds for it too).

use std::process::Command;

use e2e::serde_json::{json, Value};
use e2e::{free_port, http_get, unique, wait_for_log, ServerKind, TestServer};

/// Every secret the remotes carry; none may ever be displayed.
const SECRETS: [&str; 5] = [
    "SECRETPASS1",
    "SECRETTOKEN2",
    "SECRETWRONG3",
    "SECRETTOKEN4",
    "SECRETTOKEN5",
];

/// The monitoring pages fetched (a 404 is fine: nats-server has no `/uplinkz`).
const PAGES: [&str; 10] = [
    "/leafz",
    "/varz",
    "/connz",
    "/subsz",
    "/jsz",
    "/healthz",
    "/metrics",
    "/uplinkz",
    "/sourcesz",
    "/routez",
];

/// Asserts that `text` (named `what`) shows none of [`SECRETS`].
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} shown in {what}:\n{text}");
    }
}

/// `GET path` as text (any status), bounded.
async fn page_text(port: u16, path: &str) -> String {
    let (code, body) = http_get(port, path).await;
    if body.is_null() {
        // Not JSON (`/metrics`): fetch the text itself.
        if code == 200 {
            return e2e::http_get_text(port, path).await;
        }
        return String::new();
    }
    body.to_string()
}

/// The leaf's configuration: four remotes, debug logging, its monitoring port `http`.
fn leaf_config(pass_port: u16, token_port: u16, down_port: u16, http: u16, token4: &str) -> Value {
    json!({
        "server_name": format!("leaf-{http}"),
        "http_port": http,
        "debug": true,
        "leafnodes": {
            "reconnect": 1,
            "remotes": [
                { "url": format!("nats-leaf://u:SECRETPASS1@127.0.0.1:{pass_port}") },
                { "url": format!("nats-leaf://SECRETTOKEN2@127.0.0.1:{token_port}") },
                { "url": format!("nats-leaf://u:SECRETWRONG3@127.0.0.1:{pass_port}") },
                { "url": format!("nats-leaf://{token4}@127.0.0.1:{down_port}") },
            ],
        },
    })
}

/// Runs the leaf of `kind` against two hubd hubs and checks every place it displays things.
async fn remote_credentials_are_never_displayed(kind: ServerKind) {
    let (pass_port, token_port, down_port, http) =
        (free_port(), free_port(), free_port(), free_port());
    let pass_hub = TestServer::with_config(
        ServerKind::Hubd,
        json!({ "leafnodes": {
            "listen": format!("127.0.0.1:{pass_port}"),
            "authorization": { "user": "u", "password": "SECRETPASS1" },
        }}),
    )
    .await;
    let token_hub = TestServer::with_config(
        ServerKind::Hubd,
        json!({ "leafnodes": {
            "listen": format!("127.0.0.1:{token_port}"),
            "authorization": { "token": "SECRETTOKEN2" },
        }}),
    )
    .await;
    let leaf = TestServer::with_config(
        kind,
        leaf_config(pass_port, token_port, down_port, http, "SECRETTOKEN4"),
    )
    .await;

    // Both good remotes are up; the refused one and the one whose hub is down have failed
    // (and been retried) a few times.
    wait_for_log(&pass_hub, "leafnode link established", 1).await;
    wait_for_log(&token_hub, "leafnode link established", 1).await;
    wait_for_log(&pass_hub, "authentication failed", 2).await;
    if kind != ServerKind::NatsServer {
        wait_for_log(&leaf, "Authorization Violation", 2).await;
        wait_for_log(&leaf, "cannot connect to leafnode hub", 2).await;
        // Where our servers show a remote's URL, its credentials read [REDACTED].
        let (_, leafz) = http_get(http, "/leafz").await;
        let urls: Vec<&str> = leafz["remotes"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["url"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            urls,
            [
                format!("nats-leaf://u:[REDACTED]@127.0.0.1:{pass_port}"),
                format!("nats-leaf://[REDACTED]@127.0.0.1:{token_port}"),
                format!("nats-leaf://u:[REDACTED]@127.0.0.1:{pass_port}"),
                format!("nats-leaf://[REDACTED]@127.0.0.1:{down_port}"),
            ],
            "{leafz}"
        );
        let metrics = e2e::http_get_text(http, "/metrics").await;
        assert!(
            metrics.contains(&format!(
                "leafd_leafnode_connected{{url=\"nats-leaf://[REDACTED]@127.0.0.1:{token_port}\"}} 1"
            )),
            "{metrics}"
        );
        let (_, varz) = http_get(http, "/varz").await;
        assert_eq!(
            varz["leaf"]["remotes"][1]["urls"],
            json!([format!("127.0.0.1:{token_port}")]),
            "{varz}"
        );
    } else {
        wait_for_log(&leaf, "Authorization Violation", 2).await;
        wait_for_log(&leaf, "Error trying to connect as leafnode", 1).await;
    }
    for page in PAGES {
        assert_no_secret(page, &page_text(http, page).await);
    }

    if kind != ServerKind::NatsServer {
        // A reload that changes the down remote's token: the reload messages hide both.
        std::fs::write(
            leaf.config_path(),
            leaf_config(pass_port, token_port, down_port, http, "SECRETTOKEN5").to_string(),
        )
        .expect("rewrite the config");
        let failures = leaf.log().matches("cannot connect to leafnode hub").count();
        leaf.signal(libc::SIGHUP);
        wait_for_log(&leaf, "leafnodes.remotes[3]: settings changed", 1).await;
        wait_for_log(&leaf, "cannot connect to leafnode hub", failures + 2).await;
        for page in PAGES {
            assert_no_secret(page, &page_text(http, page).await);
        }
    }
    if kind == ServerKind::Leafd {
        // `leafd status` reads the monitoring port.
        let out = Command::new(ServerKind::Leafd.binary_path())
            .args(["status", "--once", "-m", &format!("127.0.0.1:{http}")])
            .output()
            .expect("run leafd status");
        assert!(out.status.success(), "{out:?}");
        assert_no_secret("leafd status", &String::from_utf8_lossy(&out.stdout));
    }
    assert_no_secret(&format!("the {kind} log"), &leaf.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_credentials_are_never_displayed_leafd() {
    remote_credentials_are_never_displayed(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_credentials_are_never_displayed_hubd() {
    remote_credentials_are_never_displayed(ServerKind::Hubd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_credentials_are_never_displayed_nats_server() {
    remote_credentials_are_never_displayed(ServerKind::NatsServer).await;
}

/// `check-config` (and a start with the file) reports URLs that do not parse without their
/// credentials, in every form a URL can be wrong.
#[test]
fn config_errors_hide_url_credentials() {
    let dir = std::env::temp_dir().join(unique("leaf-redact"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad_urls = [
        "u:SECRETPASS1@127.0.0.1:7422",
        "nats-leaf://u:SECRETPASS1@127.0.0.1:notaport",
        "nats-leaf://SECRETTOKEN2@",
        "http://SECRETTOKEN2@127.0.0.1:7422",
        "nats-leaf://u:SECRETPASS1@[::1",
    ];
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        for (i, url) in bad_urls.iter().enumerate() {
            let path = dir.join(format!("bad{i}.json"));
            let config = json!({ "leafnodes": { "remotes": [{ "url": url }] } });
            std::fs::write(&path, config.to_string()).expect("write config");
            for args in [
                vec!["check-config".to_owned(), path.display().to_string()],
                vec!["-c".to_owned(), path.display().to_string()],
            ] {
                let out = Command::new(kind.binary_path())
                    .args(&args)
                    .output()
                    .expect("run");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{kind} {args:?}: {stderr}");
                assert!(stderr.contains("[REDACTED]@"), "{kind} {args:?}: {stderr}");
                assert_no_secret(&format!("{kind} {args:?}"), &stderr);
                assert_no_secret(
                    &format!("{kind} {args:?}"),
                    &String::from_utf8_lossy(&out.stdout),
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
