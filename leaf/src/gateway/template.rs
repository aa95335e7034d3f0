//! Subject templates: `sensors.{board}.{port}.{field}`, parsed once at start, filled for
//! every message.
//!
//! A placeholder is replaced by its value; values from the data (a record's channel, a
//! `key=value` key) may hold dots (several tokens) but characters a subject cannot carry
//! (space, tab, `*`, `>`, control characters) become `_`, and an empty value becomes `_`,
//! so a device can never publish to a wildcard or an invalid subject.

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` is not one of the placeholders this source offers.
    #[error("unknown placeholder `{{{name}}}` (this source offers {})", offered.iter().map(|o| format!("{{{o}}}")).collect::<Vec<_>>().join(", "))]
    Unknown {
        /// The placeholder.
        name: String,
        /// The placeholders the source offers.
        offered: Vec<&'static str>,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("unbalanced braces")]
    Unbalanced,
    /// The literal parts do not form a subject (empty tokens, wildcards, spaces).
    #[error("not a valid subject template")]
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(&'static str),
}

/// A parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`, whose placeholders must be among `offered`.
    ///
    /// # Errors
    /// [`TemplateError`].
    pub fn parse(text: &str, offered: &[&'static str]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    break;
                }
                Some(i) if rest.as_bytes().get(i) == Some(&b'}') => {
                    return Err(TemplateError::Unbalanced)
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let end = after.find('}').ok_or(TemplateError::Unbalanced)?;
                    let name = &after[..end];
                    let var = offered.iter().find(|o| **o == name).ok_or_else(|| {
                        TemplateError::Unknown {
                            name: name.to_owned(),
                            offered: offered.to_vec(),
                        }
                    })?;
                    parts.push(Part::Var(var));
                    rest = &after[end + 1..];
                }
            }
        }
        let template = Template { parts };
        // Every placeholder filled with a plain token must give a valid subject.
        let sample = template.render(|_| Some("x"));
        if !leaf_proto::subject::is_valid_literal_subject(sample.as_bytes()) {
            return Err(TemplateError::Invalid);
        }
        Ok(template)
    }

    /// Whether the template uses placeholder `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if *v == name))
    }

    /// Fills the template from `(placeholder, value)` pairs (missing ones: `_`).
    pub fn fill(&self, values: &[(&str, &str)]) -> String {
        self.render(|name| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
    }

    /// Fills the template; `value` gives each placeholder's value (`None`: `_`).
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(name) => push_token(&mut out, value(name).unwrap_or("")),
            }
        }
        out
    }
}

/// Appends `value` as subject token(s): dots kept (but no empty tokens), anything a subject
/// cannot carry replaced by `_`.
fn push_token(out: &mut String, value: &str) {
    let mut last_was_dot = true;
    let start = out.len();
    for c in value.chars() {
        match c {
            '.' if !last_was_dot => {
                out.push('.');
                last_was_dot = true;
                continue;
            }
            '.' => out.push('_'),
            c if c.is_whitespace() || c.is_control() || c == '*' || c == '>' => out.push('_'),
            c => out.push(c),
        }
        last_was_dot = false;
    }
    // An empty value, or one ending in a dot, would leave an empty token.
    if out.len() == start || last_was_dot {
        out.push('_');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERED: &[&str] = &["board", "port", "field"];

    #[test]
    fn renders_and_sanitizes() {
        let t = Template::parse("sensors.{board}.{port}.{field}", OFFERED).unwrap();
        let get = |name: &str| match name {
            "board" => Some("rpi4"),
            "port" => Some("scale"),
            _ => Some("line1.temp"),
        };
        assert_eq!(t.render(get), "sensors.rpi4.scale.line1.temp");
        assert!(t.uses("field"));
        assert!(!t.uses("channel"));
        let odd = |name: &str| match name {
            "field" => Some("a b*>.."),
            _ => None,
        };
        let s = t.render(odd);
        assert_eq!(s, "sensors._._.a_b__._");
        assert!(
            leaf_proto::subject::is_valid_literal_subject(s.as_bytes()),
            "{s}"
        );
    }

    #[test]
    fn refuses_bad_templates() {
        assert!(matches!(
            Template::parse("a.{nope}", OFFERED),
            Err(TemplateError::Unknown { .. })
        ));
        let e = Template::parse("a.{nope}", OFFERED)
            .unwrap_err()
            .to_string();
        assert!(e.contains("{board}, {port}, {field}"), "{e}");
        assert_eq!(
            Template::parse("a.{port", OFFERED),
            Err(TemplateError::Unbalanced)
        );
        assert_eq!(
            Template::parse("a.}", OFFERED),
            Err(TemplateError::Unbalanced)
        );
        assert_eq!(
            Template::parse("a..{port}", OFFERED),
            Err(TemplateError::Invalid)
        );
        assert_eq!(
            Template::parse("a.*.{port}", OFFERED),
            Err(TemplateError::Invalid)
        );
        assert_eq!(Template::parse("", OFFERED), Err(TemplateError::Invalid));
    }
}
