//! One outgoing SMTP connection: the socket, TLS, the client engine
//! (`smtp::client`) and the body stream from the message file.
//!
//! A connection tries its addresses in order until one greets it; only
//! then does the mta hand it a message (on `Idle`), so a host that is
//! down, refuses, or answers 4xx/5xx at the banner costs no envelope a
//! retry: the next address is tried, and when none is left the route is
//! unreachable. Every wait has a deadline (the peer is untrusted, A12).

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Token;
use rustls::ClientConnection;

use super::Task;
use crate::event::Loop;
use crate::smtp::client::{self, Client, DotStuffer, Event, Outcome};

/// Time to connect to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the banner, EHLO and the TLS handshake.
const GREETING_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for any later reply, and to take our bytes (RFC 5321 4.5.3.2
/// asks for 5 to 10 minutes per step; OpenSMTPD uses 5).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The body is read from the file and encoded this much at a time, and
/// no more is encoded while this much waits to be sent.
const BODY_CHUNK: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// One place to try: the host's name (for TLS and the log) and address.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
}

/// What the connection tells the mta.
#[derive(Debug)]
pub enum ConnEvent {
    /// Greeted (and TLS, AUTH done) with nothing to send: give a task or
    /// quit.
    Idle,
    /// A task is finished: one outcome per recipient.
    Done(Task, Vec<Outcome>),
    /// No address greeted us; the last error.
    Unreachable(String),
    /// The connection is closed; drop it.
    Closed,
}

/// How the session must be set up on each new socket.
pub struct Setup {
    pub engine: client::Config,
    /// `Some` to do TLS: the config and whether it starts at once (smtps).
    pub tls: Option<(Arc<rustls::ClientConfig>, bool)>,
    /// Source addresses (`src`): the first of a target's family is used;
    /// a target of a family not in the list is skipped. Empty: any.
    pub src: Vec<IpAddr>,
    /// Greeting names by source address (`helo-src`).
    pub helo_src: Vec<(IpAddr, String)>,
}

impl Setup {
    /// The engine's settings for a connection from `src`.
    fn engine_from(&self, src: Option<IpAddr>) -> client::Config {
        let mut c = self.engine.clone();
        if let Some((_, name)) = self.helo_src.iter().find(|(a, _)| Some(*a) == src) {
            c.helo = name.clone();
        }
        c
    }
}

enum State {
    Connecting,
    Session,
    Closed,
}

struct Body {
    offset: u64,
    stuffer: DotStuffer,
}

pub struct Conn {
    pub id: u64,
    token: Token,
    targets: Vec<Target>,
    next_target: usize,
    pub target: Target,
    stream: TcpStream,
    state: State,
    setup: Setup,
    engine: Client,
    tls: Option<ClientConnection>,
    /// STARTTLS was accepted: the handshake starts once `out` is sent.
    tls_pending: bool,
    out: Vec<u8>,
    task: Option<Task>,
    body: Option<Body>,
    /// The engine said `Idle` once on this socket: it was usable.
    greeted: bool,
    pub deadline: Instant,
    pub messages: usize,
    last_error: String,
    /// Engine events produced while reading or writing, handled by the
    /// next `flush` turn.
    pending_events: Vec<Event>,
    /// Reading our own message file failed: the connection is dropped.
    state_broken: bool,
}

impl Conn {
    /// Connect to the first target that takes a socket.
    pub fn open(
        lp: &Loop,
        id: u64,
        token: Token,
        targets: Vec<Target>,
        setup: Setup,
    ) -> Result<Conn, String> {
        let first = targets.first().cloned().ok_or("no address to try")?;
        let (stream, next, src) = connect_from(lp, token, &targets, 0, id, &setup.src)?;
        let engine = Client::new(setup.engine_from(src));
        Ok(Conn {
            id,
            token,
            target: targets[next - 1].clone(),
            targets,
            next_target: next,
            stream,
            state: State::Connecting,
            setup,
            engine,
            tls: None,
            tls_pending: false,
            out: Vec::new(),
            task: None,
            body: None,
            greeted: false,
            deadline: Instant::now() + CONNECT_TIMEOUT,
            messages: 0,
            last_error: format!("no answer from {}", first.addr),
            pending_events: Vec::new(),
            state_broken: false,
        })
    }

    /// Our address on this connection, as the log line's `source`.
    pub fn source(&self) -> String {
        self.stream
            .local_addr()
            .map_or_else(|_| "-".to_string(), |a| super::addr_text(a.ip()))
    }

    /// The server greeted us on this socket: the route works.
    pub fn was_greeted(&self) -> bool {
        self.greeted
    }

    /// Send `task` on this (idle) connection.
    pub fn send(&mut self, lp: &Loop, task: Task) -> Vec<ConnEvent> {
        let env = task.client_envelope();
        self.task = Some(task);
        self.deadline = Instant::now() + REPLY_TIMEOUT;
        let ev = self.engine.send_message(env);
        let mut out = self.events(lp, ev);
        out.extend(self.flush(lp));
        out
    }

    /// Say QUIT (after the current task).
    pub fn quit(&mut self, lp: &Loop) -> Vec<ConnEvent> {
        let ev = self.engine.quit();
        let mut out = self.events(lp, ev);
        out.extend(self.flush(lp));
        out
    }

    /// The socket is ready.
    pub fn ready(&mut self, lp: &Loop, readable: bool, writable: bool) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        if matches!(self.state, State::Connecting) {
            if !(readable || writable) {
                return out;
            }
            match self.stream.take_error() {
                Ok(None) if self.stream.peer_addr().is_ok() => {
                    if let Err(why) = self.connected() {
                        return self.next_address(lp, &why);
                    }
                }
                Ok(Some(e)) | Err(e) => return self.next_address(lp, &e.to_string()),
                Ok(None) => return self.next_address(lp, "connection failed"),
            }
        }
        if readable {
            out.extend(self.read(lp));
        }
        out.extend(self.flush(lp));
        out
    }

    /// The deadline passed.
    pub fn timed_out(&mut self, lp: &Loop) -> Vec<ConnEvent> {
        match self.state {
            State::Connecting => self.next_address(lp, "connection timed out"),
            State::Session => {
                let ev = self.engine.timeout();
                let mut out = self.events(lp, ev);
                // The engine is closed: don't wait for the peer to read.
                out.extend(self.close(lp));
                out
            }
            State::Closed => Vec::new(),
        }
    }

    /// The socket connected; smtps starts TLS at once (a failure to is
    /// this address's failure: never go on in the clear).
    fn connected(&mut self) -> Result<(), String> {
        log::info!(
            "{:016x} mta connected address=smtp://{} host={}",
            self.id,
            self.target.addr,
            self.target.name
        );
        self.state = State::Session;
        self.deadline = Instant::now() + GREETING_TIMEOUT;
        if matches!(self.setup.tls, Some((_, true))) {
            self.start_tls()?;
        }
        Ok(())
    }

    /// Begin the TLS handshake with the target (smtps, or after the 220
    /// to STARTTLS).
    fn start_tls(&mut self) -> Result<(), String> {
        let (cfg, _) = self.setup.tls.as_ref().ok_or("TLS without a TLS config")?;
        let name = super::tls::server_name(&self.target.name, self.target.addr.ip());
        let c = ClientConnection::new(cfg.clone(), name).map_err(|e| format!("tls: {e}"))?;
        self.tls = Some(c);
        self.deadline = Instant::now() + GREETING_TIMEOUT;
        Ok(())
    }

    /// This address failed before greeting us: try the next, or give up.
    fn next_address(&mut self, lp: &Loop, why: &str) -> Vec<ConnEvent> {
        log::info!(
            "{:016x} mta error reason=\"{}\" address=smtp://{} host={}",
            self.id,
            crate::log::escape(why.as_bytes()),
            self.target.addr,
            self.target.name
        );
        self.last_error = format!("{} ({}): {why}", self.target.name, self.target.addr.ip());
        let _ = lp.unwatch(self.stream.as_raw_fd());
        let from = self.next_target;
        match connect_from(
            lp,
            self.token,
            &self.targets,
            from,
            self.id,
            &self.setup.src,
        ) {
            Ok((stream, next, src)) => {
                self.stream = stream;
                self.target = self.targets[next - 1].clone();
                self.next_target = next;
                self.state = State::Connecting;
                self.engine = Client::new(self.setup.engine_from(src));
                self.tls = None;
                self.tls_pending = false;
                self.out.clear();
                self.deadline = Instant::now() + CONNECT_TIMEOUT;
                Vec::new()
            }
            Err(e) => {
                if e != NO_MORE {
                    self.last_error = e;
                }
                self.state = State::Closed;
                vec![
                    ConnEvent::Unreachable(self.last_error.clone()),
                    ConnEvent::Closed,
                ]
            }
        }
    }

    fn read(&mut self, lp: &Loop) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        while matches!(self.state, State::Session) {
            let n = match self.stream.read(&mut buf) {
                Ok(0) => {
                    let ev = self.engine.disconnected();
                    out.extend(self.events(lp, ev));
                    out.extend(self.close(lp));
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.extend(self.broken(lp, &e.to_string()));
                    break;
                }
            };
            let plain = match self.decrypt(&buf[..n]) {
                Ok(p) => p,
                Err(e) => {
                    out.extend(self.broken(lp, &e));
                    break;
                }
            };
            if !plain.is_empty() {
                self.deadline = Instant::now() + REPLY_TIMEOUT;
                let ev = self.engine.input(&plain);
                out.extend(self.events(lp, ev));
            }
        }
        out
    }

    /// Bytes from the socket through TLS (if any): the plaintext.
    fn decrypt(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let Some(t) = &mut self.tls else {
            return Ok(bytes.to_vec());
        };
        let was_handshaking = t.is_handshaking();
        let mut rd = bytes;
        while !rd.is_empty() {
            t.read_tls(&mut rd).map_err(|e| format!("tls: {e}"))?;
            t.process_new_packets().map_err(|e| format!("tls: {e}"))?;
        }
        let mut plain = Vec::new();
        match t.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("tls: {e}")),
        }
        if was_handshaking && !t.is_handshaking() {
            log::info!(
                "{:016x} mta tls ciphers={}",
                self.id,
                crate::dispatcher::session_log::Cipher::of(t)
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            );
            if !self.engine.tls_active() {
                // STARTTLS done: the engine greets again. Its output is
                // queued in `out` and sent by `flush`.
                let ev = self.engine.tls_started();
                self.pending_events.extend(ev);
            }
        }
        Ok(plain)
    }

    /// A broken connection: the engine fails what is in flight.
    fn broken(&mut self, lp: &Loop, why: &str) -> Vec<ConnEvent> {
        self.last_error = why.to_string();
        if !self.greeted && self.task.is_none() {
            return self.next_address(lp, why);
        }
        let ev = self.engine.disconnected();
        let mut out = self.events(lp, ev);
        out.extend(self.close(lp));
        out
    }

    /// Send what is queued, encoding the body as the socket takes it.
    fn flush(&mut self, lp: &Loop) -> Vec<ConnEvent> {
        let mut events = Vec::new();
        loop {
            if !matches!(self.state, State::Session) {
                return events;
            }
            let pending = std::mem::take(&mut self.pending_events);
            if !pending.is_empty() {
                events.extend(self.events(lp, pending));
                continue;
            }
            self.fill_body();
            match self.write_out() {
                Ok(true) => {}
                Ok(false) => {
                    self.watch(lp, true);
                    return events;
                }
                Err(e) => {
                    events.extend(self.broken(lp, &e.to_string()));
                    return events;
                }
            }
            if self.body.is_some() {
                continue;
            }
            if self.tls_pending {
                self.tls_pending = false;
                if let Err(why) = self.start_tls() {
                    events.extend(self.broken(lp, &why));
                    return events;
                }
                continue;
            }
            if self.engine.is_closed() {
                events.extend(self.close(lp));
                return events;
            }
            self.watch(lp, false);
            return events;
        }
    }

    /// Encode more of the body while little waits to be sent.
    fn fill_body(&mut self) {
        while self.out.len() < BODY_CHUNK {
            let (Some(body), Some(task)) = (self.body.as_mut(), self.task.as_ref()) else {
                return;
            };
            let mut chunk = vec![0u8; BODY_CHUNK];
            let n = match task.file.read_at(&mut chunk, body.offset) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Our own file failed: the peer must not take a
                    // truncated message. Dropping the connection mid-body
                    // makes every recipient a temporary failure.
                    log::warn!("warn: mta: reading the message: {e}");
                    self.body = None;
                    self.out.clear();
                    self.last_error = format!("reading the message: {e}");
                    self.state_broken = true;
                    return;
                }
            };
            if n == 0 {
                let body = self.body.take().expect("checked above");
                body.stuffer.finish(&mut self.out);
                let ev = self.engine.body_done();
                self.pending_events.extend(ev);
                return;
            }
            body.offset += n as u64;
            body.stuffer.encode(&chunk[..n], &mut self.out);
        }
    }

    /// Write `out` (through TLS if any). True when all of it is written.
    fn write_out(&mut self) -> io::Result<bool> {
        if self.state_broken {
            return Err(io::Error::other(self.last_error.clone()));
        }
        match &mut self.tls {
            Some(t) => {
                while !self.out.is_empty() {
                    let n = t.writer().write(&self.out)?;
                    if n == 0 {
                        break;
                    }
                    self.out.drain(..n);
                }
                while t.wants_write() {
                    match t.write_tls(&mut self.stream) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(self.out.is_empty())
            }
            None => {
                while !self.out.is_empty() {
                    match self.stream.write(&self.out) {
                        Ok(n) => {
                            self.out.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
        }
    }

    fn watch(&self, lp: &Loop, write: bool) {
        let _ = lp.rewatch(self.stream.as_raw_fd(), self.token, write);
    }

    /// The engine's events, turned into I/O and the mta's events.
    fn events(&mut self, lp: &Loop, ev: Vec<Event>) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        for e in ev {
            match e {
                Event::Send(bytes) => self.out.extend_from_slice(&bytes),
                Event::StartTls => self.tls_pending = true,
                Event::SendBody { .. } => {
                    self.body = Some(Body {
                        offset: 0,
                        stuffer: DotStuffer::new(),
                    })
                }
                Event::Done { outcomes, .. } => {
                    self.body = None;
                    if let Some(task) = self.task.take() {
                        self.messages += 1;
                        out.push(ConnEvent::Done(task, outcomes));
                    }
                }
                Event::Idle => {
                    self.greeted = true;
                    self.deadline = Instant::now() + REPLY_TIMEOUT;
                    out.push(ConnEvent::Idle);
                }
                Event::Error(why) => {
                    self.last_error = why.clone();
                    if !self.greeted && self.task.is_none() {
                        // Not usable: the next address may be.
                        out.extend(self.next_address(lp, &why));
                        return out;
                    }
                    log::info!(
                        "{:016x} mta error reason=\"{}\"",
                        self.id,
                        crate::log::escape(why.as_bytes())
                    );
                }
                Event::Close => {
                    // Whatever the engine queued (QUIT) goes out first.
                    let _ = self.write_out();
                    out.extend(self.close(lp));
                    return out;
                }
            }
        }
        out
    }

    /// Close the socket; the mta drops the connection on `Closed`.
    fn close(&mut self, lp: &Loop) -> Vec<ConnEvent> {
        if matches!(self.state, State::Closed) {
            return Vec::new();
        }
        self.state = State::Closed;
        let _ = lp.unwatch(self.stream.as_raw_fd());
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        log::info!(
            "{:016x} mta disconnected reason=quit messages={}",
            self.id,
            self.messages
        );
        vec![ConnEvent::Closed]
    }
}

const NO_MORE: &str = "no more addresses";

/// A socket connecting to the first target from `from` that takes one:
/// the stream, the index after that target, and the source address.
fn connect_from(
    lp: &Loop,
    token: Token,
    targets: &[Target],
    from: usize,
    id: u64,
    sources: &[IpAddr],
) -> Result<(TcpStream, usize, Option<IpAddr>), String> {
    let mut last = NO_MORE.to_string();
    for (i, t) in targets.iter().enumerate().skip(from) {
        let src = sources
            .iter()
            .find(|s| s.is_ipv4() == t.addr.is_ipv4())
            .copied();
        if src.is_none() && !sources.is_empty() {
            last = format!(
                "{} ({}): no source address of its family",
                t.name,
                t.addr.ip()
            );
            continue;
        }
        log::info!(
            "{id:016x} mta connecting address=smtp://{} host={}",
            t.addr,
            t.name
        );
        match crate::sys::tcpconnect::start(src, t.addr) {
            Ok(s) => {
                let s = TcpStream::from_std(s);
                if let Err(e) = lp.watch(s.as_raw_fd(), token, true) {
                    last = e.to_string();
                    continue;
                }
                return Ok((s, i + 1, src));
            }
            Err(e) => last = format!("{} ({}): {e}", t.name, t.addr.ip()),
        }
    }
    Err(last)
}
