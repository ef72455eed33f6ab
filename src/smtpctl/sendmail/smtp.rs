//! sendmail's side of its SMTP session with the dispatcher: one command,
//! then its whole reply, as OpenSMTPD's enqueue (get_responses) does. A
//! reply that is not 2xx or 3xx ends the session with its text.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// OpenSMTPD's server-side timeout: ours waits as long for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest reply line read (the server's are short; a bound all the same).
const MAX_REPLY_LINE: u64 = 4096;

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: std::io::BufWriter<UnixStream>,
    verbose: bool,
}

impl Client {
    pub fn new(sock: UnixStream, verbose: bool) -> Result<Client, String> {
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let w = sock.try_clone().map_err(|e| e.to_string())?;
        Ok(Client {
            reader: BufReader::new(sock),
            writer: std::io::BufWriter::new(w),
            verbose,
        })
    }

    /// Send one line (CRLF added), shown with `-v`.
    pub fn line(&mut self, text: &str) -> Result<(), String> {
        if self.verbose {
            println!(">>> {text}");
        }
        self.raw(text.as_bytes())?;
        self.raw(b"\r\n")
    }

    /// Bytes of the message, not shown.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .map_err(|e| format!("write error: {e}"))
    }

    /// Read a whole reply; Err with its last line unless it is 2xx/3xx.
    pub fn reply(&mut self) -> Result<(), String> {
        self.writer
            .flush()
            .map_err(|e| format!("write error: {e}"))?;
        loop {
            let mut buf = Vec::new();
            let n = std::io::Read::take(&mut self.reader, MAX_REPLY_LINE)
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("read error: {e}"))?;
            if n == 0 {
                return Err("pipe closed".into());
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches(['\r', '\n']);
            if self.verbose {
                println!("<<< {text}");
            }
            let b = text.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                return Err("bad response".into());
            }
            if b.get(3) == Some(&b'-') {
                continue;
            }
            if !matches!(b[0], b'2' | b'3') {
                return Err(format!("command failed: {text}"));
            }
            return Ok(());
        }
    }
}
