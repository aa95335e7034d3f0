//! The names a client certificate carries, for `tls.verify_and_map` (a client logs in as the
//! configured user its certificate names).
//!
//! nats-server 2.9 tries, in this order: the certificate's email addresses (subject
//! alternative names of type rfc822Name), its DNS names, its URIs, and then its subject as
//! Go prints an RDN sequence (`CN=alice,O=Acme,C=US`: the last RDN first, attributes with
//! their short names, values escaped as RFC 2253 says, unknown attribute types as a dotted
//! OID and `#` with the hex of the value's DER). Before that last step it compares the
//! subject as a distinguished name with every user name that parses as one, in any order of
//! its RDNs ([`parse_dn`], [`same_dn`]), so `CN=bob,O=Plant A` names the certificate whose
//! subject prints as `O=Plant A,CN=bob`. [`identities`] reads all of it.
//!
//! Only the few parts of X.509 this needs are read (a small DER walker, no dependency): the
//! certificate has been verified by rustls already, so anything unexpected here is simply no
//! name.

use std::fmt::Write;

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3]` explicit: the extensions of a v3 certificate.
const EXTENSIONS: u8 = 0xa3;
/// `[0]` explicit: the version.
const VERSION: u8 = 0xa0;
/// GeneralName choices (implicit, primitive).
const RFC822_NAME: u8 = 0x81;
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;
/// subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: its tag, its content, and the whole encoding.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads DER elements one after the other.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element; `None` at the end or on malformed input (single-byte tags only).
    fn next(&mut self) -> Option<Tlv<'a>> {
        let input = self.0;
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, rest) = rest.split_at(n);
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        let whole = input.get(..input.len() - after.len())?;
        self.0 = after;
        Some(Tlv {
            tag,
            content,
            whole,
        })
    }

    /// The next element if it has `tag`.
    fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
        self.next().filter(|t| t.tag == tag)
    }
}

/// A distinguished name: its RDNs, each a list of attributes (type, value).
pub type Dn = Vec<Vec<(String, String)>>;

/// What a client certificate says about who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// Its email addresses, then DNS names, then URIs (subject alternative names).
    pub alt_names: Vec<String>,
    /// Its subject as Go prints an RDN sequence (empty without one).
    pub subject: String,
    /// Its subject as a distinguished name.
    pub dn: Dn,
}

impl CertNames {
    /// Every name, in the order they are tried (for the log).
    pub fn all(&self) -> Vec<String> {
        let mut all = self.alt_names.clone();
        if !self.subject.is_empty() {
            all.push(self.subject.clone());
        }
        all
    }
}

/// The names of the DER certificate `cert` (see the module's notes); none when the
/// certificate cannot be read.
pub fn identities(cert: &[u8]) -> CertNames {
    let mut names = CertNames::default();
    let Some((subject, extensions)) = subject_and_extensions(cert) else {
        return names;
    };
    let alt = extensions.map(alt_names).unwrap_or_default();
    for wanted in [RFC822_NAME, DNS_NAME, URI] {
        names.alt_names.extend(
            alt.iter()
                .filter(|(tag, _)| *tag == wanted)
                .map(|(_, name)| name.clone()),
        );
    }
    if let Some((dn, printed)) = subject_dn(subject) {
        names.subject = printed;
        names.dn = dn;
    }
    names
}

/// The subject (the content of its SEQUENCE) and the extensions (the content of `[3]`) of a
/// certificate.
fn subject_and_extensions(cert: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let certificate = Der(cert).expect(SEQUENCE)?;
    let tbs = Der(certificate.content).expect(SEQUENCE)?;
    let mut fields = Der(tbs.content);
    // The version (optional), then the serial number.
    if fields.next()?.tag == VERSION {
        fields.next()?;
    }
    let _signature = fields.expect(SEQUENCE)?;
    let _issuer = fields.expect(SEQUENCE)?;
    let _validity = fields.expect(SEQUENCE)?;
    let subject = fields.expect(SEQUENCE)?;
    let _key = fields.expect(SEQUENCE)?;
    let mut extensions = None;
    while let Some(field) = fields.next() {
        if field.tag == EXTENSIONS {
            extensions = Some(Der(field.content).expect(SEQUENCE)?.content);
        }
    }
    Some((subject.content, extensions))
}

/// The subject alternative names of types rfc822Name, dNSName and URI, in certificate order.
fn alt_names(extensions: &[u8]) -> Vec<(u8, String)> {
    let mut names = Vec::new();
    let mut list = Der(extensions);
    while let Some(ext) = list.next() {
        let mut parts = Der(ext.content);
        if parts.expect(OID).map(|o| o.content) != Some(SUBJECT_ALT_NAME) {
            continue;
        }
        let mut value = parts.next();
        if value.as_ref().is_some_and(|v| v.tag == BOOLEAN) {
            value = parts.next();
        }
        let Some(value) = value.filter(|v| v.tag == OCTET_STRING) else {
            continue;
        };
        let Some(general_names) = Der(value.content).expect(SEQUENCE) else {
            continue;
        };
        let mut each = Der(general_names.content);
        while let Some(name) = each.next() {
            if matches!(name.tag, RFC822_NAME | DNS_NAME | URI) {
                if let Ok(text) = std::str::from_utf8(name.content) {
                    names.push((name.tag, text.to_owned()));
                }
            }
        }
    }
    names
}

/// The short names Go prints for the usual attribute types (by their OID's last arc under
/// 2.5.4).
fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    match oid {
        [0x55, 0x04, arc] => match arc {
            3 => Some("CN"),
            5 => Some("SERIALNUMBER"),
            6 => Some("C"),
            7 => Some("L"),
            8 => Some("ST"),
            9 => Some("STREET"),
            10 => Some("O"),
            11 => Some("OU"),
            17 => Some("POSTALCODE"),
            _ => None,
        },
        _ => None,
    }
}

/// An OID in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut out = String::new();
    let mut value: u64 = 0;
    let mut first = true;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 != 0 {
            continue;
        }
        if first {
            let (a, b) = if value < 80 {
                (value / 40, value % 40)
            } else {
                (2, value - 80)
            };
            let _ = write!(out, "{a}.{b}");
            first = false;
        } else {
            let _ = write!(out, ".{value}");
        }
        value = 0;
    }
    out
}

/// The text of a string-typed attribute value; `None` for other types.
fn string_value(value: &Tlv<'_>) -> Option<String> {
    match value.tag {
        // PrintableString, UTF8String, IA5String, T61String, NumericString
        0x13 | 0x0c | 0x16 | 0x14 | 0x12 => {
            std::str::from_utf8(value.content).ok().map(str::to_owned)
        }
        // BMPString: UTF-16BE
        0x1e if value.content.len().is_multiple_of(2) => {
            let units: Vec<u16> = value
                .content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// `value` escaped as Go escapes an attribute value (RFC 2253): `,+"\<>;` always, a space at
/// either end, `#` at the start.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let needs = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == last,
            '#' => i == 0,
            _ => false,
        };
        if needs {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject (`Name`'s content: SETs of attribute SEQUENCEs) as a distinguished name in
/// certificate order (types by their short names, else the dotted OID; values as text, else
/// `#` and the hex of their DER), and printed as Go prints an RDN sequence: the last RDN
/// first, separated by `,`, attributes of one RDN by `+`, text values escaped.
fn subject_dn(subject: &[u8]) -> Option<(Dn, String)> {
    let mut rdns = Vec::new();
    let mut printed = Vec::new();
    let mut sets = Der(subject);
    while let Some(set) = sets.next() {
        if set.tag != SET {
            return None;
        }
        let mut attributes = Vec::new();
        let mut shown = Vec::new();
        let mut each = Der(set.content);
        while let Some(attribute) = each.next() {
            let mut parts = Der(attribute.content);
            let oid = parts.expect(OID)?.content;
            let value = parts.next()?;
            let name = attribute_name(oid).map_or_else(|| dotted(oid), str::to_owned);
            let text = match (attribute_name(oid), string_value(&value)) {
                (Some(_), Some(text)) => {
                    shown.push(format!("{name}={}", escape(&text)));
                    text
                }
                _ => {
                    let mut hex = String::with_capacity(1 + value.whole.len() * 2);
                    hex.push('#');
                    for b in value.whole {
                        let _ = write!(hex, "{b:02x}");
                    }
                    shown.push(format!("{name}={hex}"));
                    hex
                }
            };
            attributes.push((name, text));
        }
        rdns.push(attributes);
        printed.push(shown.join("+"));
    }
    printed.reverse();
    Some((rdns, printed.join(",")))
}

/// A user name read as a distinguished name (RFC 4514: `CN=bob,O=Plant A`, `\,` and `\2C`
/// escapes, `+` between the attributes of one RDN); `None` when it is not one.
pub fn parse_dn(text: &str) -> Option<Dn> {
    let mut rdns: Dn = Vec::new();
    let mut rdn = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let finish = |current: &mut String, rdn: &mut Vec<(String, String)>| -> Option<()> {
        let (name, value) = current.split_once('=')?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return None;
        }
        rdn.push((name.to_owned(), value.trim_start().to_owned()));
        current.clear();
        Some(())
    };
    // Values are unescaped as they are read; the `=` of each attribute is the first one.
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next()?;
                if next.is_ascii_hexdigit() && chars.peek().is_some_and(char::is_ascii_hexdigit) {
                    let low = chars.next()?;
                    let byte = u8::from_str_radix(&format!("{next}{low}"), 16).ok()?;
                    current.push(char::from(byte));
                } else {
                    current.push(next);
                }
            }
            '+' => finish(&mut current, &mut rdn)?,
            ',' | ';' => {
                finish(&mut current, &mut rdn)?;
                rdns.push(std::mem::take(&mut rdn));
            }
            c => current.push(c),
        }
    }
    finish(&mut current, &mut rdn)?;
    rdns.push(rdn);
    Some(rdns)
}

/// Whether two distinguished names have the same RDNs, in any order (attribute types
/// compared without case, values exactly), as nats-server matches a certificate's subject.
pub fn same_dn(a: &Dn, b: &Dn) -> bool {
    fn normal(dn: &Dn) -> Vec<Vec<(String, &str)>> {
        let mut rdns: Vec<Vec<(String, &str)>> = dn
            .iter()
            .map(|rdn| {
                let mut attrs: Vec<_> = rdn
                    .iter()
                    .map(|(t, v)| (t.to_ascii_uppercase(), v.as_str()))
                    .collect();
                attrs.sort();
                attrs
            })
            .collect();
        rdns.sort();
        rdns
    }
    !a.is_empty() && normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of `tag` with `content`.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            let len = (content.len() as u32).to_be_bytes();
            let skip = len.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (4 - skip) as u8);
            out.extend_from_slice(&len[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(
            SET,
            &tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat()),
        )
    }

    /// A certificate skeleton with `subject` and, when given, a subjectAltName extension
    /// holding `alt` (GeneralName encodings).
    fn cert(subject: &[u8], alt: Option<&[u8]>) -> Vec<u8> {
        let mut tbs = [
            tlv(VERSION, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, subject),
            tlv(SEQUENCE, &[]),
        ]
        .concat();
        if let Some(alt) = alt {
            let ext = tlv(
                SEQUENCE,
                &[
                    tlv(OID, SUBJECT_ALT_NAME),
                    tlv(BOOLEAN, &[0]),
                    tlv(OCTET_STRING, &tlv(SEQUENCE, alt)),
                ]
                .concat(),
            );
            tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, &ext)));
        }
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[]), tlv(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn emails_then_dns_names_then_uris_then_the_subject() {
        let subject = [
            attribute(&[0x55, 0x04, 6], 0x13, b"US"),
            attribute(&[0x55, 0x04, 10], 0x0c, b"Acme, Inc."),
            attribute(&[0x55, 0x04, 3], 0x0c, b"alice"),
        ]
        .concat();
        let alt = [
            tlv(DNS_NAME, b"gw1.example.com"),
            tlv(URI, b"spiffe://plant/gw1"),
            tlv(0x87, &[127, 0, 0, 1]),
            tlv(RFC822_NAME, b"alice@example.com"),
        ]
        .concat();
        let names = identities(&cert(&subject, Some(&alt)));
        assert_eq!(
            names.all(),
            [
                "alice@example.com",
                "gw1.example.com",
                "spiffe://plant/gw1",
                "CN=alice,O=Acme\\, Inc.,C=US"
            ]
        );
        assert_eq!(
            identities(&cert(&subject, None)).all(),
            ["CN=alice,O=Acme\\, Inc.,C=US"]
        );
        // The same subject, written in another order and with escapes, is the same name.
        let written = parse_dn("C=US, O=Acme\\2C Inc.,CN=alice").unwrap();
        assert!(same_dn(&written, &names.dn), "{written:?} {:?}", names.dn);
        let other = parse_dn("CN=alice,O=Acme").unwrap();
        assert!(!same_dn(&other, &names.dn));
        assert!(parse_dn("alice@example.com").is_none());
        assert!(parse_dn("CN=a,=b").is_none());
    }

    #[test]
    fn subject_printing_follows_go() {
        // A multi-valued RDN, an unknown attribute type (emailAddress) and escapes.
        let email_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
        let multi = tlv(
            SET,
            &[
                tlv(
                    SEQUENCE,
                    &[tlv(OID, &[0x55, 0x04, 11]), tlv(0x0c, b"ops")].concat(),
                ),
                tlv(
                    SEQUENCE,
                    &[tlv(OID, &[0x55, 0x04, 11]), tlv(0x0c, b"#dev ")].concat(),
                ),
            ]
            .concat(),
        );
        let subject = [
            multi,
            attribute(&email_oid, 0x16, b"a@b"),
            attribute(&[0x55, 0x04, 3], 0x1e, &[0, b'x', 0, b'<']),
        ]
        .concat();
        assert_eq!(
            identities(&cert(&subject, None)).subject,
            "CN=x\\<,1.2.840.113549.1.9.1=#1603614062,OU=ops+OU=\\#dev\\ "
        );
    }

    #[test]
    fn garbage_names_nobody() {
        assert!(identities(b"").all().is_empty());
        assert!(identities(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff])
            .all()
            .is_empty());
        assert!(identities(&tlv(SEQUENCE, &tlv(SEQUENCE, &[1, 2, 3])))
            .all()
            .is_empty());
        // An empty subject and no extensions: no name at all.
        assert!(identities(&cert(&[], None)).all().is_empty());
    }
}
