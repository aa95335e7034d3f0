//! The JetStream store's files: a record that cannot be read is quarantined and everything
//! else is served (never a crash loop under systemd's `Restart=`), shown on `/healthz` and
//! `/jsz`; nats-server, with its own files damaged the same way, also serves the rest.

use std::path::{Path, PathBuf};

use redb::ReadableTable;

use async_nats::jetstream::{self, consumer, consumer::pull, stream};
use bytes::Bytes;
use e2e::{bounded, free_port, http_get, js_publish as publish, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

/// Starts `kind` on `dir` with a monitoring port.
async fn start(kind: ServerKind, dir: &StoreDir, mport: u16) -> TestServer {
    TestServer::builder(kind)
        .arg("-js")
        .arg("-sd")
        .arg(dir.path())
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await
}

fn durable(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

/// Streams A, B and C (one message each), durable consumers C1 and C2 on B.
async fn populate(server: &TestServer) {
    let js = jetstream::new(server.client().await);
    for name in ["A", "B", "C"] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{}.>", name.to_lowercase())],
            ..Default::default()
        })
        .await
        .unwrap();
        publish(&js, &format!("{}.x", name.to_lowercase()), "before").await;
    }
    let b = js.get_stream("B").await.unwrap();
    for c in ["C1", "C2"] {
        let _: consumer::PullConsumer = b.create_consumer(durable(c)).await.unwrap();
    }
}

/// The other streams and consumers work: B takes a publish, C1 delivers both messages.
async fn the_rest_works(server: &TestServer) {
    let js = jetstream::new(server.client().await);
    assert_eq!(publish(&js, "b.y", "after").await, 2);
    let b = js.get_stream("B").await.expect("stream B is served");
    let c1: consumer::PullConsumer = b.get_consumer("C1").await.expect("C1 is served");
    let mut batch = bounded("fetch", c1.fetch().max_messages(2).messages())
        .await
        .expect("fetch");
    let mut got = Vec::new();
    bounded("fetch result", async {
        while let Some(m) = batch.next().await {
            got.push(m.expect("message").payload.clone());
        }
    })
    .await;
    assert_eq!(got, [Bytes::from("before"), Bytes::from("after")]);
}

/// Writes garbage into our store file as a damaged disk would: stream A's definition is not
/// postcard at all, stream C's definition is intact but its configuration is not JSON, and
/// consumer C2's record is not JSON.
fn damage_redb(dir: &Path) {
    const STREAMS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("streams");
    const CONSUMERS: redb::TableDefinition<(u32, &str), &[u8]> =
        redb::TableDefinition::new("consumers");
    let db = redb::Database::open(dir.join("leaf.redb")).expect("open the store file");
    let txn = db.begin_write().unwrap();
    {
        let mut streams = txn.open_table(STREAMS).unwrap();
        let def_b = streams.get("B").unwrap().expect("B").value().to_vec();
        let def_c = streams.get("C").unwrap().expect("C").value().to_vec();
        // A definition is (id varint, config length varint, config); ids here are < 128.
        let (id_b, id_c) = (def_b[0], def_c[0]);
        assert!(id_b < 128 && id_c < 128);
        streams
            .insert("A", &[0xff_u8, 0xff, 0xff, 0xff, 0xff, 0xff][..])
            .unwrap();
        let config = b"{\"config\": not json";
        let mut def = vec![id_c, u8::try_from(config.len()).unwrap()];
        def.extend_from_slice(config);
        streams.insert("C", def.as_slice()).unwrap();
        let mut consumers = txn.open_table(CONSUMERS).unwrap();
        let old = consumers.get((u32::from(id_b), "C2")).unwrap();
        assert!(old.is_some(), "C2's record is where the format says");
        drop(old);
        consumers
            .insert((u32::from(id_b), "C2"), &b"\x00\x01garbage"[..])
            .unwrap();
    }
    txn.commit().unwrap();
}

async fn undecodable_records_are_quarantined(kind: ServerKind) {
    let dir = StoreDir::new();
    let mport = free_port();
    let mut server = start(kind, &dir, mport).await;
    populate(&server).await;
    assert!(server.terminate().is_some(), "{kind} stops on SIGTERM");
    damage_redb(Path::new(dir.path()));

    // It starts (before: "stored configuration is unreadable", exit 1, a crash loop).
    let mut server = start(kind, &dir, mport).await;
    the_rest_works(&server).await;
    let js = jetstream::new(server.client().await);
    for gone in ["A", "C"] {
        assert!(js.get_stream(gone).await.is_err(), "{gone} is not served");
    }
    let b = js.get_stream("B").await.unwrap();
    assert!(b.get_consumer::<pull::Config>("C2").await.is_err());
    let want = ["consumer B C2", "stream A", "stream C"];
    let (code, health) = http_get(mport, "/healthz").await;
    assert_eq!(code, 200, "it serves: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let mut listed: Vec<String> = health["quarantined"]
        .as_array()
        .expect("quarantined list")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, want, "{health}");
    let (_, jsz) = http_get(mport, "/jsz").await;
    let q = jsz["quarantined"].as_array().expect("/jsz quarantined");
    assert_eq!(q.len(), 3, "{jsz}");
    for entry in q {
        assert!(
            entry["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{jsz}"
        );
    }
    assert_eq!(jsz["streams"], 1, "{jsz}");
    let log = server.log();
    for what in want {
        assert!(log.contains(what), "the log names {what}: {log}");
    }

    // A new stream may take a quarantined name; the records stay listed across a restart.
    js.create_stream(stream::Config {
        name: "A".into(),
        subjects: vec!["a.>".into()],
        ..Default::default()
    })
    .await
    .expect("the name A is free again");
    assert_eq!(publish(&js, "a.new", "new").await, 1);
    drop(js);
    assert!(server.terminate().is_some());
    let server = start(kind, &dir, mport).await;
    the_rest_works_after_restart(&server).await;
    let (_, health) = http_get(mport, "/healthz").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["quarantined"].as_array().map(Vec::len), Some(3));
}

/// After a second restart: B has its two messages and the new A its one.
async fn the_rest_works_after_restart(server: &TestServer) {
    let js = jetstream::new(server.client().await);
    let mut b = js.get_stream("B").await.unwrap();
    assert_eq!(b.info().await.unwrap().state.messages, 2);
    let mut a = js.get_stream("A").await.unwrap();
    assert_eq!(a.info().await.unwrap().state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_quarantined_leafd() {
    undecodable_records_are_quarantined(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_quarantined_hubd() {
    undecodable_records_are_quarantined(ServerKind::Hubd).await;
}

/// nats-server's files (`jetstream/$G/streams/<name>/meta.inf`, the consumer's under `obs/`)
/// damaged the same way: it also starts and serves the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_skipped_nats_server() {
    let kind = ServerKind::NatsServer;
    let dir = StoreDir::new();
    let mport = free_port();
    let mut server = start(kind, &dir, mport).await;
    populate(&server).await;
    assert!(server.terminate().is_some());
    let streams: PathBuf = Path::new(dir.path()).join("jetstream/$G/streams");
    for meta in ["A/meta.inf", "C/meta.inf", "B/obs/C2/meta.inf"] {
        let path = streams.join(meta);
        assert!(path.is_file(), "{} exists", path.display());
        std::fs::write(&path, b"\xff\xffgarbage").unwrap();
    }
    let server = start(kind, &dir, mport).await;
    the_rest_works(&server).await;
    let js = jetstream::new(server.client().await);
    for gone in ["A", "C"] {
        assert!(js.get_stream(gone).await.is_err(), "{gone} is not served");
    }
    let (code, _) = http_get(mport, "/healthz").await;
    assert_eq!(code, 200);
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs the test's servers with umask 000 (inherited by the children), as a careless
/// service manager or shell might; restored on drop. One test at a time changes it.
struct Umask(
    libc::mode_t,
    #[allow(dead_code)] std::sync::MutexGuard<'static, ()>,
);

static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Umask {
    fn open() -> Umask {
        let guard = UMASK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: umask has no memory-safety preconditions.
        Umask(unsafe { libc::umask(0) }, guard)
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::umask(self.0);
        }
    }
}

/// A store directory that does not exist yet, two levels below a fresh one.
fn nested(dir: &StoreDir) -> (PathBuf, PathBuf) {
    let parent = Path::new(dir.path()).join("state");
    (parent.clone(), parent.join("jetstream"))
}

async fn store_files_are_private(kind: ServerKind) {
    let dir = StoreDir::new();
    let (parent, store) = nested(&dir);
    let umask = Umask::open();
    let server = TestServer::builder(kind)
        .arg("-js")
        .arg("-sd")
        .arg(store.to_str().unwrap())
        .start()
        .await;
    drop(umask);
    populate(&server).await;
    assert_eq!(mode(&parent), 0o700, "{kind} created {}", parent.display());
    assert_eq!(mode(&store), 0o700, "{kind} created {}", store.display());
    let file = store.join("leaf.redb");
    assert_eq!(mode(&file), 0o600, "{}", file.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_are_private_leafd() {
    store_files_are_private(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_are_private_hubd() {
    store_files_are_private(ServerKind::Hubd).await;
}

/// nats-server under the same umask: its files are no more private than ours (0640 files,
/// 0750 directories in 2.9), so ours are at least as strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_are_private_nats_server_is_not_stricter() {
    let dir = StoreDir::new();
    let (_, store) = nested(&dir);
    let umask = Umask::open();
    let server = TestServer::builder(ServerKind::NatsServer)
        .arg("-js")
        .arg("-sd")
        .arg(store.to_str().unwrap())
        .start()
        .await;
    drop(umask);
    populate(&server).await;
    let meta = store.join("jetstream/$G/streams/A/meta.inf");
    assert_eq!(mode(&meta) & 0o600, 0o600, "{}", meta.display());
    assert_eq!(
        0o600 & !mode(&meta),
        0,
        "ours (0600) allow nothing nats-server's do not"
    );
    let d = store.join("jetstream/$G/streams/A");
    assert_eq!(
        0o700 & !mode(&d),
        0,
        "ours (0700) allow nothing nats-server's do not"
    );
}

/// With JetStream on and neither `jetstream.store_dir` nor systemd's `$STATE_DIRECTORY`,
/// the server refuses to start, naming the key (before: a store under /tmp/<name>/jetstream,
/// a path any local user can create first).
async fn no_store_under_tmp_by_default(kind: ServerKind) {
    let out = tokio::task::spawn_blocking(move || {
        e2e::run_command_to_exit(
            std::process::Command::new(kind.binary_path())
                .args(["-a", "127.0.0.1", "-p", &free_port().to_string(), "-js"])
                .env_remove("STATE_DIRECTORY"),
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("jetstream.store_dir"), "{text}");

    // Under systemd (StateDirectory=) the store goes into the state directory.
    let state = StoreDir::new();
    let server = TestServer::builder(kind)
        .arg("-js")
        .env("STATE_DIRECTORY", Some(state.path()))
        .start()
        .await;
    populate(&server).await;
    assert!(Path::new(state.path())
        .join("jetstream/leaf.redb")
        .is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_under_tmp_by_default_leafd() {
    no_store_under_tmp_by_default(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_under_tmp_by_default_hubd() {
    no_store_under_tmp_by_default(ServerKind::Hubd).await;
}
