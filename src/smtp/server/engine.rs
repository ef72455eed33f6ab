//! The session state machine: input is buffered, cut into command lines
//! (or read as message data), and each command is checked against the
//! session's state. Where the glue must decide (a sender, a recipient, a
//! message file, credentials, a commit), the engine emits a `Need*` event
//! and reads nothing more until `answer` comes: pipelined commands wait in
//! the buffer, and every reply goes out in order.
//!
//! This file holds the session, its input loop, the command dispatch and
//! the replies; `mail` the transaction (MAIL, RCPT, DATA, BDAT, commit);
//! `security` STARTTLS and AUTH.

use super::body::Reader;
use super::command::{self, Offer, Verb};
use super::{AbortReason, Answer, AuthPolicy, Config, Event, INPUT_SLACK, MAX_ERRORS, MAX_JUNK};
use crate::log::escape;

mod mail;
mod security;

const BAD_SEQUENCE: &str = "503 5.5.1 Invalid command: Command not allowed at this point.";
const NEED_TLS: &str = "530 5.7.0 Must issue a STARTTLS command first";
const NO_ARGS: &str = "501 5.5.4 Syntax error: no parameters allowed";
/// Most bytes of a command shown in a log line.
const LOG_COMMAND_MAX: usize = 256;

/// What the next input bytes are.
#[derive(Debug)]
enum Mode {
    Command,
    /// The response to `334 ` after AUTH PLAIN.
    AuthPlain,
    /// The user name after AUTH LOGIN.
    AuthLoginUser,
    /// The password after AUTH LOGIN, for this user.
    AuthLoginPass(String),
    /// Message data after the 354; the reader is in the transaction.
    Data,
    /// The bytes of a BDAT chunk: `left` of `size` still to come. With a
    /// refusal, the chunk is read and dropped, then refused.
    Chunk {
        size: u64,
        left: u64,
        last: bool,
        refuse: Option<Refusal>,
    },
    /// After the 220 to STARTTLS, until `tls_started`.
    Tls,
}

/// A reply to give later, and whether it counts as a client error.
#[derive(Debug)]
struct Refusal {
    reply: String,
    counts: bool,
}

/// The question the engine waits to have answered.
#[derive(Debug)]
enum Wait {
    Mail { utf8: bool, binary: bool },
    Rcpt,
    Data,
    Bdat { size: u64, last: bool },
    Commit,
    Auth { user: String },
}

/// The current transaction, from an accepted MAIL.
#[derive(Debug)]
struct Tx {
    /// MAIL had SMTPUTF8: RCPT paths may be UTF-8.
    utf8: bool,
    /// BODY=BINARYMIME: BDAT only.
    binary: bool,
    /// RCPT commands asked about (accepted or not).
    tried: usize,
    /// RCPT commands beyond `max_rcpt`.
    overshoot: usize,
    /// Recipients accepted.
    rcpts: usize,
    /// A BDAT was accepted: no DATA, no more RCPT.
    chunked: bool,
    /// The message being received; `Some` from a successful `DataReady`.
    body: Option<Reader>,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    buf: Vec<u8>,
    /// Bytes of `buf` already used.
    pos: usize,
    /// Bytes after `pos` known to hold no LF.
    scanned: usize,
    greeted: bool,
    closed: bool,
    mode: Mode,
    wait: Option<Wait>,
    helo: Option<String>,
    esmtp: bool,
    auth_user: Option<String>,
    tx: Option<Tx>,
    /// Transactions started.
    mails: usize,
    errors: u32,
    junk: u32,
    /// The last MAIL was refused: RCPT/DATA/BDAT that follow it are the
    /// rest of a pipelined transaction, not errors, up to `stray` of them.
    mail_refused: bool,
    stray: usize,
    /// The current command, escaped, for log lines.
    cmd: String,
}

impl Server {
    pub fn new(mut cfg: Config) -> Server {
        // Our own replies carry the name: keep it one printable token.
        cfg.hostname = cfg
            .hostname
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        // RFC 5321 wants at least 512-byte command lines.
        cfg.max_line = cfg.max_line.max(512);
        Server {
            cfg,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            greeted: false,
            closed: false,
            mode: Mode::Command,
            wait: None,
            helo: None,
            esmtp: false,
            auth_user: None,
            tx: None,
            mails: 0,
            errors: 0,
            junk: 0,
            mail_refused: false,
            stray: 0,
            cmd: String::new(),
        }
    }

    /// The banner. Input that came before it is read after it.
    pub fn greeting(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.greeted || self.closed {
            return out;
        }
        self.greeted = true;
        let banner = format!("220 {} ESMTP smtpd-rs", self.cfg.hostname);
        self.reply(&mut out, &banner);
        self.run(&mut out);
        out
    }

    /// Bytes from the client, split anyhow.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if matches!(self.mode, Mode::Tls) {
            // Plaintext after STARTTLS: never read as commands (A11).
            out.push(Event::Log(format!(
                "bad-input reason=\"plaintext after STARTTLS\" bytes={}",
                bytes.len()
            )));
            return out;
        }
        self.buf.extend_from_slice(bytes);
        self.run(&mut out);
        if self.buf.len() - self.pos > self.cfg.max_line + INPUT_SLACK {
            let text = format!(
                "421 4.7.0 {} Too much input, closing connection",
                self.cfg.hostname
            );
            self.bad_input_close(&mut out, &text);
        }
        out
    }

    /// The glue's answer to the last `Need*` event.
    pub fn answer(&mut self, a: Answer) -> Vec<Event> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        let Some(wait) = self.wait.take() else {
            out.push(Event::Log(
                "internal-error reason=\"answer without question\"".into(),
            ));
            return out;
        };
        match (wait, a) {
            (Wait::Mail { utf8, binary }, Answer::Mail(r)) => {
                self.mail_answer(utf8, binary, r, &mut out)
            }
            (Wait::Rcpt, Answer::Rcpt(r)) => self.rcpt_answer(r, &mut out),
            (Wait::Data, Answer::DataReady(r)) => self.data_answer(r, &mut out),
            (Wait::Bdat { size, last }, Answer::DataReady(r)) => {
                self.bdat_answer(size, last, r, &mut out)
            }
            (Wait::Commit, Answer::Committed(r)) => self.commit_answer(r, &mut out),
            (Wait::Auth { user }, Answer::Auth(ok)) => self.auth_answer(user, ok, &mut out),
            (wait, _) => {
                self.wait = Some(wait);
                out.push(Event::Log(
                    "internal-error reason=\"answer to another question\"".into(),
                ));
                return out;
            }
        }
        self.run(&mut out);
        out
    }

    /// The TLS handshake after STARTTLS completed: forget everything the
    /// client told us in the clear (RFC 3207 section 4.2).
    pub fn tls_started(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.cfg.tls_active = true;
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.wait = None;
        self.reset_tx(AbortReason::SessionEnd, &mut out);
        self.mode = Mode::Command;
        self.discard_input();
        self.run(&mut out);
        out
    }

    /// The session timed out: 421 and close.
    pub fn timeout(&mut self) -> Vec<Event> {
        self.close_with("421 4.4.2 {} Timeout, closing connection")
    }

    /// The daemon is shutting down: 421 and close.
    pub fn shutdown(&mut self) -> Vec<Event> {
        self.close_with("421 4.3.2 {} Service shutting down, closing connection")
    }

    /// The client went away: discard what it was sending.
    pub fn disconnected(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.closed {
            self.reset_tx(AbortReason::SessionEnd, &mut out);
            self.closed = true;
            self.wait = None;
            self.discard_input();
        }
        out
    }

    /// Whether the glue should read from the client now. False while an
    /// answer is awaited, during the TLS handshake, and once closed.
    pub fn wants_input(&self) -> bool {
        self.greeted && !self.closed && self.wait.is_none() && !matches!(self.mode, Mode::Tls)
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The HELO/EHLO name, once accepted (for the Received header).
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// EHLO rather than HELO.
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// The user that authenticated, if any.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    pub fn tls_active(&self) -> bool {
        self.cfg.tls_active
    }

    // ---- reading ------------------------------------------------------

    fn run(&mut self, out: &mut Vec<Event>) {
        while self.greeted && !self.closed && self.wait.is_none() {
            let progress = match self.mode {
                Mode::Tls => false,
                Mode::Data => self.read_data(out),
                Mode::Chunk { .. } => self.read_chunk(out),
                _ => self.read_line(out),
            };
            if !progress {
                break;
            }
        }
        self.compact();
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.scanned = 0;
    }

    fn discard_input(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
    }

    /// Drop used bytes, but not a few at a time from a big buffer (many
    /// pipelined commands answered one by one would copy it each time).
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 || self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let keep = self.buf.len().max(64 * 1024);
        if self.buf.capacity() > 2 * keep {
            self.buf.shrink_to(keep);
        }
    }

    /// One line (command or AUTH response); false if incomplete.
    fn read_line(&mut self, out: &mut Vec<Event>) -> bool {
        let max = self.cfg.max_line;
        let avail = &self.buf[self.pos..];
        // A line, with its LF, fits in the first max_line bytes.
        let end = avail.len().min(max);
        let from = self.scanned.min(end);
        let window = &avail[from..end];
        let Some(i) = window.iter().position(|&b| b == b'\n').map(|i| i + from) else {
            if avail.len() >= max {
                // No line ending within max_line bytes.
                self.bad_input_close(out, "500 5.5.1 Line too long");
            } else {
                self.scanned = avail.len();
            }
            return false;
        };
        let mut line = avail[..i].to_vec();
        self.consume(i + 1);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::AuthPlain => self.auth_plain(&line, out),
            Mode::AuthLoginUser => self.auth_login_user(&line, out),
            Mode::AuthLoginPass(user) => self.auth_login_pass(user, &line, out),
            _ => self.command(&line, out),
        }
        true
    }

    /// DATA bytes up to the final dot.
    fn read_data(&mut self, out: &mut Vec<Event>) -> bool {
        let avail = &self.buf[self.pos..];
        let Some(reader) = self.tx.as_mut().and_then(|t| t.body.as_mut()) else {
            self.mode = Mode::Command;
            return true;
        };
        if avail.is_empty() {
            return false;
        }
        let mut data = Vec::new();
        let (used, end) = reader.feed_dot(avail, &mut data);
        body_events(reader, data, out);
        self.consume(used);
        if end {
            self.mode = Mode::Command;
            self.message_end(out);
        }
        true
    }

    /// BDAT chunk bytes; at the end of the chunk, its reply.
    fn read_chunk(&mut self, out: &mut Vec<Event>) -> bool {
        let Mode::Chunk { left, refuse, .. } = &self.mode else {
            return false;
        };
        let (left, storing) = (*left, refuse.is_none());
        if left > 0 {
            let avail = &self.buf[self.pos..];
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(avail.len());
            if n == 0 {
                return false;
            }
            if storing {
                if let Some(reader) = self.tx.as_mut().and_then(|t| t.body.as_mut()) {
                    let mut data = Vec::new();
                    reader.feed_chunk(&avail[..n], &mut data);
                    body_events(reader, data, out);
                }
            }
            self.consume(n);
            if let Mode::Chunk { left, .. } = &mut self.mode {
                *left -= n as u64;
            }
            return true;
        }
        if let Mode::Chunk {
            size, last, refuse, ..
        } = std::mem::replace(&mut self.mode, Mode::Command)
        {
            self.chunk_end(size, last, refuse, out);
        }
        true
    }

    // ---- commands -----------------------------------------------------

    fn command(&mut self, line: &[u8], out: &mut Vec<Event>) {
        let (verb, args) = command::split(line);
        self.cmd = log_command(verb, line, args);
        let eight = match command::check_chars(line) {
            Ok(eight) => eight,
            Err(()) => return self.bad_input(out),
        };
        if eight && !matches!(verb, Verb::Mail | Verb::Rcpt) {
            return self.bad_input(out);
        }
        match verb {
            Verb::Helo => self.helo_cmd(args, false, out),
            Verb::Ehlo => self.helo_cmd(args, true, out),
            Verb::Mail => self.mail(args, out),
            Verb::Rcpt => self.rcpt(args, out),
            Verb::Data => self.data(args, out),
            Verb::Bdat if self.cfg.chunking => self.bdat(args, out),
            Verb::Rset => {
                if !args.is_empty() {
                    return self.fail(out, NO_ARGS);
                }
                self.reset_tx(AbortReason::Reset, out);
                self.junk_reply(out, "250 2.0.0 Reset state");
            }
            Verb::Noop => self.junk_reply(out, "250 2.0.0 Ok"),
            Verb::Help => self.junk_reply(
                out,
                "214-2.0.0 This is smtpd-rs\r\n214 2.0.0 End of HELP info",
            ),
            Verb::Vrfy if args.is_empty() => self.fail(out, "501 5.5.4 Syntax: VRFY address"),
            Verb::Vrfy => self.junk_reply(
                out,
                "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Verb::Expn => self.junk_reply(out, "502 5.5.1 EXPN not supported"),
            Verb::Quit => {
                self.reply(out, "221 2.0.0 Bye");
                self.close(out);
            }
            Verb::StartTls => self.starttls(args, out),
            Verb::Auth => self.auth(args, out),
            // Its failed-command line shows the request and our 421.
            Verb::Http => {
                let text = format!(
                    "421 4.7.0 {} Not an SMTP client, closing connection",
                    self.cfg.hostname
                );
                self.reply(out, &text);
                self.close(out);
            }
            Verb::Bdat | Verb::Unknown => {
                self.fail(out, "500 5.5.1 Invalid command: Command unrecognized")
            }
        }
    }

    fn helo_cmd(&mut self, args: &[u8], esmtp: bool, out: &mut Vec<Event>) {
        if args.is_empty() {
            let verb = if esmtp { "EHLO" } else { "HELO" };
            return self.fail(out, &format!("501 5.5.4 {verb} requires domain name"));
        }
        if !command::valid_helo(args) {
            return self.fail(out, "501 5.5.4 Invalid domain name");
        }
        // A new HELO/EHLO is an implicit RSET (RFC 5321 4.1.4).
        self.reset_tx(AbortReason::Reset, out);
        let name: String = args.iter().map(|&b| char::from(b)).collect();
        self.helo = Some(name.clone());
        self.esmtp = esmtp;
        out.push(Event::Helo {
            name: name.clone(),
            esmtp,
        });
        let peer = match self.cfg.peer {
            Some(ip) => ip.to_string(),
            None => "local".into(),
        };
        let host = &self.cfg.hostname;
        let hello = format!("{host} Hello {name} [{peer}], pleased to meet you");
        if !esmtp {
            return self.reply(out, &format!("250 {hello}"));
        }
        let mut lines = vec![hello, "8BITMIME".into(), "ENHANCEDSTATUSCODES".into()];
        lines.push(format!("SIZE {}", self.cfg.max_message_size));
        let c = &self.cfg;
        for (on, ext) in [
            (c.dsn, "DSN"),
            (c.pipelining, "PIPELINING"),
            (c.chunking, "CHUNKING"),
            (c.smtputf8, "SMTPUTF8"),
            (c.tls_available && !c.tls_active, "STARTTLS"),
            (self.auth_offered(), "AUTH PLAIN LOGIN"),
        ] {
            if on {
                lines.push(ext.into());
            }
        }
        lines.push("HELP".into());
        let n = lines.len();
        let text: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
            .collect();
        self.reply(out, &text.join("\r\n"));
    }

    // ---- state helpers --------------------------------------------------

    fn offer(&self) -> Offer {
        Offer {
            dsn: self.cfg.dsn,
            smtputf8: self.cfg.smtputf8,
            chunking: self.cfg.chunking,
            auth: self.cfg.auth != AuthPolicy::None,
            max_size: self.cfg.max_message_size,
        }
    }

    fn tls_needed(&self) -> bool {
        self.cfg.tls_required && !self.cfg.tls_active
    }

    /// AUTH is offered now: configured, over TLS unless allowed in the
    /// clear, and not done yet.
    fn auth_offered(&self) -> bool {
        self.cfg.auth != AuthPolicy::None
            && (self.cfg.tls_active || self.cfg.auth_plaintext_ok)
            && self.auth_user.is_none()
    }

    /// The 503 for RCPT, DATA or BDAT without a transaction. After a
    /// refused MAIL they are the rest of a pipelined transaction: up to
    /// `max_rcpt + 2` of them are not counted as errors.
    fn no_tx(&mut self) -> Refusal {
        let free = self.mail_refused && self.stray < self.cfg.max_rcpt + 2;
        if free {
            self.stray += 1;
        }
        Refusal {
            reply: BAD_SEQUENCE.into(),
            counts: !free,
        }
    }

    /// End the transaction, if any, discarding its message (unless a
    /// broken limit already did).
    fn reset_tx(&mut self, reason: AbortReason, out: &mut Vec<Event>) {
        if let Some(tx) = self.tx.take() {
            if tx.body.as_ref().is_some_and(|r| !r.aborted()) {
                out.push(Event::DataAbort { reason });
            }
            out.push(Event::TxReset);
        }
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        self.reset_tx(AbortReason::SessionEnd, out);
        out.push(Event::Close);
        self.closed = true;
        self.wait = None;
        self.mode = Mode::Command;
        self.discard_input();
    }

    /// Close on our own initiative (timeout, shutdown), with a 421 that
    /// answers no command: no `failed-command` line, as OpenSMTPD (the
    /// `disconnected` line gives the reason).
    fn close_with(&mut self, template: &str) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.closed {
            let text = template.replace("{}", &self.cfg.hostname);
            out.push(Event::Reply(format!("{text}\r\n").into_bytes()));
            self.close(&mut out);
        }
        out
    }

    // ---- replies --------------------------------------------------------

    /// Send one reply (its lines joined by CRLF, without the last one); a
    /// 4xx or 5xx is logged with the command it answers.
    fn reply(&mut self, out: &mut Vec<Event>, text: &str) {
        out.push(Event::Reply(format!("{text}\r\n").into_bytes()));
        if text.starts_with('4') || text.starts_with('5') {
            out.push(Event::Log(format!(
                "failed-command command=\"{}\" result=\"{}\"",
                self.cmd,
                escape(text.as_bytes())
            )));
        }
    }

    /// A refusal that counts against the client: past `MAX_ERRORS` the
    /// session ends with a 421 instead.
    fn fail(&mut self, out: &mut Vec<Event>, text: &str) {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            let text = format!(
                "421 4.7.0 {} Too many errors, closing connection",
                self.cfg.hostname
            );
            self.reply(out, &text);
            return self.close(out);
        }
        self.reply(out, text);
    }

    fn refusal(&mut self, out: &mut Vec<Event>, r: Refusal) {
        match r.counts {
            true => self.fail(out, &r.reply),
            false => self.reply(out, &r.reply),
        }
    }

    /// NOOP, RSET, HELP, VRFY, EXPN: answered, but past `MAX_JUNK` each
    /// counts as an error.
    fn junk_reply(&mut self, out: &mut Vec<Event>, text: &str) {
        self.junk = self.junk.saturating_add(1);
        match self.junk > MAX_JUNK {
            true => self.fail(out, text),
            false => self.reply(out, text),
        }
    }

    /// NUL, control or misplaced 8-bit bytes in a command line: a failed
    /// command, logged as any other (OpenSMTPD, which reads such lines as
    /// commands, fails them with a `failed-command` line too).
    fn bad_input(&mut self, out: &mut Vec<Event>) {
        self.fail(out, "500 5.5.2 Invalid character in command");
    }

    /// The input cannot be read as SMTP any more (a line too long, too
    /// much of it while we wait): the last reply, and close. Logged as
    /// OpenSMTPD logs its own such ends: `bad-input result="..."`.
    fn bad_input_close(&mut self, out: &mut Vec<Event>, text: &str) {
        out.push(Event::Reply(format!("{text}\r\n").into_bytes()));
        out.push(Event::Log(format!(
            "bad-input result=\"{}\"",
            escape(text.as_bytes())
        )));
        self.close(out);
    }

    /// A reply from the glue: checked to be one 4xx/5xx line of printable
    /// ASCII; a 421 also ends the session.
    fn glue_refusal(&mut self, out: &mut Vec<Event>, text: &str, counts: bool) {
        let b = text.as_bytes();
        let valid = b.len() >= 3
            && matches!(b[0], b'4' | b'5')
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
            && b.get(3).is_none_or(|&c| c == b' ');
        let text: String = if valid {
            text.chars()
                .take(512)
                .map(|c| {
                    if c == ' ' || c.is_ascii_graphic() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        } else {
            out.push(Event::Log(
                "internal-error reason=\"invalid reply from glue\"".into(),
            ));
            "451 4.3.0 Temporary failure".into()
        };
        if text.starts_with("421") {
            self.reply(out, &text);
            return self.close(out);
        }
        match counts {
            true => self.fail(out, &text),
            false => self.reply(out, &text),
        }
    }
}

/// Report what a reader did with the bytes it was fed: the stored bytes,
/// or, the first time a limit breaks, the order to discard the message.
fn body_events(reader: &mut Reader, data: Vec<u8>, out: &mut Vec<Event>) {
    if let Some(reason) = reader.take_new_error() {
        out.push(Event::DataAbort { reason });
    } else if reader.error().is_none() && !data.is_empty() {
        out.push(Event::Data(data));
    }
}

/// The command for log lines: escaped, cut, and without AUTH secrets.
fn log_command(verb: Verb, line: &[u8], args: &[u8]) -> String {
    if verb == Verb::Auth {
        let mech = args.split(|&b| b == b' ').next().unwrap_or(b"");
        let mech = &mech[..mech.len().min(20)];
        return format!("AUTH {} (...)", escape(mech));
    }
    let cut = &line[..line.len().min(LOG_COMMAND_MAX)];
    let mut s = escape(cut);
    if cut.len() < line.len() {
        s.push_str("...");
    }
    s
}
