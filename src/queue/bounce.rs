//! Bounces: a failed or expired envelope becomes an RFC 3464 report to its
//! sender ([`crate::bounce`]), a new message in the spool from the null
//! sender, routed by lka as a local submission would be (OpenSMTPD
//! enqueues its bounces through a local SMTP session; lka's rules and
//! aliases apply alike).
//!
//! Order, so that nothing is lost: the report is made from the spool, lka
//! says where it goes, the bounce message is staged and flushed like any
//! received message, and only then is the failed envelope removed. A
//! crash in between leaves the failed envelope in the spool: the next
//! start tries it again and bounces it again (a duplicate report, never a
//! lost one). No bounce for the null sender, for a bounce (it would
//! loop), or when NOTIFY says so; lka refusing the sender's address drops
//! the report with a log line.

use super::{Queue, Staged};
use crate::bounce::{self, Action, RcptReport, Report, ReportKind};
use crate::event::Loop;
use crate::ipc::msg::{self, Destination, LkaQueue};
use crate::proc::Role;
use crate::prologue::{Frame, Links};
use crate::scheduler::schedule::NewEntry;
use crate::spool::unix_now as now;
use crate::spool::{Envelope, Flags, Kind, MsgId, Notify};
use std::io::{Read, Write};

/// The most of the original message a bounce quotes (RET=FULL).
const MAX_QUOTED: u64 = 8 * 1024 * 1024;

/// The report on one envelope to its sender: `action` for its one
/// recipient, quoting `original` as RET asks (nothing for a success).
fn report(
    env: &Envelope,
    kind: ReportKind,
    action: Action,
    diagnostic: String,
    last_attempt: u64,
    original: &[u8],
) -> Vec<u8> {
    let recipients = [RcptReport {
        rcpt: env.dest.clone(),
        orcpt: env.orcpt.clone(),
        action,
        status: None,
        diagnostic,
        last_attempt: Some(last_attempt),
    }];
    bounce::bounce_message(&Report {
        hostname: &env.hostname,
        sender: &env.sender,
        kind,
        recipients: &recipients,
        envid: env.envid.as_deref(),
        arrival: env.ctime,
        now: now(),
        ret: env.ret,
        message: original,
    })
}

impl Queue {
    /// The envelope failed for good: bounce it if its sender wants one,
    /// else remove it now.
    pub(super) fn fail(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        env: Envelope,
        text: &str,
    ) -> Result<(), String> {
        let is_bounce = env.is_bounce();
        if is_bounce || !bounce::should_bounce(&env.sender, env.notify, Action::Failed) {
            if is_bounce {
                log::warn!(
                    "warn: queue: bounce evpid={} to <{}> failed, dropped: {}",
                    env.id,
                    env.rcpt,
                    crate::log::escape(text.as_bytes())
                );
            }
            self.remove(&env);
            return Ok(());
        }
        let original = self.read_original(env.id.msgid());
        let bytes = report(
            &env,
            ReportKind::Failure,
            Action::Failed,
            text.to_string(),
            now(),
            &original,
        );
        self.route(links, lp, bytes, env, true)
    }

    /// The envelope is delivered: remove it, after a "delivered" report
    /// when the sender asked for one (NOTIFY=SUCCESS).
    pub(super) fn delivered(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        env: Envelope,
    ) -> Result<(), String> {
        if env.is_bounce() || !bounce::should_bounce(&env.sender, env.notify, Action::Delivered) {
            self.remove(&env);
            return Ok(());
        }
        let diagnostic = "250 2.0.0 Delivered".to_string();
        let bytes = report(
            &env,
            ReportKind::Success,
            Action::Delivered,
            diagnostic,
            now(),
            &[],
        );
        self.route(links, lp, bytes, env, true)
    }

    /// The envelope is delayed past a `bounce warn-interval`: tell its
    /// sender, once per interval (the mark is written to the envelope
    /// first, so a restart does not send it again).
    pub(super) fn delayed(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        mut env: Envelope,
        delay: u64,
        mark: u64,
        ttl: u64,
    ) -> Result<(), String> {
        if env.is_bounce() || !bounce::should_bounce(&env.sender, env.notify, Action::Delayed) {
            return Ok(());
        }
        env.last_warn = env.last_warn.max(mark);
        if let Err(e) = self.spool.update_envelope(&env) {
            log::warn!("warn: queue: cannot update envelope {}: {e}", env.id);
            return Ok(());
        }
        let original = self.read_original(env.id.msgid());
        let bytes = report(
            &env,
            ReportKind::Delay { delay, ttl },
            Action::Delayed,
            env.last_error.clone(),
            env.last_try,
            &original,
        );
        self.route(links, lp, bytes, env, false)
    }

    /// Ask lka where a report goes.
    fn route(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        bytes: Vec<u8>,
        env: Envelope,
        remove: bool,
    ) -> Result<(), String> {
        self.next_req += 1;
        let req = self.next_req;
        let rcpt = env.sender.clone();
        self.bounces.insert(req, (bytes, env, remove));
        links.send(lp, Role::Lka, &LkaQueue::Bounce { req, rcpt }, Vec::new())
    }

    /// The original message to quote, at most MAX_QUOTED of it; nothing
    /// (and a log line) if it cannot be read: the report still goes.
    fn read_original(&self, msgid: MsgId) -> Vec<u8> {
        let mut out = Vec::new();
        let read = self
            .spool
            .open_message(msgid)
            .and_then(|f| f.take(MAX_QUOTED).read_to_end(&mut out));
        if let Err(e) = read {
            log::warn!("warn: queue: cannot read {msgid} to report on it: {e}");
            out.clear();
        }
        out
    }

    /// A frame from lka: where a bounce goes.
    pub(super) fn lka_frame(&mut self, f: Frame) -> Result<(), String> {
        match f.decode::<LkaQueue>()? {
            LkaQueue::BounceRoute { req, result } => {
                let (bytes, orig, remove) = self
                    .bounces
                    .remove(&req)
                    .ok_or_else(|| format!("lka channel: route for unknown bounce {req}"))?;
                match result {
                    Ok(dests) if !dests.is_empty() => self.enqueue(bytes, orig, remove, &dests),
                    Ok(_) | Err(_) => {
                        let why = result.err().unwrap_or_else(|| "no destination".into());
                        log::warn!(
                            "warn: queue: bounce to <{}> for evpid={} dropped: {}",
                            orig.sender,
                            orig.id,
                            crate::log::escape(why.as_bytes())
                        );
                        if remove {
                            self.remove(&orig);
                        }
                    }
                }
                Ok(())
            }
            other => Err(msg::unexpected(Role::Lka, &other)),
        }
    }

    /// Write the bounce into the spool and stage it; the failed envelope
    /// goes once the bounce is committed (see `Queue::flushed`).
    fn enqueue(&mut self, bytes: Vec<u8>, orig: Envelope, remove: bool, dests: &[Destination]) {
        let (msgid, mut file) = match self.spool.create_message() {
            Ok(m) => m,
            Err(e) => {
                // Kept in the spool: the next start bounces it again.
                log::warn!(
                    "warn: queue: cannot create the bounce for evpid={}: {e}",
                    orig.id
                );
                return;
            }
        };
        if let Err(e) = file.write_all(&bytes) {
            log::warn!(
                "warn: queue: cannot write the bounce for evpid={}: {e}",
                orig.id
            );
            let _ = self.spool.abort(msgid);
            return;
        }
        drop(file);
        let mut ids = msgid.envelope_ids();
        let mut envelopes = Vec::with_capacity(dests.len());
        for d in dests {
            let Some(id) = ids.next() else { break };
            let mut flags = Flags::default();
            flags.insert(Flags::BOUNCE);
            envelopes.push(Envelope {
                id,
                sender: String::new(),
                rcpt: orig.sender.clone(),
                orig_rcpt: None,
                dest: d.dest.clone(),
                user: d.user.clone(),
                target: d.target.clone(),
                account: d.account.clone(),
                action: d.action.clone(),
                kind: if d.relay { Kind::Relay } else { Kind::Local },
                tag: None,
                helo: "localhost".into(),
                client: "local".into(),
                hostname: orig.hostname.clone(),
                ctime: now(),
                expire: self.ttl,
                retry: 0,
                last_try: 0,
                last_warn: 0,
                last_error: String::new(),
                notify: Notify::default(),
                ret: None,
                envid: None,
                orcpt: None,
                flags,
                size: 0,
                body_crc: 0,
            });
        }
        match self.spool.stage(msgid, &mut envelopes, &mut self.published) {
            Ok(files) => {
                self.job.files.extend(files);
                self.staged.push(Staged {
                    req: None,
                    msgid,
                    envelopes: envelopes
                        .iter()
                        .map(|e| (e.id.get(), NewEntry::from_envelope(e)))
                        .collect(),
                    bounced: remove.then_some(orig),
                });
            }
            Err(e) => log::warn!(
                "warn: queue: cannot stage the bounce for evpid={}: {e}",
                orig.id
            ),
        }
    }
}
