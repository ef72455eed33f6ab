//! The dispatcher's side of smtpctl: `pause smtp` stops accepting on the
//! listeners (they stay bound; clients wait in the kernel's backlog, as
//! with OpenSMTPD), `resume smtp` accepts again; and its counters for
//! `show stats`; and sendmail's sessions, which control hands over.

use super::conn::{Accepted, Session, LOCAL_LISTENER};
use super::stream::Stream;
use super::{Dispatcher, MAX_SESSIONS};
use crate::ipc::msg::{self, ControlDispatcher};
use crate::proc::Role;
use crate::prologue::{Frame, FIRST_OWN_TOKEN};
use mio::Token;
use std::os::fd::{AsRawFd, OwnedFd};

/// Most sendmail sessions of one user at once (as from one address).
const MAX_PER_UID: u32 = super::MAX_PER_ADDRESS;

impl Dispatcher {
    /// A frame from control.
    pub(super) fn control_frame(&mut self, f: Frame) -> Result<(), String> {
        match f.decode::<ControlDispatcher>()? {
            ControlDispatcher::PauseSmtp { paused } if paused != self.smtp_paused => {
                self.smtp_paused = paused;
                for (i, l) in self.listeners.iter().enumerate() {
                    let fd = l.as_raw_fd();
                    let r = if paused {
                        self.lp.unwatch(fd)
                    } else {
                        self.lp.watch(fd, Token(FIRST_OWN_TOKEN + i), false)
                    };
                    r.map_err(|e| format!("listener: {e}"))?;
                }
                if !paused {
                    // The loop is edge-triggered: take what queued up
                    // while paused, or no new edge would ever come.
                    for i in 0..self.listeners.len() {
                        self.accept(i)?;
                    }
                }
                Ok(())
            }
            // Already in that state: nothing to do.
            ControlDispatcher::PauseSmtp { .. } => Ok(()),
            ControlDispatcher::Enqueue { uid } => {
                let fd = f
                    .fds
                    .into_iter()
                    .next()
                    .ok_or("control channel: Enqueue without a descriptor")?;
                self.local_session(uid, fd)
            }
            ControlDispatcher::Stats { req } => {
                let m = ControlDispatcher::StatsAre {
                    req,
                    stats: vec![("smtp.session".into(), self.sessions.len() as u64)],
                };
                self.links.send(&self.lp, Role::Control, &m, Vec::new())
            }
            other => Err(msg::unexpected(Role::Control, &other)),
        }
    }

    /// Serve sendmail (smtpctl) of user `uid` on `fd`, as OpenSMTPD's
    /// smtp_enqueue(): a session on the local socket, whose client is
    /// "local" and whose name is this host's. The user is only bounded
    /// here; what it may send is lka's to decide (`from local`).
    fn local_session(&mut self, uid: u32, fd: OwnedFd) -> Result<(), String> {
        let mine = self.per_uid.get(&uid).copied().unwrap_or(0);
        if self.sessions.len() >= MAX_SESSIONS || mine >= MAX_PER_UID {
            log::warn!("warn: smtp refused address=local uid={uid} reason=too-many-sessions");
            return Ok(());
        }
        let sock = std::os::unix::net::UnixStream::from(fd);
        if let Err(e) = sock.set_nonblocking(true) {
            log::warn!("warn: smtp local session: {e}");
            return Ok(());
        }
        let lv = &self.view.local;
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let token = Token(self.next_token);
        self.next_token += 1;
        let cfg = super::session_config(self.view, lv, None, false, false);
        let accepted = Accepted {
            id,
            stream: Stream::Local(mio::net::UnixStream::from_std(sock)),
            listener: LOCAL_LISTENER,
            peer: None,
        };
        let mut s = match Session::new(accepted, lv, cfg, None, false) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("warn: smtp session: {e}");
                return Ok(());
            }
        };
        log::info!(
            "{id:016x} smtp connected address=local host={}",
            crate::log::escape(lv.hostname.as_bytes())
        );
        if self.lp.watch(s.stream.as_raw_fd(), token, true).is_err() {
            return Ok(());
        }
        *self.per_uid.entry(uid).or_insert(0) += 1;
        self.local_uids.insert(token, uid);
        let out = s.start(&mut self.next_req);
        self.sessions.insert(token, s);
        self.after(token, out)
    }
}
