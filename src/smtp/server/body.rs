//! The message readers: DATA's dot-terminated stream and BDAT's counted
//! chunks, with the checks made on the message as it streams (size, line
//! length, bare CR/LF, `Received:` hops). Constant memory: nothing is
//! buffered but a 32-byte header-name prefix.
//!
//! DATA ends at `CRLF . CRLF` and only there; the CRLF that ended the DATA
//! command counts as the first one. `LF.LF`, `CR.CR`, `LF.CRLF`, `CRLF.LF`,
//! `CRLF.CR x` and every other mix are SMTP smuggling attempts (or broken
//! clients): any bare CR or LF sets `BareNewline`, the message is refused
//! at its real end, and the bytes after the fake end are never commands.
//! A line starting with `.` loses that dot (RFC 5321 4.5.2).

use super::{AbortReason, MAX_HOPS};

/// Where we are in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// After a CRLF (or at the start).
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line (or at its start).
    Cr,
    /// DATA: after a `.` at the start of a line.
    Dot,
    /// DATA: after `.` CR at the start of a line.
    DotCr,
}

/// Counts `Received:` headers in the header section.
#[derive(Debug, Clone)]
struct Headers {
    done: bool,
    prefix: [u8; 32],
    len: usize,
    received: u32,
}

impl Headers {
    fn new() -> Headers {
        Headers {
            done: false,
            prefix: [0; 32],
            len: 0,
            received: 0,
        }
    }

    /// Feed one stored byte; false once the hop count is exceeded.
    fn push(&mut self, b: u8) -> bool {
        if self.len < self.prefix.len() {
            self.prefix[self.len] = b;
            self.len += 1;
        }
        if b == b'\n' {
            let line = &self.prefix[..self.len];
            if line == b"\r\n" || line == b"\n" {
                self.done = true;
            } else if is_received(line) {
                self.received += 1;
            }
            self.len = 0;
        }
        self.received <= MAX_HOPS
    }
}

/// `Received` (any case), optional blanks, then `:`.
fn is_received(line: &[u8]) -> bool {
    let name = b"received";
    match line.get(..name.len()) {
        Some(head) if head.eq_ignore_ascii_case(name) => line[name.len()..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            .is_some_and(|&b| b == b':'),
        _ => false,
    }
}

/// One message being received.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    /// DATA (dot-stuffed) rather than BDAT.
    dot: bool,
    /// BODY=BINARYMIME with BDAT: any bytes, no line rules.
    binary: bool,
    state: St,
    line_len: usize,
    size: u64,
    max_size: u64,
    max_line: usize,
    headers: Headers,
    error: Option<AbortReason>,
    reported: bool,
}

impl Reader {
    /// A DATA reader, started right after the 354.
    pub fn dot(max_size: u64, max_line: usize) -> Reader {
        Reader::new(true, false, max_size, max_line)
    }

    /// A BDAT reader for all the chunks of one message.
    pub fn chunked(binary: bool, max_size: u64, max_line: usize) -> Reader {
        Reader::new(false, binary, max_size, max_line)
    }

    fn new(dot: bool, binary: bool, max_size: u64, max_line: usize) -> Reader {
        Reader {
            dot,
            binary,
            state: St::LineStart,
            line_len: 0,
            size: 0,
            max_size,
            max_line,
            headers: Headers::new(),
            error: None,
            reported: false,
        }
    }

    /// Bytes stored so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first limit the message broke, if any.
    pub fn error(&self) -> Option<AbortReason> {
        self.error
    }

    /// The error, the first time it is asked for after it happened.
    pub fn take_new_error(&mut self) -> Option<AbortReason> {
        match self.error {
            Some(e) if !self.reported => {
                self.reported = true;
                Some(e)
            }
            _ => None,
        }
    }

    /// The message was already ordered discarded (`take_new_error`).
    pub fn aborted(&self) -> bool {
        self.reported
    }

    fn fail(&mut self, e: AbortReason) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn bare(&mut self) {
        self.fail(AbortReason::BareNewline);
    }

    /// Count raw bytes of the current line.
    fn count(&mut self, n: usize) {
        self.line_len = self.line_len.saturating_add(n);
        if self.line_len > self.max_line && !self.binary {
            self.fail(AbortReason::LineTooLong);
        }
    }

    /// Keep message bytes (unless the message is already refused).
    fn store(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.max_size {
            self.fail(AbortReason::TooBig);
            return;
        }
        if !self.headers.done {
            for &b in bytes {
                if !self.headers.push(b) {
                    self.fail(AbortReason::Loop);
                    return;
                }
                if self.headers.done {
                    break;
                }
            }
        }
        out.extend_from_slice(bytes);
    }

    /// DATA: read from `input`, appending the message bytes to `out`.
    /// Returns how many bytes were used and whether the final dot was
    /// seen (the bytes after it are not used).
    pub fn feed_dot(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if self.state == St::Mid {
                let rest = &input[i..];
                let n = rest
                    .iter()
                    .position(|&c| c == b'\r' || c == b'\n')
                    .unwrap_or(rest.len());
                if n > 0 {
                    self.count(n);
                    self.store(&rest[..n], out);
                    i += n;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b, out) {
                return (i, true);
            }
        }
        (i, false)
    }

    /// One byte outside the fast path; true at the end of DATA.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        if self.state == St::LineStart {
            self.line_len = 0;
        }
        self.count(1);
        self.state = match (self.state, b) {
            (St::LineStart, b'.') if self.dot => St::Dot,
            (St::Dot, b'\r') => St::DotCr,
            (St::DotCr, b'\n') => return true,
            (St::Cr, b'\n') => {
                self.store(b"\r\n", out);
                St::LineStart
            }
            (St::Cr | St::DotCr, b'\r') => {
                self.bare();
                St::Cr
            }
            (_, b'\r') => St::Cr,
            (St::Cr | St::DotCr, _) => {
                // A CR not followed by LF; the byte after it is refused
                // with it.
                self.bare();
                St::Mid
            }
            (_, b'\n') => {
                self.bare();
                St::Mid
            }
            // Ordinary byte; after a leading dot, that dot is dropped.
            (_, _) => {
                self.store(&[b], out);
                St::Mid
            }
        };
        false
    }

    /// BDAT: one chunk's bytes (all of them are used).
    pub fn feed_chunk(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.binary {
            self.store(input, out);
            return;
        }
        let (used, _) = self.feed_dot(input, out);
        debug_assert_eq!(used, input.len());
    }

    /// BDAT LAST: a text message that does not end with CRLF gets one, so
    /// every stored text message is whole lines.
    pub fn finish_chunks(&mut self, out: &mut Vec<u8>) {
        if self.binary {
            return;
        }
        match self.state {
            St::Cr => self.bare(),
            St::Mid => self.store(b"\r\n", out),
            _ => {}
        }
        self.state = St::LineStart;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed DATA whole; (stored, end position, error).
    fn data(input: &[u8]) -> (Vec<u8>, Option<usize>, Option<AbortReason>) {
        let mut r = Reader::dot(1 << 20, 1000);
        let mut out = Vec::new();
        let (used, end) = r.feed_dot(input, &mut out);
        (out, end.then_some(used), r.error())
    }

    /// Feed DATA one byte at a time.
    fn data_bytewise(input: &[u8]) -> (Vec<u8>, Option<usize>, Option<AbortReason>) {
        let mut r = Reader::dot(1 << 20, 1000);
        let mut out = Vec::new();
        for (i, b) in input.iter().enumerate() {
            let (used, end) = r.feed_dot(std::slice::from_ref(b), &mut out);
            assert_eq!(used, 1);
            if end {
                return (out, Some(i + 1), r.error());
            }
        }
        (out, None, r.error())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (out, end, err) = data(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(end, Some(23));
        assert_eq!(err, None);
        // The CRLF of the DATA command counts: an empty message.
        assert_eq!(data(b".\r\n"), (Vec::new(), Some(3), None));
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (out, _, err) = data(b"..x\r\n..\r\n.\r\n");
        assert_eq!(out, b".x\r\n.\r\n");
        assert_eq!(err, None);
        let (out, _, _) = data(b"a.b\r\n .\r\n.\r\n");
        assert_eq!(out, b"a.b\r\n .\r\n");
    }

    #[test]
    fn smuggling_sequences_never_end_data() {
        let fakes: &[&[u8]] = &[
            b"a\n.\nMAIL FROM:<x>\r\n",
            b"a\r.\rMAIL FROM:<x>\r\n",
            b"a\n.\r\nMAIL FROM:<x>\r\n",
            b"a\r\n.\nMAIL FROM:<x>\r\n",
            b"a\r.\r\nMAIL FROM:<x>\r\n",
            b"a\r\n.\rMAIL FROM:<x>\r\n",
            b"a\r\n.\r\rMAIL FROM:<x>\r\n",
            b"a\n.\rMAIL FROM:<x>\r\n",
            b"a\r\r\n.\nMAIL FROM:<x>\r\n",
            b"a\r\n\n.\r\nMAIL FROM:<x>\r\n",
            b"a\r\n.\n\r\nMAIL FROM:<x>\r\n",
            b"a\n\r\n.\rMAIL FROM:<x>\r\n",
            b"\n.\nMAIL FROM:<x>\r\n",
            b".\nMAIL FROM:<x>\r\n",
            b".\rMAIL FROM:<x>\r\n",
        ];
        for fake in fakes {
            let whole = [*fake, b"rest\r\n.\r\n"].concat();
            for (out, end, err) in [data(&whole), data_bytewise(&whole)] {
                assert_eq!(end, Some(whole.len()), "{:?}", fake);
                assert_eq!(err, Some(AbortReason::BareNewline), "{:?}", fake);
                assert!(out.len() < whole.len());
            }
        }
    }

    #[test]
    fn crlf_dot_crlf_inside_bare_mess_still_ends() {
        // "\r\r\n.\r\n" does contain CRLF.CRLF: it ends, refused for the CR.
        let (_, end, err) = data(b"a\r\r\n.\r\nX");
        assert_eq!(end, Some(7));
        assert_eq!(err, Some(AbortReason::BareNewline));
    }

    #[test]
    fn size_is_counted_on_stored_bytes() {
        let mut r = Reader::dot(6, 1000);
        let mut out = Vec::new();
        assert_eq!(r.feed_dot(b"..abc\r\n.\r\n", &mut out), (10, true));
        assert_eq!((r.size(), r.error()), (6, None));
        let mut r = Reader::dot(5, 1000);
        let mut out = Vec::new();
        assert_eq!(r.feed_dot(b"..abc\r\nmore\r\n.\r\n", &mut out), (16, true));
        assert_eq!(r.error(), Some(AbortReason::TooBig));
        assert_eq!(r.take_new_error(), Some(AbortReason::TooBig));
        assert_eq!(r.take_new_error(), None);
    }

    #[test]
    fn line_length_is_counted_raw() {
        // 10 bytes with CRLF is fine at max_line 10, 11 is not.
        let mut r = Reader::dot(1000, 10);
        let mut out = Vec::new();
        r.feed_dot(b"12345678\r\n.\r\n", &mut out);
        assert_eq!(r.error(), None);
        let mut r = Reader::dot(1000, 10);
        r.feed_dot(b"123456789\r\n.\r\n", &mut out);
        assert_eq!(r.error(), Some(AbortReason::LineTooLong));
        // A stuffed dot counts.
        let mut r = Reader::dot(1000, 10);
        r.feed_dot(b"..23456789\r\n.\r\n", &mut out);
        assert_eq!(r.error(), Some(AbortReason::LineTooLong));
    }

    #[test]
    fn received_hops() {
        let hops = |n: usize, sep: &str| {
            let mut m = String::new();
            for i in 0..n {
                m.push_str(&format!("Received{sep}: hop {i}\r\n\tfolded\r\n"));
            }
            m.push_str("Subject: x\r\n\r\nReceived: in body\r\n.\r\n");
            m
        };
        assert_eq!(data(hops(100, "").as_bytes()).2, None);
        assert_eq!(data(hops(101, "").as_bytes()).2, Some(AbortReason::Loop));
        assert_eq!(data(hops(101, " \t").as_bytes()).2, Some(AbortReason::Loop));
        assert_eq!(
            data_bytewise(hops(101, "").as_bytes()).2,
            Some(AbortReason::Loop)
        );
        // Not a Received header: other names, body lines.
        let mut m = "Received-SPF: x\r\nX-Received: y\r\n".repeat(200);
        m.push_str("\r\n");
        m.push_str(&"Received: z\r\n".repeat(200));
        m.push_str(".\r\n");
        assert_eq!(data(m.as_bytes()).2, None);
    }

    #[test]
    fn chunks_keep_bytes_and_check_lines() {
        let mut r = Reader::chunked(false, 1000, 1000);
        let mut out = Vec::new();
        r.feed_chunk(b"..a\r\n.\r", &mut out);
        r.feed_chunk(b"\nb", &mut out);
        r.finish_chunks(&mut out);
        assert_eq!(out, b"..a\r\n.\r\nb\r\n");
        assert_eq!((r.size(), r.error()), (11, None));
        for bad in [&b"a\nb"[..], b"a\rb", b"a\r"] {
            let mut r = Reader::chunked(false, 1000, 1000);
            r.feed_chunk(bad, &mut out);
            r.finish_chunks(&mut out);
            assert_eq!(r.error(), Some(AbortReason::BareNewline), "{:?}", bad);
        }
        let mut r = Reader::chunked(true, 1000, 2);
        let mut out = Vec::new();
        r.feed_chunk(b"a\nb\rc\0", &mut out);
        r.finish_chunks(&mut out);
        assert_eq!((out.as_slice(), r.error()), (&b"a\nb\rc\0"[..], None));
    }
}
