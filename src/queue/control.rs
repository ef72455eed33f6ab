//! The queue's side of smtpctl: the envelope behind each line of `show
//! queue`, and the spool side of `smtpctl remove`. Envelopes are read
//! back from the spool as untrusted input (`Spool::load_envelope`); one
//! that is gone or unreadable is left out of the listing.

use super::Queue;
use crate::event::Loop;
use crate::ipc::ctl::{QueueEntry, QUEUE_CHUNK};
use crate::ipc::msg::{self, ControlQueue};
use crate::log::duration_text;
use crate::proc::Role;
use crate::prologue::{Frame, Links};
use crate::spool::{unix_now, Envelope, EvpId, Kind};

impl Queue {
    /// A frame from control.
    pub(super) fn control_frame(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        f: Frame,
    ) -> Result<(), String> {
        match f.decode::<ControlQueue>()? {
            ControlQueue::Describe { req, entries } => {
                if entries.len() > QUEUE_CHUNK {
                    return Err(format!(
                        "control channel: {} envelopes to describe, at most {QUEUE_CHUNK}",
                        entries.len()
                    ));
                }
                let entries = entries
                    .into_iter()
                    .filter_map(|sched| {
                        let env = self.spool.load_envelope(EvpId::new(sched.id)?).ok()?;
                        Some(QueueEntry {
                            sched,
                            client: env.client,
                            kind: env.kind,
                            flags: env.flags.bits(),
                            sender: env.sender,
                            rcpt: env.rcpt,
                            dest: env.dest,
                            ctime: env.ctime,
                            expire: env.expire,
                            last_try: env.last_try,
                            retry: env.retry,
                            last_error: env.last_error,
                        })
                    })
                    .collect();
                let m = ControlQueue::Described { req, entries };
                links.send(lp, Role::Control, &m, Vec::new())
            }
            other => Err(msg::unexpected(Role::Control, &other)),
        }
    }

    /// `smtpctl remove`: the scheduler dropped these envelopes; delete
    /// them, with OpenSMTPD's log line. One already gone is skipped.
    pub(super) fn removed_by_admin(&mut self, ids: Vec<u64>) {
        for id in ids {
            let Some(evpid) = EvpId::new(id) else {
                continue;
            };
            if self.inflight.contains_key(&id) {
                // Still being tried: the scheduler removes it again when
                // the attempt ends (Retry::Removed).
                continue;
            }
            let Ok(env) = self.spool.load_envelope(evpid) else {
                continue;
            };
            log_removed(&env);
            self.remove(&env);
        }
    }
}

/// OpenSMTPD's queue_log() line for a removal.
fn log_removed(env: &Envelope) {
    let rcpt = if env.rcpt == env.dest {
        "-"
    } else {
        env.rcpt.as_str()
    };
    let sender = if env.sender.is_empty() {
        "@"
    } else {
        env.sender.as_str()
    };
    log::info!(
        "{}: Remove for {:016x}: from=<{sender}>, to=<{}>, rcpt=<{rcpt}>, delay={}, stat=Removed by administrator",
        if env.kind == Kind::Local { "delivery" } else { "relay" },
        env.id.get(),
        env.dest,
        duration_text(unix_now().saturating_sub(env.ctime)),
    );
}
