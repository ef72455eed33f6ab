//! The queue role: the only process that writes the spool. Chrooted in
//! /var/spool/smtpd as _smtpq, pledged "stdio rpath wpath cpath sendfd".
//! It hands the dispatcher a new message file (a descriptor), collects
//! the envelopes of each message, and commits them durably when the
//! dispatcher has written the data; the 250 waits for that. Commits that
//! arrive while one is being flushed form the next batch (group commit):
//! everything readable in one turn of the loop is one batch.

#![forbid(unsafe_code)]

use crate::config::view::View;
use crate::event::Loop;
use crate::ipc::msg::{self, NewEnvelope, QueueDispatcher, QueueScheduler};
use crate::proc::Role;
use crate::prologue::{serve, Links, Setup};
use crate::spool::id::EvpIds;
use crate::spool::{is_storage_full, DsnRet, Envelope, Flags, Kind, MsgId, Notify, Spool};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most messages being received at once (each is an open file in the
/// dispatcher and a directory in incoming/).
const MAX_PENDING: usize = 4096;
/// Most envelopes one message may have (far above `smtp limit max-rcpt`).
const MAX_ENVELOPES: usize = 100_000;
/// Most envelope ids per frame to the scheduler (well under the cap).
const IDS_PER_FRAME: usize = 4096;

/// A message being received.
struct Pending {
    ids: EvpIds,
    envelopes: Vec<Envelope>,
}

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Queue(view) = setup.view.get() else {
        return Err("not a queue view".into());
    };
    // We are chrooted in the spool: its root is "/".
    let spool = Spool::open(Path::new("/")).map_err(|e| format!("spool: {e}"))?;
    let ttl = view.queue.ttl.as_secs();
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    serve(
        setup.links,
        |links, lp| {
            let recovered = spool.recover();
            for c in &recovered.corrupt {
                log::warn!("warn: queue: corrupt {}: {}", c.path.display(), c.reason);
            }
            log::info!(
                "info: queue: {} envelopes in the queue, {} unacknowledged messages removed, {} corrupt",
                recovered.envelopes.len(),
                recovered.removed_incoming,
                recovered.corrupt.len()
            );
            let ids: Vec<u64> = recovered.envelopes.iter().map(|e| e.id.get()).collect();
            notify_scheduler(links, lp, &ids)
        },
        |links, lp, frames| {
            // Everything that arrived in this turn; its commits are one batch.
            let mut batch: Vec<(u64, MsgId)> = Vec::new();
            for f in frames {
                if f.peer != Role::Dispatcher {
                    return Err(f.refuse(Role::Queue));
                }
                match f.decode::<QueueDispatcher>()? {
                    QueueDispatcher::Create { req } => {
                        let (m, fds) = create(&spool, &mut pending, req);
                        links.send(lp, Role::Dispatcher, &m, fds)?;
                    }
                    QueueDispatcher::AddEnvelope { msgid, envelope } => {
                        let p = pending.get_mut(&msgid).ok_or_else(|| {
                            format!("dispatcher channel: envelope for unknown message {msgid:08x}")
                        })?;
                        if p.envelopes.len() >= MAX_ENVELOPES {
                            return Err(format!("dispatcher channel: over {MAX_ENVELOPES} envelopes for {msgid:08x}"));
                        }
                        let id = p.ids.next().ok_or("queue: envelope ids exhausted")?;
                        p.envelopes.push(envelope_from(id, &envelope, ttl));
                    }
                    QueueDispatcher::Commit {
                        req,
                        msgid,
                        count,
                        size,
                    } => {
                        let p = pending.get_mut(&msgid).ok_or_else(|| {
                            format!("dispatcher channel: commit of unknown message {msgid:08x}")
                        })?;
                        if count == 0 || p.envelopes.len() != count as usize {
                            return Err(format!(
                                "dispatcher channel: commit of {msgid:08x} with {count} envelopes, {} sent",
                                p.envelopes.len()
                            ));
                        }
                        p.envelopes.iter_mut().for_each(|e| e.size = size);
                        let id = MsgId::new(msgid).ok_or("dispatcher channel: message id 0")?;
                        batch.push((req, id));
                    }
                    QueueDispatcher::Abort { msgid } => {
                        if pending.remove(&msgid).is_some() {
                            if let Some(id) = MsgId::new(msgid) {
                                if let Err(e) = spool.abort(id) {
                                    log::warn!("warn: queue: abort of {msgid:08x}: {e}");
                                }
                            }
                        }
                    }
                    other => return Err(msg::unexpected(Role::Dispatcher, &other)),
                }
            }
            if batch.is_empty() {
                return Ok(());
            }
            commit(&spool, &mut pending, batch, links, lp)
        },
    )
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

/// One durable commit for the whole batch, then each message's answer.
fn commit(
    spool: &Spool,
    pending: &mut HashMap<u32, Pending>,
    batch: Vec<(u64, MsgId)>,
    links: &mut Links,
    lp: &Loop,
) -> Result<(), String> {
    let items: Vec<(MsgId, Vec<Envelope>)> = batch
        .iter()
        .map(|(_, id)| {
            (
                *id,
                pending
                    .remove(&id.get())
                    .map(|p| p.envelopes)
                    .unwrap_or_default(),
            )
        })
        .collect();
    let results = spool.commit(&items);
    let mut committed = Vec::new();
    for (((req, id), (_, envs)), result) in batch.iter().zip(&items).zip(results) {
        let m = match result {
            Ok(()) => {
                committed.extend(envs.iter().map(|e| e.id.get()));
                QueueDispatcher::Committed {
                    req: *req,
                    msgid: id.get(),
                }
            }
            Err(e) => {
                log::warn!("warn: queue: commit of {id} failed: {e}");
                QueueDispatcher::CommitFailed {
                    req: *req,
                    msgid: id.get(),
                    text: storage_text(&e),
                }
            }
        };
        links.send(lp, Role::Dispatcher, &m, Vec::new())?;
    }
    log::debug!("debug: queue: one commit for {} messages", batch.len());
    notify_scheduler(links, lp, &committed)
}

fn notify_scheduler(links: &mut Links, lp: &Loop, ids: &[u64]) -> Result<(), String> {
    for chunk in ids.chunks(IDS_PER_FRAME) {
        links.send(
            lp,
            Role::Scheduler,
            &QueueScheduler::Envelopes {
                ids: chunk.to_vec(),
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut flags = Flags::default();
    if n.authenticated {
        flags.insert(Flags::AUTHENTICATED);
    }
    Envelope {
        id,
        sender: n.sender.clone(),
        rcpt: n.rcpt.clone(),
        orig_rcpt: None,
        dest: n.rcpt.clone(),
        action: n.action.clone(),
        kind: if n.relay { Kind::Relay } else { Kind::Local },
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
    }
}
