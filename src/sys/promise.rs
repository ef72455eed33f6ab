//! Pledge-style promises: the vocabulary the role table speaks.
//!
//! On OpenBSD a set is joined into the string `pledge(2)` takes. On Linux
//! `seccomp.rs` turns each promise into a list of allowed system calls.
//! The names and meanings are OpenBSD's, so the role table reads the same
//! on both systems.

/// One pledge(2) promise. Only the ones smtpd's roles can ask for exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Promise {
    /// Basic I/O on descriptors already open, memory, time, exit.
    Stdio,
    /// Read-only filesystem access (open for reading, stat, readdir).
    Rpath,
    /// Write to files that exist (open for writing, fsync, truncate).
    Wpath,
    /// Create, rename and remove files and directories.
    Cpath,
    /// Advisory locks (flock, fcntl locks).
    Flock,
    /// Change file attributes (chmod, utimes).
    Fattr,
    /// Change file ownership.
    Chown,
    /// IPv4/IPv6 sockets: socket, connect, bind, listen, accept.
    Inet,
    /// AF_UNIX sockets: socket, connect, bind, listen, accept.
    Unix,
    /// Name resolution: UDP/TCP to the resolver and reading its files.
    Dns,
    /// Read the password and group databases.
    Getpw,
    /// Send descriptors with SCM_RIGHTS.
    Sendfd,
    /// Receive descriptors with SCM_RIGHTS.
    Recvfd,
    /// fork, wait, kill, process groups.
    Proc,
    /// execve.
    Exec,
    /// setuid, setgid, setgroups and friends.
    Id,
}

impl Promise {
    /// The word OpenBSD's pledge(2) uses for this promise.
    pub const fn name(self) -> &'static str {
        match self {
            Promise::Stdio => "stdio",
            Promise::Rpath => "rpath",
            Promise::Wpath => "wpath",
            Promise::Cpath => "cpath",
            Promise::Flock => "flock",
            Promise::Fattr => "fattr",
            Promise::Chown => "chown",
            Promise::Inet => "inet",
            Promise::Unix => "unix",
            Promise::Dns => "dns",
            Promise::Getpw => "getpw",
            Promise::Sendfd => "sendfd",
            Promise::Recvfd => "recvfd",
            Promise::Proc => "proc",
            Promise::Exec => "exec",
            Promise::Id => "id",
        }
    }
}

/// The promise string pledge(2) takes, e.g. `"stdio inet"`.
pub fn promise_string(promises: &[Promise]) -> String {
    promises
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_names_in_order() {
        assert_eq!(
            promise_string(&[Promise::Stdio, Promise::Inet]),
            "stdio inet"
        );
        assert_eq!(promise_string(&[]), "");
    }
}
