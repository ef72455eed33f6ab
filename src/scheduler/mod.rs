//! The scheduler role: decides when each envelope is tried again. Pledged
//! to "stdio" alone, chrooted in /var/empty. Today it learns of every
//! committed (or recovered) envelope from the queue and keeps the set;
//! retries, expiry and bounces come with the delivery issue. Their pure
//! logic (backoff, due and expired envelopes, delay notices, the smtpctl
//! operations) is [`schedule::Schedule`], which the role loop will own.

#![forbid(unsafe_code)]

pub mod schedule;

use crate::ipc::msg::{self, QueueScheduler};
use crate::proc::Role;
use crate::prologue::{serve, Setup};
use std::collections::HashSet;

/// Most envelopes the scheduler tracks; beyond this the queue is far
/// past any sane size, and refusing is better than exhausting memory.
const MAX_ENVELOPES: usize = 50_000_000;

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let mut envelopes: HashSet<u64> = HashSet::new();
    serve(
        setup.links,
        |_, _| Ok(()),
        |_, _, frames| {
            for f in frames {
                if f.peer != Role::Queue {
                    return Err(f.refuse(Role::Scheduler));
                }
                match f.decode::<QueueScheduler>()? {
                    QueueScheduler::Envelopes { ids } => {
                        if envelopes.len() + ids.len() > MAX_ENVELOPES {
                            return Err(format!(
                                "queue channel: more than {MAX_ENVELOPES} envelopes"
                            ));
                        }
                        envelopes.extend(ids.iter().copied());
                        log::debug!(
                            "debug: scheduler: {} new envelopes, {} in all",
                            ids.len(),
                            envelopes.len()
                        );
                    }
                    other => return Err(msg::unexpected(Role::Queue, &other)),
                }
            }
            Ok(())
        },
    )
}
