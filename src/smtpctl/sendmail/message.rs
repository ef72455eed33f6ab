//! The message sendmail reads, scanned as OpenSMTPD's enqueue does: CRLF
//! made LF, Bcc: removed, the headers it must know of noted (From:,
//! Date:), and with `-t` the addresses of To:, Cc: and Bcc:. This runs
//! as the invoking user, never with extra privileges (A9): the offline
//! path writes the raw input before anything here runs.

/// Headers enqueue recognises (and a keyword must start the line).
const KEYWORDS: [(&str, Field); 7] = [
    ("from:", Field::From),
    ("to:", Field::To),
    ("cc:", Field::Cc),
    ("bcc:", Field::Bcc),
    ("subject:", Field::Other),
    ("date:", Field::Date),
    ("message-id:", Field::Other),
];

/// Longest address taken from a header (enqueue's SMTP_LINELEN).
const MAX_ADDRESS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    None,
    From,
    To,
    Cc,
    Bcc,
    Date,
    Other,
}

/// What the scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// The message's lines without their line ending, Bcc: gone.
    pub lines: Vec<Vec<u8>>,
    /// The address of the From: header, if it had one.
    pub header_from: Option<String>,
    /// With `-t`: To:, Cc: and Bcc: addresses.
    pub header_rcpts: Vec<String>,
    pub saw_from: bool,
    pub saw_date: bool,
    /// No known header at all: the whole input is a body.
    pub no_header: bool,
}

/// Scan `input`. With `ignore_dots` false, a line holding a lone dot
/// ends the message, as sendmail's (without -i).
pub fn scan(input: &[u8], tflag: bool, ignore_dots: bool) -> Result<Scanned, String> {
    let mut s = Scanned::default();
    let mut in_headers = true;
    let mut header_seen = false;
    // The current header field and its text so far (with continuations).
    let mut cur = Field::None;
    let mut value = String::new();
    let mut body = input;
    if body.last() == Some(&b'\n') {
        body = &body[..body.len() - 1];
    }
    if input.is_empty() {
        body = b"";
    }
    let lines: Vec<&[u8]> = if input.is_empty() {
        Vec::new()
    } else {
        body.split(|&b| b == b'\n').collect()
    };
    for raw in lines {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !ignore_dots && line == b"." {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            s.end_field(cur, &value, tflag)?;
            cur = Field::None;
            value.clear();
        }
        if line.is_empty() {
            in_headers = false;
        }
        if in_headers && cur == Field::None && !continuation {
            let lower = String::from_utf8_lossy(&line[..line.len().min(16)]).to_ascii_lowercase();
            if let Some((k, f)) = KEYWORDS.iter().find(|(k, _)| lower.starts_with(k)) {
                if line.len() > k.len() {
                    cur = *f;
                    header_seen = true;
                    value.push_str(&String::from_utf8_lossy(&line[k.len()..]));
                }
            }
        } else if cur != Field::None && continuation {
            value.push(' ');
            value.push_str(&String::from_utf8_lossy(line));
        }
        match cur {
            Field::From => s.saw_from = true,
            Field::Date => s.saw_date = true,
            _ => {}
        }
        if cur != Field::Bcc {
            s.lines.push(line.to_vec());
        }
    }
    s.end_field(cur, &value, tflag)?;
    s.no_header = !header_seen;
    Ok(s)
}

impl Scanned {
    fn end_field(&mut self, f: Field, value: &str, tflag: bool) -> Result<(), String> {
        match f {
            Field::From => {
                if let Some(a) = addresses(value)?.into_iter().next() {
                    self.header_from = Some(a);
                }
            }
            Field::To | Field::Cc | Field::Bcc if tflag => {
                self.header_rcpts.extend(addresses(value)?);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The addresses in an address-list header value (RFC 5322, as far as
/// enqueue reads it): `a@b, Name <c@d>, "x, y" <e@f> (comment)`, groups
/// `team: a@b, c@d;`. A broken quote, comment or bracket is an error.
pub fn addresses(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let (mut quote, mut esc, mut comment, mut angle) = (false, false, 0u32, false);
    let mut word = String::new();
    let mut bracketed: Option<String> = None;
    let mut finish = |word: &mut String, bracketed: &mut Option<String>| -> Result<(), String> {
        let a = bracketed.take().unwrap_or_else(|| word.clone());
        word.clear();
        let a = a.trim().to_string();
        if a.len() > MAX_ADDRESS {
            return Err("address exceeds buffer size".into());
        }
        if !a.is_empty() {
            out.push(a);
        }
        Ok(())
    };
    for c in value.chars() {
        if esc {
            esc = false;
            if comment == 0 {
                word.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                esc = true;
                if comment == 0 {
                    word.push(c);
                }
            }
            '(' if !quote => comment += 1,
            ')' if !quote && comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '"' => {
                quote = !quote;
                word.push(c);
            }
            _ if quote => word.push(c),
            '<' => {
                angle = true;
                word.clear();
            }
            '>' if angle => {
                angle = false;
                bracketed = Some(std::mem::take(&mut word));
            }
            // A group's name: what came before is not an address.
            ':' if !angle => word.clear(),
            ',' | ';' if !angle => finish(&mut word, &mut bracketed)?,
            c if c.is_whitespace() => {
                // Between the words of a display name: only the last
                // word (or the bracketed address) is kept.
                if !angle && bracketed.is_none() && !word.is_empty() {
                    word.push(' ');
                }
            }
            c => {
                if bracketed.is_none() {
                    word.push(c);
                }
            }
        }
    }
    if quote || esc || comment > 0 || angle {
        return Err("syntax error in address".into());
    }
    finish(&mut word, &mut bracketed)?;
    // A display name without brackets is not an address: keep the last
    // word, as enqueue's parser drops whitespace-separated words.
    Ok(out
        .into_iter()
        .map(|a| a.rsplit(' ').next().unwrap_or("").to_string())
        .filter(|a| !a.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists() {
        assert_eq!(addresses(" a@b").unwrap(), vec!["a@b"]);
        assert_eq!(
            addresses(" Al <al@x>, \"B, b\" <b@y> (who), c@z").unwrap(),
            vec!["al@x", "b@y", "c@z"]
        );
        assert_eq!(
            addresses(" team: a@b, c@d; e@f").unwrap(),
            vec!["a@b", "c@d", "e@f"]
        );
        assert_eq!(addresses(" bob").unwrap(), vec!["bob"]);
        assert!(addresses(" \"open").is_err());
        assert!(addresses(" <a@b").is_err());
        assert!(addresses(" (x").is_err());
    }

    #[test]
    fn bcc_goes_and_t_collects() {
        let m = b"To: a@x,\r\n  b@x\r\nBcc: hidden@x,\r\n c@x\r\nSubject: hi\r\n\r\nbody\r\n";
        let s = scan(m, true, false).unwrap();
        assert_eq!(s.header_rcpts, vec!["a@x", "b@x", "hidden@x", "c@x"]);
        let text: Vec<&[u8]> = s.lines.iter().map(|l| &l[..]).collect();
        assert_eq!(
            text,
            vec![&b"To: a@x,"[..], b"  b@x", b"Subject: hi", b"", b"body"]
        );
        assert!(!s.saw_from && !s.saw_date && !s.no_header);
        let s = scan(m, false, false).unwrap();
        assert!(s.header_rcpts.is_empty());
    }

    #[test]
    fn a_lone_dot_ends_input_unless_i() {
        let m = b"Subject: x\n\none\n.\ntwo\n";
        assert_eq!(scan(m, false, false).unwrap().lines.len(), 3);
        assert_eq!(scan(m, false, true).unwrap().lines.len(), 5);
    }

    #[test]
    fn from_and_headerless() {
        let s = scan(b"From: Me <me@x>\nDate: now\n\nhi\n", false, true).unwrap();
        assert_eq!(s.header_from.as_deref(), Some("me@x"));
        assert!(s.saw_from && s.saw_date);
        let s = scan(b"just text\n", false, true).unwrap();
        assert!(s.no_header);
        // Not in the body: a From: after the blank line is text.
        let s = scan(b"Subject: a\n\nFrom: x@y\n", false, true).unwrap();
        assert!(!s.saw_from);
    }
}
