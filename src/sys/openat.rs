//! openat(2): open a name relative to a directory we already hold open.
//!
//! std opens by path only, so a check made on a directory (its owner, its
//! mode) could be about another directory than the one the next path-based
//! open walks through, if a component was swapped in between. Opening the
//! file relative to the checked descriptor closes that window: `~/.forward`
//! is read from exactly the home directory that was checked.

use super::cvt;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Open `name` relative to `dir` with `flags` (O_CLOEXEC is always added;
/// O_CREAT is refused, since no mode is passed). Retried on EINTR.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    if flags & libc::O_CREAT != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "openat: O_CREAT needs a mode",
        ));
    }
    loop {
        // SAFETY: `name` is a valid NUL-terminated string and `dir` an open
        // descriptor, both borrowed for the call; without O_CREAT the
        // variadic mode argument is never read.
        let r =
            cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) });
        match r {
            // SAFETY: openat returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn opens_relative_to_the_directory() {
        let dir = std::env::temp_dir().join(format!("smtpd-rs-openat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), "hello").unwrap();
        let d = File::open(&dir).unwrap();
        let fd = openat(d.as_fd(), c"f", libc::O_RDONLY).unwrap();
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let e = openat(d.as_fd(), c"missing", libc::O_RDONLY).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(openat(d.as_fd(), c"f", libc::O_RDONLY | libc::O_CREAT).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
