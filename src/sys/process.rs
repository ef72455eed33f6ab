//! fork + execve, waiting, signalling, descriptor hygiene, daemon(3).

use super::cvt;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// The descriptor a child finds its parent channel on (OpenSMTPD's too).
pub const CHANNEL_FD: RawFd = 3;

/// Fork and execve `path` with `argv` and `envp`, the child's descriptor 3
/// being `channel`. Everything else the parent has open is close-on-exec
/// (std and our own code open nothing without it), and the child closes
/// anything above 3 again on start (`closefrom`), so only 0, 1, 2 and 3
/// cross the exec. Returns the child's pid.
///
/// `stderr`, if given, becomes the child's descriptor 2 (tests capture a
/// role's log lines this way); otherwise 0, 1 and 2 are inherited.
pub fn spawn(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    channel: BorrowedFd<'_>,
    stderr: Option<BorrowedFd<'_>>,
) -> io::Result<libc::pid_t> {
    // Everything the child needs is prepared before fork: after it only
    // async-signal-safe calls are made.
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let chan = channel.as_raw_fd();
    let err = stderr.map(|e| e.as_raw_fd());

    // SAFETY: fork has no memory-safety preconditions; the child below only
    // calls async-signal-safe functions on data prepared before the fork.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: dup2/fcntl/execve/_exit are async-signal-safe; the pointer
        // arrays are NUL-terminated and point at live CStrings.
        unsafe {
            if let Some(e) = err {
                if libc::dup2(e, 2) == -1 {
                    libc::_exit(126);
                }
            }
            if chan == CHANNEL_FD {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                libc::fcntl(chan, libc::F_SETFD, 0);
            } else if libc::dup2(chan, CHANNEL_FD) == -1 {
                libc::_exit(126);
            }
            libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
            libc::_exit(127);
        }
    }
    Ok(pid)
}

/// Take ownership of descriptor 3, the channel the parent passed, after
/// checking that it is a socket (a role started by hand without one stops
/// here instead of treating some other file as its parent).
pub fn take_channel_fd() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; fstat on a number is harmless if unused.
    cvt(unsafe { libc::fstat(CHANNEL_FD, &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other("not a socket"));
    }
    // SAFETY: descriptor 3 is open (fstat succeeded) and, by the exec
    // contract of `spawn`, owned by nothing else in this process; this is
    // called once, in the prologue.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(CHANNEL_FD) })
}

/// This host's name, gethostname(3).
pub fn hostname() -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    cvt(unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) })?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).map_err(io::Error::other)
}

/// Our effective uid.
pub fn geteuid() -> libc::uid_t {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    /// OpenSMTPD's wording: "exited okay", "exited abnormally",
    /// "terminated; signal 9" (we add the signal's name).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(0) => write!(f, "exited okay"),
            Exit::Code(c) => write!(f, "exited abnormally; status {c}"),
            Exit::Signal(s) => write!(f, "terminated; signal {s} ({})", signal_name(s)),
        }
    }
}

/// Reap one exited child without blocking.
pub fn try_wait() -> io::Result<Option<(libc::pid_t, Exit)>> {
    let mut status = 0;
    // SAFETY: status is a valid int to write to.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid == -1 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ECHILD) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some((pid, exit_of(status))))
}

fn exit_of(status: libc::c_int) -> Exit {
    if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }
}

/// Reap `pid` if it has exited, without blocking.
pub fn try_wait_pid(pid: libc::pid_t) -> io::Result<Option<Exit>> {
    let mut status = 0;
    // SAFETY: status is a valid int to write to.
    let r = cvt(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    if r == 0 {
        return Ok(None);
    }
    Ok(Some(exit_of(status)))
}

/// fork(2): Ok(0) in the child, the child's pid in the parent. Only for
/// single-threaded callers (the delivery runner): the child may then use
/// the allocator and anything else, since no other thread held a lock.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: fork has no memory-safety preconditions; the caller is
    // single-threaded, so the child's copy of every lock is unlocked.
    cvt(unsafe { libc::fork() })
}

/// End this process now, without destructors or atexit handlers (a
/// forked child must not flush or free what its parent owns).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Send `sig` to `pid`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Our pid.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Our real uid.
pub fn getuid() -> libc::uid_t {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Close every descriptor from `low` up.
pub fn closefrom(low: RawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range takes plain integers; closing descriptors we
        // own no Rust object for (we run this first thing in main).
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                low as libc::c_uint,
                libc::c_uint::MAX,
                0,
            )
        };
        if r == 0 {
            return Ok(());
        }
        // Kernels before 5.9: walk the table.
        for fd in low..1024 {
            // SAFETY: as above; EBADF for unused slots is ignored.
            unsafe { libc::close(fd) };
        }
        Ok(())
    }
    #[cfg(target_os = "openbsd")]
    {
        // SAFETY: closefrom takes an integer; see above.
        cvt(unsafe { libc::closefrom(low) }).map(drop)
    }
    #[cfg(not(any(target_os = "linux", target_os = "openbsd")))]
    {
        let _ = low;
        Err(io::Error::other("closefrom: unsupported platform"))
    }
}

/// Detach from the terminal: daemon(3) with chdir("/") and 0/1/2 on /dev/null.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: daemon forks; we are single-threaded when this is called
    // (before any role is spawned).
    cvt(unsafe { libc::daemon(0, 0) }).map(drop)
}

/// A signal's name for log lines.
pub fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

/// The absolute path of the running binary, to re-exec it. Linux asks the
/// kernel (/proc/self/exe), so a relative or forged argv[0] cannot point
/// the parent at another program; elsewhere argv[0] must be absolute, as
/// OpenSMTPD requires.
pub fn self_exe(argv0: &str) -> io::Result<CString> {
    #[cfg(target_os = "linux")]
    {
        let _ = argv0;
        let p = std::fs::read_link("/proc/self/exe")?;
        let s = p
            .into_os_string()
            .into_string()
            .map_err(|_| io::Error::other("binary path is not UTF-8"))?;
        if s.ends_with(" (deleted)") {
            return Err(io::Error::other(
                "the smtpd binary was replaced or removed since it started",
            ));
        }
        CString::new(s).map_err(io::Error::other)
    }
    #[cfg(not(target_os = "linux"))]
    {
        if !argv0.starts_with('/') {
            return Err(io::Error::other(
                "re-exec requires execution with an absolute path",
            ));
        }
        CString::new(argv0).map_err(io::Error::other)
    }
}

/// Raise this process's soft limit on open descriptors to its hard limit
/// (at most `cap`), for it and the roles it starts: the dispatcher holds
/// a socket per session and connection and a message file per relayed
/// envelope in flight. Returns the new soft limit.
// rlim_t is u64 here but not on every platform: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(cap: u64) -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit the call writes into.
    super::cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    let want = r.rlim_max.min(cap as libc::rlim_t);
    if want > r.rlim_cur {
        r.rlim_cur = want;
        // SAFETY: r is a valid rlimit, read by the call.
        super::cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    }
    Ok(r.rlim_cur as u64)
}
