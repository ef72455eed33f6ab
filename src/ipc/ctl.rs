//! What smtpctl and the control role say to each other on
//! /var/run/smtpd.sock: one `Request` per frame from smtpctl, one or more
//! `Reply` frames back. The frames are the roles' own (`frame`: version,
//! length cap, total decoding), on a seqpacket socket, so a client's
//! bytes are decoded exactly like a peer role's, without trust: anything
//! that does not decode as a `Request` gets the client dropped.
//!
//! Every request is an administrator's: control answers `Denied` to any
//! uid but 0 (OpenSMTPD's control refuses the same imsgs to non-root).

use super::msg::Message;
use crate::spool::Kind;
use serde::{Deserialize, Serialize};

/// The path OpenSMTPD uses, which smtpctl and scripts expect.
pub const SOCKET_PATH: &str = "/var/run/smtpd.sock";

/// Envelopes per `Reply::Queue` frame: each is at most four fields of
/// `spool::envelope::MAX_FIELD` bytes and a few numbers, so 12 stay well
/// under the frame cap.
pub const QUEUE_CHUNK: usize = 12;

/// The deliveries and the listener smtpctl can pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Agent {
    Mda,
    Mta,
    Smtp,
}

/// The envelopes a command applies to: `<evpid>`, `<msgid>` or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Envelope(u64),
    Message(u32),
    All,
}

/// What a command does to the envelopes of a `Target` (the scheduler's
/// operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvelopeOp {
    Schedule,
    Remove,
    Pause,
    Resume,
}

/// smtpctl -> control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `show queue [msgid]`: `Reply::Queue` chunks, then `Reply::End`.
    ShowQueue {
        msgid: Option<u32>,
    },
    /// `show stats`: `Reply::Stats`.
    ShowStats,
    /// `show status`: `Reply::Status`.
    ShowStatus,
    /// `pause|resume mda|mta|smtp`: `Ok`, or `Fail` if already so.
    Pause(Agent),
    Resume(Agent),
    /// `schedule|remove|pause envelope|resume envelope`: `Count`.
    Envelopes {
        op: EnvelopeOp,
        target: Target,
    },
    /// `log brief|verbose`: `Ok`.
    Log {
        verbose: bool,
    },
    /// `stop`: `Ok`, then the daemon shuts down as on SIGTERM.
    Stop,
    /// `monitor`, once a second: `Reply::Stats` (the counters it shows).
    Digest,
    /// `update table <name>`, `trace|untrace|profile|unprofile <what>`,
    /// `discover`, `uncorrupt`: what this daemon cannot do is refused
    /// with `Fail` and a reason, never pretended.
    Unsupported {
        command: String,
    },
    /// sendmail: an SMTP session with the daemon, as OpenSMTPD's
    /// `IMSG_CTL_SMTP_SESSION`. Any user may ask: `Reply::Session` with
    /// one descriptor (a stream socket the dispatcher serves as the
    /// local enqueuer), or `Fail` while `pause smtp` holds.
    SmtpSession,
}

/// Where an envelope is in the scheduler (the `runstate` of a show
/// queue line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Waiting; tried next at this unix time.
    Pending { next_try: u64 },
    /// Handed to a delivery agent.
    InFlight,
}

/// The scheduler's part of a show queue line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    pub id: u64,
    pub state: RunState,
    pub suspended: bool,
}

/// One show queue line, as the queue fills it in from the envelope on
/// disk (which it reads as untrusted input) and the scheduler's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub sched: Scheduled,
    /// The client's address as stored ("192.0.2.1", "::1", "local").
    pub client: String,
    pub kind: Kind,
    /// The envelope's flags (`spool::Flags` bits).
    pub flags: u32,
    pub sender: String,
    pub rcpt: String,
    pub dest: String,
    pub ctime: u64,
    pub expire: u64,
    pub last_try: u64,
    pub retry: u32,
    pub last_error: String,
}

/// control -> smtpctl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// "command succeeded".
    Ok,
    /// "command failed[: reason]".
    Fail(Option<String>),
    /// Not root: "need root privileges".
    Denied,
    /// Some lines of `show queue`; more follow until `End`.
    Queue(Vec<QueueEntry>),
    End,
    /// `name=value` counters, in order (`uptime` in seconds since start).
    Stats(Vec<(String, u64)>),
    Status {
        mda_paused: bool,
        mta_paused: bool,
        smtp_paused: bool,
    },
    /// How many envelopes an `Envelopes` request changed.
    Count(u64),
    /// One descriptor: smtpctl's end of the SMTP session it asked for.
    Session,
}

impl Message for Request {
    fn name(&self) -> &'static str {
        match self {
            Request::ShowQueue { .. } => "ShowQueue",
            Request::ShowStats => "ShowStats",
            Request::ShowStatus => "ShowStatus",
            Request::Pause(_) => "Pause",
            Request::Resume(_) => "Resume",
            Request::Envelopes { .. } => "Envelopes",
            Request::Log { .. } => "Log",
            Request::Stop => "Stop",
            Request::Digest => "Digest",
            Request::Unsupported { .. } => "Unsupported",
            Request::SmtpSession => "SmtpSession",
        }
    }
}

impl Message for Reply {
    fn name(&self) -> &'static str {
        match self {
            Reply::Ok => "Ok",
            Reply::Fail(_) => "Fail",
            Reply::Denied => "Denied",
            Reply::Queue(_) => "Queue",
            Reply::End => "End",
            Reply::Stats(_) => "Stats",
            Reply::Status { .. } => "Status",
            Reply::Count(_) => "Count",
            Reply::Session => "Session",
        }
    }
    fn fds(&self) -> usize {
        match self {
            Reply::Session => 1,
            _ => 0,
        }
    }
}

/// Longest command name in `Unsupported` that control accepts.
pub const MAX_COMMAND: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{frame, msg};

    #[test]
    fn a_full_queue_chunk_fits_a_frame() {
        let big = "x".repeat(crate::spool::envelope::MAX_FIELD);
        let e = QueueEntry {
            sched: Scheduled {
                id: u64::MAX,
                state: RunState::Pending { next_try: u64::MAX },
                suspended: true,
            },
            client: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into(),
            kind: Kind::Relay,
            flags: u32::MAX,
            sender: big.clone(),
            rcpt: big.clone(),
            dest: big.clone(),
            ctime: u64::MAX,
            expire: u64::MAX,
            last_try: u64::MAX,
            retry: u32::MAX,
            last_error: big,
        };
        let r = Reply::Queue(vec![e; QUEUE_CHUNK]);
        assert!(frame::encode(&r, 0).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_request() {
        for bad in [
            &b""[..],
            b"\x01\x00\x00\x00\x01\x00\x00\x00\xff",
            &[0xff; 64],
        ] {
            assert!(msg::parse::<Request>(bad, 0).is_err());
        }
        let ok = frame::encode(&Request::ShowStats, 0).unwrap();
        assert_eq!(msg::parse::<Request>(&ok, 0).unwrap(), Request::ShowStats);
        assert!(
            msg::parse::<Request>(&ok, 1).is_err(),
            "a descriptor it does not carry"
        );
    }
}
