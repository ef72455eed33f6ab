//! The prologue: what every role does, in this order, before it reads a
//! byte of untrusted input (A10). The order is the security argument:
//!
//! 1. receive its config view and descriptors from the parent (fd 3);
//! 2. chroot (looking its user up first, while /etc is still visible);
//! 3. drop to its user for good;
//! 4. unveil (Landlock on Linux) the few paths it may still see;
//! 5. pledge (seccomp on Linux) down to its promises;
//! 6. decode the view into sealed, immutable memory;
//! 7. greet its peers, tell the parent it is ready, run its loop.
//!
//! Any failure before the loop is fatal: a role half set up never runs.

#![forbid(unsafe_code)]

use crate::config::view::View;
use crate::event::{Loop, Ready};
use crate::ipc::frame::{self, FrameError};
use crate::ipc::msg::{self, FromParent, ToParent};
use crate::ipc::{Channel, IpcError};
use crate::proc::{Role, RoleSpec};
use crate::sys::{self, seal::Sealed};
use crate::{fatal, log as slog};
use mio::Token;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// How long a role waits for its setup (OpenSMTPD's start timeout).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest config view a role accepts.
pub const MAX_VIEW: usize = 64 << 20;

/// Token of the parent channel in every role's loop.
pub const PARENT: Token = Token(0);
/// Tokens from here on are the role's own (peers use 1..FIRST_OWN_TOKEN).
pub const FIRST_OWN_TOKEN: usize = 16;

/// Options the parent passes on the command line.
#[derive(Debug, Clone, Copy)]
pub struct ChildOpts {
    pub debug: bool,
    pub verbose: bool,
}

/// Everything a role has once the prologue is done.
pub struct Setup {
    pub role: Role,
    pub links: Links,
    /// Listening sockets, by index: the dispatcher's SMTP listeners;
    /// control's /var/run/smtpd.sock.
    pub listeners: Vec<OwnedFd>,
    /// lka's channel to the delivery runner.
    pub runner: Option<OwnedFd>,
    pub view: Sealed<View>,
}

/// Run role `role` in this freshly exec'd process. Never returns.
pub fn run(role: Role, opts: ChildOpts) -> ! {
    let spec = role
        .spec()
        .unwrap_or_else(|| fatal!("no role table row for {role}"));
    // The parent gave us 0, 1, 2 and 3; anything else leaked from whoever
    // started the parent is closed before we open anything.
    if let Err(e) = sys::process::closefrom(4) {
        fatal!("{role}: closefrom: {e}");
    }
    let target = if opts.debug {
        slog::Target::Stderr
    } else {
        slog::Target::Syslog
    };
    slog::init(target, opts.verbose, "smtpd");
    if let Err(e) = sys::proctitle::set(role.name()) {
        log::debug!("debug: {role}: cannot set process title: {e}");
    }
    // Ctrl-C in a terminal, or a service manager stopping the whole process
    // group, reaches every process: only the parent acts on it, and stops
    // the roles in order (OpenSMTPD's roles ignore these too). A role still
    // dies of SIGKILL or of its sandbox's SIGSYS, and the parent reports it.
    if let Err(e) = sys::signal::ignore(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE])
    {
        fatal!("{role}: signals: {e}");
    }

    // 1. Receive.
    let parent = Channel::new(take_channel_fd(), Role::Parent)
        .unwrap_or_else(|e| fatal!("{role}: parent channel: {e}"));
    let received =
        receive(spec, parent).unwrap_or_else(|e| fatal!("{role}: start-up from parent: {e}"));

    // 2, 3. chroot and drop.
    let account = sys::privdrop::lookup(spec.user)
        .unwrap_or_else(|e| fatal!("{role}: user {}: {e}", spec.user));
    match spec.chroot {
        Some(dir) => {
            sys::privdrop::chroot(dir).unwrap_or_else(|e| fatal!("{role}: chroot {dir}: {e}"))
        }
        // No chroot: at least hold no directory of whoever started us.
        None => std::env::set_current_dir("/").unwrap_or_else(|e| fatal!("{role}: chdir /: {e}")),
    }
    sys::privdrop::drop_to(&account)
        .unwrap_or_else(|e| fatal!("{role}: cannot drop privileges: {e}"));

    // 4, 5. unveil, pledge.
    sys::pledge::unveil(spec.unveil).unwrap_or_else(|e| fatal!("{role}: unveil: {e}"));
    sys::pledge::pledge(spec.promises).unwrap_or_else(|e| fatal!("{role}: pledge: {e}"));

    // 6. Seal the view. Capacity: decoded Strings and Vecs cost more than
    // their encoding; 16x plus a page of slack is ample.
    let bytes = received.view;
    let sealed = sys::seal::freeze(bytes.len() * 16 + 64 * 1024, || {
        frame::decode::<View>(&bytes)
    })
    .unwrap_or_else(|e| fatal!("{role}: cannot seal config: {e}"))
    .unwrap_or_else(|e| fatal!("{role}: config view from parent: {e}"));
    drop(bytes);
    if sealed.role() != role {
        fatal!("{role}: parent sent the view of {}", sealed.role());
    }
    sealed.verify().unwrap_or_else(|e| fatal!("{role}: {e}"));

    // 7. Greet and report.
    let mut links = Links {
        me: role,
        parent: received.parent,
        peers: received.peers,
        inbox: Vec::new(),
    };
    links.greet().unwrap_or_else(|e| fatal!("{role}: {e}"));
    log::debug!(
        "debug: {role}: sandboxed as {} promises=\"{}\"",
        spec.user,
        sys::promise::promise_string(spec.promises)
    );
    let setup = Setup {
        role,
        links,
        listeners: received.listeners,
        runner: received.runner,
        view: sealed,
    };
    let result = match role {
        Role::Control => crate::control::run(setup),
        Role::Lka => crate::lka::run(setup),
        Role::Queue => crate::queue::run(setup),
        Role::Scheduler => crate::scheduler::run(setup),
        Role::Dispatcher => crate::dispatcher::run(setup),
        Role::Ca => crate::ca::run(setup),
        Role::Parent | Role::Delivery => fatal!("{role} is not a sandboxed role"),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            log::warn!("warn: {role}: {e}; shutting down");
            std::process::exit(1)
        }
    }
}

fn take_channel_fd() -> OwnedFd {
    sys::process::take_channel_fd().unwrap_or_else(|e| fatal!("descriptor 3 is not a channel: {e}"))
}

struct Received {
    parent: Channel,
    view: Vec<u8>,
    peers: Vec<PeerLink>,
    listeners: Vec<OwnedFd>,
    runner: Option<OwnedFd>,
}

/// The start messages, in any order, until Start; every one checked.
fn receive(spec: &RoleSpec, mut parent: Channel) -> Result<Received, String> {
    let role = spec.role;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut view = Vec::new();
    let mut view_done = false;
    let mut peers: Vec<PeerLink> = Vec::new();
    let mut listeners = Vec::new();
    let mut runner = None;
    loop {
        let r = parent
            .recv_until::<FromParent>(deadline)
            .map_err(|e| e.to_string())?;
        let mut fds = r.fds.into_iter();
        match r.msg {
            FromParent::ConfigChunk(chunk) if !view_done => {
                if view.len() + chunk.len() > MAX_VIEW {
                    return Err(format!("config view over {MAX_VIEW} bytes"));
                }
                view.extend_from_slice(&chunk);
            }
            FromParent::ConfigEnd { len } if !view_done => {
                if len != view.len() as u64 {
                    return Err(format!(
                        "config view of {} bytes, announced {len}",
                        view.len()
                    ));
                }
                view_done = true;
            }
            FromParent::Peer { peer }
                if spec.peers.contains(&peer) && !peers.iter().any(|p| p.peer == peer) =>
            {
                let fd = fds.next().ok_or("Peer without descriptor")?;
                let chan = Channel::new(fd, peer).map_err(|e| e.to_string())?;
                peers.push(PeerLink {
                    peer,
                    chan,
                    greeted: false,
                    watch_write: false,
                });
            }
            // The dispatcher's SMTP listeners; control's one socket.
            FromParent::Listener { index }
                if (role == Role::Dispatcher
                    || (role == Role::Control && listeners.is_empty()))
                    && index as usize == listeners.len() =>
            {
                listeners.push(fds.next().ok_or("Listener without descriptor")?);
            }
            FromParent::RunnerChannel if role == Role::Lka && runner.is_none() => {
                runner = Some(fds.next().ok_or("RunnerChannel without descriptor")?);
            }
            FromParent::Start
                if view_done
                    && peers.len() == spec.peers.len()
                    && (role != Role::Lka || runner.is_some())
                    && (role != Role::Control || listeners.len() == 1) =>
            {
                return Ok(Received {
                    parent,
                    view,
                    peers,
                    listeners,
                    runner,
                });
            }
            FromParent::Shutdown => std::process::exit(0),
            other => {
                return Err(format!(
                    "unexpected {} during start-up",
                    msg::Message::name(&other)
                ))
            }
        }
    }
}

/// A channel to another role, and whether it has said Hello yet.
pub struct PeerLink {
    pub peer: Role,
    pub chan: Channel,
    greeted: bool,
    /// Whether the loop watches the channel for room to write: changed
    /// only when the channel's need changes (one epoll_ctl per change,
    /// not per frame; the loop is edge-triggered).
    watch_write: bool,
}

impl PeerLink {
    fn update_watch(&mut self, lp: &Loop, token: Token) -> std::io::Result<()> {
        let want = self.chan.wants_write();
        if want != self.watch_write {
            lp.rewatch(self.chan.raw_fd(), token, want)?;
            self.watch_write = want;
        }
        Ok(())
    }
}

/// A role's channels: to the parent and to its peers.
pub struct Links {
    pub me: Role,
    pub parent: Channel,
    pub peers: Vec<PeerLink>,
    /// Frames from greeted peers, for the role to decode.
    inbox: Vec<Frame>,
}

/// What a link asks of the role's loop.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Nothing for the role to do.
    None,
    /// The parent asked us to exit.
    Shutdown,
    /// Messages from the parent for the role (the queue's delivery outcomes).
    Parent(Vec<FromParent>),
}

impl Links {
    fn greet(&mut self) -> Result<(), String> {
        for p in &mut self.peers {
            let f = msg::encode_hello(self.me, p.peer)
                .ok_or_else(|| format!("no channel type for {} <-> {}", self.me, p.peer))?
                .map_err(|e| e.to_string())?;
            p.chan
                .send_frame(f)
                .map_err(|e| format!("{} channel: {e}", p.peer))?;
        }
        self.parent
            .send(&ToParent::Ready { role: self.me }, Vec::new())
            .map_err(|e| format!("parent channel: {e}"))
    }

    /// Register every link with the loop.
    pub fn watch(&mut self, lp: &Loop) -> std::io::Result<()> {
        lp.watch(self.parent.raw_fd(), PARENT, false)?;
        for (i, p) in self.peers.iter_mut().enumerate() {
            p.watch_write = p.chan.wants_write();
            lp.watch(p.chan.raw_fd(), Token(1 + i), p.watch_write)?;
        }
        Ok(())
    }

    /// True if `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        token.0 < FIRST_OWN_TOKEN
    }

    /// Handle readiness on a link. Frames after a peer's Hello are kept
    /// for the role (`take_frames`). An error names the channel and what
    /// it did; the role then shuts down (the parent sees it and stops all).
    pub fn handle(&mut self, lp: &Loop, r: &Ready) -> Result<LinkEvent, String> {
        if r.token == PARENT {
            if r.writable {
                self.parent
                    .flush()
                    .map_err(|e| format!("parent channel: {e}"))?;
            }
            // After start the parent sends Shutdown, and to the queue the
            // outcome of each local delivery.
            let mut got = Vec::new();
            loop {
                match self.parent.recv::<FromParent>() {
                    Ok(None) => break,
                    Ok(Some(m)) if m.msg == FromParent::Shutdown => return Ok(LinkEvent::Shutdown),
                    // `smtpctl log verbose|brief`: the same for every role.
                    Ok(Some(crate::ipc::Received {
                        msg: FromParent::Verbose { on },
                        ..
                    })) => slog::set_verbose(on),
                    Ok(Some(m)) if matches!(m.msg, FromParent::DeliveryDone { .. }) => {
                        got.push(m.msg)
                    }
                    Ok(Some(m)) => {
                        return Err(format!(
                            "parent channel: unexpected {}",
                            msg::Message::name(&m.msg)
                        ))
                    }
                    Err(IpcError::Closed) => return Err("lost parent".into()),
                    Err(e) => return Err(format!("parent channel: {e}")),
                }
            }
            lp.rewatch(self.parent.raw_fd(), PARENT, self.parent.wants_write())
                .map_err(|e| format!("parent channel: {e}"))?;
            return Ok(if got.is_empty() {
                LinkEvent::None
            } else {
                LinkEvent::Parent(got)
            });
        }
        let i = r.token.0 - 1;
        let me = self.me;
        let p = self.peers.get_mut(i).ok_or("event for an unknown link")?;
        let ctx = |e: &dyn std::fmt::Display| format!("{} channel: {e}", p.peer);
        if r.writable {
            p.chan.flush().map_err(|e| ctx(&e))?;
        }
        if r.readable {
            loop {
                let got = match p.chan.recv_raw() {
                    // A peer exiting is the parent's business: it sees the
                    // death (SIGCHLD) and stops everyone, or is stopping
                    // everyone already. Just stop listening.
                    Err(IpcError::Closed) => {
                        log::debug!("debug: {me}: {} channel closed", p.peer);
                        lp.unwatch(p.chan.raw_fd()).map_err(|e| ctx(&e))?;
                        return Ok(LinkEvent::None);
                    }
                    other => other.map_err(|e| ctx(&e))?,
                };
                let Some((packet, fds)) = got else { break };
                if p.greeted {
                    self.inbox.push(Frame {
                        peer: p.peer,
                        packet,
                        fds,
                    });
                    continue;
                }
                let from = msg::decode_hello(me, p.peer, &packet, fds.len())
                    .ok_or_else(|| ctx(&"no channel type"))?
                    .map_err(|e| ctx(&e))?;
                if from != p.peer {
                    let e =
                        FrameError::Decode(format!("Hello from {from} on the {} channel", p.peer));
                    return Err(ctx(&e));
                }
                p.greeted = true;
                log::debug!("debug: {me}: {} says hello", p.peer);
            }
        }
        let peer = p.peer;
        p.update_watch(lp, r.token)
            .map_err(|e| format!("{peer} channel: {e}"))?;
        Ok(LinkEvent::None)
    }

    /// A second descriptor for the channel to `peer`, for code that must
    /// talk to it synchronously (the dispatcher's TLS signer).
    pub fn dup_channel(&self, peer: Role) -> Result<OwnedFd, String> {
        let p = self
            .peers
            .iter()
            .find(|p| p.peer == peer)
            .ok_or_else(|| format!("no channel to {peer}"))?;
        use std::os::fd::AsFd;
        p.chan
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("{peer} channel: {e}"))
    }

    /// The frames received since the last call, in order.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.inbox)
    }

    /// Send `m` to the parent (the queue's delivery requests).
    pub fn send_parent(
        &mut self,
        lp: &Loop,
        m: &ToParent,
        fds: Vec<OwnedFd>,
    ) -> Result<(), String> {
        self.parent
            .send(m, fds)
            .map_err(|e| format!("parent channel: {e}"))?;
        lp.rewatch(self.parent.raw_fd(), PARENT, self.parent.wants_write())
            .map_err(|e| format!("parent channel: {e}"))
    }

    /// Send `msg` to `peer`, watching for room if the socket is full.
    pub fn send<M: msg::Message>(
        &mut self,
        lp: &Loop,
        peer: Role,
        m: &M,
        fds: Vec<OwnedFd>,
    ) -> Result<(), String> {
        let (i, p) = self
            .peers
            .iter_mut()
            .enumerate()
            .find(|(_, p)| p.peer == peer)
            .ok_or_else(|| format!("no channel to {peer}"))?;
        p.chan
            .send(m, fds)
            .map_err(|e| format!("{peer} channel: {e}"))?;
        p.update_watch(lp, Token(1 + i))
            .map_err(|e| format!("{peer} channel: {e}"))
    }
}

/// A frame from a peer, after its Hello: the role decodes it with the
/// enum of that channel (`frame::parse`), or refuses it.
pub struct Frame {
    pub peer: Role,
    pub packet: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Frame {
    /// Decode with the channel's enum `M`; any failure (or a descriptor
    /// count the message does not carry) is the channel's error.
    pub fn decode<M: msg::Message>(&self) -> Result<M, String> {
        msg::parse(&self.packet, self.fds.len()).map_err(|e| format!("{} channel: {e}", self.peer))
    }

    /// The answer of a role that expects nothing on this channel: a
    /// second Hello or anything else ends it, with the reason.
    pub fn refuse(&self, me: Role) -> String {
        match msg::decode_hello(me, self.peer, &self.packet, self.fds.len()) {
            Some(Ok(from)) => format!(
                "{} channel: undecodable payload: second Hello from {from}",
                self.peer
            ),
            Some(Err(e)) => format!("{} channel: {e}", self.peer),
            None => format!("{} channel: no channel type", self.peer),
        }
    }
}

/// A role's work, driven by [`run_service`]: the frames its peers send,
/// and optionally descriptors of its own (tokens from [`FIRST_OWN_TOKEN`])
/// and one timer.
pub trait Service {
    /// Runs once, before the first wait (ca announces its keys; the
    /// queue reports what it recovered).
    fn start(&mut self, _links: &mut Links, _lp: &Loop) -> Result<(), String> {
        Ok(())
    }

    /// Every frame of one turn of the loop, at once (the queue commits
    /// them as one batch).
    fn frames(&mut self, links: &mut Links, lp: &Loop, frames: Vec<Frame>) -> Result<(), String>;

    /// Messages from the parent (only the queue gets any).
    fn parent(&mut self, _links: &mut Links, _lp: &Loop, m: Vec<FromParent>) -> Result<(), String> {
        Err(format!(
            "parent channel: unexpected {}",
            msg::Message::name(&m[0])
        ))
    }

    /// Readiness of a descriptor the role registered itself.
    fn ready(&mut self, _links: &mut Links, _lp: &Loop, r: &Ready) -> Result<(), String> {
        Err(format!("event for unknown token {}", r.token.0))
    }

    /// When [`Service::tick`] is next due, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called once the deadline has passed.
    fn tick(&mut self, _links: &mut Links, _lp: &Loop) -> Result<(), String> {
        Ok(())
    }
}

/// The loop of a role (all but the dispatcher, which has sockets of its
/// own and its own loop): wait, let the links read, hand the role every
/// frame of that turn and its own events, until the parent says stop.
pub fn run_service(links: Links, service: &mut impl Service) -> Result<(), String> {
    let mut links = links;
    let mut lp = Loop::new().map_err(|e| e.to_string())?;
    links.watch(&lp).map_err(|e| e.to_string())?;
    service.start(&mut links, &lp)?;
    loop {
        for r in lp.wait(service.deadline()).map_err(|e| e.to_string())? {
            if links.owns(r.token) {
                match links.handle(&lp, &r)? {
                    LinkEvent::Shutdown => return Ok(()),
                    LinkEvent::Parent(m) => service.parent(&mut links, &lp, m)?,
                    LinkEvent::None => {}
                }
            } else {
                service.ready(&mut links, &lp, &r)?;
            }
        }
        let turn = links.take_frames();
        if !turn.is_empty() {
            service.frames(&mut links, &lp, turn)?;
        }
        if service.deadline().is_some_and(|d| d <= Instant::now()) {
            service.tick(&mut links, &lp)?;
        }
    }
}

/// [`run_service`] for a role that has only frames: `start` once, then
/// `frames` for every turn.
pub fn serve(
    links: Links,
    start: impl FnOnce(&mut Links, &Loop) -> Result<(), String>,
    frames: impl FnMut(&mut Links, &Loop, Vec<Frame>) -> Result<(), String>,
) -> Result<(), String> {
    struct Closures<S, F> {
        start: Option<S>,
        frames: F,
    }
    impl<S, F> Service for Closures<S, F>
    where
        S: FnOnce(&mut Links, &Loop) -> Result<(), String>,
        F: FnMut(&mut Links, &Loop, Vec<Frame>) -> Result<(), String>,
    {
        fn start(&mut self, links: &mut Links, lp: &Loop) -> Result<(), String> {
            self.start.take().map_or(Ok(()), |s| s(links, lp))
        }
        fn frames(&mut self, links: &mut Links, lp: &Loop, f: Vec<Frame>) -> Result<(), String> {
            (self.frames)(links, lp, f)
        }
    }
    run_service(
        links,
        &mut Closures {
            start: Some(start),
            frames,
        },
    )
}

/// The loop of a role that has no work of its own yet: any frame after a
/// peer's Hello is refused.
pub fn idle_loop(setup: Setup) -> Result<(), String> {
    let me = setup.role;
    serve(
        setup.links,
        |_, _| Ok(()),
        |_, _, frames| Err(frames[0].refuse(me)),
    )
}
