//! The command lines we send, built so that nothing from an envelope can
//! break out of its field: paths are checked to be one token without
//! brackets or controls, DSN values to be xtext (else left out), and
//! credentials travel base64-encoded.

#![forbid(unsafe_code)]

use super::{Capabilities, Envelope, Notify, Recipient, Ret};
use crate::smtp::address::Mailbox;

/// RFC 3461 4.4: ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;
/// RFC 3461 4.2: ORCPT is at most 500 characters.
const MAX_ORCPT: usize = 500;

/// The text of a path, if it is safe between `<` and `>`: no controls,
/// no blanks, no brackets. A `Mailbox` from `parse_path` always is; its
/// fields are public, so this is checked, not assumed.
pub(crate) fn path(m: &Option<Mailbox>) -> Option<String> {
    let Some(m) = m else {
        return Some(String::new());
    };
    token(m.to_string())
}

/// `s` if it is one token that is safe between `<` and `>`.
pub(crate) fn token(s: String) -> Option<String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != '<' && c != '>');
    ok.then_some(s)
}

/// RFC 3461 4: printable ASCII except `+`, `=` and space, or `+XX`.
fn xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if i + 2 >= b.len() {
                    return false;
                }
                if !(hex(b[i + 1]) && hex(b[i + 2])) {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

/// `addr-type;xtext` with an atom for the type.
fn orcpt(s: &str) -> bool {
    s.len() <= MAX_ORCPT
        && s.split_once(';').is_some_and(|(t, v)| {
            !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') && xtext(v)
        })
}

/// `MAIL FROM:<...>` with the parameters the server understands; the
/// caller has checked that it offers what the message needs.
pub(crate) fn mail(env: &Envelope, from: &str, utf8: bool, caps: &Capabilities) -> Vec<u8> {
    let mut s = format!("MAIL FROM:<{from}>");
    if caps.size.is_some() && env.size > 0 {
        s += &format!(" SIZE={}", env.size);
    }
    if env.body_8bit {
        s += " BODY=8BITMIME";
    }
    if utf8 {
        s += " SMTPUTF8";
    }
    if caps.dsn {
        match env.ret {
            Some(Ret::Full) => s += " RET=FULL",
            Some(Ret::Hdrs) => s += " RET=HDRS",
            None => {}
        }
        if let Some(id) = env
            .envid
            .as_deref()
            .filter(|i| i.len() <= MAX_ENVID && xtext(i))
        {
            s += &format!(" ENVID={id}");
        }
    }
    s += "\r\n";
    s.into_bytes()
}

/// `RCPT TO:<...>` with the DSN parameters when the server offers DSN.
pub(crate) fn rcpt(r: &Recipient, to: &str, caps: &Capabilities) -> Vec<u8> {
    let mut s = format!("RCPT TO:<{to}>");
    if caps.dsn {
        match r.notify {
            Some(Notify::Never) => s += " NOTIFY=NEVER",
            Some(Notify::When {
                success,
                failure,
                delay,
            }) => {
                let on: Vec<&str> = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                    .iter()
                    .filter(|(set, _)| *set)
                    .map(|(_, name)| *name)
                    .collect();
                if !on.is_empty() {
                    s += &format!(" NOTIFY={}", on.join(","));
                }
            }
            None => {}
        }
        if let Some(o) = r.orcpt.as_deref().filter(|o| orcpt(o)) {
            s += &format!(" ORCPT={o}");
        }
    }
    s += "\r\n";
    s.into_bytes()
}

/// Standard base64 with padding (RFC 4648 section 4).
pub(crate) fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The AUTH PLAIN response: `\0user\0password`, base64.
pub(crate) fn plain(user: &str, password: &[u8]) -> String {
    let mut raw = vec![0];
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password);
    base64(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::parse_path;

    #[test]
    fn base64_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(plain("joe", b"secret"), "AGpvZQBzZWNyZXQ=");
    }

    #[test]
    fn xtext_and_orcpt() {
        assert!(xtext("abc+2Bdef"));
        assert!(!xtext("a b"));
        assert!(!xtext("a=b"));
        assert!(!xtext("a+2"));
        assert!(!xtext("a+zz"));
        assert!(!xtext("a\r\nb"));
        assert!(orcpt("rfc822;joe@example.org"));
        assert!(!orcpt("joe@example.org"));
        assert!(!orcpt(";x"));
        assert!(!orcpt("rfc822;a\r\nRCPT TO:<x@y>"));
    }

    #[test]
    fn parameters_only_when_offered() {
        let addr = parse_path("joe@example.org", false).unwrap().unwrap();
        let r = Recipient {
            addr: addr.clone(),
            notify: Some(Notify::When {
                success: true,
                failure: true,
                delay: false,
            }),
            orcpt: Some("rfc822;joe@example.org".into()),
        };
        let env = Envelope {
            id: 1,
            mail_from: Some(addr),
            size: 42,
            body_8bit: true,
            smtputf8: false,
            ret: Some(Ret::Hdrs),
            envid: Some("bad envid".into()),
            rcpts: vec![r.clone()],
        };
        let none = Capabilities::default();
        let from = path(&env.mail_from).unwrap();
        assert_eq!(
            mail(&env, &from, false, &none),
            b"MAIL FROM:<joe@example.org> BODY=8BITMIME\r\n"
        );
        assert_eq!(
            rcpt(&r, "joe@example.org", &none),
            b"RCPT TO:<joe@example.org>\r\n"
        );
        let all = Capabilities {
            size: Some(0),
            dsn: true,
            ..none
        };
        assert_eq!(
            mail(&env, &from, true, &all),
            b"MAIL FROM:<joe@example.org> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS\r\n"
        );
        assert_eq!(
            rcpt(&r, "joe@example.org", &all),
            &b"RCPT TO:<joe@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;joe@example.org\r\n"[..]
        );
        assert_eq!(path(&None).unwrap(), "");
    }
}
