//! What the `hubd` binary runs: the shared server (`leaf_core::app`), its leafnode links,
//! JetStream and the monitoring port with the fleet view (`/fleetz`), reloads of the shared
//! keys on SIGHUP, and the `check-config` and `fleet` commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use leaf_core::app::{
    check_config, fail, parse_args_with, prepare, print_ignored_settings, reload_on_sighup,
    send_signal, unsupported_yet, until_shutdown, Applied, LogLevelSetter, Node, Reload,
    RemoteDigests, SharedReload, DRAIN_LIMIT,
};
use leaf_core::cli::ServerArgs;
use leaf_core::config::{Config, ConfigError};
use leaf_core::process::logfile::LogFile;
use leaf_core::reload::{self, Refused};
use tracing::info;

use std::sync::Arc;

use crate::config::{self, ClusterArgs, HubKeys};
use crate::monitor::HubPages;
use crate::operator::{claims_service, Resolver};
use crate::peers::HubPeers;
use crate::route::Routes;
use leaf_core::server::Peers;

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
    /// Show every gateway that sent this hub a status record (connected or when last seen,
    /// backlog, rate, ETA, alarms), read from the hub's monitoring port (`/fleetz`).
    Fleet {
        /// The monitoring address (`host:port`, or just the port on 127.0.0.1).
        #[arg(long, short = 'm', default_value = "127.0.0.1:8222")]
        monitor: String,
        /// Print the `/fleetz` JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `hubd`.
pub fn main() -> ExitCode {
    let cli = match parse_args_with::<Command, ClusterArgs>(NAME, ABOUT) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(Command::Fleet { monitor, json }) = &cli.command {
        let addr = leaf_core::status_page::monitor_addr(monitor);
        return match crate::fleet::cmd::run(&addr, *json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{NAME}: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check_config(
            NAME,
            file,
            |path| {
                let (cfg, hub) = config::load_file(path)?;
                config::validate(&cfg, &hub)?;
                Ok((cfg, hub))
            },
            |(cfg, hub): &(Config, HubKeys)| {
                print_ignored_settings(NAME, cfg);
                unsupported_yet(cfg)?;
                check_operator(hub)
            },
        );
    }
    if cli.server.signal.is_some() {
        return send_signal(NAME, &cli.server, || {
            config::load(&cli.server, &cli.extra).map(|cfg| cfg.server.pid_file)
        });
    }
    match prepare(NAME, || config::load(&cli.server, &cli.extra)) {
        Ok(ready) => {
            let config::HubConfig { server: cfg, hub } = ready.cfg;
            let serving = serve(
                (cli.server, cli.extra),
                cfg,
                hub,
                ready.digests,
                (ready.set_level, ready.log_file),
            );
            // The pid file goes (with `ready`) once the server has stopped.
            ready.runtime.block_on(serving)
        }
        Err(code) => code,
    }
}

/// Reads what operator mode needs (the operator JWT, the preloaded accounts), for
/// `check-config`.
fn check_operator(hub: &HubKeys) -> Result<(), String> {
    match hub.operator_settings()? {
        Some(settings) => Resolver::start(&settings)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Starts the server, its links, JetStream and monitoring, and serves until SIGTERM or
/// SIGINT, or the end of lame duck mode (SIGUSR2); `logging` is the level setter (a reload)
/// and the log file (SIGUSR1).
async fn serve(
    args: (ServerArgs, ClusterArgs),
    cfg: Config,
    hub: HubKeys,
    digests: RemoteDigests,
    logging: (Option<LogLevelSetter>, Option<LogFile>),
) -> ExitCode {
    let resolver = match hub.operator_settings() {
        Ok(None) => None,
        Ok(Some(settings)) => match Resolver::start(&settings) {
            Ok(r) => Some(r),
            Err(e) => return fail(NAME, e),
        },
        Err(e) => return fail(NAME, e),
    };
    let authority = resolver
        .clone()
        .map(|r| r as Arc<dyn leaf_core::auth::Authority>);
    let routes = match &hub.cluster {
        Some(settings) => match Routes::bind(settings.clone()).await {
            Ok(routes) => Some(routes),
            Err(e) => return fail(NAME, e),
        },
        None => None,
    };
    // A JetStream cluster member: its identity in the route INFO before the routes start.
    let jsc_name = match (&routes, cfg.jetstream.enabled) {
        (Some(routes), true) => match jsc_identity(&cfg, &hub.server_tags, routes) {
            Ok(name) => Some(name),
            Err(e) => return fail(NAME, e),
        },
        _ => None,
    };
    let meta = Arc::new(std::sync::OnceLock::new());
    let pages = Arc::new(HubPages {
        routes: routes.clone(),
        fleet: None,
        meta: meta.clone(),
    });
    let started = match routes {
        Some(routes) => {
            Node::start_with_peers(NAME, &cfg, authority, |leaf| {
                Some(Arc::new(HubPeers { leaf, routes }) as Arc<dyn Peers>)
            })
            .await
        }
        None => Node::start_with(NAME, &cfg, authority).await,
    };
    let mut node = match started {
        Ok(node) => node,
        Err(e) => return fail(NAME, e),
    };
    if let (Some(routes), Some(leaf)) = (&pages.routes, &node.leaf) {
        routes.set_leaf(leaf.clone());
    }
    node.system_pages = Some(pages.clone());
    let _claims = match &resolver {
        Some(r) => match start_operator_mode(r, &cfg, &mut node) {
            Ok(subs) => subs,
            Err(e) => return fail(NAME, e),
        },
        None => match node.serve_system(leaf_core::app::system_account(&cfg)) {
            Ok(()) => Vec::new(),
            Err(e) => return fail(NAME, e),
        },
    };
    // The fleet view: the leaves' status records, on the monitoring port.
    let store_dir = cfg.jetstream.enabled.then(|| {
        let state = std::env::var_os("STATE_DIRECTORY");
        leaf_core::app::jetstream_options(&cfg, state.as_deref()).map(|o| o.store_dir)
    });
    let fleet = crate::fleet::Fleet::start(
        node.shared(),
        node.leaf.clone(),
        store_dir.and_then(Result::ok).as_deref(),
    );
    let (jsc_stop, jsc_stopped) = tokio::sync::watch::channel(false);
    if let (Some(name), Some(routes), Some(Ok(store_dir))) =
        (jsc_name, &pages.routes, jsc_store_dir(&cfg))
    {
        match start_meta(&node, name, routes.clone(), store_dir, jsc_stopped).await {
            Ok(group) => {
                // Replicated streams (num_replicas > 1) go to the meta group.
                let hook = crate::jsc::replication::ClusterStreams(Arc::downgrade(&group));
                let _ = node.shared().js_replication.set(Arc::new(hook));
                // This member's copies of the replicated streams assigned to it.
                if let Some(engines) = &node.jetstreams {
                    crate::jsc::copies::start(
                        Arc::downgrade(&group),
                        engines.clone(),
                        jsc_stop.subscribe(),
                    );
                    // The R1 streams assigned to this member; requests forwarded to it.
                    crate::jsc::r1::start(
                        Arc::downgrade(&group),
                        engines.clone(),
                        jsc_stop.subscribe(),
                    );
                }
                let _ = meta.set(group);
            }
            Err(e) => return fail(NAME, e),
        }
    }
    let pages = Arc::new(HubPages {
        routes: pages.routes.clone(),
        fleet: Some(crate::fleet::pages::FleetPages(fleet.fleet.clone())),
        meta: meta.clone(),
    });
    let _monitor = match node.monitor(&cfg, Some(pages)).await {
        Ok(m) => m,
        Err(msg) => return fail(NAME, msg),
    };
    let (set_level, log_file) = logging;
    let shutdown = until_shutdown(&node, &cfg, log_file);
    let shared = SharedReload::new(digests, set_level, &node);
    let _reloader = reload_on_sighup(cfg, shared, HubReload { args, hub });
    // Start-up is over: its code need not stay resident.
    leaf_core::process::startup_pages::release_after_start();
    node.server.run(shutdown, DRAIN_LIMIT).await;
    let _ = jsc_stop.send(true);
    if let Some(group) = meta.get() {
        group.shutdown().await;
    }
    fleet.fleet.save();
    info!("{NAME} stopped");
    ExitCode::SUCCESS
}

/// The name of this server in its JetStream cluster: JetStream in a cluster needs
/// `server_name` and `cluster.name`, as nats-server's; the route INFO then carries the Raft
/// node id derived from the name (`leaf_jsc`), by which hubd members recognise each other,
/// and its `server_tags` (placement).
fn jsc_identity(cfg: &Config, tags: &[String], routes: &Routes) -> Result<String, String> {
    let name = cfg
        .server_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("server_name: JetStream in a cluster needs a server name (as nats-server)")?;
    if routes.settings.name.as_deref().is_none_or(str::is_empty) {
        return Err(
            "cluster.name: JetStream in a cluster needs a cluster name (as nats-server)".into(),
        );
    }
    routes.set_jsc(crate::route::JscInfo {
        node_id: crate::jsc::node_id::node_id(&name),
        tags: tags.to_vec(),
    });
    Ok(name)
}

/// The JetStream store directory (the meta group's `raft.redb` goes there).
fn jsc_store_dir(cfg: &Config) -> Option<Result<PathBuf, String>> {
    let state = std::env::var_os("STATE_DIRECTORY");
    cfg.jetstream
        .enabled
        .then(|| leaf_core::app::jetstream_options(cfg, state.as_deref()).map(|o| o.store_dir))
}

/// Starts the meta group of this JetStream cluster member, its transport in the system
/// account.
async fn start_meta(
    node: &Node,
    server_name: String,
    routes: Arc<Routes>,
    store_dir: PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<crate::jsc::MetaGroup>, String> {
    let shared = node.shared();
    let system = shared
        .system
        .account_name()
        .ok_or("JetStream cluster: the system account is not served")?;
    let system = shared.accounts.add(&system);
    crate::jsc::MetaGroup::start(
        crate::jsc::MetaOptions {
            server_name,
            cluster_name: routes.cluster_name.clone(),
            store_dir,
            routes,
            system,
        },
        stop,
    )
    .await
}

/// The resolver's part once the server is bound: every account it knows is applied (limits,
/// JetStream, imports), it may close revoked users' connections, the system account is
/// served (the operator's, unless `system_account` names one), and a full resolver takes
/// claims updates there.
fn start_operator_mode(
    resolver: &Arc<Resolver>,
    cfg: &Config,
    node: &mut Node,
) -> Result<Vec<leaf_core::server::SubRef>, String> {
    let system = cfg
        .system_account
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| resolver.operator().nats.system_account.clone());
    resolver.attach(
        node.shared(),
        node.jetstreams.clone(),
        Some(system.clone()).filter(|s| !s.is_empty()),
    );
    if system.is_empty() {
        info!("operator mode without a system account: claims updates are not served");
        node.serve_system(leaf_core::system::DEFAULT_SYSTEM_ACCOUNT)?;
        return Ok(Vec::new());
    }
    node.serve_system(&system)?;
    let shared = node.shared();
    let account = shared.accounts.add(&system);
    claims_service::start(resolver, shared, &account)
}

/// hubd's part of a reload: the shared keys only (the log level, the leafnode remotes, who may
/// connect; anything else is refused), and operator mode's keys cannot change.
struct HubReload {
    /// The command-line flags, applied over the file again.
    args: (ServerArgs, ClusterArgs),
    /// hubd's own keys as they run.
    hub: HubKeys,
}

impl Reload for HubReload {
    type Config = Config;
    type Plan = ();

    fn load(&self) -> Result<Config, ConfigError> {
        let config::HubConfig { server: cfg, hub } = config::load(&self.args.0, &self.args.1)?;
        if hub.cluster != self.hub.cluster {
            return Err(ConfigError::invalid(
                "cluster",
                "the cluster's settings cannot change while running (restart to apply them)",
            ));
        }
        if hub != self.hub {
            return Err(ConfigError::invalid(
                "operator",
                "operator mode's keys (operator, resolver, resolver_preload) cannot change \
                 while running (restart to apply them; accounts are updated with claims \
                 updates)",
            ));
        }
        Ok(cfg)
    }

    fn plan(&self, running: &Config, new: &Config) -> Result<(reload::Plan, ()), Refused> {
        reload::plan(running, new).map(|plan| (plan, ()))
    }

    async fn apply(&mut self, _: &(), _: &Config, _: &mut Config) -> Applied {
        Applied::default()
    }
}
