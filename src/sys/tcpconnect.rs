//! A non-blocking TCP connect from a chosen source address (a relay's
//! `src`): std and mio connect only from the address the kernel picks.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, sockaddr};

/// Start connecting to `dst`, from `src` (any port) when given. The
/// stream is non-blocking; the connection completes (or fails) later,
/// as with mio's `TcpStream::connect`.
pub fn start(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let family = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = cvt(unsafe { libc::socket(family, kind, 0) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if let Some(ip) = src {
        let (addr, len) = sockaddr::from(&SocketAddr::new(ip, 0));
        // SAFETY: addr holds `len` valid bytes of a sockaddr, alive for
        // the call.
        cvt(unsafe {
            libc::bind(
                stream.as_raw_fd(),
                &addr as *const libc::sockaddr_storage as *const libc::sockaddr,
                len,
            )
        })?;
    }
    connect(&stream, dst)?;
    Ok(stream)
}

/// Start connecting the non-blocking `stream` to `dst`: Ok when done or
/// under way (EINPROGRESS).
pub fn connect(stream: &TcpStream, dst: SocketAddr) -> io::Result<()> {
    let (addr, len) = sockaddr::from(&dst);
    // SAFETY: addr holds `len` valid bytes of a sockaddr, alive for the
    // call.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            &addr as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connects_from_the_source_given() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = start(Some("127.0.0.7".parse().unwrap()), l.local_addr().unwrap()).unwrap();
        let (_peer, from) = l.accept().unwrap();
        assert_eq!(from.ip(), "127.0.0.7".parse::<IpAddr>().unwrap());
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(s.local_addr().unwrap().ip(), from.ip());
    }

    #[test]
    fn a_source_we_do_not_have_is_an_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = start(
            Some("192.0.2.254".parse().unwrap()),
            l.local_addr().unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
    }
}
