//! What the `leafd` binary runs: the shared server (`leaf_core::app`) with the gateway's own
//! parts: the uplinks, the gateways, systemd notifications, leafd's monitoring pages, its
//! part of a reload, and the `status` and `check-config` commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use leaf_core::app::{
    check_config, fail, init_logging, parse_args, runtime, shutdown_signal, unsupported_yet,
    AbortOnDrop, Applied, Node, RemoteDigests, SharedReload, DRAIN_LIMIT,
};
use leaf_core::cli::ServerArgs;
use leaf_core::jetstream::JetStream;
use leaf_core::server::{Server, ServerOptions};
use leaf_gateway::{Gateways, Outlet};
use tracing::{error, info};

use crate::config::{self, Config};
use crate::monitor::LeafPages;
use crate::reload;
use crate::uplink::Uplinks;

/// The binary's name in `--help`, `--version`, logs and errors.
const NAME: &str = "leafd";

#[derive(Debug, Parser)]
#[command(
    version,
    disable_version_flag = true,
    about = "A NATS-compatible server for the industrial edge"
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
    /// Show the uplinks of a running leafd (backlog, rate, progress bar and ETA), read from
    /// its monitoring port. Refreshes every second in a terminal.
    Status {
        /// The monitoring address (`host:port`, or just the port on 127.0.0.1).
        #[arg(long, short = 'm', default_value = "127.0.0.1:8222")]
        monitor: String,
        /// Print once, even in a terminal.
        #[arg(long)]
        once: bool,
    },
    /// Validate a configuration file and exit (0: valid; 1: the error is printed).
    CheckConfig {
        /// The configuration file (TOML, or JSON when it ends in .json).
        file: PathBuf,
    },
}

/// Runs `leafd`.
pub fn main() -> ExitCode {
    let cli: Cli = match parse_args(NAME) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            return check_config(
                NAME,
                file,
                |path| config::load_file(path).and_then(|cfg| cfg.validate().map(|()| cfg)),
                |cfg| unsupported_yet(cfg).and_then(|()| check_gateways(cfg)),
            )
        }
        Some(Command::Status { monitor, once }) => return status(monitor, *once),
        None => {}
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

/// `leafd status`: renders the uplinks of the leafd whose monitoring port is `monitor`.
fn status(monitor: &str, once: bool) -> ExitCode {
    let addr = if monitor.contains(':') {
        monitor.to_owned()
    } else {
        format!("127.0.0.1:{monitor}")
    };
    match crate::status_cmd::run(&addr, once) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts everything `cfg` configures and serves until SIGTERM or SIGINT.
async fn serve(
    args: ServerArgs,
    cfg: Config,
    digests: RemoteDigests,
    set_level: Option<leaf_core::app::LogLevelSetter>,
) -> ExitCode {
    let node = match Node::start(NAME, &cfg).await {
        Ok(node) => node,
        Err(e) => return fail(NAME, e),
    };
    let uplinks = match (&node.jetstream, cfg.uplinks.is_empty()) {
        (Some(js), false) => {
            match Uplinks::start(node.shared(), node.leaf.as_deref(), js, &cfg.uplinks).await {
                Ok(u) => Some(Arc::new(u)),
                Err(e) => return fail(NAME, e),
            }
        }
        _ => None,
    };
    // After JetStream and the uplinks: their streams capture gateway data from the first
    // frame.
    let gateways = match Gateways::start(
        &Outlet::new(node.shared()),
        &cfg.gateways,
        &gateway_server_name(&cfg),
    ) {
        Ok(g) => g,
        Err(e) => return fail(NAME, e),
    };
    let pages = LeafPages {
        uplinks: uplinks.clone(),
        sources: gateways.registry().clone(),
    };
    let _monitor = match node.monitor(&cfg, Some(Arc::new(pages))).await {
        Ok(m) => m,
        Err(msg) => return fail(NAME, msg),
    };
    // The SIGHUP handler is installed here, before READY=1: a reload right after the
    // start must not kill the process (SIGHUP's default action).
    let gateways = Arc::new(Mutex::new(gateways));
    let reloader = Reloader {
        args,
        shared: SharedReload::new(digests, set_level, &node),
        js: node.jetstream.clone(),
        uplinks: uplinks.clone(),
        gateways: gateways.clone(),
        outlet: Outlet::new(node.shared()),
    };
    let _reloader = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => Some(AbortOnDrop(tokio::spawn(reload_on_sighup(
            hup, cfg, reloader,
        )))),
        Err(e) => {
            error!("cannot install the SIGHUP handler: configuration reloads are off: {e}");
            None
        }
    };
    // The signal handlers before READY=1, so an immediate SIGTERM is not lost.
    let shutdown = shutdown_signal();
    let _watchdog = watchdog(&node.server, node.jetstream.clone());
    crate::systemd::ready(&format!(
        "accepting clients on {}",
        node.server.local_addr()
    ));
    let shutdown = async {
        shutdown.await;
        crate::systemd::stopping();
    };
    node.server.run(shutdown, DRAIN_LIMIT).await;
    if let Ok(mut g) = gateways.lock() {
        g.stop();
    }
    if let Some(uplinks) = uplinks {
        uplinks.stop().await;
    }
    info!("{NAME} stopped");
    ExitCode::SUCCESS
}

/// The systemd watchdog: healthy while the server exists, its subscription index answers and
/// its store reads. A deadlock there, a failing store or a stuck runtime stops the pings and
/// systemd restarts leafd.
fn watchdog(server: &Server, js: Option<JetStream>) -> Option<AbortOnDrop> {
    let shared = Arc::downgrade(server.shared());
    crate::systemd::spawn_watchdog(move || {
        let server_ok = shared.upgrade().is_some_and(|s| {
            let _ = s.sublist.matches(b"_LEAFD.WATCHDOG");
            true
        });
        let store_ok = js.as_ref().is_none_or(|js| js.check_store().is_ok());
        server_ok && store_ok
    })
    .map(AbortOnDrop)
}

/// `{server}` in gateway subject templates: `server_name`, else the host name.
fn gateway_server_name(cfg: &Config) -> String {
    cfg.server_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "leafd".to_owned())
    })
}

/// What only starting the gateways can check (the board, device names, GPIO lines), done
/// without opening anything: the sources are started against a scratch server (bound to a
/// free loopback port, never run) and stopped before their tasks run.
fn check_gateways(cfg: &Config) -> Result<(), String> {
    if cfg.gateways.has_no_sources() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let scratch = Server::bind(ServerOptions {
            host: "127.0.0.1".to_owned(),
            port: 0,
            ..ServerOptions::default()
        })
        .await
        .map_err(|e| format!("cannot check the gateways: {e}"))?;
        Gateways::start(
            &Outlet::new(scratch.shared()),
            &cfg.gateways,
            &gateway_server_name(cfg),
        )
        .map(drop)
        .map_err(|e| e.to_string())
    })
}

/// What a reload acts on.
struct Reloader {
    /// The command-line flags, applied over the file again.
    args: ServerArgs,
    /// The shared part: the log level and the leafnode remotes.
    shared: SharedReload,
    /// JetStream, if on (the uplinks' buffers).
    js: Option<JetStream>,
    /// The uplinks, if any.
    uplinks: Option<Arc<Uplinks>>,
    /// The gateways, restarted on a change.
    gateways: Arc<Mutex<Gateways>>,
    /// What the gateways publish through.
    outlet: Outlet,
}

/// Reloads the configuration on every SIGHUP: the file again with the flags over it, then
/// what [`reload::plan`] allows (log level, uplink limits, the gateways restarted with new
/// settings, leafnode remotes reconnected, added or removed: see
/// [`SharedReload::remotes`]); anything else is refused and the running configuration stays.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    mut running: Config,
    mut r: Reloader,
) {
    while hup.recv().await.is_some() {
        info!("SIGHUP received: reloading the configuration");
        let mut new = match config::load(&r.args) {
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
        r.shared.log_level(plan.log_level);
        let mut failed = false;
        for (index, cfg) in &plan.uplinks {
            if let (Some(js), Some(uplinks)) = (&r.js, &r.uplinks) {
                if let Err(e) = uplinks.reconfigure(js, *index, cfg).await {
                    error!("reload of uplink {}: {e}", cfg.name);
                    failed = true;
                }
            }
        }
        if plan.gateways {
            let restarted = match r.gateways.lock() {
                Ok(mut g) => g
                    .restart(&r.outlet, &new.gateways, &gateway_server_name(&new))
                    .map(|()| g.registry().sources().len())
                    .map_err(|e| e.to_string()),
                Err(_) => Err("the gateways are unavailable".to_owned()),
            };
            match restarted {
                Ok(n) => info!(sources = n, "gateways restarted with the new settings"),
                Err(e) => {
                    error!("reload of the gateways refused: {e}; the running gateways stay");
                    failed = true;
                    new.gateways.clone_from(&running.gateways);
                }
            }
        }
        let remotes = r.shared.remotes(&running.server, &mut new.server).await;
        running = new;
        Applied {
            changed: remotes.changed,
            failed: remotes.failed || failed,
        }
        .log(plan.is_empty());
    }
}
