//! The SMTP server protocol engine for one session, without I/O.
//!
//! The dispatcher feeds it the client's bytes (`Server::input`, any split)
//! and the results of the lookups it asked for (`Server::answer`); the
//! engine returns `Event`s: replies to send, questions for the glue
//! (`Need*`), message bytes to store, and `Close`. No sockets, no clocks, no
//! files: every behaviour is a function of the bytes and answers fed in, so
//! it is tested and fuzzed without a network.
//!
//! The pieces:
//! - `command`: one command line to a verb and typed arguments;
//! - `body`: the DATA (dot-terminated) and BDAT (counted) message readers,
//!   with the limits that are counted on the message itself;
//! - `auth`: base64 and the AUTH PLAIN / LOGIN responses;
//! - `engine`: the session state machine that ties them together
//!   (`engine/mail.rs`: the transaction; `engine/security.rs`: STARTTLS
//!   and AUTH);
//! - `received`: the `Received:` header the glue writes first.
//!
//! Design decisions (see each module for the details):
//! - Only `CRLF.CRLF` ends DATA. A bare CR or bare LF anywhere in a DATA
//!   body (or a non-BINARYMIME BDAT body) makes the message refused (550
//!   5.6.0) once its real end arrives; it never ends the message, and
//!   nothing after it is read as a command (SMTP smuggling, A11). A stored
//!   message is therefore always a sequence of CRLF-terminated lines, which
//!   our SMTP client can relay to any server without re-encoding.
//! - A message line longer than `max_line` (counted raw, with its CRLF)
//!   refuses the message (550 5.6.0) but keeps the session: the readers
//!   stream, so memory does not depend on line length, and a refusal keeps
//!   every stored line within the bound the line-based filter protocol and
//!   our own relaying rely on.
//! - Size and hop-count limits are counted on the stored bytes while they
//!   stream; the message is discarded at once (`DataAbort`) and refused
//!   after its end.

#![forbid(unsafe_code)]

mod auth;
mod body;
mod command;
mod engine;
mod received;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

pub use command::{Body, MailParams, Notify, RcptParams, Ret};
pub use engine::Server;
pub use received::{received_header, Received};

/// Bad commands (and refused MAIL, DATA or AUTH) before the session is
/// closed with a 421.
pub const MAX_ERRORS: u32 = 10;
/// NOOP, RSET, VRFY, EXPN and HELP a session may send before each further
/// one counts as an error (Postfix's `smtpd_junk_command_limit`).
pub const MAX_JUNK: u32 = 100;
/// `Received:` headers a message may carry; one more is a mail loop.
pub const MAX_HOPS: u32 = 100;
/// Input buffered beyond `max_line` while the engine waits for an answer;
/// more closes the session with a 421. The glue stays under it by not
/// reading while `wants_input()` is false and passing at most 64 KiB to
/// each `input` call.
pub const INPUT_SLACK: usize = 128 * 1024;

/// Whether a listener offers or demands AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// No AUTH on this listener.
    None,
    /// `auth-optional`: AUTH offered, MAIL allowed without it.
    Optional,
    /// `auth`: MAIL refused until the client authenticated.
    Required,
}

/// What one session may do; built by the glue per session.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name in the banner and replies (the listener's `hostname`).
    pub hostname: String,
    /// The client's address, shown in the HELO/EHLO reply; `None` for a
    /// local (unix socket) client.
    pub peer: Option<IpAddr>,
    /// Longest line, counted on raw bytes with its line ending (65535).
    pub max_line: usize,
    /// Recipients tried per transaction (1000).
    pub max_rcpt: usize,
    /// Transactions (accepted MAIL commands) per session (100).
    pub max_mails: usize,
    /// Largest message, in stored bytes (35 MiB).
    pub max_message_size: u64,
    /// STARTTLS is offered (a pki is configured for the listener).
    pub tls_available: bool,
    /// `tls-require`: no MAIL, RCPT, DATA, BDAT or AUTH before TLS.
    pub tls_required: bool,
    /// The connection is encrypted (smtps, or after `tls_started`).
    pub tls_active: bool,
    /// AUTH on this listener.
    pub auth: AuthPolicy,
    /// AUTH may be offered without TLS (by default it is offered only
    /// once the connection is encrypted).
    pub auth_plaintext_ok: bool,
    /// DSN (RFC 3461) is offered; `no-dsn` turns it off.
    pub dsn: bool,
    /// SMTPUTF8 (RFC 6531) is offered.
    pub smtputf8: bool,
    /// CHUNKING / BDAT (RFC 3030) is offered.
    pub chunking: bool,
    /// PIPELINING (RFC 2920) is advertised. Commands sent together are
    /// answered in order either way.
    pub pipelining: bool,
}

impl Config {
    /// The defaults OpenSMTPD uses, for a listener named `hostname`.
    pub fn new(hostname: &str) -> Config {
        Config {
            hostname: hostname.to_string(),
            peer: None,
            max_line: 65535,
            max_rcpt: 1000,
            max_mails: 100,
            max_message_size: 35 * 1024 * 1024,
            tls_available: false,
            tls_required: false,
            tls_active: false,
            auth: AuthPolicy::None,
            auth_plaintext_ok: false,
            dsn: true,
            smtputf8: true,
            chunking: true,
            pipelining: true,
        }
    }
}

/// SASL mechanisms offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMech {
    Plain,
    Login,
}

/// A password from the client; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub Vec<u8>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Why a message being received must be discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// Larger than `max_message_size` (refused with 552 5.3.4 at its end).
    TooBig,
    /// More than `MAX_HOPS` `Received:` headers (554 5.4.6 at its end).
    Loop,
    /// A bare CR or LF in the message (550 5.6.0 at its end).
    BareNewline,
    /// A line longer than `max_line` (550 5.6.0 at its end).
    LineTooLong,
    /// RSET, or EHLO/HELO, between BDAT chunks.
    Reset,
    /// QUIT, a 421, a timeout or a disconnect.
    SessionEnd,
}

/// What the engine asks of the glue, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes to send: one or more CRLF-terminated reply lines.
    Reply(Vec<u8>),
    /// HELO or EHLO accepted with this (validated) name.
    Helo { name: String, esmtp: bool },
    /// Is this sender acceptable? Answer with `Answer::Mail`. A new
    /// transaction starts with each `NeedMail`.
    NeedMail { path: String, params: MailParams },
    /// Is this recipient acceptable? Answer with `Answer::Rcpt`.
    NeedRcpt { path: String, params: RcptParams },
    /// Open the message file; answer with `Answer::DataReady`.
    NeedData,
    /// Check these credentials; answer with `Answer::Auth` (after a delay
    /// when they are wrong).
    NeedAuth {
        mech: AuthMech,
        user: String,
        password: Password,
    },
    /// Message bytes to append: dot-unstuffed, CRLF line endings as sent.
    Data(Vec<u8>),
    /// The message is complete and within the limits: commit it (fsync)
    /// and answer with `Answer::Committed`.
    DataEnd { size: u64 },
    /// Discard the message being received; no `DataEnd` will follow.
    DataAbort { reason: AbortReason },
    /// The transaction begun by an accepted MAIL ended without a `DataEnd`
    /// (RSET, EHLO, a refused message, the end of the session).
    TxReset,
    /// The 220 to STARTTLS is in the preceding replies: send them in the
    /// clear, then start the TLS handshake and call `tls_started`.
    StartTls,
    /// Send the preceding replies, then close the connection.
    Close,
    /// A line for the log: `key=value` fields, peer text escaped. The glue
    /// prefixes the session id, as in `%016x smtp <line>`.
    Log(String),
}

/// The glue's answer to the last `Need*` event. An `Err` holds one reply
/// line without CRLF, such as `550 5.7.1 Relaying denied`; a 421 also
/// closes the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Mail(Result<(), String>),
    Rcpt(Result<(), String>),
    DataReady(Result<(), String>),
    /// `Ok` carries the queue id for the 250 reply.
    Committed(Result<String, String>),
    Auth(bool),
}
