//! pledge(2) and unveil(2): the two sandbox calls of every role's prologue.
//!
//! On OpenBSD they are the system calls themselves. On Linux [`pledge`]
//! installs a seccomp-bpf allow-list ([`crate::sys::seccomp`]) and [`unveil`]
//! a Landlock ruleset ([`crate::sys::landlock`]); read those modules for what
//! the kernel can and cannot enforce there. On any other system both fail, so
//! a role never runs unsandboxed by accident.
//!
//! The prologue calls `unveil` before `pledge` (Landlock needs system calls
//! that no promise allows), while the process is still single-threaded.

use std::io;

use crate::sys::promise::Promise;

/// Restricts the process to the system calls `promises` allow; anything else
/// kills it (SIGABRT on OpenBSD, SIGSYS on Linux). Promises can only be
/// reduced by a later call. Executed programs are not restricted on OpenBSD
/// (execpromises is NULL) but inherit the filter on Linux.
pub fn pledge(promises: &[Promise]) -> io::Result<()> {
    imp::pledge(promises)
}

/// Makes only `paths` visible, each with its permissions, then locks the
/// list. An empty list hides the whole filesystem. Paths that do not exist
/// are skipped on Linux. Linux accepts only `"r"` (read files and list
/// directories beneath the path) and also stops the process from signalling
/// processes outside its sandbox when the kernel can (Landlock ABI 6).
pub fn unveil(paths: &[(&str, &str)]) -> io::Result<()> {
    imp::unveil(paths)
}

#[cfg(target_os = "openbsd")]
mod imp {
    use std::ffi::CString;
    use std::io;
    use std::ptr;

    use crate::sys::promise::{promise_string, Promise};

    pub(super) fn pledge(promises: &[Promise]) -> io::Result<()> {
        let promises = CString::new(promise_string(promises))?;
        // SAFETY: `promises` is a NUL-terminated string that outlives the
        // call; a NULL execpromises leaves those of executed programs alone.
        let rc = unsafe { libc::pledge(promises.as_ptr(), ptr::null()) };
        check(rc)
    }

    pub(super) fn unveil(paths: &[(&str, &str)]) -> io::Result<()> {
        if paths.is_empty() {
            // unveil(NULL, NULL) alone would leave everything visible.
            unveil_one("/", "")?;
        }
        for (path, perms) in paths {
            unveil_one(path, perms)?;
        }
        // SAFETY: NULL for both arguments is the documented way to lock the
        // list; no memory is read.
        let rc = unsafe { libc::unveil(ptr::null(), ptr::null()) };
        check(rc)
    }

    fn unveil_one(path: &str, perms: &str) -> io::Result<()> {
        let path = CString::new(path)?;
        let perms = CString::new(perms)?;
        // SAFETY: both are NUL-terminated strings that outlive the call.
        let rc = unsafe { libc::unveil(path.as_ptr(), perms.as_ptr()) };
        check(rc)
    }

    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;

    use crate::sys::promise::Promise;

    pub(super) fn pledge(promises: &[Promise]) -> io::Result<()> {
        crate::sys::seccomp::install(promises)
    }

    pub(super) fn unveil(paths: &[(&str, &str)]) -> io::Result<()> {
        crate::sys::landlock::restrict(paths)
    }
}

#[cfg(not(any(target_os = "openbsd", target_os = "linux")))]
mod imp {
    use std::io;

    use crate::sys::promise::Promise;

    fn no_sandbox(call: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{call}: this platform has no sandbox"),
        )
    }

    pub(super) fn pledge(_promises: &[Promise]) -> io::Result<()> {
        Err(no_sandbox("pledge"))
    }

    pub(super) fn unveil(_paths: &[(&str, &str)]) -> io::Result<()> {
        Err(no_sandbox("unveil"))
    }
}

/// Runs test code in a forked child, so a sandbox or a kill stays there.
/// The sandbox tests of this module and of `seccomp` and `landlock` use it.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod child {
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{FromRawFd, RawFd};
    use std::sync::Mutex;

    /// One fork at a time: a child must not inherit another test's pipes.
    static FORK: Mutex<()> = Mutex::new(());

    /// The child's side: progress marks written to the parent, so a test
    /// can see which step the child reached before it died.
    pub(crate) struct Marks(RawFd);

    impl Marks {
        pub(crate) fn mark(&self, byte: u8) {
            // SAFETY: writes one byte from a live local to our own pipe end.
            let n = unsafe { libc::write(self.0, (&byte as *const u8).cast(), 1) };
            assert_eq!(n, 1);
        }
    }

    /// How the child ended and the marks it wrote.
    #[derive(Debug)]
    pub(crate) struct Outcome {
        pub(crate) status: libc::c_int,
        pub(crate) marks: Vec<u8>,
    }

    impl Outcome {
        /// The exit code if the child exited, None if a signal killed it.
        pub(crate) fn code(&self) -> Option<i32> {
            libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
        }

        /// The signal that killed the child, if one did.
        pub(crate) fn signal(&self) -> Option<i32> {
            libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
        }

        pub(crate) fn assert_exit(&self, code: i32, marks: &[u8]) {
            assert_eq!((self.code(), self.signal()), (Some(code), None), "{self:?}");
            assert_eq!(self.marks, marks, "{self:?}");
        }

        pub(crate) fn assert_killed(&self, signal: i32, marks: &[u8]) {
            assert_eq!(
                (self.code(), self.signal()),
                (None, Some(signal)),
                "{self:?}"
            );
            assert_eq!(self.marks, marks, "{self:?}");
        }
    }

    /// A running child.
    pub(crate) struct Child {
        pub(crate) pid: libc::pid_t,
        marks: File,
        _fork: std::sync::MutexGuard<'static, ()>,
    }

    impl Child {
        /// The next mark, or None once the child is gone.
        pub(crate) fn next_mark(&mut self) -> Option<u8> {
            let mut byte = [0u8];
            match self.marks.read(&mut byte).expect("read marks") {
                0 => None,
                _ => Some(byte[0]),
            }
        }

        /// Waits for the child; the marks not yet read are in the outcome.
        pub(crate) fn wait(mut self) -> Outcome {
            let mut marks = Vec::new();
            self.marks.read_to_end(&mut marks).expect("read marks");
            let mut status = 0;
            // SAFETY: waits for our own child into a live local.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            assert_eq!(rc, self.pid, "waitpid");
            Outcome { status, marks }
        }
    }

    /// Forks; the child runs `body` and exits with what it returns (101 if
    /// it panics, killed by SIGALRM if it hangs for 30 s).
    pub(crate) fn spawn(body: impl FnOnce(&Marks) -> i32) -> Child {
        let guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array we own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child only runs `body` and _exit()s; glibc makes malloc
        // usable after fork, and the fork lock keeps other tests' children
        // away from our pipe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: closing our copy of the read end; setting limits and an
            // alarm take no pointers but a live local.
            unsafe {
                libc::close(fds[0]);
                // No core files from the deaths these tests provoke.
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::alarm(30);
            }
            let marks = Marks(fds[1]);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&marks)))
                .unwrap_or(101);
            // SAFETY: ends the child without running the harness's exit code.
            unsafe { libc::_exit(code) }
        }
        // SAFETY: our copy of the write end is closed once; the read end is
        // ours alone from here on.
        let marks = unsafe {
            libc::close(fds[1]);
            File::from_raw_fd(fds[0])
        };
        Child {
            pid,
            marks,
            _fork: guard,
        }
    }

    /// Forks, runs `body` in the child and waits for it.
    pub(crate) fn run(body: impl FnOnce(&Marks) -> i32) -> Outcome {
        spawn(body).wait()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::child::run;
    use super::*;
    use std::io::{Read, Write};

    fn os_error<T>(r: io::Result<T>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn pledge_stdio_then_forbidden_call_is_sigsys() {
        let out = run(|m| {
            pledge(&[Promise::Stdio]).expect("pledge");
            m.mark(b'p');
            let v: Vec<u64> = (0..100_000).collect();
            let now = std::time::SystemTime::now();
            assert!(now.duration_since(std::time::UNIX_EPOCH).is_ok());
            m.mark(if v.len() == 100_000 { b'a' } else { b'?' });
            // SAFETY: a plain socket(2) call, expected to be fatal.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            m.mark(b'!');
            0
        });
        out.assert_killed(libc::SIGSYS, b"pa");
    }

    #[test]
    fn unveil_then_pledge_is_the_prologue_order() {
        let out = run(|m| {
            let mut hosts = std::fs::File::open("/etc/hosts").expect("open before");
            unveil(&[("/etc/hosts", "r")]).expect("unveil");
            pledge(&[Promise::Stdio, Promise::Rpath]).expect("pledge");
            m.mark(b's');
            let mut s = String::new();
            hosts.read_to_string(&mut s).expect("read held fd");
            std::fs::read("/etc/hosts").expect("read unveiled file");
            m.mark(b'r');
            let denied = os_error(std::fs::read("/etc/passwd"));
            m.mark(if denied == Some(libc::EACCES) {
                b'd'
            } else {
                b'?'
            });
            std::io::stderr().flush().ok();
            0
        });
        out.assert_exit(0, b"srd");
    }

    /// lka's row of the role table lets it read the resolver's files
    /// once sandboxed (it reads them at the start of its loop), and no
    /// other file of /etc.
    #[test]
    fn lka_reads_resolv_conf_and_hosts_in_its_sandbox() {
        use crate::lka::dns::{Hosts, ResolvConf};
        use std::path::Path;
        let spec = crate::proc::Role::Lka.spec().expect("lka row");
        let files = ["/etc/resolv.conf", "/etc/hosts"];
        let before: Vec<_> = files.iter().map(std::fs::read).collect();
        let conf = ResolvConf::load(Path::new(files[0]));
        let hosts = Hosts::load(Path::new(files[1]));
        let out = run(|m| {
            unveil(spec.unveil).expect("unveil");
            pledge(spec.promises).expect("pledge");
            m.mark(b's');
            let after: Vec<_> = files.iter().map(std::fs::read).collect();
            let same = before.iter().zip(&after).all(|(b, a)| match (b, a) {
                (Ok(b), Ok(a)) => a == b,
                // Missing before the sandbox: missing in it.
                (Err(b), Err(a)) => b.kind() == a.kind(),
                _ => false,
            });
            m.mark(if same { b'r' } else { b'?' });
            let loaded = ResolvConf::load(Path::new(files[0])) == conf
                && Hosts::load(Path::new(files[1])) == hosts;
            m.mark(if loaded { b'l' } else { b'?' });
            let denied = os_error(std::fs::read("/etc/shadow"));
            m.mark(if denied == Some(libc::EACCES) {
                b'd'
            } else {
                b'?'
            });
            0
        });
        out.assert_exit(0, b"srld");
    }
}
