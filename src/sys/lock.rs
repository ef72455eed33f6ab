//! POSIX record locks (fcntl F_SETLK), which std does not wrap: the lock
//! mail readers (mutt, mailx, dovecot, procmail) take on an mbox, so a
//! delivery never interleaves with a reader rewriting the file.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Try once to take a write lock on the whole of `fd`'s file, without
/// waiting. Ok(false) when another process holds a conflicting lock; the
/// lock goes away when the descriptor (every copy of it) is closed.
pub fn try_write_lock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock is plain old data; all-zero is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // l_start = 0 and l_len = 0: from the start to any future end.
    // SAFETY: `fl` is a live, initialised flock that fcntl only reads for
    // F_SETLK; the descriptor is borrowed for the call.
    match cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLK, &fl) }) {
        Ok(_) => Ok(true),
        // POSIX allows either errno for "held by someone else".
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn lock_own_file() {
        let path = std::env::temp_dir().join(format!("smtpd-lock-{}", std::process::id()));
        let f = std::fs::File::create(&path).expect("create");
        assert!(try_write_lock(f.as_fd()).expect("lock"));
        // Our own process may take it again: POSIX locks are per process.
        assert!(try_write_lock(f.as_fd()).expect("relock"));
        drop(f);
        std::fs::remove_file(&path).expect("remove");
    }

    #[test]
    fn lock_needs_write_access() {
        // F_WRLCK on a read-only descriptor is EBADF, an error, not "busy".
        let path = std::env::temp_dir().join(format!("smtpd-lock-ro-{}", std::process::id()));
        std::fs::write(&path, b"x").expect("write");
        let f = std::fs::File::open(&path).expect("open");
        assert!(try_write_lock(f.as_fd()).is_err());
        std::fs::remove_file(&path).expect("remove");
    }
}
