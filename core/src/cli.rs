//! Command-line flags shared by `leafd` and `hubd`, compatible with nats-server's.
//!
//! [`ServerArgs`] is a `clap::Args` that each binary flattens into its own
//! parser, next to its own subcommands. Flags override config-file values
//! ([`ServerArgs::apply`]); [`load`] reads the file, applies the flags and
//! validates the result.
//!
//! nats-server is a Go program, so its users type single-dash long flags
//! (`-port 4222`, `-js`, `-sd /data`, `-config=leafd.conf`). clap does not
//! accept those, so a binary passes its arguments through [`normalize_args`]
//! first:
//!
//! ```ignore
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! // clap's automatic `-V` version flag would clash with `-V/--trace`.
//! #[command(version, disable_version_flag = true)]
//! struct Cli {
//!     #[command(flatten)]
//!     server: leaf_core::cli::ServerArgs,
//!     #[arg(short = 'v', long, action = clap::ArgAction::Version)]
//!     version: Option<bool>,
//! }
//!
//! let cli = Cli::parse_from(leaf_core::cli::normalize_args(std::env::args_os()));
//! let config = leaf_core::cli::load(&cli.server)?;
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use crate::config::{self, Config, ConfigError, Extension, LogLevel, NoExtension};

/// The server flags, named as nats-server's. Every field is optional so that
/// only flags actually given override the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
// Keep this doc comment out of the embedding binary's `--help`.
#[command(about = None, long_about = None)]
pub struct ServerArgs {
    /// Client listen host.
    #[arg(short = 'a', long = "addr", visible_alias = "net", value_name = "HOST")]
    pub addr: Option<String>,

    /// Client listen port (0 picks a free port).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,

    /// HTTP monitoring port.
    #[arg(
        short = 'm',
        long = "http_port",
        alias = "http-port",
        value_name = "PORT"
    )]
    pub http_port: Option<u16>,

    /// HTTPS monitoring port (needs TLS: the client port's certificate).
    #[arg(
        long = "https_port",
        visible_alias = "ms",
        alias = "https-port",
        value_name = "PORT"
    )]
    pub https_port: Option<u16>,

    /// Require TLS on the client port (with --tlscert and --tlskey).
    #[arg(long = "tls")]
    pub tls: bool,

    /// The client port's TLS certificate (PEM).
    #[arg(long = "tlscert", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,

    /// The private key of --tlscert (PEM).
    #[arg(long = "tlskey", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,

    /// Require TLS and a client certificate signed by --tlscacert.
    #[arg(long = "tlsverify")]
    pub tlsverify: bool,

    /// CA certificates (PEM) that client certificates must chain to.
    #[arg(long = "tlscacert", value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,

    /// Configuration file (TOML, or JSON if the name ends in .json).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// User required for client connections.
    #[arg(long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Password required for client connections.
    #[arg(long = "pass", value_name = "PASS")]
    pub pass: Option<String>,

    /// Token required for client connections.
    #[arg(long = "auth", value_name = "TOKEN")]
    pub auth: Option<String>,

    /// Server name.
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "server_name",
        alias = "server-name",
        value_name = "NAME"
    )]
    pub name: Option<String>,

    /// Log level: error, warn, info, debug or trace. (No `-l`: nats-server's `-l` is a log file.)
    #[arg(long = "log_level", alias = "log-level", value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Enable debug logging.
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,

    /// Enable protocol tracing.
    #[arg(short = 'V', long = "trace")]
    pub trace: bool,

    /// Enable JetStream.
    #[arg(long = "jetstream", visible_alias = "js")]
    pub jetstream: bool,

    /// JetStream storage directory (enables JetStream).
    #[arg(
        long = "store_dir",
        visible_alias = "sd",
        alias = "store-dir",
        value_name = "DIR"
    )]
    pub store_dir: Option<PathBuf>,

    /// Maximum message payload, in bytes or with a unit (64KB, 1MB).
    #[arg(
        long = "max_payload",
        alias = "max-payload",
        value_name = "SIZE",
        value_parser = parse_size_arg
    )]
    pub max_payload: Option<usize>,

    /// Accept leafnode connections on HOST:PORT (`leafnodes.listen`).
    #[arg(long = "leafnodes", value_name = "HOST:PORT", value_parser = parse_listen_arg)]
    pub leafnodes: Option<config::Listen>,

    /// Connect to a hub as a leaf node (repeatable; each is a `leafnodes.remotes` entry and
    /// together they replace the file's remotes), e.g. nats-leaf://user:pass@hub:7422.
    #[arg(long = "hub", value_name = "URL")]
    pub hub: Vec<String>,

    /// Log to FILE (appended) instead of stderr; SIGUSR1 reopens it (`log_file`).
    #[arg(short = 'l', long = "log", value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Write the process id to FILE, removed at a clean exit (`pid_file`).
    #[arg(short = 'P', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Log to syslog (not supported yet: refused).
    #[arg(short = 's', long = "syslog")]
    pub syslog: bool,

    /// Send SIGNAL to the running server and exit: stop, quit, term, reopen, reload or ldm,
    /// optionally `=PID` or `=PIDFILE` (else the process in --pid FILE or the config's
    /// pid_file).
    #[arg(long = "signal", visible_alias = "sl", value_name = "SIGNAL[=PID]")]
    pub signal: Option<String>,
}

impl ServerArgs {
    /// Overrides `cfg` with every flag that was given.
    ///
    /// `--user`/`--pass` set `authorization.user`/`password`, `--auth` sets
    /// the token, `--store_dir` also enables JetStream. `--log_level` replaces
    /// the file's level and its `debug`/`trace` switches; `-D` and `-V` then
    /// raise the level to debug or trace.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(addr) = &self.addr {
            cfg.host.clone_from(addr);
        }
        if let Some(port) = self.port {
            cfg.port = port;
        }
        if let Some(port) = self.http_port {
            cfg.http_port = Some(port);
        }
        if let Some(port) = self.https_port {
            cfg.https_port = Some(port);
        }
        self.apply_tls(cfg);
        if let Some(user) = &self.user {
            cfg.authorization.user = Some(user.clone());
        }
        if let Some(pass) = &self.pass {
            cfg.authorization.password = Some(pass.clone());
        }
        if let Some(token) = &self.auth {
            cfg.authorization.token = Some(token.clone());
        }
        if let Some(name) = &self.name {
            cfg.server_name = Some(name.clone());
        }
        if let Some(level) = self.log_level {
            cfg.log_level = level;
            cfg.debug = false;
            cfg.trace = false;
        }
        if self.debug {
            cfg.debug = true;
            cfg.log_level = cfg.log_level.max(LogLevel::Debug);
        }
        if self.trace {
            cfg.trace = true;
            cfg.log_level = cfg.log_level.max(LogLevel::Trace);
        }
        if self.jetstream {
            cfg.jetstream.enabled = true;
        }
        if let Some(dir) = &self.store_dir {
            cfg.jetstream.store_dir = Some(dir.clone());
            cfg.jetstream.enabled = true;
        }
        if let Some(size) = self.max_payload {
            cfg.max_payload = size;
        }
        if let Some(listen) = &self.leafnodes {
            cfg.leafnodes.listen = Some(listen.clone());
        }
        if !self.hub.is_empty() {
            // Flags override the file: its remotes give way to the --hub URLs.
            cfg.leafnodes.remotes.clear();
        }
        for url in &self.hub {
            cfg.leafnodes.remotes.push(config::Remote {
                urls: vec![url.clone()],
                ..config::Remote::default()
            });
        }
        if let Some(file) = &self.log {
            cfg.log_file = Some(file.clone());
        }
        if let Some(file) = &self.pid {
            cfg.pid_file = Some(file.clone());
        }
        if self.syslog {
            cfg.syslog = true;
        }
    }
}

impl ServerArgs {
    /// `--tls`, `--tlsverify` and the files: any of them makes (or overrides) the `tls`
    /// table; `--tlsverify` also sets its `verify`.
    fn apply_tls(&self, cfg: &mut Config) {
        let files = [&self.tlscert, &self.tlskey, &self.tlscacert];
        if !self.tls && !self.tlsverify && files.iter().all(|f| f.is_none()) {
            return;
        }
        let tls = cfg.tls.get_or_insert_with(config::TlsSettings::default);
        if let Some(cert) = &self.tlscert {
            tls.cert_file = Some(cert.clone());
        }
        if let Some(key) = &self.tlskey {
            tls.key_file = Some(key.clone());
        }
        if let Some(ca) = &self.tlscacert {
            tls.ca_file = Some(ca.clone());
        }
        if self.tlsverify {
            tls.verify = true;
        }
    }
}

/// The effective configuration: the `--config` file if given (else the
/// defaults), overridden by the flags, then validated.
pub fn load(args: &ServerArgs) -> Result<Config, ConfigError> {
    let (cfg, NoExtension) = load_with::<NoExtension>(args)?;
    cfg.validate()?;
    Ok(cfg)
}

/// For a binary with keys of its own ([`Extension`]): the `--config` file if given (else
/// the defaults), the flags applied over the shared part; not validated (the binary
/// validates the whole).
pub fn load_with<X: Extension>(args: &ServerArgs) -> Result<(Config, X), ConfigError> {
    let (mut cfg, ext) = match &args.config {
        Some(path) => config::load_file_with::<X>(path)?,
        None => (Config::default(), X::default()),
    };
    args.apply(&mut cfg);
    Ok((cfg, ext))
}

/// clap value parser for `--leafnodes`.
fn parse_listen_arg(s: &str) -> Result<config::Listen, String> {
    s.parse()
}

/// clap value parser for `--max_payload`.
fn parse_size_arg(s: &str) -> Result<usize, String> {
    let size = config::parse_size(s).map_err(|err| err.to_string())?;
    usize::try_from(size).map_err(|_| format!("size `{s}` is too large"))
}

/// Rewrites Go-style flags into the form clap accepts, before parsing.
///
/// `-port 4222`, `-js`, `-sd /x` and `-config=f.toml` become `--port 4222`,
/// `--js`, `--sd /x` and `--config=f.toml`. Only the long names (and
/// aliases) of [`ServerArgs`] with more than one character are rewritten;
/// short flags (`-p`, `-DV`) are left as they are. Go's `-flag=true` and
/// `-flag=false` on switches become `--flag` or nothing. The first argument
/// (the program name), flag values (the argument after a flag that takes
/// one), positional arguments such as subcommand names, and everything after
/// `--` are never changed.
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    normalize_args_for(
        &ServerArgs::augment_args(clap::Command::new("server")),
        args,
    )
}

/// [`normalize_args`] for the flags of `cmd` (a binary's whole command line, with flags of
/// its own besides [`ServerArgs`]).
pub fn normalize_args_for<I: IntoIterator<Item = OsString>>(
    cmd: &clap::Command,
    args: I,
) -> Vec<OsString> {
    let flags = FlagTable::new(cmd);
    let mut iter = args.into_iter();
    let mut out: Vec<OsString> = Vec::new();
    out.extend(iter.next());
    let mut value_next = false;
    while let Some(arg) = iter.next() {
        if value_next {
            value_next = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        let long_body = match text.strip_prefix("--") {
            Some(body) => Some(body),
            None => text.strip_prefix('-').filter(|body| {
                let name = body.split_once('=').map_or(*body, |(name, _)| name);
                name.chars().count() > 1 && flags.long.contains_key(name)
            }),
        };
        match long_body {
            Some(body) => {
                let (name, value) = match body.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (body, None),
                };
                match (flags.long.get(name), value) {
                    (Some(true), None) => {
                        value_next = true;
                        out.push(format!("--{name}").into());
                    }
                    (Some(false), Some(value)) => match parse_go_bool(value) {
                        Some(true) => out.push(format!("--{name}").into()),
                        Some(false) => {}
                        None => out.push(format!("--{body}").into()),
                    },
                    _ => out.push(format!("--{body}").into()),
                }
            }
            None => {
                // Short flags, possibly clustered (`-DV`, `-p4222`): the next
                // argument is a value if the last one takes a value.
                if let Some(cluster) = text.strip_prefix('-') {
                    for (i, c) in cluster.char_indices() {
                        match flags.short.get(&c) {
                            Some(true) => {
                                value_next = i + c.len_utf8() == cluster.len();
                                break;
                            }
                            Some(false) => {}
                            None => break,
                        }
                    }
                }
                out.push(arg);
            }
        }
    }
    out
}

/// Go's `strconv.ParseBool` spellings.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The flags of [`ServerArgs`], read from clap so the table cannot drift:
/// whether each long name, alias and short flag takes a value.
struct FlagTable {
    long: HashMap<String, bool>,
    short: HashMap<char, bool>,
}

impl FlagTable {
    fn new(cmd: &clap::Command) -> Self {
        let mut long = HashMap::new();
        let mut short = HashMap::new();
        for arg in cmd.get_arguments() {
            let takes_value = arg.get_action().takes_values();
            let aliases = arg.get_all_aliases().unwrap_or_default();
            for name in arg.get_long().into_iter().chain(aliases) {
                long.insert(name.to_owned(), takes_value);
            }
            for c in arg.get_short_and_visible_aliases().unwrap_or_default() {
                short.insert(c, takes_value);
            }
        }
        // Added by clap to every binary; nats-server spells them -help and -version.
        long.insert("help".to_owned(), false);
        long.insert("version".to_owned(), false);
        short.insert('h', false);
        FlagTable { long, short }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};
    use std::time::Duration;

    /// A binary-like parser: server flags plus subcommands.
    #[derive(Debug, Parser)]
    #[command(name = "leafd", version = "0", disable_version_flag = true)]
    struct TestCli {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
        version: Option<bool>,
        #[command(subcommand)]
        command: Option<TestCommand>,
    }

    #[derive(Debug, Subcommand, PartialEq)]
    enum TestCommand {
        /// Check a config file.
        CheckConfig { file: PathBuf },
        /// Show status.
        Status,
    }

    fn norm(args: &[&str]) -> Vec<String> {
        let args = std::iter::once("leafd")
            .chain(args.iter().copied())
            .map(OsString::from);
        normalize_args(args)
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn parse(args: &[&str]) -> TestCli {
        let args = std::iter::once("leafd")
            .chain(args.iter().copied())
            .map(OsString::from);
        TestCli::try_parse_from(normalize_args(args)).unwrap()
    }

    #[test]
    fn command_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn normalize_go_style_flags() {
        assert_eq!(norm(&["-js"]), ["--js"]);
        assert_eq!(norm(&["-sd", "/x"]), ["--sd", "/x"]);
        assert_eq!(norm(&["-port=4222"]), ["--port=4222"]);
        assert_eq!(norm(&["-port", "4222"]), ["--port", "4222"]);
        assert_eq!(norm(&["--port", "1"]), ["--port", "1"]);
        assert_eq!(norm(&["-p", "1"]), ["-p", "1"]);
        assert_eq!(norm(&["-a", "0.0.0.0"]), ["-a", "0.0.0.0"]);
        assert_eq!(norm(&["-DV"]), ["-DV"]);
        assert_eq!(norm(&["-config", "x.toml"]), ["--config", "x.toml"]);
        assert_eq!(norm(&["-http_port", "8222"]), ["--http_port", "8222"]);
        assert_eq!(norm(&["-server_name", "n1"]), ["--server_name", "n1"]);
        assert_eq!(
            norm(&["-user", "a", "-pass", "b"]),
            ["--user", "a", "--pass", "b"]
        );
        assert_eq!(norm(&["-help"]), ["--help"]);
        // Go switches with an explicit value.
        assert_eq!(norm(&["-js=true"]), ["--js"]);
        assert_eq!(norm(&["-js=false", "-D"]), ["-D"]);
        assert_eq!(norm(&["-jetstream=maybe"]), ["--jetstream=maybe"]);
        // Unknown single-dash words are left for clap to judge.
        assert_eq!(norm(&["-bogus"]), ["-bogus"]);
    }

    #[test]
    fn process_flags_as_nats_server() {
        assert_eq!(norm(&["-sl", "ldm=42"]), ["--sl", "ldm=42"]);
        assert_eq!(norm(&["-pid", "/x.pid"]), ["--pid", "/x.pid"]);
        assert_eq!(norm(&["-log", "/x.log"]), ["--log", "/x.log"]);
        let cli = parse(&["-l", "/var/log/x.log", "-P", "/run/x.pid", "-sl", "reload"]);
        assert_eq!(cli.server.signal.as_deref(), Some("reload"));
        let mut cfg = Config::default();
        cli.server.apply(&mut cfg);
        assert_eq!(cfg.log_file, Some(PathBuf::from("/var/log/x.log")));
        assert_eq!(cfg.pid_file, Some(PathBuf::from("/run/x.pid")));
        assert!(!cfg.syslog);
        let cli = parse(&["--syslog", "--signal=ldm=/run/x.pid"]);
        assert_eq!(cli.server.signal.as_deref(), Some("ldm=/run/x.pid"));
        cli.server.apply(&mut cfg);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("syslog") && err.contains("not supported yet"),
            "{err}"
        );
    }

    #[test]
    fn normalize_leaves_values_alone() {
        // Values that start with a dash, after a flag that takes a value.
        assert_eq!(norm(&["--pass", "-js"]), ["--pass", "-js"]);
        assert_eq!(norm(&["-pass", "-port"]), ["--pass", "-port"]);
        assert_eq!(norm(&["-n", "-name"]), ["-n", "-name"]);
        assert_eq!(norm(&["-Dn", "-name"]), ["-Dn", "-name"]);
        assert_eq!(norm(&["-auth", "-sd", "-js"]), ["--auth", "-sd", "--js"]);
        // `-p4222` carries its value, so the next argument is a flag again.
        assert_eq!(norm(&["-p4222", "-js"]), ["-p4222", "--js"]);
        // `--flag=value` carries its value too.
        assert_eq!(norm(&["--user=-x", "-js"]), ["--user=-x", "--js"]);
    }

    #[test]
    fn normalize_stops_at_double_dash_and_keeps_subcommands() {
        assert_eq!(
            norm(&["-js", "--", "-port", "1"]),
            ["--js", "--", "-port", "1"]
        );
        assert_eq!(
            norm(&["-port", "1", "check-config", "leafd.toml"]),
            ["--port", "1", "check-config", "leafd.toml"]
        );
        assert_eq!(norm(&["status"]), ["status"]);
        assert!(normalize_args(Vec::<OsString>::new()).is_empty());
    }

    #[test]
    fn tls_flags_make_the_tls_table() {
        let cli = parse(&[
            "-tlsverify",
            "-tlscert",
            "/c.pem",
            "--tlskey=/k.pem",
            "-tlscacert",
            "/ca.pem",
            "-ms",
            "8443",
        ]);
        let mut cfg = Config::default();
        cli.server.apply(&mut cfg);
        assert_eq!(cfg.https_port, Some(8443));
        let tls = cfg.tls.expect("a tls table");
        assert_eq!(tls.cert_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("/k.pem")));
        assert_eq!(tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(tls.verify && !tls.verify_and_map);
        let mut cfg = Config::default();
        parse(&["-tls=false", "-p", "4222"]).server.apply(&mut cfg);
        assert_eq!(cfg.tls, None);
    }

    #[test]
    fn parses_nats_server_command_lines() {
        let cli = parse(&[
            "-js",
            "-sd",
            "/data",
            "-port=4333",
            "-a",
            "0.0.0.0",
            "-DV",
            "-name",
            "edge1",
        ]);
        let s = &cli.server;
        assert!(s.jetstream && s.debug && s.trace);
        assert_eq!(s.store_dir.as_deref(), Some(std::path::Path::new("/data")));
        assert_eq!(s.port, Some(4333));
        assert_eq!(s.addr.as_deref(), Some("0.0.0.0"));
        assert_eq!(s.name.as_deref(), Some("edge1"));
        assert_eq!(cli.command, None);

        let cli = parse(&[
            "--net",
            "::1",
            "-m",
            "8222",
            "--log_level",
            "WARN",
            "--max_payload",
            "2MB",
            "status",
        ]);
        assert_eq!(cli.server.addr.as_deref(), Some("::1"));
        assert_eq!(cli.server.http_port, Some(8222));
        assert_eq!(cli.server.log_level, Some(LogLevel::Warn));
        assert_eq!(cli.server.max_payload, Some(2 << 20));
        assert_eq!(cli.command, Some(TestCommand::Status));

        let cli = parse(&["-c", "x.toml", "check-config", "y.toml"]);
        assert_eq!(cli.server.config, Some(PathBuf::from("x.toml")));
        assert_eq!(
            cli.command,
            Some(TestCommand::CheckConfig {
                file: PathBuf::from("y.toml")
            })
        );

        assert_eq!(parse(&[]).server, ServerArgs::default());
        let bad = ["leafd", "--max_payload", "lots"].map(OsString::from);
        assert!(TestCli::try_parse_from(normalize_args(bad)).is_err());
        let bad = ["leafd", "--log_level", "loud"].map(OsString::from);
        assert!(TestCli::try_parse_from(normalize_args(bad)).is_err());
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("leaf-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("leafd.toml");
        std::fs::write(
            &file,
            "port = 5000\nhost = \"10.0.0.1\"\ntrace = true\nping_interval = \"30s\"\n\
             [authorization]\nuser = \"file\"\npassword = \"filepw\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();

        let cli = parse(&[
            "-c",
            path,
            "-port",
            "6000",
            "--user",
            "flag",
            "-sd",
            "/js",
            "--log_level",
            "info",
        ]);
        let cfg = load(&cli.server).unwrap();
        assert_eq!(cfg.port, 6000);
        assert_eq!(cfg.host, "10.0.0.1"); // from the file
        assert_eq!(cfg.ping_interval, Duration::from_secs(30));
        assert_eq!(cfg.authorization.user.as_deref(), Some("flag"));
        assert_eq!(cfg.authorization.password.as_deref(), Some("filepw"));
        assert!(cfg.jetstream.enabled);
        assert_eq!(cfg.jetstream.store_dir, Some(PathBuf::from("/js")));
        // -l replaces the file's `trace = true`.
        assert_eq!(cfg.effective_log_level(), LogLevel::Info);

        let cfg = load(&parse(&["-c", path, "-D"]).server).unwrap();
        assert_eq!(cfg.effective_log_level(), LogLevel::Trace);
        assert_eq!(cfg.log_level, LogLevel::Debug);

        // A flag can make a valid file invalid; validation runs after flags.
        let err = load(&parse(&["-c", path, "--auth", "tok"]).server).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("authorization.token: cannot be combined"));

        let err = load(&parse(&["-c", "/nonexistent/leafd.toml"]).server).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().starts_with("/nonexistent/leafd.toml: "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_without_file() {
        let cfg = load(&parse(&["-js", "--auth", "s3cr3t", "-V", "--max_payload", "64KB"]).server)
            .unwrap();
        assert!(cfg.jetstream.enabled);
        assert_eq!(cfg.jetstream.store_dir, None);
        assert_eq!(cfg.authorization.token.as_deref(), Some("s3cr3t"));
        assert_eq!(cfg.effective_log_level(), LogLevel::Trace);
        assert_eq!(cfg.max_payload, 64 << 10);
        assert_eq!(cfg.port, config::DEFAULT_PORT);

        let cfg = load(
            &parse(&[
                "--leafnodes",
                "127.0.0.1:7422",
                "--hub",
                "nats-leaf://a:1",
                "-hub",
                "nats-leaf://u:p@b:2",
            ])
            .server,
        )
        .unwrap();
        assert_eq!(cfg.leafnode_listen(), Some(("127.0.0.1", 7422)));
        let urls: Vec<_> = cfg
            .leafnodes
            .remotes
            .iter()
            .map(|r| r.urls.clone())
            .collect();
        assert_eq!(urls, [["nats-leaf://a:1"], ["nats-leaf://u:p@b:2"]]);
        let bad = ["leafd", "--leafnodes", "nowhere"].map(OsString::from);
        assert!(TestCli::try_parse_from(normalize_args(bad)).is_err());

        let err = load(&parse(&["--user", "a"]).server).unwrap_err();
        assert_eq!(
            err.to_string(),
            "authorization.password: missing password for authorization.user"
        );
    }
}
