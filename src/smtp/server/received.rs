//! The `Received:` header, in OpenSMTPD's shape (smtp_message_begin):
//!
//! ```text
//! Received: from HELO (RDNS [ADDRESS])
//! <TAB>by HOSTNAME (smtpd-rs) with ESMTPSA id ID (TLS-INFO) auth=yes user=USER
//! <TAB>for <RECIPIENT>;
//! <TAB>DATE
//! ```
//!
//! Lines end with CRLF, like the message they head. Every field is
//! escaped: anything but letters, digits and `-._:@+=/[]` (and, in the
//! recipient, non-ASCII letters) becomes `\xNN`, so no peer byte can end a
//! comment, a line or the header; fields are cut at 255 bytes, and a line
//! still longer than 998 bytes is folded at a space.

use std::fmt::Write as _;
use std::net::IpAddr;

/// What the header says; the glue fills it from the session.
#[derive(Debug, Clone, Default)]
pub struct Received<'a> {
    /// The HELO/EHLO name (`Event::Helo`), or "" if none was given.
    pub helo: &'a str,
    /// The client's address; `None` for a local client.
    pub client: Option<IpAddr>,
    /// The client's verified reverse name, if it has one.
    pub rdns: Option<&'a str>,
    /// `mask-src`: leave out the `from` part.
    pub mask_source: bool,
    /// Our name.
    pub hostname: &'a str,
    /// EHLO rather than HELO.
    pub esmtp: bool,
    /// The message id in the queue.
    pub id: &'a str,
    /// TLS in use: `version:cipher:bits:verified`, e.g.
    /// `TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO`.
    pub tls: Option<&'a str>,
    /// The authenticated user, if any.
    pub auth_user: Option<&'a str>,
    /// The listener's `received-auth`: show `auth=` and `user=` (on TLS).
    pub show_auth: bool,
    /// The recipient (`user@domain`), when the message has exactly one.
    pub rcpt: Option<&'a str>,
    /// The date, as RFC 5322 wants it (formatted by the glue).
    pub date: &'a str,
}

const MAX_FIELD: usize = 255;
const MAX_LINE: usize = 998;

/// The header, ending with CRLF.
pub fn received_header(r: &Received<'_>) -> String {
    let mut lines = Vec::new();
    let mut first = String::from("Received:");
    if !r.mask_source {
        let addr = match r.client {
            Some(ip) => ip.to_string(),
            None => "local".to_string(),
        };
        let rdns = r
            .rdns
            .map_or_else(|| "<unknown>".to_string(), |s| clean(s, false));
        let _ = write!(
            first,
            " from {} ({} [{}])",
            clean(r.helo, false),
            rdns,
            addr
        );
    }
    lines.push(first);
    let mut by = format!(
        "by {} (smtpd-rs) with {}SMTP{}{} id {}",
        clean(r.hostname, false),
        if r.esmtp { "E" } else { "" },
        if r.tls.is_some() { "S" } else { "" },
        if r.auth_user.is_some() { "A" } else { "" },
        clean(r.id, false)
    );
    if let Some(tls) = r.tls {
        let _ = write!(by, " ({})", clean(tls, false));
        if r.show_auth {
            match r.auth_user {
                Some(u) => {
                    let _ = write!(by, " auth=yes user={}", clean(u, false));
                }
                None => by.push_str(" auth=no"),
            }
        }
    }
    lines.push(by);
    if let Some(rcpt) = r.rcpt {
        lines.push(format!("for <{}>;", clean(rcpt, true)));
    } else if let Some(last) = lines.last_mut() {
        last.push(';');
    }
    lines.push(clean_date(r.date));
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        fold(line, &mut out);
        out.push_str("\r\n");
    }
    out
}

/// Escape and cut one field.
fn clean(s: &str, unicode: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= MAX_FIELD {
            break;
        }
        let plain = c.is_ascii_alphanumeric() || "-._:@+=/[]".contains(c);
        if plain || (unicode && !c.is_ascii() && !c.is_control()) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// The date keeps its spaces, commas and parentheses; control characters
/// and non-ASCII are escaped.
fn clean_date(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if out.len() >= MAX_FIELD {
            break;
        }
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Append `line`, folding it at spaces so no physical line passes 998.
fn fold(line: &str, out: &mut String) {
    let mut rest = line;
    // The first physical line already has a tab in front (or the name).
    while rest.len() > MAX_LINE - 1 {
        // A space is ASCII, so cutting there is on a char boundary.
        let cut = rest.as_bytes()[..MAX_LINE - 1]
            .iter()
            .rposition(|&b| b == b' ')
            .filter(|&i| i > 0);
        let Some(cut) = cut else { break };
        out.push_str(&rest[..cut]);
        out.push_str("\r\n\t");
        rest = &rest[cut + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Received<'static> {
        Received {
            helo: "client.example",
            client: Some("192.0.2.1".parse().unwrap()),
            rdns: Some("mail.example"),
            hostname: "mx.example.org",
            esmtp: true,
            id: "0a1b2c3d",
            date: "Wed, 1 Jan 2025 00:00:00 +0000 (UTC)",
            ..Received::default()
        }
    }

    #[test]
    fn opensmtpd_shape() {
        let r = Received {
            rcpt: Some("user@example.org"),
            ..base()
        };
        assert_eq!(
            received_header(&r),
            "Received: from client.example (mail.example [192.0.2.1])\r\n\
             \tby mx.example.org (smtpd-rs) with ESMTP id 0a1b2c3d\r\n\
             \tfor <user@example.org>;\r\n\
             \tWed, 1 Jan 2025 00:00:00 +0000 (UTC)\r\n"
        );
    }

    #[test]
    fn tls_auth_ipv6_no_rdns_several_rcpts() {
        let r = Received {
            client: Some("2001:db8::1".parse().unwrap()),
            rdns: None,
            esmtp: false,
            tls: Some("TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO"),
            auth_user: Some("joe"),
            show_auth: true,
            ..base()
        };
        assert_eq!(
            received_header(&r),
            "Received: from client.example (<unknown> [2001:db8::1])\r\n\
             \tby mx.example.org (smtpd-rs) with SMTPSA id 0a1b2c3d \
             (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO) auth=yes user=joe;\r\n\
             \tWed, 1 Jan 2025 00:00:00 +0000 (UTC)\r\n"
        );
        let r = Received {
            mask_source: true,
            client: None,
            ..base()
        };
        assert!(received_header(&r).starts_with("Received:\r\n\tby mx.example.org"));
    }

    #[test]
    fn peer_text_cannot_break_out() {
        let evil = "x)\r\nX-Evil: 1\0;(";
        let r = Received {
            helo: evil,
            rdns: Some(evil),
            auth_user: Some(evil),
            show_auth: true,
            tls: Some(evil),
            rcpt: Some("a>\r\nb@c"),
            date: "d\r\nX: y",
            ..base()
        };
        let h = received_header(&r);
        assert!(!h.contains("X-Evil: 1"), "{h}");
        assert!(!h.contains("\nX: y"), "{h}");
        assert!(!h.contains('\0'));
        // Exactly the four lines we wrote, each CRLF-terminated.
        assert_eq!(h.matches("\r\n").count(), 4);
        assert_eq!(h.matches('\n').count(), 4);
        assert_eq!(h.matches('\r').count(), 4);
        let r = Received {
            rcpt: Some("дима@пример.рф"),
            ..base()
        };
        assert!(received_header(&r).contains("for <дима@пример.рф>;"));
    }

    #[test]
    fn long_fields_are_cut_and_folded() {
        let long = "é".repeat(2000);
        let r = Received {
            helo: &long,
            rdns: Some(&long),
            hostname: &long,
            id: &long,
            tls: Some(&long),
            auth_user: Some(&long),
            show_auth: true,
            rcpt: Some(&long),
            date: &long,
            ..base()
        };
        let h = received_header(&r);
        for line in h.split("\r\n") {
            assert!(line.len() <= MAX_LINE, "{}", line.len());
        }
        assert!(h.ends_with("\r\n"));
        // Every continuation line starts with a tab.
        for line in h.trim_end().split("\r\n").skip(1) {
            assert!(line.starts_with('\t'));
        }
    }
}
