//! Delivery to an LMTP server (RFC 2033): smtpd.conf's
//! `action ... lmtp host:port|/path [rcpt-to]`, what OpenSMTPD's
//! mail.lmtp does.
//!
//! The protocol is the SMTP client's engine ([`crate::smtp::client`],
//! speaking LMTP): it parses the replies (bounded, sanitised), sends the
//! commands, dot-stuffs the body and gives each recipient the reply the
//! server sent for it after the dot. This file is the blocking driver
//! that runs it in the delivery's child process: it connects over TCP or
//! a unix socket, with a timeout on every read and write and a deadline
//! on the whole session, and feeds the engine what it reads.
//!
//! As mail.lmtp: no PIPELINING (DATA is sent only once a recipient was
//! accepted), no STARTTLS, no `SIZE=` (the message comes as a stream),
//! and RCPT TO carries the user's login name, or with `rcpt-to` the
//! address after expansion. The runner gives one recipient per call; a
//! failure of the session (a timeout, a broken connection, a reply that
//! does not parse) fails it temporarily.

#![forbid(unsafe_code)]

use super::{Outcome, Recipient};
use crate::smtp::address::{parse_path, Domain, Mailbox};
use crate::smtp::client::{self, Client, DotStuffer, Event, TlsPolicy};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Reply text kept for an outcome, bytes (the envelope's last_error cap).
const MAX_TEXT: usize = 1024;
/// Message bytes read, encoded and written at a time.
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
/// session deadline.
struct Driver {
    conn: Conn,
    io: Duration,
    deadline: Instant,
}

impl Driver {
    /// Arm the socket for one call: the io timeout or what is left of the
    /// session, whichever is shorter.
    fn arm(&self) -> Result<(), String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("session timed out".into());
        }
        let d = left.min(self.io).max(Duration::from_millis(1));
        self.conn
            .set_timeouts(d)
            .map_err(|e| format!("setsockopt: {e}"))
    }

    fn write_all(&mut self, mut b: &[u8]) -> Result<(), String> {
        while !b.is_empty() {
            self.arm()?;
            match self.conn.write(b) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("write", &e)),
            }
        }
        Ok(())
    }

    /// Some bytes from the server; 0 at EOF.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        loop {
            self.arm()?;
            match self.conn.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("read", &e)),
            }
        }
    }

    /// The message, dot-stuffed, then the final dot. A read error on the
    /// spool stops before the dot: a truncated message must never be
    /// acknowledged.
    fn send_body(&mut self, message: &mut dyn Read) -> Result<(), String> {
        let mut ds = DotStuffer::new();
        let mut inbuf = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK * 2 + 8);
        loop {
            let n = match message.read(&mut inbuf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the message: {e}")),
            };
            out.clear();
            ds.encode(&inbuf[..n], &mut out);
            self.write_all(&out)?;
        }
        out.clear();
        ds.finish(&mut out);
        self.write_all(&out)
    }
}

fn io_error(what: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{what} timed out"),
        _ => format!("{what}: {e}"),
    }
}

/// The socket to the server; the error is the outcome's text.
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
                    Err(e) => last = format!("lmtp: {}", io_error(&format!("connect {a}"), &e)),
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
/// temporarily; an address that cannot be sent fails for good.
pub fn deliver(
    target: &LmtpTarget,
    rcpts: &[Recipient],
    message: &mut dyn Read,
    timeouts: Timeouts,
) -> Vec<Outcome> {
    let Some(first) = rcpts.first() else {
        return Vec::new();
    };
    let mail_from = match parse_path(&first.sender, true) {
        Ok(m) => m,
        Err(e) => {
            return vec![Outcome::PermFail(format!("lmtp: invalid sender: {e}")); rcpts.len()]
        }
    };
    // Decided here: the recipients the engine cannot be given.
    let mut known: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    let mut to = Vec::new();
    for (k, r) in known.iter_mut().zip(rcpts) {
        match rcpt_addr(target, r) {
            Ok(addr) => to.push(client::Recipient {
                addr,
                notify: None,
                orcpt: None,
            }),
            Err(e) => *k = Some(Outcome::PermFail(format!("lmtp: invalid recipient: {e}"))),
        }
    }
    let mut sent = Vec::new().into_iter();
    if !to.is_empty() {
        let env = client::Envelope {
            id: 0,
            mail_from,
            // Not known: the message is a stream (no SIZE= then).
            size: 0,
            body_8bit: false,
            smtputf8: false,
            ret: None,
            envid: None,
            rcpts: to,
        };
        sent = session(target, &first.hostname, env, message, timeouts).into_iter();
    }
    known
        .into_iter()
        .map(|k| {
            k.or_else(|| sent.next())
                .unwrap_or_else(|| Outcome::TempFail("lmtp: session ended early".into()))
        })
        .collect()
}

/// What goes in RCPT TO: the address after expansion (`rcpt-to`), or
/// the user's login name. The engine sends only the local part of the
/// latter (`rcpt_local_part`): its domain is a stand-in that never
/// leaves this process.
fn rcpt_addr(target: &LmtpTarget, r: &Recipient) -> Result<Mailbox, String> {
    if !target.rcpt_to {
        return Ok(Mailbox {
            local: r.user.clone(),
            domain: Domain::Literal(Ipv4Addr::LOCALHOST.into()),
        });
    }
    match parse_path(&r.dest, true) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err("empty address".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// One LMTP session for `env`: connect, then run the engine to its end.
/// One outcome per recipient of `env`, in order.
fn session(
    target: &LmtpTarget,
    helo: &str,
    env: client::Envelope,
    message: &mut dyn Read,
    t: Timeouts,
) -> Vec<Outcome> {
    let n = env.rcpts.len();
    let deadline = Instant::now() + t.session;
    let conn = match connect(&target.addr, &t) {
        Ok(c) => c,
        Err(e) => return vec![Outcome::TempFail(e); n],
    };
    let mut d = Driver {
        conn,
        io: t.io,
        deadline,
    };
    let mut cfg = client::Config::new(helo);
    cfg.lmtp = true;
    cfg.tls = TlsPolicy::Never;
    cfg.pipelining = false;
    cfg.rcpt_local_part = !target.rcpt_to;
    let mut c = Client::new(cfg);
    // The message waits for the greeting; QUIT follows its last reply.
    let mut queue: VecDeque<Event> = c.send_message(env).into();
    queue.extend(c.quit());
    let mut buf = vec![0u8; CHUNK];
    let mut outcomes = None;
    loop {
        // The engine's requests, in order; when none is left, it waits
        // for the server. Every failure ends in `Close`.
        let Some(ev) = queue.pop_front() else {
            // Closed engines say `Close`, which ends the loop; this only
            // keeps a bug there from spinning here.
            if c.is_closed() {
                break;
            }
            match d.read(&mut buf) {
                Ok(0) => queue.extend(c.disconnected()),
                Ok(k) => queue.extend(c.input(&buf[..k])),
                Err(e) => queue.extend(c.abort(&e)),
            }
            continue;
        };
        match ev {
            Event::Send(bytes) => {
                if let Err(e) = d.write_all(&bytes) {
                    queue.extend(c.abort(&e));
                }
            }
            Event::SendBody { .. } => match d.send_body(message) {
                Ok(()) => queue.extend(c.body_done()),
                Err(e) => queue.extend(c.abort(&e)),
            },
            Event::Done { outcomes: o, .. } => outcomes = Some(o),
            Event::Close => break,
            // Never asked for with TLS off; no TLS here to start.
            Event::StartTls => queue.extend(c.abort("STARTTLS with TLS off")),
            // The reason is in the outcomes too.
            Event::Error(_) | Event::Idle => {}
        }
    }
    match outcomes {
        Some(o) => o.into_iter().map(outcome).collect(),
        None => vec![Outcome::TempFail("lmtp: session ended early".into()); n],
    }
}

/// The engine's verdict on one recipient, its reply as the text.
fn outcome(o: client::Outcome) -> Outcome {
    match o {
        client::Outcome::Ok(_) => Outcome::Delivered,
        client::Outcome::TempFail(r) => Outcome::TempFail(text(&r)),
        client::Outcome::PermFail(r) => Outcome::PermFail(text(&r)),
    }
}

/// A reply on one line (printable ASCII: the engine replaced anything
/// else), cut to MAX_TEXT bytes.
fn text(r: &client::Reply) -> String {
    let mut s = r.to_string();
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

#[cfg(test)]
mod tests;
