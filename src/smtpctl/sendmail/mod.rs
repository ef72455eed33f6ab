//! smtpctl called as `sendmail`: read a message on standard input and
//! hand it to the running daemon over an SMTP session that control opens
//! for us (OpenSMTPD's enqueue). With the daemon stopped, the message
//! goes to the offline queue. `-bs` speaks SMTP on stdin/stdout through
//! the same session, `-bp` is mailq, `-bi` is newaliases.
//!
//! Exit codes are sendmail's (sysexits), as OpenSMTPD's: 0 sent, 75
//! (EX_TEMPFAIL) left in the offline queue, 70 (EX_SOFTWARE) refused or
//! no recipients, 69 (EX_UNAVAILABLE) cannot read or write, 64 usage.

pub mod args;
pub mod message;
pub mod offline;
mod smtp;

use super::conn::Conn;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

pub const EX_USAGE: i32 = 64;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_TEMPFAIL: i32 = 75;
/// Longest message read from standard input (the daemon's own limit).
const MAX_INPUT: u64 = 35 << 20;

/// Run as sendmail with `argv` (without the program name).
pub fn main(argv: &[String]) -> i32 {
    let a = match args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}");
            eprintln!("usage: sendmail [-tv] [-f from] [-F name] [to ...]");
            return EX_USAGE;
        }
    };
    match a.mode {
        Some('p') => return super::run_words(&["show", "queue"]),
        Some('i') => return super::makemap::newaliases(&[]),
        Some('s') => return fail(proxy()),
        None | Some('m') => {}
        Some(m) => {
            eprintln!("sendmail: -b{m}: unsupported mode");
            return EX_USAGE;
        }
    }
    if a.queue_run {
        // OpenSMTPD's enqueue: "process all now" is not implemented.
        return EX_SOFTWARE;
    }
    if a.offline_rerun {
        return fail(rerun());
    }
    let Some(conn) = Conn::open() else {
        // No daemon: keep the raw input for it, parsing nothing (A9).
        return fail(offline::save(argv, &mut std::io::stdin().lock()));
    };
    fail(read_input().and_then(|input| enqueue(&a, conn, &input)))
}

/// `sendmail -S`, as smtpd runs it for an offline message, as the
/// message's owner: the first line of the input is the saved argument
/// list, the rest the message. With no daemon to take it, it stays in
/// the offline queue (never written there a second time).
fn rerun() -> Result<i32, (i32, String)> {
    let input = read_input()?;
    let (first, message) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => return Err((EX_SOFTWARE, "offline message without arguments".into())),
    };
    let first = std::str::from_utf8(first).map_err(|_| (EX_SOFTWARE, "bad arguments".into()))?;
    let saved: Vec<String> = if first.is_empty() {
        Vec::new()
    } else {
        first.split('|').map(str::to_string).collect()
    };
    let a = args::parse(&saved).map_err(|e| (EX_USAGE, e))?;
    if a.mode.is_some_and(|m| m != 'm') || a.queue_run {
        return Err((EX_USAGE, "unsupported mode in an offline message".into()));
    }
    let conn = Conn::open().ok_or((EX_TEMPFAIL, "smtpd doesn't seem to be running".into()))?;
    enqueue(&a, conn, message)
}

/// All of standard input, within the daemon's message size.
fn read_input() -> Result<Vec<u8>, (i32, String)> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(|e| (EX_UNAVAILABLE, format!("read error: {e}")))?;
    if input.len() as u64 > MAX_INPUT {
        return Err((EX_SOFTWARE, "message too large".into()));
    }
    Ok(input)
}

fn fail(r: Result<i32, (i32, String)>) -> i32 {
    match r {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("sendmail: {e}");
            code
        }
    }
}

/// Who sends: the real uid's account, and the mail name of this host.
struct Sender {
    user: String,
    gecos: String,
    host: String,
}

impl Sender {
    fn find() -> Sender {
        let uid = crate::sys::process::getuid();
        let (user, gecos) = match crate::sys::privdrop::lookup_uid(uid) {
            Ok((acct, gecos)) => (acct.name, gecos),
            Err(_) => ("anonymous".to_string(), String::new()),
        };
        Sender {
            user,
            gecos,
            host: mailname(),
        }
    }

    /// `addr@host` for an address without a domain.
    fn qualify(&self, addr: &str) -> String {
        if !addr.is_empty() && !addr.contains('@') {
            format!("{addr}@{}", self.host)
        } else {
            addr.to_string()
        }
    }

    /// The name in an added From: from the GECOS field, up to its first
    /// comma, `&` standing for the capitalised login (BSD's rule).
    fn full_name(&self) -> String {
        let g = self.gecos.split(',').next().unwrap_or("");
        let mut cap = self.user.clone();
        if let Some(first) = cap.get(0..1) {
            cap = first.to_uppercase() + &cap[1..];
        }
        g.replacen('&', &cap, 1)
    }
}

/// /etc/mail/mailname's first line, else the host name (the name the
/// daemon gives itself).
fn mailname() -> String {
    if let Ok(s) = std::fs::read_to_string("/etc/mail/mailname") {
        if let Some(l) = s.lines().next().map(str::trim).filter(|l| !l.is_empty()) {
            return l.to_string();
        }
    }
    crate::sys::process::hostname().unwrap_or_else(|_| "localhost".into())
}

fn enqueue(a: &args::Args, mut conn: Conn, input: &[u8]) -> Result<i32, (i32, String)> {
    let me = Sender::find();
    let scanned = message::scan(input, a.tflag, a.ignore_dots).map_err(|e| (1, e))?;
    let from = match &a.from {
        Some(f) if f.starts_with('<') => {
            match f.strip_prefix('<').and_then(|f| f.strip_suffix('>')) {
                Some(inner) => me.qualify(inner),
                None => return Err((1, "leading < but no trailing >".into())),
            }
        }
        Some(f) => me.qualify(f),
        // OpenSMTPD's enqueue takes the sender from From: if there is one.
        None => me.qualify(scanned.header_from.as_deref().unwrap_or(&me.user)),
    };
    let fullname = match (&a.fullname, &a.from) {
        (Some(n), _) => n.clone(),
        (None, None) => me.full_name(),
        (None, Some(_)) => String::new(),
    };
    let rcpts: Vec<String> = a
        .rcpts
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .chain(scanned.header_rcpts.iter().cloned())
        .map(|r| me.qualify(&r))
        .collect();
    if rcpts.is_empty() {
        return Err((EX_SOFTWARE, "no recipients".into()));
    }
    // Nothing given may add a command or a header line (the daemon checks
    // the addresses themselves).
    if let Some(bad) = rcpts
        .iter()
        .chain([&from])
        .find(|a| a.contains(['\r', '\n', '<', '>', ' ']))
    {
        return Err((EX_SOFTWARE, format!("invalid address: {bad:?}")));
    }
    if fullname.contains(['\r', '\n']) {
        return Err((EX_SOFTWARE, "invalid full name".into()));
    }
    let fd = conn.smtp_session().map_err(|e| (1, e))?;
    let mut c = smtp::Client::new(UnixStream::from(fd), a.verbose).map_err(|e| (1, e))?;
    let soft = |e: String| (EX_SOFTWARE, e);
    c.reply().map_err(soft)?;
    c.line("EHLO localhost").map_err(soft)?;
    c.reply().map_err(soft)?;
    let mut mail = format!("MAIL FROM:<{from}>");
    if let Some(r) = &a.ret {
        mail.push_str(&format!(" RET={r}"));
    }
    if let Some(v) = &a.envid {
        mail.push_str(&format!(" ENVID={v}"));
    }
    c.line(&mail).map_err(soft)?;
    c.reply().map_err(soft)?;
    for r in &rcpts {
        let mut line = format!("RCPT TO:<{r}>");
        if let Some(n) = &a.notify {
            line.push_str(&format!(" NOTIFY={n}"));
        }
        c.line(&line).map_err(soft)?;
        c.reply().map_err(soft)?;
    }
    c.line("DATA").map_err(soft)?;
    c.reply().map_err(soft)?;
    send_body(&mut c, &scanned, &from, &fullname).map_err(soft)?;
    c.line(".").map_err(soft)?;
    c.reply().map_err(soft)?;
    c.line("QUIT").map_err(soft)?;
    c.reply().map_err(soft)?;
    Ok(0)
}

/// The message as enqueue sends it: From: and Date: added when missing
/// (the daemon adds Message-Id: for local senders), mbox `From ` and
/// Return-Path: lines dropped from the headers, dots doubled.
fn send_body(
    c: &mut smtp::Client,
    m: &message::Scanned,
    from: &str,
    fullname: &str,
) -> Result<(), String> {
    if !m.saw_from {
        let name = if fullname.is_empty() {
            String::new()
        } else {
            format!("{fullname} ")
        };
        c.raw(format!("From: {name}<{from}>\r\n").as_bytes())?;
    }
    if !m.saw_date {
        let date = crate::dispatcher::conn::rfc5322_date(std::time::SystemTime::now());
        c.raw(format!("Date: {date}\r\n").as_bytes())?;
    }
    let mut in_headers = true;
    if m.no_header {
        c.raw(b"\r\n")?;
        in_headers = false;
    }
    for line in &m.lines {
        if in_headers {
            let lower = String::from_utf8_lossy(&line[..line.len().min(13)]).to_ascii_lowercase();
            if lower.starts_with("from ") || lower.starts_with("return-path: ") {
                continue;
            }
            if line.is_empty() {
                in_headers = false;
            }
        }
        if line.first() == Some(&b'.') {
            c.raw(b".")?;
        }
        c.raw(line)?;
        c.raw(b"\r\n")?;
    }
    Ok(())
}

/// `-bs`: the SMTP dialogue on stdin/stdout, relayed to the session.
fn proxy() -> Result<i32, (i32, String)> {
    let mut conn =
        Conn::open().ok_or((EX_UNAVAILABLE, "smtpd doesn't seem to be running".into()))?;
    let fd = conn.smtp_session().map_err(|e| (1, e))?;
    let sock = UnixStream::from(fd);
    let mut to_server = sock
        .try_clone()
        .map_err(|e| (EX_UNAVAILABLE, e.to_string()))?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let mut from_server = sock;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match from_server.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => {
                out.write_all(&buf[..n])
                    .and_then(|()| out.flush())
                    .map_err(|e| (EX_UNAVAILABLE, format!("write error: {e}")))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((EX_UNAVAILABLE, format!("read error: {e}"))),
        }
    }
}
