//! seccomp-bpf allow-lists: Linux's enforcement of pledge(2) promises.
//!
//! [`install`] turns a promise set into a classic-BPF allow-list: the union of
//! the system calls each promise allows, with argument checks where seccomp can
//! make them (it sees the six raw argument registers, never the memory they
//! point to). Anything else kills the whole process with SIGSYS
//! (`SECCOMP_RET_KILL_PROCESS`), which the parent sees in `waitpid` as it sees
//! a pledge violation on OpenBSD. The filter is installed on every thread
//! (TSYNC) after `PR_SET_NO_NEW_PRIVS`, so `/proc/PID/status` then shows
//! `NoNewPrivs: 1` and `Seccomp: 2`. Filters survive fork and execve and can
//! never be removed; calling [`install`] again adds a filter, so promises can
//! only shrink, and asking for one not held fails with `PermissionDenied`
//! as pledge(2) fails with EPERM.
//!
//! # The mapping (x86_64 names; aarch64 lacks the legacy path calls)
//! - always: exit, exit_group, rt_sigreturn, restart_syscall, futex;
//!   tgkill/tkill of this process with SIGABRT only (`abort()`, so a panic
//!   still dies by SIGABRT); prctl(PR_SET_NO_NEW_PRIVS) and
//!   seccomp(SET_MODE_FILTER, TSYNC), so a role can narrow its promises later.
//! - stdio: I/O on descriptors already held (read/write and their vectored and
//!   positioned forms, lseek, close, close_range, dup/dup2/dup3, fsync,
//!   fdatasync, ftruncate, recvmsg/sendmsg/recvfrom, sendto to a connected
//!   socket only (`dest_addr == NULL`), shutdown); readiness (epoll_create1,
//!   epoll_ctl, epoll_wait/pwait/pwait2, poll/ppoll, select/pselect6); new
//!   anonymous channels (pipe/pipe2, eventfd2, socketpair(AF_UNIX)); time
//!   (clock_gettime/getres, gettimeofday, time, nanosleep, clock_nanosleep);
//!   identity queries (getpid, gettid, getppid, get[e]uid/get[e]gid,
//!   getresuid/getresgid, getgroups, getpgid/getpgrp, getsid, getrusage,
//!   getrlimit/prlimit64 reading this process only, uname, umask); memory (brk,
//!   mmap and mprotect without PROT_EXEC, munmap, mremap, madvise, mseal);
//!   getrandom, sched_yield; signals (rt_sigaction, rt_sigprocmask,
//!   sigaltstack); threads (clone with exactly the flags of glibc's
//!   pthread_create, and the set_robust_list, rseq and sched_getaffinity
//!   a new thread calls:
//!   OpenBSD's stdio has __tfork); wait4/waitid; get/setsockopt of SOL_SOCKET SO_RCVBUF and
//!   SO_ERROR (as OpenBSD); fstat, and newfstatat/statx with
//!   AT_EMPTY_PATH; fcntl F_GETFD/F_SETFD/F_GETFL/F_SETFL/F_DUPFD_CLOEXEC;
//!   ioctl FIONREAD/FIONBIO/FIOCLEX/FIONCLEX/TCGETS (isatty).
//!   rt_sigaction is here as sigaction is on OpenBSD: std's SIGSEGV handler
//!   restores the default action before the fault repeats, so without it a
//!   crash would be reported as SIGSYS; no handler can catch the filter's
//!   kill, so it grants nothing. Beyond what std, glibc and mio need, the
//!   list keeps OpenBSD's stdio where the call only queries the process or
//!   works on descriptors it holds (getppid, umask, pipe, socketpair, ...).
//! - rpath: open/openat for reading (access mode O_RDONLY, no O_CREAT, no
//!   O_TRUNC), stat/lstat/newfstatat/statx, access/faccessat/faccessat2,
//!   readlink/readlinkat, getdents/getdents64, chdir/fchdir, getcwd,
//!   statfs/fstatfs.
//! - wpath: open/openat with O_WRONLY (O_RDWR when rpath is held too) and
//!   O_TRUNC, truncate, fsync/fdatasync/ftruncate, syncfs, and the stat, access,
//!   readlink and getcwd calls (OpenBSD classes them rpath|wpath).
//! - cpath: O_CREAT and O_TMPFILE on open/openat (with an access mode the
//!   other promises allow), mkdir(at), rename(at/at2), unlink(at), rmdir,
//!   link(at), symlink(at).
//! - flock: flock; fcntl F_GETLK/F_SETLK/F_SETLKW/F_OFD_GETLK/F_OFD_SETLK/
//!   F_OFD_SETLKW.
//! - fattr: chmod/fchmod/fchmodat/fchmodat2, utimensat/utimes/futimesat/utime.
//! - chown: chown/fchown/fchownat/lchown.
//! - inet: socket(AF_INET/AF_INET6, SOCK_STREAM/SOCK_DGRAM), connect, bind,
//!   listen, accept, accept4, getsockname, getpeername, getsockopt,
//!   setsockopt, sendto to any address, recvfrom.
//! - unix: the same with socket(AF_UNIX, SOCK_STREAM/SOCK_DGRAM/SOCK_SEQPACKET).
//! - dns: rpath, plus socket(AF_INET/AF_INET6, SOCK_STREAM/SOCK_DGRAM),
//!   connect, bind, getsockname, setsockopt, sendto, sendmmsg, recvfrom,
//!   recvmmsg.
//! - getpw: rpath.
//! - sendfd, recvfd: sendmsg/recvmsg, which stdio already allows: seccomp
//!   cannot read the control message, so it cannot tell SCM_RIGHTS apart and
//!   these two add nothing on Linux.
//! - proc: clone without CLONE_THREAD or any CLONE_NEW* flag, fork/vfork,
//!   wait4, waitid, kill/tgkill/tkill of any process with any signal,
//!   setpgid, setsid, getpgid, getpriority/setpriority, prlimit64/setrlimit.
//!   Threads come from stdio, with their exact flags, never from this rule;
//!   namespaces are kernel attack surface OpenBSD does not have.
//! - exec: execve, execveat, and what a freshly executed dynamically linked
//!   program needs before its main (arch_prctl, set_tid_address,
//!   set_robust_list, rseq, and PROT_EXEC mappings for ld.so).
//! - id: setuid/setgid, setreuid/setregid, setresuid/setresgid, setgroups,
//!   setfsuid/setfsgid, getpriority/setpriority, prlimit64/setrlimit.
//!
//! Some calls are answered with an error instead of allowed or fatal, so
//! std and glibc fall back to what the promises allow (a second filter whose
//! ERRNO result the kernel prefers to the main filter's ALLOW, but never to
//! its KILL): copy_file_range, sendfile and splice return ENOSYS (std's
//! `io::copy` then uses read/write; splice is how Dirty Pipe wrote); clone3
//! returns ENOSYS (its flags sit in memory, so glibc's posix_spawn falls back
//! to clone, whose flags are checked); socket(AF_NETLINK) and, without the
//! unix promise, socket(AF_UNIX) return EACCES, so glibc's getpwnam (nscd,
//! nss-systemd) and getaddrinfo (nscd, AI_ADDRCONFIG) fall back to files
//! instead of dying.
//!
//! # Limits compared with pledge(2)
//! - No paths: OpenBSD's built-in exceptions (/etc/hosts for dns, /dev/null,
//!   /etc/localtime) cannot exist; rpath means any readable file. Landlock
//!   (unveil) and chroot limit which files.
//! - Pointers are opaque: connect/bind/sendto cannot check the address family
//!   (inet may connect a passed AF_UNIX socket), sendmsg/recvmsg cannot refuse
//!   SCM_RIGHTS, and newfstatat/statx with AT_EMPTY_PATH still resolve a
//!   non-empty path, so stdio can stat (not open) any path it can name.
//! - Filters survive execve (pledge's execpromises are NULL: the new image is
//!   unrestricted on OpenBSD). A program run under exec is confined to the
//!   caller's allow-list, so exec implies PROT_EXEC and the ld.so start-up
//!   calls above, and a dynamically linked program needs rpath as well.
//! - PROT_EXEC is refused to every promise set without exec, so code is never
//!   mapped after pledge: glibc NSS modules (libnss_systemd) and iconv modules
//!   must be loaded before it (e.g. one getpwnam() in the role's setup).
//! - Reconnecting a lost syslog socket needs unix, and loading a time zone
//!   needs rpath: both must happen before pledge.

// Elsewhere only the error path of `compile` is built.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::sys::promise::Promise;

/// mseal(2) (Linux 6.10); the libc crate may lack the constant. The number is
/// the same on every architecture.
const SYS_MSEAL: i64 = 462;
/// fchmodat2(2) (Linux 6.6); missing from the libc crate on aarch64.
const SYS_FCHMODAT2: i64 = 452;
/// The open flag that makes O_TMPFILE, without the O_DIRECTORY it carries.
const O_TMPFILE_BIT: u64 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64;
/// `type` argument of socket(2) without SOCK_NONBLOCK and SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u64 = 0xf;
/// clone(2) flags that would start a thread or enter new namespaces.
const CLONE_REFUSED: u64 = (libc::CLONE_THREAD
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The clone(2) flags of glibc's pthread_create: a thread sharing
/// everything, in no new namespace. A thread started after [`install`]
/// inherits the filter and the Landlock domain.
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// Promises held since the first [`install`] in this process image; `NONE`
/// before it. A later call may only drop promises.
static PLEDGED: AtomicU32 = AtomicU32::new(NONE);
const NONE: u32 = u32::MAX;

/// Sets PR_SET_NO_NEW_PRIVS and installs the allow-list for `promises` on
/// every thread of the process. Call it once the role is set up, before the
/// first untrusted byte is read. An error leaves the process possibly
/// partially restricted: treat it as fatal.
pub fn install(promises: &[Promise]) -> io::Result<()> {
    let set = Set::of(promises);
    let held = PLEDGED.load(Ordering::Relaxed);
    if held != NONE && set.0 & !held != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "seccomp: promises can only be reduced",
        ));
    }
    let programs = compile(set, std::process::id())?;
    set_no_new_privs()?;
    // The main filter goes last: the errno filters allow seccomp(2) itself.
    for program in &programs {
        seccompiler::apply_filter_all_threads(program).map_err(seccomp_error)?;
    }
    PLEDGED.store(set.0, Ordering::Relaxed);
    Ok(())
}

/// Sets PR_SET_NO_NEW_PRIVS: required to install a filter without
/// CAP_SYS_ADMIN, and it makes execve unable to grant privileges.
fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only; no memory is
    // passed to the kernel.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn seccomp_error(e: seccompiler::Error) -> io::Error {
    match e {
        seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
        other => io::Error::other(format!("seccomp: {other}")),
    }
}

/// A set of promises as a bit mask.
#[derive(Clone, Copy)]
struct Set(u32);

impl Set {
    fn of(promises: &[Promise]) -> Set {
        Set(promises.iter().fold(0, |m, &p| m | (1 << p as u32)))
    }

    fn has(self, p: Promise) -> bool {
        self.0 & (1 << p as u32) != 0
    }

    fn any(self, ps: &[Promise]) -> bool {
        ps.iter().any(|&p| self.has(p))
    }
}

/// One check on a system call argument.
#[derive(Clone, Copy)]
enum Arg {
    /// The low 32 bits equal the value: all the kernel reads of an `int`.
    Eq(u8, u64),
    /// All 64 bits equal the value (pointers).
    Eq64(u8, u64),
    /// The low 32 bits, masked, equal the value.
    Masked(u8, u64, u64),
}

impl Arg {
    fn condition(self) -> io::Result<SeccompCondition> {
        let (index, len, op, value) = match self {
            Arg::Eq(i, v) => (i, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v),
            Arg::Eq64(i, v) => (i, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, v),
            Arg::Masked(i, m, v) => (i, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(m), v),
        };
        SeccompCondition::new(index, len, op, value).map_err(backend_error)
    }
}

fn backend_error(e: seccompiler::BackendError) -> io::Error {
    io::Error::other(format!("seccomp: {e}"))
}

/// System calls matched by a filter: `None` matches whatever the arguments,
/// `Some(rules)` when all checks of any one rule hold. Adding to a call
/// already matched unconditionally changes nothing, so a promise set's list
/// is the union of its promises' lists.
#[derive(Default)]
struct Rules(BTreeMap<i64, Option<Vec<Vec<Arg>>>>);

impl Rules {
    fn any(&mut self, calls: &[i64]) {
        for &nr in calls {
            self.0.insert(nr, None);
        }
    }

    fn when(&mut self, nr: i64, args: &[Arg]) {
        if let Some(rules) = self.0.entry(nr).or_insert_with(|| Some(Vec::new())) {
            rules.push(args.to_vec());
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn compile(self, on_match: SeccompAction, otherwise: SeccompAction) -> io::Result<BpfProgram> {
        let mut map = BTreeMap::new();
        for (nr, rules) in self.0 {
            let mut chain = Vec::new();
            for args in rules.unwrap_or_default() {
                let conditions = args
                    .into_iter()
                    .map(Arg::condition)
                    .collect::<io::Result<Vec<_>>>()?;
                chain.push(SeccompRule::new(conditions).map_err(backend_error)?);
            }
            map.insert(nr, chain);
        }
        let filter =
            SeccompFilter::new(map, otherwise, on_match, arch()?).map_err(backend_error)?;
        BpfProgram::try_from(filter).map_err(backend_error)
    }
}

#[cfg(target_arch = "x86_64")]
fn arch() -> io::Result<TargetArch> {
    Ok(TargetArch::x86_64)
}

#[cfg(target_arch = "aarch64")]
fn arch() -> io::Result<TargetArch> {
    Ok(TargetArch::aarch64)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn arch() -> io::Result<TargetArch> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "seccomp: no system call table for this architecture",
    ))
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn compile(_set: Set, _pid: u32) -> io::Result<Vec<BpfProgram>> {
    arch().map(|_| Vec::new())
}

/// The filters for a promise set, in installation order: the errno filters,
/// then the allow-list. `pid` is the process's own id, which tgkill may name.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn compile(set: Set, pid: u32) -> io::Result<Vec<BpfProgram>> {
    let mut programs = Vec::new();
    for (errno, rules) in table::errno_rules(set) {
        if !rules.is_empty() {
            programs.push(rules.compile(SeccompAction::Errno(errno), SeccompAction::Allow)?);
        }
    }
    let allow = table::allow_rules(set, pid);
    programs.push(allow.compile(SeccompAction::Allow, SeccompAction::KillProcess)?);
    Ok(programs)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod table {
    use libc::*;

    use super::{
        Arg, Promise, Rules, Set, CLONE_REFUSED, CLONE_THREAD_FLAGS, O_TMPFILE_BIT, SOCK_TYPE_MASK,
        SYS_FCHMODAT2, SYS_MSEAL,
    };

    fn u(v: c_int) -> u64 {
        // Constants only: flags, commands and small non-negative numbers.
        v as u64
    }

    /// Calls answered with an errno, so callers fall back (module docs).
    pub(super) fn errno_rules(set: Set) -> Vec<(u32, Rules)> {
        let mut enosys = Rules::default();
        enosys.any(&[SYS_copy_file_range, SYS_sendfile, SYS_splice, SYS_clone3]);
        let mut eacces = Rules::default();
        eacces.when(SYS_socket, &[Arg::Eq(0, u(AF_NETLINK))]);
        if !set.has(Promise::Unix) {
            eacces.when(SYS_socket, &[Arg::Eq(0, u(AF_UNIX))]);
        }
        vec![(ENOSYS as u32, enosys), (EACCES as u32, eacces)]
    }

    /// The allow-list: the union of the promises' lists.
    pub(super) fn allow_rules(set: Set, pid: u32) -> Rules {
        let mut r = Rules::default();
        always(&mut r, set, pid);
        if set.has(Promise::Stdio) {
            stdio(&mut r, set);
        }
        open(&mut r, set);
        if set.any(&[Promise::Rpath, Promise::Dns, Promise::Getpw]) {
            r.any(RPATH);
            r.any(legacy::RPATH);
        }
        if set.has(Promise::Wpath) {
            r.any(WPATH);
            r.any(legacy::WPATH);
        }
        if set.has(Promise::Cpath) {
            r.any(CPATH);
            r.any(legacy::CPATH);
        }
        if set.has(Promise::Flock) {
            r.any(&[SYS_flock]);
            for cmd in [
                F_GETLK,
                F_SETLK,
                F_SETLKW,
                F_OFD_GETLK,
                F_OFD_SETLK,
                F_OFD_SETLKW,
            ] {
                r.when(SYS_fcntl, &[Arg::Eq(1, u(cmd))]);
            }
        }
        if set.has(Promise::Fattr) {
            r.any(&[SYS_fchmod, SYS_fchmodat, SYS_FCHMODAT2, SYS_utimensat]);
            r.any(legacy::FATTR);
        }
        if set.has(Promise::Chown) {
            r.any(&[SYS_fchown, SYS_fchownat]);
            r.any(legacy::CHOWN);
        }
        if set.has(Promise::Inet) {
            sockets(&mut r, &[AF_INET, AF_INET6], &[SOCK_STREAM, SOCK_DGRAM]);
            r.any(NET);
        }
        if set.has(Promise::Unix) {
            let types = [SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET];
            sockets(&mut r, &[AF_UNIX], &types);
            r.any(NET);
        }
        if set.has(Promise::Dns) {
            sockets(&mut r, &[AF_INET, AF_INET6], &[SOCK_STREAM, SOCK_DGRAM]);
            r.any(DNS);
            // Answered EACCES by the errno filter (nscd, AI_ADDRCONFIG).
            r.when(SYS_socket, &[Arg::Eq(0, u(AF_NETLINK))]);
        }
        if set.any(&[Promise::Dns, Promise::Getpw]) && !set.has(Promise::Unix) {
            // Answered EACCES by the errno filter (nscd, nss-systemd).
            r.when(SYS_socket, &[Arg::Eq(0, u(AF_UNIX))]);
        }
        // Sendfd and Recvfd: sendmsg and recvmsg are stdio already.
        if set.has(Promise::Proc) {
            r.when(SYS_clone, &[Arg::Masked(0, CLONE_REFUSED, 0)]);
            r.any(PROC);
            r.any(legacy::PROC);
        }
        if set.has(Promise::Exec) {
            r.any(EXEC);
            r.any(legacy::EXEC);
        }
        if set.has(Promise::Id) {
            r.any(ID);
            r.any(legacy::ID);
        }
        r
    }

    /// What even an empty promise set allows (OpenBSD's PLEDGE_ALWAYS).
    fn always(r: &mut Rules, set: Set, pid: u32) {
        r.any(&[
            SYS_exit,
            SYS_exit_group,
            SYS_rt_sigreturn,
            SYS_restart_syscall,
            SYS_futex,
        ]);
        // abort(3) raises SIGABRT with tgkill(getpid(), gettid(), SIGABRT).
        // With proc the filter is inherited by children whose pid differs,
        // and kill(2) of anything is allowed anyway.
        if !set.has(Promise::Proc) {
            let me = u64::from(pid);
            r.when(SYS_tgkill, &[Arg::Eq(0, me), Arg::Eq(2, u(SIGABRT))]);
            r.when(SYS_tkill, &[Arg::Eq(0, me), Arg::Eq(1, u(SIGABRT))]);
        }
        // Narrowing the promises later: what install() itself calls.
        r.when(SYS_prctl, &[Arg::Eq(0, u(PR_SET_NO_NEW_PRIVS))]);
        r.when(
            SYS_seccomp,
            &[
                Arg::Eq(0, u64::from(SECCOMP_SET_MODE_FILTER)),
                Arg::Eq(1, SECCOMP_FILTER_FLAG_TSYNC),
            ],
        );
    }

    fn stdio(r: &mut Rules, set: Set) {
        r.any(STDIO);
        r.any(legacy::STDIO);
        // sendto(2) without an address, i.e. on a connected socket.
        r.when(SYS_sendto, &[Arg::Eq64(4, 0)]);
        r.when(SYS_socketpair, &[Arg::Eq(0, u(AF_UNIX))]);
        // A thread (the queue's flusher), as pthread_create makes it.
        r.when(SYS_clone, &[Arg::Eq64(0, CLONE_THREAD_FLAGS)]);
        // clone3 is allowed here and answered ENOSYS by the errno filter;
        // std's new thread asks its CPU set (pthread_getattr_np).
        r.any(&[
            SYS_clone3,
            SYS_set_robust_list,
            SYS_rseq,
            SYS_sched_getaffinity,
        ]);
        // OpenBSD's "too common to reject" socket options (mio's take_error).
        for opt in [SO_RCVBUF, SO_ERROR] {
            let args = [Arg::Eq(1, u(SOL_SOCKET)), Arg::Eq(2, u(opt))];
            r.when(SYS_getsockopt, &args);
            r.when(SYS_setsockopt, &args);
        }
        // getrlimit(3) is prlimit64(0, resource, NULL, old).
        r.when(SYS_prlimit64, &[Arg::Eq(0, 0), Arg::Eq64(2, 0)]);
        if set.has(Promise::Exec) {
            r.any(&[SYS_mmap, SYS_mprotect]);
        } else {
            let no_exec = Arg::Masked(2, u(PROT_EXEC), 0);
            r.when(SYS_mmap, &[no_exec]);
            r.when(SYS_mprotect, &[no_exec]);
        }
        // fstat(3) and std's File::metadata: newfstatat/statx(fd, "", AT_EMPTY_PATH).
        let empty_path = u(AT_EMPTY_PATH);
        r.when(SYS_newfstatat, &[Arg::Masked(3, empty_path, empty_path)]);
        r.when(SYS_statx, &[Arg::Masked(2, empty_path, empty_path)]);
        for cmd in [F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC] {
            r.when(SYS_fcntl, &[Arg::Eq(1, u(cmd))]);
        }
        // ioctl(2) reads only 32 bits of the request. TCGETS is isatty(3).
        for request in [FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS] {
            // The request type is c_ulong in glibc, c_int in musl.
            #[allow(clippy::unnecessary_cast)]
            r.when(SYS_ioctl, &[Arg::Eq(1, request as u64)]);
        }
    }

    /// open/openat: the access mode must be one the promises allow, O_CREAT
    /// and O_TMPFILE need cpath, O_TRUNC needs wpath. O_RDWR needs rpath and
    /// wpath, as on OpenBSD.
    fn open(r: &mut Rules, set: Set) {
        let read = set.any(&[Promise::Rpath, Promise::Dns, Promise::Getpw]);
        let write = set.has(Promise::Wpath);
        let mut modes = Vec::new();
        if read {
            modes.push(O_RDONLY);
        }
        if write {
            modes.push(O_WRONLY);
        }
        if read && write {
            modes.push(O_RDWR);
        }
        let mut refused = 0;
        if !set.has(Promise::Cpath) {
            refused |= u(O_CREAT) | O_TMPFILE_BIT;
        }
        if !write {
            refused |= u(O_TRUNC);
        }
        for (nr, flags) in OPEN {
            for &mode in &modes {
                let mode = Arg::Masked(*flags, u(O_ACCMODE), u(mode));
                if refused == 0 {
                    r.when(*nr, &[mode]);
                } else {
                    r.when(*nr, &[mode, Arg::Masked(*flags, refused, 0)]);
                }
            }
        }
    }

    /// socket(2) for these domains and types (SOCK_NONBLOCK/CLOEXEC allowed).
    fn sockets(r: &mut Rules, domains: &[c_int], types: &[c_int]) {
        for &domain in domains {
            for &ty in types {
                r.when(
                    SYS_socket,
                    &[Arg::Eq(0, u(domain)), Arg::Masked(1, SOCK_TYPE_MASK, u(ty))],
                );
            }
        }
    }

    /// The calls that open a path, and the index of their flags argument.
    #[cfg(target_arch = "x86_64")]
    const OPEN: &[(i64, u8)] = &[(SYS_openat, 2), (SYS_open, 1)];
    #[cfg(not(target_arch = "x86_64"))]
    const OPEN: &[(i64, u8)] = &[(SYS_openat, 2)];

    const STDIO: &[i64] = &[
        SYS_read,
        SYS_readv,
        SYS_pread64,
        SYS_preadv,
        SYS_write,
        SYS_writev,
        SYS_pwrite64,
        SYS_pwritev,
        SYS_lseek,
        SYS_close,
        SYS_close_range,
        SYS_dup,
        SYS_dup3,
        SYS_fsync,
        SYS_fdatasync,
        SYS_ftruncate,
        SYS_fstat,
        SYS_recvfrom,
        SYS_recvmsg,
        SYS_sendmsg,
        SYS_shutdown,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_ppoll,
        SYS_pselect6,
        SYS_pipe2,
        SYS_eventfd2,
        SYS_clock_gettime,
        SYS_clock_getres,
        SYS_gettimeofday,
        SYS_nanosleep,
        SYS_clock_nanosleep,
        SYS_getpid,
        SYS_gettid,
        SYS_getppid,
        SYS_getuid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getegid,
        SYS_getresuid,
        SYS_getresgid,
        SYS_getgroups,
        SYS_getpgid,
        SYS_getsid,
        SYS_getrusage,
        SYS_uname,
        SYS_umask,
        SYS_getrandom,
        SYS_sched_yield,
        SYS_brk,
        SYS_munmap,
        SYS_mremap,
        SYS_madvise,
        SYS_MSEAL,
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_sigaltstack,
        SYS_wait4,
        SYS_waitid,
        // Allowed here, answered ENOSYS by the errno filter.
        SYS_copy_file_range,
        SYS_sendfile,
        SYS_splice,
    ];

    const RPATH: &[i64] = &[
        SYS_newfstatat,
        SYS_statx,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_readlinkat,
        SYS_getdents64,
        SYS_chdir,
        SYS_fchdir,
        SYS_getcwd,
        SYS_statfs,
        SYS_fstatfs,
    ];

    const WPATH: &[i64] = &[
        SYS_truncate,
        SYS_fsync,
        SYS_fdatasync,
        // The queue's group commit: one flush of the spool's file system
        // for a whole batch of messages (OpenBSD has no syncfs).
        SYS_syncfs,
        SYS_ftruncate,
        SYS_newfstatat,
        SYS_statx,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_readlinkat,
        SYS_getcwd,
    ];

    const CPATH: &[i64] = &[
        SYS_mkdirat,
        SYS_renameat,
        SYS_renameat2,
        SYS_unlinkat,
        SYS_linkat,
        SYS_symlinkat,
    ];

    const NET: &[i64] = &[
        SYS_connect,
        SYS_bind,
        SYS_listen,
        SYS_accept,
        SYS_accept4,
        SYS_getsockname,
        SYS_getpeername,
        SYS_getsockopt,
        SYS_setsockopt,
        SYS_sendto,
        SYS_recvfrom,
    ];

    const DNS: &[i64] = &[
        SYS_connect,
        SYS_bind,
        SYS_getsockname,
        SYS_setsockopt,
        SYS_sendto,
        SYS_sendmmsg,
        SYS_recvfrom,
        SYS_recvmmsg,
    ];

    const PROC: &[i64] = &[
        // Allowed here, answered ENOSYS by the errno filter.
        SYS_clone3,
        SYS_wait4,
        SYS_waitid,
        SYS_kill,
        SYS_tgkill,
        SYS_tkill,
        SYS_setpgid,
        SYS_setsid,
        SYS_getpgid,
        SYS_getpriority,
        SYS_setpriority,
        SYS_prlimit64,
    ];

    const EXEC: &[i64] = &[
        SYS_execve,
        SYS_execveat,
        SYS_set_tid_address,
        SYS_set_robust_list,
        SYS_rseq,
    ];

    const ID: &[i64] = &[
        SYS_setuid,
        SYS_setgid,
        SYS_setreuid,
        SYS_setregid,
        SYS_setresuid,
        SYS_setresgid,
        SYS_setgroups,
        SYS_setfsuid,
        SYS_setfsgid,
        SYS_getpriority,
        SYS_setpriority,
        SYS_prlimit64,
    ];

    /// The pre-*at calls x86_64 still has; glibc uses few of them, but other
    /// programs run under exec may.
    #[cfg(target_arch = "x86_64")]
    mod legacy {
        use libc::*;

        pub(super) const STDIO: &[i64] = &[
            SYS_dup2,
            SYS_epoll_wait,
            SYS_poll,
            SYS_select,
            SYS_pipe,
            SYS_getpgrp,
            SYS_getrlimit,
            SYS_time,
        ];
        pub(super) const RPATH: &[i64] =
            &[SYS_stat, SYS_lstat, SYS_access, SYS_readlink, SYS_getdents];
        pub(super) const WPATH: &[i64] = &[SYS_stat, SYS_lstat, SYS_access, SYS_readlink];
        pub(super) const CPATH: &[i64] = &[
            SYS_mkdir,
            SYS_rename,
            SYS_unlink,
            SYS_rmdir,
            SYS_link,
            SYS_symlink,
        ];
        pub(super) const FATTR: &[i64] = &[SYS_chmod, SYS_utimes, SYS_futimesat, SYS_utime];
        pub(super) const CHOWN: &[i64] = &[SYS_chown, SYS_lchown];
        pub(super) const PROC: &[i64] = &[SYS_fork, SYS_vfork, SYS_getpgrp, SYS_setrlimit];
        pub(super) const EXEC: &[i64] = &[SYS_arch_prctl];
        pub(super) const ID: &[i64] = &[SYS_setrlimit];
    }

    #[cfg(not(target_arch = "x86_64"))]
    mod legacy {
        pub(super) const STDIO: &[i64] = &[];
        pub(super) const RPATH: &[i64] = &[];
        pub(super) const WPATH: &[i64] = &[];
        pub(super) const CPATH: &[i64] = &[];
        pub(super) const FATTR: &[i64] = &[];
        pub(super) const CHOWN: &[i64] = &[];
        pub(super) const PROC: &[i64] = &[];
        pub(super) const EXEC: &[i64] = &[];
        pub(super) const ID: &[i64] = &[];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::pledge::child::{run, spawn, Marks};
    use crate::sys::pledge::pledge;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant, SystemTime};
    use Promise::*;

    const ALL: &[Promise] = &[
        Stdio, Rpath, Wpath, Cpath, Flock, Fattr, Chown, Inet, Unix, Dns, Getpw, Sendfd, Recvfd,
        Proc, Exec, Id,
    ];

    /// Pledges, marks `p`, runs `forbidden`, which must be fatal.
    fn assert_sigsys(promises: &[Promise], what: &str, forbidden: fn()) {
        let out = run(|m| {
            pledge(promises).expect("pledge");
            m.mark(b'p');
            forbidden();
            m.mark(b'!');
            0
        });
        assert_eq!(out.signal(), Some(libc::SIGSYS), "{what}: {out:?}");
        assert_eq!(out.marks, b"p", "{what}");
    }

    fn mark_if(m: &Marks, ok: bool, byte: u8) {
        m.mark(if ok { byte } else { b'?' });
    }

    fn errno<T>(r: io::Result<T>) -> Option<i32> {
        r.err().map(|e| e.raw_os_error().unwrap_or(-1))
    }

    fn status_field(status: &str, key: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} not in status"))
            .trim()
            .to_owned()
    }

    #[test]
    fn every_promise_set_compiles_within_bpf_limits() {
        for &p in ALL {
            compile(Set::of(&[p]), 1).expect("one promise");
        }
        let programs = compile(Set::of(ALL), 1).expect("all promises");
        assert_eq!(programs.len(), 3);
        assert!(programs.iter().all(|p| p.len() < 4096));
        let stdio = compile(Set::of(&[Stdio]), 1).expect("stdio");
        assert!(stdio[2].len() < programs[2].len());
    }

    /// Requirement (a): what std, glibc and an epoll loop need still works.
    #[test]
    fn stdio_keeps_std_and_glibc_working() {
        let dir = std::env::temp_dir();
        let out = run(move |m| {
            let mut hosts = std::fs::File::open("/etc/hosts").expect("open");
            let (a, mut b) = UnixStream::pair().expect("socketpair");
            let _ = dir;
            // This child was forked from the multi-threaded test harness, so
            // its allocations come from a non-main glibc arena, and glibc
            // shrinking such a heap first open()s
            // /proc/sys/vm/overcommit_memory: not a "stdio" call. The
            // daemon's roles are single-threaded (main arena, brk), so this
            // only pins the test's own trimming.
            // SAFETY: mallopt takes two integers.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) };
            pledge(&[Stdio]).expect("pledge");
            m.mark(b'p');

            // Memory: brk, a large mmap, mremap through growth, munmap.
            let mut v: Vec<u8> = vec![0; 64 << 20];
            v[12345] = 1;
            let mut s = String::new();
            for i in 0..100_000 {
                s.push_str(&i.to_string());
            }
            let mut map = std::collections::HashMap::new();
            map.insert(s.len(), v.iter().map(|&x| u64::from(x)).sum::<u64>());
            drop(v);
            mark_if(m, map.get(&s.len()) == Some(&1), b'm');

            // Time and sleep.
            let t0 = Instant::now();
            let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
            std::thread::sleep(Duration::from_millis(2));
            mark_if(
                m,
                wall.is_ok() && t0.elapsed() >= Duration::from_millis(2),
                b't',
            );

            // Descriptors held: statx(AT_EMPTY_PATH), read, lseek, sockets.
            let meta = hosts.metadata().expect("metadata");
            let mut text = String::new();
            hosts.read_to_string(&mut text).expect("read");
            hosts.rewind().expect("lseek");
            mark_if(m, meta.len() == text.len() as u64, b'f');
            a.set_nonblocking(true).expect("FIONBIO");
            let mut a2 = a.try_clone().expect("F_DUPFD_CLOEXEC");
            a2.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            b.read_exact(&mut buf).expect("read");
            let (c, _d) = UnixStream::pair().expect("socketpair after pledge");
            c.shutdown(std::net::Shutdown::Both).expect("shutdown");
            let pending = c.take_error().expect("SO_ERROR");
            mark_if(m, &buf == b"ping" && pending.is_none(), b's');

            // std::io::copy tries copy_file_range/sendfile/splice (ENOSYS) first.
            let (mut r, mut w) = std::io::pipe().expect("pipe2");
            let n = std::io::copy(&mut hosts, &mut w).expect("copy");
            drop(w);
            let mut copied = String::new();
            r.read_to_string(&mut copied).expect("read pipe");
            hosts.rewind().expect("lseek");
            let (mut sa, mut sb) = UnixStream::pair().expect("socketpair");
            let n2 = std::io::copy(&mut hosts, &mut sa).expect("copy to socket");
            drop(sa);
            let mut copied2 = String::new();
            sb.read_to_string(&mut copied2).expect("read socket");
            let same = copied == text && copied2 == text;
            mark_if(m, n as usize == text.len() && n2 == n && same, b'c');

            // An epoll loop, as mio runs it.
            // SAFETY: epoll calls on descriptors we own, with live locals.
            let ready = unsafe {
                let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 7,
                };
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, b.as_raw_fd(), &mut ev);
                a2.write_all(b"!").expect("write");
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let n = libc::epoll_wait(ep, events.as_mut_ptr(), 4, 1000);
                libc::close(ep);
                n == 1 && { events[0].u64 } == 7
            };
            mark_if(m, ready, b'e');

            // isatty(3) is ioctl(TCGETS); identity queries.
            // SAFETY: isatty on a descriptor we own; getppid takes nothing.
            let tty = unsafe { libc::isatty(b.as_raw_fd()) };
            // SAFETY: getppid takes no arguments.
            let ppid = unsafe { libc::getppid() };
            mark_if(m, tty == 0 && ppid > 1 && std::process::id() > 1, b'i');
            0
        });
        out.assert_exit(0, b"pmtfscei");
    }

    /// Requirement (a): calls outside stdio kill the process.
    #[test]
    fn stdio_kills_what_it_does_not_allow() {
        let cases: &[(&str, fn())] = &[
            ("open", || {
                let _ = std::fs::File::open("/etc/hosts");
            }),
            ("stat of a path", || {
                let _ = std::fs::metadata("/etc/hosts");
            }),
            ("socket", || {
                // SAFETY: plain socket(2).
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            }),
            ("sendto with an address", || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
                let (a, _b) = UnixStream::pair().expect("socketpair");
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: addr.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sendto with a live buffer and address.
                unsafe {
                    libc::sendto(
                        a.as_raw_fd(),
                        b"x".as_ptr().cast(),
                        1,
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of_val(&sa) as libc::socklen_t,
                    )
                };
            }),
            ("kill", || {
                // SAFETY: signal 0 to our parent: only a permission check.
                unsafe { libc::kill(libc::getppid(), 0) };
            }),
            ("raise SIGUSR1", || {
                // SAFETY: raise is tgkill with a signal other than SIGABRT.
                unsafe { libc::raise(libc::SIGUSR1) };
            }),
            ("setsockopt SO_SNDBUF", || {
                let (a, _b) = UnixStream::pair().expect("socketpair");
                let v: libc::c_int = 1 << 16;
                // SAFETY: the option value is a live c_int of the size given.
                unsafe {
                    libc::setsockopt(
                        a.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_SNDBUF,
                        (&v as *const libc::c_int).cast(),
                        std::mem::size_of_val(&v) as libc::socklen_t,
                    )
                };
            }),
            ("fcntl F_SETOWN", || {
                // SAFETY: fcntl on stdin with an integer argument.
                unsafe { libc::fcntl(0, libc::F_SETOWN, 1) };
            }),
            ("ioctl TIOCSTI", || {
                let c = 0u8;
                // SAFETY: ioctl on stdin pointing at a live byte.
                unsafe { libc::ioctl(0, libc::TIOCSTI, &c) };
            }),
            ("mmap PROT_EXEC", || {
                // SAFETY: an anonymous mapping; nothing is run from it.
                unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
            }),
            ("fork", || {
                // SAFETY: the child, if any, exits at once.
                if unsafe { libc::fork() } == 0 {
                    // SAFETY: ends the would-be child.
                    unsafe { libc::_exit(0) };
                }
            }),
            ("thread in a new namespace", || {
                let flags = CLONE_THREAD_FLAGS as libc::c_long | libc::CLONE_NEWNET as libc::c_long;
                // SAFETY: the filter kills at entry, before clone runs.
                unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
            }),
            ("execve", || {
                let _ = std::process::Command::new("/bin/true").status();
            }),
            ("setuid", || {
                // SAFETY: setuid to our own uid.
                unsafe { libc::setuid(libc::getuid()) };
            }),
            ("unshare", || {
                // SAFETY: unshare takes flags only.
                unsafe { libc::unshare(libc::CLONE_NEWUSER) };
            }),
            ("ptrace", || {
                // SAFETY: PTRACE_TRACEME takes no pointers.
                unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            }),
            ("landlock", || {
                let _ = crate::sys::landlock::restrict(&[]);
            }),
        ];
        for (what, call) in cases {
            assert_sigsys(&[Stdio], what, *call);
        }
    }

    /// Requirement (b): inet allows AF_INET sockets, not AF_UNIX ones.
    #[test]
    fn inet_allows_inet_sockets_only() {
        let out = run(|m| {
            pledge(&[Stdio, Inet]).expect("pledge");
            m.mark(b'p');
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
            let (s, _) = l.accept().expect("accept");
            let udp = std::net::UdpSocket::bind("[::1]:0")
                .or_else(|_| std::net::UdpSocket::bind("127.0.0.1:0"));
            mark_if(
                m,
                c.peer_addr().is_ok() && s.local_addr().is_ok() && udp.is_ok(),
                b'i',
            );
            // SAFETY: plain socket(2), expected to be fatal.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            m.mark(b'!');
            0
        });
        out.assert_killed(libc::SIGSYS, b"pi");
        assert_sigsys(&[Stdio, Inet], "raw socket", || {
            // SAFETY: plain socket(2).
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        });
    }

    #[test]
    fn unix_allows_unix_sockets_only() {
        let dir = std::env::temp_dir().join(format!("seccomp-unix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let sock = dir.join("s");
        let out = run(move |m| {
            let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
            pledge(&[Stdio, Unix]).expect("pledge");
            m.mark(b'p');
            let c = UnixStream::connect(&sock).expect("connect");
            let (s, _) = l.accept().expect("accept");
            mark_if(m, c.peer_addr().is_ok() && s.local_addr().is_ok(), b'u');
            // SAFETY: plain socket(2), expected to be fatal.
            unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0) };
            m.mark(b'!');
            0
        });
        std::fs::remove_dir_all(&dir).ok();
        out.assert_killed(libc::SIGSYS, b"pu");
    }

    /// Requirement (c): no executable memory without exec.
    #[test]
    fn prot_exec_is_fatal() {
        let out = run(|m| {
            pledge(&[Stdio]).expect("pledge");
            m.mark(b'p');
            // SAFETY: an anonymous read-write mapping, then an attempt to
            // make it executable; nothing is run from it.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                mark_if(m, p != libc::MAP_FAILED, b'm');
                libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
            }
            m.mark(b'!');
            0
        });
        out.assert_killed(libc::SIGSYS, b"pm");
    }

    /// Requirement (d): the kernel reports the sandbox, seen from outside.
    #[test]
    fn proc_status_shows_the_filter() {
        let (mut go_r, mut go_w) = std::io::pipe().expect("pipe");
        let mine = std::fs::read_to_string("/proc/self/status").expect("status");
        let child = spawn(move |m| {
            pledge(&[Stdio]).expect("pledge");
            m.mark(b'r');
            let mut b = [0u8];
            go_r.read_exact(&mut b).expect("read go");
            0
        });
        let mut child = child;
        assert_eq!(child.next_mark(), Some(b'r'));
        let theirs =
            std::fs::read_to_string(format!("/proc/{}/status", child.pid)).expect("child status");
        go_w.write_all(b"g").expect("write go");
        child.wait().assert_exit(0, b"");
        assert_eq!(status_field(&theirs, "Seccomp:"), "2");
        assert_eq!(status_field(&theirs, "NoNewPrivs:"), "1");
        let before: u32 = status_field(&mine, "Seccomp_filters:")
            .parse()
            .expect("count");
        let after: u32 = status_field(&theirs, "Seccomp_filters:")
            .parse()
            .expect("count");
        assert_eq!(after, before + 3);
    }

    /// A panic's abort() still dies by SIGABRT, a crash by SIGSEGV: the
    /// parent can tell them from a pledge violation.
    #[test]
    fn abort_and_segfault_keep_their_signals() {
        let out = run(|m| {
            pledge(&[Stdio]).expect("pledge");
            m.mark(b'p');
            std::process::abort();
        });
        out.assert_killed(libc::SIGABRT, b"p");
        let out = run(|m| {
            pledge(&[Stdio]).expect("pledge");
            m.mark(b'p');
            // SAFETY: deliberately writes through a null pointer to crash;
            // volatile so it is not optimised away.
            unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1) };
            m.mark(b'!');
            0
        });
        out.assert_killed(libc::SIGSEGV, b"p");
    }

    #[test]
    fn rpath_opens_for_reading_only() {
        let out = run(|m| {
            pledge(&[Stdio, Rpath]).expect("pledge");
            m.mark(b'p');
            let ok = std::fs::read("/etc/hosts").is_ok()
                && std::fs::metadata("/etc").is_ok()
                && std::fs::read_dir("/etc").is_ok()
                && std::env::current_dir().is_ok();
            mark_if(m, ok, b'r');
            0
        });
        out.assert_exit(0, b"pr");
        let rpath = &[Stdio, Rpath];
        assert_sigsys(rpath, "O_WRONLY", || {
            let _ = std::fs::OpenOptions::new().write(true).open("/dev/null");
        });
        assert_sigsys(rpath, "O_RDWR", || {
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null");
        });
        assert_sigsys(rpath, "O_RDONLY|O_TRUNC", || {
            let path = c"/nonexistent";
            // SAFETY: open with a NUL-terminated path; it does not exist.
            unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_TRUNC) };
        });
        assert_sigsys(rpath, "O_RDONLY|O_CREAT", || {
            let path = c"/nonexistent/x";
            // SAFETY: open with a NUL-terminated path in a missing directory.
            unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CREAT, 0o600) };
        });
        assert_sigsys(rpath, "unlink", || {
            let _ = std::fs::remove_file("/nonexistent/x");
        });
    }

    #[test]
    fn wpath_cpath_flock_fattr_manage_files() {
        let dir = std::env::temp_dir().join(format!("seccomp-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let d = dir.clone();
        let out = run(move |m| {
            pledge(&[Stdio, Rpath, Wpath, Cpath, Flock, Fattr]).expect("pledge");
            m.mark(b'p');
            let tmp = d.join("msg.tmp");
            let mut f = std::fs::File::create(&tmp).expect("create");
            // File to file: std tries copy_file_range (ENOSYS), then read/write.
            let mut services = std::fs::File::open("/etc/services").expect("open");
            let copied = std::io::copy(&mut services, &mut f).expect("copy");
            let size = std::fs::metadata(&tmp).expect("stat").len();
            f.set_len(0).expect("ftruncate");
            f.rewind().expect("lseek");
            f.write_all(b"mail").expect("write");
            f.sync_all().expect("fsync");
            f.set_len(2).expect("ftruncate");
            // SAFETY: flock on a descriptor we own.
            let locked = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0;
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
            std::fs::rename(&tmp, d.join("msg")).expect("rename");
            std::fs::create_dir(d.join("sub")).expect("mkdir");
            std::fs::remove_dir(d.join("sub")).expect("rmdir");
            let back = std::fs::read(d.join("msg")).expect("read");
            std::fs::remove_file(d.join("msg")).expect("unlink");
            mark_if(
                m,
                locked && back == b"ma" && copied == size && size > 0,
                b'f',
            );
            0
        });
        std::fs::remove_dir_all(&dir).ok();
        out.assert_exit(0, b"pf");
        assert_sigsys(&[Stdio, Rpath, Wpath], "O_CREAT without cpath", || {
            let _ = std::fs::File::create("/nonexistent/x");
        });
        assert_sigsys(&[Stdio, Cpath], "O_CREAT|O_WRONLY without wpath", || {
            let _ = std::fs::File::create("/nonexistent/x");
        });
        assert_sigsys(&[Stdio, Wpath, Cpath], "chown without chown", || {
            let path = c"/nonexistent";
            // SAFETY: chown of a missing path, NUL-terminated.
            unsafe { libc::chown(path.as_ptr(), 0, 0) };
        });
    }

    /// getpw and dns: glibc's lookups fall back to files when the unix
    /// sockets of nscd and nss-systemd are refused with EACCES.
    #[test]
    fn getpw_and_dns_work_through_glibc() {
        let out = run(|m| {
            // NSS modules are mapped executable, so they must be loaded
            // before pledge: a name that no module knows loads them all
            // (libnss_systemd only after files missed).
            let missing = c"smtpd-no-such-user";
            // SAFETY: NUL-terminated name; the result is only tested for NULL.
            let warm = unsafe { libc::getpwnam(missing.as_ptr()).is_null() };
            pledge(&[Stdio, Getpw, Dns]).expect("pledge");
            m.mark(b'p');
            // SAFETY: as above; pw_uid is read from the non-null entry glibc
            // returned, before the next call reuses its buffer.
            let uid = unsafe {
                let root = libc::getpwnam(c"root".as_ptr());
                (!root.is_null()).then(|| (*root).pw_uid)
            };
            // SAFETY: as above.
            let none = unsafe { libc::getpwnam(missing.as_ptr()).is_null() };
            mark_if(m, warm && uid == Some(0) && none, b'u');
            use std::net::ToSocketAddrs;
            let addrs = ("localhost", 25).to_socket_addrs().map(|a| a.count());
            mark_if(m, matches!(addrs, Ok(n) if n > 0), b'd');
            // SAFETY: plain socket(2): answered, not fatal.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            let e = io::Error::last_os_error().raw_os_error();
            mark_if(m, fd == -1 && e == Some(libc::EACCES), b's');
            0
        });
        out.assert_exit(0, b"puds");
    }

    /// dns: glibc's stub resolver, end to end, against a one-answer server
    /// in private mount and network namespaces (so /etc/resolv.conf can
    /// point at it without touching the machine's).
    #[test]
    fn dns_resolves_through_glibc() {
        let out = run(|m| {
            let server = fake_dns_server();
            pledge(&[Stdio, Dns]).expect("pledge");
            m.mark(b'p');
            use std::net::ToSocketAddrs;
            let addrs: Vec<_> = ("mx.example.test", 25)
                .to_socket_addrs()
                .map(|a| a.collect())
                .unwrap_or_default();
            let want = std::net::SocketAddr::from(([192, 0, 2, 7], 25));
            mark_if(m, addrs == [want], b'd');
            drop(server);
            0
        });
        out.assert_exit(0, b"pd");
    }

    /// lka's promises, from the role table, cover its own resolver as
    /// its route workers run it: threads started after pledge, UDP
    /// (socket, bind, connect, send, recvfrom, SO_RCVTIMEO) and, for a
    /// truncated reply, TCP (a non-blocking connect with poll and
    /// SO_ERROR, timeouts, write, read). The server runs in the test
    /// process, outside the filter.
    #[test]
    fn lka_promises_cover_its_resolver_over_udp_and_tcp() {
        use crate::lka::dns::message::{tests::reply, RData};
        use crate::lka::dns::{Hosts, ResolvConf, Resolver};
        use crate::lka::route::RouteQuery;
        use crate::lka::route_workers::{RouteConfig, RouteWorkers};
        use domain::base::iana::Rcode;
        use std::net::{TcpListener, UdpSocket};

        let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
        let addr = tcp.local_addr().expect("addr");
        let udp = UdpSocket::bind(addr).expect("udp");
        // Every UDP reply is truncated; over TCP, A queries get 40
        // addresses, AAAA none.
        std::thread::spawn(move || {
            let mut q = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut q) {
                let r = reply(&q[..n], None, Rcode::NOERROR, true, &[]);
                let _ = udp.send_to(&r, from);
            }
        });
        std::thread::spawn(move || {
            while let Ok((mut s, _)) = tcp.accept() {
                let mut len = [0u8; 2];
                let mut q = Vec::new();
                if s.read_exact(&mut len).is_ok() {
                    q.resize(u16::from_be_bytes(len).into(), 0);
                }
                if q.len() < 16 || s.read_exact(&mut q).is_err() {
                    continue;
                }
                let qtype = u16::from_be_bytes([q[q.len() - 4], q[q.len() - 3]]);
                let ips: Vec<String> = (1..=40).map(|i| format!("192.0.2.{i}")).collect();
                let recs: Vec<(&str, RData)> = match qtype {
                    1 => ips
                        .iter()
                        .map(|ip| ("big.test", RData::A(ip.parse().expect("ip"))))
                        .collect(),
                    _ => Vec::new(),
                };
                let r = reply(&q, None, Rcode::NOERROR, false, &recs);
                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&r);
                let _ = s.write_all(&out);
            }
        });

        let promises = crate::proc::Role::Lka.spec().expect("lka row").promises;
        let out = run(|m| {
            let mut conf = ResolvConf::with_servers(vec![addr]);
            conf.timeout = Duration::from_secs(2);
            conf.attempts = 1;
            let config = RouteConfig {
                resolver: Resolver::new(conf, Hosts::default()),
                names: Vec::new(),
                route_time: Duration::from_secs(5),
            };
            pledge(promises).expect("pledge");
            m.mark(b'p');
            let mut w = RouteWorkers::start(config, 2, 4).expect("workers");
            let query = RouteQuery {
                domain: "example.test".into(),
                host: Some("big.test".into()),
                backup: None,
            };
            w.submit(7, query).expect("submit");
            m.mark(b's');
            let until = Instant::now() + Duration::from_secs(10);
            let mut got = Vec::new();
            while got.is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
                got = w.take().expect("take");
            }
            let ok = matches!(
                got.as_slice(),
                [(7, crate::ipc::msg::RouteAnswer::Hosts(h))]
                    if h.len() == 1 && h[0].addrs.len() == crate::ipc::msg::MAX_ROUTE_ADDRS
            );
            if !ok {
                eprintln!("{got:?}");
            }
            mark_if(m, ok, b'r');
            0
        });
        out.assert_exit(0, b"psr");
    }

    /// In new namespaces: lo up, /etc/resolv.conf naming 127.0.0.1, and a
    /// forked server answering A queries for any name with 192.0.2.7 and
    /// anything else with no answer. Dies with the caller.
    fn fake_dns_server() -> std::net::UdpSocket {
        let conf = std::env::temp_dir().join(format!("resolv-{}.conf", std::process::id()));
        std::fs::write(
            &conf,
            "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n",
        )
        .expect("write resolv.conf");
        let conf_c = std::ffi::CString::new(conf.to_str().expect("utf-8")).expect("path");
        // SAFETY: unshare and mount with NUL-terminated strings or NULLs;
        // the ioctl gets a zeroed ifreq naming "lo", a live local.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET), 0);
            let none = std::ptr::null();
            let private = libc::MS_REC | libc::MS_PRIVATE;
            assert_eq!(
                libc::mount(none, c"/".as_ptr(), none, private, none.cast()),
                0
            );
            let bind = libc::MS_BIND;
            let etc = c"/etc/resolv.conf".as_ptr();
            assert_eq!(
                libc::mount(conf_c.as_ptr(), etc, none, bind, none.cast()),
                0
            );
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *b as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            assert_eq!(libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr), 0);
            libc::close(s);
        }
        std::fs::remove_file(&conf).ok();
        let sock = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind :53");
        let parent = std::process::id();
        // SAFETY: the server child only answers queries and _exit()s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: dies when the test child does, or now if it already
            // has; integer arguments only.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() as u32 != parent {
                    libc::_exit(0);
                }
            }
            let mut q = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut q) {
                if n < 12 {
                    continue;
                }
                let mut r = q[..n].to_vec();
                r[2] = 0x81; // response, recursion desired
                r[3] = 0x80; // recursion available, NOERROR
                let qtype = u16::from_be_bytes([q[n - 4], q[n - 3]]);
                if qtype == 1 {
                    r[7] = 1; // one answer: pointer to the question name
                    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    r.extend_from_slice(&[192, 0, 2, 7]);
                }
                let _ = sock.send_to(&r, peer);
            }
            // SAFETY: ends the server.
            unsafe { libc::_exit(0) };
        }
        sock
    }

    /// proc + exec: std's Command (posix_spawn, clone3 answered ENOSYS so
    /// glibc uses clone) runs a dynamically linked program, which inherits
    /// the filter.
    #[test]
    fn proc_exec_run_programs() {
        let out = run(|m| {
            pledge(&[Stdio, Rpath, Proc, Exec]).expect("pledge");
            m.mark(b'p');
            let ok = std::process::Command::new("/bin/true").status();
            mark_if(m, matches!(ok, Ok(s) if s.success()), b't');
            let fail = std::process::Command::new("/bin/false").status();
            mark_if(m, matches!(fail, Ok(s) if s.code() == Some(1)), b'f');
            // SAFETY: fork; the child exits at once and is reaped.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the child.
                unsafe { libc::_exit(3) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child into a live local.
            let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
            mark_if(m, reaped == pid && libc::WEXITSTATUS(status) == 3, b'w');
            0
        });
        out.assert_exit(0, b"ptfw");
        assert_sigsys(&[Stdio, Proc], "execve without exec", || {
            // SAFETY: execv with NUL-terminated strings and a NULL-ended argv.
            unsafe {
                let argv = [c"true".as_ptr(), std::ptr::null()];
                libc::execv(c"/bin/true".as_ptr(), argv.as_ptr());
            }
        });
        // A spawned child that may not exec dies by SIGSYS; we do not.
        let out = run(|m| {
            pledge(&[Stdio, Proc]).expect("pledge");
            m.mark(b'p');
            let status = std::process::Command::new("/bin/true").status();
            use std::os::unix::process::ExitStatusExt;
            let sig = status.ok().and_then(|s| s.signal());
            mark_if(m, sig == Some(libc::SIGSYS), b's');
            0
        });
        out.assert_exit(0, b"ps");
    }

    /// stdio starts threads as std does (the queue's flusher), which
    /// inherit the filter; a clone that adds a namespace flag is fatal.
    #[test]
    fn stdio_allows_threads_not_namespaces() {
        let out = run(|m| {
            pledge(&[Stdio]).expect("pledge");
            m.mark(b'p');
            let (tx, rx) = std::sync::mpsc::channel();
            let worker = std::thread::spawn(move || {
                let v: Vec<u64> = (0..100_000).collect();
                tx.send(v.iter().sum::<u64>()).expect("send");
                // The filter holds in the thread too.
                // SAFETY: getuid takes no arguments.
                unsafe { libc::getuid() };
            });
            let sum = rx.recv().expect("recv");
            mark_if(m, worker.join().is_ok() && sum == 4_999_950_000, b't');
            // SAFETY: the filter kills at entry, before clone runs.
            unsafe {
                let flags = CLONE_THREAD_FLAGS as libc::c_long | libc::CLONE_NEWNS as libc::c_long;
                libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
            }
            m.mark(b'!');
            0
        });
        out.assert_killed(libc::SIGSYS, b"pt");
    }

    #[test]
    fn id_allows_dropping_privileges() {
        let out = run(|m| {
            pledge(&[Stdio, Id]).expect("pledge");
            m.mark(b'p');
            // SAFETY: setgroups with an empty list, then setres[ug]id to
            // nobody; integer arguments and a null list pointer.
            let rc = unsafe {
                libc::setgroups(0, std::ptr::null())
                    | libc::setresgid(65534, 65534, 65534)
                    | libc::setresuid(65534, 65534, 65534)
            };
            // SAFETY: getuid takes no arguments.
            mark_if(m, rc == 0 && unsafe { libc::getuid() } == 65534, b'i');
            0
        });
        out.assert_exit(0, b"pi");
    }

    /// Promises can be dropped by a later pledge, never added back.
    #[test]
    fn promises_only_shrink() {
        let out = run(|m| {
            pledge(&[Stdio, Inet]).expect("pledge");
            let e = pledge(&[Stdio, Inet, Unix]).expect_err("widening");
            mark_if(m, e.kind() == io::ErrorKind::PermissionDenied, b'w');
            pledge(&[Stdio]).expect("narrowing");
            m.mark(b'n');
            // SAFETY: plain socket(2), now expected to be fatal.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            m.mark(b'!');
            0
        });
        out.assert_killed(libc::SIGSYS, b"wn");
    }

    #[test]
    fn nothing_but_exit_without_stdio() {
        // No mark can be written after pledge(&[]): the exit code and the
        // signal tell what happened.
        let out = run(|m| {
            m.mark(b'p');
            if pledge(&[]).is_err() {
                return 100;
            }
            // SAFETY: _exit is always allowed.
            unsafe { libc::_exit(7) };
        });
        out.assert_exit(7, b"p");
        let out = run(|m| {
            m.mark(b'p');
            if pledge(&[]).is_err() {
                return 100;
            }
            // SAFETY: write of a live byte to stderr, expected to be fatal.
            unsafe { libc::write(2, b"x".as_ptr().cast(), 1) };
            0
        });
        out.assert_killed(libc::SIGSYS, b"p");
    }

    #[test]
    fn errno_helper_reads_os_errors() {
        assert_eq!(errno(std::fs::read("/nonexistent")), Some(libc::ENOENT));
        assert_eq!(errno(Ok::<(), io::Error>(())), None);
    }
}
