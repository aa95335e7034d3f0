use std::collections::{HashMap, HashSet};

use super::*;

/// A subset of nats-server's `server/errors.json` (identifier, status, code) for the
/// identifiers the table uses: from tag v2.9.25, and from nats-server's main branch for
/// the codes 2.9 does not have ("from": "main").
const NATS_ERRORS: &str = include_str!("nats-errors.json");

#[derive(serde::Deserialize)]
struct NatsError {
    constant: String,
    code: u16,
    error_code: u16,
}

fn nats() -> HashMap<String, NatsError> {
    let list: Vec<NatsError> = serde_json::from_str(NATS_ERRORS).unwrap();
    list.into_iter().map(|e| (e.constant.clone(), e)).collect()
}

#[test]
fn codes_and_statuses_are_nats_servers() {
    let nats = nats();
    let mut named = 0;
    for e in JsError::ALL {
        let Some(constant) = e.constant() else {
            continue;
        };
        let n = nats
            .get(constant)
            .unwrap_or_else(|| panic!("{constant} is not in nats-server's errors.json"));
        assert_eq!(e.code(), n.error_code, "{e:?} ({constant})");
        assert_eq!(e.status(), n.code, "{e:?} ({constant})");
        named += 1;
    }
    assert_eq!(named, nats.len(), "every fixture entry is used once");
}

#[test]
fn own_entries_do_not_shadow_a_named_one() {
    let own: Vec<JsError> = JsError::ALL
        .iter()
        .copied()
        .filter(|e| e.constant().is_none())
        .collect();
    assert_eq!(own.len(), 5, "{own:?}");
    for e in own {
        let same = JsError::ALL
            .iter()
            .find(|n| n.constant().is_some() && n.code() == e.code() && n.status() == e.status());
        assert!(
            same.is_none_or(|n| n.text().is_some() && n.text() != e.text()),
            "{e:?} could be {same:?}"
        );
    }
}

#[test]
fn constructors_carry_the_table_entry() {
    let e = JsError::StreamNotFound.err();
    assert_eq!((e.code, e.err_code), (404, 10059));
    assert_eq!(e.description, "stream not found");
    assert!(e.is(JsError::StreamNotFound));
    let e = JsError::StreamStoreFailed.with("disk full");
    assert_eq!((e.code, e.err_code), (503, 10077));
    assert_eq!(e.description, "disk full");
    assert_eq!(
        serde_json::to_string(&JsError::NoMessageFound.err()).unwrap(),
        r#"{"code":404,"err_code":10037,"description":"no message found"}"#
    );
    let e = JsError::SourceConsumerSetupFailed
        .with("timeout")
        .with_status(504);
    assert_eq!((e.code, e.err_code), (504, 10045));
}

#[test]
fn every_variant_is_listed_once() {
    let all: HashSet<JsError> = JsError::ALL.iter().copied().collect();
    assert_eq!(all.len(), JsError::ALL.len());
}
