//! The bus task: open the device (with backoff), read registers when they are due,
//! publish their values, serve writes in between, count and log what fails.

use tokio::time::Instant;
use tokio_modbus::{Request, Response};
use tracing::{info, warn};

use super::session::{CallError, Session};
use super::value::{decode_bits, decode_words, payload};
use super::{Bus, ERRORS, EXCEPTIONS, INITIAL_BACKOFF, POLLS, REOPENS, TIMEOUTS, VALUES};
use crate::gateway::config::modbus::RegisterKind;
use crate::gateway::outlet::{stamp, Request as NatsRequest, Requests};
use crate::gateway::serial::device;
use crate::gateway::serial::port::SerialPort;
use crate::gateway::stats::SourceState;
use crate::gateway::GatewayError;
use leaf_proto::time::now_ns;

/// Why a session ended.
pub(super) enum End {
    /// The device failed: close it and reopen.
    Device,
    /// The server is gone: the task ends.
    Stopped,
}

/// What the bus task waits for next.
enum Event {
    /// A write request (or `None`: the request subscription ended).
    Request(Option<NatsRequest>),
    /// The register at this index is due.
    Due(usize),
}

/// The next write request; never resolves when there is no write subject.
async fn next_request(requests: &mut Option<Requests>) -> Option<NatsRequest> {
    match requests {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

impl Bus {
    /// Runs the bus until the server stops: open, serve, and after a device failure wait
    /// (100 ms doubling up to `port.reopen_max`) and open again.
    pub(super) async fn run(mut self) {
        let mut opened_before = false;
        loop {
            match self.open() {
                Ok(port) => {
                    if opened_before {
                        self.stats.add(REOPENS, 1);
                    }
                    opened_before = true;
                    self.stats.set_target(port.path().display().to_string());
                    self.stats.set_state(SourceState::Open);
                    info!(
                        bus = %self.cfg.name,
                        device = %port.path().display(),
                        "modbus bus open"
                    );
                    let mut session = Session::new(port, self.cfg.timeout, self.cfg.frame_gap());
                    if let End::Stopped = self.serve(&mut session).await {
                        break;
                    }
                }
                Err(message) => {
                    self.stats.set_error(message.clone());
                    self.log_warn(&message);
                }
            }
            self.stats.set_state(SourceState::Waiting);
            self.wait(self.backoff).await;
            self.backoff = (self.backoff * 2).min(self.cfg.port.reopen_max);
        }
        self.stats.set_state(SourceState::Stopped);
    }

    /// Resolves and opens the device.
    fn open(&self) -> Result<SerialPort, String> {
        let path = device::resolve(&self.cfg.port.device, self.ctx.board.as_deref())
            .map_err(|e| e.to_string())?;
        SerialPort::open(&path, &self.cfg.port).map_err(|e| e.to_string())
    }

    /// Waits `delay` while the device is closed, refusing writes meanwhile.
    async fn wait(&mut self, delay: std::time::Duration) {
        let until = Instant::now() + delay;
        loop {
            let request = tokio::select! {
                r = next_request(&mut self.requests) => r,
                () = tokio::time::sleep_until(until) => return,
            };
            match request {
                Some(request) => {
                    let message = format!("bus `{}` is not open", self.cfg.name);
                    self.respond_error(&request, &message);
                }
                None => self.requests = None,
            }
        }
    }

    /// Polls and writes on an open device until it fails or the server stops.
    async fn serve(&mut self, session: &mut Session) -> End {
        loop {
            let Some((index, due)) = self
                .points
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.next)
                .map(|(i, p)| (i, p.next))
            else {
                // No registers (validation prevents it): only writes.
                match next_request(&mut self.requests).await {
                    Some(request) => {
                        if let Some(end) = self.write(session, &request).await {
                            return end;
                        }
                    }
                    None => return End::Stopped,
                }
                continue;
            };
            let event = tokio::select! {
                biased;
                r = next_request(&mut self.requests) => Event::Request(r),
                () = tokio::time::sleep_until(due) => Event::Due(index),
            };
            let end = match event {
                Event::Request(Some(request)) => self.write(session, &request).await,
                Event::Request(None) => {
                    self.requests = None;
                    None
                }
                Event::Due(index) => self.poll(session, index).await,
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Reads the register at `index` and publishes its value.
    async fn poll(&mut self, session: &mut Session, index: usize) -> Option<End> {
        let point = self.points.get_mut(index)?;
        // Not drifting: the next slot after now, on the register's own grid.
        let now = Instant::now();
        let interval = point.reg.interval;
        point.next += interval;
        if point.next <= now {
            point.next = now + interval;
        }
        let reg = &point.reg;
        // Validation keeps the quantity within one request (at most 2000).
        let quantity = u16::try_from(reg.quantity()).unwrap_or(u16::MAX);
        let request = match reg.kind {
            RegisterKind::Holding => Request::ReadHoldingRegisters(reg.address, quantity),
            RegisterKind::Input => Request::ReadInputRegisters(reg.address, quantity),
            RegisterKind::Coil => Request::ReadCoils(reg.address, quantity),
            RegisterKind::Discrete => Request::ReadDiscreteInputs(reg.address, quantity),
        };
        let (slave, name) = (reg.slave, reg.name.clone());
        self.stats.add(POLLS, 1);
        let response = match session.call(slave, request).await {
            Ok(response) => response,
            Err(err) => return self.failed(&format!("register `{name}`"), &err),
        };
        let point = self.points.get_mut(index)?;
        let reg = &point.reg;
        let want = usize::from(quantity);
        let value = match (reg.kind, response) {
            (RegisterKind::Holding, Response::ReadHoldingRegisters(words))
            | (RegisterKind::Input, Response::ReadInputRegisters(words))
                if words.len() >= want =>
            {
                decode_words(reg, &words)
            }
            (RegisterKind::Coil, Response::ReadCoils(bits))
            | (RegisterKind::Discrete, Response::ReadDiscreteInputs(bits))
                if bits.len() >= want =>
            {
                decode_bits(reg, &bits)
            }
            _ => {
                session.reset();
                let err = CallError::Protocol("the answer does not fit the request".into());
                return self.failed(&format!("register `{name}`"), &err);
            }
        };
        self.backoff = INITIAL_BACKOFF;
        point.seq += 1;
        let headers = stamp(
            now_ns(),
            point.seq,
            &[
                ("Leaf-Bus", &self.cfg.name),
                ("Leaf-Slave", &point.slave),
                ("Leaf-Register", &reg.name),
            ],
        );
        let body = payload(reg, value);
        match self.outlet.publish(&point.subject, Some(&headers), &body) {
            Ok(_) => {
                self.stats.add(VALUES, 1);
                None
            }
            Err(GatewayError::Stopped) => Some(End::Stopped),
            Err(e) => {
                self.stats.add(ERRORS, 1);
                let message = format!("register `{name}`: {e}");
                self.stats.set_error(message.clone());
                self.log_warn(&message);
                None
            }
        }
    }

    /// Counts and logs a failed request; returns [`End::Device`] when the device must be
    /// reopened.
    pub(super) fn failed(&mut self, what: &str, err: &CallError) -> Option<End> {
        let counter = match err {
            CallError::Timeout { garbled: false } => TIMEOUTS,
            CallError::Exception(_) => EXCEPTIONS,
            CallError::Timeout { garbled: true }
            | CallError::Protocol(_)
            | CallError::Device(_) => ERRORS,
        };
        self.stats.add(counter, 1);
        let message = format!("{what}: {err}");
        self.stats.set_error(message.clone());
        self.log_warn(&message);
        matches!(err, CallError::Device(_)).then_some(End::Device)
    }

    /// Logs a warning about this bus, within the log limit.
    pub(super) fn log_warn(&mut self, message: &str) {
        if let Some(suppressed) = self.log.allow() {
            if suppressed > 0 {
                warn!(bus = %self.cfg.name, suppressed, "modbus: {message}");
            } else {
                warn!(bus = %self.cfg.name, "modbus: {message}");
            }
        }
    }
}
