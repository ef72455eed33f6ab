//! The scheduler role: decides when each envelope is tried. Pledged to
//! "stdio" alone, chrooted in /var/empty, it holds no envelope, only the
//! schedule ([`schedule::Schedule`]: OpenSMTPD's backoff, expiry, delay
//! notices and the smtpctl operations). The queue tells it of every
//! committed or recovered envelope and of how each try ended; it tells the
//! queue which envelopes to try now and which expired.

#![forbid(unsafe_code)]

mod control;
pub mod schedule;

use crate::config::view::View;
use crate::event::Loop;
use crate::ipc::msg::{self, QueueScheduler};
use crate::proc::Role;
use crate::prologue::{run_service, Frame, Links, Service, Setup};
use crate::spool::{unix_now, Kind};
use schedule::{Retry, Schedule};
use std::time::{Duration, Instant};

/// Most envelopes the scheduler tracks; beyond this the queue is far
/// past any sane size, and refusing is better than exhausting memory.
const MAX_ENVELOPES: usize = 50_000_000;
/// Envelopes handed to the queue per turn (OpenSMTPD batches too).
const BATCH: usize = 256;
/// Ids per frame (well under the frame cap).
const IDS_PER_FRAME: usize = 4096;

struct Scheduler {
    schedule: Schedule,
    /// When the next tick is due (monotonic), from the schedule's
    /// wall-clock next_wakeup.
    wakeup: Option<Instant>,
}

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Scheduler(view) = setup.view.get() else {
        return Err("not a scheduler view".into());
    };
    let warn: Vec<u64> = view.queue.bounce_warn.iter().map(|d| d.as_secs()).collect();
    let mut s = Scheduler {
        schedule: Schedule::new(MAX_ENVELOPES, &warn),
        wakeup: None,
    };
    if view.pause_mda {
        s.schedule.pause_kind(Kind::Local);
        log::info!("info: scheduler: local deliveries paused (-P mda)");
    }
    if view.pause_mta {
        s.schedule.pause_kind(Kind::Relay);
        log::info!("info: scheduler: relaying paused (-P mta)");
    }
    run_service(setup.links, &mut s)
}

impl Service for Scheduler {
    fn frames(&mut self, links: &mut Links, lp: &Loop, frames: Vec<Frame>) -> Result<(), String> {
        let t = unix_now();
        for f in frames {
            if f.peer == Role::Control {
                self.control_frame(links, lp, f)?;
                continue;
            }
            if f.peer != Role::Queue {
                return Err(f.refuse(Role::Scheduler));
            }
            match f.decode::<QueueScheduler>()? {
                QueueScheduler::Envelopes { entries } => {
                    for (id, entry) in entries {
                        // A duplicate (recovery racing a commit cannot
                        // happen; a hostile queue could) is ignored.
                        if let Err(e) = self.schedule.insert(id, entry) {
                            if self.schedule.len() >= MAX_ENVELOPES {
                                return Err(format!(
                                    "queue channel: {e:?}: over {MAX_ENVELOPES} envelopes"
                                ));
                            }
                        }
                    }
                }
                QueueScheduler::Delivered { id } | QueueScheduler::PermFailed { id } => {
                    self.schedule.done(id);
                }
                QueueScheduler::TempFailed { id } => match self.schedule.temp_fail(id, t) {
                    Some(Retry::Later {
                        next_try,
                        retry,
                        warn,
                    }) => {
                        log::debug!(
                            "debug: scheduler: {id:016x} try {retry} in {} s",
                            next_try.saturating_sub(t)
                        );
                        if let Some(w) = warn {
                            let m = QueueScheduler::Delayed {
                                id,
                                delay: w.delay,
                                mark: w.mark,
                                ttl: w.ttl,
                            };
                            links.send(lp, Role::Queue, &m, Vec::new())?;
                        }
                    }
                    // Removed by smtpctl while it was tried: it leaves
                    // the spool now.
                    Some(Retry::Removed) => {
                        let m = QueueScheduler::Remove { ids: vec![id] };
                        links.send(lp, Role::Queue, &m, Vec::new())?;
                    }
                    None => {}
                },
                other => return Err(msg::unexpected(Role::Queue, &other)),
            }
        }
        self.run_due(links, lp)
    }

    fn deadline(&self) -> Option<Instant> {
        self.wakeup
    }

    fn tick(&mut self, links: &mut Links, lp: &Loop) -> Result<(), String> {
        self.run_due(links, lp)
    }
}

impl Scheduler {
    /// Hand out what expired and what is due, and set the next wake-up.
    fn run_due(&mut self, links: &mut Links, lp: &Loop) -> Result<(), String> {
        let t = unix_now();
        loop {
            let ids = self.schedule.expired(t, BATCH);
            if ids.is_empty() {
                break;
            }
            send_ids(links, lp, &ids, |ids| QueueScheduler::Expired { ids })?;
        }
        let ids = self.schedule.due(t, BATCH);
        send_ids(links, lp, &ids, |ids| QueueScheduler::Deliver { ids })?;
        // More may be due at once: come back without waiting (but never
        // spin on something due that was not handed out).
        self.wakeup = match self.schedule.next_wakeup() {
            Some(w) if w <= t && ids.is_empty() => Some(Instant::now() + Duration::from_secs(1)),
            Some(w) if w <= t => Some(Instant::now()),
            Some(w) => Some(Instant::now() + Duration::from_secs(w - t)),
            None => None,
        };
        Ok(())
    }
}

fn send_ids(
    links: &mut Links,
    lp: &Loop,
    ids: &[u64],
    make: impl Fn(Vec<u64>) -> QueueScheduler,
) -> Result<(), String> {
    for chunk in ids.chunks(IDS_PER_FRAME) {
        links.send(lp, Role::Queue, &make(chunk.to_vec()), Vec::new())?;
    }
    Ok(())
}
