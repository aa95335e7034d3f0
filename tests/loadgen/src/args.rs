//! What every subcommand's options share: the default server address and the number
//! parser (`--msgs 1_000_000`).

use std::str::FromStr;

/// The server a mode talks to unless `--url` says otherwise.
pub const DEFAULT_URL: &str = "127.0.0.1:4222";

/// clap value parser for numbers: `_` separators are allowed (`1_000_000`).
pub fn num<T: FromStr>(value: &str) -> Result<T, String> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("bad value {value:?}"))
}
