//! What the `leafd` binary runs: the shared server (`leaf_core::app`) with the gateway's own
//! parts: the uplinks, the gateways, systemd notifications, leafd's monitoring pages, the
//! fleet status records, its part of a reload, and the `status` and `check-config` commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use crate::gateway::{Gateways, Outlet};
use clap::Subcommand;
use leaf_core::app::{
    check_config, fail, parse_args, prepare, print_ignored_settings, reload_on_sighup, send_signal,
    unsupported_yet, until_shutdown, AbortOnDrop, Applied, LogLevelSetter, Node, Reload,
    RemoteDigests, SharedReload, DRAIN_LIMIT,
};
use leaf_core::cli::ServerArgs;
use leaf_core::config::ConfigError;
use leaf_core::jetstream::JetStream;
use leaf_core::reload::Refused;
use leaf_core::server::{Server, ServerOptions};
use tracing::{error, info};

use crate::config::{self, Config};
use crate::monitor::LeafPages;
use crate::reload;
use crate::uplink::Uplinks;

/// The binary's name in `--help`, `--version`, logs and errors.
const NAME: &str = "leafd";

/// What `--help` says leafd is.
const ABOUT: &str = "A NATS-compatible server for the industrial edge";

/// leafd's subcommands (without one, the server runs).
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
    let cli = match parse_args::<Command>(NAME, ABOUT) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            return check_config(
                NAME,
                file,
                |path| config::load_file(path).and_then(|cfg| cfg.validate().map(|()| cfg)),
                |cfg| {
                    print_ignored_settings(NAME, &cfg.server);
                    unsupported_yet(&cfg.server).and_then(|()| check_gateways(cfg))
                },
            )
        }
        Some(Command::Status { monitor, once }) => return status(monitor, *once),
        None => {}
    }
    if cli.server.signal.is_some() {
        return send_signal(NAME, &cli.server, || {
            config::load(&cli.server).map(|cfg| cfg.server.pid_file)
        });
    }
    match prepare(NAME, || config::load(&cli.server)) {
        Ok(ready) => {
            let logging = Logging {
                set_level: ready.set_level,
                file: ready.log_file,
            };
            let serving = serve(cli.server, ready.cfg, ready.digests, logging);
            // The pid file goes (with `ready`) once the server has stopped.
            ready.runtime.block_on(serving)
        }
        Err(code) => code,
    }
}

/// How the process logs: the level setter (a reload) and the log file (SIGUSR1), if any.
struct Logging {
    set_level: Option<LogLevelSetter>,
    file: Option<leaf_core::process::logfile::LogFile>,
}

/// `leafd status`: renders the uplinks of the leafd whose monitoring port is `monitor`.
fn status(monitor: &str, once: bool) -> ExitCode {
    let addr = leaf_core::status_page::monitor_addr(monitor);
    match crate::status_cmd::run(&addr, once) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts everything `cfg` configures and serves until SIGTERM or SIGINT, or the end of lame
/// duck mode (SIGUSR2).
async fn serve(
    args: ServerArgs,
    cfg: Config,
    digests: RemoteDigests,
    logging: Logging,
) -> ExitCode {
    let mut node = match Node::start(NAME, &cfg.server).await {
        Ok(node) => node,
        Err(e) => return fail(NAME, e),
    };
    if let Err(e) = node.serve_system(leaf_core::app::system_account(&cfg.server)) {
        return fail(NAME, e);
    }
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
    let _monitor = match node.monitor(&cfg.server, Some(Arc::new(pages))).await {
        Ok(m) => m,
        Err(msg) => return fail(NAME, msg),
    };
    // The fleet status records for the hub, with a leafnode remote.
    let reporter = node.leaf.clone().and_then(|leaf| {
        crate::fleet::Reporter::start(
            &cfg.fleet,
            crate::fleet::Parts {
                shared: Arc::downgrade(node.shared()),
                leaf,
                uplinks: uplinks.clone(),
                sources: gateways.registry().clone(),
                js: node.jetstream.clone(),
            },
        )
    });
    // The SIGHUP handler is installed here, before READY=1: a reload right after the
    // start must not kill the process (SIGHUP's default action).
    let gateways = Arc::new(Mutex::new(gateways));
    let reloader = LeafReload {
        args,
        js: node.jetstream.clone(),
        uplinks: uplinks.clone(),
        gateways: gateways.clone(),
        outlet: Outlet::new(node.shared()),
    };
    // The signal handlers before READY=1, so an immediate SIGTERM is not lost.
    let shutdown = until_shutdown(&node, &cfg.server, logging.file);
    let shared = SharedReload::new(digests, logging.set_level, &node);
    let _reloader = reload_on_sighup(cfg, shared, reloader);
    let _watchdog = watchdog(&node.server, node.jetstream.clone());
    crate::systemd::ready(&format!(
        "accepting clients on {}",
        node.server.local_addr()
    ));
    // Start-up is over: its code need not stay resident.
    leaf_core::process::startup_pages::release_after_start();
    let shutdown = async {
        shutdown.await;
        crate::systemd::stopping();
        // The last record goes out with the links' queues, which the drain flushes.
        if let Some(reporter) = &reporter {
            reporter.publish_final();
        }
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
            let _ = s.global().sublist.matches(b"_LEAFD.WATCHDOG");
            true
        });
        let store_ok = js.as_ref().is_none_or(|js| js.check_store().is_ok());
        server_ok && store_ok
    })
    .map(AbortOnDrop)
}

/// `{server}` in gateway subject templates: `server_name`, else the host name.
fn gateway_server_name(cfg: &Config) -> String {
    cfg.server.server_name.clone().unwrap_or_else(|| {
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

/// leafd's part of a reload: the uplinks' limits and pacing changed in place, the gateways
/// restarted with their new settings (see [`reload::plan`]).
struct LeafReload {
    /// The command-line flags, applied over the file again.
    args: ServerArgs,
    /// JetStream, if on (the uplinks' buffers).
    js: Option<JetStream>,
    /// The uplinks, if any.
    uplinks: Option<Arc<Uplinks>>,
    /// The gateways, restarted on a change.
    gateways: Arc<Mutex<Gateways>>,
    /// What the gateways publish through.
    outlet: Outlet,
}

impl Reload for LeafReload {
    type Config = Config;
    type Plan = reload::Plan;

    fn load(&self) -> Result<Config, ConfigError> {
        config::load(&self.args)
    }

    fn plan(
        &self,
        running: &Config,
        new: &Config,
    ) -> Result<(leaf_core::reload::Plan, reload::Plan), Refused> {
        reload::plan(running, new).map(|plan| (plan.shared(), plan))
    }

    async fn apply(&mut self, plan: &reload::Plan, running: &Config, new: &mut Config) -> Applied {
        let mut failed = false;
        for (index, cfg) in &plan.uplinks {
            if let (Some(js), Some(uplinks)) = (&self.js, &self.uplinks) {
                if let Err(e) = uplinks.reconfigure(js, *index, cfg).await {
                    error!("reload of uplink {}: {e}", cfg.name);
                    failed = true;
                }
            }
        }
        if plan.gateways {
            let restarted = match self.gateways.lock() {
                Ok(mut g) => g
                    .restart(&self.outlet, &new.gateways, &gateway_server_name(new))
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
        Applied {
            changed: !plan.uplinks.is_empty() || plan.gateways,
            failed,
        }
    }
}
