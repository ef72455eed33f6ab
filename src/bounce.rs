//! Delivery status notifications (RFC 3464): the bounce, delay and
//! success reports sent back to a message's sender, and the RFC 3461
//! rules for whether to send one at all.
//!
//! The wording and layout follow OpenSMTPD's bounce.c
//! (bounce_next(), BOUNCE_DATA_NOTICE); the MIME structure is the
//! standard multipart/report (OpenSMTPD sends multipart/mixed).
//!
//! Everything placed in a header or in the header-like fields of the
//! delivery-status part comes through [`clean`]: the diagnostic text in
//! particular may be a hostile server's multi-line reply (CVE-2020-8794
//! was OpenSMTPD copying one into a bounce), so control characters,
//! CR and LF included, are replaced and lengths capped: no input can add
//! a header line. The MIME boundary is random and checked against the
//! whole content, so no input can forge one either.

#![forbid(unsafe_code)]

use crate::spool::{DsnRet, Notify};
use std::fmt::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

/// Cap on an address in a report, bytes (RFC 5321's path is 256).
const MAX_ADDR: usize = 500;
/// Cap on a diagnostic text, bytes: every report line stays well under
/// RFC 5322's 998.
const MAX_DIAG: usize = 400;
/// Cap on the hostname, bytes (a DNS name is at most 253).
const MAX_HOST: usize = 253;

/// The RFC 3464 Action of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Handed to an MTA that does not speak DSN (OpenSMTPD's
    /// mta_without_dsn).
    Relayed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    /// The status class RFC 3464 pairs with the action.
    fn class(self) -> u8 {
        match self {
            Action::Failed => 5,
            Action::Delayed => 4,
            Action::Delivered | Action::Relayed => 2,
        }
    }
}

/// What the whole report is about: its Subject and its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Failure,
    /// A delay notice: `delay` is the warn interval passed, `ttl` how long
    /// the message is kept (both seconds, for the text).
    Delay {
        delay: u64,
        ttl: u64,
    },
    Success,
    Relayed,
}

impl ReportKind {
    fn action(self) -> Action {
        match self {
            ReportKind::Failure => Action::Failed,
            ReportKind::Delay { .. } => Action::Delayed,
            ReportKind::Success => Action::Delivered,
            ReportKind::Relayed => Action::Relayed,
        }
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    class: u8,
    subject: u16,
    detail: u16,
}

impl Status {
    /// None unless class is 2, 4 or 5 and the others at most 999.
    pub fn new(class: u8, subject: u16, detail: u16) -> Option<Status> {
        (matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999).then_some(Status {
            class,
            subject,
            detail,
        })
    }

    /// "5.1.1" to a status; None if it is not one.
    pub fn parse(s: &str) -> Option<Status> {
        let mut it = s.split('.');
        let num = |p: Option<&str>, max: usize| -> Option<u16> {
            let p = p?;
            let ok = !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| p.parse().ok()).flatten()
        };
        let class = num(it.next(), 1)?;
        let subject = num(it.next(), 3)?;
        let detail = num(it.next(), 3)?;
        if it.next().is_some() {
            return None;
        }
        Status::new(class as u8, subject, detail)
    }

    /// The status of a recipient from its error text: the enhanced code
    /// after the reply code ("550 5.1.1 ..."), else the reply code's class
    /// ("550 ..." gives 5.0.0), else the action's. The class always
    /// agrees with the action (a failure reported after a 4xx is 5.x.x).
    pub fn from_reply(text: &str, action: Action) -> Status {
        let t = text.trim_start().as_bytes();
        let code = (t.len() >= 3 && t[..3].iter().all(u8::is_ascii_digit)).then(|| t[0] - b'0');
        let enhanced = code.and_then(|_| {
            let rest = std::str::from_utf8(t.get(4..)?).ok()?;
            Status::parse(rest.split_whitespace().next()?)
        });
        let (subject, detail) = match enhanced {
            Some(s) if Some(s.class) == code => (s.subject, s.detail),
            _ => (0, 0),
        };
        Status {
            class: action.class(),
            subject,
            detail,
        }
    }

    pub fn class(self) -> u8 {
        self.class
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptReport {
    /// The final recipient, user@domain.
    pub rcpt: String,
    /// RFC 3461 ORCPT as received ("rfc822;" xtext), if given.
    pub orcpt: Option<String>,
    pub action: Action,
    /// None: derived from `diagnostic` by [`Status::from_reply`].
    pub status: Option<Status>,
    /// The error: a server's reply or a local reason. Untrusted.
    pub diagnostic: String,
    /// When delivery was last tried, unix seconds.
    pub last_attempt: Option<u64>,
}

/// Everything a report is made of.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// This host's name (From:, Message-Id:, Reporting-MTA:).
    pub hostname: &'a str,
    /// The original message's envelope sender: the report's recipient.
    pub sender: &'a str,
    pub kind: ReportKind,
    pub recipients: &'a [RcptReport],
    /// RFC 3461 ENVID as received (xtext), if given.
    pub envid: Option<&'a str>,
    /// When the original message arrived, and now (unix seconds).
    pub arrival: u64,
    pub now: u64,
    /// RFC 3461 RET, if given.
    pub ret: Option<DsnRet>,
    /// The original message as spooled (CRLF line endings).
    pub message: &'a [u8],
}

/// Whether `sender` gets a report of `action` under RFC 3461 NOTIFY.
/// Never to the null sender or a MAILER-DAEMON (a bounce never bounces),
/// never with NOTIFY=NEVER. Without NOTIFY, failures are reported and so
/// are delays (RFC 3461 leaves delays to the server; OpenSMTPD sends
/// them), successes never.
pub fn should_bounce(sender: &str, notify: Notify, action: Action) -> bool {
    let local = sender.rsplit_once('@').map_or(sender, |(l, _)| l);
    if sender.is_empty() || local.eq_ignore_ascii_case("mailer-daemon") {
        return false;
    }
    if notify.contains(Notify::NEVER) {
        return false;
    }
    match action {
        Action::Failed => notify.is_empty() || notify.contains(Notify::FAILURE),
        Action::Delayed => notify.is_empty() || notify.contains(Notify::DELAY),
        Action::Delivered | Action::Relayed => notify.contains(Notify::SUCCESS),
    }
}

/// Safe for a header field: every control character (C0, DEL, C1, and
/// the Unicode line and paragraph separators) becomes a space, and the
/// result is cut to `cap` bytes on a character boundary.
pub fn clean(s: &str, cap: usize) -> String {
    let mut out = String::with_capacity(s.len().min(cap));
    for c in s.chars() {
        let c = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            ' '
        } else {
            c
        };
        if out.len() + c.len_utf8() > cap {
            break;
        }
        out.push(c);
    }
    out
}

/// A hostname reduced to what a domain may hold, for addresses and ids.
fn host_part(h: &str) -> String {
    let h: String = h
        .chars()
        .take(MAX_HOST)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// RFC 3461 xtext decoded ("+2B" to "+"); malformed escapes kept as is.
fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'+' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// OpenSMTPD's bounce_duration(): "4 hours", "1 day".
fn duration(d: u64) -> String {
    let (n, unit) = match d {
        0..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        _ => (d / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn date(t: u64) -> String {
    crate::dispatcher::conn::rfc5322_date(UNIX_EPOCH + Duration::from_secs(t))
}

/// Whether `needle` occurs anywhere in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The message with every line ending CRLF, cut after the header section
/// unless `full`.
fn original(message: &[u8], full: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 2);
    for line in message.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if !full && body.is_empty() {
            break;
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The text/plain part's body, in OpenSMTPD's words (bounce.c).
fn notice(r: &Report<'_>) -> String {
    let mut t = String::from(
        "    Hi!\r\n\r\n    This is the MAILER-DAEMON, please DO NOT REPLY to this email.\r\n\r\n",
    );
    match r.kind {
        ReportKind::Failure => t.push_str(
            "    An error has occurred while attempting to deliver a message for\r\n    \
             the following list of recipients:\r\n\r\n",
        ),
        ReportKind::Delay { delay, .. } => {
            let _ = write!(
                t,
                "    A message is delayed for more than {} for the following\r\n    \
                 list of recipients:\r\n\r\n",
                duration(delay)
            );
        }
        ReportKind::Success => {
            t.push_str("    Your message was successfully delivered to these recipients.\r\n\r\n")
        }
        ReportKind::Relayed => {
            t.push_str("    Your message was relayed to these recipients.\r\n\r\n")
        }
    }
    for rc in r.recipients {
        let diag = clean(rc.diagnostic.trim(), MAX_DIAG);
        let _ = if diag.is_empty() {
            write!(t, "{}\r\n", clean(&rc.rcpt, MAX_ADDR))
        } else {
            write!(t, "{}: {}\r\n", clean(&rc.rcpt, MAX_ADDR), diag)
        };
    }
    t.push_str("\r\n");
    if let ReportKind::Delay { ttl, .. } = r.kind {
        let _ = write!(
            t,
            "    Please note that this is only a temporary failure report.\r\n    \
             The message is kept in the queue for up to {}.\r\n    \
             You DO NOT NEED to re-send the message to these recipients.\r\n\r\n",
            duration(ttl)
        );
    }
    t.push_str("    Below is a copy of the original message:\r\n\r\n");
    t
}

/// The message/delivery-status part's body (RFC 3464 section 2).
fn delivery_status(r: &Report<'_>, host: &str) -> String {
    let mut d = String::new();
    let _ = write!(d, "Reporting-MTA: dns; {host}\r\n");
    if let Some(e) = r.envid {
        let e = clean(&xtext_decode(e), MAX_DIAG);
        if !e.trim().is_empty() {
            let _ = write!(d, "Original-Envelope-Id: {e}\r\n");
        }
    }
    let _ = write!(d, "Arrival-Date: {}\r\n\r\n", date(r.arrival));
    for rc in r.recipients {
        if let Some(o) = &rc.orcpt {
            let o = clean(&xtext_decode(o), MAX_ADDR);
            let o = match o.split_once(';') {
                Some((ty, addr)) => format!("{};{}", ty.trim(), addr.trim()),
                None => format!("rfc822;{}", o.trim()),
            };
            let _ = write!(d, "Original-Recipient: {o}\r\n");
        }
        let status = rc
            .status
            .unwrap_or_else(|| Status::from_reply(&rc.diagnostic, rc.action));
        let _ = write!(
            d,
            "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
            clean(&rc.rcpt, MAX_ADDR),
            rc.action.as_str(),
            status
        );
        let diag = clean(rc.diagnostic.trim(), MAX_DIAG);
        if !diag.is_empty() {
            // "smtp" says the text is an SMTP reply; a local reason gets
            // an X- type, as RFC 3464 section 2.3.6 allows.
            let b = diag.as_bytes();
            let reply = b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit);
            let ty = if reply { "smtp" } else { "X-Smtpd" };
            let _ = write!(d, "Diagnostic-Code: {ty}; {diag}\r\n");
        }
        if let Some(t) = rc.last_attempt {
            let _ = write!(d, "Last-Attempt-Date: {}\r\n", date(t));
        }
        if let (Action::Delayed, ReportKind::Delay { ttl, .. }) = (rc.action, r.kind) {
            let until = r.arrival.saturating_add(ttl);
            let _ = write!(d, "Will-Retry-Until: {}\r\n", date(until));
        }
        d.push_str("\r\n");
    }
    d
}

/// A boundary found in none of `parts`: 128 random bits and a counter,
/// so each candidate differs and the search ends even if randomness
/// failed (a content of n bytes holds at most n candidates).
fn boundary(parts: &[&[u8]]) -> String {
    boundary_from(parts, crate::spool::id::random_u64)
}

fn boundary_from(parts: &[&[u8]], mut random: impl FnMut() -> u64) -> String {
    let mut n = 0u64;
    loop {
        let cand = format!("=_{:016x}{:016x}_{n}", random(), random());
        if !parts.iter().any(|p| contains(p, cand.as_bytes())) {
            return cand;
        }
        n += 1;
    }
}

/// The whole report as an RFC 5322 message, CRLF line endings.
///
/// The original message goes back whole (message/rfc822) only for a
/// failure with RET=FULL; otherwise its header section alone
/// (text/rfc822-headers), as OpenSMTPD's bounce_next() does: delay and
/// success notices never carry the body.
pub fn bounce_message(r: &Report<'_>) -> Vec<u8> {
    let host = host_part(r.hostname);
    let full = r.kind == ReportKind::Failure && r.ret == Some(DsnRet::Full);
    let text = notice(r);
    let status = delivery_status(r, &host);
    let orig = original(r.message, full);
    let eight_bit = |b: &[u8]| b.iter().any(|&c| c >= 0x80);
    let bnd = boundary(&[text.as_bytes(), status.as_bytes(), &orig]);

    let mut m: Vec<u8> = Vec::with_capacity(orig.len() + text.len() + status.len() + 1024);
    let any8 = eight_bit(text.as_bytes()) || eight_bit(status.as_bytes()) || eight_bit(&orig);
    let to = clean(r.sender, MAX_ADDR);
    let id = format!(
        "{:016x}.{:016x}",
        crate::spool::id::random_u64(),
        crate::spool::id::random_u64()
    );
    let mut h = String::new();
    let _ = write!(
        h,
        "From: Mailer Daemon <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: Delivery status notification: {}\r\n\
         Date: {}\r\n\
         Message-Id: <{id}@{host}>\r\n\
         MIME-Version: 1.0\r\n\
         Auto-Submitted: auto-replied\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{bnd}\"\r\n",
        r.kind.action().as_str(),
        date(r.now),
    );
    if any8 {
        h.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    let _ = write!(h, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
    let charset = if eight_bit(text.as_bytes()) {
        "utf-8"
    } else {
        "us-ascii"
    };
    let _ = write!(
        h,
        "--{bnd}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset={charset}\r\n\r\n{text}\
         --{bnd}\r\n\
         Content-Description: Delivery Report\r\n\
         Content-Type: message/delivery-status\r\n\r\n{status}\
         --{bnd}\r\n"
    );
    if full {
        h.push_str("Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n");
    } else {
        h.push_str("Content-Description: Message headers\r\nContent-Type: text/rfc822-headers\r\n");
    }
    if eight_bit(&orig) {
        h.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    h.push_str("\r\n");
    m.extend_from_slice(h.as_bytes());
    m.extend_from_slice(&orig);
    m.extend_from_slice(format!("\r\n--{bnd}--\r\n").as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;
    const MSG: &[u8] = b"From: alice@example.org\r\nTo: bob@example.net\r\n\
Subject: hello\r\n\r\nbody line 1\r\n.dot line\r\nbody line 3\r\n";

    fn rcpt(addr: &str, action: Action, diag: &str) -> RcptReport {
        RcptReport {
            rcpt: addr.into(),
            orcpt: None,
            action,
            status: None,
            diagnostic: diag.into(),
            last_attempt: Some(T0 + 60),
        }
    }

    fn report<'a>(kind: ReportKind, rcpts: &'a [RcptReport], ret: Option<DsnRet>) -> Report<'a> {
        Report {
            hostname: "mx.example.net",
            sender: "alice@example.org",
            kind,
            recipients: rcpts,
            envid: None,
            arrival: T0,
            now: T0 + 120,
            ret,
            message: MSG,
        }
    }

    /// The message split into its header lines and its body, after
    /// checking that every line ends CRLF and no bare CR or LF is left.
    fn parse(m: &[u8]) -> (Vec<String>, String) {
        let s = String::from_utf8(m.to_vec()).expect("utf-8");
        assert!(s.ends_with("\r\n"));
        let stripped = s.replace("\r\n", "");
        assert!(
            !stripped.contains('\r') && !stripped.contains('\n'),
            "bare CR/LF"
        );
        let (head, body) = s.split_once("\r\n\r\n").expect("header/body");
        (
            head.split("\r\n").map(String::from).collect(),
            body.to_string(),
        )
    }

    fn header<'a>(h: &'a [String], name: &str) -> Vec<&'a str> {
        let p = format!("{name}: ");
        h.iter().filter_map(|l| l.strip_prefix(&p)).collect()
    }

    fn boundary_of(h: &[String]) -> String {
        let l = h
            .iter()
            .find(|l| l.contains("boundary="))
            .expect("boundary");
        l.split("boundary=\"")
            .nth(1)
            .and_then(|x| x.strip_suffix('"'))
            .expect("quoted")
            .into()
    }

    /// Every header line is a known field or a continuation.
    fn only_known_headers(h: &[String]) {
        const KNOWN: &[&str] = &[
            "From",
            "To",
            "Subject",
            "Date",
            "Message-Id",
            "MIME-Version",
            "Auto-Submitted",
            "Content-Type",
            "Content-Transfer-Encoding",
        ];
        for l in h {
            if l.starts_with('\t') {
                continue;
            }
            let name = l.split(':').next().expect("name");
            assert!(KNOWN.contains(&name), "unexpected header {l:?}");
        }
        for k in KNOWN {
            assert!(header(h, k).len() <= 1, "{k} twice");
        }
    }

    #[test]
    fn failure_report_structure() {
        let rc = [
            rcpt(
                "bob@example.net",
                Action::Failed,
                "550 5.1.1 <bob@example.net>: no such user",
            ),
            RcptReport {
                orcpt: Some("rfc822;carol+2Bx@example.net".into()),
                ..rcpt("carol@example.net", Action::Failed, "552 mailbox full")
            },
        ];
        let mut r = report(ReportKind::Failure, &rc, None);
        r.envid = Some("QQ+3D314");
        let m = bounce_message(&r);
        let (h, body) = parse(&m);
        only_known_headers(&h);
        assert_eq!(
            header(&h, "From"),
            ["Mailer Daemon <MAILER-DAEMON@mx.example.net>"]
        );
        assert_eq!(header(&h, "To"), ["<alice@example.org>"]);
        assert_eq!(
            header(&h, "Subject"),
            ["Delivery status notification: failed"]
        );
        assert_eq!(header(&h, "Auto-Submitted"), ["auto-replied"]);
        assert_eq!(header(&h, "MIME-Version"), ["1.0"]);
        assert_eq!(header(&h, "Date"), ["Tue, 14 Nov 2023 22:15:20 +0000"]);
        let id = header(&h, "Message-Id")[0];
        assert!(id.starts_with('<') && id.ends_with("@mx.example.net>"));
        assert!(header(&h, "Content-Type")[0]
            .starts_with("multipart/report; report-type=delivery-status;"));

        let b = boundary_of(&h);
        assert!(b.len() <= 70);
        let delim = format!("--{b}");
        let lines: Vec<&str> = body.split("\r\n").collect();
        assert_eq!(lines.iter().filter(|l| **l == delim).count(), 3);
        assert_eq!(
            lines.iter().filter(|l| **l == format!("{delim}--")).count(),
            1
        );
        assert_eq!(lines.last(), Some(&""));
        assert_eq!(lines[lines.len() - 2], format!("{delim}--"));

        assert!(body.contains("    Hi!\r\n"));
        assert!(body.contains("This is the MAILER-DAEMON, please DO NOT REPLY to this email."));
        assert!(body.contains("An error has occurred while attempting to deliver"));
        assert!(body.contains("\r\nbob@example.net: 550 5.1.1 <bob@example.net>: no such user\r\n"));
        assert!(body.contains("\r\nReporting-MTA: dns; mx.example.net\r\n"));
        assert!(body.contains("\r\nOriginal-Envelope-Id: QQ=314\r\n"));
        assert!(body.contains("\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        assert!(body.contains(
            "\r\nFinal-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such user\r\n\
             Last-Attempt-Date: Tue, 14 Nov 2023 22:14:20 +0000\r\n\r\n"
        ));
        assert!(body.contains(
            "\r\nOriginal-Recipient: rfc822;carol+x@example.net\r\n\
             Final-Recipient: rfc822; carol@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        ));
        // No RET: the headers alone.
        assert!(
            body.contains("Content-Type: text/rfc822-headers\r\n\r\nFrom: alice@example.org\r\n")
        );
        assert!(body.contains("Subject: hello\r\n"));
        assert!(!body.contains("body line"));
        assert!(!body.contains("Content-Transfer-Encoding"));
    }

    #[test]
    fn ret_full_and_hdrs() {
        let rc = [rcpt("bob@example.net", Action::Failed, "550 no")];
        let full = bounce_message(&report(ReportKind::Failure, &rc, Some(DsnRet::Full)));
        let (_, body) = parse(&full);
        assert!(body.contains("Content-Type: message/rfc822\r\n\r\nFrom: alice@example.org\r\n"));
        assert!(body.contains("\r\n\r\nbody line 1\r\n.dot line\r\nbody line 3\r\n"));
        assert!(!body.contains("text/rfc822-headers"));

        let hdrs = bounce_message(&report(ReportKind::Failure, &rc, Some(DsnRet::Hdrs)));
        let (_, body) = parse(&hdrs);
        assert!(body.contains("text/rfc822-headers"));
        assert!(!body.contains("body line"));

        // A delay notice never carries the body, whatever RET says.
        let rc = [rcpt("bob@example.net", Action::Delayed, "421 later")];
        let kind = ReportKind::Delay {
            delay: 4 * 3600,
            ttl: 4 * 86400,
        };
        let delay = bounce_message(&report(kind, &rc, Some(DsnRet::Full)));
        assert!(!parse(&delay).1.contains("body line"));
    }

    #[test]
    fn delay_and_success_wording() {
        let rc = [rcpt(
            "bob@example.net",
            Action::Delayed,
            "421 4.4.2 timeout",
        )];
        let kind = ReportKind::Delay {
            delay: 4 * 3600,
            ttl: 4 * 86400,
        };
        let (h, body) = parse(&bounce_message(&report(kind, &rc, None)));
        assert_eq!(
            header(&h, "Subject"),
            ["Delivery status notification: delayed"]
        );
        assert!(body.contains("A message is delayed for more than 4 hours for the following"));
        assert!(body.contains("The message is kept in the queue for up to 4 days."));
        assert!(body.contains("You DO NOT NEED to re-send the message"));
        assert!(body.contains("Action: delayed\r\nStatus: 4.4.2\r\n"));
        assert!(body.contains("Will-Retry-Until: Sat, 18 Nov 2023 22:13:20 +0000\r\n"));

        let rc = [rcpt("bob@example.net", Action::Delivered, "")];
        let (h, body) = parse(&bounce_message(&report(ReportKind::Success, &rc, None)));
        assert_eq!(
            header(&h, "Subject"),
            ["Delivery status notification: delivered"]
        );
        assert!(body.contains("Your message was successfully delivered to these recipients."));
        assert!(body.contains("Action: delivered\r\nStatus: 2.0.0\r\n"));
        assert!(!body.contains("Diagnostic-Code"));
        let (h, _) = parse(&bounce_message(&report(ReportKind::Relayed, &rc, None)));
        assert_eq!(
            header(&h, "Subject"),
            ["Delivery status notification: relayed"]
        );
    }

    #[test]
    fn injection_is_neutralised() {
        // CVE-2020-8794: a multi-line reply with header and MIME lines.
        let evil =
            "550 no\r\nBcc: evil@x\r\n\r\n--=_0000\r\nContent-Type: text/html\r\n\0\x1b\u{85}";
        let rc = [RcptReport {
            orcpt: Some("rfc822;a+0D+0ABcc:+20evil@x".into()),
            ..rcpt("bob@example.net\r\nBcc: evil@x", Action::Failed, evil)
        }];
        let mut r = report(ReportKind::Failure, &rc, Some(DsnRet::Full));
        r.sender = "alice@example.org\r\nBcc: evil@x";
        r.hostname = "mx\r\nBcc: evil@x";
        r.envid = Some("x+0D+0ABcc:+20evil@x");
        let m = bounce_message(&r);
        let (h, body) = parse(&m);
        only_known_headers(&h);
        assert!(header(&h, "Bcc").is_empty());
        for l in body.split("\r\n") {
            assert!(!l.starts_with("Bcc:"), "injected line {l:?}");
            assert!(!l.starts_with("Content-Type: text/html"));
            assert!(!l.starts_with("--=_0000"));
        }
        let b = boundary_of(&h);
        let delim = format!("--{b}");
        let starts = body.split("\r\n").filter(|l| l.starts_with("--")).count();
        assert_eq!(starts, 4, "three delimiters and the close");
        assert_eq!(body.matches(&b).count(), 4);
        assert!(body.contains(": 550 no  Bcc: evil@x    --=_0000  Content-Type: text/html"));
        assert!(body.contains(&format!("{delim}--\r\n")));
        assert!(m.iter().all(|&c| c != 0 && c != 0x1b));
    }

    #[test]
    fn boundary_avoids_the_content() {
        // A message that holds many would-be boundaries still gets a
        // fresh one.
        let mut msg = MSG.to_vec();
        msg.extend_from_slice(b"--=_\r\n=_0\r\n");
        let rc = [rcpt("bob@example.net", Action::Failed, "550 no")];
        let mut r = report(ReportKind::Failure, &rc, Some(DsnRet::Full));
        r.message = &msg;
        let (h, body) = parse(&bounce_message(&r));
        let b = boundary_of(&h);
        assert_eq!(body.matches(&b).count(), 4);
        // With no randomness at all, the counter still finds a free one.
        let zero = format!("=_{}", "0".repeat(32));
        let taken = format!("x{zero}_0 {zero}_1 {zero}_3");
        assert_eq!(
            boundary_from(&[taken.as_bytes()], || 0),
            format!("{zero}_2")
        );
    }

    #[test]
    #[ignore = "prints a sample report"]
    fn sample() {
        let rc = [rcpt(
            "bob@example.net",
            Action::Failed,
            "550 5.1.1 no such user",
        )];
        let m = bounce_message(&report(ReportKind::Failure, &rc, None));
        println!("{}", String::from_utf8_lossy(&m));
    }

    #[test]
    fn long_and_8bit_input_is_capped_and_labelled() {
        let rc = [rcpt(
            "ü@bücher.example",
            Action::Failed,
            &"x".repeat(100_000),
        )];
        let mut msg = b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n".to_vec();
        msg.extend_from_slice(b"no final newline");
        let mut r = report(ReportKind::Failure, &rc, Some(DsnRet::Full));
        r.message = &msg;
        let m = bounce_message(&r);
        let (h, body) = parse(&m);
        assert_eq!(header(&h, "Content-Transfer-Encoding"), ["8bit"]);
        assert!(body.contains("charset=utf-8"));
        assert!(body.split("\r\n").all(|l| l.len() <= 998));
        assert!(body.contains("no final newline\r\n\r\n--"));
        // Bare LF in the original becomes CRLF.
        let mut r = report(ReportKind::Failure, &rc, None);
        r.message = b"A: 1\nB: 2\n\nbody\n";
        let (_, body) = parse(&bounce_message(&r));
        assert!(body.contains("A: 1\r\nB: 2\r\n"));
    }

    #[test]
    fn status_derivation() {
        let s = |t, a| Status::from_reply(t, a).to_string();
        assert_eq!(s("550 5.1.1 no such user", Action::Failed), "5.1.1");
        assert_eq!(s("550-5.7.26 unauthenticated", Action::Failed), "5.7.26");
        assert_eq!(s("550 no", Action::Failed), "5.0.0");
        assert_eq!(s("452 4.2.2 full", Action::Delayed), "4.2.2");
        // The class follows the action (a failure after 4xx retries).
        assert_eq!(s("421 4.4.2 timeout", Action::Failed), "5.4.2");
        // An enhanced code of another class than the reply is ignored.
        assert_eq!(s("550 4.1.1 odd", Action::Failed), "5.0.0");
        assert_eq!(s("Envelope expired", Action::Failed), "5.0.0");
        assert_eq!(s("", Action::Delivered), "2.0.0");
        assert_eq!(Status::parse("5.1.1"), Status::new(5, 1, 1));
        for bad in [
            "", "5.1", "5.1.1.1", "3.1.1", "5.1000.1", "5..1", "a.b.c", "5.1.1 ",
        ] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
        let rc = [RcptReport {
            status: Status::new(5, 4, 7),
            ..rcpt("bob@example.net", Action::Failed, "Envelope expired")
        }];
        let (_, body) = parse(&bounce_message(&report(ReportKind::Failure, &rc, None)));
        assert!(body.contains("Status: 5.4.7\r\nDiagnostic-Code: X-Smtpd; Envelope expired\r\n"));
    }

    #[test]
    fn who_gets_a_report() {
        let dflt = Notify::default();
        assert!(should_bounce("alice@example.org", dflt, Action::Failed));
        assert!(should_bounce("alice@example.org", dflt, Action::Delayed));
        assert!(!should_bounce("alice@example.org", dflt, Action::Delivered));
        // The null sender and MAILER-DAEMON never get one.
        for s in ["", "MAILER-DAEMON@example.org", "mailer-daemon"] {
            for a in [Action::Failed, Action::Delayed, Action::Delivered] {
                assert!(!should_bounce(s, Notify::FAILURE, a), "{s:?} {a:?}");
            }
        }
        assert!(!should_bounce(
            "alice@example.org",
            Notify::NEVER,
            Action::Failed
        ));
        assert!(should_bounce(
            "alice@example.org",
            Notify::FAILURE,
            Action::Failed
        ));
        assert!(!should_bounce(
            "alice@example.org",
            Notify::FAILURE,
            Action::Delayed
        ));
        assert!(should_bounce(
            "alice@example.org",
            Notify::DELAY,
            Action::Delayed
        ));
        assert!(!should_bounce(
            "alice@example.org",
            Notify::DELAY,
            Action::Failed
        ));
        assert!(should_bounce(
            "alice@example.org",
            Notify::SUCCESS,
            Action::Delivered
        ));
        assert!(should_bounce(
            "alice@example.org",
            Notify::SUCCESS,
            Action::Relayed
        ));
        assert!(!should_bounce(
            "alice@example.org",
            Notify::SUCCESS,
            Action::Failed
        ));
    }

    #[test]
    fn helpers() {
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(59), "59 seconds");
        assert_eq!(duration(60), "1 minute");
        assert_eq!(duration(4 * 3600), "4 hours");
        assert_eq!(duration(86400), "1 day");
        assert_eq!(duration(7 * 86400), "7 days");
        assert_eq!(xtext_decode("a+2Bb+3D"), "a+b=");
        assert_eq!(xtext_decode("a+2"), "a+2");
        assert_eq!(xtext_decode("+zz+"), "+zz+");
        assert_eq!(clean("a\r\nb\0c\u{2028}", 100), "a  b c ");
        assert_eq!(clean("üüü", 5), "üü");
        assert_eq!(host_part(""), "localhost");
        assert_eq!(host_part("mx <x>"), "mx--x-");
    }
}
