//! Sockets for the DNS stub resolver (lka): on OpenBSD created with
//! `SOCK_DNS`, the only sockets pledge "dns" allows (bound to port 53
//! traffic by the kernel); on Linux the flag does not exist and seccomp's
//! dns set allows plain UDP and TCP sockets. One code path for both, so
//! the Linux tests run what OpenBSD runs.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::cvt;

#[cfg(target_os = "openbsd")]
const SOCK_DNS: libc::c_int = libc::SOCK_DNS;
#[cfg(not(target_os = "openbsd"))]
const SOCK_DNS: libc::c_int = 0;

fn socket(server: &SocketAddr, kind: libc::c_int) -> io::Result<OwnedFd> {
    let family = match server {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers; the result is checked, and a
    // valid descriptor is owned by exactly one OwnedFd.
    let fd = cvt(unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC | SOCK_DNS, 0) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A UDP socket connected to `server`.
pub fn udp(server: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::from(socket(&server, libc::SOCK_DGRAM)?);
    sock.connect(server)?;
    Ok(sock)
}

/// A TCP connection to `server`, given up after `timeout`.
pub fn tcp(server: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::from(socket(&server, libc::SOCK_STREAM)?);
    stream.set_nonblocking(true)?;
    super::tcpconnect::connect(&stream, server)?;
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: pfd is one valid pollfd, alive for the call.
    if cvt(unsafe { libc::poll(&mut pfd, 1, ms) })? == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn udp_and_tcp_reach_a_local_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = udp(server.local_addr().unwrap()).unwrap();
        sock.send(b"ping").unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");

        let listener = std::net::TcpListener::bind("[::1]:0")
            .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let mut s = tcp(listener.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        s.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn a_closed_port_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = tcp(addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }
}
