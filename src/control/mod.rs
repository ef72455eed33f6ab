//! The control role: serves smtpctl on /var/run/smtpd.sock. Runs
//! chrooted in /var/empty as _smtpd, pledged "stdio unix recvfd sendfd"; the
//! parent bound the socket and handed it over, so control creates no
//! file.
//!
//! Every local user may connect (the socket is 0666, as OpenSMTPD's), so
//! every client is untrusted: its uid comes from the kernel, its frames
//! are decoded without trust and any bad one gets it dropped (A6), and
//! the number of clients is bounded, with room kept for root (A5).
//! Connections over the bound are accepted and closed at once, so the
//! kernel's backlog drains and a flood cannot keep root out for long.

#![forbid(unsafe_code)]

mod client;
mod commands;
mod enqueue;

use crate::config::view::View;
use crate::event::{Loop, Ready};
use crate::prologue::{run_service, Frame, Links, Service, Setup, FIRST_OWN_TOKEN};
use crate::sys::unixsock;
use client::{Client, Work};
use mio::Token;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Most clients at once (each holds one descriptor and a receive buffer).
const MAX_CLIENTS: usize = 128;
/// Of those, slots only root may take: a local user who opens many
/// connections cannot lock the administrator out.
const ROOT_RESERVE: usize = 16;
/// Most clients of one non-root uid (OpenSMTPD's CONTROL_MAXCONN_PER_CLIENT).
const MAX_PER_UID: usize = 32;
/// A client with nothing in progress that sends nothing for this long is
/// dropped. One still reading a long answer (`show queue | less`) is not:
/// it holds at most one chunk, and the limits above keep room for root.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most one "too many clients" line per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many "client dropped" lines per interval: any local user
/// can make one per connection, and must not be able to fill the disk
/// with them.
const DROP_LOG_BURST: u32 = 10;

const LISTENER: Token = Token(FIRST_OWN_TOKEN);

/// What smtpctl pauses, as `show status` reports it.
#[derive(Debug, Clone, Copy, Default)]
struct Paused {
    mda: bool,
    mta: bool,
    smtp: bool,
}

struct Control {
    listener: OwnedFd,
    /// Slot i has token FIRST_OWN_TOKEN + 1 + i.
    clients: Vec<Option<Client>>,
    /// Each connection's id, never reused: the `req` of what is asked of
    /// other roles on its behalf, so a late answer cannot reach another
    /// client.
    next_id: u64,
    paused: Paused,
    /// When the daemon started (unix time), for `show stats` uptime.
    started: u64,
    /// accept(2) ran out of descriptors: try again when a client leaves.
    accept_blocked: bool,
    last_refusal_log: Option<Instant>,
    /// Start of the current interval of "dropped" lines, and how many.
    drop_log: (Instant, u32),
}

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Control(view) = setup.view.get() else {
        return Err("not a control view".into());
    };
    let listener = setup
        .listeners
        .into_iter()
        .next()
        .ok_or("no control socket from the parent")?;
    let mut c = Control {
        listener,
        clients: (0..MAX_CLIENTS).map(|_| None).collect(),
        next_id: 1,
        paused: Paused {
            mda: view.pause_mda,
            mta: view.pause_mta,
            smtp: view.pause_smtp,
        },
        started: crate::spool::unix_now(),
        accept_blocked: false,
        last_refusal_log: None,
        drop_log: (Instant::now(), 0),
    };
    run_service(setup.links, &mut c)
}

impl Service for Control {
    fn start(&mut self, _links: &mut Links, lp: &Loop) -> Result<(), String> {
        lp.watch(self.listener.as_raw_fd(), LISTENER, false)
            .map_err(|e| format!("control socket: {e}"))
    }

    fn frames(&mut self, links: &mut Links, lp: &Loop, frames: Vec<Frame>) -> Result<(), String> {
        for f in frames {
            self.role_frame(links, lp, f)?;
        }
        Ok(())
    }

    fn ready(&mut self, links: &mut Links, lp: &Loop, r: &Ready) -> Result<(), String> {
        if r.token == LISTENER {
            return self.accept(lp);
        }
        let slot = r.token.0 - FIRST_OWN_TOKEN - 1;
        self.client_ready(links, lp, slot, r)
    }

    fn deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .flatten()
            .filter(|c| c.work == Work::Idle)
            .map(|c| c.last + IDLE_TIMEOUT)
            .min()
    }

    fn tick(&mut self, _links: &mut Links, lp: &Loop) -> Result<(), String> {
        let now = Instant::now();
        for slot in 0..self.clients.len() {
            if self.clients[slot]
                .as_ref()
                .is_some_and(|c| c.work == Work::Idle && c.last + IDLE_TIMEOUT <= now)
            {
                log::debug!("debug: control: idle client dropped");
                self.close(lp, slot);
            }
        }
        Ok(())
    }
}

impl Control {
    /// Accept every waiting connection; admit or close each.
    fn accept(&mut self, lp: &Loop) -> Result<(), String> {
        loop {
            match unixsock::accept(self.listener.as_fd()) {
                Ok(fd) => self.admit(lp, fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // The edge is consumed: retry when a client leaves.
                    if !self.accept_blocked {
                        log::warn!("warn: control: out of descriptors, not accepting for now");
                    }
                    self.accept_blocked = true;
                    return Ok(());
                }
                // Short of kernel memory, or a connection that failed on
                // the way: that one is lost, the next one wakes us.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOBUFS) | Some(libc::ENOMEM) | Some(libc::EPROTO)
                    ) =>
                {
                    log::warn!("warn: control: accept: {e}");
                    return Ok(());
                }
                Err(e) => return Err(format!("control socket: accept: {e}")),
            }
        }
    }

    fn admit(&mut self, lp: &Loop, fd: OwnedFd) {
        let uid = match unixsock::peer_uid(fd.as_fd()) {
            Ok(uid) => uid,
            Err(e) => {
                log::debug!("debug: control: client without credentials: {e}");
                return;
            }
        };
        let total = self.clients.iter().flatten().count();
        let mine = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.uid == uid)
            .count();
        let room = if uid == 0 {
            total < MAX_CLIENTS
        } else {
            total < MAX_CLIENTS - ROOT_RESERVE && mine < MAX_PER_UID
        };
        let slot = self.clients.iter().position(Option::is_none);
        let (true, Some(slot)) = (room, slot) else {
            let now = Instant::now();
            if self
                .last_refusal_log
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
            {
                log::warn!(
                    "warn: control: too many clients ({total}, {mine} of uid {uid}), closing new connections"
                );
                self.last_refusal_log = Some(now);
            }
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        // A client we cannot set up is dropped, never the daemon.
        let client = match Client::new(fd, uid, id) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("warn: control: client uid={uid}: {e}");
                return;
            }
        };
        if let Err(e) = lp.watch(client.raw_fd(), token(slot), false) {
            log::warn!("warn: control: client uid={uid}: {e}");
            return;
        }
        self.clients[slot] = Some(client);
    }

    /// Drop the client in `slot`; anything still asked for it is ignored
    /// when it comes back.
    fn close(&mut self, lp: &Loop, slot: usize) {
        if let Some(c) = self.clients[slot].take() {
            let _ = lp.unwatch(c.raw_fd());
        }
        if self.accept_blocked {
            self.accept_blocked = false;
            if let Err(e) = self.accept(lp) {
                log::warn!("warn: {e}");
            }
        }
    }

    /// Log why a client was dropped, within the burst allowed.
    fn log_drop(&mut self, uid: u32, why: &str) {
        let now = Instant::now();
        let (start, n) = &mut self.drop_log;
        if now.duration_since(*start) >= REFUSAL_LOG_INTERVAL {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        if *n <= DROP_LOG_BURST {
            log::warn!("warn: control: client uid={uid}: {why}; dropped");
        } else if *n == DROP_LOG_BURST + 1 {
            log::warn!(
                "warn: control: more clients dropped, not logged for {REFUSAL_LOG_INTERVAL:?}"
            );
        }
    }

    fn slot_of(&self, id: u64) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.id == id))
    }
}

fn token(slot: usize) -> Token {
    Token(FIRST_OWN_TOKEN + 1 + slot)
}
