//! The message body as sent after 354: CRLF line endings, dot-stuffed
//! (RFC 5321 4.5.2), ended by `.` on a line of its own.
//!
//! A bare CR or a bare LF becomes CRLF: sending either as it is could make
//! the next server see a different end of data than we mean (SMTP
//! smuggling). Our own server never stores them, but the encoder does not
//! rely on that.

#![forbid(unsafe_code)]

/// Streams a body into the bytes to write; feed it any split, then call
/// `finish`.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// The next byte starts a line.
    bol: bool,
    /// The last byte was a CR not yet written.
    cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            bol: true,
            cr: false,
        }
    }

    /// Append the encoding of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        for &b in chunk {
            if std::mem::take(&mut self.cr) {
                out.extend_from_slice(b"\r\n");
                self.bol = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.bol = true;
                }
                _ => {
                    if self.bol && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.bol = false;
                }
            }
        }
    }

    /// End the body: a CRLF if the last line lacks one, then `.` CRLF.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.cr {
            self.cr = false;
            self.bol = false;
        }
        if !self.bol {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut d = DotStuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            d.encode(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_and_terminates() {
        assert_eq!(encode(&[]), b".\r\n");
        assert_eq!(encode(&[b"a\r\n"]), b"a\r\n.\r\n");
        assert_eq!(encode(&[b"a"]), b"a\r\n.\r\n");
        assert_eq!(
            encode(&[b".\r\n..x\r\na.b\r\n"]),
            b"..\r\n...x\r\na.b\r\n.\r\n"
        );
        assert_eq!(encode(&[b"a\r\n", b".", b"\r\n"]), b"a\r\n..\r\n.\r\n");
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        assert_eq!(encode(&[b"a\nb\rc\r"]), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(encode(&[b"a\r", b"\n.b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(encode(&[b"a\r", b".b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(encode(&[b"\r\r\n"]), b"\r\n\r\n.\r\n");
    }

    #[test]
    fn any_split_gives_the_same_bytes() {
        let body = b"x\r\n.\r\n.\n\r.a\r\r\nend";
        let whole = encode(&[body]);
        for cut in 0..body.len() {
            assert_eq!(encode(&[&body[..cut], &body[cut..]]), whole, "cut {cut}");
        }
    }
}
