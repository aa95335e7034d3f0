//! GPIO outputs cannot be driven through another request's reply (issue 16, item 2), end to
//! end: leafd's server with users and permissions on a real TCP port, async-nats clients, and
//! a GPIO group on the in-process simulated kernel (the machines that run the tests have no
//! gpio-sim, so leafd's own binary cannot be given a GPIO chip).
//!
//! A user allowed to publish only `gpio.rpi4.door.get` sends it with the reply subject
//! `gpio.rpi4.valve.set`: the answer (`{"line":"door","value":1}`) must not reach the valve.
//! Two defences hold, each shown on its own: the answer goes only where the requester may
//! publish itself (`leaf_core::server::reply`), and a `.set` takes only its own request
//! format, never another handler's answer (what an unrestricted user's reply loop would
//! deliver).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leaf::gateway::config::gpio::{GpioInput, GpioOutput};
use leaf::gateway::config::GpioGroup;
use leaf::gateway::gpio::{start_with_source, SimHandle, SimSource};
use leaf::gateway::{Board, Context, Outlet, Registry, SourceStats};
use leaf_core::auth::{Authenticator, Permissions, Rules, User};
use leaf_core::server::{Server, ServerOptions, Shared};

const WAIT: Duration = Duration::from_secs(10);
const MS: u64 = 1_000_000;

/// Bounds a wait.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The server (users `admin`, unrestricted, and `door`, who may publish only the door's
/// `.get` and subscribe to its inboxes), serving on a free port until dropped.
struct Gateway {
    shared: Arc<Shared>,
    url: String,
    sim: SimHandle,
    stats: Arc<SourceStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn rules(allow: &[&str]) -> Rules {
    let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
    Rules::new(Some(&allow), &[])
}

async fn gateway() -> Gateway {
    let mut users = HashMap::new();
    users.insert(
        "admin".to_owned(),
        User {
            password: "a".into(),
            nkey: false,
            permissions: None,
            account: None,
        },
    );
    users.insert(
        "door".to_owned(),
        User {
            password: "d".into(),
            nkey: false,
            permissions: Some(Arc::new(Permissions {
                publish: rules(&["gpio.rpi4.door.get"]),
                subscribe: rules(&["_INBOX.>"]),
            })),
            account: None,
        },
    );
    let server = Server::bind(ServerOptions {
        port: 0,
        auth: Authenticator::Users(users),
        ..ServerOptions::default()
    })
    .await
    .expect("bind");
    let url = format!("nats://{}", server.local_addr());
    let shared = server.shared().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));

    let (source, sim) = SimSource::new();
    let mut names = vec!["ID_SDA".to_owned(), "ID_SCL".to_owned()];
    names.extend((2..28).map(|n| format!("GPIO{n}")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sim.add_chip("pinctrl-bcm2711", "/dev/gpiochip0", &names);
    let board = Board::load("rpi4", None).expect("the rpi4 board");
    let ctx = Context {
        board_name: board.name.clone(),
        server_name: "edge1".into(),
        board: Some(Arc::new(board)),
    };
    let group = GpioGroup {
        name: "plant".into(),
        inputs: vec![GpioInput {
            line: "GPIO17".into(),
            name: Some("door".into()),
            ..GpioInput::default()
        }],
        outputs: vec![GpioOutput {
            line: "GPIO27".into(),
            name: Some("valve".into()),
            ..GpioOutput::default()
        }],
        reopen_max: Duration::from_millis(100),
        ..GpioGroup::default()
    };
    let registry = Registry::default();
    let task = start_with_source(&Outlet::new(&shared), &registry, &ctx, 0, &group, source)
        .expect("gpio group");
    bounded("the lines to be requested", sim.wait_requests(1)).await;
    let stats = registry
        .sources()
        .first()
        .expect("the group's stats")
        .clone();
    Gateway {
        shared,
        url,
        sim,
        stats,
        stop: Some(stop),
        task,
    }
}

async fn client(url: &str, user: &str, pass: &str) -> async_nats::Client {
    bounded(
        "connect",
        async_nats::ConnectOptions::new()
            .user_and_password(user.into(), pass.into())
            .request_timeout(Some(WAIT))
            .connect(url),
    )
    .await
    .expect("connect")
}

async fn request(client: &async_nats::Client, subject: &str, body: &str) -> serde_json::Value {
    let answer = bounded(
        subject,
        client.request(subject.to_owned(), body.to_owned().into()),
    )
    .await
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&answer.payload).expect("a JSON answer")
}

/// Waits until every request routed to the valve's `.set` so far was handled: a refused set
/// from admin goes through the same subscription and queue, so its answer comes after them.
async fn settled(admin: &async_nats::Client) {
    let answer = request(admin, "gpio.rpi4.valve.set", "maybe").await;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot set")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_reader_cannot_move_the_valve_through_its_reply_subject() {
    let gw = gateway().await;
    let admin = client(&gw.url, "admin", "a").await;
    let door = client(&gw.url, "door", "d").await;
    assert!(gw.sim.set_level("GPIO17", true, MS), "the door opens");
    assert_eq!(gw.sim.level("GPIO27"), Some(false), "the valve is closed");

    // The door's level, answered to the valve's set subject.
    door.publish_with_reply("gpio.rpi4.door.get", "gpio.rpi4.valve.set", "".into())
        .await
        .unwrap();
    // The same request to its own inbox works (door may not publish to its inbox either:
    // the answer is delivered to its own subscription only).
    let answer = request(&door, "gpio.rpi4.door.get", "").await;
    assert_eq!(answer, serde_json::json!({"line": "door", "value": 1}));
    settled(&admin).await;
    assert_eq!(gw.sim.level("GPIO27"), Some(false), "the valve moved");
    assert_eq!(gw.shared.stats.replies_refused.count(), 1);
    assert_eq!(gw.stats.get("sets"), 0);

    // admin may publish to the valve's set subject, so its answer goes there: the set
    // handler refuses a `.get` answer as a set request.
    let errors = gw.stats.get("errors");
    admin
        .publish_with_reply("gpio.rpi4.door.get", "gpio.rpi4.valve.set", "".into())
        .await
        .unwrap();
    settled(&admin).await;
    assert_eq!(gw.sim.level("GPIO27"), Some(false), "the valve moved");
    // The refused `.get` answer and the two `maybe`s.
    assert_eq!(gw.stats.get("errors"), errors + 2);
    assert_eq!(gw.stats.get("sets"), 0);

    // And the valve does move for a real set request.
    let answer = request(&admin, "gpio.rpi4.valve.set", "1").await;
    assert_eq!(answer, serde_json::json!({"line": "valve", "value": 1}));
    assert_eq!(gw.sim.level("GPIO27"), Some(true));
}
