//! One smtpctl connection: its channel (the roles' framing, on the
//! accepted seqpacket socket), the uid the kernel gave for it, and the
//! one request it may have in progress.

use super::{token, Control};
use crate::event::{Loop, Ready};
use crate::ipc::ctl::{Reply, Request};
use crate::ipc::{Channel, IpcError};
use crate::proc::Role;
use crate::prologue::Links;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Instant;

/// What a client waits for. One request at a time: smtpctl asks, reads
/// the whole answer, then asks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Work {
    Idle,
    /// `show queue`: the next ids come from the scheduler, then their
    /// envelopes from the queue, then the chunk goes out; the next turn
    /// waits until the client has read it (`Drain`), so a client that
    /// does not read costs one chunk, not the whole queue.
    Queue {
        msgid: Option<u32>,
        after: u64,
        step: QueueStep,
    },
    /// `show stats`: counters gathered so far, and how many roles have
    /// yet to answer.
    Stats {
        have: Vec<(String, u64)>,
        waiting: u8,
    },
    /// `schedule`, `remove`, `pause|resume envelope`: the scheduler's count.
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueStep {
    List,
    Describe { more: bool },
    Drain,
}

pub(super) struct Client {
    pub id: u64,
    pub uid: u32,
    chan: Channel,
    watch_write: bool,
    pub last: Instant,
    pub work: Work,
}

impl Client {
    pub fn new(fd: OwnedFd, uid: u32, id: u64) -> std::io::Result<Client> {
        Ok(Client {
            id,
            uid,
            // The role is only a label for the channel's own messages.
            chan: Channel::new(fd, Role::Control)?,
            watch_write: false,
            last: Instant::now(),
            work: Work::Idle,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.chan.raw_fd()
    }

    /// Queue a reply. Err if the client is gone or not reading.
    pub fn send(&mut self, r: &Reply) -> Result<(), IpcError> {
        self.chan.send(r, Vec::new())
    }

    /// Queue a reply that carries descriptors (`Reply::Session`).
    pub fn send_with(&mut self, r: &Reply, fds: Vec<OwnedFd>) -> Result<(), IpcError> {
        self.chan.send(r, fds)
    }

    /// True while replies wait for the client to read.
    pub fn backlogged(&self) -> bool {
        self.chan.wants_write()
    }
}

impl Control {
    /// Readiness on a client's socket: read its request, or send what
    /// waits. Any error drops the client, never the daemon.
    pub(super) fn client_ready(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        slot: usize,
        r: &Ready,
    ) -> Result<(), String> {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if r.writable {
            if let Err(e) = c.chan.flush() {
                log::debug!("debug: control: client uid={}: {e}", c.uid);
                self.close(lp, slot);
                return Ok(());
            }
            c.last = Instant::now();
        }
        let mut requests = Vec::new();
        let mut drop_reason = None;
        if r.readable {
            loop {
                match c.chan.recv::<Request>() {
                    Ok(None) => break,
                    Ok(Some(m)) => {
                        c.last = Instant::now();
                        requests.push(m.msg);
                    }
                    Err(IpcError::Closed) => {
                        drop_reason = Some(None);
                        break;
                    }
                    Err(e) => {
                        drop_reason = Some(Some(e.to_string()));
                        break;
                    }
                }
            }
        }
        if let Some(reason) = drop_reason {
            let uid = c.uid;
            if let Some(e) = reason {
                // The client's bytes are not in the line: only our
                // description of what was wrong with them.
                self.log_drop(uid, &e);
            }
            self.close(lp, slot);
            return Ok(());
        }
        for req in requests {
            let busy = self.clients[slot]
                .as_ref()
                .is_some_and(|c| c.work != Work::Idle);
            if busy {
                let uid = self.clients[slot].as_ref().map_or(0, |c| c.uid);
                self.log_drop(uid, "a request before the answer to the last");
                self.close(lp, slot);
                return Ok(());
            }
            self.request(links, lp, slot, req)?;
            if self.clients[slot].is_none() {
                return Ok(());
            }
        }
        self.after_io(links, lp, slot)
    }

    /// Go on with a show queue once the client has read, and keep the
    /// loop watching for room only while replies wait.
    pub(super) fn after_io(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        slot: usize,
    ) -> Result<(), String> {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if let Work::Queue {
            step: QueueStep::Drain,
            ..
        } = c.work
        {
            if !c.backlogged() {
                self.next_queue_chunk(links, lp, slot)?;
            }
        }
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let want = c.backlogged();
        if want != c.watch_write {
            if lp.rewatch(c.raw_fd(), token(slot), want).is_err() {
                self.close(lp, slot);
                return Ok(());
            }
            c.watch_write = want;
        }
        Ok(())
    }

    /// Send `r` to the client in `slot`; a client that cannot take it is
    /// dropped.
    pub(super) fn reply(&mut self, lp: &Loop, slot: usize, r: &Reply) {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Err(e) = c.send(r) {
            log::debug!("debug: control: client uid={}: {e}", c.uid);
            self.close(lp, slot);
        }
    }
}
