//! The SMTP server session as it stands in the foundation: a banner, and an
//! orderly refusal. No I/O here: bytes in, replies out. The full ESMTP
//! state machine replaces this with the receive issue.

/// Longest command line accepted (RFC 5321 says 512; OpenSMTPD's raw-input
/// limit is larger but no command we answer needs more).
pub const MAX_LINE: usize = 4096;

/// What the session wants sent, and whether to close after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub close: bool,
    /// The `reason=` of the disconnect log line, if this reply closes.
    pub reason: &'static str,
}

/// The greeting.
pub fn banner(hostname: &str) -> String {
    format!("220 {hostname} ESMTP smtpd-rs\r\n")
}

/// Answer one complete command line (without its CRLF). QUIT gets 221;
/// everything else a 421: this daemon does not accept mail yet.
pub fn on_line(hostname: &str, line: &[u8]) -> Reply {
    let verb = line.split(|&b| b == b' ').next().unwrap_or(b"");
    if verb.eq_ignore_ascii_case(b"QUIT") {
        Reply {
            text: "221 2.0.0 Bye\r\n".into(),
            close: true,
            reason: "quit",
        }
    } else {
        Reply {
            text: format!(
                "421 4.3.2 {hostname} Service not available, closing transmission channel\r\n"
            ),
            close: true,
            reason: "unavailable",
        }
    }
}

/// More than `MAX_LINE` bytes arrived without a newline.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// Split the first complete line (CRLF or bare LF) off `buf`.
pub fn take_line(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, LineTooLong> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut line: Vec<u8> = buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(LineTooLong),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_and_others() {
        assert_eq!(on_line("h", b"quit").text, "221 2.0.0 Bye\r\n");
        let r = on_line("h", b"EHLO x");
        assert!(r.text.starts_with("421 ") && r.close);
    }

    #[test]
    fn lines_are_split_and_bounded() {
        let mut b = b"QUIT\r\nNOOP".to_vec();
        assert_eq!(take_line(&mut b), Ok(Some(b"QUIT".to_vec())));
        assert_eq!(take_line(&mut b), Ok(None));
        let mut big = vec![b'a'; MAX_LINE + 1];
        assert_eq!(take_line(&mut big), Err(LineTooLong));
    }
}
