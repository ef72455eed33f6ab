//! What every local delivery method writes: the delivery headers, then
//! the spooled message line by line with CRLF turned into LF (local
//! mailboxes and MDAs expect Unix line endings; the spool keeps SMTP's).

#![forbid(unsafe_code)]

use super::{Outcome, Recipient};
use std::io::{self, BufRead, BufReader, Read};

/// The header lines OpenSMTPD's mda prepends for a local delivery
/// (mda.c, IMSG_MDA_OPEN_MESSAGE): `Return-Path: <sender>` unless the
/// sender is empty (a bounce), then `Delivered-To:` with the address
/// the client gave, which is what its loop check looks for on the way
/// back in. An existing Return-Path is left alone, as OpenSMTPD does.
pub fn delivery_headers(r: &Recipient) -> String {
    let to = if r.rcpt.is_empty() { &r.dest } else { &r.rcpt };
    if r.sender.is_empty() {
        format!("Delivered-To: {to}\n")
    } else {
        format!("Return-Path: <{}>\nDelivered-To: {to}\n", r.sender)
    }
}

/// The part of `addr`'s local part after the first '+', if any and not
/// empty: OpenSMTPD's subaddress ("gilles+hackers@" gives "hackers",
/// lka_session.c), exported to MDAs as EXTENSION and used by maildir to
/// pick a folder.
pub fn extension(addr: &str) -> Option<&str> {
    let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
    local
        .split_once('+')
        .map(|(_, ext)| ext)
        .filter(|e| !e.is_empty())
}

/// The spooled message read line by line, each line handed out with a
/// single LF at its end: "\r\n" becomes "\n", a lone CR stays, and a last
/// line without an end gets one (OpenSMTPD's helpers print every line
/// with "%s\n").
pub struct Lines<'a> {
    inner: BufReader<&'a mut dyn Read>,
    in_header: bool,
}

impl<'a> Lines<'a> {
    /// Read `message` from its current position.
    pub fn new(message: &'a mut dyn Read) -> Self {
        Lines {
            inner: BufReader::with_capacity(64 * 1024, message),
            in_header: true,
        }
    }

    /// Put the next line in `buf` (cleared first). Ok(false) at the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        if self.inner.read_until(b'\n', buf)? == 0 {
            return Ok(false);
        }
        if buf.ends_with(b"\r\n") {
            buf.truncate(buf.len() - 2);
            buf.push(b'\n');
        } else if !buf.ends_with(b"\n") {
            buf.push(b'\n');
        }
        if buf.as_slice() == b"\n" {
            self.in_header = false;
        }
        Ok(true)
    }

    /// Whether the line last returned is part of the header section: true
    /// until the first empty line, which itself is not.
    pub fn in_header(&self) -> bool {
        self.in_header
    }
}

/// "what: error" as a temporary failure: the message stays queued and
/// the scheduler retries, as OpenSMTPD's helpers do with EX_TEMPFAIL.
pub(crate) fn tempfail(what: &str, e: &io::Error) -> Outcome {
    Outcome::TempFail(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn recipient(sender: &str) -> Recipient {
        Recipient {
            sender: sender.into(),
            rcpt: "bob+lists@example.org".into(),
            dest: "bob@example.org".into(),
            user: "bob".into(),
            home: PathBuf::from("/home/bob"),
            uid: 1000,
            gid: 1000,
            hostname: "mx.example.org".into(),
        }
    }

    fn all_lines(input: &[u8]) -> Vec<(String, bool)> {
        let mut input = input;
        let mut lines = Lines::new(&mut input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while lines.next_into(&mut buf).expect("read") {
            out.push((
                String::from_utf8(buf.clone()).expect("utf8"),
                lines.in_header(),
            ));
        }
        out
    }

    #[test]
    fn headers_with_sender() {
        assert_eq!(
            delivery_headers(&recipient("alice@example.com")),
            "Return-Path: <alice@example.com>\nDelivered-To: bob+lists@example.org\n"
        );
    }

    #[test]
    fn headers_of_a_bounce() {
        assert_eq!(
            delivery_headers(&recipient("")),
            "Delivered-To: bob+lists@example.org\n"
        );
    }

    #[test]
    fn extension_of_addresses() {
        assert_eq!(extension("bob+lists@example.org"), Some("lists"));
        assert_eq!(extension("bob+a+b@example.org"), Some("a+b"));
        assert_eq!(extension("bob+@example.org"), None);
        assert_eq!(extension("bob@example.org"), None);
        assert_eq!(extension("bob+x"), Some("x"));
    }

    #[test]
    fn crlf_becomes_lf() {
        let got = all_lines(b"A: 1\r\nB: 2\r\n\r\nbody\rx\r\nlast");
        let want = [
            ("A: 1\n", true),
            ("B: 2\n", true),
            ("\n", false),
            ("body\rx\n", false),
            ("last\n", false),
        ];
        assert_eq!(got.len(), want.len());
        for ((g, gh), (w, wh)) in got.iter().zip(want) {
            assert_eq!((g.as_str(), *gh), (w, wh));
        }
    }

    #[test]
    fn empty_message() {
        assert!(all_lines(b"").is_empty());
    }
}
