//! The queue role: the only writer of the spool, chrooted in /var/spool/smtpd as _smtpq (the on-disk queue comes with the receive issue).

#![forbid(unsafe_code)]

use crate::prologue::{idle_loop, Setup};

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    idle_loop(setup)
}
