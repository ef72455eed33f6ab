//! The delivery runner: the one process that may become any local user.
//!
//! The parent starts it (`smtpd -x delivery`) before it pledges itself, so
//! that it keeps root and no sandbox: a delivery runs the user's own
//! programs (an `mda` command, procmail, a filter in .forward), which a
//! seccomp filter inherited across exec would kill on the first system
//! call it does not list, and it must open files as any user. What keeps
//! it safe is what it listens to: only the parent, which built each job
//! from its own config (the method) and from a queue envelope (addresses
//! checked when they were stored), over its channel on descriptor 3.
//!
//! For each job it forks a child that looks the user up, drops to it for
//! good (groups, gid, uid; root's mail is the one case that stays root,
//! and only for mbox and maildir), runs the method from [`super`] on the
//! message file it was given, writes the outcome to a pipe and exits. The
//! runner reads that outcome (bounded, decoded without trust: the child
//! ran as the user), reaps the child, and tells the parent. A child that
//! outlives [`DELIVERY_TIMEOUT`] is killed and the delivery is a
//! temporary failure. At most [`MAX_RUNNING`] run at once; the rest wait.

#![forbid(unsafe_code)]

use super::{lmtp, maildir, mbox, mda, Outcome, Recipient};
use crate::event::Loop;
use crate::ipc::msg::{ForwardReply, ForwardRequest, FromRunner, LocalJob, LocalMethod, ToRunner};
use crate::ipc::{Channel, IpcError};
use crate::proc::Role;
use crate::sys;
use mio::Token;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest a delivery may take (the mda command's own limit is a
/// little shorter, so a hung command is reported as such).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(330);
/// What an mda command gets.
const MDA_TIMEOUT: Duration = Duration::from_secs(300);
/// Deliveries running at once.
const MAX_RUNNING: usize = 32;
/// Jobs waiting for a slot, beyond which the runner refuses (TempFail).
const MAX_WAITING: usize = 100_000;
/// The largest outcome a child may report.
const MAX_REPORT: usize = 4096;
/// Where mboxes live.
const MAIL_SPOOL: &str = "/var/mail";

const PARENT: Token = Token(0);
const LKA: Token = Token(usize::MAX);
const FIRST_CHILD: usize = 1;

struct Running {
    id: u64,
    pid: libc::pid_t,
    report: UnixStream,
    got: Vec<u8>,
    started: Instant,
}

/// Entry point of `smtpd -x delivery`.
pub fn run(debug: bool, verbose: bool) -> ! {
    if let Err(e) = sys::process::closefrom(4) {
        crate::fatal!("delivery: closefrom: {e}");
    }
    let target = if debug {
        crate::log::Target::Stderr
    } else {
        crate::log::Target::Syslog
    };
    crate::log::init(target, verbose, "smtpd");
    let _ = sys::proctitle::set("delivery");
    // As the roles: the parent alone acts on these.
    if let Err(e) = sys::signal::ignore(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE])
    {
        crate::fatal!("delivery: signals: {e}");
    }
    let fd = sys::process::take_channel_fd().unwrap_or_else(|e| crate::fatal!("delivery: {e}"));
    let chan = Channel::new(fd, Role::Parent).unwrap_or_else(|e| crate::fatal!("delivery: {e}"));
    match serve(chan) {
        Ok(()) => sys::process::exit_now(0),
        Err(e) => {
            log::warn!("warn: delivery: {e}; shutting down");
            sys::process::exit_now(1)
        }
    }
}

fn serve(mut chan: Channel) -> Result<(), String> {
    let mut lp = Loop::new().map_err(|e| e.to_string())?;
    lp.watch(chan.raw_fd(), PARENT, false)
        .map_err(|e| e.to_string())?;
    let mut waiting: VecDeque<(LocalJob, OwnedFd)> = VecDeque::new();
    let mut running: HashMap<usize, Running> = HashMap::new();
    let mut next_token = FIRST_CHILD;
    let mut lka: Option<Channel> = None;
    // Children that reported and are exiting: reaped without waiting.
    let mut zombies: Vec<libc::pid_t> = Vec::new();
    loop {
        zombies.retain(|&pid| matches!(sys::process::try_wait_pid(pid), Ok(None)));
        let reap = (!zombies.is_empty()).then(|| Instant::now() + Duration::from_millis(50));
        let deadline = running
            .values()
            .map(|r| r.started + DELIVERY_TIMEOUT)
            .chain(reap)
            .min();
        for r in lp.wait(deadline).map_err(|e| e.to_string())? {
            if r.token == PARENT {
                if r.writable {
                    chan.flush().map_err(|e| format!("parent channel: {e}"))?;
                }
                loop {
                    let got = match chan.recv::<ToRunner>() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(IpcError::Closed) => return Ok(()),
                        Err(e) => return Err(format!("parent channel: {e}")),
                    };
                    match got.msg {
                        ToRunner::Shutdown => return Ok(()),
                        ToRunner::LkaChannel if lka.is_none() => {
                            let fd = got
                                .fds
                                .into_iter()
                                .next()
                                .ok_or("LkaChannel without descriptor")?;
                            let c = Channel::new(fd, Role::Lka).map_err(|e| e.to_string())?;
                            lp.watch(c.raw_fd(), LKA, false)
                                .map_err(|e| e.to_string())?;
                            lka = Some(c);
                        }
                        ToRunner::Offline { smtpctl } => super::offline::start(smtpctl.into()),
                        ToRunner::LkaChannel | ToRunner::ReadForward(_) => {
                            return Err(format!(
                                "parent channel: unexpected {}",
                                crate::ipc::msg::Message::name(&got.msg)
                            ))
                        }
                        ToRunner::Run(job) => {
                            let fd = got.fds.into_iter().next().ok_or("Run without a file")?;
                            if waiting.len() >= MAX_WAITING {
                                let why = "too many deliveries waiting".to_string();
                                done(&mut chan, job.id, Outcome::TempFail(why))?;
                            } else {
                                waiting.push_back((job, fd));
                            }
                        }
                    }
                }
            } else if r.token == LKA {
                if let Some(c) = lka.as_mut() {
                    if serve_lka(c)? {
                        lp.rewatch(c.raw_fd(), LKA, c.wants_write())
                            .map_err(|e| e.to_string())?;
                    } else {
                        let _ = lp.unwatch(c.raw_fd());
                        lka = None;
                    }
                }
            } else if let Some(run) = running.get_mut(&r.token.0) {
                if read_report(run) {
                    let run = running.remove(&r.token.0).ok_or("lost a delivery")?;
                    let _ = lp.unwatch(run.report.as_raw_fd());
                    finish(&mut chan, run, None, &mut zombies)?;
                }
            }
        }
        // Kill what overstayed.
        let now = Instant::now();
        let late: Vec<usize> = running
            .iter()
            .filter(|(_, r)| now >= r.started + DELIVERY_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(run) = running.remove(&t) {
                let _ = lp.unwatch(run.report.as_raw_fd());
                let _ = sys::process::kill(run.pid, libc::SIGKILL);
                finish(&mut chan, run, Some("delivery timed out"), &mut zombies)?;
            }
        }
        while running.len() < MAX_RUNNING {
            let Some((job, fd)) = waiting.pop_front() else {
                break;
            };
            match start(&job, fd) {
                Ok((pid, report)) => {
                    let token = next_token;
                    next_token += 1;
                    lp.watch(report.as_raw_fd(), Token(token), false)
                        .map_err(|e| e.to_string())?;
                    running.insert(
                        token,
                        Running {
                            id: job.id,
                            pid,
                            report,
                            got: Vec::new(),
                            started: Instant::now(),
                        },
                    );
                }
                Err(e) => {
                    let why = format!("cannot start the delivery: {e}");
                    done(&mut chan, job.id, Outcome::TempFail(why))?;
                }
            }
        }
        lp.rewatch(chan.raw_fd(), PARENT, chan.wants_write())
            .map_err(|e| e.to_string())?;
    }
}

/// lka's questions: `~/.forward` files, nothing else (anything else on
/// this channel ends the runner, and with it the daemon).
/// Ok(false) once lka has gone (it exits first when the daemon stops).
fn serve_lka(c: &mut Channel) -> Result<bool, String> {
    c.flush().map_err(|e| format!("lka channel: {e}"))?;
    loop {
        let got = match c.recv::<ToRunner>() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(true),
            Err(IpcError::Closed) => return Ok(false),
            Err(e) => return Err(format!("lka channel: {e}")),
        };
        match got.msg {
            ToRunner::ReadForward(req) => {
                let reply = read_forward(&req);
                c.send(&FromRunner::Forward(reply), Vec::new())
                    .map_err(|e| format!("lka channel: {e}"))?;
            }
            other => {
                return Err(format!(
                    "lka channel: unexpected {}",
                    crate::ipc::msg::Message::name(&other)
                ))
            }
        }
    }
}

/// A user's `~/.forward`, read as root with every check of
/// `lka::forward` (no link followed, owner, modes, one link, size).
fn read_forward(req: &ForwardRequest) -> ForwardReply {
    match crate::lka::forward::read_forward(Path::new(&req.home), req.uid) {
        Ok(None) => ForwardReply::Missing,
        Ok(Some(text)) => ForwardReply::Content(text),
        Err(e) => ForwardReply::Refused {
            reason: e.to_string(),
            temporary: e.is_temporary(),
        },
    }
}

/// Read what the child reported; true at its end (EOF).
fn read_report(run: &mut Running) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match run.report.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                let room = MAX_REPORT.saturating_sub(run.got.len());
                run.got.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Reap the child and tell the parent how its delivery ended.
///
/// A child that reported is about to exit: it is reaped later without
/// waiting (`zombies`), so the loop never sleeps on it. Only a child
/// that died without a report is waited for here, for its exit status.
fn finish(
    chan: &mut Channel,
    run: Running,
    killed: Option<&str>,
    zombies: &mut Vec<libc::pid_t>,
) -> Result<(), String> {
    let outcome = match killed {
        Some(why) => {
            let _ = wait(run.pid);
            Outcome::TempFail(why.into())
        }
        None => match postcard::from_bytes::<Outcome>(&run.got) {
            Ok(o) => {
                zombies.push(run.pid);
                sanitize(o)
            }
            Err(_) => Outcome::TempFail(format!("delivery process {}", wait(run.pid))),
        },
    };
    done(chan, run.id, outcome)
}

/// Tell the parent how delivery `id` ended.
fn done(chan: &mut Channel, id: u64, outcome: Outcome) -> Result<(), String> {
    chan.send(&FromRunner::Done { id, outcome }, Vec::new())
        .map_err(|e| format!("parent channel: {e}"))
}

/// The child wrote this as the user: keep its text printable and short.
fn sanitize(o: Outcome) -> Outcome {
    let clean = |s: String| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(512)
            .collect()
    };
    match o {
        Outcome::Delivered => Outcome::Delivered,
        Outcome::TempFail(s) => Outcome::TempFail(clean(s)),
        Outcome::PermFail(s) => Outcome::PermFail(clean(s)),
    }
}

fn wait(pid: libc::pid_t) -> String {
    // The child closed its end last thing before _exit: a short wait.
    for _ in 0..1000 {
        match sys::process::try_wait_pid(pid) {
            Ok(Some(exit)) => return exit.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return format!("lost ({e})"),
        }
    }
    let _ = sys::process::kill(pid, libc::SIGKILL);
    let _ = sys::process::try_wait_pid(pid);
    "killed".into()
}

/// Fork the child of one delivery.
fn start(job: &LocalJob, message: OwnedFd) -> std::io::Result<(libc::pid_t, UnixStream)> {
    let (report, child_end) = UnixStream::pair()?;
    let pid = sys::process::fork()?;
    if pid == 0 {
        drop(report);
        let outcome = deliver(job, File::from(message));
        let mut child_end = child_end;
        let bytes = postcard::to_stdvec(&outcome).unwrap_or_default();
        let _ = child_end.write_all(&bytes);
        sys::process::exit_now(0);
    }
    drop(child_end);
    report.set_nonblocking(true)?;
    Ok((pid, report))
}

/// In the child: become the user and deliver.
fn deliver(job: &LocalJob, mut message: File) -> Outcome {
    let found = match &job.account {
        // A userbase user: lka found it in the action's table.
        Some(a) => Ok(sys::privdrop::Account {
            name: job.user.clone(),
            uid: a.uid,
            gid: a.gid,
            home: a.home.clone(),
        }),
        None => sys::privdrop::lookup(&job.user),
    };
    let acct = match found {
        Ok(a) => a,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::PermFail(format!("550 5.1.1 Invalid recipient: no user {}", job.user))
        }
        Err(e) => return Outcome::TempFail(format!("user {}: {e}", job.user)),
    };
    if job.account.is_some() && acct.uid == 0 {
        return Outcome::PermFail("550 5.7.1 userbase user with uid 0 refused".into());
    }
    let mbox_path = Path::new(MAIL_SPOOL).join(&acct.name);
    if job.method == LocalMethod::Mbox {
        // As OpenSMTPD's mda_mbox_init: root makes the user's mailbox, so
        // the user needs no write access to the spool directory.
        if let Err(e) = create_mbox(&mbox_path, acct.uid, acct.gid) {
            return Outcome::TempFail(format!("mailbox {}: {e}", mbox_path.display()));
        }
    }
    if acct.uid == 0 {
        if matches!(job.method, LocalMethod::Mda { .. }) {
            return Outcome::PermFail("550 5.7.1 mda delivery to root refused".into());
        }
    } else if let Err(e) = sys::privdrop::drop_to(&acct) {
        return Outcome::TempFail(format!("cannot become {}: {e}", acct.name));
    }
    let r = Recipient {
        sender: job.sender.clone(),
        rcpt: job.rcpt.clone(),
        dest: job.dest.clone(),
        user: acct.name.clone(),
        home: PathBuf::from(&acct.home),
        uid: acct.uid,
        gid: acct.gid,
        hostname: job.hostname.clone(),
    };
    match delivered_to(&mut message, &job.dest) {
        Ok(true) => return Outcome::PermFail("Loop detected".into()),
        Ok(false) => {}
        Err(e) => return Outcome::TempFail(format!("cannot read the message: {e}")),
    }
    match &job.method {
        LocalMethod::Mbox => mbox::deliver(&r, &mbox_path, &mut message),
        LocalMethod::File { path } => mbox::deliver(&r, Path::new(path), &mut message),
        LocalMethod::Maildir { path, junk } => {
            let dir = maildir_path(path.as_deref(), &acct.name, &acct.home, &job.dest);
            maildir::deliver(&r, &dir, *junk, &mut message)
        }
        LocalMethod::Mda { command } => mda::deliver(&r, command, &mut message, MDA_TIMEOUT),
        LocalMethod::Lmtp { dest, rcpt_to } => match lmtp::LmtpTarget::parse(dest, *rcpt_to) {
            Ok(target) => {
                // As OpenSMTPD's mda.c, for every method: Return-Path and
                // Delivered-To before the message (CRLF, as LMTP carries it).
                let headers = super::message::delivery_headers(&r).replace('\n', "\r\n");
                let mut input = std::io::Cursor::new(headers.into_bytes()).chain(message);
                let rcpts = std::slice::from_ref(&r);
                let mut outcomes = lmtp::deliver(&target, rcpts, &mut input, Default::default());
                outcomes
                    .pop()
                    .unwrap_or_else(|| Outcome::TempFail("lmtp: no reply".into()))
            }
            Err(e) => Outcome::PermFail(format!("lmtp {dest}: {e}")),
        },
    }
}

/// OpenSMTPD's mda_check_loop: a `Delivered-To:` header naming this
/// destination means the message came back around (a .forward or alias
/// loop across hosts). Reads the header section only, then rewinds.
fn delivered_to(message: &mut File, dest: &str) -> std::io::Result<bool> {
    use std::io::{BufRead, BufReader, Seek, SeekFrom};
    let mut found = false;
    {
        let mut r = BufReader::new(&mut *message).take(1 << 20);
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                break;
            }
            if let Some((name, value)) = text.split_once(':') {
                if name.eq_ignore_ascii_case("delivered-to")
                    && value.trim().eq_ignore_ascii_case(dest)
                {
                    found = true;
                    break;
                }
            }
        }
    }
    message.seek(SeekFrom::Start(0))?;
    Ok(found)
}

/// The user's mailbox, created as root if missing: 0600, the user's.
fn create_mbox(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            f.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // mbox::deliver checks what is there (a regular file, one
            // link, the user's) once it runs as the user.
            let m = std::fs::symlink_metadata(path)?;
            if m.uid() != uid && uid != 0 {
                log::warn!(
                    "warn: delivery: {} is not owned by uid {uid}",
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `maildir [path]`: ~/Maildir by default; `~/` and the formats
/// OpenSMTPD's configs use for virtual domains are expanded:
/// `%{user.username}`, `%{user.directory}`, `%{dest.user}`,
/// `%{dest.domain}` (lower-cased, and made safe for a path as
/// OpenSMTPD's mda_expand_format does: `/` and the other characters of
/// MAILADDR_ESCAPE become `:`, and so does a leading `.`, so an address
/// can never climb out of the directory).
pub fn maildir_path(path: Option<&str>, user: &str, home: &str, dest: &str) -> PathBuf {
    let (dest_user, dest_domain) = dest.rsplit_once('@').unwrap_or((dest, ""));
    let p = path.unwrap_or("~/Maildir");
    let p = p
        .replace("%{user.username}", user)
        .replace("%{user.directory}", home)
        .replace("%{dest.user}", &path_safe(dest_user))
        .replace("%{dest.domain}", &path_safe(dest_domain));
    match p.strip_prefix("~/") {
        Some(rest) => Path::new(home).join(rest),
        None if p == "~" => PathBuf::from(home),
        None => PathBuf::from(p),
    }
}

/// An address part as a path component (see `maildir_path`).
fn path_safe(s: &str) -> String {
    const ESCAPE: &str = "!#$%&'*/?^`{|}~\\";
    s.to_lowercase()
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if ESCAPE.contains(c) || (i == 0 && c == '.') || c.is_control() {
                ':'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_maildir_paths_cannot_climb_out() {
        let p = |dest| {
            maildir_path(
                Some("/var/vmail/%{dest.domain}/%{dest.user}"),
                "vmail",
                "/var/vmail",
                dest,
            )
        };
        assert_eq!(
            p("Bob@Example.org"),
            Path::new("/var/vmail/example.org/bob")
        );
        assert_eq!(
            p("../x@example.org"),
            Path::new("/var/vmail/example.org/:.:x")
        );
        assert_eq!(p("a/b@c/d"), Path::new("/var/vmail/c:d/a:b"));
    }

    #[test]
    fn maildir_paths() {
        assert_eq!(
            maildir_path(None, "bob", "/home/bob", "Bob@Example.org"),
            Path::new("/home/bob/Maildir")
        );
        assert_eq!(
            maildir_path(Some("~/Mail/inbox"), "bob", "/home/bob", "Bob@Example.org"),
            Path::new("/home/bob/Mail/inbox")
        );
        assert_eq!(
            maildir_path(
                Some("/var/vmail/%{user.username}"),
                "bob",
                "/home/bob",
                "Bob@Example.org"
            ),
            Path::new("/var/vmail/bob")
        );
        assert_eq!(
            maildir_path(
                Some("%{user.directory}/.maildir"),
                "bob",
                "/home/bob",
                "Bob@Example.org"
            ),
            Path::new("/home/bob/.maildir")
        );
    }

    #[test]
    fn a_delivered_to_header_for_this_destination_is_a_loop() {
        let path = std::env::temp_dir().join(format!("smtpd-loop-{}", std::process::id()));
        let text = "Received: x\r\nDelivered-To: Bob@Example.org\r\n\r\nDelivered-To: body@example.org\r\n";
        std::fs::write(&path, text).unwrap();
        let mut f = File::open(&path).unwrap();
        assert!(delivered_to(&mut f, "bob@example.org").unwrap());
        assert!(!delivered_to(&mut f, "alice@example.org").unwrap());
        assert!(
            !delivered_to(&mut f, "body@example.org").unwrap(),
            "the body is not headers"
        );
        let mut all = String::new();
        f.read_to_string(&mut all).unwrap();
        assert_eq!(all, text, "rewound for the delivery");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn outcomes_from_the_child_are_made_printable() {
        let o = sanitize(Outcome::PermFail("550 no\r\nBcc: x\0".into()));
        assert_eq!(o, Outcome::PermFail("550 no  Bcc: x ".into()));
        let long = sanitize(Outcome::TempFail("x".repeat(10_000)));
        assert!(matches!(long, Outcome::TempFail(s) if s.len() == 512));
    }
}
