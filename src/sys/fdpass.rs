//! SOCK_SEQPACKET socket pairs and packets with descriptors (SCM_RIGHTS).
//!
//! A seqpacket socket keeps each send as one packet, and descriptors travel
//! with the packet they were sent with, so a frame and its descriptors can
//! never be split or shifted onto the next frame (OpenSMTPD's imsg over a
//! stream socket keeps a queue of received fds that a peer can desynchronise).
//! Truncation of either data or descriptors is reported, never ignored.

use super::{cvt, cvt_size};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Socket buffer size set on both ends, so the largest frame always fits
/// (OpenBSD's default seqpacket buffers are smaller than our cap).
const SOCKBUF: libc::c_int = 256 * 1024;

/// A connected pair of non-blocking, close-on-exec seqpacket sockets.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    let ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair succeeded, so both descriptors are open and ours.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&a, &b] {
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, SOCKBUF)?;
        }
    }
    Ok((a, b))
}

fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a live c_int and its exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Set or clear O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we borrow; no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// Room for `n` descriptors of control data, in u64s so it is aligned for
/// `cmsghdr`.
fn cmsg_buf(n: usize) -> Vec<u64> {
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    let bytes = unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

/// Send one packet with `fds` attached. Never raises SIGPIPE.
pub fn send_packet(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = cmsg_buf(fds.len());
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds);
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: pure arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload as u32) } as _;
        // SAFETY: msg_control points at a buffer of CMSG_SPACE(payload) bytes,
        // so the first header and its data fit; we write exactly that much.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            let dst = libc::CMSG_DATA(c) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(dst.add(i), fd.as_raw_fd());
            }
        }
    }
    // SAFETY: msg points at the iovec and control buffer above, alive for
    // the duration of the call.
    let n = cvt_size(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    if n != data.len() {
        // Cannot happen on a seqpacket socket; refuse to go on if it does.
        return Err(io::Error::other("short send on a seqpacket socket"));
    }
    Ok(())
}

/// What one receive produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    /// `len` bytes in the buffer; `truncated` if the data or the control
    /// message did not fit (the frame must then be refused).
    Data { len: usize, truncated: bool },
    /// The peer closed its end.
    Eof,
}

/// Receive one packet into `buf`, appending any descriptors to `fds`
/// (close-on-exec). At most `max_fds` are accepted; more is truncation.
pub fn recv_packet(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Packet> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = cmsg_buf(max_fds);
    // SAFETY: all-zero msghdr is valid; we fill the pointers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = (cbuf.len() * 8) as _;
    // SAFETY: the buffers outlive the call and their lengths are exact.
    let n = cvt_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    // Take ownership of every descriptor that arrived, even if we are going
    // to refuse the frame, so none leaks.
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR stay inside that range and
    // each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / sizeof(int)
    // descriptors newly installed in our table.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // Control buffers are padded for alignment, so one descriptor more than
    // asked for may fit: the count, not only MSG_CTRUNC, decides.
    let truncated =
        msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || fds.len() > max_fds;
    if n == 0 && !truncated && fds.is_empty() {
        return Ok(Packet::Eof);
    }
    Ok(Packet::Data { len: n, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn packets_keep_boundaries_and_descriptors() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        send_packet(a.as_fd(), b"one", &[x.as_fd()]).unwrap();
        send_packet(a.as_fd(), b"two!", &[]).unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        assert_eq!(
            recv_packet(b.as_fd(), &mut buf, 4, &mut fds).unwrap(),
            Packet::Data {
                len: 3,
                truncated: false
            }
        );
        assert_eq!(fds.len(), 1);
        fds.clear();
        assert_eq!(
            recv_packet(b.as_fd(), &mut buf, 4, &mut fds).unwrap(),
            Packet::Data {
                len: 4,
                truncated: false
            }
        );
        assert!(fds.is_empty());
        drop(a);
        assert_eq!(
            recv_packet(b.as_fd(), &mut buf, 4, &mut fds).unwrap(),
            Packet::Eof
        );
    }

    #[test]
    fn truncation_is_reported() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, y) = seqpacket_pair().unwrap();
        send_packet(a.as_fd(), &[7u8; 100], &[]).unwrap();
        let mut small = [0u8; 10];
        let mut fds = Vec::new();
        assert_eq!(
            recv_packet(b.as_fd(), &mut small, 4, &mut fds).unwrap(),
            Packet::Data {
                len: 10,
                truncated: true
            }
        );
        send_packet(a.as_fd(), b"x", &[x.as_fd(), y.as_fd()]).unwrap();
        let mut buf = [0u8; 10];
        let r = recv_packet(b.as_fd(), &mut buf, 1, &mut fds).unwrap();
        assert_eq!(
            r,
            Packet::Data {
                len: 1,
                truncated: true
            }
        );
    }
}
