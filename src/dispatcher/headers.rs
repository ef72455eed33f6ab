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
    /// `senders <table> masquerade`: the session's sender, which the
    /// `From:` field's address becomes.
    masquerade: Option<String>,
    /// The `From:` field being read (with its continuation lines).
    from: Option<Vec<u8>>,
}

impl HeaderFixer {
    /// A fixer that also rewrites `From:` to `sender` (OpenSMTPD's
    /// masquerade: the display name is kept, the address replaced).
    pub fn masquerading(sender: &str) -> HeaderFixer {
        HeaderFixer {
            masquerade: (!sender.is_empty()).then(|| sender.to_string()),
            ..HeaderFixer::default()
        }
    }

    /// The rewritten `From:` field, once all its lines are in.
    fn flush_from(&mut self, out: &mut Vec<u8>) {
        let (Some(field), Some(sender)) = (self.from.take(), &self.masquerade) else {
            return;
        };
        let text = String::from_utf8_lossy(&field);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        let unfolded: String = value.chars().filter(|&c| c != '\r' && c != '\n').collect();
        let display = match unfolded.find('<') {
            Some(i) if unfolded[i..].contains('>') => unfolded[..i].trim().to_string(),
            _ => String::new(),
        };
        let line = if display.is_empty() {
            format!("From: <{sender}>\r\n")
        } else {
            format!("From: {display} <{sender}>\r\n")
        };
        out.extend_from_slice(line.as_bytes());
    }

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
            if self.from.is_some() {
                if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                    if let Some(f) = self.from.as_mut() {
                        f.extend_from_slice(&line);
                    }
                    continue;
                }
                self.flush_from(&mut out);
            }
            if self.masquerade.is_some()
                && line.len() >= 5
                && line[..5].eq_ignore_ascii_case(b"from:")
            {
                self.from = Some(line);
                continue;
            }
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
        let mut out = Vec::new();
        self.flush_from(&mut out);
        out.extend(std::mem::take(&mut self.partial));
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

    #[test]
    fn masquerade_rewrites_the_from_address_and_keeps_the_name() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"From: Alice <other@x.example>\r\n",
                b"From: Alice <alice@example.org>\r\n",
            ),
            (
                b"FROM: other@x.example\r\n",
                b"From: <alice@example.org>\r\n",
            ),
            (
                b"From: \"A, B\"\r\n <folded@x.example>\r\n",
                b"From: \"A, B\" <alice@example.org>\r\n",
            ),
        ];
        for (from, want) in cases {
            let mut f = HeaderFixer::masquerading("alice@example.org");
            let mut msg = b"Subject: s\r\n".to_vec();
            msg.extend_from_slice(from);
            msg.extend_from_slice(b"To: t@x\r\n\r\nFrom: body line\r\n");
            let mut out = Vec::new();
            for chunk in msg.chunks(3) {
                out.extend(f.feed(chunk, &mut add));
            }
            out.extend(f.finish(&mut add));
            let mut expect = b"Subject: s\r\n".to_vec();
            expect.extend_from_slice(want);
            expect.extend_from_slice(
                b"To: t@x\r\nDate: D\r\nMessage-Id: <I>\r\n\r\nFrom: body line\r\n",
            );
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expect)
            );
        }
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
