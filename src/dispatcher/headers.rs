//! Add `Date:` and `Message-Id:` to messages from local and authenticated
//! senders that lack them (RFC 5322 requires both; mail user agents of
//! local programs often omit them), as OpenSMTPD does. The message streams
//! through line by line; the missing fields are inserted at the end of the
//! header section, before the blank line. The engine guarantees every line
//! ends in CRLF and is bounded, so the partial line kept here is bounded.

/// Watches a message's header section as it streams.
#[derive(Debug, Default)]
pub struct HeaderFixer {
    done: bool,
    partial: Vec<u8>,
    has_date: bool,
    has_msgid: bool,
}

impl HeaderFixer {
    /// Pass `chunk` on; returns the bytes to store (with the missing
    /// fields inserted once the header section ends). `missing` gives the
    /// fields to add, called at most once.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        missing: &mut dyn FnMut(bool, bool) -> Vec<u8>,
    ) -> Vec<u8> {
        if self.done {
            return chunk.to_vec();
        }
        let mut out = Vec::with_capacity(chunk.len() + 128);
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.partial);
            if line == b"\r\n" {
                out.extend(missing(!self.has_date, !self.has_msgid));
                out.extend_from_slice(&line);
                self.done = true;
                out.extend_from_slice(rest);
                return out;
            }
            let lower = line.to_ascii_lowercase();
            self.has_date |= lower.starts_with(b"date:");
            self.has_msgid |= lower.starts_with(b"message-id:");
            out.extend_from_slice(&line);
        }
        self.partial.extend_from_slice(rest);
        out
    }

    /// The message ended: a message with no body gets the fields at its end.
    pub fn finish(&mut self, missing: &mut dyn FnMut(bool, bool) -> Vec<u8>) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = std::mem::take(&mut self.partial);
        out.extend(missing(!self.has_date, !self.has_msgid));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(date: bool, id: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if date {
            v.extend_from_slice(b"Date: D\r\n");
        }
        if id {
            v.extend_from_slice(b"Message-Id: <I>\r\n");
        }
        v
    }

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = HeaderFixer::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.feed(c, &mut add));
        }
        out.extend(f.finish(&mut add));
        out
    }

    #[test]
    fn inserts_missing_fields_before_the_body() {
        let m = run(&[b"Subject: x\r\n\r\nbody\r\n"]);
        assert_eq!(
            m,
            b"Subject: x\r\nDate: D\r\nMessage-Id: <I>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn keeps_present_fields_and_any_split() {
        let whole: &[u8] = b"DATE: y\r\nSubject: x\r\n\r\nMessage-Id: in body\r\n";
        let want =
            b"DATE: y\r\nSubject: x\r\nMessage-Id: <I>\r\n\r\nMessage-Id: in body\r\n".to_vec();
        for i in 0..whole.len() {
            assert_eq!(run(&[&whole[..i], &whole[i..]]), want, "split at {i}");
        }
    }

    #[test]
    fn headers_only_message() {
        assert_eq!(
            run(&[b"Subject: x\r\n"]),
            b"Subject: x\r\nDate: D\r\nMessage-Id: <I>\r\n"
        );
    }
}
