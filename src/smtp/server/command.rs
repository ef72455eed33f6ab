//! One command line (without its line ending) to a verb and typed
//! arguments. Total: every input gives a value or a reply line to refuse
//! it with; nothing here knows the session's state.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The commands we know, and two kinds we don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    Expn,
    StartTls,
    Auth,
    /// An HTTP request line: a browser was made to talk to us.
    Http,
    Unknown,
}

const VERBS: &[(&[u8], Verb)] = &[
    (b"HELO", Verb::Helo),
    (b"EHLO", Verb::Ehlo),
    (b"MAIL", Verb::Mail),
    (b"RCPT", Verb::Rcpt),
    (b"DATA", Verb::Data),
    (b"BDAT", Verb::Bdat),
    (b"RSET", Verb::Rset),
    (b"NOOP", Verb::Noop),
    (b"QUIT", Verb::Quit),
    (b"HELP", Verb::Help),
    (b"VRFY", Verb::Vrfy),
    (b"EXPN", Verb::Expn),
    (b"STARTTLS", Verb::StartTls),
    (b"AUTH", Verb::Auth),
    (b"GET", Verb::Http),
    (b"POST", Verb::Http),
    (b"HEAD", Verb::Http),
    (b"PUT", Verb::Http),
    (b"CONNECT", Verb::Http),
];

/// Split a line into its verb and its arguments (leading and trailing
/// blanks removed; empty when there are none).
pub(crate) fn split(line: &[u8]) -> (Verb, &[u8]) {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (word, rest) = line.split_at(end);
    let verb = VERBS
        .iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map_or(Verb::Unknown, |&(_, v)| v);
    (verb, trim(rest))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What a command line may contain: printable ASCII and TAB, plus 8-bit
/// bytes that only an SMTPUTF8 path may use. `Err` on NUL, CR, other
/// control characters and DEL; `Ok(true)` when some byte is 8-bit.
pub(crate) fn check_chars(line: &[u8]) -> Result<bool, ()> {
    let mut eight = false;
    for &b in line {
        match b {
            b'\t' | 0x20..=0x7e => {}
            0x80..=0xff => eight = true,
            _ => return Err(()),
        }
    }
    Ok(eight)
}

/// `BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    /// Only with BDAT (RFC 3030); accepted when CHUNKING is on.
    BinaryMime,
}

/// `RET=` (DSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// The ESMTP parameters of MAIL FROM, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// `ENVID=`, still xtext-encoded (ASCII, at most 100 bytes).
    pub envid: Option<String>,
    /// `AUTH=`, xtext-encoded or `<>`; only meaningful from an
    /// authenticated client (RFC 4954).
    pub auth: Option<String>,
}

/// `NOTIFY=` (DSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Never,
    When {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// The ESMTP parameters of RCPT TO, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// `ORCPT=` as sent: `addr-type;xtext` (ASCII, at most 500 bytes).
    pub orcpt: Option<String>,
}

/// What this session offers, as far as arguments are concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer {
    pub dsn: bool,
    pub smtputf8: bool,
    pub chunking: bool,
    pub auth: bool,
    pub max_size: u64,
}

/// Longest path we pass on (RFC 5321 allows 256 octets; this leaves room
/// for long SRS/VERP addresses and leaves the real check to the address
/// parser).
const MAX_PATH: usize = 1024;
const MAX_ENVID: usize = 100;
const MAX_XTEXT: usize = 500;

const SYNTAX: &str = "501 5.5.4 Syntax error in parameters or arguments";
const UNSUPPORTED: &str = "555 5.5.4 Unsupported option";
const BAD_8BIT: &str = "500 5.5.2 Invalid character in command";
const BAD_SENDER: &str = "553 5.1.7 Sender address syntax error";
const BAD_RCPT: &str = "501 5.1.3 Recipient address syntax error";
const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";

/// `MAIL` arguments: `FROM:<path> [params]`. The path is returned raw,
/// `""` for `<>`.
pub(crate) fn parse_mail(args: &[u8], offer: &Offer) -> Result<(String, MailParams), &'static str> {
    let (path, rest) = path(args, b"FROM:").ok_or("501 5.5.4 Syntax: MAIL FROM:<address>")?;
    let mut p = MailParams::default();
    for (key, value) in params(rest)? {
        let key = key.to_ascii_uppercase();
        match (key.as_slice(), value) {
            (b"SIZE", Some(v)) if p.size.is_none() => {
                let n = digits(v, 20).ok_or(SYNTAX)?;
                let n = n.unwrap_or(u64::MAX);
                if n > offer.max_size {
                    return Err(TOO_BIG);
                }
                p.size = Some(n);
            }
            (b"BODY", Some(v)) if p.body.is_none() => {
                p.body = Some(match v.to_ascii_uppercase().as_slice() {
                    b"7BIT" => Body::SevenBit,
                    b"8BITMIME" => Body::EightBitMime,
                    b"BINARYMIME" if offer.chunking => Body::BinaryMime,
                    b"BINARYMIME" => return Err(UNSUPPORTED),
                    _ => return Err(SYNTAX),
                });
            }
            (b"SMTPUTF8", None) if offer.smtputf8 && !p.smtputf8 => p.smtputf8 = true,
            (b"RET", Some(v)) if offer.dsn && p.ret.is_none() => {
                p.ret = Some(match v.to_ascii_uppercase().as_slice() {
                    b"FULL" => Ret::Full,
                    b"HDRS" => Ret::Hdrs,
                    _ => return Err(SYNTAX),
                });
            }
            (b"ENVID", Some(v)) if offer.dsn && p.envid.is_none() => {
                if v.len() > MAX_ENVID || !xtext(v) {
                    return Err(SYNTAX);
                }
                p.envid = Some(ascii(v));
            }
            (b"AUTH", Some(v)) if offer.auth && p.auth.is_none() => {
                if v.len() > MAX_XTEXT || !(v == b"<>" || xtext(v)) {
                    return Err(SYNTAX);
                }
                p.auth = Some(ascii(v));
            }
            (b"SIZE" | b"BODY" | b"RET" | b"ENVID" | b"AUTH", _) if known(&key, offer) => {
                // A duplicate, or a missing value.
                return Err(SYNTAX);
            }
            (b"SMTPUTF8", _) if offer.smtputf8 => return Err(SYNTAX),
            _ => return Err(UNSUPPORTED),
        }
    }
    let path = path_string(path, p.smtputf8, BAD_SENDER)?;
    Ok((path, p))
}

fn known(key: &[u8], offer: &Offer) -> bool {
    match key {
        b"RET" | b"ENVID" => offer.dsn,
        b"AUTH" => offer.auth,
        _ => true,
    }
}

/// `RCPT` arguments: `TO:<path> [params]`. Non-ASCII in the path only when
/// the transaction's MAIL had SMTPUTF8 (`utf8`).
pub(crate) fn parse_rcpt(
    args: &[u8],
    offer: &Offer,
    utf8: bool,
) -> Result<(String, RcptParams), &'static str> {
    let (path, rest) = path(args, b"TO:").ok_or("501 5.5.4 Syntax: RCPT TO:<address>")?;
    let mut p = RcptParams::default();
    for (key, value) in params(rest)? {
        let key = key.to_ascii_uppercase();
        match (key.as_slice(), value) {
            (b"NOTIFY", Some(v)) if offer.dsn && p.notify.is_none() => {
                p.notify = Some(notify(v).ok_or(SYNTAX)?);
            }
            (b"ORCPT", Some(v)) if offer.dsn && p.orcpt.is_none() => {
                if v.len() > MAX_XTEXT || !orcpt(v) {
                    return Err(SYNTAX);
                }
                p.orcpt = Some(ascii(v));
            }
            (b"NOTIFY" | b"ORCPT", _) if offer.dsn => return Err(SYNTAX),
            _ => return Err(UNSUPPORTED),
        }
    }
    if path.is_empty() {
        return Err(BAD_RCPT);
    }
    let path = path_string(path, utf8, BAD_RCPT)?;
    Ok((path, p))
}

/// `BDAT` arguments: `size [LAST]`.
pub(crate) fn parse_bdat(args: &[u8]) -> Option<(u64, bool)> {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = digits(words.next()?, 20)??;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return None,
    };
    match words.next() {
        None => Some((size, last)),
        Some(_) => None,
    }
}

/// `<path>` after `prefix` (case-insensitive), blanks allowed after the
/// colon; returns the bytes between the brackets and what follows `>`.
fn path<'a>(args: &'a [u8], prefix: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let head = args.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = trim(&args[prefix.len()..]);
    let rest = rest.strip_prefix(b"<")?;
    let close = rest.iter().position(|&b| b == b'>')?;
    let (path, after) = (&rest[..close], &rest[close + 1..]);
    if path.contains(&b'<') || path.len() > MAX_PATH {
        return None;
    }
    match after.first() {
        None | Some(b' ') => Some((path, after)),
        Some(_) => None,
    }
}

/// The path as a `String`: ASCII, or UTF-8 where allowed.
fn path_string(path: &[u8], utf8: bool, bad: &'static str) -> Result<String, &'static str> {
    if path.is_ascii() {
        return Ok(ascii(path));
    }
    if !utf8 {
        return Err(BAD_8BIT);
    }
    match std::str::from_utf8(path) {
        Ok(s) if !s.chars().any(char::is_control) => Ok(s.to_string()),
        _ => Err(bad),
    }
}

type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// `keyword[=value]` words separated by spaces (RFC 5321 esmtp-param).
fn params(rest: &[u8]) -> Result<Vec<Param<'_>>, &'static str> {
    let mut out = Vec::new();
    for word in rest.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        if !word.is_ascii() {
            return Err(BAD_8BIT);
        }
        let (key, value) = match word.iter().position(|&b| b == b'=') {
            Some(i) => (&word[..i], Some(&word[i + 1..])),
            None => (word, None),
        };
        let key_ok = key.first().is_some_and(u8::is_ascii_alphanumeric)
            && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value.is_none_or(|v| {
            !v.is_empty() && v.iter().all(|&b| (33..=126).contains(&b) && b != b'=')
        });
        if !key_ok || !value_ok {
            return Err(SYNTAX);
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Decimal digits, at most `max` of them: `None` if not digits, `Some(None)`
/// if the number does not fit a u64.
fn digits(s: &[u8], max: usize) -> Option<Option<u64>> {
    if s.is_empty() || s.len() > max || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

/// RFC 3461 xtext: printable ASCII but `+` and `=`, and `+XX` (upper hex).
pub(crate) fn xtext(s: &[u8]) -> bool {
    let hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => {
                if !(s.get(i + 1).is_some_and(hex) && s.get(i + 2).is_some_and(hex)) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    true
}

/// `addr-type ";" xtext`.
fn orcpt(v: &[u8]) -> bool {
    match v.iter().position(|&b| b == b';') {
        Some(i) => {
            let (kind, addr) = (&v[..i], &v[i + 1..]);
            !kind.is_empty()
                && kind.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
                && !addr.is_empty()
                && xtext(addr)
        }
        None => false,
    }
}

fn notify(v: &[u8]) -> Option<Notify> {
    if v.eq_ignore_ascii_case(b"NEVER") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for word in v.split(|&b| b == b',') {
        match word.to_ascii_uppercase().as_slice() {
            b"SUCCESS" => success = true,
            b"FAILURE" => failure = true,
            b"DELAY" => delay = true,
            _ => return None, // includes NEVER with others, and empty words
        }
    }
    Some(Notify::When {
        success,
        failure,
        delay,
    })
}

fn ascii(s: &[u8]) -> String {
    s.iter().map(|&b| char::from(b)).collect()
}

/// A HELO/EHLO name: a domain (labels of letters, digits, `-` and `_`, as
/// OpenSMTPD accepts, no trailing dot) or an address literal. What passes
/// is safe to echo in replies and to write in a `Received:` header.
pub(crate) fn valid_helo(s: &[u8]) -> bool {
    if let Some(inner) = s.strip_prefix(b"[") {
        let Some(inner) = inner.strip_suffix(b"]") else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(inner) else {
            return false;
        };
        return match text.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => text[5..].parse::<Ipv6Addr>().is_ok(),
            _ => text.parse::<Ipv4Addr>().is_ok(),
        };
    }
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split(|&b| b == b'.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            dsn: true,
            smtputf8: true,
            chunking: true,
            auth: true,
            max_size: 1000,
        }
    }

    #[test]
    fn verbs_and_arguments() {
        assert_eq!(
            split(b"ehlo  example.org  "),
            (Verb::Ehlo, &b"example.org"[..])
        );
        assert_eq!(split(b"QUIT"), (Verb::Quit, &b""[..]));
        assert_eq!(split(b"StartTLS"), (Verb::StartTls, &b""[..]));
        assert_eq!(split(b"MAIL FROM:<a@b>").0, Verb::Mail);
        assert_eq!(split(b"MAILX").0, Verb::Unknown);
        assert_eq!(split(b"").0, Verb::Unknown);
        assert_eq!(split(b"POST / HTTP/1.1").0, Verb::Http);
    }

    #[test]
    fn characters() {
        assert_eq!(check_chars(b"NOOP\tx"), Ok(false));
        assert_eq!(check_chars(b"NOOP \xc3\xa9"), Ok(true));
        assert!(check_chars(b"NO\0OP").is_err());
        assert!(check_chars(b"NO\rOP").is_err());
        assert!(check_chars(b"NOOP\x7f").is_err());
    }

    #[test]
    fn mail_paths() {
        let o = offer();
        assert_eq!(
            parse_mail(b"FROM:<a@b>", &o),
            Ok(("a@b".into(), MailParams::default()))
        );
        assert_eq!(parse_mail(b"from: <>", &o).map(|x| x.0), Ok(String::new()));
        assert_eq!(
            parse_mail(b"FROM:<@x,@y:a@b>", &o).map(|x| x.0),
            Ok("@x,@y:a@b".into())
        );
        for bad in [
            &b"FROM:a@b"[..],
            b"FROM:<a@b",
            b"FROM:<a<b>",
            b"FROM:<a@b>x",
            b"TO:<a@b>",
            b"FROM",
            b"",
            b"FROM:<\"a>b\"@c>",
        ] {
            assert!(parse_mail(bad, &o).is_err(), "{:?}", bad);
        }
        let long = [&b"FROM:<"[..], &[b'a'; 1025], b">"].concat();
        assert!(parse_mail(&long, &o).is_err());
    }

    #[test]
    fn mail_params() {
        let o = offer();
        let (_, p) = parse_mail(
            b"FROM:<a@b> size=100 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=x+2By AUTH=<>",
            &o,
        )
        .unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(100),
                body: Some(Body::EightBitMime),
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("x+2By".into()),
                auth: Some("<>".into()),
            }
        );
        assert_eq!(parse_mail(b"FROM:<a@b> SIZE=1001", &o), Err(TOO_BIG));
        assert_eq!(
            parse_mail(b"FROM:<a@b> SIZE=99999999999999999999", &o),
            Err(TOO_BIG)
        );
        assert_eq!(parse_mail(b"FROM:<a@b> SIZE=1x", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> SIZE=1 SIZE=2", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> SIZE", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> BODY=9BIT", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> ENVID=a=b", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> ENVID=a+2", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> SMTPUTF8=yes", &o), Err(SYNTAX));
        assert_eq!(parse_mail(b"FROM:<a@b> XFOO=1", &o), Err(UNSUPPORTED));
        assert_eq!(parse_mail(b"FROM:<a@b> =1", &o), Err(SYNTAX));
        let off = Offer {
            dsn: false,
            smtputf8: false,
            chunking: false,
            auth: false,
            max_size: 10,
        };
        for p in [
            "RET=FULL",
            "ENVID=x",
            "SMTPUTF8",
            "BODY=BINARYMIME",
            "AUTH=<>",
        ] {
            let line = format!("FROM:<a@b> {p}");
            assert_eq!(parse_mail(line.as_bytes(), &off), Err(UNSUPPORTED), "{p}");
        }
        let (_, p) = parse_mail(b"FROM:<a@b> BODY=BINARYMIME", &o).unwrap();
        assert_eq!(p.body, Some(Body::BinaryMime));
    }

    #[test]
    fn utf8_paths() {
        let o = offer();
        let (path, _) = parse_mail("FROM:<é@b> SMTPUTF8".as_bytes(), &o).unwrap();
        assert_eq!(path, "é@b");
        assert_eq!(parse_mail("FROM:<é@b>".as_bytes(), &o), Err(BAD_8BIT));
        assert_eq!(parse_mail(b"FROM:<\xff@b> SMTPUTF8", &o), Err(BAD_SENDER));
        assert_eq!(
            parse_mail("FROM:<a@b> ENVID=é SMTPUTF8".as_bytes(), &o),
            Err(BAD_8BIT)
        );
        assert_eq!(
            parse_rcpt("TO:<é@b>".as_bytes(), &o, true).map(|x| x.0),
            Ok("é@b".into())
        );
        assert_eq!(parse_rcpt("TO:<é@b>".as_bytes(), &o, false), Err(BAD_8BIT));
    }

    #[test]
    fn rcpt_params() {
        let o = offer();
        let (path, p) = parse_rcpt(
            b"To:<a@b> NOTIFY=success,DELAY ORCPT=rfc822;a+40b",
            &o,
            false,
        )
        .unwrap();
        assert_eq!(path, "a@b");
        assert_eq!(
            p.notify,
            Some(Notify::When {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;a+40b"));
        assert_eq!(
            parse_rcpt(b"TO:<a@b> NOTIFY=NEVER", &o, false)
                .unwrap()
                .1
                .notify,
            Some(Notify::Never)
        );
        assert_eq!(
            parse_rcpt(b"TO:<a@b> NOTIFY=NEVER,SUCCESS", &o, false),
            Err(SYNTAX)
        );
        assert_eq!(parse_rcpt(b"TO:<a@b> NOTIFY=", &o, false), Err(SYNTAX));
        assert_eq!(parse_rcpt(b"TO:<a@b> ORCPT=rfc822", &o, false), Err(SYNTAX));
        assert_eq!(parse_rcpt(b"TO:<a@b> ORCPT=;a", &o, false), Err(SYNTAX));
        assert_eq!(parse_rcpt(b"TO:<a@b> FOO", &o, false), Err(UNSUPPORTED));
        assert_eq!(parse_rcpt(b"TO:<>", &o, false), Err(BAD_RCPT));
        assert!(parse_rcpt(b"TO:<postmaster>", &o, false).is_ok());
    }

    #[test]
    fn bdat_arguments() {
        assert_eq!(parse_bdat(b"0"), Some((0, false)));
        assert_eq!(parse_bdat(b"12 last"), Some((12, true)));
        assert_eq!(parse_bdat(b"18446744073709551615"), Some((u64::MAX, false)));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"1 LAST x",
            b"1 FIRST",
            b"18446744073709551616",
            b"1.0",
        ] {
            assert_eq!(parse_bdat(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn helo_names() {
        for ok in [
            &b"example.org"[..],
            b"a",
            b"my_host-1.example",
            b"[192.0.2.1]",
            b"[IPv6:2001:db8::1]",
            b"192.0.2.1",
        ] {
            assert!(valid_helo(ok), "{:?}", ok);
        }
        for bad in [
            &b""[..],
            b"example.org.",
            b".x",
            b"a..b",
            b"a b",
            b"[192.0.2.1",
            b"[999.0.0.1]",
            b"[2001:db8::1]",
            b"[IPv6:2001:db8::1]x",
            b"a(b)",
            "é.x".as_bytes(),
        ] {
            assert!(!valid_helo(bad), "{:?}", bad);
        }
        assert!(!valid_helo(&[b'a'; 64]));
        let long = [&[b'a'; 60][..], b"."].concat().repeat(4);
        assert!(valid_helo(&[&long[..], b"x"].concat()));
        assert!(!valid_helo(&[&long[..], &long[..], b"x"].concat()));
    }

    #[test]
    fn xtext_rules() {
        assert!(xtext(b"abc+2B+3D"));
        assert!(!xtext(b"a+2b"));
        assert!(!xtext(b"a b"));
        assert!(!xtext(b"a="));
        assert!(!xtext(b"+"));
    }
}
