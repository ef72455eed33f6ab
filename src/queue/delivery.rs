//! The queue's side of delivery: the scheduler says which envelopes to
//! try; for a local one the queue reads the envelope back from the spool
//! (untrusted, A4), opens the message read-only and asks the parent, which
//! has the delivery runner do it as the user; the outcome comes back from
//! the parent, and the queue removes or updates the envelope before it
//! tells the scheduler. Every try is logged in OpenSMTPD's `mda delivery`
//! form.
//!
//! Not yet here (left for the relay issue): relayed envelopes are held
//! with a temporary failure. A failed or expired envelope bounces
//! ([`super::bounce`]).

use super::Queue;
use crate::delivery::Outcome;
use crate::event::Loop;
use crate::ipc::msg::{self, LocalRequest, QueueScheduler, ToParent};
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
        if env.kind != Kind::Local {
            return self.temp_fail(links, lp, env, "relaying is not implemented yet");
        }
        let file = match self.spool.open_message(evpid.msgid()) {
            Ok(f) => f,
            Err(e) => {
                let text = format!("cannot open the message: {e}");
                return self.temp_fail(links, lp, env, &text);
            }
        };
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
        match outcome {
            Outcome::Delivered => {
                log_delivery(&env, "Ok", "Delivered");
                self.delivered(links, lp, env)?;
                tell(links, lp, QueueScheduler::Delivered { id })
            }
            Outcome::TempFail(text) => self.temp_fail(links, lp, env, &text),
            Outcome::PermFail(text) => {
                log_delivery(&env, "PermFail", &text);
                self.fail(links, lp, env, &text)?;
                tell(links, lp, QueueScheduler::PermFailed { id })
            }
        }
    }

    /// Keep the envelope for the next try, its retry count and error
    /// written first (so a restart resumes the backoff).
    fn temp_fail(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        mut env: Envelope,
        text: &str,
    ) -> Result<(), String> {
        log_delivery(&env, "TempFail", text);
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
        duration_text(delay),
        crate::log::escape(stat.as_bytes())
    );
}

/// OpenSMTPD's duration_to_text: "1d2h3m4s", zero parts left out.
pub fn duration_text(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, part) in [
        ("d", secs / 86400),
        ("h", (secs % 86400) / 3600),
        ("m", (secs % 3600) / 60),
        ("s", secs % 60),
    ] {
        if part != 0 {
            out.push_str(&format!("{part}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_opensmtpd_prints_them() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(59), "59s");
        assert_eq!(duration_text(60), "1m");
        assert_eq!(duration_text(3661), "1h1m1s");
        assert_eq!(duration_text(2 * 86400 + 5), "2d5s");
    }
}
