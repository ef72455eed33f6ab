//! The messages, one enum per channel.
//!
//! A role decodes what arrives on a channel with that channel's enum only,
//! so a message another channel carries does not decode: "a type the
//! channel does not carry" is a decode error like any other, and ends the
//! channel. Each message states how many descriptors travel with it; the
//! channel checks that count on both send and receive.
//!
//! The channels between roles are OpenSMTPD's pairs. Each starts with the
//! `Hello` with which each end proves who it is once sandboxed; a pair's
//! enum grows the messages of the work it does (control <-> lka and ca
//! carry nothing more yet). smtpctl's own protocol with control is in
//! `ctl`.

use crate::delivery::Outcome;
use crate::proc::Role;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// What every message enum provides to the channel code.
pub trait Message: Serialize + DeserializeOwned {
    /// The variant's name, for log lines.
    fn name(&self) -> &'static str;
    /// How many descriptors travel with this message.
    fn fds(&self) -> usize {
        0
    }
}

/// Decode a received frame as one message of the channel's enum `M`, and
/// check that exactly the descriptors that message carries came with it.
/// Every received frame goes through here.
pub fn parse<M: Message>(packet: &[u8], nfds: usize) -> Result<M, super::frame::FrameError> {
    let m: M = super::frame::parse(packet, nfds)?;
    if m.fds() != nfds {
        return Err(super::frame::FrameError::FdsUnexpected {
            message: m.name(),
            expected: m.fds(),
            actual: nfds,
        });
    }
    Ok(m)
}

/// Parent to any role, during start-up and shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromParent {
    /// A piece of the role's serialized config view (`config::view`).
    ConfigChunk(Vec<u8>),
    /// The end of the view: its total length, checked by the role.
    ConfigEnd { len: u64 },
    /// One descriptor: this role's end of the channel to `peer`.
    Peer { peer: Role },
    /// One descriptor: a bound, listening socket (dispatcher: SMTP
    /// listeners, by index into its view; control: the control socket).
    Listener { index: u32 },
    /// To lka, one descriptor: its channel to the delivery runner, on
    /// which it asks for `~/.forward` files.
    RunnerChannel,
    /// Everything has been sent: sandbox yourself and run.
    Start,
    /// Exit now, cleanly.
    Shutdown,
    /// To queue: how the local delivery of envelope `id` ended.
    DeliveryDone { id: u64, outcome: Outcome },
    /// `smtpctl log verbose|brief`: write debug lines, or stop.
    Verbose { on: bool },
}

impl Message for FromParent {
    fn name(&self) -> &'static str {
        match self {
            FromParent::ConfigChunk(_) => "ConfigChunk",
            FromParent::ConfigEnd { .. } => "ConfigEnd",
            FromParent::Peer { .. } => "Peer",
            FromParent::Listener { .. } => "Listener",
            FromParent::RunnerChannel => "RunnerChannel",
            FromParent::Start => "Start",
            FromParent::Shutdown => "Shutdown",
            FromParent::DeliveryDone { .. } => "DeliveryDone",
            FromParent::Verbose { .. } => "Verbose",
        }
    }
    fn fds(&self) -> usize {
        match self {
            FromParent::Peer { .. } | FromParent::Listener { .. } | FromParent::RunnerChannel => 1,
            _ => 0,
        }
    }
}

/// Any role to the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToParent {
    /// Sandboxed and running: the start handshake's answer.
    Ready { role: Role },
    /// From queue, with the message file (read-only): deliver envelope
    /// `id` locally by its action. The parent picks the method from its
    /// own config and has the delivery runner do it as the user.
    Deliver(LocalRequest),
    /// From control (`smtpctl stop`): shut down as on SIGTERM.
    Stop,
    /// From control (`smtpctl log verbose|brief`): pass it to every
    /// process.
    Verbose { on: bool },
}

/// Whose `~/.forward` lka wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub user: String,
    pub uid: u32,
    pub home: String,
}

/// A `~/.forward`: none, its text, or why it was not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    Missing,
    Content(String),
    Refused { reason: String, temporary: bool },
}

impl Message for ToParent {
    fn name(&self) -> &'static str {
        match self {
            ToParent::Ready { .. } => "Ready",
            ToParent::Deliver(_) => "Deliver",
            ToParent::Stop => "Stop",
            ToParent::Verbose { .. } => "Verbose",
        }
    }
    fn fds(&self) -> usize {
        match self {
            ToParent::Deliver(_) => 1,
            _ => 0,
        }
    }
}

/// What the queue says of an envelope to deliver locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRequest {
    pub id: u64,
    /// The matched rule's action, by name.
    pub action: String,
    pub sender: String,
    pub rcpt: String,
    pub dest: String,
    /// The user lka resolved ("" for: the destination's local part), and
    /// a file or command that replaces the action's method.
    pub user: String,
    pub target: Option<crate::spool::LocalTarget>,
    pub account: Option<crate::spool::LocalAccount>,
}

/// How a local delivery writes: the action's method, as the parent
/// resolved it from its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalMethod {
    Mbox,
    /// `maildir [path] [junk]`; the path may start with `~/` and hold
    /// `%{user.username}` and `%{user.directory}`.
    Maildir {
        path: Option<String>,
        junk: bool,
    },
    /// `mda "command"`: run by /bin/sh as the user.
    Mda {
        command: String,
    },
    /// An alias's or `.forward`'s `/path`: appended in mbox format.
    File {
        path: String,
    },
    /// `lmtp host:port|/socket [rcpt-to]`.
    Lmtp {
        dest: String,
        rcpt_to: bool,
    },
}

/// One delivery for the runner: whom to become, and how to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalJob {
    pub id: u64,
    /// The local user to deliver as (login name), and its uid, gid and
    /// home when it is a `userbase` user rather than a system one.
    pub user: String,
    pub account: Option<crate::spool::LocalAccount>,
    pub method: LocalMethod,
    pub sender: String,
    pub rcpt: String,
    pub dest: String,
    pub hostname: String,
}

/// Parent to the delivery runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRunner {
    /// From the parent, with the message file.
    Run(LocalJob),
    /// From the parent, first, with one descriptor: the channel on which
    /// lka asks for `~/.forward` files (and for nothing else).
    LkaChannel,
    /// From lka: read this user's `~/.forward`, as root, with
    /// lka::forward's checks; the answer is FromRunner::Forward.
    ReadForward(ForwardRequest),
    /// From the parent, once, when the roles are started: enqueue what
    /// sendmail left in the offline queue, each message by running this
    /// smtpctl (the one beside smtpd) as `sendmail -S` as its owner.
    Offline {
        smtpctl: String,
    },
    Shutdown,
}

impl Message for ToRunner {
    fn name(&self) -> &'static str {
        match self {
            ToRunner::Run(_) => "Run",
            ToRunner::ReadForward(_) => "ReadForward",
            ToRunner::LkaChannel => "LkaChannel",
            ToRunner::Offline { .. } => "Offline",
            ToRunner::Shutdown => "Shutdown",
        }
    }
    fn fds(&self) -> usize {
        match self {
            ToRunner::Run(_) | ToRunner::LkaChannel => 1,
            ToRunner::ReadForward(_) | ToRunner::Offline { .. } | ToRunner::Shutdown => 0,
        }
    }
}

/// The delivery runner to the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRunner {
    Done { id: u64, outcome: Outcome },
    Forward(ForwardReply),
}

impl Message for FromRunner {
    fn name(&self) -> &'static str {
        match self {
            FromRunner::Done { .. } => "Done",
            FromRunner::Forward(_) => "Forward",
        }
    }
}

/// Declares the enum of one role-to-role channel.
macro_rules! link {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            /// The first frame each end sends once sandboxed: who it is.
            Hello { from: Role },
        }

        impl Message for $name {
            fn name(&self) -> &'static str {
                match self {
                    $name::Hello { .. } => "Hello",
                }
            }
        }

        impl Link for $name {
            fn hello(from: Role) -> Self {
                $name::Hello { from }
            }
            fn as_hello(&self) -> Option<Role> {
                match self {
                    $name::Hello { from } => Some(*from),
                }
            }
        }
    };
}

/// The error for a well-formed message a role does not take on the
/// channel from `peer`: a second Hello is named as such.
pub fn unexpected<M: Link>(peer: Role, m: &M) -> String {
    match m.as_hello() {
        Some(from) => format!("{peer} channel: undecodable payload: second Hello from {from}"),
        None => format!("{peer} channel: unexpected {}", m.name()),
    }
}

/// What the start-up code needs of every role-to-role enum.
pub trait Link: Message {
    fn hello(from: Role) -> Self;
    fn as_hello(&self) -> Option<Role>;
}

link!(
    /// control <-> lka: table updates, lookups for smtpctl.
    ControlLka
);
/// control <-> queue: the envelopes behind `smtpctl show queue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlQueue {
    Hello {
        from: Role,
    },
    /// control -> queue: read these envelopes (at most
    /// `ctl::QUEUE_CHUNK`) for a show queue.
    Describe {
        req: u64,
        entries: Vec<super::ctl::Scheduled>,
    },
    /// queue -> control: those still in the spool, in the same order.
    Described {
        req: u64,
        entries: Vec<super::ctl::QueueEntry>,
    },
}

/// control <-> scheduler: what the schedule holds, and smtpctl's
/// operations on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlScheduler {
    Hello {
        from: Role,
    },
    /// control -> scheduler: up to `max` envelopes with ids above
    /// `after` (of message `msgid` only, if given), in id order.
    List {
        req: u64,
        after: u64,
        msgid: Option<u32>,
        max: u32,
    },
    /// scheduler -> control: the next envelopes; `more` if any are left.
    Listed {
        req: u64,
        entries: Vec<super::ctl::Scheduled>,
        more: bool,
    },
    /// control -> scheduler: schedule, remove, pause or resume envelopes.
    Apply {
        req: u64,
        op: super::ctl::EnvelopeOp,
        target: super::ctl::Target,
    },
    /// scheduler -> control: how many envelopes it changed.
    Applied {
        req: u64,
        count: u64,
    },
    /// control -> scheduler: `smtpctl pause|resume mda|mta`.
    PauseKind {
        kind: crate::spool::Kind,
        paused: bool,
    },
    /// control -> scheduler: its counters for `show stats`.
    Stats {
        req: u64,
    },
    /// scheduler -> control
    StatsAre {
        req: u64,
        stats: Vec<(String, u64)>,
    },
}

/// control <-> dispatcher: `smtpctl pause|resume smtp`, and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlDispatcher {
    Hello {
        from: Role,
    },
    /// control -> dispatcher: stop accepting on the listeners, or
    /// accept again. Sessions already open go on.
    PauseSmtp {
        paused: bool,
    },
    /// control -> dispatcher: its counters for `show stats`.
    Stats {
        req: u64,
    },
    /// control -> dispatcher, one descriptor: a stream socket on which
    /// sendmail (smtpctl) of user `uid` speaks SMTP; served as a session
    /// on the local socket (`listen on socket`, `from local`).
    Enqueue {
        uid: u32,
    },
    /// dispatcher -> control
    StatsAre {
        req: u64,
        stats: Vec<(String, u64)>,
    },
}
link!(
    /// control <-> ca: log verbosity, profiling.
    ControlCa
);
/// lka <-> queue: where a bounce goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LkaQueue {
    Hello {
        from: Role,
    },
    /// queue -> lka: route a bounce to `rcpt` (the failed message's
    /// sender) as a local, internal message from the null sender.
    Bounce {
        req: u64,
        rcpt: String,
    },
    /// lka -> queue: what it expands to, or why it goes nowhere.
    BounceRoute {
        req: u64,
        result: Result<Vec<Destination>, String>,
    },
}

/// Where a session comes from, as lka needs it to apply the match rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The client's address; None for the local enqueuer's socket.
    pub addr: Option<std::net::IpAddr>,
    /// The listener (index into the dispatcher's view) it came in on.
    pub listener: u32,
    pub rdns: Option<String>,
    pub helo: String,
    pub auth_user: Option<String>,
    pub tag: Option<String>,
    pub tls: bool,
}

/// lka's answer for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Accept it: what it expanded to (aliases, virtual, .forward), one
    /// envelope each; never empty.
    Accept { dests: Vec<Destination> },
    /// Refuse it with this reply.
    Reject {
        code: u16,
        enhanced: String,
        text: String,
    },
}

/// One delivery an accepted recipient expanded to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The action that delivers it, and whether it relays.
    pub action: String,
    pub relay: bool,
    /// The address it was expanded for.
    pub dest: String,
    /// Local: the user it is delivered as, and a file or command an alias
    /// or `.forward` named instead of the action's method.
    pub user: String,
    pub target: Option<crate::spool::LocalTarget>,
    /// A `userbase` user's uid, gid and home (see Envelope::account).
    pub account: Option<crate::spool::LocalAccount>,
}

/// dispatcher <-> lka: policy for each RCPT, AUTH checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LkaDispatcher {
    Hello {
        from: Role,
    },
    /// dispatcher -> lka: may `rcpt` be accepted in this transaction?
    Rcpt {
        req: u64,
        session: SessionInfo,
        mail_from: String,
        rcpt: String,
    },
    /// lka -> dispatcher
    RcptVerdict {
        req: u64,
        verdict: Verdict,
    },
    /// dispatcher -> lka: check a password against the listener's table.
    Auth {
        req: u64,
        listener: u32,
        user: String,
        password: Vec<u8>,
    },
    /// lka -> dispatcher
    AuthResult {
        req: u64,
        ok: bool,
    },
    /// dispatcher -> lka: may the authenticated `user` send as `sender`
    /// (the listener's `senders` table)?
    Sender {
        req: u64,
        listener: u32,
        user: String,
        sender: String,
    },
    /// lka -> dispatcher
    SenderResult {
        req: u64,
        result: LookupResult,
    },
    /// dispatcher -> lka: the hosts to try for mail to `domain`, best
    /// first. With `host` (a relay action's `host`, a smarthost name or
    /// address literal, without port) that host's addresses; else the
    /// domain's MXs (or its implicit MX). `backup` is the MX name of a
    /// `relay backup` action: only MXs better than it are kept.
    Route {
        req: u64,
        domain: String,
        host: Option<String>,
        backup: Option<String>,
    },
    /// lka -> dispatcher
    RouteResult {
        req: u64,
        answer: RouteAnswer,
    },
}

/// Most hosts in a `RouteAnswer`, and most addresses per host: lka cuts
/// to these, the dispatcher refuses more.
pub const MAX_ROUTE_HOSTS: usize = 32;
pub const MAX_ROUTE_ADDRS: usize = 16;

/// Where to send mail for one domain, as lka found it in the DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAnswer {
    /// The hosts in the order to try them (MX preference, then the order
    /// lka chose among equals); each with its addresses, IPv6 first.
    /// Hosts without any address are left out.
    Hosts(Vec<RouteHost>),
    /// Try again later (time-out, SERVFAIL, no address for any host).
    TempFail(String),
    /// Bounce now (NXDOMAIN, null MX, invalid name, we are the best MX).
    PermFail(String),
}

/// One host to try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHost {
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<std::net::IpAddr>,
}

/// The answer of a table lookup that can fail: found and allowed, not
/// allowed, or the table could not be read (retry later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupResult {
    Ok,
    PermFail,
    TempFail,
}

/// One accepted recipient, as the dispatcher hands it to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEnvelope {
    pub sender: String,
    pub rcpt: String,
    /// What lka expanded the recipient to (one envelope per destination).
    pub dest: Destination,
    pub helo: String,
    pub client: String,
    pub hostname: String,
    pub tag: Option<String>,
    pub authenticated: bool,
    /// RFC 3461 NOTIFY as bits: SUCCESS 1, FAILURE 2, DELAY 4, NEVER 8.
    pub notify: u8,
    /// RFC 3461 RET: Some(true) FULL, Some(false) HDRS.
    pub ret_full: Option<bool>,
    pub envid: Option<String>,
    pub orcpt: Option<String>,
}

/// One envelope to relay, as the queue hands it to the dispatcher (the
/// message file comes with it as a descriptor, read-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEnvelope {
    pub id: u64,
    /// The `relay` action that sends it.
    pub action: String,
    /// MAIL FROM; "" for `<>`.
    pub sender: String,
    /// The address to send to (after expansion).
    pub dest: String,
    /// RCPT TO as the client gave it (for the log line).
    pub rcpt: String,
    pub notify: crate::spool::Notify,
    pub ret: Option<crate::spool::DsnRet>,
    pub envid: Option<String>,
    pub orcpt: Option<String>,
    /// When the message was accepted (for the log line's delay).
    pub ctime: u64,
}

/// dispatcher <-> queue: message files and their commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueDispatcher {
    Hello {
        from: Role,
    },
    /// queue -> dispatcher, with the message file: relay this envelope.
    Relay {
        env: RelayEnvelope,
    },
    /// dispatcher -> queue: how relaying `id` ended.
    Relayed {
        id: u64,
        outcome: Outcome,
    },
    /// dispatcher -> queue: open a new message file.
    Create {
        req: u64,
    },
    /// queue -> dispatcher, with one descriptor: the file to write into.
    Created {
        req: u64,
        msgid: u32,
    },
    /// queue -> dispatcher: no file; `tempfail` means 4xx (disk full...).
    CreateFailed {
        req: u64,
        tempfail: bool,
        text: String,
    },
    /// dispatcher -> queue: one recipient of message `msgid`.
    AddEnvelope {
        msgid: u32,
        envelope: Box<NewEnvelope>,
    },
    /// dispatcher -> queue: the data is written; make the message and its
    /// `count` envelopes durable, then say Committed.
    Commit {
        req: u64,
        msgid: u32,
        count: u32,
        size: u64,
    },
    /// queue -> dispatcher: on disk, fsynced: the 250 may be sent.
    /// `first_evpid` is the id of the first envelope added; the others
    /// follow it, in the order they were added, as `EvpIds::from_first`
    /// counts (for the dispatcher's `smtp envelope` log lines).
    Committed {
        req: u64,
        msgid: u32,
        first_evpid: u64,
    },
    /// queue -> dispatcher: not stored; the client gets a 4xx.
    CommitFailed {
        req: u64,
        msgid: u32,
        text: String,
    },
    /// dispatcher -> queue: forget an uncommitted message.
    Abort {
        msgid: u32,
    },
}

/// queue <-> scheduler: envelopes to schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueScheduler {
    Hello {
        from: Role,
    },
    /// queue -> scheduler: these envelopes are committed (or recovered).
    Envelopes {
        entries: Vec<(u64, crate::scheduler::schedule::NewEntry)>,
    },
    /// scheduler -> queue: try these envelopes now.
    Deliver {
        ids: Vec<u64>,
    },
    /// scheduler -> queue: these envelopes outlived the queue ttl: they
    /// leave the queue (and bounce).
    Expired {
        ids: Vec<u64>,
    },
    /// scheduler -> queue: tell the sender this envelope is delayed
    /// (`bounce warn-interval`): queued for `delay` s, kept up to `ttl`;
    /// `mark` is what the envelope's last_warn becomes.
    Delayed {
        id: u64,
        delay: u64,
        mark: u64,
        ttl: u64,
    },
    /// queue -> scheduler: how one try ended. Delivered and failed
    /// envelopes are gone from the queue; a temporary failure is kept
    /// (its retry count already written) for the next try.
    Delivered {
        id: u64,
    },
    TempFailed {
        id: u64,
    },
    PermFailed {
        id: u64,
    },
    /// scheduler -> queue: `smtpctl remove`: these envelopes left the
    /// schedule; delete them from the spool (no bounce).
    Remove {
        ids: Vec<u64>,
    },
}

/// What the dispatcher needs to know of a private key it never sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The pki name.
    pub pki: String,
    /// rustls's SignatureAlgorithm, as its u8.
    pub algorithm: u8,
    /// rustls's SignatureSchemes this key can sign with, as their u16.
    pub schemes: Vec<u16>,
}

/// dispatcher <-> ca: TLS signatures made with keys only ca holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DispatcherCa {
    Hello {
        from: Role,
    },
    /// ca -> dispatcher, once after Hello: the keys it holds.
    Keys {
        keys: Vec<KeyInfo>,
    },
    /// dispatcher -> ca: sign `data` with pki's key and `scheme`.
    Sign {
        req: u64,
        pki: String,
        scheme: u16,
        data: Vec<u8>,
    },
    /// ca -> dispatcher
    Signature {
        req: u64,
        signature: Vec<u8>,
    },
    /// ca -> dispatcher: no such key or scheme, or signing failed.
    SignFailed {
        req: u64,
        text: String,
    },
}

/// Message and Link for the hand-written channel enums above.
macro_rules! link_impl {
    ($name:ident { $($var:ident => $fds:expr),* $(,)? }) => {
        impl Message for $name {
            fn name(&self) -> &'static str {
                match self {
                    $name::Hello { .. } => "Hello",
                    $($name::$var { .. } => stringify!($var),)*
                }
            }
            fn fds(&self) -> usize {
                match self {
                    $($name::$var { .. } => $fds,)*
                    _ => 0,
                }
            }
        }

        impl Link for $name {
            fn hello(from: Role) -> Self {
                $name::Hello { from }
            }
            fn as_hello(&self) -> Option<Role> {
                match self {
                    $name::Hello { from } => Some(*from),
                    _ => None,
                }
            }
        }
    };
}

link_impl!(LkaDispatcher {
    Rcpt => 0,
    RcptVerdict => 0,
    Auth => 0,
    AuthResult => 0,
    Sender => 0,
    SenderResult => 0,
    Route => 0,
    RouteResult => 0
});
link_impl!(QueueDispatcher {
    Create => 0,
    Created => 1,
    CreateFailed => 0,
    AddEnvelope => 0,
    Commit => 0,
    Committed => 0,
    CommitFailed => 0,
    Abort => 0,
    Relay => 1,
    Relayed => 0,
});
link_impl!(LkaQueue {
    Bounce => 0,
    BounceRoute => 0
});
link_impl!(QueueScheduler {
    Envelopes => 0,
    Deliver => 0,
    Expired => 0,
    Delayed => 0,
    Delivered => 0,
    TempFailed => 0,
    PermFailed => 0,
    Remove => 0
});
link_impl!(DispatcherCa { Keys => 0, Sign => 0, Signature => 0, SignFailed => 0 });
link_impl!(ControlQueue {
    Describe => 0,
    Described => 0
});
link_impl!(ControlScheduler {
    List => 0,
    Listed => 0,
    Apply => 0,
    Applied => 0,
    PauseKind => 0,
    Stats => 0,
    StatsAre => 0
});
link_impl!(ControlDispatcher {
    PauseSmtp => 0,
    Enqueue => 1,
    Stats => 0,
    StatsAre => 0
});

/// Decode a frame that arrived at `me` from `peer` with the enum of their
/// channel and return the role its Hello names. `None` if the two have no
/// channel (a bug of ours: the parent only wires pairs in the table).
pub fn decode_hello(
    me: Role,
    peer: Role,
    packet: &[u8],
    nfds: usize,
) -> Option<Result<Role, super::frame::FrameError>> {
    use Role::*;
    fn hello<M: Link>(packet: &[u8], nfds: usize) -> Result<Role, super::frame::FrameError> {
        let m: M = super::frame::parse(packet, nfds)?;
        m.as_hello().ok_or(super::frame::FrameError::Decode(format!(
            "{} before Hello",
            m.name()
        )))
    }
    let (a, b) = if me < peer { (me, peer) } else { (peer, me) };
    Some(match (a, b) {
        (Control, Lka) => hello::<ControlLka>(packet, nfds),
        (Control, Queue) => hello::<ControlQueue>(packet, nfds),
        (Control, Scheduler) => hello::<ControlScheduler>(packet, nfds),
        (Control, Dispatcher) => hello::<ControlDispatcher>(packet, nfds),
        (Control, Ca) => hello::<ControlCa>(packet, nfds),
        (Lka, Queue) => hello::<LkaQueue>(packet, nfds),
        (Lka, Dispatcher) => hello::<LkaDispatcher>(packet, nfds),
        (Queue, Scheduler) => hello::<QueueScheduler>(packet, nfds),
        (Queue, Dispatcher) => hello::<QueueDispatcher>(packet, nfds),
        (Dispatcher, Ca) => hello::<DispatcherCa>(packet, nfds),
        _ => return None,
    })
}

/// Encode the Hello `me` sends to `peer` on their channel.
pub fn encode_hello(me: Role, peer: Role) -> Option<Result<Vec<u8>, super::frame::FrameError>> {
    use Role::*;
    fn enc<M: Link>(me: Role) -> Result<Vec<u8>, super::frame::FrameError> {
        super::frame::encode(&M::hello(me), 0)
    }
    let (a, b) = if me < peer { (me, peer) } else { (peer, me) };
    Some(match (a, b) {
        (Control, Lka) => enc::<ControlLka>(me),
        (Control, Queue) => enc::<ControlQueue>(me),
        (Control, Scheduler) => enc::<ControlScheduler>(me),
        (Control, Dispatcher) => enc::<ControlDispatcher>(me),
        (Control, Ca) => enc::<ControlCa>(me),
        (Lka, Queue) => enc::<LkaQueue>(me),
        (Lka, Dispatcher) => enc::<LkaDispatcher>(me),
        (Queue, Scheduler) => enc::<QueueScheduler>(me),
        (Queue, Dispatcher) => enc::<QueueDispatcher>(me),
        (Dispatcher, Ca) => enc::<DispatcherCa>(me),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::{links, ROLES};

    #[test]
    fn every_link_in_the_table_has_an_enum() {
        for (a, b) in links() {
            let f = encode_hello(a, b).expect("link has an enum").unwrap();
            assert_eq!(decode_hello(b, a, &f, 0).unwrap().unwrap(), a);
        }
        for spec in ROLES {
            assert!(encode_hello(spec.role, spec.role).is_none());
        }
    }

    #[test]
    fn parent_message_fd_counts() {
        assert_eq!(FromParent::Peer { peer: Role::Lka }.fds(), 1);
        assert_eq!(FromParent::Start.fds(), 0);
    }
}
