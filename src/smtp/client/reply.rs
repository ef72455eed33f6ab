//! Server replies: bytes cut into lines, lines into (multi-line) replies.
//!
//! Strict, because the text of a reply is untrusted and travels on: into
//! logs, bounces and the queue (CVE-2020-8794 smuggled envelope fields
//! through the text of a multi-line reply). The rules:
//! - a line ends with LF, optionally preceded by one CR (some servers send
//!   bare LF; the CR is not part of the text either way);
//! - a line is at most `MAX_LINE` bytes with its ending, a reply at most
//!   `MAX_REPLY_LINES` lines: more is a protocol error, so an endless
//!   reply cannot grow our memory;
//! - each line starts with a code `[2-5][0-5][0-9]` then `-` (more lines
//!   follow), ` ` or nothing (the last line); every line of a reply has
//!   the same code;
//! - any byte of the text that is not printable ASCII (CR, NUL, ESC,
//!   DEL, 8-bit) becomes `?`.

#![forbid(unsafe_code)]

use std::fmt;

use super::{MAX_LINE, MAX_REPLY_LINES};

/// A complete server reply; its text is printable ASCII only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 200 to 559.
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply made up here (a local failure), as one line.
    pub(crate) fn local(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![sanitize(text.as_bytes())],
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 4xx.
    pub fn is_temporary(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }
}

/// One line: the code and the text of each line, separated by `" / "`
/// (printable ASCII, so safe for a log line or a bounce).
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for (i, l) in self.lines.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(l)?;
        }
        Ok(())
    }
}

/// Why the server's bytes are not a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyError {
    LineTooLong,
    TooManyLines,
    /// No valid three-digit code, or a bad byte after it.
    Syntax,
    /// A continuation line with another code.
    CodeMismatch,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::LineTooLong => "reply line too long",
            ReplyError::TooManyLines => "reply has too many lines",
            ReplyError::Syntax => "malformed reply line",
            ReplyError::CodeMismatch => "reply lines with different codes",
        })
    }
}

/// Buffers the server's bytes and gives out complete replies.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    /// Bytes of `buf` already used.
    pos: usize,
    /// The lines of the reply being read.
    lines: Vec<String>,
    code: u16,
}

impl Parser {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        // Compact first, so the buffer holds only what is still unread.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet part of a complete reply.
    pub(crate) fn pending(&self) -> bool {
        self.pos < self.buf.len() || !self.lines.is_empty()
    }

    /// Drop everything buffered (after STARTTLS: nothing read in the clear
    /// may count once encrypted).
    pub(crate) fn clear(&mut self) {
        *self = Parser::default();
    }

    /// The next complete reply, `None` until one is buffered.
    pub(crate) fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                // Without its LF yet, the line is already this long.
                return if rest.len() >= MAX_LINE {
                    Err(ReplyError::LineTooLong)
                } else {
                    Ok(None)
                };
            };
            if lf + 1 > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let mut line = &rest[..lf];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            let (code, last, text) = split_line(line)?;
            if !self.lines.is_empty() && code != self.code {
                return Err(ReplyError::CodeMismatch);
            }
            if self.lines.len() == MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            self.code = code;
            self.lines.push(sanitize(text));
            self.pos += lf + 1;
            if last {
                let lines = std::mem::take(&mut self.lines);
                return Ok(Some(Reply { code, lines }));
            }
        }
    }
}

/// A line without its ending: code, whether it is the last line, text.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let ok = line.len() >= 3
        && (b'2'..=b'5').contains(&line[0])
        && (b'0'..=b'5').contains(&line[1])
        && line[2].is_ascii_digit();
    if !ok {
        return Err(ReplyError::Syntax);
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ReplyError::Syntax),
    }
}

/// Printable ASCII stays; every other byte becomes `?`.
fn sanitize(text: &[u8]) -> String {
    text.iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = Parser::default();
        p.push(input);
        let mut out = Vec::new();
        while let Some(r) = p.next_reply()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse(b"250-mx hello\r\n250-PIPELINING\r\n250 SIZE 100\r\n220\r\n").unwrap();
        assert_eq!(r[0].code, 250);
        assert_eq!(r[0].lines, ["mx hello", "PIPELINING", "SIZE 100"]);
        assert_eq!(r[1].code, 220);
        assert_eq!(r[1].lines, [""]);
        assert_eq!(r[0].to_string(), "250 mx hello / PIPELINING / SIZE 100");
    }

    #[test]
    fn any_split() {
        let input = b"250-a\r\n250 b\r\n";
        for cut in 0..input.len() {
            let mut p = Parser::default();
            p.push(&input[..cut]);
            let first = p.next_reply().unwrap();
            p.push(&input[cut..]);
            let r = first.or_else(|| p.next_reply().unwrap()).unwrap();
            assert_eq!(r.lines, ["a", "b"], "cut at {cut}");
            assert!(!p.pending());
        }
    }

    #[test]
    fn bad_bytes_become_question_marks() {
        let r = parse(b"250-a\rb\0c\x1b[31m\r\n250 \xc3\xa9\x7f\r\r\n").unwrap();
        // One CR ends the line; the one before it is text.
        assert_eq!(r[0].lines, ["a?b?c?[31m", "????"]);
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            &b"25\r\n"[..],
            b"abc def\r\n",
            b"150 x\r\n",
            b"600 x\r\n",
            b"260 x\r\n",
            b"250x\r\n",
            b"\r\n",
        ] {
            assert_eq!(parse(bad), Err(ReplyError::Syntax), "{bad:?}");
        }
        assert_eq!(parse(b"250-a\r\n251 b\r\n"), Err(ReplyError::CodeMismatch));
    }

    #[test]
    fn bounds() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE - 2, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long).unwrap()[0].lines[0].len(), MAX_LINE - 6);
        long.insert(5, b'x');
        assert_eq!(parse(&long), Err(ReplyError::LineTooLong));
        // Too long is seen before any LF arrives.
        assert_eq!(parse(&vec![b'2'; MAX_LINE]), Err(ReplyError::LineTooLong));

        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
        let mut ok = many.clone();
        ok.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse(&ok).unwrap()[0].lines.len(), MAX_REPLY_LINES);
        let mut bad = many;
        bad.extend_from_slice(b"250-x\r\n250 x\r\n");
        assert_eq!(parse(&bad), Err(ReplyError::TooManyLines));
    }
}
