//! One SMTP connection in the dispatcher: bytes between the socket (or its
//! TLS layer) and the protocol engine, and the engine's questions turned
//! into requests to lka and queue. Everything slow (policy, commit) is a
//! message to another role; the answer comes back to `Session::answer`.

use super::session_log::{self, AcceptedRcpt, Cipher};
use super::stream::Stream;
use crate::config::view::ListenerView;
use crate::ipc::msg::{
    LkaDispatcher, LookupResult, NewEnvelope, QueueDispatcher, SessionInfo, Verdict,
};
use crate::smtp::address;
use crate::smtp::server::{
    received_header, Answer, Event, Notify, RcptParams, Received, Ret, Server,
};
use rustls::ServerConnection;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Time without a complete line before a session is closed (OpenSMTPD's
/// 300 s idle timeout, counted from the last whole line).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(300);
/// Envelopes one transaction may make (recipients times what each
/// expands to): the queue's own bound.
const MAX_ENVELOPES: usize = 100_000;
/// A failed AUTH is answered after this long.
pub const AUTH_FAIL_DELAY: Duration = Duration::from_secs(1);
/// Most bytes read from a client at once.
const READ_CHUNK: usize = 64 * 1024;

/// The listener index of sendmail's sessions: beyond every real one, so
/// no listener's `auth` or `senders` table applies to them.
pub const LOCAL_LISTENER: u32 = u32::MAX;

/// A request a session sent to another role and waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    None,
    Rcpt(u64),
    Create(u64),
    Commit(u64),
    Auth(u64),
    Sender(u64),
}

/// A connection just accepted.
pub struct Accepted {
    pub id: u64,
    pub stream: Stream,
    /// Its listener's index in the view (`LOCAL_LISTENER` for sendmail).
    pub listener: u32,
    /// The client's address; None for sendmail on the local socket.
    pub peer: Option<IpAddr>,
}

/// What a session asks of the other roles; the loop sends these.
pub enum Outgoing {
    Lka(LkaDispatcher),
    Queue(QueueDispatcher),
}

impl Outgoing {
    /// The request id an answer will carry, if one is expected.
    pub fn request(&self) -> Option<u64> {
        match self {
            Outgoing::Lka(
                LkaDispatcher::Rcpt { req, .. }
                | LkaDispatcher::Auth { req, .. }
                | LkaDispatcher::Sender { req, .. },
            ) => Some(*req),
            Outgoing::Queue(
                QueueDispatcher::Create { req } | QueueDispatcher::Commit { req, .. },
            ) => Some(*req),
            _ => None,
        }
    }
}

pub struct Session {
    pub id: u64,
    pub stream: Stream,
    pub listener: u32,
    pub peer: Option<IpAddr>,
    view: &'static ListenerView,
    engine: Server,
    tls: Option<ServerConnection>,
    /// Set when STARTTLS was answered: switch once `out` is flushed.
    tls_pending: Option<Arc<rustls::ServerConfig>>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    out: Vec<u8>,
    pub closing: bool,
    /// The `disconnected` line is logged once, whatever ends the session.
    logged_end: bool,
    /// The `tls ciphers=` line is logged once, when the handshake is done.
    logged_tls: bool,
    pub deadline: Instant,
    pub waiting: Waiting,
    /// An answer held back until a deadline (failed AUTH).
    pub delayed: Option<(Instant, Answer)>,
    helo: String,
    esmtp: bool,
    mail_from: String,
    smtputf8: bool,
    ret_full: Option<bool>,
    envid: Option<String>,
    rcpts: Vec<NewEnvelope>,
    /// The RCPTs behind `rcpts` (for `nrcpt=` and the `envelope` lines).
    accepted: Vec<AcceptedRcpt>,
    pending_rcpt: Option<(String, RcptParams)>,
    msg: Option<(u32, File)>,
    /// Bytes written to the message file: the Received line, the fixed
    /// headers and the data. OpenSMTPD's `size=` counts what it wrote.
    written: u64,
    /// `written` when the last commit was asked for (for its log line).
    commit_size: u64,
    write_failed: bool,
    /// Adds Date/Message-Id for local and authenticated senders.
    fixer: Option<super::headers::HeaderFixer>,
}

impl Session {
    pub fn new(
        c: Accepted,
        view: &'static ListenerView,
        cfg: crate::smtp::server::Config,
        tls_config: Option<Arc<rustls::ServerConfig>>,
        smtps: bool,
    ) -> io::Result<Session> {
        let Accepted {
            id,
            stream,
            listener,
            peer,
        } = c;
        let tls = match (&tls_config, smtps) {
            (Some(c), true) => Some(ServerConnection::new(c.clone()).map_err(io::Error::other)?),
            _ => None,
        };
        Ok(Session {
            id,
            stream,
            listener,
            peer,
            view,
            engine: Server::new(cfg),
            tls,
            tls_pending: None,
            tls_config,
            out: Vec::new(),
            closing: false,
            logged_end: false,
            logged_tls: false,
            deadline: Instant::now() + SESSION_TIMEOUT,
            waiting: Waiting::None,
            delayed: None,
            helo: String::new(),
            esmtp: false,
            mail_from: String::new(),
            smtputf8: false,
            ret_full: None,
            envid: None,
            rcpts: Vec::new(),
            accepted: Vec::new(),
            pending_rcpt: None,
            msg: None,
            written: 0,
            commit_size: 0,
            write_failed: false,
            fixer: None,
        })
    }

    pub fn start(&mut self, next_req: &mut u64) -> Vec<Outgoing> {
        let ev = self.engine.greeting();
        self.events(ev, next_req)
    }

    /// True when the engine could take input we may not have read yet.
    pub fn can_read_more(&self) -> bool {
        if self.closing {
            return false;
        }
        // A TLS handshake is read whatever the engine waits for: it feeds
        // rustls, never the engine.
        let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
        handshaking
            || (self.engine.wants_input()
                && self.waiting == Waiting::None
                && self.delayed.is_none())
    }

    /// Forget what was to be sent (the connection is broken).
    pub fn drop_output(&mut self) {
        self.out.clear();
    }

    pub fn wants_write(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The socket is readable: read what the engine can take.
    pub fn readable(&mut self, next_req: &mut u64) -> io::Result<Vec<Outgoing>> {
        let mut outgoing = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if !self.can_read_more() {
                return Ok(outgoing);
            }
            let n = match self.stream.read(&mut buf) {
                Ok(0) => {
                    let ev = self.engine.disconnected();
                    outgoing.extend(self.events(ev, next_req));
                    self.log_end("disconnect");
                    self.closing = true;
                    self.out.clear();
                    return Ok(outgoing);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(outgoing),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let plain = match &mut self.tls {
                None => buf[..n].to_vec(),
                Some(t) => {
                    t.read_tls(&mut &buf[..n])?;
                    t.process_new_packets()
                        .map_err(|e| io::Error::other(format!("tls: {e}")))?;
                    let mut plain = Vec::new();
                    match t.reader().read_to_end(&mut plain) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    let ready = !t.is_handshaking();
                    if ready && !self.logged_tls {
                        // First, as OpenSMTPD: before any line of what
                        // the client says over TLS (STARTTLS or SMTPS).
                        for line in session_log::tls_ready(t) {
                            log::info!("{:016x} smtp {line}", self.id);
                        }
                        self.logged_tls = true;
                    }
                    if ready && self.tls_pending.take().is_some() {
                        // Handshake done after STARTTLS: the engine resets.
                        let ev = self.engine.tls_started();
                        outgoing.extend(self.events(ev, next_req));
                    }
                    plain
                }
            };
            // The slow-client timeout: only a complete line (a command or
            // a line of the message) or a sizeable read (BDAT chunks need
            // no newline) restarts the clock, so a client that trickles a
            // byte now and then, or stalls a TLS handshake, is closed
            // SESSION_TIMEOUT after its last real progress.
            if plain.contains(&b'\n') || plain.len() >= 1024 {
                self.deadline = Instant::now() + SESSION_TIMEOUT;
            }
            if !plain.is_empty() {
                let ev = self.engine.input(&plain);
                outgoing.extend(self.events(ev, next_req));
            }
        }
    }

    /// Flush what is queued for the client. True when the session is done.
    pub fn writable(&mut self) -> io::Result<bool> {
        loop {
            match &mut self.tls {
                Some(t) => {
                    if !self.out.is_empty() {
                        t.writer().write_all(&self.out)?;
                        self.out.clear();
                    }
                    while t.wants_write() {
                        match t.write_tls(&mut self.stream) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
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
                    // The 220 to STARTTLS went out in the clear: now TLS.
                    if let Some(cfg) = &self.tls_pending {
                        self.tls =
                            Some(ServerConnection::new(cfg.clone()).map_err(io::Error::other)?);
                        continue;
                    }
                }
            }
            return Ok(self.closing);
        }
    }

    /// An answer from lka or queue for this session.
    pub fn answer(&mut self, m: Incoming, next_req: &mut u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let a = match m {
            Incoming::Verdict(v) => {
                self.waiting = Waiting::None;
                let (path, params) = self.pending_rcpt.take().unwrap_or_default();
                match v {
                    Verdict::Accept { dests } if dests.is_empty() => {
                        Answer::Rcpt(Err("451 4.3.0 Temporary failure".into()))
                    }
                    Verdict::Accept { dests } if self.rcpts.len() + dests.len() > MAX_ENVELOPES => {
                        Answer::Rcpt(Err("452 4.5.3 Too many recipients".into()))
                    }
                    Verdict::Accept { dests } => {
                        self.accepted.push(AcceptedRcpt {
                            path: path.clone(),
                            envelopes: dests.len(),
                        });
                        for dest in dests {
                            self.rcpts.push(NewEnvelope {
                                sender: self.mail_from.clone(),
                                rcpt: path.clone(),
                                dest,
                                helo: self.helo.clone(),
                                client: self.client_text(),
                                hostname: self.view.hostname.clone(),
                                tag: self.view.opts.tag.clone(),
                                authenticated: self.engine.auth_user().is_some(),
                                notify: notify_bits(params.notify),
                                ret_full: self.ret_full,
                                envid: self.envid.clone(),
                                orcpt: params.orcpt.clone(),
                            });
                        }
                        Answer::Rcpt(Ok(()))
                    }
                    Verdict::Reject {
                        code,
                        enhanced,
                        text,
                    } => Answer::Rcpt(Err(format!("{code} {enhanced} {text}"))),
                }
            }
            Incoming::Created(msgid, file) => {
                self.waiting = Waiting::None;
                self.msg = Some((msgid, file));
                self.write_failed = false;
                self.written = 0;
                let hdr = self.received(msgid);
                self.write(hdr.as_bytes());
                let local = self.peer.is_none_or(|p| p.is_loopback());
                let auth = self.engine.auth_user().is_some();
                // `senders <table> masquerade`: From: shows the sender lka
                // checked at MAIL.
                let masquerade = auth && matches!(self.view.opts.senders, Some((_, true)));
                self.fixer = if masquerade {
                    Some(super::headers::HeaderFixer::masquerading(&self.mail_from))
                } else {
                    (local || auth).then(super::headers::HeaderFixer::default)
                };
                Answer::DataReady(Ok(()))
            }
            Incoming::CreateFailed(text) => {
                self.waiting = Waiting::None;
                Answer::DataReady(Err(format!("452 4.3.1 {text}")))
            }
            Incoming::Committed(msgid, first_evpid) => {
                self.waiting = Waiting::None;
                let size = self.commit_size;
                // nrcpt counts RCPTs, not the envelopes they expanded to.
                self.log(&format!(
                    "message msgid={msgid:08x} size={size} nrcpt={} proto={}",
                    self.accepted.len(),
                    if self.esmtp { "ESMTP" } else { "SMTP" }
                ));
                for line in
                    session_log::envelope_lines(first_evpid, &self.mail_from, &self.accepted)
                {
                    self.log(&line);
                }
                self.clear_rcpts();
                Answer::Committed(Ok(format!("{msgid:08x}")))
            }
            Incoming::CommitFailed(text) => {
                self.waiting = Waiting::None;
                self.clear_rcpts();
                Answer::Committed(Err(format!("451 4.3.0 {text}")))
            }
            Incoming::Sender(result) => {
                self.waiting = Waiting::None;
                Answer::Mail(match result {
                    LookupResult::Ok => Ok(()),
                    // OpenSMTPD's reply, with an enhanced code.
                    LookupResult::PermFail => Err("530 5.7.1 Sender rejected".into()),
                    LookupResult::TempFail => Err("451 4.3.0 Temporary failure".into()),
                })
            }
            Incoming::Auth(ok) => {
                self.waiting = Waiting::None;
                if !ok {
                    self.delayed = Some((Instant::now() + AUTH_FAIL_DELAY, Answer::Auth(false)));
                    return out;
                }
                Answer::Auth(true)
            }
        };
        let ev = self.engine.answer(a);
        out.extend(self.events(ev, next_req));
        out
    }

    /// A held-back answer is due.
    pub fn release_delayed(&mut self, next_req: &mut u64) -> Vec<Outgoing> {
        match self.delayed.take() {
            Some((_, a)) => {
                let ev = self.engine.answer(a);
                self.events(ev, next_req)
            }
            None => Vec::new(),
        }
    }

    pub fn timed_out(&mut self, next_req: &mut u64) -> Vec<Outgoing> {
        let ev = self.engine.timeout();
        let out = self.events(ev, next_req);
        self.log_end("timeout");
        self.closing = true;
        out
    }

    /// Log the end of the session, once: the first reason given wins.
    /// OpenSMTPD's reasons: `quit`, `timeout`, `disconnect` (by the
    /// client), `"io-error: ..."`.
    pub fn log_end(&mut self, reason: &str) {
        if !self.logged_end {
            self.logged_end = true;
            self.log(&format!("disconnected reason={reason}"));
        }
    }

    /// The session ends (closed or dropped): discard an unfinished message.
    pub fn finish(&mut self) -> Vec<Outgoing> {
        // Closed by us after our last reply (221, or a 421 or 500 that
        // ends the session): OpenSMTPD calls every such end `quit`.
        self.log_end("quit");
        match self.msg.take() {
            Some((msgid, _)) => vec![Outgoing::Queue(QueueDispatcher::Abort { msgid })],
            None => Vec::new(),
        }
    }

    /// Message data from the engine, through the header fixer if any.
    fn data(&mut self, bytes: &[u8]) {
        let hostname = self.view.hostname.clone();
        match &mut self.fixer {
            Some(f) => {
                let out = f.feed(bytes, &mut |date, id| missing_fields(date, id, &hostname));
                self.write(&out);
            }
            None => self.write(bytes),
        }
    }

    fn finish_headers(&mut self) {
        let hostname = self.view.hostname.clone();
        if let Some(mut f) = self.fixer.take() {
            let out = f.finish(&mut |date, id| missing_fields(date, id, &hostname));
            self.write(&out);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some((_, f)) = &mut self.msg {
            if !self.write_failed {
                match f.write_all(bytes) {
                    Ok(()) => self.written += bytes.len() as u64,
                    Err(_) => self.write_failed = true,
                }
            }
        }
    }

    /// The transaction's recipients are done with (committed, refused,
    /// reset).
    fn clear_rcpts(&mut self) {
        self.rcpts.clear();
        self.accepted.clear();
    }

    fn received(&self, msgid: u32) -> String {
        let id = format!("{msgid:08x}");
        let date = rfc5322_date(SystemTime::now());
        let tls = self.tls.as_ref().and_then(tls_info);
        let rcpt = if self.rcpts.len() == 1 {
            Some(self.rcpts[0].rcpt.as_str())
        } else {
            None
        };
        received_header(&Received {
            helo: &self.helo,
            client: self.peer,
            // The local enqueuer's name is this host's, as OpenSMTPD's.
            rdns: self.peer.is_none().then_some(self.view.hostname.as_str()),
            mask_source: self.view.opts.mask_src,
            hostname: &self.view.hostname,
            esmtp: self.esmtp,
            id: &id,
            tls: tls.as_deref(),
            auth_user: self.engine.auth_user(),
            show_auth: self.view.opts.received_auth,
            rcpt,
            date: &date,
        })
    }

    /// The client as envelopes and logs show it: its address, or
    /// "local" for sendmail.
    pub fn client_text(&self) -> String {
        self.peer
            .map_or_else(|| "local".to_string(), |p| p.to_string())
    }

    fn log(&self, line: &str) {
        log::info!("{:016x} smtp {line}", self.id);
    }

    fn session_info(&self) -> SessionInfo {
        SessionInfo {
            addr: self.peer,
            listener: self.listener,
            rdns: None,
            helo: self.helo.clone(),
            auth_user: self.engine.auth_user().map(str::to_string),
            tag: self.view.opts.tag.clone(),
            tls: self.engine.tls_active(),
        }
    }

    /// Act on the engine's events; return what must go to other roles.
    fn events(&mut self, mut events: Vec<Event>, next_req: &mut u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < events.len() {
            let ev = std::mem::replace(&mut events[i], Event::TxReset);
            i += 1;
            match ev {
                Event::Reply(b) => self.out.extend_from_slice(&b),
                Event::Helo { name, esmtp } => {
                    self.helo = name;
                    self.esmtp = esmtp;
                }
                Event::NeedMail { path, params } => {
                    self.smtputf8 = params.smtputf8;
                    self.ret_full = params.ret.map(|r| r == Ret::Full);
                    self.envid = params.envid;
                    let a = match address::parse_path(&path, self.smtputf8) {
                        Ok(_) => {
                            self.mail_from = path;
                            self.clear_rcpts();
                            // `senders <table>`: lka checks that an
                            // authenticated user may send as this address.
                            if let (Some(user), Some(_)) =
                                (self.engine.auth_user(), &self.view.opts.senders)
                            {
                                *next_req += 1;
                                self.waiting = Waiting::Sender(*next_req);
                                out.push(Outgoing::Lka(LkaDispatcher::Sender {
                                    req: *next_req,
                                    listener: self.listener,
                                    user: user.to_string(),
                                    sender: self.mail_from.clone(),
                                }));
                                continue;
                            }
                            Answer::Mail(Ok(()))
                        }
                        Err(e) => {
                            Answer::Mail(Err(format!("553 5.1.7 Sender address syntax error: {e}")))
                        }
                    };
                    events.extend(self.engine.answer(a));
                }
                Event::NeedRcpt { path, params } => {
                    *next_req += 1;
                    self.waiting = Waiting::Rcpt(*next_req);
                    out.push(Outgoing::Lka(LkaDispatcher::Rcpt {
                        req: *next_req,
                        session: self.session_info(),
                        mail_from: self.mail_from.clone(),
                        rcpt: path.clone(),
                    }));
                    self.pending_rcpt = Some((path, params));
                }
                Event::NeedData => {
                    *next_req += 1;
                    self.waiting = Waiting::Create(*next_req);
                    out.push(Outgoing::Queue(QueueDispatcher::Create { req: *next_req }));
                }
                Event::NeedAuth { user, password, .. } => {
                    *next_req += 1;
                    self.waiting = Waiting::Auth(*next_req);
                    out.push(Outgoing::Lka(LkaDispatcher::Auth {
                        req: *next_req,
                        listener: self.listener,
                        user,
                        password: password.0,
                    }));
                }
                Event::Data(b) => self.data(&b),
                Event::DataEnd { size } => {
                    self.finish_headers();
                    let Some((msgid, file)) = self.msg.take() else {
                        continue;
                    };
                    // The queue makes the data durable (syncfs or fsync) in
                    // its commit; ours is only the writing.
                    let failed = self.write_failed;
                    drop(file);
                    self.commit_size = self.written;
                    if failed {
                        out.push(Outgoing::Queue(QueueDispatcher::Abort { msgid }));
                        let a =
                            Answer::Committed(Err("452 4.3.1 Insufficient system storage".into()));
                        events.extend(self.engine.answer(a));
                        continue;
                    }
                    for e in &self.rcpts {
                        out.push(Outgoing::Queue(QueueDispatcher::AddEnvelope {
                            msgid,
                            envelope: Box::new(e.clone()),
                        }));
                    }
                    *next_req += 1;
                    self.waiting = Waiting::Commit(*next_req);
                    out.push(Outgoing::Queue(QueueDispatcher::Commit {
                        req: *next_req,
                        msgid,
                        count: self.rcpts.len() as u32,
                        size,
                    }));
                }
                Event::DataAbort { .. } => {
                    if let Some((msgid, _)) = self.msg.take() {
                        out.push(Outgoing::Queue(QueueDispatcher::Abort { msgid }));
                    }
                }
                Event::TxReset => {
                    self.clear_rcpts();
                    if let Some((msgid, _)) = self.msg.take() {
                        out.push(Outgoing::Queue(QueueDispatcher::Abort { msgid }));
                    }
                }
                Event::StartTls => match &self.tls_config {
                    Some(c) => self.tls_pending = Some(c.clone()),
                    None => self.closing = true,
                },
                Event::Close => self.closing = true,
                Event::Log(line) => self.log(&line),
            }
        }
        out
    }
}

/// An answer for a session, from lka or queue.
pub enum Incoming {
    Verdict(Verdict),
    Created(u32, File),
    CreateFailed(String),
    /// The message id and its first envelope's id.
    Committed(u32, u64),
    CommitFailed(String),
    Auth(bool),
    Sender(LookupResult),
}

/// The Date and Message-Id fields a message lacks.
fn missing_fields(date: bool, msgid: bool, hostname: &str) -> Vec<u8> {
    let mut out = String::new();
    if date {
        out.push_str(&format!("Date: {}\r\n", rfc5322_date(SystemTime::now())));
    }
    if msgid {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        out.push_str(&format!(
            "Message-Id: <{now:x}.{:016x}@{hostname}>\r\n",
            h.finish()
        ));
    }
    out.into_bytes()
}

/// RFC 3461 NOTIFY as the envelope's bits.
fn notify_bits(n: Option<Notify>) -> u8 {
    match n {
        None => 0,
        Some(Notify::Never) => 8,
        Some(Notify::When {
            success,
            failure,
            delay,
        }) => u8::from(success) | u8::from(failure) << 1 | u8::from(delay) << 2,
    }
}

fn tls_info(t: &ServerConnection) -> Option<String> {
    let cipher = Cipher::of(t)?;
    // As OpenSMTPD: YES when the client's certificate was verified (only
    // `verify` listeners ask for one, and they refuse any that fails).
    let verified = if t.peer_certificates().is_some() {
        "YES"
    } else {
        "NO"
    };
    Some(format!("{cipher}:{verified}"))
}

/// "Sun, 29 Nov 2026 10:47:50 +0000": UTC, computed without tz files
/// (the dispatcher is chrooted in /var/empty).
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let (h, m, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        WD[(days % 7) as usize],
        d,
        MON[(mo - 1) as usize],
        y,
        h,
        m,
        s
    )
}
