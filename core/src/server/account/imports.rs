//! Exports and imports: the only ways traffic crosses accounts, as nats-server has them.
//!
//! * **Stream import** (account B imports stream `subject` of account A, under `local`): an
//!   internal subscription in A's sublist on `subject` hands every message to B, where it is
//!   published on `local` (the subject transformed: `prefix.<subject>`, or `to`) with its
//!   reply subject and headers unchanged. B's subscribers, and links bound to B, receive it
//!   as any message of B. The subscription lives as long as the server: A's links hear of
//!   the interest whether or not B has subscribers at the moment (nats-server adds it only
//!   while B has some: the difference is traffic from A's leaves that nobody in B wants, never
//!   a delivery).
//! * **Service import** (B imports service `subject` of A, published in B on `local`): an
//!   internal subscription in B's sublist on `local` hands each request to A, on `subject`,
//!   with its reply replaced by `_R_.<prefix>.<token>`. A holds one internal subscription on
//!   `_R_.<prefix>.>` ([`Responses`]): a response published there by A's responder (a client
//!   or a leaf of A) is answered to the requester in B on its original reply subject, within
//!   the requester's own rights (see [`super::super::reply`]: the requester cannot make the
//!   service publish where it could not). A singleton service's route is gone after its
//!   first response; a stream or chunked one after `response_threshold`.
//!
//! Imports that change at run time (an account JWT's) are set up with [`wire_removable`],
//! whose [`Wiring`] takes them down again.
//!
//! Bounds: every response route lives at most `response_threshold` and an exporter holds at
//! most [`MAX_RESPONSE_ROUTES`] (the oldest go first), so requesters cannot fill memory. A
//! message crosses at most [`MAX_IMPORT_HOPS`] imports in a row: the configuration refuses
//! import cycles ([`crate::config`]'s checks), and this bound stops any the checks missed.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use leaf_proto::transform::Transform;
use tracing::warn;

use super::settings::{Kind, ResponseType};
use super::{Account, Accounts};
use crate::server::{InternalSink, Msg, Publisher, ReplyTo, SubRef};

/// Most response routes one exporting account holds; past it the oldest is dropped (its
/// requester times out).
pub const MAX_RESPONSE_ROUTES: usize = 16 * 1024;

/// Most imports one message crosses in a row.
pub const MAX_IMPORT_HOPS: u32 = 4;

thread_local! {
    /// How many imports the message being delivered on this thread has crossed.
    static HOPS: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` one import hop deeper; `None` (and `f` not run) past [`MAX_IMPORT_HOPS`].
fn one_hop_deeper<T>(f: impl FnOnce() -> T) -> Option<T> {
    let depth = HOPS.with(Cell::get);
    if depth >= MAX_IMPORT_HOPS {
        return None;
    }
    HOPS.with(|h| h.set(depth + 1));
    let out = f();
    HOPS.with(|h| h.set(depth));
    Some(out)
}

/// One import, resolved from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRule {
    /// Stream or service.
    pub kind: Kind,
    /// The exporting account.
    pub exporter: String,
    /// The importing account.
    pub importer: String,
    /// The subject in the exporter.
    pub subject: String,
    /// The subject in the importer.
    pub local: String,
    /// Services: how many responses a request may get.
    pub response_type: ResponseType,
    /// Services: how long responses are routed back.
    pub response_threshold: Duration,
}

/// Why an import could not be set up (the configuration's checks refuse these first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("import of {kind} {subject:?} from account {exporter:?} into {importer:?}: {why}")]
pub struct ImportError {
    kind: Kind,
    subject: String,
    exporter: String,
    importer: String,
    why: String,
}

/// Sets up every import of `rules` between `accounts` (see the module documentation). The
/// returned subscriptions live as long as the server.
pub fn wire(accounts: &Accounts, rules: &[ImportRule]) -> Result<Vec<SubRef>, ImportError> {
    wire_removable(accounts, rules).map(|w| w.0.into_iter().map(|(_, sub)| sub).collect())
}

/// The subscriptions of a set of imports, each with the account it lives in, so that they
/// can be taken down again ([`Wiring::remove`]: imports that change at run time, an account
/// JWT's).
#[derive(Default)]
pub struct Wiring(Vec<(Weak<Account>, SubRef)>);

impl Wiring {
    /// Takes every import of the set down: nothing crosses through them from now on
    /// (response routes already handed out lead nowhere).
    pub fn remove(self) {
        for (account, sub) in self.0 {
            if let Some(account) = account.upgrade() {
                account.unsubscribe_internal(&sub);
            }
        }
    }

    /// How many subscriptions the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// [`wire`], keeping where each subscription lives (see [`Wiring`]). On an error the imports
/// set up before it are taken down again.
pub fn wire_removable(accounts: &Accounts, rules: &[ImportRule]) -> Result<Wiring, ImportError> {
    let mut wiring = Wiring::default();
    match wire_into(accounts, rules, &mut wiring) {
        Ok(()) => Ok(wiring),
        Err(e) => {
            wiring.remove();
            Err(e)
        }
    }
}

fn wire_into(
    accounts: &Accounts,
    rules: &[ImportRule],
    wiring: &mut Wiring,
) -> Result<(), ImportError> {
    let mut subs = |account: &Arc<Account>, sub: SubRef| {
        wiring.0.push((Arc::downgrade(account), sub));
    };
    let mut responses: HashMap<String, Arc<Responses>> = HashMap::new();
    for rule in rules {
        let fail = |why: String| ImportError {
            kind: rule.kind,
            subject: rule.subject.clone(),
            exporter: rule.exporter.clone(),
            importer: rule.importer.clone(),
            why,
        };
        let exporter = accounts
            .get(&rule.exporter)
            .ok_or_else(|| fail("no such exporting account".into()))?;
        let importer = accounts
            .get(&rule.importer)
            .ok_or_else(|| fail("no such importing account".into()))?;
        match rule.kind {
            Kind::Stream => {
                let transform =
                    Transform::new(&rule.subject, &rule.local).map_err(|e| fail(e.to_string()))?;
                let sink = Arc::new(StreamImport {
                    importer: Arc::downgrade(&importer),
                    transform,
                });
                let sub = exporter
                    .subscribe_internal(rule.subject.as_bytes(), None, sink)
                    .map_err(|e| fail(e.to_string()))?;
                subs(&exporter, sub);
            }
            Kind::Service => {
                let transform =
                    Transform::new(&rule.local, &rule.subject).map_err(|e| fail(e.to_string()))?;
                let routes = match responses.get(&rule.exporter) {
                    Some(r) => r.clone(),
                    None => {
                        let r = Responses::new();
                        let sub = exporter
                            .subscribe_internal(
                                format!("{}>", r.prefix).as_bytes(),
                                None,
                                r.clone(),
                            )
                            .map_err(|e| fail(e.to_string()))?;
                        subs(&exporter, sub);
                        responses.insert(rule.exporter.clone(), r.clone());
                        r
                    }
                };
                let sink = Arc::new(ServiceImport {
                    exporter: Arc::downgrade(&exporter),
                    importer: Arc::downgrade(&importer),
                    transform,
                    routes,
                    singleton: rule.response_type == ResponseType::Singleton,
                    threshold: rule.response_threshold,
                });
                let sub = importer
                    .subscribe_internal(rule.local.as_bytes(), None, sink)
                    .map_err(|e| fail(e.to_string()))?;
                subs(&importer, sub);
            }
        }
    }
    Ok(())
}

/// Delivers an exporter's messages into the importing account.
struct StreamImport {
    importer: Weak<Account>,
    transform: Transform,
}

impl InternalSink for StreamImport {
    fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
        let Some(importer) = self.importer.upgrade() else {
            return;
        };
        let Some(local) = self.transform.apply(&String::from_utf8_lossy(msg.subject)) else {
            return;
        };
        let crossed = one_hop_deeper(|| {
            importer.publish(&Msg {
                subject: local.as_bytes(),
                reply: msg.reply,
                headers: msg.headers,
                payload: msg.payload,
            })
        });
        if crossed.is_none() {
            warn!(subject = %local, "message dropped: it crossed too many imports (an import loop?)");
        }
    }
}

/// Hands an importer's requests to the exporting account, their replies routed back.
struct ServiceImport {
    exporter: Weak<Account>,
    importer: Weak<Account>,
    transform: Transform,
    routes: Arc<Responses>,
    singleton: bool,
    threshold: Duration,
}

impl InternalSink for ServiceImport {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let (Some(exporter), Some(importer)) = (self.exporter.upgrade(), self.importer.upgrade())
        else {
            return;
        };
        let Some(subject) = self.transform.apply(&String::from_utf8_lossy(msg.subject)) else {
            return;
        };
        let reply = msg.reply.map(|r| {
            self.routes.add(Route {
                importer: Arc::downgrade(&importer),
                to: from.reply_to(r),
                singleton: self.singleton,
                expires: Instant::now() + self.threshold,
            })
        });
        let crossed = one_hop_deeper(|| {
            exporter.publish(&Msg {
                subject: subject.as_bytes(),
                reply: reply.as_deref().map(str::as_bytes),
                headers: msg.headers,
                payload: msg.payload,
            })
        });
        if crossed.is_none() {
            warn!(%subject, "request dropped: it crossed too many imports (an import loop?)");
        }
    }
}

/// Where a response goes back to.
struct Route {
    importer: Weak<Account>,
    to: ReplyTo,
    singleton: bool,
    expires: Instant,
}

/// The response routes of one exporting account: `_R_.<prefix>.<token>` → the requester.
pub struct Responses {
    /// `_R_.<prefix>.`
    prefix: String,
    next: AtomicU64,
    routes: Mutex<RouteTable>,
}

#[derive(Default)]
struct RouteTable {
    by_subject: HashMap<String, Route>,
    /// Subjects in the order they were added, with their expiry (some may be answered and
    /// gone from `by_subject` already).
    order: VecDeque<(Instant, String)>,
}

impl Responses {
    fn new() -> Arc<Responses> {
        Arc::new(Responses {
            prefix: format!("_R_.{}.", random_token(6)),
            next: AtomicU64::new(fastrand::u64(..)),
            routes: Mutex::new(RouteTable::default()),
        })
    }

    /// Adds a route; returns its reply subject.
    fn add(&self, route: Route) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let subject = format!("{}{}", self.prefix, base62(n));
        let now = Instant::now();
        let mut table = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // Expired routes first, then the oldest while full. `order` also keeps routes already
        // answered until they come to its front: bounding it bounds both.
        while let Some((expires, oldest)) = table.order.front().cloned() {
            if expires > now && table.order.len() < MAX_RESPONSE_ROUTES {
                break;
            }
            table.order.pop_front();
            table.by_subject.remove(&oldest);
        }
        table.order.push_back((route.expires, subject.clone()));
        table.by_subject.insert(subject.clone(), route);
        subject
    }

    /// How many routes are held (for tests and monitoring).
    pub fn len(&self) -> usize {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_subject
            .len()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl InternalSink for Responses {
    fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
        let subject = String::from_utf8_lossy(msg.subject);
        let (importer, to) = {
            let mut table = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(route) = table.by_subject.get(subject.as_ref()) else {
                return;
            };
            if route.expires <= Instant::now() {
                table.by_subject.remove(subject.as_ref());
                return;
            }
            let found = (route.importer.clone(), route.to.clone());
            if route.singleton {
                table.by_subject.remove(subject.as_ref());
            }
            found
        };
        let Some(importer) = importer.upgrade() else {
            return;
        };
        let crossed = one_hop_deeper(|| importer.answer(&to, msg.headers, msg.payload));
        if crossed.is_none() {
            warn!("response dropped: it crossed too many imports (an import loop?)");
        }
    }
}

/// `n` in base 62 (digits, then upper, then lower case letters).
fn base62(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(11);
    loop {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// `len` random base-62 characters.
fn random_token(len: usize) -> String {
    (0..len).map(|_| base62(fastrand::u64(..62))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_and_tokens() {
        assert_eq!(base62(0), "0");
        assert_eq!(base62(61), "z");
        assert_eq!(base62(62), "10");
        let t = random_token(6);
        assert_eq!(t.len(), 6);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn hops_are_bounded() {
        fn nest(n: u32) -> u32 {
            one_hop_deeper(|| nest(n + 1)).unwrap_or(n)
        }
        assert_eq!(nest(0), MAX_IMPORT_HOPS);
        assert_eq!(HOPS.with(Cell::get), 0, "the depth unwinds");
    }

    #[test]
    fn routes_are_bounded_and_expire() {
        let r = Responses::new();
        let route = |expires| Route {
            importer: Weak::new(),
            to: ReplyTo::anyone("_INBOX.x"),
            singleton: true,
            expires,
        };
        let later = Instant::now() + Duration::from_secs(60);
        let first = r.add(route(later));
        assert!(first.starts_with(&r.prefix));
        for _ in 0..MAX_RESPONSE_ROUTES {
            r.add(route(later));
        }
        assert_eq!(r.len(), MAX_RESPONSE_ROUTES, "the oldest went");
        let table = r.routes.lock().unwrap();
        assert!(!table.by_subject.contains_key(&first));
        drop(table);
        let r = Responses::new();
        r.add(route(Instant::now()));
        r.add(route(later));
        assert_eq!(r.len(), 1, "the expired route went");
    }
}
