//! AUTH PLAIN (RFC 4616) and LOGIN responses, and the base64 they come
//! in. Total and strict: anything malformed is refused, never repaired.

/// Longest user name and password we pass on.
const MAX_USER: usize = 255;
const MAX_PASSWORD: usize = 1024;

/// Standard base64 with padding (RFC 4648 section 4). `None` on any other
/// byte, a missing or misplaced `=`, or a length not a multiple of 4.
pub(crate) fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let groups = s.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (g, quad) in s.chunks_exact(4).enumerate() {
        let mut n = 0u32;
        let mut pad = 0;
        for (k, &c) in quad.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                // Padding only at the end of the last group, at most two.
                b'=' if g + 1 == groups && k >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = (n << 6) | u32::from(v);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// What a response line decodes to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<T> {
    Ok(T),
    /// `*`: the client gave up (RFC 4954).
    Cancelled,
    /// Not base64, or not the expected content.
    Bad,
}

/// An AUTH PLAIN response: `[authzid] NUL authcid NUL passwd`. An authzid
/// other than the user itself is refused (we cannot check the right to act
/// as someone else, so we never grant it).
pub(crate) fn plain(line: &[u8]) -> Decoded<(String, Vec<u8>)> {
    if line == b"*" {
        return Decoded::Cancelled;
    }
    let Some(raw) = base64_decode(line) else {
        return Decoded::Bad;
    };
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Decoded::Bad;
    };
    let Some(user) = user_name(user) else {
        return Decoded::Bad;
    };
    if !authz.is_empty() && authz != user.as_bytes() {
        return Decoded::Bad;
    }
    match password(pass) {
        Some(p) => Decoded::Ok((user, p)),
        None => Decoded::Bad,
    }
}

/// An AUTH LOGIN user name line.
pub(crate) fn login_user(line: &[u8]) -> Decoded<String> {
    if line == b"*" {
        return Decoded::Cancelled;
    }
    match base64_decode(line).as_deref().and_then(user_name) {
        Some(u) => Decoded::Ok(u),
        None => Decoded::Bad,
    }
}

/// An AUTH LOGIN password line.
pub(crate) fn login_password(line: &[u8]) -> Decoded<Vec<u8>> {
    if line == b"*" {
        return Decoded::Cancelled;
    }
    match base64_decode(line).as_deref().and_then(password) {
        Some(p) => Decoded::Ok(p),
        None => Decoded::Bad,
    }
}

/// A non-empty UTF-8 name without control characters.
fn user_name(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.len() > MAX_USER || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.to_string())
}

/// A non-empty password without NUL, CR or LF (they could not be checked
/// against a table line anyway).
fn password(b: &[u8]) -> Option<Vec<u8>> {
    if b.is_empty() || b.len() > MAX_PASSWORD || b.iter().any(|&c| matches!(c, 0 | b'\r' | b'\n')) {
        return None;
    }
    Some(b.to_vec())
}

#[cfg(test)]
pub(crate) fn base64_encode(b: &[u8]) -> String {
    crate::smtp::client::base64(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let enc = base64_encode(&data);
            assert_eq!(base64_decode(enc.as_bytes()), Some(data));
        }
        assert_eq!(
            base64_decode(b"AHVzZXIAcGFzcw=="),
            Some(b"\0user\0pass".to_vec())
        );
    }

    #[test]
    fn base64_is_strict() {
        for bad in [
            &b"A"[..],
            b"AB",
            b"ABC",
            b"AB=C",
            b"A===",
            b"====",
            b"AB==AB==",
            b"AB\r\n",
            b"AB C",
            b"AB-_",
            b"\xff\xff\xff\xff",
        ] {
            assert_eq!(base64_decode(bad), None, "{:?}", bad);
        }
        assert_eq!(base64_decode(b""), Some(Vec::new()));
    }

    #[test]
    fn plain_responses() {
        let enc = |s: &[u8]| base64_encode(s);
        assert_eq!(
            plain(enc(b"\0user\0pass").as_bytes()),
            Decoded::Ok(("user".into(), b"pass".to_vec()))
        );
        assert_eq!(
            plain(enc(b"user\0user\0pass").as_bytes()),
            Decoded::Ok(("user".into(), b"pass".to_vec()))
        );
        assert_eq!(plain(b"*"), Decoded::Cancelled);
        for bad in [
            &b"other\0user\0pass"[..],
            b"\0user\0",
            b"\0\0pass",
            b"\0user",
            b"\0user\0pa\0ss",
            b"\0us\ner\0pass",
            b"\0user\0pa\rss",
            b"\0\xff\0pass",
            b"",
        ] {
            assert_eq!(plain(enc(bad).as_bytes()), Decoded::Bad, "{:?}", bad);
        }
        assert_eq!(plain(b"not base64!"), Decoded::Bad);
        assert_eq!(plain(b"="), Decoded::Bad);
    }

    #[test]
    fn login_responses() {
        assert_eq!(login_user(b"dXNlcg=="), Decoded::Ok("user".into()));
        assert_eq!(login_user(b"*"), Decoded::Cancelled);
        assert_eq!(login_user(b""), Decoded::Bad);
        assert_eq!(login_password(b"cGFzcw=="), Decoded::Ok(b"pass".to_vec()));
        assert_eq!(
            login_password(base64_encode(b"a\nb").as_bytes()),
            Decoded::Bad
        );
        assert_eq!(
            login_password(&base64_encode(&[b'x'; 1025]).into_bytes()),
            Decoded::Bad
        );
    }
}
