//! The scheduler role: decides when each envelope is tried again. Pledged to "stdio" alone, chrooted in /var/empty.

#![forbid(unsafe_code)]

use crate::prologue::{idle_loop, Setup};

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    idle_loop(setup)
}
