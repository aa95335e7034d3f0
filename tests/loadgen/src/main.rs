//! `loadgen`: a load generator for NATS-protocol servers (leafd, hubd, nats-server).
//!
//! It drives the servers for `scripts/bench` and prints one JSON line per run on
//! stdout (a human-readable line goes to stderr).
//!
//! Subcommands:
//!
//! * `pub --url HOST:PORT --size N --msgs M`: publish-only ingest, msgs/s. The
//!   publisher writes pre-encoded `PUB` frames in large chunks, then sends `PING`
//!   and waits for the `PONG`, so the clock stops only once the server has read
//!   everything.
//! * `pubsub --subs K --size N --msgs M`: one publisher and K subscribers, each on
//!   its own connection; deliveries/s and loss (expected - received) after the
//!   stream goes quiet for `--idle` seconds (default 2).
//! * `reqrep --msgs M --size N`: sequential request/reply latency percentiles in
//!   microseconds, through async-nats on both ends.
//!   With `--responder-url` the responder connects there (e.g. a hub behind the
//!   requester's leaf); requests are retried until one gets through first.
//! * `pubsub --sub-url HOST:PORT`: subscribers on another server than the publisher
//!   (leaf link); the publisher sends probes until interest has arrived.
//! * `js --mode sync|async`: JetStream publish throughput (and, sync, PubAck
//!   latency) on stream `BENCH` (subjects `bench.>`), via async-nats; afterwards
//!   `STREAM.INFO` must report every acknowledged message. `--stream NAME --create
//!   false` publishes into an existing stream instead (an uplink's buffer).
//! * `await-stream --url HUB --stream NAME --msgs N --leaf-url LEAF`: after the hub
//!   has been started, times from the leaf link coming up until stream NAME on the
//!   hub holds N messages (a backlog replay); samples the leaf's RSS and CPU time.
//! * `startup [--runs R] [--js-stream NAME] -- CMD ARGS...`: spawns CMD (every
//!   `{port}` in ARGS is replaced by a free loopback port), times spawn to first
//!   `INFO` line (and to the first `STREAM.INFO NAME` answer), kills it (SIGKILL).
//! * `stream-info --url HOST:PORT --stream NAME [--expect N]`: prints the state of
//!   stream NAME (`STREAM.INFO`: messages, bytes, first and last sequence); with
//!   `--expect` it waits (up to `--timeout` seconds) for exactly N messages and fails
//!   otherwise (used by `scripts/arm-smoke` after a restart).
//! * `serial-feed --peer PTY --url HOST:PORT --frames N --line-len 64 --bps 92160
//!   [--pid PID]`: plays a serial device: writes N lines of `--line-len` bytes into the test
//!   end of a PTY pair (leafd reads the other end) paced at `--bps` bytes per second (0: as
//!   fast as the PTY takes them), counts the messages a subscriber on `--subject` receives,
//!   and samples the CPU time of process PID. Without `--peer` the same lines are published
//!   as `PUB`s to `--url` at the same pace (a client bridging the port into nats-server).
//! * `leaves --url HUB-LEAFNODE-PORT --count N --users user:pw,...`: opens N raw leafnode
//!   connections (as nats-server leaves: `CONNECT`, one `LS+` each), answers `PING`s and holds
//!   them until SIGTERM/SIGINT or `--hold` seconds; `--ready-file` tells when all are up (the
//!   benchmark then reads the hub's RSS). Reports how many were established and held.
//! * `fsync --dir DIR [--size 128 --count 2000]`: this machine's latency of appending a
//!   record to a file in DIR and `fdatasync`ing it (percentiles, µs): the floor under a
//!   publish acknowledged after an fsync (the JetStream rows measure it on the stores' disk).
//! * `fleet --url HUB-LEAFNODE-PORT --client-url HUB --gateways N --backlog M [--storm]`: N
//!   gateways (raw leafnode links, leafd's handshake) replay M messages each into one hub
//!   stream at once, with `Nats-Msg-Id`s and a window of unacknowledged messages as leafd's
//!   uplink; ingest, time until all are stored, the stream's count; with `--storm`, the
//!   reconnection of every gateway after the hub restarts (see `src/fleet.rs`).
//! * `pubsub --user U --password P --other-sub nats://b:pw@HOST:PORT`: publisher and
//!   subscribers log in as U (a URL may carry `user:password@` too); each `--other-sub` is a
//!   bystander of another account on the same subject that must receive nothing.
//! * `js --replicas 3 --pull true`: the same into a replicated stream of a JetStream cluster
//!   (waits, bounded, for the cluster to be ready), then reads it back through an ephemeral
//!   pull consumer (a second record, row `<row>-pull`).
//! * `failover --member NAME,PID,HOST:PORT ...`: SIGKILLs the leader of a replicated stream
//!   and times the first PubAck after it (see `src/failover.rs`).
//! * `freeport`: prints a free loopback TCP port.
//! * `report FILE [--baseline NAME]`: renders the JSON lines collected in FILE as
//!   a Markdown table of medians and ratios against the baseline server.
//!
//! The raw-protocol modes use blocking `std::net::TcpStream`s on plain threads: one
//! thread per connection keeps the tool cheap enough that the server, not the
//! load generator, is the bottleneck.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

/// The error type of this tool.
///
/// A boxed error is enough here: every failure ends the run with a message on
/// stderr and a non-zero exit status, nothing is matched on or recovered.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Result alias using [`Error`].
type Result<T> = std::result::Result<T, Error>;

/// Subject used by the throughput modes.
const SUBJECT: &str = "bench.s";

/// Subject the request/reply responder listens on.
const RR_SUBJECT: &str = "bench.rr";

/// Subject of the interest probes sent before a measurement across a leaf link.
const PROBE_SUBJECT: &str = "bench.probe";

/// Upper bound on waiting for interest to cross a leaf link.
const PROBE_LIMIT: Duration = Duration::from_secs(15);

/// Size of one write of pre-encoded `PUB` frames.
const WRITE_CHUNK: usize = 128 * 1024;

/// Size of the read buffer of a subscriber connection.
const READ_BUF: usize = 256 * 1024;

/// Longest protocol line (outside payloads) accepted before giving up.
const MAX_LINE: usize = 64 * 1024;

/// Upper bound on any single wait for the server (handshake, PONG, startup).
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// The command line: one subcommand and its options (`--key value`; numbers may be written
/// with `_` separators, as `--msgs 1_000_000`; a repeated option counts once, the last wins).
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "A load generator for NATS-protocol servers (leafd, hubd, nats-server)",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// The modes, each with its options (see the crate documentation).
#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Publish-only ingest, msgs/s.
    Pub(throughput::PubArgs),
    /// One publisher and K subscribers (on another server with --sub-url): deliveries/s
    /// and loss.
    Pubsub(throughput::PubsubArgs),
    /// Sequential request/reply latency percentiles (µs), through async-nats.
    Reqrep(reqrep::Args),
    /// JetStream publish throughput (and, sync, PubAck latency) on stream BENCH.
    Js(js::Args),
    /// Times spawn to first INFO (and STREAM.INFO) of a server command, killed after.
    Startup(startup::Args),
    /// Times a stream on a just-started hub reaching N messages (a backlog replay).
    AwaitStream(await_stream::Args),
    /// Prints a stream's state; --expect waits for exactly N messages.
    StreamInfo(stream_info::Args),
    /// Plays a serial device writing lines into a PTY (or PUBs to --url without --peer).
    SerialFeed(serial_feed::Args),
    /// Holds N raw leafnode connections on a hub until a signal or --hold seconds.
    Leaves(leaves::Args),
    /// N gateways (raw leafnode links) replaying a backlog each into one hub stream at once;
    /// with --storm, their reconnection after a hub restart.
    Fleet(fleet::Args),
    /// This machine's append + fdatasync latency percentiles (µs) in a directory.
    Fsync(fsync::Args),
    /// SIGKILLs a replicated stream's leader; time to the first PubAck after it.
    Failover(failover::Args),
    /// Prints a free loopback TCP port.
    Freeport,
    /// Renders collected JSON lines as a Markdown table of medians and ratios.
    Report(report::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand.
fn run(mode: Mode) -> Result<()> {
    match mode {
        Mode::Pub(args) => throughput::run_pub(&args),
        Mode::Pubsub(args) => throughput::run_pubsub(&args),
        Mode::Reqrep(args) => reqrep::run(&args),
        Mode::Js(args) => js::run(&args),
        Mode::Startup(args) => startup::run(&args),
        Mode::AwaitStream(args) => await_stream::run(&args),
        Mode::StreamInfo(args) => stream_info::run(&args),
        Mode::SerialFeed(args) => serial_feed::run(&args),
        Mode::Leaves(args) => leaves::run(&args),
        Mode::Fleet(args) => fleet::run(&args),
        Mode::Fsync(args) => fsync::run(&args),
        Mode::Failover(args) => failover::run(&args),
        Mode::Freeport => {
            println!("{}", startup::free_port()?);
            Ok(())
        }
        Mode::Report(args) => report::run(&args),
    }
}

/// Prints a run's JSON record on stdout and its human summary on stderr.
fn emit(record: serde_json::Value, human: &str) {
    println!("{record}");
    eprintln!("{human}");
}

mod args;
mod await_stream;
mod failover;
mod fleet;
mod fsync;
mod js;
mod leaves;
mod report;
mod reqrep;
mod serial_feed;
mod startup;
mod stream_info;
mod throughput;
mod wire;
