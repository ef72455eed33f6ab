//! The queue role: the only process that writes the spool. Chrooted in
//! /var/spool/smtpd as _smtpq, pledged "stdio rpath wpath cpath sendfd".
//! It hands the dispatcher a new message file (a descriptor), collects
//! the envelopes of each message, and commits them durably when the
//! dispatcher has written the data; the 250 waits for that.
//!
//! Group commit, pipelined: the flushes run in a thread of their own
//! ([`crate::spool::flusher`]), so the loop keeps creating files and
//! staging messages (envelopes written, renamed into queue/) meanwhile.
//! Each flush covers everything staged while the one before ran; when it
//! ends those messages get their 250 and the next flush starts at once.
//! A message waits for at most the end of the running flush and one of
//! its own.

#![forbid(unsafe_code)]

mod bounce;
mod control;
mod delivery;

use crate::config::view::View;
use crate::event::{Loop, Ready};
use crate::ipc::msg::{self, FromParent, NewEnvelope, QueueDispatcher, QueueScheduler};
use crate::proc::Role;
use crate::prologue::{run_service, Frame, Links, Service, Setup, FIRST_OWN_TOKEN};
use crate::scheduler::schedule::NewEntry;
use crate::spool::id::EvpIds;
use crate::spool::{
    is_storage_full, DsnRet, Envelope, Flags, Flusher, Job, Kind, MsgId, Notify, Published, Spool,
};
use mio::Token;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Most messages being received at once (each is an open file in the
/// dispatcher and a directory in incoming/).
const MAX_PENDING: usize = 4096;
/// Most envelopes one message may have (far above `smtp limit max-rcpt`).
const MAX_ENVELOPES: usize = 100_000;
/// The flusher thread's wake-up descriptor.
const FLUSHER: Token = Token(FIRST_OWN_TOKEN);
/// Most schedule entries per frame (each well under 64 bytes).
const ENTRIES_PER_FRAME: usize = 512;

/// A message being received.
struct Pending {
    ids: EvpIds,
    envelopes: Vec<Envelope>,
}

/// A message staged into queue/, waiting for the flush that makes it
/// durable before its 250.
struct Staged {
    /// The dispatcher's request, for a received message; None for a
    /// bounce the queue made.
    req: Option<u64>,
    msgid: MsgId,
    envelopes: Vec<(u64, NewEntry)>,
    /// A bounce's failed envelope: removed once the bounce is committed.
    bounced: Option<Envelope>,
}

/// The queue's state between turns of the loop.
struct Queue {
    spool: Spool,
    flusher: Flusher,
    ttl: u64,
    pending: HashMap<u32, Pending>,
    /// Staged since the running flush started: the next flush covers
    /// them, with these files (Flush::PerFile) and directories.
    staged: Vec<Staged>,
    job: Job,
    published: Published,
    /// Covered by the running flush.
    flushing: Vec<Staged>,
    /// Envelopes handed to the parent for local delivery, by id.
    inflight: HashMap<u64, Envelope>,
    /// Bounces waiting for lka's routing: their text, the envelope they
    /// report on, and whether it goes once the report is committed (a
    /// failure) or stays (a delay notice), by request.
    bounces: HashMap<u64, (Vec<u8>, Envelope, bool)>,
    next_req: u64,
}

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Queue(view) = setup.view.get() else {
        return Err("not a queue view".into());
    };
    // We are chrooted in the spool: its root is "/".
    let spool = Spool::open(Path::new("/")).map_err(|e| format!("spool: {e}"))?;
    let flusher = spool.flusher().map_err(|e| format!("flusher: {e}"))?;
    let mut queue = Queue {
        spool,
        flusher,
        ttl: view.queue.ttl.as_secs(),
        pending: HashMap::new(),
        staged: Vec::new(),
        job: Job::default(),
        published: Published::default(),
        flushing: Vec::new(),
        inflight: HashMap::new(),
        bounces: HashMap::new(),
        next_req: 0,
    };
    run_service(setup.links, &mut queue)
}

impl Service for Queue {
    fn start(&mut self, links: &mut Links, lp: &Loop) -> Result<(), String> {
        lp.watch(self.flusher.fd(), FLUSHER, false)
            .map_err(|e| format!("flusher: {e}"))?;
        let recovered = self.spool.recover();
        for c in &recovered.corrupt {
            log::warn!("warn: queue: corrupt {}: {}", c.path.display(), c.reason);
        }
        log::info!(
            "info: queue: {} envelopes in the queue, {} unacknowledged messages removed, {} corrupt",
            recovered.envelopes.len(),
            recovered.removed_incoming,
            recovered.corrupt.len()
        );
        let ids: Vec<(u64, NewEntry)> = recovered
            .envelopes
            .iter()
            .map(|e| (e.id.get(), NewEntry::from_envelope(e)))
            .collect();
        notify_scheduler(links, lp, &ids)
    }

    fn frames(&mut self, links: &mut Links, lp: &Loop, frames: Vec<Frame>) -> Result<(), String> {
        for f in frames {
            match f.peer {
                Role::Dispatcher => {}
                Role::Scheduler => {
                    self.scheduler_frame(links, lp, f)?;
                    continue;
                }
                Role::Lka => {
                    self.lka_frame(f)?;
                    continue;
                }
                Role::Control => {
                    self.control_frame(links, lp, f)?;
                    continue;
                }
                _ => return Err(f.refuse(Role::Queue)),
            }
            match f.decode::<QueueDispatcher>()? {
                QueueDispatcher::Create { req } => {
                    let (m, fds) = create(&self.spool, &mut self.pending, req);
                    links.send(lp, Role::Dispatcher, &m, fds)?;
                }
                QueueDispatcher::AddEnvelope { msgid, envelope } => {
                    let p = self.pending.get_mut(&msgid).ok_or_else(|| {
                        format!("dispatcher channel: envelope for unknown message {msgid:08x}")
                    })?;
                    if p.envelopes.len() >= MAX_ENVELOPES {
                        return Err(format!(
                            "dispatcher channel: over {MAX_ENVELOPES} envelopes for {msgid:08x}"
                        ));
                    }
                    let id = p.ids.next().ok_or("queue: envelope ids exhausted")?;
                    p.envelopes.push(envelope_from(id, &envelope, self.ttl));
                }
                // The size is the queue's to measure (Spool::stage).
                QueueDispatcher::Commit {
                    req, msgid, count, ..
                } => self.stage(links, lp, req, msgid, count)?,
                QueueDispatcher::Relayed { id, outcome } => {
                    self.delivery_done(links, lp, id, outcome)?;
                }
                QueueDispatcher::Abort { msgid } => {
                    if self.pending.remove(&msgid).is_some() {
                        if let Some(id) = MsgId::new(msgid) {
                            if let Err(e) = self.spool.abort(id) {
                                log::warn!("warn: queue: abort of {msgid:08x}: {e}");
                            }
                        }
                    }
                }
                other => return Err(msg::unexpected(Role::Dispatcher, &other)),
            }
        }
        self.kick()
    }

    fn parent(&mut self, links: &mut Links, lp: &Loop, m: Vec<FromParent>) -> Result<(), String> {
        for m in m {
            match m {
                FromParent::DeliveryDone { id, outcome } => {
                    self.delivery_done(links, lp, id, outcome)?
                }
                other => {
                    return Err(format!(
                        "parent channel: unexpected {}",
                        msg::Message::name(&other)
                    ))
                }
            }
        }
        Ok(())
    }

    fn ready(&mut self, links: &mut Links, lp: &Loop, r: &Ready) -> Result<(), String> {
        if r.token != FLUSHER {
            return Err(format!("event for unknown token {}", r.token.0));
        }
        let Some(result) = self.flusher.take().map_err(|e| format!("flusher: {e}"))? else {
            return Ok(());
        };
        self.flushed(links, lp, result)?;
        self.kick()
    }
}

impl Queue {
    /// Stage one message at once (see [`Spool::stage`]): it is written
    /// and renamed into queue/ while the running flush goes on, and the
    /// next flush covers it.
    fn stage(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        req: u64,
        msgid: u32,
        count: u32,
    ) -> Result<(), String> {
        let mut p = self
            .pending
            .remove(&msgid)
            .ok_or_else(|| format!("dispatcher channel: commit of unknown message {msgid:08x}"))?;
        if count == 0 || p.envelopes.len() != count as usize {
            return Err(format!(
                "dispatcher channel: commit of {msgid:08x} with {count} envelopes, {} sent",
                p.envelopes.len()
            ));
        }
        let id = MsgId::new(msgid).ok_or("dispatcher channel: message id 0")?;
        match self.spool.stage(id, &mut p.envelopes, &mut self.published) {
            Ok(files) => {
                self.job.files.extend(files);
                self.staged.push(Staged {
                    req: Some(req),
                    bounced: None,
                    msgid: id,
                    envelopes: p
                        .envelopes
                        .iter()
                        .map(|e| (e.id.get(), NewEntry::from_envelope(e)))
                        .collect(),
                });
                Ok(())
            }
            Err(e) => {
                log::warn!("warn: queue: commit of {id} failed: {e}");
                failed(links, lp, req, id, &e)
            }
        }
    }

    /// Start the next flush if none runs and messages wait for one.
    fn kick(&mut self) -> Result<(), String> {
        if self.flusher.busy() || self.staged.is_empty() {
            return Ok(());
        }
        let mut job = std::mem::take(&mut self.job);
        let published = std::mem::take(&mut self.published);
        match self.spool.publish_job(&published) {
            Ok(more) => job.files.extend(more.files),
            Err(e) => return Err(format!("queue: cannot open a directory to flush: {e}")),
        }
        self.flushing = std::mem::take(&mut self.staged);
        self.flusher
            .submit(job)
            .map_err(|e| format!("flusher: {e}"))
    }

    /// A flush ended: what it covered is committed (250), or refused
    /// (4xx) and taken out of the queue.
    fn flushed(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        result: std::io::Result<()>,
    ) -> Result<(), String> {
        let covered = std::mem::take(&mut self.flushing);
        if let Err(e) = result {
            log::warn!(
                "warn: queue: flush failed, {} messages refused: {e}",
                covered.len()
            );
            for s in covered {
                self.spool.take_back(s.msgid);
                // A bounce's failed envelope stays in the spool: the next
                // start tries it again, and bounces it again.
                if let Some(req) = s.req {
                    failed(links, lp, req, s.msgid, &e)?;
                }
            }
            return Ok(());
        }
        let mut committed = Vec::new();
        for s in covered {
            committed.extend_from_slice(&s.envelopes);
            if let Some(req) = s.req {
                let m = QueueDispatcher::Committed {
                    req,
                    msgid: s.msgid.get(),
                    first_evpid: s.envelopes.first().map_or(0, |(id, _)| *id),
                };
                links.send(lp, Role::Dispatcher, &m, Vec::new())?;
            }
            if let Some(orig) = s.bounced {
                log::info!(
                    "info: queue: bounce msgid={} for evpid={} to <{}>",
                    s.msgid,
                    orig.id,
                    orig.sender
                );
                self.remove(&orig);
            }
        }
        notify_scheduler(links, lp, &committed)
    }
}

/// Tell the dispatcher a commit failed (the client gets 4xx).
fn failed(
    links: &mut Links,
    lp: &Loop,
    req: u64,
    msgid: MsgId,
    e: &std::io::Error,
) -> Result<(), String> {
    let m = QueueDispatcher::CommitFailed {
        req,
        msgid: msgid.get(),
        text: storage_text(e),
    };
    links.send(lp, Role::Dispatcher, &m, Vec::new())
}

fn create(
    spool: &Spool,
    pending: &mut HashMap<u32, Pending>,
    req: u64,
) -> (QueueDispatcher, Vec<OwnedFd>) {
    if pending.len() >= MAX_PENDING {
        let text = "Too many messages in progress".to_string();
        return (
            QueueDispatcher::CreateFailed {
                req,
                tempfail: true,
                text,
            },
            Vec::new(),
        );
    }
    match spool.create_message() {
        Ok((id, file)) => {
            pending.insert(
                id.get(),
                Pending {
                    ids: id.envelope_ids(),
                    envelopes: Vec::new(),
                },
            );
            (
                QueueDispatcher::Created {
                    req,
                    msgid: id.get(),
                },
                vec![OwnedFd::from(file)],
            )
        }
        Err(e) => {
            log::warn!("warn: queue: cannot create a message: {e}");
            (
                QueueDispatcher::CreateFailed {
                    req,
                    tempfail: true,
                    text: storage_text(&e),
                },
                Vec::new(),
            )
        }
    }
}

/// The reply text a client gets when the spool fails.
fn storage_text(e: &std::io::Error) -> String {
    if is_storage_full(e) {
        "Insufficient system storage".into()
    } else {
        "Temporary failure in the queue".into()
    }
}

fn notify_scheduler(
    links: &mut Links,
    lp: &Loop,
    entries: &[(u64, NewEntry)],
) -> Result<(), String> {
    for chunk in entries.chunks(ENTRIES_PER_FRAME) {
        links.send(
            lp,
            Role::Scheduler,
            &QueueScheduler::Envelopes {
                entries: chunk.to_vec(),
            },
            Vec::new(),
        )?;
    }
    Ok(())
}

/// The stored envelope for one recipient the dispatcher accepted. What
/// does not fit the format (a control character, an over-long field) is
/// refused at commit by `Envelope::validate`, never stored.
fn envelope_from(id: crate::spool::EvpId, n: &NewEnvelope, ttl: u64) -> Envelope {
    let now = crate::spool::unix_now();
    let mut flags = Flags::default();
    if n.authenticated {
        flags.insert(Flags::AUTHENTICATED);
    }
    Envelope {
        id,
        sender: n.sender.clone(),
        rcpt: n.rcpt.clone(),
        orig_rcpt: None,
        dest: n.dest.dest.clone(),
        user: n.dest.user.clone(),
        target: n.dest.target.clone(),
        account: n.dest.account.clone(),
        action: n.dest.action.clone(),
        kind: if n.dest.relay {
            Kind::Relay
        } else {
            Kind::Local
        },
        tag: n.tag.clone(),
        helo: n.helo.clone(),
        client: n.client.clone(),
        hostname: n.hostname.clone(),
        ctime: now,
        expire: ttl,
        retry: 0,
        last_try: 0,
        last_warn: 0,
        last_error: String::new(),
        notify: Notify::from_bits(n.notify).unwrap_or_default(),
        ret: n
            .ret_full
            .map(|full| if full { DsnRet::Full } else { DsnRet::Hdrs }),
        envid: n.envid.clone(),
        orcpt: n.orcpt.clone(),
        flags,
        size: 0,
        body_crc: 0,
    }
}
