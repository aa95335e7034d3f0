//! Credentials hidden wherever the servers display something: the one helper every log line,
//! monitoring page, metric label, error and `Debug` output goes through.
//!
//! A secret is replaced by [`REDACTED`], nats-server's marker (it writes `"pass":"[REDACTED]"`
//! when it traces a `CONNECT`). In URLs nats-server's logs use Go's `url.Redacted`, which
//! turns `user:secret@` into `user:xxxxx@` but shows a lone user name as it is; a leaf URL's
//! lone user name is a token (`nats-leaf://TOKEN@hub`), so here it is hidden too:
//!
//! | written | shown |
//! |---|---|
//! | `nats-leaf://user:secret@hub:7422` | `nats-leaf://user:[REDACTED]@hub:7422` |
//! | `nats-leaf://token@hub:7422` | `nats-leaf://[REDACTED]@hub:7422` |
//! | `user:secret@hub` (not even a URL) | `user:[REDACTED]@hub` |
//! | `nats-leaf://hub:7422` | unchanged |

use std::borrow::Cow;
use std::fmt;

/// What stands in for a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Writes the userinfo of a URL, secrets hidden: `user:[REDACTED]@` when there is a
/// password, `[REDACTED]@` for a lone user name (a token), nothing without either.
pub fn write_userinfo(
    f: &mut impl fmt::Write,
    user: Option<&str>,
    pass: Option<&str>,
) -> fmt::Result {
    match (user, pass) {
        (Some(user), Some(_)) => write!(f, "{user}:{REDACTED}@"),
        (None, Some(_)) => write!(f, ":{REDACTED}@"),
        (Some(_), None) => write!(f, "{REDACTED}@"),
        (None, None) => Ok(()),
    }
}

/// `text` (a URL as written in a configuration, valid or not) with the credentials of its
/// userinfo hidden (see the module documentation). Text without userinfo is returned as is.
pub fn url(text: &str) -> Cow<'_, str> {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    // The authority ends at the path, query or fragment; userinfo ends at its last `@`.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(text);
    };
    let (user, pass) = match userinfo.split_once(':') {
        Some((user, pass)) => ((!user.is_empty()).then_some(user), Some(pass)),
        None => (Some(userinfo), None),
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    // Writing into a String cannot fail.
    let _ = write_userinfo(&mut out, user, pass);
    out.push_str(host);
    out.push_str(tail);
    Cow::Owned(out)
}

/// Stands in for a secret in `Debug` output: prints [`REDACTED`].
#[derive(Clone, Copy)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A URL as written, shown with [`url`] by `Debug` and `Display`.
pub struct Url<'a>(pub &'a str);

impl fmt::Debug for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*url(self.0), f)
    }
}

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&url(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords_and_tokens() {
        let cases = [
            (
                "nats-leaf://user:secret@hub:7422",
                "nats-leaf://user:[REDACTED]@hub:7422",
            ),
            (
                "nats-leaf://token@hub:7422",
                "nats-leaf://[REDACTED]@hub:7422",
            ),
            (
                "tls://u:p%40ss@[::1]:7/x?y#z",
                "tls://u:[REDACTED]@[::1]:7/x?y#z",
            ),
            ("nats://:secret@hub", "nats://:[REDACTED]@hub"),
            ("u:secret@hub:7422", "u:[REDACTED]@hub:7422"),
            // An `@` inside the password: everything before the last one is userinfo.
            ("nats-leaf://u:se@cret@hub", "nats-leaf://u:[REDACTED]@hub"),
            ("ws://token@", "ws://[REDACTED]@"),
            ("nats-leaf://hub:7422", "nats-leaf://hub:7422"),
            ("nats-leaf://hub/a@b", "nats-leaf://hub/a@b"),
            ("", ""),
        ];
        for (written, shown) in cases {
            assert_eq!(url(written), shown, "{written}");
            assert_eq!(Url(written).to_string(), shown);
        }
        assert!(matches!(url("nats-leaf://hub"), Cow::Borrowed(_)));
        assert_eq!(
            format!("{:?}", Url("nats://t@h")),
            "\"nats://[REDACTED]@h\""
        );
        assert_eq!(format!("{:?}", Some(Redacted)), "Some([REDACTED])");
    }

    #[test]
    fn userinfo_forms() {
        let shown = |user, pass| {
            let mut s = String::new();
            write_userinfo(&mut s, user, pass).unwrap();
            s
        };
        assert_eq!(shown(Some("u"), Some("p")), "u:[REDACTED]@");
        assert_eq!(shown(Some("tok"), None), "[REDACTED]@");
        assert_eq!(shown(None, Some("p")), ":[REDACTED]@");
        assert_eq!(shown(None, None), "");
    }
}
