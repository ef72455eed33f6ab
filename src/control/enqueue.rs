//! sendmail's SMTP session (OpenSMTPD's `IMSG_CTL_SMTP_SESSION`): any
//! local user may ask. Control makes a stream socketpair, hands one end
//! to the dispatcher, which serves it as a session on the local socket,
//! and the other end to the client, which speaks SMTP on it. The uid
//! goes with it, from the kernel, never from the client.

use super::Control;
use crate::event::Loop;
use crate::ipc::ctl::Reply;
use crate::ipc::msg::ControlDispatcher;
use crate::proc::Role;
use crate::prologue::Links;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

impl Control {
    pub(super) fn smtp_session(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        slot: usize,
    ) -> Result<(), String> {
        let Some(uid) = self.clients[slot].as_ref().map(|c| c.uid) else {
            return Ok(());
        };
        // As OpenSMTPD's control: no enqueueing while smtp is paused.
        if self.paused.smtp {
            self.reply(lp, slot, &Reply::Fail(None));
            return Ok(());
        }
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                // Out of descriptors: this client is refused, not us.
                log::warn!("warn: control: enqueue for uid={uid}: socketpair: {e}");
                self.reply(lp, slot, &Reply::Fail(None));
                return Ok(());
            }
        };
        let m = ControlDispatcher::Enqueue { uid };
        links.send(lp, Role::Dispatcher, &m, vec![OwnedFd::from(ours)])?;
        let Some(c) = self.clients[slot].as_mut() else {
            return Ok(());
        };
        if let Err(e) = c.send_with(&Reply::Session, vec![OwnedFd::from(theirs)]) {
            log::debug!("debug: control: client uid={uid}: {e}");
            self.close(lp, slot);
        }
        Ok(())
    }
}
