//! The service extensions a server lists in its EHLO reply.
//!
//! Keywords are matched case-insensitively; unknown ones and malformed
//! parameters are ignored (a `SIZE` that is not a number is taken as
//! "SIZE offered, no limit known"), since a missing extension only makes
//! us send less.

#![forbid(unsafe_code)]

use super::Reply;

/// What the server offers. `Default` is a HELO server: nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870) with its limit; `Some(0)`: offered, no fixed limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// AUTH PLAIN (RFC 4616).
    pub auth_plain: bool,
    /// AUTH LOGIN.
    pub auth_login: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
}

impl Capabilities {
    /// Read the lines after the first (the greeting) of an EHLO reply.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut c = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(word) = words.next() else { continue };
            let kw = word.to_ascii_uppercase();
            // Old servers write `AUTH=PLAIN LOGIN`.
            let (kw, first) = match kw.split_once('=') {
                Some(("AUTH", m)) => ("AUTH", Some(m.to_string())),
                _ => (kw.as_str(), None),
            };
            match kw {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "STARTTLS" => c.starttls = true,
                "ENHANCEDSTATUSCODES" => c.enhanced_status_codes = true,
                "CHUNKING" => c.chunking = true,
                "AUTH" => {
                    for m in first.iter().map(String::as_str).chain(words) {
                        match m.to_ascii_uppercase().as_str() {
                            "PLAIN" => c.auth_plain = true,
                            "LOGIN" => c.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(lines: &[&str]) -> Capabilities {
        Capabilities::from_ehlo(&Reply {
            code: 250,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn keywords() {
        let c = caps(&[
            "mx.example.org Hello",
            "pipelining",
            "SIZE 36700160",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "STARTTLS",
            "AUTH CRAM-MD5 plain LOGIN",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "X-UNKNOWN 1",
        ]);
        assert_eq!(
            c,
            Capabilities {
                pipelining: true,
                size: Some(36700160),
                eightbitmime: true,
                smtputf8: true,
                dsn: true,
                starttls: true,
                auth_plain: true,
                auth_login: true,
                enhanced_status_codes: true,
                chunking: true,
            }
        );
    }

    #[test]
    fn greeting_line_and_odd_forms() {
        // The first line is the greeting, even if it looks like a keyword.
        assert_eq!(caps(&["STARTTLS"]), Capabilities::default());
        let c = caps(&["hi", "SIZE", "AUTH=LOGIN", ""]);
        assert_eq!(c.size, Some(0));
        assert!(c.auth_login && !c.auth_plain);
        assert_eq!(caps(&["hi", "SIZE lots"]).size, Some(0));
    }
}
