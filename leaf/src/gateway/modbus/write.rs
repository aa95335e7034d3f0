//! Writes requested on the bus's `write_subject`:
//! `{"register": "setpoint", "value": 21.5}` is answered with `{"ok": true}` or
//! `{"error": "..."}`. Only registers configured `writable = true` (holding registers
//! and coils) may be written; the value goes through the inverse of the register's
//! scaling and its type, byte and word order.
//!
//! Nothing but that object (both keys, no other) is a write: another handler's answer or
//! message (`{"ok":true}`, `{"value":…,"unit":…}`, a GPIO `{"line":…,"value":…}`, a PubAck)
//! is refused with an error, so a reply routed to the write subject cannot drive a register.
//! The answer goes only where the requester may publish itself (see
//! `leaf_core::server::reply`).

use std::borrow::Cow;

use serde::Deserialize;
use tokio::time::Instant;
use tokio_modbus::{Request, Response};

use super::poll::End;
use super::session::{CallError, Session};
use super::value::{encode, Encoded};
use super::{Bus, WRITES};
use crate::gateway::outlet::Request as NatsRequest;

/// The body of a write request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    /// The register's name.
    register: String,
    /// The value (an array for registers with `count > 1`).
    value: serde_json::Value,
}

impl Bus {
    /// Carries out one write request and answers it. Returns [`End::Device`] when the
    /// device failed during the write.
    pub(super) async fn write(
        &mut self,
        session: &mut Session,
        request: &NatsRequest,
    ) -> Option<End> {
        let parsed: WriteRequest = match serde_json::from_slice(&request.payload) {
            Ok(w) => w,
            Err(e) => {
                self.respond_error(
                    request,
                    &format!("expected {{\"register\": name, \"value\": value}}: {e}"),
                );
                return None;
            }
        };
        let Some(index) = self
            .points
            .iter()
            .position(|p| p.reg.name == parsed.register)
        else {
            self.respond_error(request, &format!("unknown register `{}`", parsed.register));
            return None;
        };
        let reg = &self.points.get(index)?.reg;
        if !reg.writable {
            let message = format!("register `{}` is not writable", reg.name);
            self.respond_error(request, &message);
            return None;
        }
        let encoded = match encode(reg, &parsed.value) {
            Ok(e) => e,
            Err(e) => {
                let message = format!("register `{}`: {e}", reg.name);
                self.respond_error(request, &message);
                return None;
            }
        };
        let (address, slave, name) = (reg.address, reg.slave, reg.name.clone());
        let call = match &encoded {
            Encoded::Words(words) if words.len() == 1 => {
                Request::WriteSingleRegister(address, words.first().copied().unwrap_or(0))
            }
            Encoded::Words(words) => {
                Request::WriteMultipleRegisters(address, Cow::Owned(words.clone()))
            }
            Encoded::Bits(bits) if bits.len() == 1 => {
                Request::WriteSingleCoil(address, bits.first().copied().unwrap_or(false))
            }
            Encoded::Bits(bits) => Request::WriteMultipleCoils(address, Cow::Owned(bits.clone())),
        };
        let result = session.call(slave, call).await.and_then(|response| {
            if echoes(&encoded, address, &response) {
                Ok(())
            } else {
                session.reset();
                Err(CallError::Protocol(format!(
                    "the answer {response:?} does not confirm the write"
                )))
            }
        });
        match result {
            Ok(()) => {
                self.stats.add(WRITES, 1);
                // Publish the new value soon rather than at the next interval.
                if let Some(point) = self.points.get_mut(index) {
                    point.next = Instant::now();
                }
                self.outlet.respond(request, br#"{"ok":true}"#);
                None
            }
            Err(err) => {
                let end = self.failed(&format!("write to register `{name}`"), &err);
                self.respond_error(request, &format!("register `{name}`: {err}"));
                end
            }
        }
    }

    /// Answers `request` with `{"error": message}`.
    pub(super) fn respond_error(&self, request: &NatsRequest, message: &str) {
        let body = serde_json::json!({ "error": message });
        // Serializing a map of plain values cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        self.outlet.respond(request, &bytes);
    }
}

/// Whether `response` confirms the write of `encoded` at `address`.
fn echoes(encoded: &Encoded, address: u16, response: &Response) -> bool {
    match (encoded, response) {
        (Encoded::Words(words), Response::WriteSingleRegister(a, w)) => {
            *a == address && words.len() == 1 && words.first() == Some(w)
        }
        (Encoded::Words(words), Response::WriteMultipleRegisters(a, n)) => {
            *a == address && usize::from(*n) == words.len()
        }
        (Encoded::Bits(bits), Response::WriteSingleCoil(a, b)) => {
            *a == address && bits.len() == 1 && bits.first() == Some(b)
        }
        (Encoded::Bits(bits), Response::WriteMultipleCoils(a, n)) => {
            *a == address && usize::from(*n) == bits.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_write_requests_are_taken() {
        let ok: WriteRequest =
            serde_json::from_str(r#"{"register":"setpoint","value":21.5}"#).unwrap();
        assert_eq!(ok.register, "setpoint");
        // Other handlers' answers and messages are not write requests, so a reply loop
        // cannot drive a register.
        for answer in [
            r#"{"ok":true}"#,
            r#"{"error":"register `x` is not writable"}"#,
            r#"{"value":21.5,"unit":"V"}"#,
            r#"{"value":1}"#,
            r#"{"line":"door","value":1}"#,
            r#"{"stream":"S","seq":1}"#,
            r#"{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0}"#,
            r#"{"register":"setpoint","value":1,"line":"door"}"#,
            "1",
        ] {
            assert!(
                serde_json::from_str::<WriteRequest>(answer).is_err(),
                "{answer}"
            );
        }
    }

    #[test]
    fn echoes_must_match_the_write() {
        let one = Encoded::Words(vec![7]);
        assert!(echoes(&one, 3, &Response::WriteSingleRegister(3, 7)));
        assert!(!echoes(&one, 3, &Response::WriteSingleRegister(3, 8)));
        assert!(!echoes(&one, 3, &Response::WriteSingleRegister(4, 7)));
        let two = Encoded::Words(vec![1, 2]);
        assert!(echoes(&two, 0, &Response::WriteMultipleRegisters(0, 2)));
        assert!(!echoes(&two, 0, &Response::WriteMultipleRegisters(0, 1)));
        let coil = Encoded::Bits(vec![true]);
        assert!(echoes(&coil, 5, &Response::WriteSingleCoil(5, true)));
        assert!(!echoes(&coil, 5, &Response::WriteMultipleRegisters(5, 1)));
    }
}
