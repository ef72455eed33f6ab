//! The only place `unsafe` is allowed: thin wrappers over system calls that
//! std does not offer. Each block carries a `// SAFETY:` line. Everything
//! above this module deals in safe types (`OwnedFd`, `CString`, `Result`).

pub mod dnssock;
pub mod fdpass;
pub mod fsync;
pub mod ifaddrs;
pub mod lock;
pub mod openat;
pub mod pledge;
pub mod privdrop;
pub mod process;
pub mod proctitle;
pub mod promise;
pub mod seal;
pub mod signal;
pub mod sockaddr;
pub mod tcpconnect;
pub mod unixsock;

#[cfg(target_os = "linux")]
pub mod landlock;
#[cfg(target_os = "linux")]
pub mod seccomp;

use std::io;

/// Turn a -1 return into the errno it set.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like `cvt`, for calls that return ssize_t.
pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}
