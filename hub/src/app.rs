//! What the `hubd` binary runs: the shared server (`leaf_core::app`), its leafnode links,
//! JetStream and the monitoring port, reloads of the shared keys on SIGHUP, and the
//! `check-config` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use leaf_core::app::{
    check_config, fail, parse_args, prepare, reload_on_sighup, shutdown_signal, unsupported_yet,
    Applied, LogLevelSetter, Node, Reload, RemoteDigests, SharedReload, DRAIN_LIMIT,
};
use leaf_core::cli::ServerArgs;
use leaf_core::config::{Config, ConfigError};
use leaf_core::reload::{self, Refused};
use tracing::info;

use crate::config;

/// The binary's name in `--help`, `--version`, logs and errors.
const NAME: &str = "hubd";

/// What `--help` says hubd is.
const ABOUT: &str =
    "The hub of leaf gateways: a NATS-compatible server with JetStream and leafnode links";

/// hubd's subcommands (without one, the server runs).
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
    let cli = match parse_args::<Command>(NAME, ABOUT) {
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
    match prepare(NAME, || config::load(&cli.server)) {
        Ok(ready) => {
            let serving = serve(cli.server, ready.cfg, ready.digests, ready.set_level);
            ready.runtime.block_on(serving)
        }
        Err(code) => code,
    }
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
    let shared = SharedReload::new(digests, set_level, &node);
    let _reloader = reload_on_sighup(cfg, shared, HubReload { args });
    let shutdown = shutdown_signal();
    node.server.run(shutdown, DRAIN_LIMIT).await;
    info!("{NAME} stopped");
    ExitCode::SUCCESS
}

/// hubd's part of a reload: nothing of its own, the shared keys only (the log level and the
/// leafnode remotes; anything else is refused).
struct HubReload {
    /// The command-line flags, applied over the file again.
    args: ServerArgs,
}

impl Reload for HubReload {
    type Config = Config;
    type Plan = ();

    fn load(&self) -> Result<Config, ConfigError> {
        config::load(&self.args)
    }

    fn plan(&self, running: &Config, new: &Config) -> Result<(reload::Plan, ()), Refused> {
        reload::plan(running, new).map(|plan| (plan, ()))
    }

    async fn apply(&mut self, _: &(), _: &Config, _: &mut Config) -> Applied {
        Applied::default()
    }
}
