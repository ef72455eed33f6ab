//! The roles, as data, and how the parent starts them.
//!
//! `ROLES` is the one place that says what each process may do: its user,
//! its chroot, the paths it may see, the promises it keeps once running, and
//! why it needs each promise beyond "stdio". The prologue (`prologue.rs`)
//! and the sandbox code read the same row; adding a role is adding a row.
//!
//! Each role is a fresh process: the parent fork()s and execve()s its own
//! binary (by absolute path) as `smtpd -x ROLE`, with the channel to the
//! parent on descriptor 3 and nothing else inherited but stdin/out/err. The
//! child rebuilds its state from what the parent sends, so no memory of the
//! parent (and no layout: ASLR is per exec) crosses over.

#![forbid(unsafe_code)]

use crate::sys::promise::Promise::{self, *};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The processes of smtpd, with OpenSMTPD's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Parent,
    Control,
    Lka,
    Queue,
    Scheduler,
    Dispatcher,
    Ca,
    /// Not a sandboxed role and not in `ROLES`: the parent's delivery
    /// runner (`delivery::runner`), which stays root to become users.
    Delivery,
}

impl Role {
    /// The name used with `-x`, in proctitles and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Parent => "parent",
            Role::Control => "control",
            Role::Lka => "lka",
            Role::Queue => "queue",
            Role::Scheduler => "scheduler",
            Role::Dispatcher => "dispatcher",
            Role::Ca => "ca",
            Role::Delivery => "delivery",
        }
    }

    /// The child role named `name` (never the parent: `-x parent` is refused).
    pub fn child_from_name(name: &str) -> Option<Role> {
        ROLES.iter().map(|r| r.role).find(|r| r.name() == name)
    }

    /// This role's row of the table (the parent has none).
    pub fn spec(self) -> Option<&'static RoleSpec> {
        ROLES.iter().find(|r| r.role == self)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The unprivileged user of most roles.
pub const USER_SMTPD: &str = "_smtpd";
/// The user owning the queue.
pub const USER_SMTPQ: &str = "_smtpq";
/// An empty, root-owned, unwritable directory: the chroot of roles that
/// need no files at all.
pub const EMPTY_DIR: &str = "/var/empty";
/// The spool, chroot of the queue role.
pub const SPOOL_DIR: &str = "/var/spool/smtpd";

/// The parent's promises once every role is started: it only watches its
/// children (wait, kill) and talks to them on channels it holds. OpenSMTPD's
/// parent keeps "stdio rpath wpath cpath fattr getpw sendfd proc exec id
/// inet chown unix" for deliveries. Ours adds only recvfd and sendfd: it
/// passes each message file from the queue to the delivery runner, which
/// it started before pledging and which does the deliveries as the users
/// (`delivery::runner`).
pub const PARENT_PROMISES: &[Promise] = &[Stdio, Proc, Recvfd, Sendfd];

/// One row of the role table.
#[derive(Debug)]
pub struct RoleSpec {
    pub role: Role,
    /// The user the role runs as after setup.
    pub user: &'static str,
    /// The directory it chroots into, or None where it must see real paths
    /// (it is then limited by `unveil`).
    pub chroot: Option<&'static str>,
    /// Paths visible to a role without chroot, with unveil(2) permissions
    /// ("r" only, for now). Empty with a chroot: nothing at all is visible.
    pub unveil: &'static [(&'static str, &'static str)],
    /// Promises kept once running. Always starts with Stdio.
    pub promises: &'static [Promise],
    /// Why each promise beyond "stdio" is needed (documentation that the
    /// tests print next to OpenSMTPD's set).
    pub why: &'static str,
    /// OpenSMTPD 6.x's pledge for the same process, for comparison.
    pub opensmtpd: &'static str,
    /// The roles it has a direct channel to (besides the parent).
    pub peers: &'static [Role],
}

/// The role table. Promise sets are what the role needs today; each later
/// feature that widens one must say why here.
pub static ROLES: &[RoleSpec] = &[
    RoleSpec {
        role: Role::Control,
        user: USER_SMTPD,
        chroot: Some(EMPTY_DIR),
        unveil: &[],
        promises: &[Stdio, Unix, Recvfd, Sendfd],
        why: "unix: accept(2) smtpctl's connections on /var/run/smtpd.sock (the parent \
              bound it) and ask the kernel each client's uid; recvfd: a client may attach \
              descriptors to a frame, and receiving one without it would kill control on \
              OpenBSD (they are closed at once and the client dropped); sendfd: sendmail's \
              SMTP session, a socketpair whose ends go to the dispatcher and to smtpctl",
        opensmtpd: "stdio unix recvfd sendfd",
        peers: &[
            Role::Lka,
            Role::Queue,
            Role::Scheduler,
            Role::Dispatcher,
            Role::Ca,
        ],
    },
    RoleSpec {
        role: Role::Lka,
        user: USER_SMTPD,
        chroot: None,
        unveil: &[
            ("/etc/resolv.conf", "r"),
            ("/etc/hosts", "r"),
            ("/etc/mail", "r"),
            // getpwnam(3) for local recipients (nsswitch is read before
            // the sandbox, with the role's own user lookup).
            ("/etc/passwd", "r"),
            ("/etc/group", "r"),
        ],
        promises: &[Stdio, Dns, Getpw],
        why: "dns: the MX and address look-ups for relaying (UDP/TCP to the name servers \
              of /etc/resolv.conf, read at start with /etc/hosts), from its route worker threads; \
              getpw: look up local recipients (getpwnam), and read :include: files under /etc/mail",
        opensmtpd: "stdio rpath inet dns getpw recvfd sendfd",
        peers: &[Role::Control, Role::Queue, Role::Dispatcher],
    },
    RoleSpec {
        role: Role::Queue,
        user: USER_SMTPQ,
        chroot: Some(SPOOL_DIR),
        // Inside the chroot: the spool, and Landlock keeps it that way
        // even for a descriptor that leads out.
        unveil: &[("/", "rwc")],
        promises: &[Stdio, Rpath, Wpath, Cpath, Sendfd],
        why: "rpath wpath cpath: read, write, create and rename spool files (syncfs to commit); \
              sendfd: hand the dispatcher each new message file",
        opensmtpd: "stdio rpath wpath cpath flock recvfd sendfd",
        peers: &[Role::Control, Role::Lka, Role::Scheduler, Role::Dispatcher],
    },
    RoleSpec {
        role: Role::Scheduler,
        user: USER_SMTPD,
        chroot: Some(EMPTY_DIR),
        unveil: &[],
        promises: &[Stdio],
        why: "stdio only: it computes schedules from messages",
        opensmtpd: "stdio",
        peers: &[Role::Control, Role::Queue],
    },
    RoleSpec {
        role: Role::Dispatcher,
        user: USER_SMTPD,
        chroot: Some(EMPTY_DIR),
        unveil: &[],
        promises: &[Stdio, Inet, Recvfd],
        why: "inet: accept(2) on the SMTP listeners the parent bound, and connect(2) to \
              the hosts it relays to; recvfd: the message files queue creates (DATA is \
              written into them) and opens for relaying",
        opensmtpd: "stdio inet unix recvfd sendfd",
        peers: &[Role::Control, Role::Lka, Role::Queue, Role::Ca],
    },
    RoleSpec {
        role: Role::Ca,
        user: USER_SMTPD,
        chroot: Some(EMPTY_DIR),
        unveil: &[],
        promises: &[Stdio],
        why: "stdio only: it signs what the dispatcher sends with keys it holds",
        opensmtpd: "stdio",
        peers: &[Role::Control, Role::Dispatcher],
    },
];

/// Every pair of roles with a channel between them, each pair once, in
/// table order. Derived from `peers` so the two can't disagree.
pub fn links() -> Vec<(Role, Role)> {
    let mut out = Vec::new();
    for spec in ROLES {
        for &peer in spec.peers {
            if spec.role < peer {
                out.push((spec.role, peer));
            }
        }
    }
    out
}

/// Start `role` as a fresh process: execve of our own binary (`exe`, an
/// absolute path) with `-x ROLE`, an empty environment, and `channel` as
/// its descriptor 3. Flags that change logging are passed on.
pub fn spawn(
    exe: &std::ffi::CStr,
    role: Role,
    debug: bool,
    verbose: bool,
    channel: std::os::fd::BorrowedFd<'_>,
    stderr: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<libc::pid_t> {
    use std::ffi::CString;
    let mut argv = vec![
        exe.to_owned(),
        CString::from(c"-x"),
        CString::new(role.name()).map_err(std::io::Error::other)?,
    ];
    if debug {
        argv.push(CString::from(c"-d"));
    }
    if verbose {
        argv.push(CString::from(c"-v"));
    }
    crate::sys::process::spawn(exe, &argv, &[], channel, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_symmetric() {
        for spec in ROLES {
            for &peer in spec.peers {
                let other = peer.spec().expect("peer has a row");
                assert!(
                    other.peers.contains(&spec.role),
                    "{} -> {}",
                    spec.role,
                    peer
                );
            }
        }
    }

    #[test]
    fn every_role_starts_with_stdio_and_stays_within_opensmtpd() {
        for spec in ROLES {
            assert_eq!(spec.promises.first(), Some(&Stdio), "{}", spec.role);
            for p in spec.promises {
                assert!(
                    spec.opensmtpd.split(' ').any(|w| w == p.name()),
                    "{} keeps {} which OpenSMTPD's {} does not",
                    spec.role,
                    p.name(),
                    spec.role
                );
            }
        }
    }

    #[test]
    fn scheduler_and_ca_keep_stdio_alone() {
        assert_eq!(Role::Scheduler.spec().unwrap().promises, &[Stdio]);
        assert_eq!(Role::Ca.spec().unwrap().promises, &[Stdio]);
    }

    #[test]
    fn chrooted_roles_unveil_at_most_their_chroot() {
        for spec in ROLES {
            if spec.chroot.is_some() {
                assert!(spec.unveil.iter().all(|(p, _)| *p == "/"), "{}", spec.role);
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for spec in ROLES {
            assert_eq!(Role::child_from_name(spec.role.name()), Some(spec.role));
        }
        assert_eq!(Role::child_from_name("parent"), None);
        assert_eq!(links().len(), 10);
    }
}
