//! The JetStream API of an account without JetStream, on a server with JetStream: every
//! request is answered at once with nats-server's 503 "JetStream not enabled for account"
//! (10039), in the response type of the API called, so a client learns why instead of
//! timing out. An engine switched off at run time ([`super::JetStream::suspend`]) answers
//! the same way.
//!
//! The cluster APIs (`$JS.API.META.`, `$JS.API.SERVER.`) are answered here only while nothing
//! else in the account serves them: hubd's JetStream cluster serves
//! `$JS.API.META.LEADER.STEPDOWN` in the system account, which has no JetStream of its own.

use std::sync::{Arc, Weak};

use super::errors::JsError;
use super::wire::{ErrorResponse, TYPE_PREFIX};
use crate::server::{Account, InternalSink, Msg, Publisher, ReplyTo, SubRef};
use crate::sublist::SublistError;

/// The response type of the API request on `subject` (`$JS.API.<rest>`), as nats-server
/// names it (`io.nats.jetstream.api.v1.<type>`).
pub fn response_type(subject: &str) -> &'static str {
    let rest = subject.strip_prefix("$JS.API.").unwrap_or("");
    let mut tokens = rest.split('.');
    let (first, second, third) = (tokens.next(), tokens.next(), tokens.next());
    match (first, second, third) {
        (Some("INFO"), None, _) => "account_info_response",
        (Some("STREAM"), Some("CREATE"), _) => "stream_create_response",
        (Some("STREAM"), Some("UPDATE"), _) => "stream_update_response",
        (Some("STREAM"), Some("INFO"), _) => "stream_info_response",
        (Some("STREAM"), Some("DELETE"), _) => "stream_delete_response",
        (Some("STREAM"), Some("PURGE"), _) => "stream_purge_response",
        (Some("STREAM"), Some("NAMES"), _) => "stream_names_response",
        (Some("STREAM"), Some("LIST"), _) => "stream_list_response",
        (Some("STREAM"), Some("MSG"), Some("GET")) => "stream_msg_get_response",
        (Some("STREAM"), Some("MSG"), Some("DELETE")) => "stream_msg_delete_response",
        (Some("CONSUMER"), Some("CREATE" | "DURABLE"), _) => "consumer_create_response",
        (Some("CONSUMER"), Some("INFO"), _) => "consumer_info_response",
        (Some("CONSUMER"), Some("DELETE"), _) => "consumer_delete_response",
        (Some("CONSUMER"), Some("NAMES"), _) => "consumer_names_response",
        (Some("CONSUMER"), Some("LIST"), _) => "consumer_list_response",
        _ => "error_response",
    }
}

/// Answers `$JS.API.>` requests of one account.
struct NotEnabled(Weak<Account>);

impl InternalSink for NotEnabled {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let (Some(account), Some(reply)) = (self.0.upgrade(), msg.reply) else {
            return;
        };
        let subject = String::from_utf8_lossy(msg.subject);
        if served_elsewhere(&account, &subject) {
            return;
        }
        answer_not_enabled(&account, &from.reply_to(reply), &subject);
    }
}

/// Whether `subject` is a cluster API that another subscription of `account` serves.
fn served_elsewhere(account: &Account, subject: &str) -> bool {
    let cluster_api = ["$JS.API.META.", "$JS.API.SERVER."]
        .iter()
        .any(|p| subject.starts_with(p));
    if !cluster_api {
        return false;
    }
    let all = account.sublist.matches(subject.as_bytes());
    all.plain.len() + all.queues.len() > 1
}

/// Answers the API request on `subject` with "not enabled for account" (10039), in the
/// response type of the API called.
pub fn answer_not_enabled(account: &Account, reply: &ReplyTo, subject: &str) {
    let body = ErrorResponse {
        kind: Some(format!("{TYPE_PREFIX}{}", response_type(subject))),
        error: JsError::NotEnabledForAccount.err(),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    account.answer(reply, None, &body);
}

/// Makes `account`'s JetStream API answer "not enabled" (see the module documentation).
pub fn serve_not_enabled(account: &Arc<Account>) -> Result<SubRef, SublistError> {
    account.subscribe_internal(
        b"$JS.API.>",
        None,
        Arc::new(NotEnabled(Arc::downgrade(account))),
    )
}

#[cfg(test)]
mod tests {
    use super::response_type;

    #[test]
    fn response_types_follow_the_api_called() {
        assert_eq!(response_type("$JS.API.INFO"), "account_info_response");
        assert_eq!(
            response_type("$JS.API.STREAM.CREATE.S"),
            "stream_create_response"
        );
        assert_eq!(
            response_type("$JS.API.STREAM.MSG.GET.S"),
            "stream_msg_get_response"
        );
        assert_eq!(
            response_type("$JS.API.CONSUMER.DURABLE.CREATE.S.C"),
            "consumer_create_response"
        );
        assert_eq!(response_type("$JS.API.NOPE"), "error_response");
    }
}
