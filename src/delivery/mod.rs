//! Local delivery: writing one message for one local user, by the
//! methods of smtpd.conf's actions (maildir, mbox, lmtp, mda).
//!
//! The code here runs in a short-lived process that the parent forked
//! for one delivery and that has already become the user (groups, gid
//! and uid set with no way back): whatever it writes has the user's
//! ownership and the user's permissions, never root's. It reads the
//! message from the descriptor it was given (the spool file, CRLF line
//! endings, as received) and reports an [`Outcome`].

#![forbid(unsafe_code)]

pub mod format;
pub mod lmtp;
pub mod maildir;
pub mod mbox;
pub mod mda;
pub mod message;
pub mod offline;
pub mod runner;

#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;

/// How one delivery attempt ended. Temporary failures are retried by the
/// scheduler; permanent ones bounce to the sender at once.
/// It also travels, as it is, from the runner to the queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Delivered,
    /// Disk full, quota, lock busy, a 4xx from an LMTP server, a timeout.
    TempFail(String),
    /// No such mailbox, a 5xx, a command that says so.
    PermFail(String),
}

/// Who the message is for and where it came from: what every method
/// needs besides the message itself. All strings were checked when the
/// envelope was stored (printable, capped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The envelope sender (MAIL FROM), "" for a bounce.
    pub sender: String,
    /// The address the client gave (RCPT TO), user@domain.
    pub rcpt: String,
    /// The address after expansion (aliases, virtual), user@domain.
    pub dest: String,
    /// The local user's login name, home directory, uid and gid.
    pub user: String,
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// This host's name (Maildir file names, headers).
    pub hostname: String,
}
