//! The dispatcher's side of smtpctl: `pause smtp` stops accepting on the
//! listeners (they stay bound; clients wait in the kernel's backlog, as
//! with OpenSMTPD), `resume smtp` accepts again; and its counters for
//! `show stats`.

use super::Dispatcher;
use crate::ipc::msg::{self, ControlDispatcher};
use crate::proc::Role;
use crate::prologue::{Frame, FIRST_OWN_TOKEN};
use mio::Token;
use std::os::fd::AsRawFd;

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
}
