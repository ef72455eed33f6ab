//! smtpd-rs: a privilege-separated SMTP daemon.
//!
//! The file list is the architecture:
//! - `proc`: the role table (user, chroot, unveil, promises, entry) and the
//!   fork + execve that starts each role; `prologue`: the one sequence every
//!   role runs before it reads untrusted input.
//! - `parent`, `control`, `lka`, `queue`, `scheduler`, `ca`, `dispatcher`:
//!   one module per process, named as in OpenSMTPD.
//! - `ipc`: frames, channels and one message enum per channel.
//! - `config`: smtpd.conf and the per-role views sent to each process.
//! - `smtp`: the SMTP protocol engine and mail addresses, without I/O.
//! - `spool`: the on-disk queue format and its durable commit.
//! - `bounce`: the delivery status notifications sent back to senders.
//! - `smtpctl`: the administrator's tool, a client of the control role.
//! - `event`: the mio loop, timers and signals.
//! - `log`: OpenSMTPD-style `key=value` lines to syslog or stderr.
//! - `sys`: the only module allowed `unsafe`: system calls std lacks.
//!
//! Every module but `sys` forbids unsafe code; lint levels inherit, so the
//! attribute on each top-level module covers its children.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod sys;

pub mod bounce;
pub mod ca;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dispatcher;
pub mod event;
pub mod ipc;
pub mod lka;
pub mod log;
pub mod parent;
pub mod proc;
pub mod prologue;
pub mod queue;
pub mod scheduler;
pub mod smtp;
pub mod smtpctl;
pub mod spool;
pub mod srs;

/// The version printed in logs and banners.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
