//! The control socket: a SOCK_SEQPACKET Unix socket bound to a path, and
//! the kernel's word on who is at the other end of a connection.
//!
//! Seqpacket keeps every frame one packet, as on the channels between
//! roles (`fdpass`), so smtpctl's requests reuse the same framing and the
//! same bounded receive. std's UnixListener is SOCK_STREAM only, hence
//! these few wrappers.

use super::cvt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A `sockaddr_un` for `path`, and its length.
fn address(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= sa.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or invalid",
        ));
    }
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok((
        sa,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    ))
}

fn seqpacket_socket(extra: libc::c_int) -> io::Result<OwnedFd> {
    // SOCK_CLOEXEC as a socket(2) flag exists on both Linux and OpenBSD.
    let ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | extra;
    // SAFETY: no pointers; a new descriptor or -1.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, ty, 0) })?;
    // SAFETY: socket() succeeded, so fd is open and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connect to the seqpacket socket at `path` (blocking).
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let (sa, len) = address(path)?;
    let fd = seqpacket_socket(0)?;
    // SAFETY: `sa` is a valid sockaddr_un of `len` bytes, alive for the call.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    })?;
    Ok(fd)
}

/// Bind a listening seqpacket socket at `path`, readable and writable by
/// everyone (`mode`, as OpenSMTPD's 0666: any local user may talk to
/// control, which checks each client's uid). Non-blocking, for an event
/// loop. The caller removes a stale socket first.
pub fn listen(path: &Path, mode: u32, backlog: i32) -> io::Result<OwnedFd> {
    let (sa, len) = address(path)?;
    let fd = seqpacket_socket(libc::SOCK_NONBLOCK)?;
    // SAFETY: as in connect().
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    })?;
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    cvt(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) })?;
    // SAFETY: no pointers.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Accept one connection, non-blocking and close-on-exec. WouldBlock
/// when none waits.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: null address pointers are allowed: we do not want the address.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        )
    })?;
    // SAFETY: accept4 succeeded: a new descriptor that only we hold.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The effective uid of the process that connected `sock`, as the kernel
/// recorded it at connect(2): SO_PEERCRED on Linux, getpeereid(2) on
/// OpenBSD. Never anything the peer says about itself.
#[cfg(target_os = "linux")]
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live ucred and `len` its exact size; the kernel
    // writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED: short answer"));
    }
    Ok(cred.uid)
}

/// See the Linux version.
#[cfg(not(target_os = "linux"))]
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: both out-pointers are live locals of the right types.
    cvt(unsafe { libc::getpeereid(sock.as_raw_fd(), &mut uid, &mut gid) })?;
    Ok(uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn listen_connect_accept_and_peer_uid() {
        let dir = std::env::temp_dir().join(format!("smtpd-unixsock-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = listen(&path, 0o666, 5).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        let c = connect(&path).unwrap();
        let s = accept(l.as_fd()).unwrap();
        let me = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        if let Ok(me) = me {
            assert_eq!(peer_uid(s.as_fd()).unwrap(), me);
        }
        drop(c);
        let e = accept(l.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlong_path_is_refused() {
        let long = "/tmp/".to_string() + &"x".repeat(200);
        assert!(connect(Path::new(&long)).is_err());
    }
}
