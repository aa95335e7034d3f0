//! The runtime pieces both binaries' `main` are built from: flags and configuration, logging
//! (to stderr or a log file), the pid file, `--signal`, starting the server with its leafnode
//! links and JetStream ([`Node`]), the monitoring port, reloading the shared keys on SIGHUP
//! ([`SharedReload`]), and stopping gracefully on SIGTERM or SIGINT or after lame duck mode
//! (SIGUSR2; [`until_shutdown`], see [`crate::process`]). `leafd` (the `leaf` crate) and `hubd` (the `hub` crate) each wire them with what
//! they add.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Weak};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing::{error, info, warn};

use crate::auth::{Authenticator, Permissions, Rules, User};
use crate::cli::ServerArgs;
use crate::config::{self, Config, ConfigError, LogLevel};
use crate::jetstream::accounts::AccountJetStreams;
use crate::jetstream::{JetStream, JetStreamOptions};
use crate::leafnode::{LeafOptions, LeafState, LinkDeny, RemoteError, RemoteOptions, RemoteUrl};
use crate::monitor::{self, Monitor, Pages};
use crate::process::logfile::LogFile;
use crate::process::pidfile::PidFile;
use crate::reload::{self, Refused};
use crate::server::{Peers, Server, ServerOptions, Shared};

/// How long connections get to flush their queues at shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Aborts a background task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reports a fatal error (in the log and on stderr, prefixed with the binary's `name`) and
/// returns the exit code for it.
pub fn fail(name: &str, message: impl Display) -> ExitCode {
    error!("{message}");
    eprintln!("{name}: {message}");
    ExitCode::from(1)
}

/// A binary's command line: nats-server's flags ([`ServerArgs`]), `-v`/`--version`, the
/// binary's own flags `X` (hubd's `--cluster`, ...) and its own subcommands `C`.
#[derive(Debug, Parser)]
#[command(version, disable_version_flag = true)]
pub struct Cli<C: Subcommand, X: clap::Args = NoArgs> {
    /// Print the version and exit (`-V` is nats-server's `--trace`).
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// The subcommand, if any (without one the server runs).
    #[command(subcommand)]
    pub command: Option<C>,
    /// The server flags.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The binary's own flags.
    #[command(flatten)]
    pub extra: X,
}

/// No flags besides the shared ones.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NoArgs {}

/// Parses the command line of binary `name` (its name in `--help`, `--version` and errors;
/// `about` heads `--help`). nats-server's Go-style flags are accepted
/// ([`crate::cli::normalize_args`]).
/// `Err` is the exit code to leave with: 0 after `--help` or `--version`, 2 for a bad
/// command line.
pub fn parse_args<C: Subcommand>(
    name: &'static str,
    about: &'static str,
) -> Result<Cli<C>, ExitCode> {
    parse_args_with::<C, NoArgs>(name, about)
}

/// [`parse_args`] for a binary with flags of its own (`X`).
pub fn parse_args_with<C: Subcommand, X: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    about: &'static str,
) -> Result<Cli<C, X>, ExitCode> {
    let cmd = Cli::<C, X>::command()
        .name(name)
        .bin_name(name)
        .about(about);
    let args = crate::cli::normalize_args_for(&cmd, std::env::args_os());
    cmd.try_get_matches_from(args)
        .and_then(|matches| Cli::<C, X>::from_arg_matches(&matches))
        .map_err(|e| {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        })
}

/// Most threads the runtime starts for blocking work (store reads of uplinks and resumed
/// streams): more such work waits for one of them. With the workers (one per core), the
/// store's writer and leafd's heap trimmer, a server stays far below the `TasksMax=` of
/// leafd's systemd unit (tokio's default would allow 512).
pub const MAX_BLOCKING_THREADS: usize = 32;

/// The multi-threaded runtime, its threads named after the binary.
pub fn runtime(name: &'static str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .map_err(|e| {
            eprintln!("{name}: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

/// What a binary has once its configuration is loaded, before anything runs.
pub struct Prepared<C> {
    /// The configuration (the file with the flags over it, validated).
    pub cfg: C,
    /// Changes the log level (on a reload).
    pub set_level: Option<LogLevelSetter>,
    /// The log file (`log_file`), which SIGUSR1 reopens; `None`: logging to stderr.
    pub log_file: Option<LogFile>,
    /// The pid file (`pid_file`), removed when this is dropped (keep it to the end of
    /// `main`).
    pub pid_file: Option<PidFile>,
    /// The remotes' files as they were before the server read them.
    pub digests: RemoteDigests,
    /// The runtime to serve on.
    pub runtime: tokio::runtime::Runtime,
}

/// Loads binary `name`'s configuration with `load`, sets up logging (to `log_file` if set),
/// refuses the settings that parse but cannot be used ([`unsupported_yet`]), writes the pid
/// file (`pid_file`), reads the remotes' files for their digest ([`RemoteDigests::read`]) and
/// builds the runtime. `Err` is the exit code to leave with, the problem reported.
pub fn prepare<C: AsRef<Config>>(
    name: &'static str,
    load: impl FnOnce() -> Result<C, ConfigError>,
) -> Result<Prepared<C>, ExitCode> {
    let cfg = load().map_err(|e| {
        eprintln!("{name}: {e}");
        ExitCode::from(1)
    })?;
    let log_file = match &cfg.as_ref().log_file {
        Some(path) => Some(LogFile::open(path).map_err(|e| {
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        })?),
        None => None,
    };
    let set_level = init_logging_to(cfg.as_ref(), log_file.clone());
    if let Some(warning) = ignored_settings_warning(cfg.as_ref()) {
        warn!("{warning}");
    }
    if let Err(msg) = unsupported_yet(cfg.as_ref()) {
        return Err(fail(name, msg));
    }
    let pid_file = match &cfg.as_ref().pid_file {
        Some(path) => Some(PidFile::write(path).map_err(|e| fail(name, e))?),
        None => None,
    };
    let digests = RemoteDigests::read(cfg.as_ref());
    let runtime = runtime(name)?;
    Ok(Prepared {
        cfg,
        set_level,
        log_file,
        pid_file,
        digests,
        runtime,
    })
}

/// The one warning naming the nats-server settings of the file that are accepted and ignored
/// (they change nothing a client sees: `logtime`, `syslog`, ...; see
/// `config::natsconf::keys`), if there are any.
pub fn ignored_settings_warning(cfg: &Config) -> Option<String> {
    (!cfg.ignored_settings.is_empty()).then(|| {
        format!(
            "ignoring nats-server settings that are not implemented and change nothing \
             clients see: {}",
            cfg.ignored_settings.join(", ")
        )
    })
}

/// `check-config`'s form of [`ignored_settings_warning`]: printed to stderr.
pub fn print_ignored_settings(name: &str, cfg: &Config) {
    if let Some(warning) = ignored_settings_warning(cfg) {
        eprintln!("{name}: warning: {warning}");
    }
}

/// `check-config FILE`: loads and validates `file` with the binary's `load`, then `check`s
/// what only starting can tell; prints the verdict (exit code 0: valid, 1: the error).
pub fn check_config<C>(
    name: &str,
    file: &Path,
    load: impl FnOnce(&Path) -> Result<C, ConfigError>,
    check: impl FnOnce(&C) -> Result<(), String>,
) -> ExitCode {
    match load(file) {
        Ok(cfg) => match check(&cfg) {
            Ok(()) => {
                println!("{name}: configuration {} is valid", file.display());
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("{name}: {}: {msg}", file.display());
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// What both binaries run: the server, its leafnode links (if any are configured) and
/// JetStream (if enabled).
pub struct Node {
    /// The server, bound and not yet running.
    pub server: Server,
    /// Its leafnode links.
    pub leaf: Option<Arc<LeafState>>,
    /// JetStream of the global account, started (see [`account_jetstreams`]).
    pub jetstream: Option<JetStream>,
    /// JetStream of each configured account that has it, by account name.
    pub account_jetstreams: Vec<(String, JetStream)>,
    /// Every account's JetStream (those above, and the 10039 answers of accounts without):
    /// where accounts get theirs at run time, e.g. when hubd's resolver loads an account JWT
    /// that enables JetStream (`None`: the server has no JetStream).
    pub jetstreams: Option<Arc<AccountJetStreams>>,
    /// The system account's requests and advisories, once [`Node::serve_system`] started
    /// them.
    pub system: Option<crate::system::Service>,
    /// The binary's pages the system account's requests see too (`$SYS.REQ.SERVER.PING.JSZ`
    /// and `HEALTHZ` as the monitoring port's), set before [`Node::serve_system`].
    pub system_pages: Option<Arc<dyn Pages>>,
}

impl Node {
    /// Binds the leafnode listener and the client listener, then starts JetStream: the
    /// server accepts no client yet (see [`Server::run`]). `name` is the binary's, for INFO,
    /// the logs. The error is ready to report ([`fail`]).
    pub async fn start(name: &'static str, cfg: &Config) -> Result<Node, String> {
        Self::start_with(name, cfg, None).await
    }

    /// [`Node::start`], with `authority` deciding who may connect instead of the
    /// configuration's users (hubd's operator mode): on the client port, and on the leafnode
    /// listener unless it has its own `leafnodes.authorization`.
    pub async fn start_with(
        name: &'static str,
        cfg: &Config,
        authority: Option<Arc<dyn crate::auth::Authority>>,
    ) -> Result<Node, String> {
        Self::start_with_peers(name, cfg, authority, |leaf| {
            leaf.map(|l| l as Arc<dyn Peers>)
        })
        .await
    }

    /// [`Node::start_with`], with `peers` choosing the server's links to other servers from
    /// its leafnode links (hubd adds its cluster's routes: see `hub::peers`).
    pub async fn start_with_peers(
        name: &'static str,
        cfg: &Config,
        authority: Option<Arc<dyn crate::auth::Authority>>,
        peers: impl FnOnce(Option<Arc<LeafState>>) -> Option<Arc<dyn Peers>>,
    ) -> Result<Node, String> {
        let clients = match &authority {
            Some(a) => Authenticator::Delegated(a.clone()),
            None => authenticator(cfg),
        };
        let leaf_opts = leaf_options_with(cfg, clients.clone());
        let leaf = if leaf_opts.enabled() {
            Some(
                LeafState::bind(leaf_opts)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let js_options = if cfg.jetstream.enabled {
            let state = std::env::var_os("STATE_DIRECTORY");
            Some(jetstream_options(cfg, state.as_deref())?)
        } else {
            None
        };
        let peers = peers(leaf.clone());
        let mut options = server_options(cfg, name);
        options.auth = clients;
        options.tls = crate::server::tls::listener(cfg.tls.as_ref()).map_err(|e| e.to_string())?;
        #[cfg(feature = "websocket")]
        {
            options.websocket = crate::websocket::WsListener::from_config(cfg, leaf.clone())?;
        }
        let server = Server::bind_with(options, peers)
            .await
            .map_err(|e| e.to_string())?;
        info!(
            version = env!("CARGO_PKG_VERSION"),
            nats_level = crate::server::info::NATS_FEATURE_LEVEL,
            "{name} starting"
        );
        let mut jetstream = None;
        let mut account_jetstreams = Vec::new();
        let mut jetstreams = None;
        if let Some(options) = js_options {
            let shared = server.shared();
            let registry = Arc::new(AccountJetStreams::new(shared, options.clone()));
            for (name, options) in account_jetstream_options(cfg, &options) {
                let account = match &name {
                    None => shared.global().clone(),
                    Some(name) => shared
                        .accounts
                        .get(name)
                        .ok_or_else(|| format!("accounts.{name}: unknown account"))?,
                };
                let js = JetStream::start(shared, &account, options).map_err(|e| match &name {
                    None => e.to_string(),
                    Some(name) => format!("accounts.{name}.jetstream: {e}"),
                })?;
                registry.insert(account.name(), js.clone());
                match name {
                    None => jetstream = Some(js),
                    Some(name) => account_jetstreams.push((name, js)),
                }
            }
            // Accounts without JetStream say so to whoever calls their API.
            for account in shared.accounts.all() {
                registry.refuse(&account).map_err(|e| e.to_string())?;
            }
            jetstreams = Some(registry);
        }
        Ok(Node {
            server,
            leaf,
            jetstream,
            account_jetstreams,
            jetstreams,
            system: None,
            system_pages: None,
        })
    }

    /// What the monitoring pages (and the system account's requests) read, with the
    /// binary's own `pages`.
    pub fn sources(&self, pages: Option<Arc<dyn Pages>>) -> monitor::Sources {
        monitor::Sources {
            shared: Arc::downgrade(self.shared()),
            leaf: self.leaf.clone(),
            jetstream: self.jetstream.clone(),
            jetstreams: self.jetstreams.clone(),
            pages,
            js_accounts: self
                .account_jetstreams
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }

    /// Serves the system account `account`'s requests and advisories (see [`crate::system`]),
    /// instead of any served before; the account is created if the server does not have it.
    pub fn serve_system(&mut self, account: &str) -> Result<(), String> {
        self.system = None;
        let service = crate::system::Service::start(
            self.sources(self.system_pages.clone()),
            self.shared(),
            account,
        )?;
        info!(account = %account, "system account served");
        self.system = Some(service);
        Ok(())
    }

    /// The server's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        self.server.shared()
    }

    /// Starts the monitoring port if `http_port` (or `https_port`, with the `tls` table's
    /// certificate) is set, with the binary's own `pages`; the listener stops when the
    /// returned guard is dropped.
    pub async fn monitor(
        &self,
        cfg: &Config,
        pages: Option<Arc<dyn Pages>>,
    ) -> Result<Option<AbortOnDrop>, String> {
        let (port, https) = match (cfg.http_port, cfg.https_port, &cfg.tls) {
            (Some(port), _, _) => (port, None),
            (None, Some(port), Some(tls)) => (
                port,
                Some(crate::server::tls::https_acceptor(tls, "tls").map_err(|e| e.to_string())?),
            ),
            _ => return Ok(None),
        };
        let sources = self.sources(pages);
        match Monitor::bind(&cfg.host, port, sources, https).await {
            Ok(m) => Ok(Some(AbortOnDrop(tokio::spawn(m.run())))),
            Err(e) => Err(format!(
                "cannot listen for monitoring on {}:{port}: {e}",
                cfg.host
            )),
        }
    }
}

/// Settings that parse but cannot be used: features not built yet (refused with a clear
/// message rather than silently ignored), and leafnode TLS settings whose files cannot be
/// loaded (the error names the key, e.g. `leafnodes.remotes[0].tls.ca_file: cannot read ...`).
pub fn unsupported_yet(cfg: &Config) -> Result<(), String> {
    for (i, remote) in cfg.leafnodes.remotes.iter().enumerate() {
        if let Some(key) = remote.unsupported.first() {
            return Err(format!(
                "leafnodes.remotes[{i}].{key}: not supported yet (leafnode links are TCP, TLS \
                 or WebSocket with user/password or token in the URL, an nkey seed or a \
                 credentials file; hub mode, compression and unmasked WebSocket frames are not \
                 implemented)"
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
    crate::server::tls::listener(cfg.tls.as_ref()).map_err(|e| e.to_string())?;
    #[cfg(not(feature = "tls"))]
    if cfg.https_port.is_some() {
        let key = "https_port".to_owned();
        return Err(crate::tls::TlsError::NotBuilt { key }.to_string());
    }
    #[cfg(feature = "websocket")]
    crate::websocket::WsListener::from_config(cfg, None)?;
    crate::leafnode::nkey::listener_nkeys(&cfg.leafnodes.authorization)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The leafnode settings a configuration describes. URLs that do not parse are skipped
/// (`unsupported_yet` refuses them first). TLS and credentials files are read here again;
/// should one have become unreadable since `unsupported_yet` checked it, the remote (or the
/// listener) is left out with an error in the log rather than run without it.
///
/// Who may connect to the listener: `leafnodes.authorization` (its user, token or users, each
/// user with its `permissions`); without it, the client users (`authorization`: users with
/// their permissions, the single user or the token), as nats-server checks leaves against
/// its client users then; a leaf that presents no credentials is refused whenever either asks
/// for them (nats-server accepts it: see `LeafOptions::clients_auth`). Only without both is
/// the listener open.
pub fn leaf_options(cfg: &Config) -> LeafOptions {
    leaf_options_with(cfg, authenticator(cfg))
}

/// [`leaf_options`] with `clients` as the client users leaves log in with when the listener
/// has no `leafnodes.authorization` of its own.
pub fn leaf_options_with(cfg: &Config, clients: Authenticator) -> LeafOptions {
    let ln = &cfg.leafnodes;
    let auth = &ln.authorization;
    let nkeys = crate::leafnode::nkey::listener_nkeys(auth).unwrap_or_else(|e| {
        // `unsupported_yet` refused this already; accept no nkey rather than any.
        error!("{e}: no leaf can authenticate with an nkey");
        crate::leafnode::NkeyUsers::default()
    });
    let mut nkey_permissions = HashMap::new();
    let mut password_users: HashMap<String, User> = auth
        .user
        .iter()
        .map(|user| {
            let entry = User {
                password: auth.password.clone().unwrap_or_default(),
                nkey: false,
                permissions: None,
                account: None,
            };
            (user.clone(), entry)
        })
        .collect();
    let mut nkey_accounts = HashMap::new();
    for u in &auth.users {
        let permissions = permissions_of(&u.permissions);
        let account: Option<Arc<str>> = u.account.as_deref().map(Arc::from);
        match &u.login {
            config::LeafLogin::Password { user, password } => {
                let entry = User {
                    password: password.clone(),
                    nkey: false,
                    permissions,
                    account,
                };
                password_users.insert(user.clone(), entry);
            }
            config::LeafLogin::Nkey(key) => {
                if let Some(permissions) = permissions {
                    nkey_permissions.insert(key.trim().to_owned(), permissions);
                }
                if let Some(account) = account {
                    nkey_accounts.insert(key.trim().to_owned(), account);
                }
            }
        }
    }
    let own = auth.token.is_some() || !password_users.is_empty() || !nkeys.is_empty();
    let auth = match &auth.token {
        Some(token) => Authenticator::Token(token.clone()),
        None if !password_users.is_empty() => Authenticator::Users(password_users),
        None if !own => clients,
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
        clients_auth: !own && auth.required(),
        auth,
        nkeys,
        nkey_permissions,
        nkey_accounts,
        auth_timeout: ln.authorization.timeout,
        remotes,
        reconnect_max: ln.reconnect,
        ping_interval: ln.ping_interval,
        ping_max: ln.ping_max,
        tls: listener_tls,
        max_subscriptions: cfg
            .max_subscriptions
            .unwrap_or(config::DEFAULT_LINK_MAX_SUBSCRIPTIONS),
        max_connections: ln.max_connections,
        ..LeafOptions::default()
    }
}

/// The settings of remote number `index`, its TLS and credentials files read now; the error
/// names the key and the file. URLs that do not parse are skipped (`unsupported_yet` and the
/// configuration's validation refuse them first).
pub fn remote_options(r: &config::Remote, index: usize) -> Result<RemoteOptions, String> {
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
            ..LinkDeny::default()
        }),
        tls,
        auth,
        account: r.account.clone(),
    })
}

/// Where JetStream keeps its store and how it is limited. Without `store_dir`, the store goes
/// under systemd's state directory (`state_directory`: `$STATE_DIRECTORY`, the first of its
/// paths) as `jetstream/`; without either JetStream does not start. Unlike nats-server there
/// is no default under the temporary directory: a predictable path there can be created
/// first, or read, by any local user.
pub fn jetstream_options(
    cfg: &Config,
    state_directory: Option<&std::ffi::OsStr>,
) -> Result<JetStreamOptions, String> {
    let js = &cfg.jetstream;
    let state = state_directory
        .and_then(|s| std::env::split_paths(s).next())
        .filter(|p| p.is_absolute());
    let store_dir = match (&js.store_dir, state) {
        (Some(dir), _) => dir.clone(),
        (None, Some(state)) => state.join("jetstream"),
        (None, None) => {
            return Err(
                "JetStream needs a store directory: set `jetstream.store_dir` \
                        (or `-sd DIR`), or run under systemd with StateDirectory=; \
                        there is no default under the temporary directory"
                    .to_string(),
            )
        }
    };
    Ok(JetStreamOptions {
        store_dir,
        domain: js.domain.clone(),
        max_file_bytes: js.max_file_store,
        max_memory_bytes: js.max_memory_store,
        max_streams: None,
        max_consumers: None,
    })
}

/// Which accounts get a JetStream, each with its options (`None`: the global account): as in
/// nats-server, the global account alone when no configured account enables JetStream, else
/// exactly the accounts that do. A configured account's store is `accounts/<name>` under the
/// store directory, limited by its own `max_file`/`max_mem` where set, else by the server's.
pub fn account_jetstream_options(
    cfg: &Config,
    server: &JetStreamOptions,
) -> Vec<(Option<String>, JetStreamOptions)> {
    let enabled: Vec<_> = cfg
        .accounts
        .iter()
        .filter(|(_, a)| a.jetstream.enabled)
        .collect();
    if enabled.is_empty() {
        return vec![(None, server.clone())];
    }
    enabled
        .into_iter()
        .map(|(name, account)| {
            let js = &account.jetstream;
            let options = JetStreamOptions {
                store_dir: server.store_dir.join("accounts").join(name),
                domain: server.domain.clone(),
                max_file_bytes: js.max_file.or(server.max_file_bytes),
                max_memory_bytes: js.max_memory.or(server.max_memory_bytes),
                max_streams: js.max_streams,
                max_consumers: js.max_consumers,
            };
            (Some(name.clone()), options)
        })
        .collect()
}

/// The system account's name: `system_account`, else `$SYS`.
pub fn system_account(cfg: &Config) -> &str {
    cfg.system_account
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(crate::system::DEFAULT_SYSTEM_ACCOUNT)
}

/// The server options a configuration describes.
pub fn server_options(cfg: &Config, name: &'static str) -> ServerOptions {
    ServerOptions {
        implementation: name,
        implementation_version: env!("CARGO_PKG_VERSION"),
        server_name: cfg.server_name.clone(),
        host: cfg.host.clone(),
        port: cfg.port,
        max_payload: cfg.max_payload,
        max_control_line: cfg.max_control_line,
        max_pending: cfg.max_pending,
        max_connections: cfg.max_connections,
        max_subscriptions: cfg
            .max_subscriptions
            .unwrap_or(config::DEFAULT_MAX_SUBSCRIPTIONS),
        ping_interval: cfg.ping_interval,
        ping_max: cfg.ping_max,
        write_deadline: cfg.write_deadline,
        auth_timeout: cfg.authorization.timeout,
        auth: authenticator(cfg),
        accounts: cfg.accounts.keys().cloned().collect(),
        imports: import_rules(cfg),
        // Read from the files by `Node::start` (an error there refuses the start).
        tls: None,
        #[cfg(feature = "websocket")]
        websocket: None,
    }
}

/// The imports of every account, with the response settings of the export each falls in
/// (the configuration's checks made sure there is one).
pub fn import_rules(cfg: &Config) -> Vec<crate::server::account::imports::ImportRule> {
    use crate::server::account::imports::ImportRule;
    use crate::server::account::settings::{ResponseType, DEFAULT_RESPONSE_THRESHOLD};
    let mut rules = Vec::new();
    for (importer, account) in &cfg.accounts {
        for import in &account.imports {
            let export = cfg.accounts.get(&import.account).and_then(|a| {
                a.exports.iter().find(|e| {
                    e.kind == import.kind
                        && leaf_proto::subject::is_subset(
                            import.subject.as_bytes(),
                            e.subject.as_bytes(),
                        )
                })
            });
            rules.push(ImportRule {
                kind: import.kind,
                exporter: import.account.clone(),
                importer: importer.clone(),
                subject: import.subject.clone(),
                local: import.local.clone(),
                response_type: export.map_or(ResponseType::Singleton, |e| e.response_type),
                response_threshold: export
                    .map_or(DEFAULT_RESPONSE_THRESHOLD, |e| e.response_threshold),
            });
        }
    }
    rules
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
                nkey: false,
                permissions: None,
                account: None,
            },
        );
    }
    let global = auth.users.iter().map(|u| (u, None));
    let in_accounts = cfg.accounts.iter().flat_map(|(name, account)| {
        let name: Arc<str> = Arc::from(name.as_str());
        account.users.iter().map(move |u| (u, Some(name.clone())))
    });
    // User names are unique across `authorization` and every account (the configuration's
    // validation refuses duplicates).
    for (u, account) in global.chain(in_accounts) {
        // An nkey user is found by its public key, a password user by its name.
        let key = u.nkey.clone().unwrap_or_else(|| u.user.clone());
        users.insert(
            key,
            User {
                password: u.password.clone().unwrap_or_default(),
                nkey: u.nkey.is_some(),
                permissions: permissions_of(&u.permissions),
                account,
            },
        );
    }
    if users.is_empty() {
        Authenticator::Open
    } else {
        Authenticator::Users(users)
    }
}

/// The permissions a user entry describes (`None`: unrestricted).
fn permissions_of(p: &config::Permissions) -> Option<Arc<Permissions>> {
    (!p.is_unrestricted()).then(|| {
        let rules = |l: &config::SubjectPermission| Rules::new(l.allow_list(), &l.deny);
        Arc::new(Permissions {
            publish: rules(&p.publish),
            subscribe: rules(&p.subscribe),
        })
    })
}

/// Changes the log level of the running process (see [`init_logging`]).
pub type LogLevelSetter = Box<dyn Fn(LogLevel) + Send + Sync>;

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
pub fn init_logging(cfg: &Config) -> Option<LogLevelSetter> {
    init_logging_to(cfg, None)
}

/// [`init_logging`], to `file` instead of stderr when given (see
/// [`crate::process::logfile`]).
pub fn init_logging_to(cfg: &Config, file: Option<LogFile>) -> Option<LogLevelSetter> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload};
    let (filter, handle) = reload::Layer::new(level_filter(cfg.effective_log_level()));
    let layer = match file {
        Some(file) => fmt::layer()
            .with_writer(file)
            .with_target(false)
            .with_ansi(false)
            .boxed(),
        None => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .ok()?;
    Some(Box::new(move |level| {
        let _ = handle.modify(|f| *f = level_filter(level));
    }))
}

/// The digest of each remote's files ([`reload::remote_files_digest`]), to tell at a reload
/// whether one changed.
#[derive(Debug, Clone, Default)]
pub struct RemoteDigests(Vec<u64>);

impl RemoteDigests {
    /// Reads the files of every remote of `cfg` now. Call it before the server starts, so
    /// that the server reads them after: should one change in between, the next reload
    /// reconnects the remote rather than miss it.
    pub fn read(cfg: &Config) -> RemoteDigests {
        RemoteDigests(
            cfg.leafnodes
                .remotes
                .iter()
                .enumerate()
                .map(|(i, r)| reload::remote_files_digest(r, i).unwrap_or_default())
                .collect(),
        )
    }
}

/// The shared part of a reload (SIGHUP): the log level and the leafnode remotes, as
/// [`reload::plan`] found them changed. A binary runs its own part between
/// [`SharedReload::log_level`] and [`SharedReload::remotes`].
pub struct SharedReload {
    /// Changes the log level.
    set_level: Option<LogLevelSetter>,
    /// The server.
    shared: Weak<Shared>,
    /// Its leafnode links (their remotes), if any are configured.
    leaf: Option<Arc<LeafState>>,
    /// The digest of each remote's files ([`reload::remote_files_digest`]) as they were when
    /// the remote last (re)started.
    remote_digests: Vec<u64>,
}

impl SharedReload {
    /// For `node`, whose remotes' files had `digests` when it started.
    pub fn new(
        digests: RemoteDigests,
        set_level: Option<LogLevelSetter>,
        node: &Node,
    ) -> SharedReload {
        SharedReload {
            set_level,
            shared: Arc::downgrade(node.shared()),
            leaf: node.leaf.clone(),
            remote_digests: digests.0,
        }
    }

    /// Applies a changed log level.
    pub fn log_level(&self, level: Option<LogLevel>) {
        if let (Some(level), Some(set)) = (level, &self.set_level) {
            set(level);
            info!(log_level = level.as_str(), "log level changed");
        }
    }

    /// Applies a changed `authorization` or accounts' users (see
    /// [`Shared::reload_authorization`]).
    pub fn authorization(&self, changed: bool, new: &Config) {
        let (true, Some(shared)) = (changed, self.shared.upgrade()) else {
            return;
        };
        let accounts: Vec<String> = new.accounts.keys().cloned().collect();
        let closed = shared.reload_authorization(authenticator(new), &accounts);
        info!(closed, "authorization reloaded");
    }

    /// Applies the remotes part of a reload: a remote whose configuration or files
    /// ([`reload::remote_files`], read again now) changed is reconnected with its new settings,
    /// remotes added at the end start, remotes removed from the end stop; the others are not
    /// touched. A remote whose new settings cannot be loaded (a file unreadable or invalid)
    /// keeps running as it was: its running configuration is put back into `new` (an added
    /// one, and those after it, are left out of `new`).
    pub async fn remotes(&mut self, running: &Config, new: &mut Config) -> Applied {
        let mut done = Applied::default();
        let Some(shared) = self.shared.upgrade() else {
            return done;
        };
        let shared = &shared;
        let leaf = self.leaf.as_ref();
        let old = running.leafnodes.remotes.clone();
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
                if files_only && self.remote_digests.get(i) == Some(&digest) {
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
                                (None, _) => {
                                    info!(%url, "leafnodes.remotes[{i}] added: connecting")
                                }
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
                            if let Some(d) = self.remote_digests.get_mut(i) {
                                *d = digest;
                            } else {
                                self.remote_digests.push(digest);
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
                    self.remote_digests.truncate(i);
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
}

/// A binary's part of a reload (SIGHUP), around the shared part ([`SharedReload`]): loading
/// its configuration again, planning, and applying its own keys.
pub trait Reload: Send + 'static {
    /// The binary's whole configuration.
    type Config: AsRef<Config> + AsMut<Config> + Send + Sync + 'static;
    /// What a reload changes of the binary's own keys.
    type Plan: Send + Sync;

    /// Loads the configuration again: the file with the flags over it, validated.
    fn load(&self) -> Result<Self::Config, ConfigError>;

    /// Compares the running configuration with the new one: what changes of the shared keys
    /// and of the binary's own; anything that cannot change refuses the whole reload.
    fn plan(
        &self,
        running: &Self::Config,
        new: &Self::Config,
    ) -> Result<(reload::Plan, Self::Plan), Refused>;

    /// Applies the binary's part of `plan` (after the log level, before the remotes); what
    /// cannot be applied runs as before and is put back into `new`. `changed`: the binary's
    /// part planned something.
    fn apply(
        &mut self,
        plan: &Self::Plan,
        running: &Self::Config,
        new: &mut Self::Config,
    ) -> impl std::future::Future<Output = Applied> + Send;
}

/// Installs the SIGHUP handler now (a reload right after the start must not kill the process,
/// SIGHUP's default action) and reloads on every SIGHUP until the returned guard is dropped:
/// the file again with the flags over it, then what the plan allows (the log level, the
/// binary's part, the leafnode remotes); anything else is refused and the running
/// configuration stays. `None` (logged) when the handler cannot be installed.
pub fn reload_on_sighup<R: Reload>(
    running: R::Config,
    mut shared: SharedReload,
    mut own: R,
) -> Option<AbortOnDrop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            error!("cannot install the SIGHUP handler: configuration reloads are off: {e}");
            return None;
        }
    };
    let mut running = running;
    Some(AbortOnDrop(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            info!("SIGHUP received: reloading the configuration");
            let mut new = match own.load() {
                Ok(c) => c,
                Err(e) => {
                    error!("reload refused: {e}; the running configuration stays");
                    continue;
                }
            };
            let (plan, own_plan) = match own.plan(&running, &new) {
                Ok(p) => p,
                Err(e) => {
                    error!("reload refused: {e}");
                    continue;
                }
            };
            shared.log_level(plan.log_level);
            shared.authorization(plan.authorization, new.as_ref());
            let mine = own.apply(&own_plan, &running, &mut new).await;
            let remotes = shared.remotes(running.as_ref(), new.as_mut()).await;
            running = new;
            Applied {
                changed: mine.changed || remotes.changed,
                failed: mine.failed || remotes.failed,
            }
            .log(plan.is_empty());
        }
    })))
}

/// What a reload did besides planning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Something was reconnected, added, removed or restarted.
    pub changed: bool,
    /// Something could not be applied (it runs as before).
    pub failed: bool,
}

impl Applied {
    /// Logs the outcome of a reload whose plan was `nothing_planned` apart from this.
    pub fn log(self, nothing_planned: bool) {
        if self.failed {
            error!("configuration reloaded in part (see above)");
        } else if nothing_planned && !self.changed {
            info!("configuration reloaded: nothing changed");
        } else {
            info!("configuration reloaded");
        }
    }
}

/// `--signal SIGNAL[=PID|=PIDFILE]` (see [`crate::process::command`]): sends it to the running
/// server (without `=...`, the one in `--pid FILE`, else in the configuration's `pid_file`,
/// which `pid_file` loads) and returns the exit code: 0 once sent, 1 with the error on stderr.
pub fn send_signal(
    name: &str,
    args: &ServerArgs,
    pid_file: impl FnOnce() -> Result<Option<std::path::PathBuf>, ConfigError>,
) -> ExitCode {
    use crate::process::command::{SignalCommand, Target};
    let failed = |e: &dyn Display| {
        eprintln!("{name}: {e}");
        ExitCode::from(1)
    };
    let command = match SignalCommand::parse(args.signal.as_deref().unwrap_or_default()) {
        Ok(command) => command,
        Err(e) => return failed(&e),
    };
    let file = match (&command.target, &args.pid) {
        (Target::Default, Some(file)) => Some(file.clone()),
        (Target::Default, None) => match pid_file() {
            Ok(file) => file,
            Err(e) => return failed(&e),
        },
        _ => None,
    };
    match command.send(file.as_deref()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// What the server runs until ([`crate::process::signals::until_shutdown`]): SIGTERM, SIGINT,
/// or the end of lame duck mode (SIGUSR2, timed by `cfg`'s `lame_duck_*`); SIGUSR1 reopens
/// `log_file`. The handlers are installed now.
pub fn until_shutdown(
    node: &Node,
    cfg: &Config,
    log_file: Option<LogFile>,
) -> impl std::future::Future<Output = ()> {
    crate::process::signals::until_shutdown(
        node.shared(),
        crate::process::lameduck::Timing::of(cfg),
        log_file,
    )
}

/// Installs the SIGTERM and SIGINT handlers now (a signal that arrives before the returned
/// future is first polled is kept, instead of killing the process) and returns a future that
/// completes on either.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
    fn the_store_directory_is_configured_or_systemds_never_a_temp_default() {
        use std::ffi::OsStr;
        use std::path::PathBuf;
        let plain = cfg("jetstream = true\n");
        let err = jetstream_options(&plain, None).unwrap_err();
        assert!(err.contains("jetstream.store_dir"), "{err}");
        assert!(jetstream_options(&plain, Some(OsStr::new("relative"))).is_err());
        let o = jetstream_options(&plain, Some(OsStr::new("/var/lib/leafd:/other"))).unwrap();
        assert_eq!(o.store_dir, PathBuf::from("/var/lib/leafd/jetstream"));
        let set = cfg("[jetstream]\nstore_dir = \"/data/js\"\n");
        let o = jetstream_options(&set, Some(OsStr::new("/var/lib/leafd"))).unwrap();
        assert_eq!(o.store_dir, PathBuf::from("/data/js"), "the key wins");
    }

    #[test]
    fn options_of_the_default_configuration_are_the_options_defaults() {
        // A default is written once, in the settings; the runtime options take it from there.
        let c = Config::default();
        let (o, d) = (server_options(&c, "leafd"), ServerOptions::default());
        assert_eq!(
            (o.host, d.host),
            (config::DEFAULT_HOST.into(), config::DEFAULT_HOST.into())
        );
        assert_eq!((o.port, o.max_payload), (d.port, d.max_payload));
        assert_eq!(
            (o.max_control_line, o.max_pending),
            (d.max_control_line, d.max_pending)
        );
        assert_eq!(o.max_connections, d.max_connections);
        assert_eq!(o.max_subscriptions, d.max_subscriptions);
        assert_eq!((o.ping_interval, o.ping_max), (d.ping_interval, d.ping_max));
        assert_eq!(o.write_deadline, d.write_deadline);
        assert_eq!(o.auth_timeout, d.auth_timeout);
        let (o, d) = (leaf_options(&c), LeafOptions::default());
        assert_eq!(o.auth_timeout, d.auth_timeout);
        assert_eq!(o.reconnect_max, d.reconnect_max);
        assert_eq!((o.ping_interval, o.ping_max), (d.ping_interval, d.ping_max));
        assert_eq!(o.max_subscriptions, d.max_subscriptions);
        assert_eq!(o.max_connections, d.max_connections);
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

    #[cfg(feature = "tls")]
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
            "[leafnodes]\nremotes = [{ url = \"http://u:secret@hub:7422\" }]\n",
        ))
        .unwrap_err();
        assert!(err.contains("http:// scheme is not supported"), "{err}");
        assert!(!err.contains("secret"));
        // WebSocket remotes: served in a build with the `websocket` feature, refused naming
        // the feature without it.
        let wss = unsupported_yet(&cfg(
            "[leafnodes]\nremotes = [{ url = \"wss://u:secret@hub:7422\" }]\n",
        ));
        if cfg!(feature = "websocket") {
            wss.unwrap();
        } else {
            let err = wss.unwrap_err();
            assert!(err.contains("built without websocket support"), "{err}");
            assert!(!err.contains("secret"));
        }
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
