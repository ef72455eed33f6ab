//! The queue's side of delivery: the scheduler says which envelopes to
//! try; for a local one the queue reads the envelope back from the spool
//! (untrusted, A4), opens the message read-only and asks the parent, which
//! has the delivery runner do it as the user; the outcome comes back from
//! the parent, and the queue removes or updates the envelope before it
//! tells the scheduler. Every try is logged in OpenSMTPD's `mda delivery`
//! form.
//!
//! A relayed envelope goes the same way to the dispatcher instead, whose
//! mta sends it and logs the `mta delivery` line; its outcome comes back
//! as `Relayed`. A failed or expired envelope bounces ([`super::bounce`]).

use super::Queue;
use crate::delivery::Outcome;
use crate::event::Loop;
use crate::ipc::msg::{
    self, LocalRequest, QueueDispatcher, QueueScheduler, RelayEnvelope, ToParent,
};
use crate::proc::Role;
use crate::prologue::{Frame, Links};
use crate::spool::unix_now as now;
use crate::spool::{Envelope, EvpId, Kind};
use std::os::fd::OwnedFd;

impl Queue {
    /// A frame from the scheduler.
    pub(super) fn scheduler_frame(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        f: Frame,
    ) -> Result<(), String> {
        match f.decode::<QueueScheduler>()? {
            QueueScheduler::Deliver { ids } => {
                for id in ids {
                    self.try_envelope(links, lp, id)?;
                }
                Ok(())
            }
            QueueScheduler::Expired { ids } => {
                for id in ids {
                    self.expire(links, lp, id)?;
                }
                Ok(())
            }
            QueueScheduler::Delayed {
                id,
                delay,
                mark,
                ttl,
            } => {
                let Some(evpid) = EvpId::new(id) else {
                    return Ok(());
                };
                match self.spool.load_envelope(evpid) {
                    Ok(env) => self.delayed(links, lp, env, delay, mark, ttl),
                    Err(_) => Ok(()),
                }
            }
            QueueScheduler::Remove { ids } => {
                self.removed_by_admin(ids);
                Ok(())
            }
            other => Err(msg::unexpected(Role::Scheduler, &other)),
        }
    }

    fn try_envelope(&mut self, links: &mut Links, lp: &Loop, id: u64) -> Result<(), String> {
        let evpid = EvpId::new(id).ok_or("scheduler channel: envelope id 0")?;
        if self.inflight.contains_key(&id) {
            return Ok(());
        }
        let env = match self.spool.load_envelope(evpid) {
            Ok(e) => e,
            Err(e) => {
                // Gone (removed meanwhile) or unreadable: nothing to try.
                log::warn!("warn: queue: envelope {evpid}: {e}");
                return tell(links, lp, QueueScheduler::PermFailed { id });
            }
        };
        let file = match self.spool.open_message(evpid.msgid()) {
            Ok(f) => f,
            Err(e) => {
                let text = format!("cannot open the message: {e}");
                return self.temp_fail(links, lp, env, &text);
            }
        };
        if env.kind == Kind::Relay {
            let m = QueueDispatcher::Relay {
                env: RelayEnvelope {
                    id,
                    action: env.action.clone(),
                    sender: env.sender.clone(),
                    dest: env.dest.clone(),
                    rcpt: env.rcpt.clone(),
                    notify: env.notify,
                    ret: env.ret,
                    envid: env.envid.clone(),
                    orcpt: env.orcpt.clone(),
                    ctime: env.ctime,
                },
            };
            links.send(lp, Role::Dispatcher, &m, vec![OwnedFd::from(file)])?;
            self.inflight.insert(id, env);
            return Ok(());
        }
        let req = LocalRequest {
            id,
            action: env.action.clone(),
            sender: env.sender.clone(),
            rcpt: env.rcpt.clone(),
            dest: env.dest.clone(),
            user: env.user.clone(),
            target: env.target.clone(),
            account: env.account.clone(),
        };
        links.send_parent(lp, &ToParent::Deliver(req), vec![OwnedFd::from(file)])?;
        self.inflight.insert(id, env);
        Ok(())
    }

    /// The parent's word on one delivery.
    pub(super) fn delivery_done(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        id: u64,
        outcome: Outcome,
    ) -> Result<(), String> {
        let env = self
            .inflight
            .remove(&id)
            .ok_or_else(|| format!("parent channel: outcome for {id:016x}, not in flight"))?;
        // The dispatcher logged a relayed delivery with its relay's name.
        let logged = env.kind == Kind::Relay;
        let log_delivery = |env: &Envelope, result: &str, stat: &str| {
            if !logged {
                log_delivery(env, result, stat)
            }
        };
        match outcome {
            Outcome::Delivered => {
                log_delivery(&env, "Ok", "Delivered");
                self.delivered(links, lp, env)?;
                tell(links, lp, QueueScheduler::Delivered { id })
            }
            Outcome::TempFail(text) => {
                log_delivery(&env, "TempFail", &text);
                self.keep(links, lp, env, &text)
            }
            Outcome::PermFail(text) => {
                log_delivery(&env, "PermFail", &text);
                self.fail(links, lp, env, &text)?;
                tell(links, lp, QueueScheduler::PermFailed { id })
            }
        }
    }

    /// A temporary failure found here: logged, then [`Self::keep`].
    fn temp_fail(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        env: Envelope,
        text: &str,
    ) -> Result<(), String> {
        log_delivery(&env, "TempFail", text);
        self.keep(links, lp, env, text)
    }

    /// Keep the envelope for the next try, its retry count and error
    /// written first (so a restart resumes the backoff).
    fn keep(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        mut env: Envelope,
        text: &str,
    ) -> Result<(), String> {
        let id = env.id.get();
        env.retry = env.retry.saturating_add(1);
        env.last_try = now();
        env.set_last_error(text.as_bytes());
        match self.spool.update_envelope(&env) {
            Ok(()) => tell(links, lp, QueueScheduler::TempFailed { id }),
            Err(e) => {
                log::warn!("warn: queue: cannot update envelope {}: {e}", env.id);
                // Still in the spool as it was: the scheduler retries it.
                tell(links, lp, QueueScheduler::TempFailed { id })
            }
        }
    }

    fn expire(&mut self, links: &mut Links, lp: &Loop, id: u64) -> Result<(), String> {
        let Some(evpid) = EvpId::new(id) else {
            return Ok(());
        };
        match self.spool.load_envelope(evpid) {
            Ok(env) => {
                let text = if env.last_error.is_empty() {
                    "Envelope expired".to_string()
                } else {
                    format!("Envelope expired: {}", env.last_error)
                };
                log_delivery(&env, "PermFail", &text);
                self.fail(links, lp, env, &text)
            }
            Err(_) => Ok(()),
        }
    }

    pub(super) fn remove(&self, env: &Envelope) {
        if let Err(e) = self.spool.remove_envelope(env.id) {
            log::warn!("warn: queue: cannot remove envelope {}: {e}", env.id);
        }
    }
}

fn tell(links: &mut Links, lp: &Loop, m: QueueScheduler) -> Result<(), String> {
    links.send(lp, Role::Scheduler, &m, Vec::new())
}

/// OpenSMTPD's mda_log line. The envelope's fields are printable (checked
/// when stored); the outcome text was cleaned by the runner.
fn log_delivery(env: &Envelope, result: &str, stat: &str) {
    let delay = now().saturating_sub(env.ctime);
    let user = env
        .dest
        .rsplit_once('@')
        .map_or(env.dest.as_str(), |(l, _)| l);
    // OpenSMTPD 6.8 writes rcpt=<> (the address as given) on every line.
    log::info!(
        "{:016x} mda delivery evpid={} from=<{}> to=<{}> rcpt=<{}> user={user} delay={} result={result} stat={}",
        env.id.get(),
        env.id,
        env.sender,
        env.dest,
        env.rcpt,
        crate::log::duration_text(delay),
        crate::log::escape(stat.as_bytes())
    );
}
