//! What an account JWT changes in the server, as nats-server 2.9 applies one when it loads
//! or updates an account (`server/accounts.go`, `UpdateAccountClaims`; `server/jetstream.go`,
//! `configJetStream`):
//!
//! * limits: `conn`, `leaf`, `subs`, `payload` become the account's own limits (see
//!   `leaf_core::server::account::limits`); -1 is unlimited;
//! * JetStream: enabled when `mem_storage` or `disk_storage` is non-zero (with tiered limits:
//!   in any tier; the `R1` tier's limits then apply, this being one server), as jwt's
//!   `IsJSEnabled`. The account gets its engine (store under
//!   `<store_dir>/accounts/<account key>`) with `streams`, `consumer`, `mem_storage` and
//!   `disk_storage` as its limits (-1 or 0: unlimited, within the server's). An update
//!   changes the stream and consumer counts at once; storage limits are those the engine
//!   started with (until a restart). An update without JetStream switches the engine off,
//!   its data kept on disk (nats-server's `DisableJetStream` stops the streams and keeps
//!   their files); enabled again, it resumes. An account without JetStream answers 10039.
//!   The system account never gets JetStream, as in nats-server;
//! * exports and imports: every import of every account is set up again on each load or
//!   update (an exporter's change can end an importer's import), onto the core's imports
//!   ([`leaf_core::server::account::imports`]). An import needs a public export of its kind
//!   in the exporting account's JWT covering its subject; exports that require an
//!   activation token are not supported: such an import is refused with a log line naming
//!   it. A stream import arrives on `local_subject`, or `to` taken as a prefix (jwt's
//!   deprecated form), else on its own subject; a service import is published on
//!   `local_subject` (or the import's subject) and reaches the exporter on `subject` (or
//!   `to`, the deprecated form).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use leaf_core::jetstream::accounts::{AccountJetStreams, AccountLimits as JsLimits};
use leaf_core::server::account::imports::{self, ImportRule, Wiring};
use leaf_core::server::account::limits::Limits;
use leaf_core::server::account::settings::{Kind, ResponseType, DEFAULT_RESPONSE_THRESHOLD};
use leaf_core::server::Shared;
use leaf_jwt::claims::{self, AccountClaims, ExportKind, JetStreamLimits};
use tracing::{info, warn};

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("jetstream", &self.jetstreams.is_some())
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

/// Applies account claims to a running server (see the module documentation).
pub struct Applier {
    server: Weak<Shared>,
    jetstreams: Option<Arc<AccountJetStreams>>,
    /// The system account's key: never given JetStream.
    system: Option<String>,
    /// The imports in force, by importing account.
    imports: Mutex<HashMap<String, Vec<Wiring>>>,
}

impl Applier {
    /// An applier for `server`, giving accounts their JetStream through `jetstreams` (`None`:
    /// the server has no JetStream).
    pub fn new(
        server: &Arc<Shared>,
        jetstreams: Option<Arc<AccountJetStreams>>,
        system: Option<String>,
    ) -> Applier {
        Applier {
            server: Arc::downgrade(server),
            jetstreams,
            system,
            imports: Mutex::new(HashMap::new()),
        }
    }

    /// Applies one account's limits and JetStream (its imports: [`Applier::wire_imports`]).
    pub fn apply(&self, claims: &AccountClaims) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let key = claims.sub.as_str();
        let account = server.accounts.add(key);
        account.limits.set(limits_of(&claims.nats.limits));
        if self.system.as_deref() == Some(key) {
            // The system account has no JetStream API at all, as in nats-server.
            return;
        }
        match (&self.jetstreams, jetstream_of(&claims.nats.limits)) {
            (Some(registry), Some(limits)) => {
                if let Err(e) = registry.enable(&account, limits) {
                    warn!(account = key, error = %e, "the account's JetStream cannot start");
                }
            }
            (Some(registry), None) => {
                if let Err(e) = registry.disable(&account) {
                    warn!(account = key, error = %e, "the account's JetStream cannot be switched off");
                }
            }
            (None, Some(_)) => {
                warn!(
                    account = key,
                    "the account JWT enables JetStream, but this server runs without it \
                     (set `jetstream`)"
                );
            }
            (None, None) => {}
        }
    }

    /// Sets up the imports of every account in `all` again (the old ones are taken down
    /// first). An import that cannot be set up is skipped with a log line naming it.
    pub fn wire_imports(&self, all: &HashMap<String, AccountClaims>) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let mut wired = self.imports.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, old) in wired.drain() {
            for w in old {
                w.remove();
            }
        }
        for (key, claims) in all {
            let mut sets = Vec::new();
            for rule in import_rules(key, claims, all) {
                // Both accounts exist on the server from here on.
                server.accounts.add(&rule.exporter);
                match imports::wire_removable(&server.accounts, std::slice::from_ref(&rule)) {
                    Ok(w) => sets.push(w),
                    Err(e) => warn!(error = %e, "account JWT import skipped"),
                }
            }
            if !sets.is_empty() {
                info!(account = %key, imports = sets.len(), "account JWT imports in force");
                wired.insert(key.clone(), sets);
            }
        }
    }
}

/// The account's own limits from its JWT.
pub fn limits_of(l: &claims::AccountLimits) -> Limits {
    Limits {
        connections: l.conn,
        leafnodes: l.leaf,
        subscriptions: l.subs,
        payload: l.payload,
    }
}

/// The account's JetStream limits, if its JWT enables JetStream (jwt's `IsJSEnabled`).
pub fn jetstream_of(l: &claims::AccountLimits) -> Option<JsLimits> {
    let enabled = |j: &JetStreamLimits| j.mem_storage != 0 || j.disk_storage != 0;
    let tier = if l.tiered_limits.is_empty() {
        enabled(&l.jetstream).then_some(&l.jetstream)?
    } else {
        if !l.tiered_limits.values().any(enabled) {
            return None;
        }
        l.tiered_limits
            .get("R1")
            .filter(|t| enabled(t))
            .or_else(|| l.tiered_limits.values().find(|t| enabled(t)))?
    };
    // Positive: a limit; -1 (or 0): none of the account's own.
    let limit = |n: i64| u64::try_from(n).ok().filter(|&n| n > 0);
    Some(JsLimits {
        max_memory_bytes: limit(tier.mem_storage),
        max_file_bytes: limit(tier.disk_storage),
        max_streams: limit(tier.streams),
        max_consumers: limit(tier.consumer),
    })
}

/// The imports of account `key` (its `claims`) as the core's rules, checked against the
/// exporters' JWTs in `all`; those that cannot be honoured are left out with a log line.
pub fn import_rules(
    key: &str,
    claims: &AccountClaims,
    all: &HashMap<String, AccountClaims>,
) -> Vec<ImportRule> {
    let mut rules = Vec::new();
    for import in &claims.nats.imports {
        match import_rule(key, import, all) {
            Ok(rule) => rules.push(rule),
            Err(why) => warn!(
                account = key,
                import = %import.subject,
                from = %import.account,
                "account JWT import refused: {why}"
            ),
        }
    }
    rules
}

/// One import as a core rule, or why it is refused.
fn import_rule(
    key: &str,
    import: &claims::Import,
    all: &HashMap<String, AccountClaims>,
) -> Result<ImportRule, String> {
    if import.subject.is_empty() {
        return Err("no subject".into());
    }
    if import.account == key {
        return Err("an account cannot import from itself".into());
    }
    let exporter = all
        .get(&import.account)
        .ok_or("the exporting account is unknown to the resolver")?;
    let export = exporter
        .nats
        .exports
        .iter()
        .find(|e| {
            e.kind == import.kind
                && leaf_proto::subject::is_subset(import.subject.as_bytes(), e.subject.as_bytes())
        })
        .ok_or("no export of this kind covers the subject")?;
    if export.token_req {
        return Err(
            "the export requires an activation token (not supported: only public exports)".into(),
        );
    }
    let (kind, subject, local) = match import.kind {
        ExportKind::Stream => {
            let local = if !import.local_subject.is_empty() {
                import.local_subject.clone()
            } else if !import.to.is_empty() {
                format!("{}.{}", import.to.trim_end_matches('.'), import.subject)
            } else {
                import.subject.clone()
            };
            (Kind::Stream, import.subject.clone(), local)
        }
        ExportKind::Service => {
            if !import.local_subject.is_empty() {
                (
                    Kind::Service,
                    import.subject.clone(),
                    import.local_subject.clone(),
                )
            } else if !import.to.is_empty() {
                (Kind::Service, import.to.clone(), import.subject.clone())
            } else {
                (
                    Kind::Service,
                    import.subject.clone(),
                    import.subject.clone(),
                )
            }
        }
    };
    let threshold = u64::try_from(export.response_threshold)
        .ok()
        .filter(|&n| n > 0)
        .map_or(DEFAULT_RESPONSE_THRESHOLD, Duration::from_nanos);
    Ok(ImportRule {
        kind,
        exporter: import.account.clone(),
        importer: key.to_string(),
        subject,
        local,
        response_type: match export.response_type {
            None | Some(claims::ResponseType::Singleton) => ResponseType::Singleton,
            Some(claims::ResponseType::Stream) => ResponseType::Stream,
            Some(claims::ResponseType::Chunked) => ResponseType::Chunked,
        },
        response_threshold: threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaf_jwt::claims::{Export, Import};

    fn account(key: &str, exports: Vec<Export>, imports: Vec<Import>) -> AccountClaims {
        let mut c = AccountClaims {
            sub: key.into(),
            ..AccountClaims::default()
        };
        c.nats.exports = exports;
        c.nats.imports = imports;
        c
    }

    #[test]
    fn jetstream_is_enabled_by_storage_as_jwt_decides() {
        let mut l = claims::AccountLimits::unlimited();
        assert_eq!(jetstream_of(&l), None, "both storages 0: disabled");
        l.jetstream.streams = 5;
        assert_eq!(jetstream_of(&l), None, "counts alone do not enable it");
        l.jetstream.disk_storage = -1;
        let js = jetstream_of(&l).expect("disk -1 enables it");
        assert_eq!(js.max_streams, Some(5));
        assert_eq!(js.max_file_bytes, None);
        assert_eq!(js.max_consumers, None);
        l.jetstream.mem_storage = 1 << 20;
        assert_eq!(jetstream_of(&l).unwrap().max_memory_bytes, Some(1 << 20));
        // Tiered limits replace the untiered ones.
        let mut t = claims::AccountLimits::unlimited();
        t.jetstream.disk_storage = -1;
        t.tiered_limits
            .insert("R3".into(), JetStreamLimits::default());
        assert_eq!(jetstream_of(&t), None, "no tier enables it");
        t.tiered_limits.insert(
            "R1".into(),
            JetStreamLimits {
                disk_storage: 1000,
                streams: 2,
                ..JetStreamLimits::default()
            },
        );
        let js = jetstream_of(&t).unwrap();
        assert_eq!((js.max_file_bytes, js.max_streams), (Some(1000), Some(2)));
    }

    #[test]
    fn limits_come_from_the_jwt() {
        let mut l = claims::AccountLimits::unlimited();
        l.conn = 3;
        l.payload = 100;
        let limits = limits_of(&l);
        assert_eq!(limits.connections, 3);
        assert_eq!(limits.leafnodes, -1);
        assert_eq!(limits.payload, 100);
    }

    #[test]
    fn imports_map_onto_public_exports() {
        let service = Export {
            subject: "svc.>".into(),
            kind: ExportKind::Service,
            response_type: Some(claims::ResponseType::Stream),
            response_threshold: 5_000_000_000,
            ..Export::default()
        };
        let stream = Export {
            subject: "events.>".into(),
            kind: ExportKind::Stream,
            ..Export::default()
        };
        let private = Export {
            subject: "private.>".into(),
            kind: ExportKind::Stream,
            token_req: true,
            ..Export::default()
        };
        let imports = vec![
            Import {
                subject: "svc.time".into(),
                account: "AX".into(),
                local_subject: "time".into(),
                kind: ExportKind::Service,
                ..Import::default()
            },
            Import {
                subject: "events.a".into(),
                account: "AX".into(),
                to: "from_x".into(),
                kind: ExportKind::Stream,
                ..Import::default()
            },
            Import {
                subject: "private.a".into(),
                account: "AX".into(),
                kind: ExportKind::Stream,
                ..Import::default()
            },
            Import {
                subject: "svc.time".into(),
                account: "AX".into(),
                kind: ExportKind::Stream,
                ..Import::default()
            },
            Import {
                subject: "x".into(),
                account: "AUNKNOWN".into(),
                kind: ExportKind::Stream,
                ..Import::default()
            },
        ];
        let mut all = HashMap::new();
        all.insert(
            "AX".to_string(),
            account("AX", vec![service, stream, private], vec![]),
        );
        all.insert("AY".to_string(), account("AY", vec![], imports));
        let rules = import_rules("AY", &all["AY"], &all);
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0].kind, Kind::Service);
        assert_eq!(
            (rules[0].subject.as_str(), rules[0].local.as_str()),
            ("svc.time", "time")
        );
        assert_eq!(rules[0].response_type, ResponseType::Stream);
        assert_eq!(rules[0].response_threshold, Duration::from_secs(5));
        assert_eq!(rules[1].kind, Kind::Stream);
        assert_eq!(rules[1].local, "from_x.events.a");
        assert_eq!(
            (rules[1].exporter.as_str(), rules[1].importer.as_str()),
            ("AX", "AY")
        );
    }
}
