//! The scheduler's side of smtpctl: list the schedule for `show queue`,
//! apply `schedule`, `remove`, `pause|resume envelope` and `pause|resume
//! mda|mta`, and report its counters. Envelopes removed here leave the
//! spool too: the queue is told to delete them.

use super::schedule::{self, State};
use super::Scheduler;
use crate::event::Loop;
use crate::ipc::ctl::{EnvelopeOp, RunState, Scheduled, Target};
use crate::ipc::msg::{self, ControlScheduler, QueueScheduler};
use crate::proc::Role;
use crate::prologue::{Frame, Links};
use crate::spool::unix_now;

/// Most entries control may ask for at once (a show queue chunk).
const MAX_LIST: u32 = crate::ipc::ctl::QUEUE_CHUNK as u32;

impl Scheduler {
    /// A frame from control.
    pub(super) fn control_frame(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        f: Frame,
    ) -> Result<(), String> {
        let reply = match f.decode::<ControlScheduler>()? {
            ControlScheduler::List {
                req,
                after,
                msgid,
                max,
            } => {
                let (found, more) = self.schedule.list(after, msgid, max.min(MAX_LIST) as usize);
                let entries = found
                    .into_iter()
                    .map(|(id, e)| Scheduled {
                        id,
                        state: match e.state {
                            State::Pending => RunState::Pending {
                                next_try: e.next_try,
                            },
                            State::InFlight => RunState::InFlight,
                        },
                        suspended: e.suspended,
                    })
                    .collect();
                ControlScheduler::Listed { req, entries, more }
            }
            ControlScheduler::Apply { req, op, target } => {
                let target = match target {
                    Target::Envelope(id) => schedule::Target::Envelope(id),
                    Target::Message(m) => schedule::Target::Message(m),
                    Target::All => schedule::Target::All,
                };
                let count = match op {
                    EnvelopeOp::Schedule => self.schedule.schedule(target, unix_now()),
                    EnvelopeOp::Pause => self.schedule.pause(target),
                    EnvelopeOp::Resume => self.schedule.resume(target),
                    EnvelopeOp::Remove => {
                        let r = self.schedule.remove(target);
                        let count = r.gone.len() + r.marked;
                        for ids in r.gone.chunks(super::IDS_PER_FRAME) {
                            let m = QueueScheduler::Remove { ids: ids.to_vec() };
                            links.send(lp, Role::Queue, &m, Vec::new())?;
                        }
                        count
                    }
                };
                log::debug!("debug: scheduler: smtpctl {op:?} {target:?}: {count} envelopes");
                ControlScheduler::Applied {
                    req,
                    count: count as u64,
                }
            }
            ControlScheduler::PauseKind { kind, paused } => {
                // control logs it, as OpenSMTPD's does.
                if paused {
                    self.schedule.pause_kind(kind);
                } else {
                    self.schedule.resume_kind(kind);
                }
                return self.run_due(links, lp);
            }
            ControlScheduler::Stats { req } => ControlScheduler::StatsAre {
                req,
                stats: vec![
                    ("scheduler.envelope".into(), self.schedule.len() as u64),
                    (
                        "scheduler.envelope.inflight".into(),
                        self.schedule.in_flight() as u64,
                    ),
                ],
            },
            other => return Err(msg::unexpected(Role::Control, &other)),
        };
        links.send(lp, Role::Control, &reply, Vec::new())?;
        // `schedule` may have made envelopes due now.
        self.run_due(links, lp)
    }
}
