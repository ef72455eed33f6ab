//! The dispatcher role: SMTP sessions on the listeners the parent bound
//! (and, with later issues, the SMTP client and MDA I/O). Chrooted in
//! /var/empty as _smtpd with "stdio inet".

#![forbid(unsafe_code)]

pub mod session;
pub mod tls;

use crate::config::view::{DispatcherView, View};
use crate::event::{Loop, Ready};
use crate::ipc::msg::DispatcherCa;
use crate::log::escape;
use crate::proc::Role;
use crate::prologue::{LinkEvent, Setup, FIRST_OWN_TOKEN};
use mio::net::{TcpListener, TcpStream};
use mio::Token;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most concurrent SMTP sessions; more are told 421 and closed (A5).
const MAX_SESSIONS: usize = 1024;
/// A session idle this long is closed (OpenSMTPD's 300 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(300);

struct Session {
    id: u64,
    /// The name this session's listener answers with.
    hostname: &'static str,
    stream: TcpStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    closing: bool,
    /// Why the session ends, for the disconnect log line.
    reason: &'static str,
    deadline: Instant,
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
    let mut lp = Loop::new().map_err(|e| e.to_string())?;
    let mut links = setup.links;
    // TLS: certificates are in our view, keys in ca; ca says which keys it
    // holds right after its Hello, and signs for us over this channel.
    let ca = Arc::new(tls::CaClient::new(links.dup_channel(Role::Ca)?).map_err(|e| e.to_string())?);
    let mut tls: Option<Vec<Option<Arc<rustls::ServerConfig>>>> = None;
    links.watch(&lp).map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for (i, fd) in setup.listeners.into_iter().enumerate() {
        let std_listener = std::net::TcpListener::from(fd);
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let l = TcpListener::from_std(std_listener);
        lp.watch(l.as_raw_fd(), Token(FIRST_OWN_TOKEN + i), false)
            .map_err(|e| e.to_string())?;
        listeners.push(l);
    }
    let first_session = FIRST_OWN_TOKEN + listeners.len();
    let mut sessions: HashMap<Token, Session> = HashMap::new();
    let mut next_token = first_session;
    let mut next_id = session_id_seed();

    loop {
        let deadline = sessions.values().map(|s| s.deadline).min();
        for r in lp.wait(deadline).map_err(|e| e.to_string())? {
            if links.owns(r.token) {
                if links.handle(&lp, &r)? == LinkEvent::Shutdown {
                    return Ok(());
                }
                for f in links.take_frames() {
                    match f.peer {
                        Role::Ca => match f.decode::<DispatcherCa>()? {
                            DispatcherCa::Keys { keys } if tls.is_none() => {
                                tls = Some(tls_configs(view, &keys, &ca)?);
                            }
                            other => return Err(crate::ipc::msg::unexpected(Role::Ca, &other)),
                        },
                        _ => return Err(f.refuse(links.me)),
                    }
                }
            } else if r.token.0 < first_session {
                let i = r.token.0 - FIRST_OWN_TOKEN;
                // Each listener answers with its own `hostname`.
                let hostname = view.listeners[i].hostname.as_str();
                accept_all(
                    &listeners[i],
                    &lp,
                    &mut sessions,
                    &mut next_token,
                    &mut next_id,
                    hostname,
                );
            } else {
                session_event(&lp, &mut sessions, &r);
            }
        }
        let now = Instant::now();
        let expired: Vec<Token> = sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(s) = sessions.remove(&t) {
                log::info!("{:016x} smtp disconnected reason=timeout", s.id);
                let _ = lp.unwatch(s.stream.as_raw_fd());
            }
        }
    }
}

/// The rustls config of each listener that offers TLS.
fn tls_configs(
    view: &DispatcherView,
    keys: &[crate::ipc::msg::KeyInfo],
    ca: &Arc<tls::CaClient>,
) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, String> {
    let certs = tls::cert_pems(&view.certs);
    view.listeners
        .iter()
        .map(|l| {
            if l.opts.tls.is_none() {
                return Ok(None);
            }
            tls::server_config(&l.opts.pki, &certs, keys, ca)
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

fn accept_all(
    l: &TcpListener,
    lp: &Loop,
    sessions: &mut HashMap<Token, Session>,
    next_token: &mut usize,
    next_id: &mut u64,
    hostname: &'static str,
) {
    loop {
        let (mut stream, addr) = match l.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: a tempfail for that client, not a crash.
                log::warn!("warn: smtp accept: {e}");
                return;
            }
        };
        if sessions.len() >= MAX_SESSIONS {
            log::warn!(
                "warn: smtp refused address={} reason=too-many-sessions limit={MAX_SESSIONS}",
                addr.ip()
            );
            let _ = stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n");
            continue;
        }
        *next_id = next_id.wrapping_add(1);
        let id = *next_id;
        log::info!(
            "{id:016x} smtp connected address={} host={}",
            addr.ip(),
            addr.ip()
        );
        let token = Token(*next_token);
        *next_token += 1;
        if lp.watch(stream.as_raw_fd(), token, true).is_err() {
            continue;
        }
        let s = Session {
            id,
            hostname,
            stream,
            inbuf: Vec::new(),
            outbuf: session::banner(hostname).into_bytes(),
            closing: false,
            reason: "quit",
            deadline: Instant::now() + SESSION_TIMEOUT,
        };
        sessions.insert(token, s);
    }
}

fn session_event(lp: &Loop, sessions: &mut HashMap<Token, Session>, r: &Ready) {
    let Some(s) = sessions.get_mut(&r.token) else {
        return;
    };
    let done = match drive(s, r) {
        Ok(done) => done,
        Err(e) => {
            log::info!(
                "{:016x} smtp disconnected reason=io-error error=\"{}\"",
                s.id,
                escape(e.to_string().as_bytes())
            );
            true
        }
    };
    if done {
        if let Some(s) = sessions.remove(&r.token) {
            let _ = lp.unwatch(s.stream.as_raw_fd());
        }
    } else {
        let _ = lp.rewatch(s.stream.as_raw_fd(), r.token, !s.outbuf.is_empty());
    }
}

/// Move bytes for one session; true when it is finished.
fn drive(s: &mut Session, r: &Ready) -> io::Result<bool> {
    if r.readable && !s.closing {
        let mut buf = [0u8; 4096];
        loop {
            match s.stream.read(&mut buf) {
                Ok(0) => {
                    log::info!("{:016x} smtp disconnected reason=disconnect", s.id);
                    return Ok(true);
                }
                Ok(n) => s.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if s.inbuf.len() > session::MAX_LINE {
                break;
            }
        }
        s.deadline = Instant::now() + SESSION_TIMEOUT;
        // Answer every complete line that arrived, not just the first:
        // a client may send several in one segment.
        while !s.closing {
            match session::take_line(&mut s.inbuf) {
                Ok(Some(line)) => {
                    let reply = session::on_line(s.hostname, &line);
                    s.outbuf.extend_from_slice(reply.text.as_bytes());
                    s.closing = reply.close;
                    s.reason = reply.reason;
                }
                Ok(None) => break,
                Err(session::LineTooLong) => {
                    s.outbuf.extend_from_slice(b"500 5.5.1 Line too long\r\n");
                    s.closing = true;
                    s.reason = "line-too-long";
                }
            }
        }
    }
    while !s.outbuf.is_empty() {
        match s.stream.write(&s.outbuf) {
            Ok(n) => {
                s.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if s.closing {
        log::info!("{:016x} smtp disconnected reason={}", s.id, s.reason);
        return Ok(true);
    }
    Ok(false)
}
