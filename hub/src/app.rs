//! What the `hubd` binary runs: the shared server (`leaf_core::app`), its leafnode links,
//! JetStream and the monitoring port, reloads of the shared keys on SIGHUP, and the
//! `check-config` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leaf_core::app::{
    check_config, fail, init_logging, parse_args, runtime, shutdown_signal, unsupported_yet,
    AbortOnDrop, LogLevelSetter, Node, RemoteDigests, SharedReload, DRAIN_LIMIT,
};
use leaf_core::cli::ServerArgs;
use leaf_core::config::Config;
use leaf_core::reload;
use tracing::{error, info};

use crate::config;

/// The binary's name in `--help`, `--version`, logs and errors.
const NAME: &str = "hubd";

#[derive(Debug, Parser)]
#[command(
    version,
    disable_version_flag = true,
    about = "The hub of leaf gateways: a NATS-compatible server with JetStream and leafnode links"
)]
struct Cli {
    /// Print the version and exit (`-V` is nats-server's `--trace`).
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and exit (0: valid; 1: the error is printed).
    CheckConfig {
        /// The configuration file (TOML, or JSON when it ends in .json).
        file: PathBuf,
    },
}

/// Runs `hubd`.
pub fn main() -> ExitCode {
    let cli: Cli = match parse_args(NAME) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check_config(
            NAME,
            file,
            |path| config::load_file(path).and_then(|cfg| cfg.validate().map(|()| cfg)),
            unsupported_yet,
        );
    }
    let cfg = match config::load(&cli.server) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(1);
        }
    };
    let set_level = init_logging(&cfg);
    if let Err(msg) = unsupported_yet(&cfg) {
        return fail(NAME, msg);
    }
    let digests = RemoteDigests::read(&cfg);
    let runtime = match runtime(NAME) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(serve(cli.server, cfg, digests, set_level))
}

/// Starts the server, its links, JetStream and monitoring, and serves until SIGTERM or
/// SIGINT.
async fn serve(
    args: ServerArgs,
    cfg: Config,
    digests: RemoteDigests,
    set_level: Option<LogLevelSetter>,
) -> ExitCode {
    let node = match Node::start(NAME, &cfg).await {
        Ok(node) => node,
        Err(e) => return fail(NAME, e),
    };
    let _monitor = match node.monitor(&cfg, None).await {
        Ok(m) => m,
        Err(msg) => return fail(NAME, msg),
    };
    let reload = SharedReload::new(digests, set_level, &node);
    let _reloader = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => Some(AbortOnDrop(tokio::spawn(reload_on_sighup(
            hup, cfg, args, reload,
        )))),
        Err(e) => {
            error!("cannot install the SIGHUP handler: configuration reloads are off: {e}");
            None
        }
    };
    let shutdown = shutdown_signal();
    node.server.run(shutdown, DRAIN_LIMIT).await;
    info!("{NAME} stopped");
    ExitCode::SUCCESS
}

/// Reloads the configuration on every SIGHUP: the file again with the flags over it, then
/// what [`reload::plan`] allows (the log level; leafnode remotes reconnected, added or
/// removed); anything else is refused and the running configuration stays.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    mut running: Config,
    args: ServerArgs,
    mut shared: SharedReload,
) {
    while hup.recv().await.is_some() {
        info!("SIGHUP received: reloading the configuration");
        let mut new = match config::load(&args) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused: {e}; the running configuration stays");
                continue;
            }
        };
        let plan = match reload::plan(&running, &new) {
            Ok(p) => p,
            Err(e) => {
                error!("reload refused: {e}");
                continue;
            }
        };
        shared.log_level(plan.log_level);
        let applied = shared.remotes(&running, &mut new).await;
        running = new;
        applied.log(plan.is_empty());
    }
}
