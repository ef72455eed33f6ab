//! The lka (look-up agent) role: tables, aliases, DNS/MX, the match rules and filters (each comes with its issue). The only role without a chroot; Landlock/unveil limit it to the paths in its table row.

#![forbid(unsafe_code)]

pub mod auth;
pub mod policy;
pub mod table;

use crate::prologue::{idle_loop, Setup};

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    idle_loop(setup)
}
