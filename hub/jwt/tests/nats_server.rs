//! The JWTs minted by leaf-jwt against the real nats-server 2.9 in operator mode
//! (`operator`, `resolver: MEMORY`, `resolver_preload`, `system_account`): a user minted
//! here connects with async-nats and exchanges a message; a user JWT signed by a key the
//! account does not list, an expired user and a revoked user are refused. leaf-jwt's own
//! `verify_user` gives the same verdict on the same JWTs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leaf_jwt::claims::{AccountLimits, UserPermissionLimits};
use leaf_jwt::{
    decode_operator, format_creds, mint_account, mint_operator, mint_user, verify_account,
    verify_user, AccountClaims, JwtError, OperatorClaims, UserClaims,
};
use nkeys::KeyPair;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// The bound of every wait in this file.
const WAIT: Duration = Duration::from_secs(15);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .expect("clock after 1970")
}

/// A nats-server we started, killed (by its own handle) and its directory removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// How the started nats-server resolves accounts.
enum Resolver<'a> {
    /// `resolver: MEMORY` with these `resolver_preload` entries (key, JWT).
    Memory(&'a [(String, String)]),
    /// `resolver: { type: full, dir }`.
    Full(&'a Path),
}

/// Starts nats-server in operator mode on a port it picks (`port: -1`), on loopback.
fn start(tag: &str, operator_jwt: &str, system: &str, resolver: Resolver<'_>) -> Server {
    assert!(
        Path::new(NATS_SERVER).exists(),
        "{NATS_SERVER} is missing: apt-get install -y nats-server"
    );
    let dir = std::env::temp_dir().join(format!("leaf-jwt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("operator.jwt"), operator_jwt).expect("operator file");
    let resolver = match resolver {
        Resolver::Memory(preload) => {
            let preload: String = preload
                .iter()
                .map(|(k, v)| format!("  {k}: \"{v}\"\n"))
                .collect();
            format!("resolver: MEMORY\nresolver_preload: {{\n{preload}}}\n")
        }
        Resolver::Full(dir) => format!("resolver: {{ type: full, dir: \"{}\" }}\n", dir.display()),
    };
    let conf = format!(
        "host: 127.0.0.1\nport: -1\nlog_file: \"{log}\"\noperator: \"{op}\"\n\
         system_account: {system}\n{resolver}",
        log = dir.join("server.log").display(),
        op = dir.join("operator.jwt").display(),
    );
    std::fs::write(dir.join("server.conf"), conf).expect("config");
    let child = Command::new(NATS_SERVER)
        .arg("-c")
        .arg(dir.join("server.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let mut server = Server {
        child,
        dir,
        port: 0,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let log = log_of(&server.dir);
        let port = log
            .lines()
            .find_map(|l| {
                l.split("Listening for client connections on 127.0.0.1:")
                    .nth(1)
            })
            .and_then(|p| p.trim().parse().ok());
        if let (Some(port), true) = (port, log.contains("Server is ready")) {
            server.port = port;
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("nats-server exited ({status}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "nats-server not ready within {WAIT:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects with a creds file's text, bounded by [`WAIT`].
async fn connect(port: u16, creds: &str) -> Result<async_nats::Client, String> {
    let opts = async_nats::ConnectOptions::with_credentials(creds).map_err(|e| e.to_string())?;
    match tokio::time::timeout(WAIT, opts.connect(format!("nats://127.0.0.1:{port}"))).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {WAIT:?}")),
    }
}

struct Fleet {
    operator: OperatorClaims,
    operator_jwt: String,
    op_signer: KeyPair,
    system: KeyPair,
    system_jwt: String,
    account: KeyPair,
    account_signer: KeyPair,
}

impl Fleet {
    fn new() -> Fleet {
        let t = now();
        let op = KeyPair::new_operator();
        let op_signer = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let mut oc = OperatorClaims {
            sub: op.public_key(),
            name: "FLEET".into(),
            ..Default::default()
        };
        oc.nats.signing_keys = vec![op_signer.public_key()];
        oc.nats.system_account = system.public_key();
        let operator_jwt = mint_operator(&oc, &seed(&op), t).expect("operator");
        let operator = decode_operator(&operator_jwt, t).expect("operator verifies");
        let mut sys = AccountClaims {
            sub: system.public_key(),
            name: "SYS".into(),
            ..Default::default()
        };
        sys.nats.limits = AccountLimits::unlimited();
        let system_jwt = mint_account(&sys, &seed(&op), t).expect("system account");
        Fleet {
            operator,
            operator_jwt,
            op_signer,
            system,
            system_jwt,
            account: KeyPair::new_account(),
            account_signer: KeyPair::new_account(),
        }
    }

    /// PLANT_A's claims: unlimited, one signing key, `revocations` as given.
    fn account_claims(&self, revoked: &[(String, i64)]) -> AccountClaims {
        let mut ac = AccountClaims {
            sub: self.account.public_key(),
            name: "PLANT_A".into(),
            ..Default::default()
        };
        ac.nats.limits = AccountLimits::unlimited();
        ac.nats.signing_keys = vec![leaf_jwt::claims::SigningKey::Plain(
            self.account_signer.public_key(),
        )];
        ac.nats.revocations = revoked.iter().cloned().collect();
        ac
    }

    /// The account JWT, signed by the operator's signing key, and its verified claims.
    fn account_jwt(&self, claims: &AccountClaims) -> (String, AccountClaims) {
        let t = now();
        let jwt = mint_account(claims, &seed(&self.op_signer), t).expect("account");
        let verified = verify_account(&jwt, &self.operator, t).expect("account verifies");
        (jwt, verified)
    }

    fn start(&self, tag: &str, account_jwt: &str) -> Server {
        start(
            tag,
            &self.operator_jwt,
            &self.system.public_key(),
            Resolver::Memory(&[
                (self.system.public_key(), self.system_jwt.clone()),
                (self.account.public_key(), account_jwt.to_string()),
            ]),
        )
    }
}

fn seed(k: &KeyPair) -> String {
    k.seed().expect("seed")
}

/// A user of PLANT_A, signed by `signer` (with `issuer_account` when it is not the
/// account's identity key), its creds file's text.
fn user(
    fleet: &Fleet,
    user: &KeyPair,
    signer: &KeyPair,
    edit: impl FnOnce(&mut UserClaims),
) -> (String, String) {
    let mut uc = UserClaims {
        sub: user.public_key(),
        name: "gw1".into(),
        ..Default::default()
    };
    uc.nats.limits = UserPermissionLimits::unlimited();
    if signer.public_key() != fleet.account.public_key() {
        uc.nats.issuer_account = fleet.account.public_key();
    }
    edit(&mut uc);
    let jwt = mint_user(&uc, &seed(signer), now()).expect("user");
    let creds = format_creds(&jwt, &seed(user));
    (jwt, creds)
}

#[tokio::test]
async fn minted_users_connect_to_nats_server_and_wrongly_signed_ones_are_refused() {
    let fleet = Fleet::new();
    let (account_jwt, account) = fleet.account_jwt(&fleet.account_claims(&[]));
    let server = fleet.start("connect", &account_jwt);

    // Signed by the account's identity key, and by its signing key: both connect and talk.
    for signer in [&fleet.account, &fleet.account_signer] {
        let key = KeyPair::new_user();
        let (jwt, creds) = user(&fleet, &key, signer, |_| {});
        verify_user(&jwt, &account, now()).expect("leaf-jwt accepts it");
        let client = connect(server.port, &creds).await.unwrap_or_else(|e| {
            panic!(
                "nats-server refused a minted user: {e}\n{}",
                log_of(&server.dir)
            )
        });
        let mut sub = client.subscribe("plant.a.temp").await.expect("subscribe");
        client.flush().await.expect("flush");
        client
            .publish("plant.a.temp", "21.5".into())
            .await
            .expect("publish");
        let msg = tokio::time::timeout(WAIT, futures_next(&mut sub))
            .await
            .expect("message within the bound")
            .expect("a message");
        assert_eq!(&msg.payload[..], b"21.5");
    }

    // Signed by a key PLANT_A does not list, claiming PLANT_A: refused by both.
    let stranger = KeyPair::new_account();
    let key = KeyPair::new_user();
    let (jwt, creds) = user(&fleet, &key, &stranger, |_| {});
    let e = verify_user(&jwt, &account, now()).unwrap_err();
    assert!(matches!(e, JwtError::UntrustedIssuer { .. }), "{e}");
    let refused = connect(server.port, &creds).await;
    assert!(
        refused.is_err(),
        "nats-server accepted a user signed by a stranger"
    );
    assert!(
        refused
            .unwrap_err()
            .to_lowercase()
            .contains("authorization"),
        "refused for its authorization"
    );

    // Right JWT, wrong seed for the nonce: refused by nats-server (and by verify_nonce).
    let key = KeyPair::new_user();
    let (jwt, _) = user(&fleet, &key, &fleet.account, |_| {});
    let impostor = KeyPair::new_user();
    let forged = format_creds(&jwt, &seed(&impostor));
    assert!(
        leaf_jwt::parse_creds(&forged).is_err(),
        "leaf-jwt refuses the mismatched creds"
    );
    assert!(
        connect(server.port, &forged).await.is_err(),
        "nats-server accepted a forged nonce signature"
    );

    // Expired: refused by both.
    let key = KeyPair::new_user();
    let (jwt, creds) = user(&fleet, &key, &fleet.account, |u| u.exp = now() - 5);
    assert!(matches!(
        verify_user(&jwt, &account, now()),
        Err(JwtError::Expired { .. })
    ));
    assert!(
        connect(server.port, &creds).await.is_err(),
        "nats-server accepted an expired user"
    );
}

#[tokio::test]
async fn revoked_users_are_refused_by_nats_server_and_leaf_jwt() {
    let fleet = Fleet::new();
    let revoked = KeyPair::new_user();
    let kept = KeyPair::new_user();
    let t = now();
    let (account_jwt, account) =
        fleet.account_jwt(&fleet.account_claims(&[(revoked.public_key(), t + 5)]));
    let server = fleet.start("revoked", &account_jwt);
    let (jwt, creds) = user(&fleet, &revoked, &fleet.account, |u| u.iat = t);
    assert!(matches!(
        verify_user(&jwt, &account, now()),
        Err(JwtError::Revoked { .. })
    ));
    assert!(
        connect(server.port, &creds).await.is_err(),
        "nats-server accepted a revoked user"
    );
    let (jwt, creds) = user(&fleet, &kept, &fleet.account, |u| u.iat = t);
    verify_user(&jwt, &account, now()).expect("not revoked");
    connect(server.port, &creds)
        .await
        .expect("nats-server accepts the other user");
}

#[tokio::test]
async fn nats_server_full_resolver_reads_the_directory_store() {
    let fleet = Fleet::new();
    let (account_jwt, account) = fleet.account_jwt(&fleet.account_claims(&[]));
    let jwts = std::env::temp_dir().join(format!("leaf-jwt-full-jwts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&jwts);
    let store = leaf_jwt::DirStore::open(&jwts, fleet.operator.clone()).expect("store");
    store
        .save(&fleet.system_jwt, now())
        .expect("system account stored");
    store.save(&account_jwt, now()).expect("account stored");
    let server = start(
        "full",
        &fleet.operator_jwt,
        &fleet.system.public_key(),
        Resolver::Full(&jwts),
    );
    let key = KeyPair::new_user();
    let (jwt, creds) = user(&fleet, &key, &fleet.account, |_| {});
    verify_user(&jwt, &account, now()).expect("leaf-jwt accepts it");
    let result = connect(server.port, &creds).await;
    let log = log_of(&server.dir);
    drop(server);
    let _ = std::fs::remove_dir_all(&jwts);
    result.unwrap_or_else(|e| {
        panic!("nats-server's full resolver did not find the stored account: {e}\n{log}")
    });
}

async fn futures_next(sub: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    use futures::StreamExt;
    sub.next().await
}
