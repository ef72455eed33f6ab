//! Delivery to an LMTP server (RFC 2033): smtpd.conf's
//! `action ... lmtp host:port|/path [rcpt-to]`, what OpenSMTPD's
//! mail.lmtp does.
//!
//! Two layers: a protocol core without I/O ([`ReplyParser`] turns lines
//! into replies, [`Session`] turns replies into the next command and
//! per-recipient outcomes), and a blocking driver ([`deliver`]) over a
//! TCP or unix socket with a timeout on every read and write and a
//! deadline on the whole session.
//!
//! What makes LMTP differ from SMTP: after the final dot the server
//! sends one reply per recipient it accepted at RCPT, in RCPT order, so
//! each recipient gets its own outcome.
//!
//! The server is not trusted: replies are parsed strictly, a line is at
//! most [`MAX_LINE`] bytes and a reply at most [`MAX_LINES`] lines (more
//! is a temporary failure, memory stays bounded), and reply text is
//! stripped of control characters before it goes into an [`Outcome`].

#![forbid(unsafe_code)]

use super::{Outcome, Recipient};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest reply line accepted, CRLF included.
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply.
pub const MAX_LINES: usize = 100;
/// Reply text kept for an outcome, bytes (the envelope's last_error cap).
const MAX_TEXT: usize = 1024;
/// Message bytes written per write deadline check.
const CHUNK: usize = 16 * 1024;

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// An lmtp action: the server, and what goes in RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmtpTarget {
    pub addr: LmtpAddr,
    /// smtpd.conf's `rcpt-to`: RCPT TO carries the recipient address
    /// after expansion (mail.lmtp -r, $RECIPIENT) instead of the local
    /// user's login name (mail.lmtp -u, $USER).
    pub rcpt_to: bool,
}

impl LmtpTarget {
    /// `dest` as smtpd.conf writes it: an absolute socket path, or
    /// `host:port`, `[addr]:port`, `host` (port 25 then, as mail.lmtp's
    /// lmtp_connect_inet() defaults).
    pub fn parse(dest: &str, rcpt_to: bool) -> Result<LmtpTarget, String> {
        if dest.is_empty() || dest.chars().any(char::is_control) {
            return Err(format!("lmtp: invalid destination {dest:?}"));
        }
        let addr = if dest.starts_with('/') {
            LmtpAddr::Unix(PathBuf::from(dest))
        } else {
            let (host, port) = if let Some(rest) = dest.strip_prefix('[') {
                let (h, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("lmtp: invalid address syntax {dest:?}"))?;
                let h = h.strip_prefix("IPv6:").unwrap_or(h);
                match after {
                    "" => (h, None),
                    p => (
                        h,
                        Some(
                            p.strip_prefix(':')
                                .ok_or_else(|| format!("lmtp: invalid address syntax {dest:?}"))?,
                        ),
                    ),
                }
            } else {
                match dest.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (dest, None),
                }
            };
            let port = match port {
                None => 25,
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("lmtp: invalid port in {dest:?}"))?,
            };
            if host.is_empty() {
                return Err(format!("lmtp: no host in {dest:?}"));
            }
            LmtpAddr::Tcp {
                host: host.to_string(),
                port,
            }
        };
        Ok(LmtpTarget { addr, rcpt_to })
    }
}

/// How long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For each address tried.
    pub connect: Duration,
    /// For each read and each write.
    pub io: Duration,
    /// For the whole session, connect to QUIT: a server dripping bytes
    /// cannot hold a delivery forever.
    pub session: Duration,
}

impl Default for Timeouts {
    /// RFC 5321 section 4.5.3.2 suggests 5 minutes per command and 10 for
    /// the final dot; one io timeout serves both.
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            io: Duration::from_secs(600),
            session: Duration::from_secs(3600),
        }
    }
}

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// "250 first line text next line text", control characters removed,
    /// at most MAX_TEXT bytes.
    pub text: String,
}

/// Why the server's lines are not a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Not `ddd`, `ddd-text` or `ddd text`, or a code out of 2xx-5xx.
    BadLine,
    /// A continuation line with another code than the first.
    CodeChanged,
    TooManyLines,
    LineTooLong,
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtoError::BadLine => "LMTP server sent an invalid line",
            ProtoError::CodeChanged => "LMTP server changed reply code within a reply",
            ProtoError::TooManyLines => "LMTP server sent a reply of too many lines",
            ProtoError::LineTooLong => "LMTP server sent a line too long",
        })
    }
}

/// Assembles reply lines (without their CRLF) into replies.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: usize,
    text: String,
}

impl ReplyParser {
    /// One line in; a reply out when it was the last line of one.
    pub fn feed(&mut self, line: &[u8]) -> Result<Option<Reply>, ProtoError> {
        if line.len() > MAX_LINE {
            return Err(ProtoError::LineTooLong);
        }
        let digits = line.get(..3).ok_or(ProtoError::BadLine)?;
        if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
            return Err(ProtoError::BadLine);
        }
        let code = digits
            .iter()
            .fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ProtoError::BadLine),
        };
        if self.code.is_some_and(|c| c != code) {
            return Err(ProtoError::CodeChanged);
        }
        self.lines += 1;
        if self.lines > MAX_LINES {
            return Err(ProtoError::TooManyLines);
        }
        if self.code.is_none() {
            self.code = Some(code);
            self.text = code.to_string();
        }
        let rest = String::from_utf8_lossy(line.get(4..).unwrap_or_default());
        let rest: String = rest.chars().filter(|c| !c.is_control()).collect();
        let rest = rest.trim();
        if !rest.is_empty() && self.text.len() < MAX_TEXT {
            self.text.push(' ');
            for c in rest.chars() {
                if self.text.len() + c.len_utf8() > MAX_TEXT {
                    break;
                }
                self.text.push(c);
            }
        }
        if !last {
            return Ok(None);
        }
        let r = Reply {
            code,
            text: std::mem::take(&mut self.text),
        };
        *self = ReplyParser::default();
        Ok(Some(r))
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this command line (CRLF included), then read a reply.
    Send(String),
    /// Write the message, dot-stuffed, and the final dot; then read one
    /// reply per accepted recipient.
    SendMessage,
    /// Send nothing, read the next reply (the per-recipient replies after
    /// the dot).
    Read,
    /// Close the connection: every outcome is decided.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Banner,
    Lhlo,
    Mail,
    Rcpt,
    Data,
    /// Waiting for the per-recipient reply of `accepted[i]`.
    Final,
    Quit,
    Done,
}

/// One LMTP transaction for one message, without I/O.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    lhlo: String,
    sender: String,
    /// RCPT TO arguments, one per recipient.
    rcpts: Vec<String>,
    outcomes: Vec<Option<Outcome>>,
    /// Index of the recipient whose RCPT reply is awaited.
    next: usize,
    /// Recipients accepted at RCPT, in order; then the one awaited.
    accepted: Vec<usize>,
    final_at: usize,
}

/// A command argument that cannot break the command line.
fn safe_arg(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

impl Session {
    /// `lhlo` is this host's name, `sender` the envelope sender ("" for
    /// a bounce), `rcpts` the RCPT TO arguments. A recipient whose
    /// argument could break the command line fails at once.
    pub fn new(lhlo: &str, sender: &str, rcpts: Vec<String>) -> Session {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        let mut phase = Phase::Banner;
        if lhlo.is_empty() || !safe_arg(lhlo) || lhlo.contains(' ') {
            outcomes.fill(Some(Outcome::TempFail(
                "lmtp: invalid LHLO hostname".into(),
            )));
            phase = Phase::Done;
        } else if !safe_arg(sender) {
            outcomes.fill(Some(Outcome::PermFail("lmtp: invalid sender".into())));
            phase = Phase::Done;
        }
        for (o, r) in outcomes.iter_mut().zip(&rcpts) {
            if o.is_none() && (r.is_empty() || !safe_arg(r)) {
                *o = Some(Outcome::PermFail("lmtp: invalid recipient".into()));
            }
        }
        if outcomes.iter().all(Option::is_some) {
            phase = Phase::Done;
        }
        Session {
            phase,
            lhlo: lhlo.to_string(),
            sender: sender.to_string(),
            rcpts,
            outcomes,
            next: 0,
            accepted: Vec::new(),
            final_at: 0,
        }
    }

    /// Nothing more to say to the server.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The command after a reply.
    pub fn on_reply(&mut self, r: &Reply) -> Step {
        match self.phase {
            Phase::Banner => self.expect(r, 2, Phase::Lhlo, |s| format!("LHLO {}\r\n", s.lhlo)),
            Phase::Lhlo => self.expect(r, 2, Phase::Mail, |s| {
                format!("MAIL FROM:<{}>\r\n", s.sender)
            }),
            Phase::Mail if r.code / 100 == 2 => self.next_rcpt(),
            Phase::Mail => {
                self.settle_undecided(failure(r));
                self.quit()
            }
            Phase::Rcpt => {
                let i = self.next;
                match r.code / 100 {
                    2 => self.accepted.push(i),
                    _ => self.outcomes[i] = Some(failure(r)),
                }
                self.next += 1;
                self.next_rcpt()
            }
            Phase::Data => {
                if r.code / 100 == 3 {
                    self.phase = Phase::Final;
                    return Step::SendMessage;
                }
                self.settle_accepted(failure(r));
                self.quit()
            }
            Phase::Final => {
                let i = self.accepted[self.final_at];
                self.outcomes[i] = Some(match r.code / 100 {
                    2 => Outcome::Delivered,
                    _ => failure(r),
                });
                self.final_at += 1;
                if self.final_at == self.accepted.len() {
                    self.quit()
                } else {
                    Step::Read
                }
            }
            Phase::Quit | Phase::Done => {
                self.phase = Phase::Done;
                Step::Done
            }
        }
    }

    /// The connection failed or the server broke the protocol: every
    /// recipient not yet decided fails temporarily.
    pub fn fail(&mut self, why: &str) {
        for o in &mut self.outcomes {
            if o.is_none() {
                *o = Some(Outcome::TempFail(why.to_string()));
            }
        }
        self.phase = Phase::Done;
    }

    /// The outcome of every recipient, in the order given.
    pub fn outcomes(self) -> Vec<Outcome> {
        self.outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::TempFail("lmtp: session ended early".into())))
            .collect()
    }

    /// A reply of `class` moves on to `phase` with `cmd`; anything else
    /// settles every undecided recipient and quits.
    fn expect(
        &mut self,
        r: &Reply,
        class: u16,
        phase: Phase,
        cmd: impl FnOnce(&Self) -> String,
    ) -> Step {
        if r.code / 100 != class {
            self.settle_undecided(failure(r));
            return self.quit();
        }
        self.phase = phase;
        Step::Send(cmd(self))
    }

    /// RCPT TO for the next recipient still undecided, or DATA (or QUIT
    /// if none was accepted).
    fn next_rcpt(&mut self) -> Step {
        while self.next < self.rcpts.len() && self.outcomes[self.next].is_some() {
            self.next += 1;
        }
        if let Some(r) = self.rcpts.get(self.next) {
            self.phase = Phase::Rcpt;
            return Step::Send(format!("RCPT TO:<{r}>\r\n"));
        }
        if self.accepted.is_empty() {
            return self.quit();
        }
        self.phase = Phase::Data;
        Step::Send("DATA\r\n".into())
    }

    fn settle_undecided(&mut self, o: Outcome) {
        for x in &mut self.outcomes {
            if x.is_none() {
                *x = Some(o.clone());
            }
        }
    }

    fn settle_accepted(&mut self, o: Outcome) {
        for &i in &self.accepted {
            self.outcomes[i] = Some(o.clone());
        }
    }

    fn quit(&mut self) -> Step {
        self.phase = Phase::Quit;
        Step::Send("QUIT\r\n".into())
    }
}

/// The outcome a non-success reply gives: 5xx is permanent; 4xx, and a
/// reply of a class the command never gets (a protocol error), are
/// temporary: retrying is safer than bouncing.
fn failure(r: &Reply) -> Outcome {
    if r.code / 100 == 5 {
        Outcome::PermFail(r.text.clone())
    } else {
        Outcome::TempFail(r.text.clone())
    }
}

/// Dot-stuffing with CRLF line endings (RFC 5321 section 4.5.2): a line
/// that starts with "." gets another, and a bare LF becomes CRLF.
#[derive(Debug)]
pub struct DotStuffer {
    line_start: bool,
    last_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer {
            line_start: true,
            last_cr: false,
        }
    }
}

impl DotStuffer {
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' && !self.last_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.line_start = b == b'\n';
            self.last_cr = b == b'\r';
        }
    }

    /// The end of the message: a line ending if it lacked one, and the
    /// final dot.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line_start {
            if !self.last_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b".\r\n");
        self.line_start = true;
        self.last_cr = false;
    }
}

/// The socket, either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
        }
    }

    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(b),
            Conn::Unix(s) => s.read(b),
        }
    }

    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(b),
            Conn::Unix(s) => s.write(b),
        }
    }
}

/// The blocking side: a connection with per-call timeouts under a
/// session deadline, and a bounded line buffer.
struct Driver {
    conn: Conn,
    io: Duration,
    deadline: Instant,
    buf: Vec<u8>,
}

impl Driver {
    /// Arm the socket for one call: the io timeout or what is left of the
    /// session, whichever is shorter.
    fn arm(&self) -> Result<(), String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("lmtp: session timed out".into());
        }
        let d = left.min(self.io).max(Duration::from_millis(1));
        self.conn
            .set_timeouts(d)
            .map_err(|e| format!("lmtp: setsockopt: {e}"))
    }

    fn write_all(&mut self, mut b: &[u8]) -> Result<(), String> {
        while !b.is_empty() {
            self.arm()?;
            match self.conn.write(b) {
                Ok(0) => return Err("lmtp: connection closed".into()),
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("write", &e)),
            }
        }
        Ok(())
    }

    /// One line without its LF (and CR); at most MAX_LINE bytes.
    fn read_line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                if p + 1 > MAX_LINE {
                    return Err(ProtoError::LineTooLong.to_string());
                }
                let mut line: Vec<u8> = self.buf.drain(..=p).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() >= MAX_LINE {
                return Err(ProtoError::LineTooLong.to_string());
            }
            self.arm()?;
            let mut chunk = [0u8; 4096];
            match self.conn.read(&mut chunk) {
                Ok(0) => return Err("lmtp: unexpected EOF from LMTP server".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("read", &e)),
            }
        }
    }

    fn read_reply(&mut self) -> Result<Reply, String> {
        let mut p = ReplyParser::default();
        loop {
            let line = self.read_line()?;
            if let Some(r) = p.feed(&line).map_err(|e| e.to_string())? {
                return Ok(r);
            }
        }
    }

    /// The message, dot-stuffed, then the final dot. A read error on the
    /// spool aborts before the dot: a truncated message must never be
    /// acknowledged.
    fn send_message(&mut self, message: &mut dyn Read) -> Result<(), String> {
        let mut ds = DotStuffer::default();
        let mut inbuf = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK * 2 + 8);
        loop {
            let n = match message.read(&mut inbuf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("lmtp: reading the message: {e}")),
            };
            out.clear();
            ds.push(&inbuf[..n], &mut out);
            self.write_all(&out)?;
        }
        out.clear();
        ds.finish(&mut out);
        self.write_all(&out)
    }
}

fn io_error(what: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("lmtp: {what} timed out"),
        _ => format!("lmtp: {what}: {e}"),
    }
}

fn connect(addr: &LmtpAddr, t: &Timeouts) -> Result<Conn, String> {
    match addr {
        LmtpAddr::Unix(p) => UnixStream::connect(p)
            .map(Conn::Unix)
            .map_err(|e| format!("lmtp: connect {}: {e}", p.display())),
        LmtpAddr::Tcp { host, port } => {
            let addrs = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("lmtp: resolve {host}: {e}"))?;
            let mut last = format!("lmtp: {host}: no address");
            for a in addrs {
                match TcpStream::connect_timeout(&a, t.connect) {
                    Ok(s) => return Ok(Conn::Tcp(s)),
                    Err(e) => last = io_error(&format!("connect {a}"), &e),
                }
            }
            Err(last)
        }
    }
}

/// Deliver one message to its recipients over LMTP; one outcome per
/// recipient, in order. Every recipient has the same sender and
/// hostname (they are envelopes of one message): the first one's are
/// used. Connection trouble of any kind fails every undecided recipient
/// temporarily.
pub fn deliver(
    target: &LmtpTarget,
    rcpts: &[Recipient],
    message: &mut dyn Read,
    timeouts: Timeouts,
) -> Vec<Outcome> {
    let Some(first) = rcpts.first() else {
        return Vec::new();
    };
    let args = rcpts
        .iter()
        .map(|r| {
            if target.rcpt_to {
                r.dest.clone()
            } else {
                r.user.clone()
            }
        })
        .collect();
    let mut s = Session::new(&first.hostname, &first.sender, args);
    if s.is_done() {
        return s.outcomes();
    }
    let deadline = Instant::now() + timeouts.session;
    let conn = match connect(&target.addr, &timeouts) {
        Ok(c) => c,
        Err(e) => {
            s.fail(&e);
            return s.outcomes();
        }
    };
    let mut d = Driver {
        conn,
        io: timeouts.io,
        deadline,
        buf: Vec::new(),
    };
    if let Err(e) = run(&mut s, &mut d, message) {
        s.fail(&e);
    }
    s.outcomes()
}

/// The session's loop: read a reply, do what it says.
fn run(s: &mut Session, d: &mut Driver, message: &mut dyn Read) -> Result<(), String> {
    loop {
        let reply = d.read_reply()?;
        match s.on_reply(&reply) {
            Step::Done => return Ok(()),
            Step::Send(cmd) => d.write_all(cmd.as_bytes())?,
            Step::SendMessage => d.send_message(message)?,
            Step::Read => {}
        }
        if s.is_done() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::thread;

    fn recipient(user: &str, dest: &str) -> Recipient {
        Recipient {
            sender: "alice@example.org".into(),
            rcpt: dest.into(),
            dest: dest.into(),
            user: user.into(),
            home: PathBuf::from("/home").join(user),
            uid: 1000,
            gid: 1000,
            hostname: "mx.example.net".into(),
        }
    }

    fn quick() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(5),
            session: Duration::from_secs(20),
        }
    }

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            text: format!("{code} {text}"),
        }
    }

    /// What the test server saw.
    #[derive(Debug, Default)]
    struct Seen {
        commands: Vec<String>,
        data: Vec<u8>,
    }

    /// A small LMTP server: `rcpt` is the reply to each RCPT in turn,
    /// `finals` the per-recipient replies after the dot.
    fn serve(stream: impl Read + Write, rcpt: &[&str], finals: &[&str]) -> Seen {
        let mut r = BufReader::new(stream);
        let mut seen = Seen::default();
        let mut rcpt = rcpt.iter();
        let send = |r: &mut BufReader<_>, s: &str| {
            let w: &mut dyn Write = r.get_mut();
            let _ = w.write_all(s.as_bytes());
        };
        send(&mut r, "220 lmtp.test LMTP ready\r\n");
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return seen;
            }
            seen.commands.push(line.trim_end().to_string());
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "LHLO" => send(
                    &mut r,
                    "250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                ),
                "MAIL" => send(&mut r, "250 2.1.0 ok\r\n"),
                "RCPT" => {
                    let rep = rcpt.next().copied().unwrap_or("250 ok");
                    send(&mut r, &format!("{rep}\r\n"));
                }
                "DATA" => {
                    send(&mut r, "354 go ahead\r\n");
                    loop {
                        let mut l = Vec::new();
                        if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                            return seen;
                        }
                        if l == b".\r\n" {
                            break;
                        }
                        seen.data.extend_from_slice(&l);
                    }
                    let all: String = finals.iter().map(|f| format!("{f}\r\n")).collect();
                    send(&mut r, &all);
                }
                "QUIT" => {
                    send(&mut r, "221 bye\r\n");
                    return seen;
                }
                _ => send(&mut r, "500 what\r\n"),
            }
        }
    }

    const MESSAGE: &[u8] =
        b"Subject: test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nlast";

    #[test]
    fn mixed_replies_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            // a and b accepted, c refused at RCPT; after the dot a is
            // delivered and b is over quota.
            serve(
                s,
                &["250 2.1.5 ok", "250 2.1.5 ok", "550 5.1.1 no such user"],
                &[
                    "250 2.0.0 delivered",
                    "452-4.2.2 mailbox\r\n452 4.2.2 full\x07",
                ],
            )
        });
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let rcpts = [
            recipient("alice", "a@example.net"),
            recipient("bob", "b@example.net"),
            recipient("carol", "c@example.net"),
        ];
        let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
        assert_eq!(
            out,
            vec![
                Outcome::Delivered,
                Outcome::TempFail("452 4.2.2 mailbox 4.2.2 full".into()),
                Outcome::PermFail("550 5.1.1 no such user".into()),
            ]
        );
        let seen = server.join().expect("server");
        assert_eq!(
            seen.commands,
            vec![
                "LHLO mx.example.net",
                "MAIL FROM:<alice@example.org>",
                "RCPT TO:<alice>",
                "RCPT TO:<bob>",
                "RCPT TO:<carol>",
                "DATA",
                "QUIT"
            ]
        );
        assert_eq!(
            seen.data,
            b"Subject: test\r\n\r\nline one\r\n..leading dot\r\n...two dots\r\n..\r\nlast\r\n"
        );
    }

    #[test]
    fn rcpt_to_and_unix_socket() {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "smtpd-lmtp-test-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).expect("bind");
        let server = thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            serve(s, &["250 ok", "452 4.2.1 try later"], &["250 ok"])
        });
        let target = LmtpTarget::parse(path.to_str().expect("utf-8"), true).expect("target");
        assert!(matches!(target.addr, LmtpAddr::Unix(_)));
        let rcpts = [
            recipient("alice", "alice@example.net"),
            recipient("bob", "bob@example.net"),
        ];
        let out = deliver(
            &target,
            &rcpts,
            &mut &b"Subject: x\n\nbare LF\n"[..],
            quick(),
        );
        let seen = server.join().expect("server");
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            out,
            vec![
                Outcome::Delivered,
                Outcome::TempFail("452 4.2.1 try later".into())
            ]
        );
        assert!(seen
            .commands
            .contains(&"RCPT TO:<alice@example.net>".to_string()));
        assert!(seen
            .commands
            .contains(&"RCPT TO:<bob@example.net>".to_string()));
        assert_eq!(seen.data, b"Subject: x\r\n\r\nbare LF\r\n");
    }

    #[test]
    fn every_recipient_refused_means_no_data() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            serve(s, &["550 no", "450 later"], &[])
        });
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let rcpts = [recipient("a", "a@x"), recipient("b", "b@x")];
        let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
        let seen = server.join().expect("server");
        assert_eq!(
            out,
            vec![
                Outcome::PermFail("550 no".into()),
                Outcome::TempFail("450 later".into())
            ]
        );
        assert!(!seen.commands.iter().any(|c| c == "DATA"));
        assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
    }

    #[test]
    fn endless_reply_is_a_temp_fail() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            // Until the client hangs up (bounded, should it not).
            for _ in 0..1_000_000 {
                if s.write_all(b"220-more and more\r\n").is_err() {
                    break;
                }
            }
        });
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let out = deliver(
            &target,
            &[recipient("a", "a@x")],
            &mut &MESSAGE[..],
            quick(),
        );
        assert_eq!(
            out,
            vec![Outcome::TempFail(ProtoError::TooManyLines.to_string())]
        );
        server.join().expect("server");
    }

    #[test]
    fn overlong_line_is_a_temp_fail() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let _ = s.write_all(format!("220 {}", "x".repeat(100_000)).as_bytes());
        });
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let out = deliver(
            &target,
            &[recipient("a", "a@x")],
            &mut &MESSAGE[..],
            quick(),
        );
        assert_eq!(
            out,
            vec![Outcome::TempFail(ProtoError::LineTooLong.to_string())]
        );
        server.join().expect("server");
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            // Hold the connection open, say nothing, until the client
            // goes away.
            let mut b = [0u8; 16];
            let _ = s.read(&mut b);
        });
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let t = Timeouts {
            io: Duration::from_millis(300),
            ..quick()
        };
        let start = Instant::now();
        let out = deliver(&target, &[recipient("a", "a@x")], &mut &MESSAGE[..], t);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(out, vec![Outcome::TempFail("lmtp: read timed out".into())]);
        server.join().expect("server");

        // The session deadline bounds a server that answers, slowly.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            for _ in 0..100 {
                if s.write_all(b"2").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let t = Timeouts {
            io: Duration::from_secs(5),
            session: Duration::from_millis(500),
            ..quick()
        };
        let start = Instant::now();
        let out = deliver(&target, &[recipient("a", "a@x")], &mut &MESSAGE[..], t);
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(matches!(&out[..], [Outcome::TempFail(_)]), "{out:?}");
        server.join().expect("server");
    }

    #[test]
    fn connection_refused_is_a_temp_fail() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
        let rcpts = [recipient("a", "a@x"), recipient("b", "b@x")];
        let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
        assert_eq!(out.len(), 2);
        assert!(
            out.iter().all(|o| matches!(o, Outcome::TempFail(_))),
            "{out:?}"
        );
        let target = LmtpTarget::parse("/nonexistent/lmtp.sock", false).expect("target");
        let out = deliver(&target, &rcpts[..1], &mut &MESSAGE[..], quick());
        assert!(matches!(&out[..], [Outcome::TempFail(_)]));
        assert!(deliver(&target, &[], &mut &MESSAGE[..], quick()).is_empty());
    }

    #[test]
    fn reply_parser_is_strict() {
        let mut p = ReplyParser::default();
        assert_eq!(p.feed(b"250-first"), Ok(None));
        assert_eq!(p.feed(b"250-"), Ok(None));
        assert_eq!(
            p.feed(b"250 last\x00\x1b[31m"),
            Ok(Some(Reply {
                code: 250,
                text: "250 first last[31m".into()
            }))
        );
        // A bare code is a complete reply.
        assert_eq!(
            p.feed(b"354"),
            Ok(Some(Reply {
                code: 354,
                text: "354".into()
            }))
        );
        for bad in [
            &b""[..],
            b"25",
            b"2500 x",
            b"25a ok",
            b"abc ok",
            b"150 ok",
            b"650 x",
            b"250_x",
        ] {
            assert_eq!(
                ReplyParser::default().feed(bad),
                Err(ProtoError::BadLine),
                "{bad:?}"
            );
        }
        let mut p = ReplyParser::default();
        assert_eq!(p.feed(b"250-a"), Ok(None));
        assert_eq!(p.feed(b"251 b"), Err(ProtoError::CodeChanged));
        let mut p = ReplyParser::default();
        for _ in 0..MAX_LINES - 1 {
            assert_eq!(p.feed(b"250-x"), Ok(None));
        }
        assert!(matches!(p.feed(b"250 x"), Ok(Some(_))));
        let mut p = ReplyParser::default();
        for _ in 0..MAX_LINES {
            assert_eq!(p.feed(b"250-x"), Ok(None));
        }
        assert_eq!(p.feed(b"250-x"), Err(ProtoError::TooManyLines));
        let long = [b'5'; MAX_LINE + 1];
        assert_eq!(
            ReplyParser::default().feed(&long),
            Err(ProtoError::LineTooLong)
        );
        // The kept text is capped however long the reply.
        let mut p = ReplyParser::default();
        let line = format!("250-{}", "y".repeat(4000));
        for _ in 0..10 {
            let _ = p.feed(line.as_bytes());
        }
        let r = p.feed(b"250 end").expect("ok").expect("reply");
        assert!(r.text.len() <= MAX_TEXT);
    }

    #[test]
    fn session_without_io() {
        let rcpts = vec!["a".to_string(), "b<x>".to_string(), "c".to_string()];
        let mut s = Session::new("mx.example.net", "", rcpts);
        let send = |x: &str| Step::Send(x.to_string());
        assert_eq!(
            s.on_reply(&reply(220, "hi")),
            send("LHLO mx.example.net\r\n")
        );
        assert_eq!(s.on_reply(&reply(250, "ok")), send("MAIL FROM:<>\r\n"));
        // b cannot be sent: skipped, failed for good.
        assert_eq!(s.on_reply(&reply(250, "ok")), send("RCPT TO:<a>\r\n"));
        assert_eq!(s.on_reply(&reply(250, "ok")), send("RCPT TO:<c>\r\n"));
        assert_eq!(s.on_reply(&reply(250, "ok")), send("DATA\r\n"));
        assert_eq!(s.on_reply(&reply(354, "go")), Step::SendMessage);
        assert_eq!(s.on_reply(&reply(250, "ok a")), Step::Read);
        // The connection drops before c's reply.
        s.fail("lmtp: unexpected EOF");
        assert_eq!(
            s.outcomes(),
            vec![
                Outcome::Delivered,
                Outcome::PermFail("lmtp: invalid recipient".into()),
                Outcome::TempFail("lmtp: unexpected EOF".into()),
            ]
        );

        // A refused banner, MAIL or DATA settles everyone left.
        let mut s = Session::new("h", "s@x", vec!["a".into()]);
        assert_eq!(s.on_reply(&reply(554, "go away")), send("QUIT\r\n"));
        assert_eq!(s.on_reply(&reply(221, "bye")), Step::Done);
        assert_eq!(s.outcomes(), vec![Outcome::PermFail("554 go away".into())]);
        let mut s = Session::new("h", "s@x", vec!["a".into(), "b".into()]);
        s.on_reply(&reply(220, ""));
        s.on_reply(&reply(250, ""));
        assert_eq!(s.on_reply(&reply(451, "later")), send("QUIT\r\n"));
        assert!(s
            .outcomes()
            .iter()
            .all(|o| *o == Outcome::TempFail("451 later".into())));
        let mut s = Session::new("h", "s@x", vec!["a".into(), "b".into()]);
        for r in [220, 250, 250, 550, 250] {
            s.on_reply(&reply(r, "x"));
        }
        assert_eq!(s.on_reply(&reply(554, "no data")), send("QUIT\r\n"));
        assert_eq!(
            s.outcomes(),
            vec![
                Outcome::PermFail("550 x".into()),
                Outcome::PermFail("554 no data".into())
            ]
        );
        // A 2xx to DATA is a protocol error: temporary.
        let mut s = Session::new("h", "s@x", vec!["a".into()]);
        for r in [220, 250, 250, 250] {
            s.on_reply(&reply(r, "x"));
        }
        assert_eq!(s.on_reply(&reply(250, "odd")), send("QUIT\r\n"));
        assert_eq!(s.outcomes(), vec![Outcome::TempFail("250 odd".into())]);
        // Unsafe arguments never reach the wire.
        let s = Session::new("h\r\nRSET", "s@x", vec!["a".into()]);
        assert!(s.is_done());
        assert!(matches!(&s.outcomes()[..], [Outcome::TempFail(_)]));
        let s = Session::new("h", "s@x>\r\nRCPT TO:<x", vec!["a".into()]);
        assert!(matches!(&s.outcomes()[..], [Outcome::PermFail(_)]));
    }

    #[test]
    fn dot_stuffing() {
        let stuff = |chunks: &[&[u8]]| {
            let mut ds = DotStuffer::default();
            let mut out = Vec::new();
            for c in chunks {
                ds.push(c, &mut out);
            }
            ds.finish(&mut out);
            out
        };
        assert_eq!(
            stuff(&[b".a\r\n.\r\nb.c\r\n"]),
            b"..a\r\n..\r\nb.c\r\n.\r\n"
        );
        assert_eq!(stuff(&[b"x\r", b"\n", b".y"]), b"x\r\n..y\r\n.\r\n");
        assert_eq!(stuff(&[b"a\nb\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b""]), b".\r\n");
        assert_eq!(stuff(&[b"tail\r"]), b"tail\r\n.\r\n");
    }

    #[test]
    fn target_parsing() {
        let p = |s| LmtpTarget::parse(s, false).map(|t| t.addr);
        let tcp = |h: &str, port| {
            Ok(LmtpAddr::Tcp {
                host: h.into(),
                port,
            })
        };
        assert_eq!(p("127.0.0.1:24"), tcp("127.0.0.1", 24));
        assert_eq!(p("localhost"), tcp("localhost", 25));
        assert_eq!(p("[::1]:2424"), tcp("::1", 2424));
        assert_eq!(p("[IPv6:::1]"), tcp("::1", 25));
        assert_eq!(
            p("/var/run/dovecot/lmtp"),
            Ok(LmtpAddr::Unix("/var/run/dovecot/lmtp".into()))
        );
        for bad in [
            "",
            "host:",
            "host:0",
            "host:99999",
            ":24",
            "[::1",
            "[::1]x",
            "a\nb",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        assert!(LmtpTarget::parse("x:24", true).expect("ok").rcpt_to);
    }
}
