//! The control role: serves smtpctl on /var/run/smtpd.sock (the socket and its commands come with the smtpctl issue). Runs chrooted in /var/empty as _smtpd.

#![forbid(unsafe_code)]

use crate::prologue::{idle_loop, Setup};

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    idle_loop(setup)
}
