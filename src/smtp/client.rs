//! The SMTP client protocol engine for one outgoing connection (the
//! "mta" of OpenSMTPD), without I/O.
//!
//! The driver (the dispatcher's event loop, the local LMTP delivery's
//! blocking loop, or a test) feeds it the server's bytes
//! (`Client::input`, any split) and its own decisions (`send_message`,
//! `tls_started`, `body_done`, `quit`, `timeout`, `abort`); the engine
//! returns `Event`s: bytes to send, the STARTTLS handshake to do,
//! a message body to stream, per-message results, and `Close`. No sockets,
//! no clocks: every behaviour is a function of the bytes and calls fed in.
//!
//! The pieces:
//! - `reply`: server replies cut into lines, strictly and with bounds;
//! - `ehlo`: the EHLO keywords as a `Capabilities` struct;
//! - `command`: MAIL FROM / RCPT TO lines, xtext checks, SASL payloads;
//! - `data`: the dot-stuffing encoder for the message body;
//! - `engine`: the session (banner, EHLO/HELO, STARTTLS, AUTH, QUIT) and
//!   `engine/tx.rs`: the transaction (RSET, MAIL, RCPT, DATA, the dot).
//!
//! Design decisions (see each module for the details):
//! - Reply text is untrusted (CVE-2020-8794 injected envelope fields
//!   through a multi-line reply): a reply line is at most `MAX_LINE` bytes
//!   with its line ending, a reply at most `MAX_REPLY_LINES` lines, every
//!   line carries the same valid code, and any byte that is not printable
//!   ASCII is replaced with `?` in the text handed out. Replacing (rather
//!   than failing) keeps sessions with servers that put UTF-8 in their
//!   replies working, while nothing but printable ASCII ever reaches a
//!   log line, a bounce or the queue.
//! - A reply is taken only for a command already sent when the bytes
//!   carrying it were read: anything else (bytes after the 220 to
//!   STARTTLS, a reply after the last one expected, any byte while the
//!   body is streamed) is unsolicited and fails the session.
//! - Credentials are never sent in the clear: AUTH without TLS fails the
//!   session instead.
//! - A session failure (protocol error, refused TLS or AUTH, timeout,
//!   disconnect, a 421) makes every recipient without a final answer
//!   `TempFail`: nothing accepted is ever lost, nothing refused is retried.

#![forbid(unsafe_code)]

mod command;
mod data;
mod ehlo;
mod engine;
mod reply;
#[cfg(test)]
mod tests;

use crate::smtp::address::Mailbox;

pub use super::server::{Notify, Password, Ret};
pub(crate) use command::base64;
pub use data::DotStuffer;
pub use ehlo::Capabilities;
pub use engine::Client;
pub use reply::Reply;

/// Longest reply line accepted, counted with its line ending.
pub const MAX_LINE: usize = 4096;
/// Most lines in one (multi-line) reply.
pub const MAX_REPLY_LINES: usize = 100;

/// When to use STARTTLS on a plain connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never (`tls no`).
    Never,
    /// When the server offers it; carry on in the clear otherwise.
    Opportunistic,
    /// Fail the session unless TLS is established.
    Required,
}

/// AUTH credentials for a relay (`auth <table>` on an action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Password,
}

/// How one session behaves; built by the driver per connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name we give in EHLO/HELO (`helo` of the action, or our
    /// hostname). Anything but one printable token becomes `localhost`.
    pub helo: String,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// The connection is already encrypted (smtps).
    pub tls_active: bool,
    /// Authenticate with these, after TLS.
    pub auth: Option<Credentials>,
    /// Speak LMTP (RFC 2033): LHLO, and one reply per accepted recipient
    /// after the message.
    pub lmtp: bool,
    /// Use PIPELINING when the server offers it. The local LMTP delivery
    /// does not, so that, as OpenSMTPD's mail.lmtp, it sends DATA only
    /// once a recipient was accepted.
    pub pipelining: bool,
    /// Send only the local part of each recipient in RCPT TO: the local
    /// LMTP delivery without `rcpt-to` gives the user's login name
    /// (mail.lmtp -u), which is no address.
    pub rcpt_local_part: bool,
}

impl Config {
    /// Opportunistic TLS, no AUTH, greeting as `helo`.
    pub fn new(helo: &str) -> Config {
        Config {
            helo: helo.to_string(),
            tls: TlsPolicy::Opportunistic,
            tls_active: false,
            auth: None,
            lmtp: false,
            pipelining: true,
            rcpt_local_part: false,
        }
    }
}

/// One recipient of a message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub addr: Mailbox,
    /// DSN `NOTIFY=`, sent when the server offers DSN.
    pub notify: Option<Notify>,
    /// DSN `ORCPT=` as `addr-type;xtext`, sent when the server offers DSN
    /// and it is valid (an invalid one is left out, never sent raw).
    pub orcpt: Option<String>,
}

/// A message to send on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The driver's tag, given back in `SendBody` and `Done`.
    pub id: u64,
    /// `None` is the null path `<>` (bounces).
    pub mail_from: Option<Mailbox>,
    /// The message size, for `SIZE=` and the server's limit; 0 when not
    /// known (the local LMTP delivery streams what it is given): no
    /// `SIZE=` then.
    pub size: u64,
    /// The body has 8-bit bytes: needs 8BITMIME.
    pub body_8bit: bool,
    /// The message needs SMTPUTF8 (also implied by a non-ASCII address).
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, xtext; left out when not valid xtext.
    pub envid: Option<String>,
    pub rcpts: Vec<Recipient>,
}

/// The fate of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took the message for this recipient (final DATA reply).
    Ok(Reply),
    /// Try again later.
    TempFail(Reply),
    /// Bounce.
    PermFail(Reply),
}

/// What the engine asks of the driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes to write: one or more CRLF-terminated command lines.
    Send(Vec<u8>),
    /// Write the preceding bytes, do the TLS handshake, then call
    /// `tls_started` (or `disconnected` if it fails).
    StartTls,
    /// The server said 354 for this message: stream its body through a
    /// `DotStuffer` (which ends it with `.`), then call `body_done`.
    SendBody { id: u64 },
    /// A message is finished: one outcome per recipient, in order.
    Done { id: u64, outcomes: Vec<Outcome> },
    /// Nothing to do: hand in a message or call `quit`.
    Idle,
    /// The session failed, for this reason (for the log). It follows the
    /// `Done` of every unfinished message, and `Close` follows it.
    Error(String),
    /// Write the preceding bytes, then close the connection.
    Close,
}
