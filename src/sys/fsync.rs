//! Flushing a whole file system, and asking one how much room it has left:
//! the two calls the spool needs that std does not wrap.
//!
//! - [`syncfs`] (Linux only): syncfs(2) writes back every dirty page and
//!   inode of the file system `fd` is on and commits its journal once, so
//!   the spool's group commit costs one flush however many files it holds.
//!   Since Linux 5.8 it also reports a writeback error that happened on
//!   that file system since `fd` was opened (before 5.8 it always returned
//!   0, which would make it unfit for a durable queue; we run on 6.x).
//!   OpenBSD has no syncfs: callers fsync file by file there.
//! - [`space`]: fstatvfs(3), the free blocks and inodes an unprivileged
//!   user may still use, so the queue can refuse new mail before the disk
//!   is really full (OpenSMTPD's `fsqueue_check_space`).

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Flush the whole file system that `fd` lives on, and wait for it.
#[cfg(target_os = "linux")]
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: syncfs takes a descriptor we borrow for the call; no pointers.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// What an unprivileged user may still allocate on a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Blocks in use (by anyone), and blocks still available to us.
    pub blocks_used: u64,
    pub blocks_avail: u64,
    /// Inodes in use, and inodes still available to us. Both are 0 on file
    /// systems that do not count inodes (btrfs, some network ones).
    pub files_used: u64,
    pub files_avail: u64,
}

/// fstatvfs(3) on `fd`.
pub fn space(fd: BorrowedFd<'_>) -> io::Result<Space> {
    // SAFETY: statvfs is plain old data; all-zero is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable statvfs; the descriptor is borrowed.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    // The field types differ between systems (u32 on some, u64 on others);
    // widen them all. `as` never truncates here.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, bfree, bavail, files, ffree, favail) = (
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_bavail as u64,
        st.f_files as u64,
        st.f_ffree as u64,
        st.f_favail as u64,
    );
    Ok(Space {
        blocks_used: blocks.saturating_sub(bfree),
        blocks_avail: bavail,
        files_used: files.saturating_sub(ffree),
        files_avail: favail,
    })
}

/// Tests only: fork, run `child` in the child and _exit with its result
/// (101 if it panics). Returns the child's pid to the parent. The child of
/// a multi-threaded test process must keep to simple work: glibc makes
/// malloc safe after fork, but no other lock a sibling thread held is.
#[cfg(test)]
pub(crate) fn fork_child(child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: fork has no memory-safety preconditions; the child never
    // returns into the test harness: it leaves through _exit below.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Tests only: wait for `pid` to end; its raw wait status.
#[cfg(test)]
pub(crate) fn wait_child(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child into a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn space_of_tmp() {
        let d = std::fs::File::open(std::env::temp_dir()).expect("open tmp");
        let s = space(d.as_fd()).expect("fstatvfs");
        assert!(s.blocks_used + s.blocks_avail > 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn syncfs_of_tmp() {
        let d = std::fs::File::open(std::env::temp_dir()).expect("open tmp");
        syncfs(d.as_fd()).expect("syncfs");
    }

    #[test]
    fn fork_and_wait() {
        let pid = fork_child(|| 7).expect("fork");
        let st = wait_child(pid).expect("wait");
        assert!(libc::WIFEXITED(st));
        assert_eq!(libc::WEXITSTATUS(st), 7);
    }
}
