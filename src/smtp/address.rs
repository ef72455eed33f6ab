//! Mail addresses as they arrive in `MAIL FROM:<...>` and `RCPT TO:<...>`.
//!
//! `parse_path` takes the text between `<` and `>` and returns a
//! [`Mailbox`] whose parts cannot be reinterpreted by anything downstream:
//! the match rules, alias and virtual tables, `.forward` files, an MDA, or
//! the next relay. RFC 5321 syntax is the starting point; on top of it the
//! parser fails closed (A2) on every form that mail software has historically
//! read in more than one way, which is how open relays were made (A13).
//! Nothing is "fixed up": an address is taken as it is or refused.
//!
//! What is refused, besides plain syntax errors:
//!
//! * source routes: `@a,@b:user@d` (RFC 5321 lets a server ignore the
//!   route; OpenSMTPD strips it; we refuse the whole path);
//! * in the local part: `%` (percent hack), `!` (UUCP bang path), `@` (an
//!   address inside an address), `:` and `,` (routes and lists), `|` and `/`
//!   (pipes and files in aliases(5) and forward(5)), `\` and `"` (escapes),
//!   `` ` `` and `$` (shell substitution), a leading `-` (an option to
//!   whatever program gets the address as an argument), whitespace, and
//!   control characters;
//! * quoted local parts, unless the quotes are superfluous: `"john.doe"` is
//!   the dot-string `john.doe` (RFC 5321 4.1.2 makes them the same mailbox)
//!   and is returned unquoted; anything that needs the quotes (`"a@b"`,
//!   `"a%b"`, `"a b"`, `"a\b"`, `"a..b"`) is refused, as is any quoted-pair;
//! * domains with a trailing dot (`user@example.org.`), an empty label, a
//!   label that starts or ends with `-`, an `_`, or an all-numeric last label
//!   (`user@127.0.0.1`, `user@2130706433`: IP addresses without brackets);
//! * address literals other than `[a.b.c.d]` and `[IPv6:...]`, and literals
//!   of the unspecified, broadcast or multicast addresses, and IPv4-mapped or
//!   IPv4-compatible IPv6 literals (an IPv4 address in disguise);
//! * non-ASCII anywhere unless the client asked for SMTPUTF8; with SMTPUTF8,
//!   non-ASCII characters that are not alphabetic (fullwidth `%` or `@`, the
//!   ideographic full stop, bidi controls...), since Unicode normalisation
//!   downstream could turn them into the characters refused above;
//! * anything longer than RFC 5321's limits: 64 octets of local part, 255
//!   of domain, 63 per label, 256 for the whole path with its brackets.
//!
//! Address literals are accepted by the parser; whether one is local is the
//! match rules' business (`for local` never matches a literal; see
//! `lka::policy`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2.
pub const MAX_DOMAIN: usize = 255;
/// RFC 1035 2.3.4.
pub const MAX_LABEL: usize = 63;
/// RFC 5321 4.5.3.1.3: a path, counting its angle brackets.
pub const MAX_PATH: usize = 256;

/// Printable ASCII characters allowed in a dot-string atom besides letters
/// and digits: RFC 5321 `atext` without the ones listed in the module doc.
const SAFE_ATEXT: &str = "#&'*+-=?^_{}~";

/// The domain of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name: lower-cased, no trailing dot, valid per RFC 5321
    /// (with U-labels only when SMTPUTF8 was given).
    Name(String),
    /// `[a.b.c.d]` or `[IPv6:...]`.
    Literal(IpAddr),
}

impl Domain {
    /// Parse a domain as it appears after the `@` of a path.
    pub fn parse(s: &str, smtputf8: bool) -> Result<Domain, AddrError> {
        parse_domain(s, smtputf8)
    }

    /// The host name, if this is not a literal.
    pub fn name(&self) -> Option<&str> {
        match self {
            Domain::Name(n) => Some(n),
            Domain::Literal(_) => None,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(IpAddr::V4(a)) => write!(f, "[{a}]"),
            Domain::Literal(IpAddr::V6(a)) => write!(f, "[IPv6:{a}]"),
        }
    }
}

/// A mailbox (`local@domain`) that passed every check of this module.
/// The local part keeps its case (RFC 5321 makes it case-sensitive) and is
/// always a dot-string: it never needs quoting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local: String,
    pub domain: Domain,
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why a path was refused. The dispatcher answers all of them with a
/// syntax-error reply; the variant says which rule refused it, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    /// More than `MAX_PATH` octets with the brackets.
    PathTooLong,
    /// `@a,@b:user@d`.
    SourceRoute,
    /// No `@domain` (only `parse_path_local` accepts that).
    NoDomain,
    EmptyLocalPart,
    LocalPartTooLong,
    /// An empty atom: leading, trailing or doubled dot in the local part.
    BadDotString,
    /// A character refused in the local part (see the module doc).
    RefusedChar(char),
    /// A leading `-` in the local part.
    LeadingDash,
    /// A quoted local part that is not a plain dot-string inside quotes.
    QuotedLocalPart,
    /// Whitespace or a control character anywhere.
    ControlOrSpace,
    /// Non-ASCII without SMTPUTF8.
    NonAscii,
    EmptyDomain,
    DomainTooLong,
    LabelTooLong,
    /// `user@example.org.`
    TrailingDot,
    /// An empty label, a bad character or a bad hyphen in a label.
    BadDomain,
    /// The last label is all digits: an IP address without brackets.
    NumericTld,
    /// A literal that is not `[a.b.c.d]` or `[IPv6:...]`, or does not parse.
    BadLiteral,
    /// A literal of an address that can't be a mail host, or an IPv4
    /// address dressed as IPv6.
    RefusedLiteral,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AddrError::PathTooLong => "path too long",
            AddrError::SourceRoute => "source routes are refused",
            AddrError::NoDomain => "no domain",
            AddrError::EmptyLocalPart => "empty local part",
            AddrError::LocalPartTooLong => "local part too long",
            AddrError::BadDotString => "empty atom in local part",
            AddrError::RefusedChar(c) => return write!(f, "character {c:?} refused in local part"),
            AddrError::LeadingDash => "local part starts with '-'",
            AddrError::QuotedLocalPart => "quoted local part refused",
            AddrError::ControlOrSpace => "whitespace or control character",
            AddrError::NonAscii => "non-ASCII address without SMTPUTF8",
            AddrError::EmptyDomain => "empty domain",
            AddrError::DomainTooLong => "domain too long",
            AddrError::LabelTooLong => "domain label too long",
            AddrError::TrailingDot => "trailing dot in domain",
            AddrError::BadDomain => "invalid domain",
            AddrError::NumericTld => "numeric top-level label",
            AddrError::BadLiteral => "invalid address literal",
            AddrError::RefusedLiteral => "address literal refused",
        };
        f.write_str(s)
    }
}

impl std::error::Error for AddrError {}

/// Parse the text between `<` and `>` of MAIL FROM or RCPT TO.
///
/// `""` is the null path and gives `None` (valid only for MAIL FROM; the
/// caller refuses it for RCPT). Everything listed in the module doc is
/// refused.
pub fn parse_path(s: &str, smtputf8: bool) -> Result<Option<Mailbox>, AddrError> {
    if s.is_empty() {
        return Ok(None);
    }
    let (local, domain) = split_path(s, smtputf8)?;
    let domain = domain.ok_or(AddrError::NoDomain)?;
    Ok(Some(Mailbox {
        local,
        domain: parse_domain(domain, smtputf8)?,
    }))
}

/// As `parse_path`, but a path without `@domain` (`RCPT TO:<postmaster>`,
/// which RFC 5321 4.5.1 requires servers to take) gets `default` as its
/// domain, as OpenSMTPD gives it the listener's host name.
pub fn parse_path_local(
    s: &str,
    smtputf8: bool,
    default: &Domain,
) -> Result<Option<Mailbox>, AddrError> {
    if s.is_empty() {
        return Ok(None);
    }
    let (local, domain) = split_path(s, smtputf8)?;
    let domain = match domain {
        Some(d) => parse_domain(d, smtputf8)?,
        None => default.clone(),
    };
    Ok(Some(Mailbox { local, domain }))
}

/// Check the whole path, then cut it into a checked local part and the
/// unparsed domain text (if any).
fn split_path(s: &str, smtputf8: bool) -> Result<(String, Option<&str>), AddrError> {
    if s.len().saturating_add(2) > MAX_PATH {
        return Err(AddrError::PathTooLong);
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AddrError::ControlOrSpace);
    }
    if !smtputf8 && !s.is_ascii() {
        return Err(AddrError::NonAscii);
    }
    if s.starts_with('@') {
        return Err(AddrError::SourceRoute);
    }
    let (local_text, rest) = if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"').ok_or(AddrError::QuotedLocalPart)?;
        let inner = &q[..end];
        if inner.contains('\\') {
            return Err(AddrError::QuotedLocalPart);
        }
        let rest = &q[end + 1..];
        // The quotes are accepted only when they are superfluous.
        check_local(inner, smtputf8).map_err(|_| AddrError::QuotedLocalPart)?;
        (inner, rest)
    } else {
        match s.find('@') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    check_local(local_text, smtputf8)?;
    if rest.is_empty() {
        return Ok((local_text.to_string(), None));
    }
    let Some(domain) = rest.strip_prefix('@') else {
        // Text after a closing quote that is not `@domain`.
        return Err(AddrError::QuotedLocalPart);
    };
    if domain.contains('@') {
        return Err(AddrError::RefusedChar('@'));
    }
    Ok((local_text.to_string(), Some(domain)))
}

/// A dot-string of safe atoms (see the module doc).
fn check_local(s: &str, smtputf8: bool) -> Result<(), AddrError> {
    if s.is_empty() {
        return Err(AddrError::EmptyLocalPart);
    }
    if s.len() > MAX_LOCAL_PART {
        return Err(AddrError::LocalPartTooLong);
    }
    if s.starts_with('-') {
        return Err(AddrError::LeadingDash);
    }
    for atom in s.split('.') {
        if atom.is_empty() {
            return Err(AddrError::BadDotString);
        }
        for c in atom.chars() {
            if c.is_ascii_alphanumeric() || SAFE_ATEXT.contains(c) {
                continue;
            }
            if c.is_control() || c.is_whitespace() {
                return Err(AddrError::ControlOrSpace);
            }
            if !c.is_ascii() {
                if !smtputf8 {
                    return Err(AddrError::NonAscii);
                }
                if c.is_alphabetic() {
                    continue;
                }
            }
            return Err(AddrError::RefusedChar(c));
        }
    }
    Ok(())
}

fn parse_domain(s: &str, smtputf8: bool) -> Result<Domain, AddrError> {
    if s.is_empty() {
        return Err(AddrError::EmptyDomain);
    }
    if s.len() > MAX_DOMAIN {
        return Err(AddrError::DomainTooLong);
    }
    if s.starts_with('[') {
        return parse_literal(s).map(Domain::Literal);
    }
    if !smtputf8 && !s.is_ascii() {
        return Err(AddrError::NonAscii);
    }
    if s.ends_with('.') {
        return Err(AddrError::TrailingDot);
    }
    // Checked after lower-casing: a few non-ASCII capitals lower-case to
    // more octets, or to a letter and a combining mark.
    let lower = s.to_lowercase();
    if lower.len() > MAX_DOMAIN {
        return Err(AddrError::DomainTooLong);
    }
    let mut last = "";
    for label in lower.split('.') {
        check_label(label, smtputf8)?;
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::NumericTld);
    }
    Ok(Domain::Name(lower))
}

/// RFC 5321 `sub-domain`: Let-dig [Ldh-str], at most 63 octets; non-ASCII
/// letters count as letters under SMTPUTF8.
fn check_label(label: &str, smtputf8: bool) -> Result<(), AddrError> {
    if label.is_empty() {
        return Err(AddrError::BadDomain);
    }
    if label.len() > MAX_LABEL {
        return Err(AddrError::LabelTooLong);
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(AddrError::BadDomain);
    }
    for c in label.chars() {
        let ok = c.is_ascii_alphanumeric()
            || c == '-'
            || (smtputf8 && !c.is_ascii() && c.is_alphabetic());
        if !ok {
            return Err(if c.is_ascii() || smtputf8 {
                AddrError::BadDomain
            } else {
                AddrError::NonAscii
            });
        }
    }
    Ok(())
}

/// `[a.b.c.d]` or `[IPv6:...]` (the tag in any case), of an address that
/// can be a mail host.
fn parse_literal(s: &str) -> Result<IpAddr, AddrError> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or(AddrError::BadLiteral)?;
    let addr = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            let a: Ipv6Addr = inner[5..].parse().map_err(|_| AddrError::BadLiteral)?;
            IpAddr::V6(a)
        }
        _ => {
            let a: Ipv4Addr = inner.parse().map_err(|_| AddrError::BadLiteral)?;
            IpAddr::V4(a)
        }
    };
    let refused = match addr {
        IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
        IpAddr::V6(a) => {
            let seg = a.segments();
            let low96_zero = seg[..6].iter().all(|&x| x == 0);
            a.is_unspecified()
                || a.is_multicast()
                || a.to_ipv4_mapped().is_some()
                // IPv4-compatible (::a.b.c.d), deprecated; ::1 is loopback.
                || (low96_zero && !a.is_loopback())
        }
    };
    if refused {
        return Err(AddrError::RefusedLiteral);
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Mailbox {
        match parse_path(s, false) {
            Ok(Some(m)) => m,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    fn err(s: &str) -> AddrError {
        match parse_path(s, false) {
            Err(e) => e,
            other => panic!("{s:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn null_path() {
        assert_eq!(parse_path("", false), Ok(None));
        assert_eq!(parse_path("", true), Ok(None));
    }

    #[test]
    fn plain_addresses() {
        let m = ok("John.Doe@Example.ORG");
        assert_eq!(m.local, "John.Doe");
        assert_eq!(m.domain, Domain::Name("example.org".into()));
        assert_eq!(m.to_string(), "John.Doe@example.org");
        assert_eq!(ok("a+tag@x.example").local, "a+tag");
        assert_eq!(ok("o'brien@example.com").local, "o'brien");
        assert_eq!(
            ok("SRS0=HHH=TT=example.org=user@example.net").local,
            "SRS0=HHH=TT=example.org=user"
        );
        assert_eq!(ok("a_b-c@localhost").domain.name(), Some("localhost"));
        assert_eq!(ok("x@a-b.c0m").domain.name(), Some("a-b.c0m"));
        assert_eq!(ok("x@1.2.3.com").domain.name(), Some("1.2.3.com"));
        assert_eq!(ok("#&'*+-=?^_{}~@x.org").local, "#&'*+-=?^_{}~");
    }

    #[test]
    fn literals() {
        assert_eq!(
            ok("u@[192.0.2.1]").domain,
            Domain::Literal("192.0.2.1".parse().unwrap())
        );
        let m = ok("u@[IPv6:2001:db8::1]");
        assert_eq!(m.domain, Domain::Literal("2001:db8::1".parse().unwrap()));
        assert_eq!(m.to_string(), "u@[IPv6:2001:db8::1]");
        assert_eq!(
            ok("u@[ipv6:::1]").domain,
            Domain::Literal("::1".parse().unwrap())
        );
        for s in [
            "u@[::1]",
            "u@[1.2.3]",
            "u@[01.2.3.4]",
            "u@[1.2.3.4.5]",
            "u@[256.1.1.1]",
            "u@[IPv6:1.2.3.4]",
            "u@[IPv6:fe80::1%eth0]",
            "u@[tag:content]",
            "u@[1.2.3.4",
            "u@[]",
            "u@[x.example.org]",
        ] {
            assert_eq!(err(s), AddrError::BadLiteral, "{s}");
        }
        for s in [
            "u@[0.0.0.0]",
            "u@[255.255.255.255]",
            "u@[224.0.0.1]",
            "u@[IPv6:::]",
            "u@[IPv6:ff02::1]",
            "u@[IPv6:::ffff:127.0.0.1]",
            "u@[IPv6:::127.0.0.1]",
        ] {
            assert_eq!(err(s), AddrError::RefusedLiteral, "{s}");
        }
    }

    #[test]
    fn quoted_local_parts() {
        // Superfluous quotes: the same mailbox, returned unquoted.
        assert_eq!(ok("\"john.doe\"@example.org").local, "john.doe");
        for s in [
            "\"a@b\"@c.org",
            "\"a%b\"@c.org",
            "\"a!b\"@c.org",
            "\"a b\"@c.org",
            "\"a\\b\"@c.org",
            "\"a\\\"b\"@c.org",
            "\"a..b\"@c.org",
            "\".a\"@c.org",
            "\"\"@c.org",
            "\"a\"b@c.org",
            "\"abc@c.org",
            "\"a:b\"@c.org",
            "\"|cmd\"@c.org",
        ] {
            let e = err(s);
            assert!(
                matches!(e, AddrError::QuotedLocalPart | AddrError::ControlOrSpace),
                "{s}: {e:?}"
            );
        }
    }

    /// The classic relay tricks, at the parser (lka::policy runs the same
    /// list through the match rules).
    #[test]
    fn relay_tricks_refused() {
        let cases: &[(&str, AddrError)] = &[
            ("user%evil.example@example.org", AddrError::RefusedChar('%')),
            ("user%evil.example@[192.0.2.1]", AddrError::RefusedChar('%')),
            ("user@evil.example@example.org", AddrError::RefusedChar('@')),
            ("@example.org:user@evil.example", AddrError::SourceRoute),
            ("@a,@b:user@evil.example", AddrError::SourceRoute),
            (
                "\"user@evil.example\"@example.org",
                AddrError::QuotedLocalPart,
            ),
            (
                "\"user%evil.example\"@example.org",
                AddrError::QuotedLocalPart,
            ),
            ("\"user@evil.example\"", AddrError::QuotedLocalPart),
            ("evil.example!user@example.org", AddrError::RefusedChar('!')),
            ("evil.example!user", AddrError::RefusedChar('!')),
            ("user@example.org.", AddrError::TrailingDot),
            ("user@localhost.", AddrError::TrailingDot),
            ("user@127.0.0.1", AddrError::NumericTld),
            ("user@2130706433", AddrError::NumericTld),
            (
                "user\\@evil.example@example.org",
                AddrError::RefusedChar('\\'),
            ),
            ("user@evil.example%example.org", AddrError::BadDomain),
            (
                "user@example.org,user@evil.example",
                AddrError::RefusedChar('@'),
            ),
            ("user@example.org,evil.example", AddrError::BadDomain),
            ("user:evil.example@example.org", AddrError::RefusedChar(':')),
            ("|/bin/sh@example.org", AddrError::RefusedChar('|')),
            ("/etc/passwd@example.org", AddrError::RefusedChar('/')),
            ("-oQ/tmp@example.org", AddrError::LeadingDash),
            ("`id`@example.org", AddrError::RefusedChar('`')),
            ("$(id)@example.org", AddrError::RefusedChar('$')),
            ("user@example.org\0@evil.example", AddrError::ControlOrSpace),
            (
                "user@example.org\r\nRCPT TO:<x@y>",
                AddrError::ControlOrSpace,
            ),
            ("user @example.org", AddrError::ControlOrSpace),
            ("user@[IPv6:::ffff:192.0.2.1]", AddrError::RefusedLiteral),
            ("user", AddrError::NoDomain),
            ("user@", AddrError::EmptyDomain),
            ("user@.example.org", AddrError::BadDomain),
            ("user@example..org", AddrError::BadDomain),
            ("user@-example.org", AddrError::BadDomain),
            ("user@example_.org", AddrError::BadDomain),
            ("<user@example.org>", AddrError::RefusedChar('<')),
        ];
        for (s, e) in cases {
            assert_eq!(parse_path(s, false), Err(*e), "{s}");
            // SMTPUTF8 changes nothing for them.
            assert!(parse_path(s, true).is_err(), "{s}");
        }
    }

    #[test]
    fn dot_strings() {
        assert_eq!(err(".a@x.org"), AddrError::BadDotString);
        assert_eq!(err("a.@x.org"), AddrError::BadDotString);
        assert_eq!(err("a..b@x.org"), AddrError::BadDotString);
        assert_eq!(err("@x.org"), AddrError::SourceRoute);
        assert_eq!(err("a(b)@x.org"), AddrError::RefusedChar('('));
        assert_eq!(err("a;b@x.org"), AddrError::RefusedChar(';'));
        assert_eq!(err("a\u{7f}b@x.org"), AddrError::ControlOrSpace);
    }

    #[test]
    fn lengths() {
        let l64 = "a".repeat(64);
        assert_eq!(ok(&format!("{l64}@x.org")).local, l64);
        assert_eq!(
            err(&format!("{}@x.org", "a".repeat(65))),
            AddrError::LocalPartTooLong
        );
        let label63 = "b".repeat(63);
        assert!(parse_path(&format!("a@{label63}.org"), false).is_ok());
        assert_eq!(
            err(&format!("a@{}.org", "b".repeat(64))),
            AddrError::LabelTooLong
        );
        // 254 octets inside the brackets is the most a path may have.
        let d = format!(
            "{}.{}.{}.org",
            "c".repeat(63),
            "d".repeat(63),
            "e".repeat(63)
        );
        let local = "f".repeat(254 - 1 - d.len());
        assert!(parse_path(&format!("{local}@{d}"), false).is_ok());
        assert_eq!(err(&format!("{local}g@{d}")), AddrError::PathTooLong);
    }

    #[test]
    fn smtputf8() {
        assert_eq!(err("jörg@example.org"), AddrError::NonAscii);
        assert_eq!(err("joerg@exämple.org"), AddrError::NonAscii);
        let m = parse_path("Jörg@Exämple.ORG", true).unwrap().unwrap();
        assert_eq!(m.local, "Jörg");
        assert_eq!(m.domain, Domain::Name("exämple.org".into()));
        assert!(parse_path("用户@例子.广告", true).unwrap().is_some());
        assert_eq!(err("u@1.2.3.4]"), AddrError::BadDomain);
        // Look-alikes of refused characters stay refused.
        for s in [
            "user\u{ff05}evil.example@example.org", // fullwidth %
            "user\u{ff20}evil.example@example.org", // fullwidth @
            "user\u{ff01}x@example.org",            // fullwidth !
            "user@evil\u{3002}example",             // ideographic full stop
            "user@evil\u{ff0e}example",             // fullwidth full stop
            "us\u{202e}er@example.org",             // bidi override
            "us\u{200b}er@example.org",             // zero width space
            "user@exa\u{00a0}mple.org",             // no-break space
            "user\u{85}@example.org",               // NEL
            "user\u{2028}@example.org",             // line separator
        ] {
            assert!(parse_path(s, true).is_err(), "{s:?}");
        }
    }

    #[test]
    fn local_default_domain() {
        let here = Domain::Name("mx.example.org".into());
        let m = parse_path_local("Postmaster", false, &here)
            .unwrap()
            .unwrap();
        assert_eq!(m.to_string(), "Postmaster@mx.example.org");
        assert_eq!(
            parse_path_local("a%b", false, &here),
            Err(AddrError::RefusedChar('%'))
        );
        assert_eq!(parse_path_local("", false, &here), Ok(None));
        assert_eq!(
            parse_path_local("u@x.org", false, &here)
                .unwrap()
                .unwrap()
                .domain,
            Domain::Name("x.org".into())
        );
    }

    /// Total on hostile input: random bytes and mutations of valid paths
    /// give a value or an error, and what is accepted re-parses to itself.
    #[test]
    fn total_on_random_input() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<char> = "aZ09.@%!\"\\[]:,-_+=IPv6é\u{ff05}\0 \r\n<>|/`$'"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for utf8 in [false, true] {
                if let Ok(Some(m)) = parse_path(&s, utf8) {
                    let again = parse_path(&m.to_string(), utf8);
                    assert_eq!(again, Ok(Some(m.clone())), "{s:?}");
                }
            }
        }
    }
}
