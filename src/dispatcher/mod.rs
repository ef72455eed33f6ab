//! The dispatcher role: SMTP sessions on the listeners the parent bound
//! (and, with later issues, the SMTP client and MDA I/O). Chrooted in
//! /var/empty as _smtpd, pledged "stdio inet recvfd".
//!
//! Each connection is a `conn::Session` around the protocol engine. What a
//! session must ask another role (a recipient's verdict from lka, a message
//! file or a commit from queue, an AUTH check) goes out as a request with
//! an id; the answer comes back on that channel and is routed by the id.
//! TLS handshakes are signed by ca (`tls`).

#![forbid(unsafe_code)]

pub mod conn;
mod control;
pub mod headers;
pub mod mta;
pub mod session_log;
mod stream;
pub mod tls;

use crate::config::ast::{AuthMode, TlsMode};
use crate::config::view::{client_ca_name, DispatcherView, ListenerView, View};
use crate::event::{Loop, Ready};
use crate::ipc::msg::{self, DispatcherCa, LkaDispatcher, QueueDispatcher};
use crate::proc::Role;
use crate::prologue::{Frame, LinkEvent, Links, Setup, FIRST_OWN_TOKEN};
use crate::smtp::server::{AuthPolicy, Config};
use conn::{Incoming, Outgoing, Session};
use mio::net::TcpListener;
use mio::Token;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// Most concurrent SMTP sessions; more are told 421 and closed (A5).
const MAX_SESSIONS: usize = 1024;
/// Most concurrent sessions from one client address (A5).
const MAX_PER_ADDRESS: u32 = 64;

type TlsConfigs = Vec<Option<Arc<rustls::ServerConfig>>>;

struct Dispatcher {
    view: &'static DispatcherView,
    lp: Loop,
    links: Links,
    listeners: Vec<TcpListener>,
    sessions: HashMap<Token, Session>,
    per_address: HashMap<IpAddr, u32>,
    /// sendmail's sessions: each one's uid, and how many each uid has.
    local_uids: HashMap<Token, u32>,
    per_uid: HashMap<u32, u32>,
    /// Which session waits on each outstanding request.
    requests: HashMap<u64, Token>,
    next_req: u64,
    next_token: usize,
    next_id: u64,
    tls: Option<TlsConfigs>,
    ca: Arc<tls::CaClient>,
    /// Relaying: the SMTP client side.
    mta: mta::Mta,
    /// `smtpctl pause smtp`: the listeners are not watched.
    smtp_paused: bool,
}

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Dispatcher(view) = setup.view.get() else {
        return Err("not a dispatcher view".into());
    };
    if setup.listeners.len() != view.listeners.len() {
        return Err(format!(
            "{} listener sockets for {} listeners",
            setup.listeners.len(),
            view.listeners.len()
        ));
    }
    let lp = Loop::new().map_err(|e| e.to_string())?;
    let mut links = setup.links;
    links.watch(&lp).map_err(|e| e.to_string())?;
    // TLS: certificates are in our view, keys in ca; ca says which keys it
    // holds right after its Hello, and signs for us over this channel.
    let ca = Arc::new(tls::CaClient::new(links.dup_channel(Role::Ca)?).map_err(|e| e.to_string())?);
    let mut listeners = Vec::new();
    for (i, fd) in setup.listeners.into_iter().enumerate() {
        let std_listener = std::net::TcpListener::from(fd);
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let l = TcpListener::from_std(std_listener);
        // `-P smtp`: bound, but not accepted from until `resume smtp`.
        if !view.pause_smtp {
            lp.watch(l.as_raw_fd(), Token(FIRST_OWN_TOKEN + i), false)
                .map_err(|e| e.to_string())?;
        }
        listeners.push(l);
    }
    let next_token = FIRST_OWN_TOKEN + listeners.len();
    let mut d = Dispatcher {
        view,
        lp,
        links,
        listeners,
        sessions: HashMap::new(),
        per_address: HashMap::new(),
        local_uids: HashMap::new(),
        per_uid: HashMap::new(),
        requests: HashMap::new(),
        next_req: 0,
        next_token,
        next_id: session_id_seed(),
        tls: None,
        ca,
        mta: mta::Mta::new(view, session_id_seed()),
        smtp_paused: view.pause_smtp,
    };
    d.run()
}

impl Dispatcher {
    fn run(&mut self) -> Result<(), String> {
        let first_session = FIRST_OWN_TOKEN + self.listeners.len();
        loop {
            let deadline = self
                .sessions
                .values()
                .map(|s| {
                    s.delayed
                        .as_ref()
                        .map_or(s.deadline, |(t, _)| (*t).min(s.deadline))
                })
                .min();
            let deadline = match (deadline, self.mta.deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for r in self.lp.wait(deadline).map_err(|e| e.to_string())? {
                if self.links.owns(r.token) {
                    match self.links.handle(&self.lp, &r)? {
                        LinkEvent::Shutdown => return Ok(()),
                        LinkEvent::Parent(_) => {
                            return Err("parent channel: unexpected message".into())
                        }
                        LinkEvent::None => {}
                    }
                    for f in self.links.take_frames() {
                        self.frame(f)?;
                    }
                } else if self.mta.owns(r.token) {
                    let out = self.mta.ready(
                        &self.lp,
                        r.token,
                        r.readable || r.closed,
                        r.writable,
                        &mut self.next_req,
                    );
                    self.send_mta(out)?;
                } else if r.token.0 < first_session {
                    // An event of this turn may predate `pause smtp`.
                    if !self.smtp_paused {
                        self.accept(r.token.0 - FIRST_OWN_TOKEN)?;
                    }
                } else {
                    self.session_ready(&r)?;
                }
            }
            self.timers()?;
            let out = self.mta.timers(&self.lp, &mut self.next_req);
            self.send_mta(out)?;
        }
    }

    fn send_mta(&mut self, out: Vec<mta::Out>) -> Result<(), String> {
        for o in out {
            match o {
                mta::Out::Lka(m) => self.links.send(&self.lp, Role::Lka, &m, Vec::new())?,
                mta::Out::Queue(m) => self.links.send(&self.lp, Role::Queue, &m, Vec::new())?,
            }
        }
        Ok(())
    }

    /// A frame from another role: an answer for a session, or ca's keys.
    fn frame(&mut self, f: Frame) -> Result<(), String> {
        let (req, incoming) = match f.peer {
            Role::Ca => {
                return match f.decode::<DispatcherCa>()? {
                    DispatcherCa::Keys { keys } if self.tls.is_none() => {
                        self.tls = Some(tls_configs(self.view, &keys, &self.ca)?);
                        self.mta.set_ca(keys, self.ca.clone());
                        Ok(())
                    }
                    other => Err(msg::unexpected(Role::Ca, &other)),
                };
            }
            Role::Lka => match f.decode::<LkaDispatcher>()? {
                LkaDispatcher::RcptVerdict { req, verdict } => (req, Incoming::Verdict(verdict)),
                LkaDispatcher::AuthResult { req, ok } => (req, Incoming::Auth(ok)),
                LkaDispatcher::SenderResult { req, result } => (req, Incoming::Sender(result)),
                LkaDispatcher::RouteResult { req, answer } => {
                    let out = self
                        .mta
                        .route_answer(&self.lp, req, answer, &mut self.next_req)?;
                    return self.send_mta(out);
                }
                other => return Err(msg::unexpected(Role::Lka, &other)),
            },
            Role::Queue => {
                let m: QueueDispatcher = f.decode()?;
                let mut fds = f.fds.into_iter();
                match m {
                    QueueDispatcher::Created { req, msgid } => {
                        let fd = fds
                            .next()
                            .ok_or("queue channel: Created without a descriptor")?;
                        (req, Incoming::Created(msgid, File::from(fd)))
                    }
                    QueueDispatcher::CreateFailed { req, text, .. } => {
                        (req, Incoming::CreateFailed(text))
                    }
                    QueueDispatcher::Committed {
                        req,
                        msgid,
                        first_evpid,
                    } => (req, Incoming::Committed(msgid, first_evpid)),
                    QueueDispatcher::Relay { env } => {
                        let fd = fds
                            .next()
                            .ok_or("queue channel: Relay without a descriptor")?;
                        let out = self
                            .mta
                            .relay(&self.lp, env, File::from(fd), &mut self.next_req);
                        return self.send_mta(out);
                    }
                    QueueDispatcher::CommitFailed { req, text, .. } => {
                        (req, Incoming::CommitFailed(text))
                    }
                    other => return Err(msg::unexpected(Role::Queue, &other)),
                }
            }
            Role::Control => return self.control_frame(f),
            _ => return Err(f.refuse(Role::Dispatcher)),
        };
        let Some(token) = self.requests.remove(&req) else {
            // The session is gone. A message file made for it is dropped.
            if let Incoming::Created(msgid, _) = incoming {
                self.send(Outgoing::Queue(QueueDispatcher::Abort { msgid }))?;
            }
            return Ok(());
        };
        let Some(s) = self.sessions.get_mut(&token) else {
            return Ok(());
        };
        let out = s.answer(incoming, &mut self.next_req);
        self.after(token, out)
    }

    fn accept(&mut self, index: usize) -> Result<(), String> {
        loop {
            let (mut stream, addr) = match self.listeners[index].accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: this client is refused, not us.
                    log::warn!("warn: smtp accept: {e}");
                    return Ok(());
                }
            };
            let ip = addr.ip().to_canonical();
            let count = self.per_address.get(&ip).copied().unwrap_or(0);
            if self.sessions.len() >= MAX_SESSIONS || count >= MAX_PER_ADDRESS {
                log::warn!("warn: smtp refused address={ip} reason=too-many-sessions");
                let _ = stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n");
                continue;
            }
            let lv = &self.view.listeners[index];
            let tls_cfg = self
                .tls
                .as_ref()
                .and_then(|t| t.get(index).cloned().flatten());
            let smtps = matches!(lv.opts.tls, Some(TlsMode::Smtps { .. }));
            if smtps && tls_cfg.is_none() {
                log::warn!("warn: smtp refused address={ip} reason=tls-not-ready");
                continue;
            }
            self.next_id = self.next_id.wrapping_add(1);
            let id = self.next_id;
            let token = Token(self.next_token);
            self.next_token += 1;
            let cfg = session_config(self.view, lv, Some(ip), tls_cfg.is_some(), smtps);
            let accepted = conn::Accepted {
                id,
                stream: stream::Stream::Tcp(stream),
                listener: index as u32,
                peer: Some(ip),
            };
            let mut s = match Session::new(accepted, lv, cfg, tls_cfg, smtps) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("warn: smtp session: {e}");
                    continue;
                }
            };
            log::info!("{id:016x} smtp connected address={ip} host={ip}");
            if self.lp.watch(s.stream.as_raw_fd(), token, true).is_err() {
                continue;
            }
            *self.per_address.entry(ip).or_insert(0) += 1;
            let out = s.start(&mut self.next_req);
            self.sessions.insert(token, s);
            self.after(token, out)?;
        }
    }

    fn session_ready(&mut self, r: &Ready) -> Result<(), String> {
        let Some(s) = self.sessions.get_mut(&r.token) else {
            return Ok(());
        };
        let mut out = Vec::new();
        let mut failed = None;
        if r.readable {
            match s.readable(&mut self.next_req) {
                Ok(o) => out = o,
                Err(e) => failed = Some(e),
            }
        }
        if failed.is_none() && (r.writable || s.wants_write()) {
            if let Err(e) = s.writable() {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            s.log_end(&format!(
                "\"io-error: {}\"",
                crate::log::escape(e.to_string().as_bytes())
            ));
            s.closing = true;
            s.drop_output();
        }
        self.after(r.token, out)
    }

    /// Send what a session asked of other roles, then flush it, watch it
    /// for what it needs, or end it.
    fn after(&mut self, token: Token, out: Vec<Outgoing>) -> Result<(), String> {
        for o in out {
            if let Some(req) = o.request() {
                self.requests.insert(req, token);
            }
            self.send(o)?;
        }
        let Some(s) = self.sessions.get_mut(&token) else {
            return Ok(());
        };
        let done = s.writable().unwrap_or(true);
        if done {
            return self.end(token);
        }
        // More input may already be buffered in the socket (the engine was
        // waiting): read it now, since the edge will not come again.
        if s.can_read_more() {
            let more = s.readable(&mut self.next_req).unwrap_or_default();
            if !more.is_empty() || s.wants_write() {
                return self.after(token, more);
            }
        }
        let _ = self
            .lp
            .rewatch(s.stream.as_raw_fd(), token, s.wants_write());
        Ok(())
    }

    fn end(&mut self, token: Token) -> Result<(), String> {
        let Some(mut s) = self.sessions.remove(&token) else {
            return Ok(());
        };
        let _ = self.lp.unwatch(s.stream.as_raw_fd());
        if let Some(peer) = s.peer {
            if let Some(n) = self.per_address.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&peer);
                }
            }
        }
        if let Some(uid) = self.local_uids.remove(&token) {
            if let Some(n) = self.per_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    self.per_uid.remove(&uid);
                }
            }
        }
        for o in s.finish() {
            self.send(o)?;
        }
        Ok(())
    }

    fn send(&mut self, o: Outgoing) -> Result<(), String> {
        match o {
            Outgoing::Lka(m) => self.links.send(&self.lp, Role::Lka, &m, Vec::new()),
            Outgoing::Queue(m) => self.links.send(&self.lp, Role::Queue, &m, Vec::new()),
        }
    }

    /// Timeouts and held-back answers.
    fn timers(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let due: Vec<Token> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.deadline <= now || s.delayed.as_ref().is_some_and(|(t, _)| *t <= now)
            })
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            let Some(s) = self.sessions.get_mut(&token) else {
                continue;
            };
            let out = if s.delayed.as_ref().is_some_and(|(t, _)| *t <= now) {
                s.release_delayed(&mut self.next_req)
            } else {
                s.timed_out(&mut self.next_req)
            };
            self.after(token, out)?;
        }
        Ok(())
    }
}

/// The engine's settings for a session on listener `lv`.
fn session_config(
    view: &DispatcherView,
    lv: &ListenerView,
    peer: Option<IpAddr>,
    tls_ready: bool,
    smtps: bool,
) -> Config {
    let mut c = Config::new(&lv.hostname);
    c.peer = peer;
    c.max_rcpt = view.max_rcpt as usize;
    c.max_mails = view.max_mails as usize;
    c.max_message_size = view.max_message_size;
    c.tls_available = tls_ready && !smtps;
    c.tls_required = matches!(lv.opts.tls, Some(TlsMode::Require { .. }));
    c.tls_active = smtps;
    c.auth = match &lv.opts.auth {
        Some((AuthMode::Required, _)) => AuthPolicy::Required,
        Some((AuthMode::Optional, _)) => AuthPolicy::Optional,
        None => AuthPolicy::None,
    };
    c.dsn = !lv.opts.no_dsn;
    c
}

/// The rustls config of each listener that offers TLS.
fn tls_configs(
    view: &DispatcherView,
    keys: &[crate::ipc::msg::KeyInfo],
    ca: &Arc<tls::CaClient>,
) -> Result<TlsConfigs, String> {
    let certs = tls::cert_pems(&view.certs);
    view.listeners
        .iter()
        .map(|l| {
            if l.opts.tls.is_none() {
                return Ok(None);
            }
            let client_ca = match client_ca_name(&l.opts) {
                None => None,
                Some(name) => Some(
                    view.client_cas
                        .iter()
                        .find(|c| c.name == name)
                        .map(|c| c.cert_pem.as_slice())
                        .ok_or(format!("listener {}: no CA certificate {name:?}", l.addr))?,
                ),
            };
            tls::server_config(&l.opts.pki, &certs, keys, ca, client_ca)
                .map(Some)
                .map_err(|e| format!("listener {}: {e}", l.addr))
        })
        .collect()
}

/// A starting point for session ids that differs between runs.
fn session_id_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}
