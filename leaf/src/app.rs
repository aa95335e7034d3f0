//! What the `leafd` and `hubd` binaries run: parse the nats-server-compatible flags, load the
//! configuration, set up logging, start the server and stop it gracefully on SIGTERM or SIGINT.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing::{error, info};

use crate::auth::{Authenticator, Permissions, Rules, User};
use crate::cli::{self, normalize_args, ServerArgs};
use crate::config::{self, Config, LogLevel};
use crate::gateway::{Gateways, Outlet};
use crate::jetstream::{JetStream, JetStreamOptions};
use crate::leafnode::{LeafOptions, LeafState, LinkDeny, RemoteError, RemoteOptions, RemoteUrl};
use crate::monitor;
use crate::reload;
use crate::server::{Peers, Server, ServerOptions};
use crate::uplink::Uplinks;

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Which binary is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The gateway server.
    Leafd,
    /// The hub server.
    Hubd,
}

impl Flavor {
    /// The binary's name.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Leafd => "leafd",
            Flavor::Hubd => "hubd",
        }
    }
}

/// How long connections get to flush their queues at shutdown.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

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

/// Runs the binary: the `main` of `leafd` and `hubd`.
pub fn main(flavor: Flavor) -> ExitCode {
    // The binary's own name in --help, --version and errors (the crate is `leaf`).
    let parsed = Cli::command()
        .name(flavor.name())
        .bin_name(flavor.name())
        .try_get_matches_from(normalize_args(std::env::args_os()))
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match &cli.command {
        Some(Command::CheckConfig { file }) => return check_config(flavor, file),
        Some(Command::Status { monitor, once }) => {
            let addr = if monitor.contains(':') {
                monitor.clone()
            } else {
                format!("127.0.0.1:{monitor}")
            };
            return match crate::status_cmd::run(&addr, *once) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{}: {e}", flavor.name());
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let cfg = match cli::load(&cli.server) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{}: {e}", flavor.name());
            return ExitCode::from(1);
        }
    };
    let set_level = init_logging(&cfg);
    if let Err(msg) = unsupported_yet(&cfg) {
        error!("{msg}");
        eprintln!("{}: {msg}", flavor.name());
        return ExitCode::from(1);
    }
    // The remotes' files are read for their digest before the server reads them: should one
    // change in between, the next reload reconnects the remote rather than miss it.
    let running = Running::new(cfg.clone());
    let opts = server_options(&cfg, flavor);
    let leaf_opts = leaf_options(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(flavor.name())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", flavor.name());
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let leaf = if leaf_opts.enabled() {
            match LeafState::bind(leaf_opts).await {
                Ok(leaf) => Some(leaf),
                Err(e) => {
                    error!("{e}");
                    eprintln!("{}: {e}", flavor.name());
                    return ExitCode::from(1);
                }
            }
        } else {
            None
        };
        let peers = leaf.clone().map(|l| l as Arc<dyn Peers>);
        let server = match Server::bind_with(opts, peers).await {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                eprintln!("{}: {e}", flavor.name());
                return ExitCode::from(1);
            }
        };
        info!(
            version = env!("CARGO_PKG_VERSION"),
            nats_level = crate::server::info::NATS_FEATURE_LEVEL,
            "{} starting",
            flavor.name()
        );
        let _jetstream = if cfg.jetstream.enabled {
            match JetStream::start(server.shared(), jetstream_options(&cfg, flavor)) {
                Ok(js) => Some(js),
                Err(e) => {
                    error!("{e}");
                    eprintln!("{}: {e}", flavor.name());
                    return ExitCode::from(1);
                }
            }
        } else {
            None
        };
        let uplinks = match (&_jetstream, cfg.uplinks.is_empty()) {
            (_, true) => None,
            (Some(js), false) => {
                match Uplinks::start(server.shared(), leaf.as_deref(), js, &cfg.uplinks).await {
                    Ok(u) => Some(Arc::new(u)),
                    Err(e) => {
                        error!("{e}");
                        eprintln!("{}: {e}", flavor.name());
                        return ExitCode::from(1);
                    }
                }
            }
            (None, false) => None,
        };
        // After JetStream and the uplinks: their streams capture gateway data from the first
        // frame.
        let gateways = match Gateways::start(
            &Outlet::new(server.shared()),
            &cfg,
            &gateway_server_name(&cfg),
        ) {
            Ok(g) => g,
            Err(e) => {
                error!("{e}");
                eprintln!("{}: {e}", flavor.name());
                return ExitCode::from(1);
            }
        };
        let _monitor = match cfg.http_port {
            Some(port) => {
                let sources = monitor::Sources {
                    shared: Arc::downgrade(server.shared()),
                    leaf: leaf.clone(),
                    uplinks: uplinks.clone(),
                    jetstream: _jetstream.clone(),
                    gateways: gateways.registry().clone(),
                };
                match monitor::Monitor::bind(&cfg.host, port, sources).await {
                    Ok(m) => Some(AbortOnDrop(tokio::spawn(m.run()))),
                    Err(e) => {
                        let msg =
                            format!("cannot listen for monitoring on {}:{port}: {e}", cfg.host);
                        error!("{msg}");
                        eprintln!("{}: {msg}", flavor.name());
                        return ExitCode::from(1);
                    }
                }
            }
            None => None,
        };
        // The SIGHUP handler is installed here, before READY=1: a reload right after the
        // start must not kill the process (SIGHUP's default action).
        let gateways = Arc::new(std::sync::Mutex::new(gateways));
        let _reloader = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(hup) => Some(AbortOnDrop(tokio::spawn(reload_on_sighup(
                hup,
                running,
                Reloader {
                    args: cli.server.clone(),
                    set_level,
                    js: _jetstream.clone(),
                    uplinks: uplinks.clone(),
                    gateways: (gateways.clone(), Outlet::new(server.shared())),
                    shared: Arc::downgrade(server.shared()),
                    leaf: leaf.clone(),
                },
            )))),
            Err(e) => {
                error!("cannot install the SIGHUP handler: configuration reloads are off: {e}");
                None
            }
        };
        // The signal handlers before READY=1, so an immediate SIGTERM is not lost.
        let shutdown = shutdown_signal();
        let _watchdog = {
            let shared = Arc::downgrade(server.shared());
            let js = _jetstream.clone();
            // Healthy while the server exists, its subscription index answers and its store
            // reads: a deadlock there, a failing store or a stuck runtime stops the pings and
            // systemd restarts leafd.
            crate::systemd::spawn_watchdog(move || {
                let server_ok = shared.upgrade().is_some_and(|s| {
                    let _ = s.sublist.matches(b"_LEAFD.WATCHDOG");
                    true
                });
                let store_ok = js.as_ref().is_none_or(|js| js.check_store().is_ok());
                server_ok && store_ok
            })
            .map(AbortOnDrop)
        };
        crate::systemd::ready(&format!("accepting clients on {}", server.local_addr()));
        let shutdown = async {
            shutdown.await;
            crate::systemd::stopping();
        };
        server.run(shutdown, DRAIN_LIMIT).await;
        if let Ok(mut g) = gateways.lock() {
            g.stop();
        }
        if let Some(uplinks) = uplinks {
            uplinks.stop().await;
        }
        info!("{} stopped", flavor.name());
        ExitCode::SUCCESS
    })
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
    if cfg.serial.is_empty() && cfg.modbus.is_empty() && cfg.gpio.is_empty() {
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
            cfg,
            &gateway_server_name(cfg),
        )
        .map(drop)
        .map_err(|e| e.to_string())
    })
}

fn check_config(flavor: Flavor, file: &std::path::Path) -> ExitCode {
    match config::load_file(file).and_then(|cfg| cfg.validate().map(|()| cfg)) {
        Ok(cfg) => match unsupported_yet(&cfg).and_then(|()| check_gateways(&cfg)) {
            Ok(()) => {
                println!(
                    "{}: configuration {} is valid",
                    flavor.name(),
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("{}: {}: {msg}", flavor.name(), file.display());
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("{}: {e}", flavor.name());
            ExitCode::from(1)
        }
    }
}

/// Settings that parse but cannot be used: features not built yet (refused with a clear
/// message rather than silently ignored), and leafnode TLS settings whose files cannot be
/// loaded (the error names the key, e.g. `leafnodes.remotes[0].tls.ca_file: cannot read ...`).
fn unsupported_yet(cfg: &Config) -> Result<(), String> {
    for (i, remote) in cfg.leafnodes.remotes.iter().enumerate() {
        if let Some(key) = remote.unsupported.first() {
            return Err(format!(
                "leafnodes.remotes[{i}].{key}: not supported yet (leafnode links are TCP or TLS \
                 with user/password or token in the URL, an nkey seed or a credentials file; \
                 accounts, hub mode and compression are not implemented)"
            ));
        }
        for url in &remote.urls {
            if let Err(e) = RemoteUrl::parse(url) {
                return Err(format!("leafnodes.remotes[{i}]: {e}"));
            }
        }
        crate::leafnode::tls::remote_tls(remote, i).map_err(|e| e.to_string())?;
        crate::leafnode::nkey::remote_auth(remote, i).map_err(|e| e.to_string())?;
    }
    crate::leafnode::tls::listener_tls(&cfg.leafnodes).map_err(|e| e.to_string())?;
    crate::leafnode::nkey::listener_nkeys(&cfg.leafnodes.authorization)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The leafnode settings a configuration describes. URLs that do not parse are skipped
/// (`unsupported_yet` refuses them first). TLS and credentials files are read here again;
/// should one have become unreadable since `unsupported_yet` checked it, the remote (or the
/// listener) is left out with an error in the log rather than run without it.
fn leaf_options(cfg: &Config) -> LeafOptions {
    let ln = &cfg.leafnodes;
    let auth = &ln.authorization;
    let nkeys = crate::leafnode::nkey::listener_nkeys(auth).unwrap_or_else(|e| {
        // `unsupported_yet` refused this already; accept no nkey rather than any.
        error!("{e}: no leaf can authenticate with an nkey");
        crate::leafnode::NkeyUsers::default()
    });
    let password_users: HashMap<String, User> = auth
        .user
        .iter()
        .map(|user| (user, auth.password.clone().unwrap_or_default()))
        .chain(auth.users.iter().filter_map(|u| match u {
            config::LeafUser::Password { user, password } => Some((user, password.clone())),
            config::LeafUser::Nkey(_) => None,
        }))
        .map(|(user, password)| {
            let entry = User {
                password,
                permissions: None,
            };
            (user.clone(), entry)
        })
        .collect();
    let auth = match &auth.token {
        Some(token) => Authenticator::Token(token.clone()),
        None if !password_users.is_empty() => Authenticator::Users(password_users),
        None => Authenticator::Open,
    };
    let (listen, listener_tls) = match crate::leafnode::tls::listener_tls(ln) {
        Ok(server) => (
            cfg.leafnode_listen()
                .map(|(host, port)| (host.to_owned(), port)),
            server.map(Arc::new),
        ),
        Err(e) => {
            error!("{e}: the leafnode listener is disabled");
            (None, None)
        }
    };
    let remotes = ln
        .remotes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match remote_options(r, i) {
            Ok(remote) => Some(remote),
            Err(e) => {
                error!("{e}: leafnodes.remotes[{i}] is disabled");
                None
            }
        })
        .filter(|r| !r.urls.is_empty())
        .collect();
    LeafOptions {
        listen,
        auth,
        nkeys,
        auth_timeout: ln.authorization.timeout,
        remotes,
        reconnect_max: ln.reconnect,
        ping_interval: ln.ping_interval,
        ping_max: ln.ping_max,
        tls: listener_tls,
        ..LeafOptions::default()
    }
}

/// The settings of remote number `index`, its TLS and credentials files read now; the error
/// names the key and the file. URLs that do not parse are skipped (`unsupported_yet` and the
/// configuration's validation refuse them first).
fn remote_options(r: &config::Remote, index: usize) -> Result<RemoteOptions, String> {
    let tls = crate::leafnode::tls::remote_tls(r, index)
        .map_err(|e| e.to_string())?
        .map(Arc::new);
    let auth = crate::leafnode::nkey::remote_auth(r, index)
        .map_err(|e| e.to_string())?
        .map(Arc::new);
    let urls = r
        .urls
        .iter()
        .filter_map(|u| RemoteUrl::parse(u).ok())
        .map(|mut u| {
            // Every URL of a TLS remote is dialled with TLS (and shown as tls://).
            u.tls |= tls.is_some();
            u
        })
        .collect();
    Ok(RemoteOptions {
        urls,
        deny: Arc::new(LinkDeny {
            imports: r.deny_imports.clone(),
            exports: r.deny_exports.clone(),
        }),
        tls,
        auth,
    })
}

/// Where JetStream keeps its store and how it is limited. Without `store_dir`, a directory
/// under the system's temporary directory is used, as nats-server does.
fn jetstream_options(cfg: &Config, flavor: Flavor) -> JetStreamOptions {
    let js = &cfg.jetstream;
    JetStreamOptions {
        store_dir: js
            .store_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(flavor.name()).join("jetstream")),
        domain: js.domain.clone(),
        max_file_bytes: js.max_file_store,
    }
}

/// The server options a configuration describes.
pub fn server_options(cfg: &Config, flavor: Flavor) -> ServerOptions {
    ServerOptions {
        implementation: flavor.name(),
        implementation_version: env!("CARGO_PKG_VERSION"),
        server_name: cfg.server_name.clone(),
        host: cfg.host.clone(),
        port: cfg.port,
        max_payload: cfg.max_payload,
        max_control_line: cfg.max_control_line,
        max_pending: cfg.max_pending,
        max_connections: cfg.max_connections,
        ping_interval: cfg.ping_interval,
        ping_max: cfg.ping_max,
        write_deadline: cfg.write_deadline,
        auth_timeout: cfg.authorization.timeout,
        auth: authenticator(cfg),
    }
}

fn authenticator(cfg: &Config) -> Authenticator {
    let auth = &cfg.authorization;
    if let Some(token) = &auth.token {
        return Authenticator::Token(token.clone());
    }
    let mut users = HashMap::new();
    if let Some(user) = &auth.user {
        users.insert(
            user.clone(),
            User {
                password: auth.password.clone().unwrap_or_default(),
                permissions: None,
            },
        );
    }
    for u in &auth.users {
        let p = &u.permissions;
        let permissions = (!p.is_unrestricted()).then(|| {
            let rules = |l: &config::SubjectPermission| Rules::new(l.allow_list(), &l.deny);
            Arc::new(Permissions {
                publish: rules(&p.publish),
                subscribe: rules(&p.subscribe),
            })
        });
        users.insert(
            u.user.clone(),
            User {
                password: u.password.clone().unwrap_or_default(),
                permissions,
            },
        );
    }
    if users.is_empty() {
        Authenticator::Open
    } else {
        Authenticator::Users(users)
    }
}

/// Changes the log level of the running process (see [`init_logging`]).
type LogLevelSetter = Box<dyn Fn(LogLevel) + Send + Sync>;

/// The tracing filter for a configured level.
fn level_filter(level: LogLevel) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level.as_str() {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

/// Logs to stderr (journald takes it under systemd) at the configured level; returns a
/// function that changes the level later (a reload).
fn init_logging(cfg: &Config) -> Option<LogLevelSetter> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload};
    let (filter, handle) = reload::Layer::new(level_filter(cfg.effective_log_level()));
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .ok()?;
    Some(Box::new(move |level| {
        let _ = handle.modify(|f| *f = level_filter(level));
    }))
}

/// The running gateways and the outlet they publish through (for restarts on reload).
type GatewayHandle = (Arc<std::sync::Mutex<Gateways>>, Outlet);

/// What a reload acts on.
struct Reloader {
    /// The command-line flags, applied over the file again.
    args: ServerArgs,
    /// Changes the log level.
    set_level: Option<LogLevelSetter>,
    /// JetStream, if on (the uplinks' buffers).
    js: Option<JetStream>,
    /// The uplinks, if any.
    uplinks: Option<Arc<Uplinks>>,
    /// The gateways, restarted on a change.
    gateways: GatewayHandle,
    /// The server.
    shared: std::sync::Weak<crate::server::Shared>,
    /// Its leafnode links (their remotes), if any are configured.
    leaf: Option<Arc<LeafState>>,
}

/// The running configuration and the digest of each remote's files
/// ([`reload::remote_files_digest`]) as they were when the remote last (re)started.
struct Running {
    config: Config,
    remote_digests: Vec<u64>,
}

impl Running {
    /// The configuration the server started with; its remotes' files are read now.
    fn new(config: Config) -> Running {
        let remote_digests = config
            .leafnodes
            .remotes
            .iter()
            .enumerate()
            .map(|(i, r)| reload::remote_files_digest(r, i).unwrap_or_default())
            .collect();
        Running {
            config,
            remote_digests,
        }
    }
}

/// Reloads the configuration on every SIGHUP: the file again with the flags over it, then
/// what [`reload::plan`] allows (log level, uplink limits, the gateways restarted with new
/// settings, leafnode remotes reconnected, added or removed; see [`apply_remotes`]);
/// anything else is refused and the running configuration stays.
async fn reload_on_sighup(mut hup: tokio::signal::unix::Signal, mut running: Running, r: Reloader) {
    let (gateways, outlet) = &r.gateways;
    while hup.recv().await.is_some() {
        info!("SIGHUP received: reloading the configuration");
        let mut new = match cli::load(&r.args) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused: {e}; the running configuration stays");
                continue;
            }
        };
        let plan = match reload::plan(&running.config, &new) {
            Ok(p) => p,
            Err(e) => {
                error!("reload refused: {e}");
                continue;
            }
        };
        if let (Some(level), Some(set)) = (plan.log_level, &r.set_level) {
            set(level);
            info!(log_level = level.as_str(), "log level changed");
        }
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
            let restarted = match gateways.lock() {
                Ok(mut g) => g
                    .restart(outlet, &new, &gateway_server_name(&new))
                    .map(|()| g.registry().sources().len())
                    .map_err(|e| e.to_string()),
                Err(_) => Err("the gateways are unavailable".to_owned()),
            };
            match restarted {
                Ok(n) => info!(sources = n, "gateways restarted with the new settings"),
                Err(e) => {
                    error!("reload of the gateways refused: {e}; the running gateways stay");
                    failed = true;
                    new.board.clone_from(&running.config.board);
                    new.boards_dir.clone_from(&running.config.boards_dir);
                    new.serial.clone_from(&running.config.serial);
                    new.modbus.clone_from(&running.config.modbus);
                    new.gpio.clone_from(&running.config.gpio);
                }
            }
        }
        let remotes = match r.shared.upgrade() {
            Some(shared) => apply_remotes(&shared, r.leaf.as_ref(), &mut running, &mut new).await,
            None => RemotesApplied::default(),
        };
        failed |= remotes.failed;
        running.config = new;
        if failed {
            error!("configuration reloaded in part (see above)");
        } else if plan.is_empty() && !remotes.changed {
            info!("configuration reloaded: nothing changed");
        } else {
            info!("configuration reloaded");
        }
    }
}

/// What [`apply_remotes`] did.
#[derive(Debug, Default)]
struct RemotesApplied {
    /// A remote was reconnected, added or removed.
    changed: bool,
    /// A remote's new settings could not be applied (it runs as before).
    failed: bool,
}

/// Applies the remotes part of a reload: a remote whose configuration or files
/// ([`reload::remote_files`], read again now) changed is reconnected with its new settings,
/// remotes added at the end start, remotes removed from the end stop; the others are not
/// touched. A remote whose new settings cannot be loaded (a file unreadable or invalid)
/// keeps running as it was: its running configuration is put back into `new` (an added
/// one, and those after it, are left out of `new`).
async fn apply_remotes(
    shared: &Arc<crate::server::Shared>,
    leaf: Option<&Arc<LeafState>>,
    running: &mut Running,
    new: &mut Config,
) -> RemotesApplied {
    let mut done = RemotesApplied::default();
    let old = running.config.leafnodes.remotes.clone();
    let live = leaf.map_or(0, |l| l.remote_count());
    if live != old.len() {
        // A remote was left out at startup (its files became unreadable in between):
        // indexes do not match the configuration's.
        if new.leafnodes.remotes != old {
            error!(
                "reload of leafnodes.remotes refused: {live} of {} remotes run, restart to \
                 apply it; the running remotes stay",
                old.len()
            );
            new.leafnodes.remotes = old;
            done.failed = true;
        }
        return done;
    }
    let mut i = 0;
    while let Some(remote) = new.leafnodes.remotes.get(i).cloned() {
        let before = old.get(i);
        let files_only = before == Some(&remote);
        let loaded = reload::remote_files_digest(&remote, i).and_then(|digest| {
            if files_only && running.remote_digests.get(i) == Some(&digest) {
                Ok(None)
            } else {
                remote_options(&remote, i).map(|o| Some((digest, o)))
            }
        });
        let result = match loaded {
            Ok(None) => {
                i += 1;
                continue;
            }
            Ok(Some((digest, opts))) => {
                let url = opts
                    .urls
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let set = match leaf {
                    Some(leaf) => leaf.set_remote(shared, i, opts).await,
                    None => Err(RemoteError::NotEnabled),
                };
                match set {
                    Ok(()) => {
                        match (before, files_only) {
                            (None, _) => info!(%url, "leafnodes.remotes[{i}] added: connecting"),
                            (Some(_), true) => info!(
                                %url,
                                "leafnodes.remotes[{i}]: its credentials or TLS files changed; \
                                 reconnecting with them"
                            ),
                            (Some(_), false) => info!(
                                %url,
                                "leafnodes.remotes[{i}]: settings changed; reconnecting with \
                                 the new ones"
                            ),
                        }
                        if let Some(d) = running.remote_digests.get_mut(i) {
                            *d = digest;
                        } else {
                            running.remote_digests.push(digest);
                        }
                        done.changed = true;
                        Ok(())
                    }
                    Err(e) => Err(format!("leafnodes.remotes[{i}]: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            done.failed = true;
            match before {
                Some(b) => {
                    error!("reload of leafnodes.remotes[{i}] refused: {e}; it keeps running with its previous settings");
                    if let Some(slot) = new.leafnodes.remotes.get_mut(i) {
                        slot.clone_from(b);
                    }
                }
                None => {
                    error!("reload of leafnodes.remotes[{i}] refused: {e}; it is not added (nor any remote after it)");
                    new.leafnodes.remotes.truncate(i);
                    break;
                }
            }
        }
        i += 1;
    }
    for i in (new.leafnodes.remotes.len()..old.len()).rev() {
        let removed = match leaf {
            Some(leaf) => leaf.remove_last_remote().await,
            None => Err(RemoteError::NotEnabled),
        };
        match removed {
            Ok(()) => {
                info!("leafnodes.remotes[{i}] removed: its link is closed");
                running.remote_digests.truncate(i);
                done.changed = true;
            }
            Err(e) => {
                error!("reload of leafnodes.remotes[{i}] refused: cannot remove it: {e}");
                done.failed = true;
                // Remotes up to this one still run.
                let kept = new.leafnodes.remotes.len();
                new.leafnodes
                    .remotes
                    .extend(old.iter().take(i + 1).skip(kept).cloned());
                break;
            }
        }
    }
    done
}

/// Installs the SIGTERM and SIGINT handlers now (a signal that arrives before the returned
/// future is first polled is kept, instead of killing the process) and returns a future that
/// completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                error!("cannot install the SIGTERM/SIGINT handlers: {e}");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        config::parse_str(text, config::Format::Toml, "t.toml").unwrap()
    }

    #[test]
    fn leafnode_settings_become_options() {
        let c = cfg(
            "[leafnodes]\nlisten = \"127.0.0.1:0\"\nreconnect = \"3s\"\n\
                     authorization = { user = \"u\", password = \"p\" }\n\
                     remotes = [{ urls = [\"nats-leaf://a:b@h:1\", \"nats://h2\"] }]\n",
        );
        unsupported_yet(&c).unwrap();
        let o = leaf_options(&c);
        assert!(o.enabled());
        assert_eq!(o.listen, Some(("127.0.0.1".to_owned(), 0)));
        assert!(o.auth.required());
        assert_eq!(o.reconnect_max, Duration::from_secs(3));
        assert_eq!(o.remotes.len(), 1);
        assert_eq!(o.remotes[0].urls[0].user.as_deref(), Some("a"));
        assert_eq!(o.remotes[0].urls[1].port, config::DEFAULT_LEAFNODE_PORT);
        assert!(!leaf_options(&Config::default()).enabled());
    }

    #[test]
    fn leafnode_tls_files_are_checked_at_startup() {
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"tls://u:secret@hub:7422\", \
             tls = { ca_file = \"/nonexistent/ca.pem\" } }]\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("leafnodes.remotes[0].tls.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        assert!(!err.contains("secret"));
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nlisten = \"127.0.0.1:0\"\n\
             tls = { cert_file = \"/nonexistent/c.pem\", key_file = \"/nonexistent/k.pem\" }\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("leafnodes.tls.cert_file: cannot read /nonexistent/c.pem"),
            "{err}"
        );
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub\", tls = { insecure = true } }]\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("leafnodes.remotes[0].tls.insecure: not supported"),
            "{err}"
        );
        // A plain remote next to a TLS listener that is not configured: nothing to load.
        unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub\" }]\n",
        ))
        .unwrap();
    }

    #[test]
    fn unimplemented_leafnode_features_are_refused() {
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"wss://u:secret@hub:7422\" }]\n",
        ))
        .unwrap_err();
        assert!(err.contains("wss:// scheme is not supported yet"), "{err}");
        assert!(!err.contains("secret"));
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub\", hub = true }]\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("leafnodes.remotes[0].hub: not supported yet"),
            "{err}"
        );
        // Credentials files are read at startup: a missing one is refused, naming the key.
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub\", credentials = \"/nonexistent/x.creds\" }]\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("leafnodes.remotes[0].credentials: cannot read /nonexistent/x.creds"),
            "{err}"
        );
        let err = unsupported_yet(&cfg(
            "[leafnodes]\nlisten = \":0\"\nauthorization = { users = [{ nkey = \"SUAB\" }] }\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("leafnodes.authorization.users[0].nkey: this is an nkey seed"),
            "{err}"
        );
        assert!(!err.contains("SUAB"), "{err}");
    }
}
