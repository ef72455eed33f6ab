//! The ca role: holds the TLS private keys and signs for the dispatcher, so a compromised dispatcher never sees a key (comes with the receive issue). Pledged to "stdio" alone.

#![forbid(unsafe_code)]

use crate::prologue::{idle_loop, Setup};

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    idle_loop(setup)
}
