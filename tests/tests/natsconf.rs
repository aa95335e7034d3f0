//! nats-server's own configuration format (issue 23), end to end: files written in the
//! forms nats-server's documentation shows start leafd, hubd and nats-server, which then
//! serve the same way; every file is also checked with `nats-server -t` to prove it is a
//! valid nats-server configuration.
//!
//! * users with permissions, a variable from the file, one from the environment, an
//!   `include`, a size with a suffix, a cosmetic key (warned about by ours);
//! * JetStream with a domain;
//! * accounts with users, kept apart;
//! * a leaf whose remote logs in with a `.creds` file;
//! * a hub with a leafnode listener and accounts, the leaf bound to one account;
//! * hubd's `cluster` block, with hubd and nats-server members;
//! * bad files: `check-config` names file, line, column and key; keys we do not implement
//!   are refused by name (nats-server accepts them: we are stricter) or, when cosmetic,
//!   warned about.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::path::Path;
use std::process::Command;

use e2e::async_nats::{self, Client};
use e2e::creds::creds_for;
use e2e::{
    await_interest, barrier_on, free_port, next_msg, pub_sub_both_ways, run_command_to_exit, sync,
    unique, wait_for_log, ServerKind, StoreDir, TestServer,
};
use nkeys::KeyPair;

/// `nats-server -t -c FILE` (with `env`): whether nats-server takes the file as valid, and
/// what it printed.
fn nats_server_validates(path: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(ServerKind::NatsServer.binary_path());
    cmd.arg("-t").arg("-c").arg(path);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = run_command_to_exit(&mut cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Starts `kind` with `conf` (and the other `files`, and environment `env`), after checking
/// that nats-server takes the same file as valid.
async fn start(
    kind: ServerKind,
    conf: &str,
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> TestServer {
    let mut builder = TestServer::builder(kind).nats_conf(conf);
    for (name, text) in files {
        builder = builder.file(name, text);
    }
    for (name, value) in env {
        builder = builder.env(name, Some(value));
    }
    let server = builder.start().await;
    let (valid, output) = nats_server_validates(&server.config_path(), env);
    assert!(valid, "nats-server -t refuses the file:\n{conf}\n{output}");
    server
}

async fn login(server: &TestServer, user: &str, password: &str) -> Client {
    server
        .client_with(TestServer::options().user_and_password(user.into(), password.into()))
        .await
}

/// Users and permissions as nats-server's authorization documentation writes them, with a
/// variable, an environment variable and an include.
const USERS: &str = r#"
# The sensor's password, used below as a variable.
SENSOR_PASS: "sensor-pw"
include ./limits.conf
authorization {
  users = [
    { user: admin, password: $ADMIN_PASS }
    {
      user: sensor
      password: $SENSOR_PASS
      permissions: {
        publish: { allow: ["plant.sensors.>"] }
        subscribe: ["_INBOX.>", "plant.commands.*"]
      }
    }
  ]
  timeout: 2
}
logtime: false
"#;

const LIMITS: &str = "max_payload: 64KB\nping_interval: \"1m\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_permissions_variables_and_include() {
    for kind in ServerKind::ALL {
        let server = start(
            kind,
            USERS,
            &[("limits.conf", LIMITS)],
            &[("ADMIN_PASS", "admin-pw")],
        )
        .await;
        let raw = server.raw().await;
        assert_eq!(raw.info()["max_payload"], 64 * 1024, "{kind}");
        assert_eq!(raw.info()["auth_required"], true, "{kind}");
        assert!(
            server
                .try_client_with(
                    TestServer::options().user_and_password("admin".into(), "wrong".into())
                )
                .await
                .is_err(),
            "{kind}: a wrong password is refused"
        );
        let admin = login(&server, "admin", "admin-pw").await;
        let sensor = login(&server, "sensor", "sensor-pw").await;

        // The sensor may publish readings, nothing else: the denied message never arrives,
        // the allowed one after it does.
        let mut plant = admin.subscribe("plant.>").await.unwrap();
        sync(&admin).await;
        sensor
            .publish("plant.other.x", "denied".into())
            .await
            .unwrap();
        sensor
            .publish("plant.sensors.t", "allowed".into())
            .await
            .unwrap();
        let msg = next_msg(&mut plant).await;
        assert_eq!(
            (msg.subject.as_str(), &msg.payload[..]),
            ("plant.sensors.t", &b"allowed"[..]),
            "{kind}"
        );
        // It receives commands (the barrier's subject must be one it may subscribe to).
        let mut commands = sensor.subscribe("plant.commands.*").await.unwrap();
        barrier_on(&admin, &sensor, "plant.commands.ready").await;
        admin
            .publish("plant.commands.open", "go".into())
            .await
            .unwrap();
        loop {
            let msg = next_msg(&mut commands).await;
            if msg.subject.as_str() == "plant.commands.open" {
                assert_eq!(&msg.payload[..], b"go", "{kind}");
                break;
            }
        }

        if kind != ServerKind::NatsServer {
            let log = wait_for_log(&server, "ignoring nats-server settings", 1).await;
            assert!(
                log.contains("logtime (") && log.contains("server.conf:19:1"),
                "{log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_with_a_domain() {
    for kind in ServerKind::ALL {
        let store = StoreDir::new();
        let conf = format!(
            "server_name: js-{}\njetstream {{\n  store_dir: \"{}\"\n  domain: edge\n  max_mem: 64MB\n  max_file: 1GB\n}}\n",
            kind.binary_name(),
            store.path()
        );
        let server = start(kind, &conf, &[], &[]).await;
        let client = server.client().await;
        let js = async_nats::jetstream::new(client.clone());
        e2e::bounded(
            "create stream",
            js.create_stream(async_nats::jetstream::stream::Config {
                name: "READINGS".into(),
                subjects: vec!["readings.>".into()],
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let ack = e2e::bounded(
            "publish",
            js.publish("readings.t", "21.5".into()).await.unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            (ack.stream.as_str(), ack.sequence),
            ("READINGS", 1),
            "{kind}"
        );
        assert_eq!(ack.domain, "edge", "{kind}");
        let info = e2e::js_api(&client, "$JS.API.INFO", e2e::serde_json::json!({})).await;
        assert_eq!(info["domain"], "edge", "{kind}: {info}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_with_users_are_kept_apart() {
    let conf = r#"
accounts {
  A: {
    users: [
      { user: a, password: a }
      { user: a2, password: a2 }
    ]
  }
  B: { users = [ { user: b, password: b } ] }
}
"#;
    for kind in ServerKind::ALL {
        let server = start(kind, conf, &[], &[]).await;
        let a = login(&server, "a", "a").await;
        let a2 = login(&server, "a2", "a2").await;
        let b = login(&server, "b", "b").await;
        let mut a2_sub = a2.subscribe("shared").await.unwrap();
        let mut b_sub = b.subscribe("shared").await.unwrap();
        sync(&a2).await;
        sync(&b).await;
        a.publish("shared", "from-a".into()).await.unwrap();
        assert_eq!(
            &next_msg(&mut a2_sub).await.payload[..],
            b"from-a",
            "{kind}"
        );
        // Account A's message was delivered; B's subscriber gets only B's own marker.
        b.publish("shared", "from-b".into()).await.unwrap();
        assert_eq!(&next_msg(&mut b_sub).await.payload[..], b"from-b", "{kind}");
    }
}

/// Waits (bounded) until `hub` logs a leaf's link (the panic shows its log otherwise).
async fn link_up(hub: &TestServer) {
    let needle = match hub.kind() {
        ServerKind::NatsServer => "Leafnode connection created",
        _ => "leafnode link established",
    };
    wait_for_log(hub, needle, 1).await;
}

/// A hub taking a leaf by its user nkey on a leafnode listener, in nats-server 2.9's form:
/// its leafnode `users` have no `nkey`, so the leaf logs in as one of the client users
/// (top-level `authorization`), the key being its `.creds` JWT's subject. The same file for
/// every hub.
fn creds_hub_conf(nkey: &str, port: u16) -> String {
    format!(
        r#"
authorization {{
  users: [
    {{ nkey: {nkey} }}
    {{ user: test, password: pw }}
  ]
}}
leafnodes {{
  listen: "127.0.0.1:{port}"
}}
"#
    )
}

/// A leaf whose remote logs in with a `.creds` file, as nats-server's leafnode
/// documentation shows it.
fn creds_leaf_conf(creds: &Path, port: u16) -> String {
    format!(
        r#"
leafnodes {{
  remotes = [
    {{
      url: "nats-leaf://127.0.0.1:{port}"
      credentials: "{}"
    }}
  ]
  reconnect: 1
}}
"#,
        creds.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_remote_with_a_credentials_file() {
    let pairs = [
        (ServerKind::NatsServer, ServerKind::Leafd),
        (ServerKind::NatsServer, ServerKind::NatsServer),
        (ServerKind::Hubd, ServerKind::Leafd),
        (ServerKind::Hubd, ServerKind::NatsServer),
    ];
    for (hub_kind, leaf_kind) in pairs {
        let user = KeyPair::new_user();
        let account = KeyPair::new_account();
        let dir = std::env::temp_dir().join(unique("natsconf-creds"));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("leaf.creds");
        std::fs::write(&creds, creds_for(&user, &account)).unwrap();
        let port = free_port();
        let hub_conf = creds_hub_conf(&user.public_key(), port);
        let hub = start(hub_kind, &hub_conf, &[], &[]).await;
        let leaf = start(leaf_kind, &creds_leaf_conf(&creds, port), &[], &[]).await;
        link_up(&hub).await;
        let hc = login(&hub, "test", "pw").await;
        pub_sub_both_ways(&hc, &leaf.client().await).await;
        drop((leaf, hub));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A hub with accounts and a leafnode listener binding the leaf's user to account `PLANT`.
fn accounts_hub_conf(port: u16) -> String {
    format!(
        r#"
accounts {{
  PLANT: {{ users: [ {{ user: plant, password: plant }} ] }}
  OFFICE: {{ users: [ {{ user: office, password: office }} ] }}
}}
leafnodes {{
  listen: 127.0.0.1:{port}
  authorization {{
    users: [ {{ user: leaf, password: leaf-pw, account: PLANT }} ]
  }}
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_with_accounts_and_a_leafnode_listener() {
    let pairs = [
        (ServerKind::Hubd, ServerKind::Leafd),
        (ServerKind::NatsServer, ServerKind::Leafd),
        (ServerKind::Hubd, ServerKind::NatsServer),
    ];
    for (hub_kind, leaf_kind) in pairs {
        let port = free_port();
        let hub = start(hub_kind, &accounts_hub_conf(port), &[], &[]).await;
        let leaf_conf = format!(
            "leafnodes {{\n  remotes: [ {{ url: \"nats-leaf://leaf:leaf-pw@127.0.0.1:{port}\" }} ]\n  reconnect: 1\n}}\n"
        );
        let leaf = start(leaf_kind, &leaf_conf, &[], &[]).await;
        let plant = login(&hub, "plant", "plant").await;
        let office = login(&hub, "office", "office").await;
        let lc = leaf.client().await;
        pub_sub_both_ways(&plant, &lc).await;
        // The office account sees nothing of the leaf.
        let subject = unique("leaf.data");
        let mut office_sub = office.subscribe(subject.clone()).await.unwrap();
        let mut plant_sub = plant.subscribe(subject.clone()).await.unwrap();
        sync(&office).await;
        await_interest(&lc, &subject, &mut plant_sub).await;
        lc.publish(subject.clone(), "plant-only".into())
            .await
            .unwrap();
        assert_eq!(&next_msg(&mut plant_sub).await.payload[..], b"plant-only");
        office.publish(subject, "office".into()).await.unwrap();
        assert_eq!(
            &next_msg(&mut office_sub).await.payload[..],
            b"office",
            "{hub_kind} hub, {leaf_kind} leaf: the office account got the leaf's message"
        );
    }
}

/// One member of a cluster named `plant`, routes to the `others`.
fn cluster_conf(name: &str, port: u16, others: &[u16]) -> String {
    let routes: Vec<String> = others
        .iter()
        .map(|p| format!("    nats-route://127.0.0.1:{p}"))
        .collect();
    format!(
        "server_name: {name}\ncluster {{\n  name: plant\n  listen: 127.0.0.1:{port}\n  routes: [\n{}\n  ]\n}}\n",
        routes.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubd_cluster_block() {
    for other in [ServerKind::Hubd, ServerKind::NatsServer] {
        let (p0, p1) = (free_port(), free_port());
        let m0 = start(ServerKind::Hubd, &cluster_conf("m0", p0, &[p1]), &[], &[]).await;
        let m1 = start(other, &cluster_conf("m1", p1, &[p0]), &[], &[]).await;
        let (c0, c1) = (m0.client().await, m1.client().await);
        pub_sub_both_ways(&c0, &c1).await;
    }
}

/// Runs `kind check-config FILE`: success, and what it printed.
fn check_config(kind: ServerKind, path: &Path) -> (bool, String) {
    let out = run_command_to_exit(
        Command::new(kind.binary_path())
            .arg("check-config")
            .arg(path),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn bad_files_name_file_line_column_and_key() {
    let dir = std::env::temp_dir().join(unique("natsconf-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    // (file text, what ours print, whether nats-server takes it as valid)
    let cases: &[(&str, &str, bool)] = &[
        (
            "port: 4222\nauthorization {\n  user: a\n",
            "bad.conf:2:15: `{` is never closed",
            false,
        ),
        (
            "port: 4222\nauthorization {\n  usr: a\n}\n",
            "bad.conf:3:3: unknown key `authorization.usr`",
            false,
        ),
        (
            "port: 4222\nmax_payload: \"lots\"\n",
            "bad.conf:2:14: max_payload: invalid value",
            false,
        ),
        // Keys nats-server implements and we do not: refused by name.
        (
            "port: 4222\ngateway {\n  name: plant\n  port: 7222\n}\n",
            "bad.conf:2:1: gateway: not supported yet",
            true,
        ),
        (
            "authorization {\n  users: [\n    { user: a, password: b, allowed_connection_types: [\"STANDARD\"] }\n  ]\n}\n",
            "bad.conf:3:29: authorization.users.allowed_connection_types: not supported yet",
            true,
        ),
    ];
    for (i, (text, expected, nats_valid)) in cases.iter().enumerate() {
        let path = dir.join("bad.conf");
        std::fs::write(&path, text).unwrap();
        for kind in [ServerKind::Leafd, ServerKind::Hubd] {
            let (ok, out) = check_config(kind, &path);
            assert!(!ok, "case {i}, {kind} accepted:\n{text}");
            assert!(
                out.contains(expected),
                "case {i}, {kind}: expected `{expected}` in:\n{out}"
            );
        }
        let (ok, out) = nats_server_validates(&path, &[]);
        assert_eq!(ok, *nats_valid, "case {i}: nats-server -t:\n{out}");
    }
    // Cosmetic keys: accepted, with one warning naming them.
    let path = dir.join("cosmetic.conf");
    std::fs::write(&path, "logtime: false\nport: 4222\ntrace_verbose: false\n").unwrap();
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let (ok, out) = check_config(kind, &path);
        assert!(ok, "{kind}: {out}");
        assert!(
            out.contains("warning: ignoring nats-server settings")
                && out.contains("logtime (")
                && out.contains("trace_verbose ("),
            "{kind}: {out}"
        );
    }
    assert!(nats_server_validates(&path, &[]).0);
    std::fs::remove_dir_all(&dir).unwrap();
}
