//! Landlock: Linux's enforcement of unveil(2).
//!
//! [`restrict`] creates a ruleset that handles every filesystem access right
//! the running kernel knows (best effort from Landlock ABI 1 up to the newest
//! this crate knows), allows reading beneath each listed path, and enforces it
//! on the calling thread and all its future children, across execve. With an
//! empty list nothing in the filesystem can be opened. Where the kernel has
//! Landlock ABI 6 the ruleset also scopes signals and abstract unix sockets:
//! the process can then neither signal nor connect to an abstract socket of a
//! process outside its own sandbox.
//!
//! Permissions are unveil(2)'s letters: `r` (read files, list directories),
//! `w` (write and truncate files), `c` (create, remove and rename beneath a
//! directory). There is no `x`: no role executes anything.
//! Landlock does not cover stat, chdir or readlink, nor descriptors opened
//! before [`restrict`]; it applies to the calling thread only (ABI 8 could
//! synchronise threads), so call it while single-threaded. On a kernel
//! without Landlock the filesystem stays open and only a warning is logged.
//! The domain survives execve: a program the role executes is confined too.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use ::landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, PathFdError, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, ABI,
};

/// The newest Landlock ABI this code asks for. Older kernels enforce the
/// subset they know (best effort); newer access rights are added by raising
/// this after testing them.
const NEWEST_ABI: ABI = ABI::V10;

/// Restricts the filesystem to `paths` (pairs of a path and its unveil(2)
/// permissions, some of `"rwc"`), and scopes signals and abstract unix
/// sockets to the sandbox. Paths that do not exist are skipped. Sets
/// PR_SET_NO_NEW_PRIVS first, which Landlock requires of unprivileged callers.
pub fn restrict(paths: &[(&str, &str)]) -> io::Result<()> {
    if let Some((path, perms)) = paths
        .iter()
        .find(|(_, p)| p.is_empty() || !p.chars().all(|c| "rwc".contains(c)))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("landlock: {path}: permissions {perms:?} not supported, only some of \"rwc\""),
        ));
    }
    set_no_new_privs()?;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(NEWEST_ABI))
        .and_then(|r| r.scope(Scope::from_all(NEWEST_ABI)))
        .and_then(|r| r.create())
        .map_err(ruleset_error)?;
    for (path, perms) in paths {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            Err(PathFdError::OpenCall { ref source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                log::debug!("debug: landlock: {path}: not found, skipped");
                continue;
            }
            Err(e) => return Err(io::Error::other(format!("landlock: {e}"))),
        };
        let access = access_for(&fd, perms)?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(ruleset_error)?;
    }
    let status = ruleset.restrict_self().map_err(ruleset_error)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => {}
        RulesetStatus::PartiallyEnforced => {
            log::debug!(
                "debug: landlock: enforced at the kernel's ABI: {:?}",
                status.landlock
            );
        }
        RulesetStatus::NotEnforced => {
            log::warn!(
                "warn: landlock: not supported by this kernel ({:?}): filesystem not restricted",
                status.landlock
            );
        }
    }
    Ok(())
}

/// Reading a directory means its files and listing it; a file has no
/// listing, and the kernel refuses directory rights on it.
fn access_for(fd: &PathFd, perms: &str) -> io::Result<BitFlags<AccessFs>> {
    let is_dir = File::from(fd.as_fd().try_clone_to_owned()?)
        .metadata()?
        .is_dir();
    let mut a = BitFlags::empty();
    if perms.contains('r') {
        a |= AccessFs::ReadFile;
        if is_dir {
            a |= AccessFs::ReadDir;
        }
    }
    if perms.contains('w') {
        a |= AccessFs::WriteFile | AccessFs::Truncate;
    }
    // Creating, removing and renaming are rights of a directory; the kernel
    // refuses them on a file.
    if perms.contains('c') && is_dir {
        a |= AccessFs::MakeReg
            | AccessFs::MakeDir
            | AccessFs::RemoveFile
            | AccessFs::RemoveDir
            | AccessFs::Refer;
    }
    Ok(a)
}

fn ruleset_error(e: RulesetError) -> io::Error {
    io::Error::other(format!("landlock: {e}"))
}

fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only; no memory is
    // passed to the kernel.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::pledge::child::run;
    use crate::sys::pledge::unveil;
    use std::path::PathBuf;

    fn errno<T>(r: io::Result<T>) -> Option<i32> {
        match r {
            Ok(_) => None,
            Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
        }
    }

    /// The kernel's Landlock ABI version, 0 without Landlock.
    fn kernel_abi() -> i64 {
        // SAFETY: LANDLOCK_CREATE_RULESET_VERSION takes a NULL attribute of
        // size 0 and reads no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        v.max(0)
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sandbox-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("create scratch dir");
        std::fs::write(dir.join("sub/file"), b"hello").expect("write scratch file");
        dir
    }

    #[test]
    fn kernel_has_landlock() {
        // The other tests would pass vacuously without it.
        assert!(kernel_abi() >= 1, "Landlock not available");
    }

    #[test]
    fn unveiled_file_is_readable_and_nothing_else() {
        let out = run(|m| {
            std::fs::read("/etc/passwd").expect("readable before");
            unveil(&[("/etc/hosts", "r")]).expect("unveil");
            m.mark(b'u');
            m.mark(match std::fs::read("/etc/hosts") {
                Ok(_) => b'h',
                Err(_) => b'?',
            });
            m.mark(match errno(std::fs::read("/etc/passwd")) {
                Some(libc::EACCES) => b'p',
                _ => b'?',
            });
            m.mark(match errno(std::fs::read_dir("/etc")) {
                Some(libc::EACCES) => b'd',
                _ => b'?',
            });
            0
        });
        out.assert_exit(0, b"uhpd");
    }

    #[test]
    fn empty_list_hides_everything() {
        let out = run(|m| {
            unveil(&[]).expect("unveil");
            m.mark(b'u');
            for path in [
                "/etc/hosts",
                "/etc/passwd",
                "/proc/self/status",
                "/dev/null",
            ] {
                m.mark(match errno(std::fs::File::open(path)) {
                    Some(libc::EACCES) => b'x',
                    _ => b'?',
                });
            }
            m.mark(match errno(std::fs::read_dir("/")) {
                Some(libc::EACCES) => b'd',
                _ => b'?',
            });
            0
        });
        out.assert_exit(0, b"uxxxxd");
    }

    #[test]
    fn directory_is_readable_not_writable() {
        let dir = scratch_dir("dir");
        let d = dir.clone();
        let out = run(move |m| {
            let sub = d.join("sub");
            let sub_str = sub.to_str().expect("utf-8 path");
            unveil(&[(sub_str, "r")]).expect("unveil");
            m.mark(b'u');
            let read = std::fs::read(sub.join("file")).ok();
            m.mark(if read.as_deref() == Some(&b"hello"[..]) {
                b'r'
            } else {
                b'?'
            });
            let listed = std::fs::read_dir(&sub).map(|entries| entries.count());
            m.mark(if listed.ok() == Some(1) { b'l' } else { b'?' });
            let append = std::fs::OpenOptions::new()
                .append(true)
                .open(sub.join("file"));
            m.mark(if errno(append) == Some(libc::EACCES) {
                b'w'
            } else {
                b'?'
            });
            let create = std::fs::File::create(sub.join("new"));
            m.mark(if errno(create) == Some(libc::EACCES) {
                b'c'
            } else {
                b'?'
            });
            let parent = std::fs::read_dir(&d);
            m.mark(if errno(parent) == Some(libc::EACCES) {
                b'p'
            } else {
                b'?'
            });
            0
        });
        std::fs::remove_dir_all(&dir).ok();
        out.assert_exit(0, b"urlwcp");
    }

    #[test]
    fn missing_paths_are_skipped() {
        let out = run(|m| {
            unveil(&[("/nonexistent/smtpd-test", "r"), ("/etc/hosts", "r")]).expect("unveil");
            m.mark(b'u');
            m.mark(if std::fs::read("/etc/hosts").is_ok() {
                b'h'
            } else {
                b'?'
            });
            m.mark(match errno(std::fs::read("/etc/passwd")) {
                Some(libc::EACCES) => b'p',
                _ => b'?',
            });
            0
        });
        out.assert_exit(0, b"uhp");
    }

    #[test]
    fn unknown_permissions_are_refused_before_anything() {
        let out = run(|m| {
            for perms in ["x", "", "rx", "R", "rwcx"] {
                let e = unveil(&[("/etc/hosts", "r"), ("/tmp", perms)]).expect_err(perms);
                m.mark(if e.kind() == io::ErrorKind::InvalidInput {
                    b'e'
                } else {
                    b'?'
                });
            }
            // Nothing was restricted.
            m.mark(if std::fs::read("/etc/passwd").is_ok() {
                b'p'
            } else {
                b'?'
            });
            0
        });
        out.assert_exit(0, b"eeeeep");
    }

    #[test]
    fn rwc_allows_create_write_rename_remove_beneath_only() {
        let dir = std::env::temp_dir().join(format!("landlock-rwc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let d = dir.clone();
        let out = run(move |m| {
            let ds = d.to_str().unwrap().to_string();
            unveil(&[(ds.as_str(), "rwc")]).unwrap();
            let f = d.join("sub/new");
            let ok = std::fs::write(&f, b"x").is_ok()
                && std::fs::rename(&f, d.join("moved")).is_ok()
                && std::fs::read(d.join("moved"))
                    .map(|b| b == b"x")
                    .unwrap_or(false)
                && std::fs::remove_file(d.join("moved")).is_ok();
            m.mark(if ok { b'w' } else { b'?' });
            // Outside the unveiled directory nothing is allowed.
            m.mark(
                if std::fs::write("/tmp/landlock-rwc-outside", b"x").is_err() {
                    b'o'
                } else {
                    b'?'
                },
            );
            0
        });
        std::fs::remove_dir_all(&dir).unwrap();
        out.assert_exit(0, b"wo");
    }

    #[test]
    fn signals_are_scoped_to_the_sandbox() {
        if kernel_abi() < 6 {
            eprintln!("Landlock ABI < 6: signal scoping not testable");
            return;
        }
        let out = run(|m| {
            // A victim outside the sandbox: forked before restrict, it blocks
            // on a pipe and exits when this child does (EOF).
            let mut fds = [0; 2];
            // SAFETY: pipe fills the two-element array we own.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: the victim only reads the pipe and _exit()s.
            let victim = unsafe { libc::fork() };
            if victim == 0 {
                let mut b = 0u8;
                // SAFETY: closes the write end it inherited, then reads one
                // byte into a live local.
                unsafe {
                    libc::close(fds[1]);
                    libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                    libc::_exit(0);
                }
            }
            // SAFETY: kill with signal 0 only checks permission.
            let before = unsafe { libc::kill(victim, 0) };
            m.mark(if before == 0 { b'k' } else { b'?' });
            unveil(&[]).expect("unveil");
            m.mark(b'u');
            // SAFETY: signals a process we created; must be refused.
            let rc = unsafe { libc::kill(victim, libc::SIGTERM) };
            let e = io::Error::last_os_error().raw_os_error();
            m.mark(if rc == -1 && e == Some(libc::EPERM) {
                b'e'
            } else {
                b'?'
            });
            let mut status = 0;
            // SAFETY: non-blocking wait for our own child into a live local.
            let alive = unsafe { libc::waitpid(victim, &mut status, libc::WNOHANG) };
            m.mark(if alive == 0 { b'a' } else { b'?' });
            // A process inside the sandbox can still be signalled.
            // SAFETY: the inner child only pauses until killed.
            let inner = unsafe { libc::fork() };
            if inner == 0 {
                loop {
                    // SAFETY: waits for a signal.
                    unsafe { libc::pause() };
                }
            }
            // SAFETY: kills our own child, inside the sandbox; then reaps it
            // into a live local.
            let (rc, reaped) = unsafe {
                let rc = libc::kill(inner, libc::SIGKILL);
                (rc, libc::waitpid(inner, &mut status, 0))
            };
            let killed = rc == 0 && reaped == inner && libc::WIFSIGNALED(status);
            m.mark(if killed { b'i' } else { b'?' });
            0
        });
        out.assert_exit(0, b"kueai");
    }
}
