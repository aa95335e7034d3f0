//! Who a leaf is and what it may do: the accepting side's authentication of a leaf's
//! `CONNECT`, and the permissions carried by the handshake, on both sides.
//!
//! **Hub side.** A leaf logs in against `leafnodes.authorization` (a user and password, a
//! token, a user nkey whose signature of the INFO's nonce is checked) or, when the listener
//! has none, against the client users (`authorization`, nkey users included: a leaf with a
//! `.creds` file is taken by its JWT's subject), as on nats-server; a leaf without
//! credentials is refused whenever either asks for them (nats-server 2.9 accepts it). The
//! [`Login`] says who it is (its *identity*: the user, the nkey, `token` or `anonymous`: a
//! leaf server name can only be taken over by a connection with the same identity, see
//! [`super::LeafState::replace_stale`]) and what it may do: its user's `permissions`, where
//! `publish` is what the hub takes from the leaf and `subscribe` what the hub sends it
//! ([`LinkDeny::from_permissions`], joined with the leaf's own `deny_pub`). The hub tells the
//! leaf its permissions in the INFO that answers CONNECT (`import`: what it may receive,
//! `export`: what it may send), as nats-server does, so a leaf keeps to them by itself.
//!
//! **Leaf side.** The permissions in the hub's INFO join the remote's deny lists
//! ([`hub_rules`]): interest the hub would refuse is not announced, messages it would refuse
//! are not sent (a nats-server hub closes a link announcing a subscription its permissions
//! forbid).

use std::sync::Arc;

use super::info::{LeafConnect, PeerInfo, SubjectLists};
use super::nkey::{NkeyProof, NkeyUsers};
use super::{LeafOptions, LinkDeny};
use crate::auth::{Credentials, Permissions, Rules};
use crate::server::deny::rule_lists;

/// An accepted leaf that passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    /// Who it authenticated as: `user "name"`, `nkey U...`, `token` or `anonymous`.
    pub identity: String,
    /// What it may publish and receive (`None`: anything).
    pub permissions: Option<Arc<Permissions>>,
    /// The account its traffic lives in on this server (`None`: the global one).
    pub account: Option<Arc<str>>,
}

/// Checks a leaf's credentials against the listener's settings: a user nkey (with the
/// signature of `nonce`) when nkeys are configured and the leaf presents one, else a user and
/// password or a token. The error is a sentence for the log.
pub(crate) fn authenticate(
    opts: &LeafOptions,
    connect: &LeafConnect,
    nonce: &str,
) -> Result<Login, String> {
    let proof = NkeyProof {
        nkey: connect.nkey.as_deref(),
        jwt: connect.jwt.as_deref(),
        sig: connect.sig.as_deref(),
    };
    if !opts.nkeys.is_empty() {
        if NkeyUsers::presented(&proof) {
            let key = opts
                .nkeys
                .verify(&proof, nonce.as_bytes())
                .map_err(|e| e.to_string())?;
            return Ok(Login {
                permissions: opts.nkey_permissions.get(&key).cloned(),
                account: opts.nkey_accounts.get(&key).cloned(),
                identity: format!("nkey {key}"),
            });
        }
        if !opts.auth.required() {
            return Err("no user nkey presented (the listener accepts nkeys only)".into());
        }
    }
    // A lone URL user name is a token for a token-protected listener.
    let token = connect
        .auth_token
        .as_deref()
        .or(connect.user.as_deref().filter(|_| connect.pass.is_none()));
    // A leaf with a `.creds` file sends its user JWT and no `nkey`. Outside operator mode the
    // JWT's subject is its key, as nats-server takes it: a client user listed by that nkey,
    // proven by the signature of the nonce (the JWT's own signature means nothing here).
    let jwt_key = match (&opts.auth, connect.nkey.as_deref(), connect.jwt.as_deref()) {
        (crate::auth::Authenticator::Delegated(_), ..) | (_, Some(_), _) | (_, _, None) => None,
        (_, None, Some(jwt)) => super::nkey::jwt_subject(jwt),
    };
    let creds_key = connect.nkey.as_deref().or(jwt_key.as_deref());
    let creds = Credentials {
        user: connect.user.as_deref(),
        pass: connect.pass.as_deref(),
        token,
        nkey: creds_key,
        sig: connect.sig.as_deref(),
        nonce: nonce.as_bytes(),
        jwt: connect.jwt.as_deref(),
        leaf: true,
    };
    let grant = opts.auth.authenticate(creds).map_err(|e| {
        if opts.clients_auth {
            format!("{e} (no leafnodes.authorization: leaves log in as client users)")
        } else {
            e.to_string()
        }
    })?;
    let identity = match &opts.auth {
        crate::auth::Authenticator::Open => "anonymous".to_owned(),
        crate::auth::Authenticator::Token(_) => "token".to_owned(),
        crate::auth::Authenticator::Users(_) => match creds_key {
            Some(key) => format!("nkey {key}"),
            None => format!("user {:?}", connect.user.as_deref().unwrap_or_default()),
        },
        crate::auth::Authenticator::Delegated(_) => {
            format!("user {}", grant.identity.as_deref().unwrap_or("?"))
        }
    };
    Ok(Login {
        identity,
        permissions: grant.permissions,
        account: grant.account,
    })
}

/// What the hub keeps off the link of `login`'s leaf: its permissions, and the subjects the
/// leaf asked not to receive (`deny_pub`, its `deny_imports`).
pub(crate) fn link_rules(login: &Login, deny_pub: &[String]) -> LinkDeny {
    let own = LinkDeny {
        exports: deny_pub.to_vec(),
        ..LinkDeny::default()
    };
    match &login.permissions {
        Some(perms) => LinkDeny::from_permissions(perms).merged(&own),
        None => own,
    }
}

/// The INFO's `import` (what the leaf may receive: its `subscribe` rules) and `export` (what
/// it may send: `publish`), as nats-server announces them.
pub(crate) fn info_permissions(
    perms: Option<&Permissions>,
) -> (Option<SubjectLists>, Option<SubjectLists>) {
    let lists = |rules: &Rules| {
        let (allow, deny) = rule_lists(rules);
        let lists = SubjectLists {
            allow: allow.unwrap_or_default(),
            deny,
        };
        (!lists.is_empty()).then_some(lists)
    };
    match perms {
        Some(p) => (lists(&p.subscribe), lists(&p.publish)),
        None => (None, None),
    }
}

/// Leaf side: what stays off the link to a hub: the remote's own deny lists joined with the
/// permissions the hub announced in `info` (`export`: what we may send, `import`: what we
/// may receive).
pub(crate) fn hub_rules(own: &LinkDeny, info: &PeerInfo) -> LinkDeny {
    let allow = |l: &SubjectLists| (!l.allow.is_empty()).then(|| l.allow.clone());
    let announced = LinkDeny {
        exports: info
            .export
            .as_ref()
            .map(|e| e.deny.clone())
            .unwrap_or_default(),
        imports: info
            .import
            .as_ref()
            .map(|i| i.deny.clone())
            .unwrap_or_default(),
        export_allow: info.export.as_ref().and_then(allow),
        import_allow: info.import.as_ref().and_then(allow),
    };
    own.merged(&announced)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::auth::{Authenticator, User};

    fn perms() -> Arc<Permissions> {
        Arc::new(Permissions {
            publish: Rules::new(Some(&["up.>".into()]), &[]),
            subscribe: Rules::new(Some(&["down.>".into()]), &["down.secret".into()]),
        })
    }

    fn users() -> LeafOptions {
        let mut users = HashMap::new();
        for (name, permissions) in [("a", Some(perms())), ("b", None)] {
            let user = User {
                password: "pw".into(),
                nkey: false,
                permissions,
                account: None,
            };
            users.insert(name.to_owned(), user);
        }
        LeafOptions {
            auth: Authenticator::Users(users),
            ..LeafOptions::default()
        }
    }

    fn connect(user: Option<&str>, pass: Option<&str>) -> LeafConnect {
        LeafConnect {
            user: user.map(str::to_owned),
            pass: pass.map(str::to_owned),
            ..LeafConnect::default()
        }
    }

    #[test]
    fn identities_and_permissions() {
        let opts = users();
        let a = authenticate(&opts, &connect(Some("a"), Some("pw")), "n").unwrap();
        assert_eq!(a.identity, "user \"a\"");
        assert_eq!(a.permissions, Some(perms()));
        let b = authenticate(&opts, &connect(Some("b"), Some("pw")), "n").unwrap();
        assert_eq!((b.identity.as_str(), b.permissions), ("user \"b\"", None));
        assert!(authenticate(&opts, &connect(Some("a"), Some("no")), "n").is_err());
        assert!(authenticate(&opts, &connect(None, None), "n").is_err());
        // The client users stand in for a listener without authorization of its own.
        let clients = LeafOptions {
            clients_auth: true,
            ..users()
        };
        let e = authenticate(&clients, &connect(None, None), "n").unwrap_err();
        assert!(e.contains("leaves log in as client users"), "{e}");
        let token = LeafOptions {
            auth: Authenticator::Token("t".into()),
            ..LeafOptions::default()
        };
        let t = authenticate(&token, &connect(Some("t"), None), "n").unwrap();
        assert_eq!(t.identity, "token");
        let open = authenticate(&LeafOptions::default(), &connect(None, None), "n").unwrap();
        assert_eq!(open.identity, "anonymous");
    }

    /// A leaf with a `.creds` file on a listener without authorization of its own logs in as
    /// the client user its JWT's subject names, proven by its signature of the nonce.
    #[test]
    fn creds_leaf_logs_in_as_an_nkey_client_user() {
        use base64::Engine as _;
        let user = nkeys::KeyPair::new_user();
        let key = user.public_key();
        let mut users = HashMap::new();
        let nkey_user = User {
            password: String::new(),
            nkey: true,
            permissions: None,
            account: None,
        };
        users.insert(key.clone(), nkey_user);
        let opts = LeafOptions {
            auth: Authenticator::Users(users),
            clients_auth: true,
            ..LeafOptions::default()
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwt_of = |sub: &str| {
            let claims = b64.encode(format!(r#"{{"sub":"{sub}","nats":{{"type":"user"}}}}"#));
            format!(
                "{}.{claims}.c2ln",
                b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#)
            )
        };
        let signed = |kp: &nkeys::KeyPair, nonce: &str, sub: &str| LeafConnect {
            jwt: Some(jwt_of(sub)),
            sig: Some(b64.encode(kp.sign(nonce.as_bytes()).unwrap())),
            ..LeafConnect::default()
        };
        let login = authenticate(&opts, &signed(&user, "nonce1", &key), "nonce1").unwrap();
        assert_eq!(login.identity, format!("nkey {key}"));
        // Another nonce, another key's signature, a subject not listed: refused.
        assert!(authenticate(&opts, &signed(&user, "nonce1", &key), "nonce2").is_err());
        let other = nkeys::KeyPair::new_user();
        assert!(authenticate(&opts, &signed(&other, "n", &key), "n").is_err());
        assert!(authenticate(&opts, &signed(&other, "n", &other.public_key()), "n").is_err());
    }

    #[test]
    fn rules_both_ways() {
        let login = Login {
            identity: "user \"a\"".into(),
            permissions: Some(perms()),
            account: None,
        };
        let hub = link_rules(&login, &["down.b".into()]);
        assert!(hub.import_denied(b"other") && !hub.import_denied(b"up.x"));
        assert!(hub.export_denied(b"down.secret") && hub.export_denied(b"down.b"));
        assert!(!hub.export_denied(b"down.a"));
        let (import, export) = info_permissions(login.permissions.as_deref());
        let import = import.unwrap();
        assert_eq!(
            (import.allow, import.deny),
            (vec!["down.>".into()], vec!["down.secret".into()])
        );
        assert_eq!(export.unwrap().allow, ["up.>"]);
        assert_eq!(info_permissions(None), (None, None));

        // The leaf's view of the same INFO: the mirror image.
        let info: PeerInfo = serde_json::from_str(
            r#"{"import":{"allow":["down.\u003e"],"deny":["down.secret"]},"export":{"allow":["up.\u003e"]}}"#,
        )
        .unwrap();
        let own = LinkDeny {
            exports: vec!["up.private".into()],
            ..LinkDeny::default()
        };
        let leaf = hub_rules(&own, &info);
        assert!(leaf.export_denied(b"other") && leaf.export_denied(b"up.private"));
        assert!(!leaf.export_denied(b"up.x"));
        assert!(leaf.import_denied(b"down.secret") && !leaf.import_denied(b"down.x"));
        assert!(leaf.import_interest_denied(b"other.>"));
        assert_eq!(hub_rules(&own, &PeerInfo::default()), own);
    }
}
