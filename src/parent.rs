//! The parent: reads the config, binds the listeners, starts every role
//! from the role table, hands each its view and descriptors, then watches
//! them. If any role dies, everything stops: a half-running mail server
//! that acknowledges mail it cannot queue is worse than none.

#![forbid(unsafe_code)]

use crate::config::ast::{Family, ListenOn, TlsMode};
use crate::config::{self, view, Config};
use crate::delivery::Outcome;
use crate::event::Loop;
use crate::ipc::msg::{
    FromParent, FromRunner, LocalJob, LocalMethod, LocalRequest, ToParent, ToRunner,
};
use crate::ipc::{frame, Channel, IpcError};
use crate::proc::{self, Role, ROLES};
use crate::spool::LocalTarget;
use crate::sys::{self, process::Exit};
use crate::{fatal, log as slog};
use mio::Token;
use std::collections::HashMap;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

mod control_socket;

/// How long roles get to exit after Shutdown before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
const SIGNALS: Token = Token(usize::MAX - 1);

/// The command line, parsed.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub config: String,
    /// -d: stay in front, log to stderr.
    pub debug: bool,
    /// -F: stay in front, log to syslog.
    pub foreground: bool,
    /// -v: verbose logging.
    pub verbose: bool,
    /// -n: check the config and exit.
    pub check_only: bool,
    /// -D name=value: macros that override the file's.
    pub defines: Vec<(String, String)>,
    /// argv[0], to re-exec ourselves where the kernel can't tell us.
    pub argv0: String,
    /// -P mda, -P mta: start with those deliveries paused.
    pub pause_mda: bool,
    pub pause_mta: bool,
    pub pause_smtp: bool,
}

struct Child {
    role: Role,
    pid: libc::pid_t,
    chan: Channel,
    ready: bool,
    exited: Option<Exit>,
}

/// Run the daemon; returns the process exit status.
/// The most open descriptors the roles may have (the soft limit is
/// raised to this, or to the hard limit if lower).
const FD_LIMIT: u64 = 65536;

pub fn run(opts: Opts) -> i32 {
    let loaded = match config::load(&opts.config, &opts.defines) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}: warning");
    }
    let mut cfg = loaded.config;
    cfg.settings.pause_mda = opts.pause_mda;
    cfg.settings.pause_mta = opts.pause_mta;
    cfg.settings.pause_smtp = opts.pause_smtp;
    if opts.check_only {
        if opts.verbose {
            print!("{}", config::print::print(&cfg));
        }
        eprintln!("configuration OK");
        return 0;
    }
    if sys::process::geteuid() != 0 {
        eprintln!("smtpd: need root privileges");
        return 1;
    }
    if let Err(e) = check_system() {
        eprintln!("smtpd: {e}");
        return 1;
    }
    // As OpenSMTPD: the roles inherit it (the dispatcher needs a
    // descriptor per session, connection and relayed message).
    if let Err(e) = sys::process::raise_fd_limit(FD_LIMIT) {
        log::warn!("warn: cannot raise the descriptor limit: {e}");
    }
    let exe = match sys::process::self_exe(&opts.argv0) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smtpd: {e}");
            return 1;
        }
    };
    let hostname = sys::process::hostname().unwrap_or_else(|_| "localhost".into());
    let material = match view::read_material(&cfg) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("smtpd: {e}");
            return 1;
        }
    };
    let listeners = match bind_listeners(&cfg, &hostname) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("smtpd: {e}");
            return 1;
        }
    };
    let control_socket = match control_socket::bind() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("smtpd: {e}");
            return 1;
        }
    };
    if !opts.debug && !opts.foreground {
        if let Err(e) = sys::process::daemonize() {
            eprintln!("smtpd: daemon: {e}");
            return 1;
        }
    }
    let target = if opts.debug {
        slog::Target::Stderr
    } else {
        slog::Target::Syslog
    };
    slog::init(target, opts.verbose, "smtpd");
    // Before any child exists, so no SIGCHLD is missed.
    let signals =
        sys::signal::pipe_for(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
            .unwrap_or_else(|e| fatal!("signals: {e}"));

    let mut children = start_roles(
        &exe,
        &opts,
        &cfg,
        &hostname,
        listeners,
        control_socket,
        &material,
    );
    // The keys are in ca's sealed view now; the parent keeps no copy.
    drop(material);
    // Every descriptor is handed out and nothing is exec'd again: from here
    // the parent sees no files and keeps "stdio proc".
    sys::pledge::unveil(&[]).unwrap_or_else(|e| fatal!("unveil: {e}"));
    sys::pledge::pledge(proc::PARENT_PROMISES).unwrap_or_else(|e| fatal!("pledge: {e}"));
    let started = Instant::now();
    match supervise(&mut children, &signals, started, &cfg, &hostname) {
        Ok(()) => shutdown(&mut children, 0),
        Err(code) => shutdown(&mut children, code),
    }
}

/// The directories the roles chroot into must exist and be safe: owned by
/// root and writable by nobody else, or a chroot there protects nothing.
/// The users must exist. The spool is created where missing, and checked
/// (owners and modes) where present, as OpenSMTPD does.
fn check_system() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(proc::EMPTY_DIR).map_err(|e| format!("{}: {e}", proc::EMPTY_DIR))?;
    if !md.is_dir() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: must be a directory owned by root and not group or world writable",
            proc::EMPTY_DIR
        ));
    }
    if std::fs::read_dir(proc::EMPTY_DIR)
        .map_err(|e| e.to_string())?
        .next()
        .is_some()
    {
        return Err(format!("{}: must be empty", proc::EMPTY_DIR));
    }
    for user in [proc::USER_SMTPD, proc::USER_SMTPQ] {
        sys::privdrop::lookup(user)
            .map_err(|e| format!("user {user}: {e} (see `make install`)"))?;
    }
    let q = sys::privdrop::lookup(proc::USER_SMTPQ).map_err(|e| e.to_string())?;
    crate::spool::store::prepare(std::path::Path::new(proc::SPOOL_DIR), q.uid, q.gid, q.gid)
        .map_err(|e| format!("{}: {e}", proc::SPOOL_DIR))
}

/// Bind every `listen on`. Errors name the address.
fn bind_listeners(
    cfg: &Config,
    hostname: &str,
) -> Result<Vec<(view::ListenerView, OwnedFd)>, String> {
    let mut out = Vec::new();
    for l in &cfg.listens {
        let default_port = if matches!(l.opts.tls, Some(TlsMode::Smtps { .. })) {
            465
        } else {
            25
        };
        let port = l.opts.port.unwrap_or(default_port);
        // (address, must it bind?)
        let addrs: Vec<(IpAddr, bool)> = match &l.on {
            // The local enqueuer's socket comes with smtpctl's issue.
            ListenOn::Socket => continue,
            ListenOn::Addr(a) => vec![(*a, true)],
            // ::1 may not exist (IPv6 off): localhost then means 127.0.0.1.
            ListenOn::Name(n) if n == "localhost" => {
                vec![
                    (IpAddr::V4(Ipv4Addr::LOCALHOST), true),
                    (IpAddr::V6(Ipv6Addr::LOCALHOST), false),
                ]
            }
            ListenOn::Name(name) => {
                let mut found = sys::ifaddrs::addresses_of(name)
                    .map_err(|e| format!("listen on {name}: {e}"))?;
                if found.is_empty() {
                    // Not an interface: a host name, resolved once at start.
                    use std::net::ToSocketAddrs;
                    found = (name.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.map(|s| s.ip()).collect())
                        .unwrap_or_default();
                }
                if found.is_empty() {
                    return Err(format!("listen on {name}: invalid virtual ip or interface"));
                }
                found.into_iter().map(|a| (a, true)).collect()
            }
        };
        for (ip, required) in addrs {
            match (l.opts.family, ip) {
                (Some(Family::Inet4), IpAddr::V6(_)) | (Some(Family::Inet6), IpAddr::V4(_)) => {
                    continue
                }
                _ => {}
            }
            let sa = SocketAddr::new(ip, port);
            match std::net::TcpListener::bind(sa) {
                Ok(sock) => {
                    let host = l
                        .opts
                        .hostname
                        .clone()
                        .unwrap_or_else(|| hostname.to_string());
                    let lv = view::ListenerView {
                        addr: sa,
                        hostname: host,
                        opts: l.opts.clone(),
                    };
                    out.push((lv, OwnedFd::from(sock)));
                }
                Err(e) if !required => log::debug!("debug: skipping {sa}: {e}"),
                Err(e) => return Err(format!("cannot listen on {sa}: {e}")),
            }
        }
    }
    Ok(out)
}

/// Create every channel, exec every role, send each its setup.
fn start_roles(
    exe: &CString,
    opts: &Opts,
    cfg: &Config,
    hostname: &str,
    listeners: Vec<(view::ListenerView, OwnedFd)>,
    control_socket: OwnedFd,
    material: &view::Material,
) -> Vec<Child> {
    let mut control_socket = Some(control_socket);
    let (views, mut sockets): (Vec<_>, Vec<_>) = listeners.into_iter().unzip();
    // Both ends of every role-to-role channel, until handed out.
    let mut link_ends: HashMap<(Role, Role), OwnedFd> = HashMap::new();
    for (a, b) in proc::links() {
        let (x, y) = sys::fdpass::seqpacket_pair().unwrap_or_else(|e| fatal!("socketpair: {e}"));
        link_ends.insert((a, b), x);
        link_ends.insert((b, a), y);
    }
    // lka <-> delivery runner: lka asks it for ~/.forward files.
    let (lka_runner, runner_lka) =
        sys::fdpass::seqpacket_pair().unwrap_or_else(|e| fatal!("socketpair: {e}"));
    let mut lka_runner = Some(lka_runner);
    let mut children = Vec::new();
    for spec in ROLES {
        let role = spec.role;
        let (ours, theirs) =
            sys::fdpass::seqpacket_pair().unwrap_or_else(|e| fatal!("socketpair: {e}"));
        let pid = proc::spawn(exe, role, opts.debug, opts.verbose, theirs.as_fd(), None)
            .unwrap_or_else(|e| fatal!("cannot start {role}: {e}"));
        drop(theirs);
        let chan = Channel::new(ours, role).unwrap_or_else(|e| fatal!("{role} channel: {e}"));
        let mut child = Child {
            role,
            pid,
            chan,
            ready: false,
            exited: None,
        };
        let v = view::for_role(role, cfg, hostname, &views, material)
            .unwrap_or_else(|| fatal!("no view for {role}"));
        let mut setup = || -> Result<(), IpcError> {
            let bytes = postcard::to_stdvec(&v)
                .map_err(|e| IpcError::Frame(frame::FrameError::Encode(e.to_string())))?;
            for chunk in bytes.chunks(frame::MAX_PAYLOAD - 16) {
                child
                    .chan
                    .send(&FromParent::ConfigChunk(chunk.to_vec()), Vec::new())?;
                child.chan.flush_blocking(Duration::from_secs(10))?;
            }
            child.chan.send(
                &FromParent::ConfigEnd {
                    len: bytes.len() as u64,
                },
                Vec::new(),
            )?;
            for &peer in spec.peers {
                let fd = link_ends.remove(&(role, peer)).ok_or(IpcError::Closed)?;
                child.chan.send(&FromParent::Peer { peer }, vec![fd])?;
            }
            if role == Role::Lka {
                let fd = lka_runner.take().ok_or(IpcError::Closed)?;
                child.chan.send(&FromParent::RunnerChannel, vec![fd])?;
            }
            if role == Role::Control {
                let fd = control_socket.take().ok_or(IpcError::Closed)?;
                child
                    .chan
                    .send(&FromParent::Listener { index: 0 }, vec![fd])?;
            }
            if role == Role::Dispatcher {
                for (i, fd) in std::mem::take(&mut sockets).into_iter().enumerate() {
                    child
                        .chan
                        .send(&FromParent::Listener { index: i as u32 }, vec![fd])?;
                }
            }
            child.chan.send(&FromParent::Start, Vec::new())?;
            child.chan.flush_blocking(Duration::from_secs(10))
        };
        if let Err(e) = setup() {
            // The child may have died already: its exit is reported by
            // supervise(); just record why its setup stopped.
            log::warn!("warn: sending setup to {role}: {e}");
        }
        children.push(child);
    }
    // The delivery runner: started now, while the parent is unsandboxed,
    // so that it keeps root to become each user (see delivery::runner).
    let (ours, theirs) =
        sys::fdpass::seqpacket_pair().unwrap_or_else(|e| fatal!("socketpair: {e}"));
    let role = Role::Delivery;
    let pid = proc::spawn(exe, role, opts.debug, opts.verbose, theirs.as_fd(), None)
        .unwrap_or_else(|e| fatal!("cannot start {role}: {e}"));
    drop(theirs);
    let mut chan = Channel::new(ours, role).unwrap_or_else(|e| fatal!("{role} channel: {e}"));
    if let Err(e) = chan.send(&ToRunner::LkaChannel, vec![runner_lka]) {
        log::warn!("warn: sending setup to {role}: {e}");
    }
    // sendmail's offline queue, run by the runner (it stays root, with no
    // sandbox for the exec to inherit), with the smtpctl beside smtpd.
    let smtpd: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(exe.as_bytes());
    let smtpd = std::path::Path::new(smtpd);
    let smtpctl = smtpd
        .with_file_name("smtpctl")
        .to_string_lossy()
        .into_owned();
    if let Err(e) = chan.send(&ToRunner::Offline { smtpctl }, Vec::new()) {
        log::warn!("warn: sending setup to {role}: {e}");
    }
    children.push(Child {
        role,
        pid,
        chan,
        // It has no sandbox to set up and no handshake.
        ready: true,
        exited: None,
    });
    children
}

/// Turn the queue's request into a job for the runner: the method comes
/// from our own config, by the action's name; the user from the action's
/// `user` option or the destination's local part (without its
/// sub-address).
fn local_job(cfg: &Config, hostname: &str, req: LocalRequest) -> Result<LocalJob, String> {
    let action = cfg
        .actions
        .iter()
        .find(|a| a.name == req.action)
        .ok_or_else(|| format!("no action {:?}", req.action))?;
    let method = match &req.target {
        Some(LocalTarget::File(path)) => Some(LocalMethod::File { path: path.clone() }),
        Some(LocalTarget::Command(command)) => Some(LocalMethod::Mda {
            command: command.clone(),
        }),
        None => None,
    };
    let method = match method {
        Some(m) => m,
        None => match &action.method {
            config::ast::Method::Mbox => LocalMethod::Mbox,
            config::ast::Method::Maildir { path, junk } => LocalMethod::Maildir {
                path: path.clone(),
                junk: *junk,
            },
            config::ast::Method::Mda(command) => LocalMethod::Mda {
                command: command.clone(),
            },
            config::ast::Method::Lmtp { dest, rcpt_to } => LocalMethod::Lmtp {
                dest: dest.clone(),
                rcpt_to: *rcpt_to,
            },
            _ => return Err(format!("action {:?} does not deliver locally", req.action)),
        },
    };
    // The action's `user` delivers everything as that user (virtual
    // domains); else the user lka resolved; else the local part.
    let user = match &action.local.user {
        Some(u) => u.clone(),
        None if !req.user.is_empty() => req.user.clone(),
        None => {
            let local = req
                .dest
                .rsplit_once('@')
                .map_or(req.dest.as_str(), |(l, _)| l);
            let delim = cfg.settings.sub_addr_delim;
            local.split(delim).next().unwrap_or(local).to_lowercase()
        }
    };
    if user.is_empty() || user.starts_with('-') || user.contains(['/', '\0']) {
        return Err(format!("no valid local user in {:?}", req.dest));
    }
    // The action's `user` is a system user: looked up by name.
    let account = if action.local.user.is_some() {
        None
    } else {
        req.account
    };
    Ok(LocalJob {
        id: req.id,
        user,
        account,
        method,
        sender: req.sender,
        rcpt: req.rcpt,
        dest: req.dest,
        hostname: hostname.to_string(),
    })
}

/// Wait for every role's Ready, then watch them until a signal or a death.
/// Ok(()) is an orderly stop; Err(code) a failure.
fn supervise(
    children: &mut [Child],
    signals: &OwnedFd,
    started: Instant,
    cfg: &Config,
    hostname: &str,
) -> Result<(), i32> {
    let mut lp = Loop::new().unwrap_or_else(|e| fatal!("event loop: {e}"));
    for (i, c) in children.iter().enumerate() {
        lp.watch(c.chan.raw_fd(), Token(i), false)
            .unwrap_or_else(|e| fatal!("watch: {e}"));
    }
    {
        use std::os::fd::AsRawFd;
        lp.watch(signals.as_raw_fd(), SIGNALS, false)
            .unwrap_or_else(|e| fatal!("watch: {e}"));
    }
    let handshake_deadline = started + crate::prologue::START_TIMEOUT;
    let mut all_ready = false;
    loop {
        let deadline = if all_ready {
            None
        } else {
            Some(handshake_deadline)
        };
        let events = lp
            .wait(deadline)
            .unwrap_or_else(|e| fatal!("event loop: {e}"));
        for r in events {
            if r.token == SIGNALS {
                for sig in sys::signal::drain(signals) {
                    match sig {
                        libc::SIGCHLD => reap(children)?,
                        libc::SIGHUP => log::info!("info: ignoring SIGHUP (no reload; restart smtpd to apply a new config)"),
                        _ => {
                            log::info!("info: received {}, shutting down", sys::process::signal_name(sig));
                            return Ok(());
                        }
                    }
                }
                continue;
            }
            let Some(c) = children.get_mut(r.token.0) else {
                continue;
            };
            if r.writable {
                if let Err(e) = c.chan.flush() {
                    log::warn!("warn: {} channel: {e}; shutting down", c.role);
                    return Err(1);
                }
            }
            let mut out = Vec::new();
            let received = if c.role == Role::Delivery {
                receive_runner(c, &mut out)
            } else {
                receive_role(c, cfg, hostname, &mut out)
            };
            match received {
                Ok(true) => {}
                // A closed channel means the child is exiting: SIGCHLD
                // tells how. Stop watching it meanwhile.
                Ok(false) => {
                    let _ = lp.unwatch(c.chan.raw_fd());
                }
                Err(e) => {
                    log::warn!("warn: {} channel: {e}; shutting down", c.role);
                    return Err(1);
                }
            }
            for (to, m, fds) in out {
                if matches!(m, Relay::Stop) {
                    log::info!("info: smtpctl stop, shutting down");
                    return Ok(());
                }
                send_to(children, &lp, to, m, fds)?;
            }
            let c = &children[r.token.0];
            if c.exited.is_none() {
                let _ = lp.rewatch(c.chan.raw_fd(), r.token, c.chan.wants_write());
            }
        }
        if !all_ready {
            if children.iter().all(|c| c.ready) {
                all_ready = true;
                log::info!("info: smtpd-rs {} starting", crate::VERSION);
            } else if Instant::now() >= handshake_deadline {
                let late: Vec<&str> = children
                    .iter()
                    .filter(|c| !c.ready)
                    .map(|c| c.role.name())
                    .collect();
                log::warn!(
                    "warn: roles not ready after {:?}: {}",
                    crate::prologue::START_TIMEOUT,
                    late.join(" ")
                );
                return Err(1);
            }
        }
    }
}

/// A message the parent passes on: to the runner or to a role.
enum Relay {
    Runner(ToRunner),
    Role(FromParent),
    /// Not a message: control relayed `smtpctl stop`; shut down.
    Stop,
}

/// Read a role's channel: its Ready, and the queue's delivery requests,
/// passed on as runner jobs. Ok(false) when the channel closed.
fn receive_role(
    c: &mut Child,
    cfg: &Config,
    hostname: &str,
    out: &mut Vec<(Role, Relay, Vec<OwnedFd>)>,
) -> Result<bool, String> {
    loop {
        let m = match c.chan.recv::<ToParent>() {
            Ok(None) => return Ok(true),
            Ok(Some(m)) => m,
            Err(IpcError::Closed) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        match m.msg {
            ToParent::Ready { role } if role == c.role && !c.ready => c.ready = true,
            // `smtpctl stop`: control checked that root asked.
            ToParent::Stop if c.role == Role::Control && c.ready => {
                out.push((Role::Parent, Relay::Stop, Vec::new()));
            }
            // `smtpctl log verbose|brief`: here, and in every role (the
            // delivery runner keeps what it was started with).
            ToParent::Verbose { on } if c.role == Role::Control && c.ready => {
                slog::set_verbose(on);
                for spec in ROLES {
                    let m = FromParent::Verbose { on };
                    out.push((spec.role, Relay::Role(m), Vec::new()));
                }
            }
            ToParent::Deliver(req) if c.role == Role::Queue && c.ready => {
                let id = req.id;
                match local_job(cfg, hostname, req) {
                    Ok(job) => out.push((Role::Delivery, Relay::Runner(ToRunner::Run(job)), m.fds)),
                    Err(e) => {
                        let outcome = Outcome::PermFail(format!("550 5.1.1 {e}"));
                        let done = FromParent::DeliveryDone { id, outcome };
                        out.push((Role::Queue, Relay::Role(done), Vec::new()));
                    }
                }
            }
            other => {
                return Err(format!(
                    "unexpected {}",
                    crate::ipc::msg::Message::name(&other)
                ))
            }
        }
    }
}

/// Read the runner's channel: each finished delivery goes to the queue.
fn receive_runner(
    c: &mut Child,
    out: &mut Vec<(Role, Relay, Vec<OwnedFd>)>,
) -> Result<bool, String> {
    loop {
        match c.chan.recv::<FromRunner>() {
            Ok(None) => return Ok(true),
            Ok(Some(m)) => match m.msg {
                FromRunner::Done { id, outcome } => {
                    let done = FromParent::DeliveryDone { id, outcome };
                    out.push((Role::Queue, Relay::Role(done), Vec::new()));
                }
                FromRunner::Forward(_) => return Err("unexpected Forward".into()),
            },
            Err(IpcError::Closed) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn send_to(
    children: &mut [Child],
    lp: &Loop,
    to: Role,
    m: Relay,
    fds: Vec<OwnedFd>,
) -> Result<(), i32> {
    let Some((i, c)) = children.iter_mut().enumerate().find(|(_, c)| c.role == to) else {
        return Ok(());
    };
    // A role still starting takes only its setup: a verbosity change
    // before it is ready would be refused as out of place.
    if matches!(m, Relay::Role(FromParent::Verbose { .. })) && !c.ready {
        return Ok(());
    }
    let sent = match &m {
        Relay::Runner(m) => c.chan.send(m, fds),
        Relay::Role(m) => c.chan.send(m, fds),
        Relay::Stop => return Ok(()),
    };
    if let Err(e) = sent {
        log::warn!("warn: {to} channel: {e}; shutting down");
        return Err(1);
    }
    let _ = lp.rewatch(c.chan.raw_fd(), Token(i), c.chan.wants_write());
    Ok(())
}

/// Collect exited children; any role's death stops the daemon.
fn reap(children: &mut [Child]) -> Result<(), i32> {
    let mut lost = false;
    while let Ok(Some((pid, exit))) = sys::process::try_wait() {
        if let Some(c) = children.iter_mut().find(|c| c.pid == pid) {
            c.exited = Some(exit);
            log::warn!("warn: lost child: {} {exit}", c.role);
            lost = true;
        }
    }
    if lost {
        Err(1)
    } else {
        Ok(())
    }
}

/// Ask every live role to exit, wait a little, kill what is left.
fn shutdown(children: &mut [Child], code: i32) -> i32 {
    for c in children.iter_mut().filter(|c| c.exited.is_none()) {
        let _ = if c.role == Role::Delivery {
            c.chan.send(&ToRunner::Shutdown, Vec::new())
        } else {
            c.chan.send(&FromParent::Shutdown, Vec::new())
        };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while children.iter().any(|c| c.exited.is_none()) && Instant::now() < deadline {
        match sys::process::try_wait() {
            Ok(Some((pid, exit))) => {
                if let Some(c) = children.iter_mut().find(|c| c.pid == pid) {
                    if exit != Exit::Code(0) {
                        log::debug!("debug: {} {exit}", c.role);
                    }
                    c.exited = Some(exit);
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    for c in children.iter_mut().filter(|c| c.exited.is_none()) {
        log::warn!("warn: {} did not stop, killing it", c.role);
        let _ = sys::process::kill(c.pid, libc::SIGKILL);
    }
    while let Ok(Some(_)) = sys::process::try_wait() {}
    if code == 0 {
        log::info!("info: smtpd-rs exiting");
    } else {
        log::warn!("warn: parent terminating");
    }
    code
}
