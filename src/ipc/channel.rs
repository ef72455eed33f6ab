//! A channel: one end of a seqpacket socket pair to another process, with
//! an outgoing queue for when the socket is full.
//!
//! Every received packet goes through `frame::parse` with the channel's
//! message enum, then the descriptor count is checked against what that
//! message carries. Any failure is an `IpcError`, which the caller turns
//! into a log line and a clean shutdown: a peer that sends a bad frame is
//! either buggy or compromised, and we stop talking to it either way.

use super::frame::{self, FrameError, MAX_FDS, MAX_PACKET};
use super::msg::Message;
use crate::proc::Role;
use crate::sys::fdpass::{self, Packet};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Most frames queued for sending before the peer counts as stuck.
const MAX_QUEUED: usize = 4096;

/// Why a channel is finished.
#[derive(Debug)]
pub enum IpcError {
    /// The peer closed its end.
    Closed,
    /// A system error on the socket.
    Io(io::Error),
    /// The peer sent something that is not a frame of this channel.
    Frame(FrameError),
    /// The peer stopped reading and our queue is full.
    Stuck,
    /// Nothing came before the deadline (start handshake).
    Timeout,
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Closed => write!(f, "channel closed"),
            IpcError::Io(e) => write!(f, "{e}"),
            IpcError::Frame(e) => write!(f, "{e}"),
            IpcError::Stuck => write!(f, "peer not reading, {MAX_QUEUED} frames queued"),
            IpcError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for IpcError {}

impl From<FrameError> for IpcError {
    fn from(e: FrameError) -> Self {
        IpcError::Frame(e)
    }
}

/// A message and the descriptors it carried (exactly `msg.fds()` of them).
#[derive(Debug)]
pub struct Received<M> {
    pub msg: M,
    pub fds: Vec<OwnedFd>,
}

/// A frame not yet decoded, and the descriptors that came with it.
pub type RawFrame = (Vec<u8>, Vec<OwnedFd>);

/// One end of a channel.
pub struct Channel {
    sock: OwnedFd,
    /// Who is at the other end (for log lines).
    pub peer: Role,
    queue: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    buf: Box<[u8]>,
}

impl Channel {
    /// Wrap a connected seqpacket socket, making it non-blocking.
    pub fn new(sock: OwnedFd, peer: Role) -> io::Result<Self> {
        fdpass::set_nonblocking(sock.as_fd(), true)?;
        // One byte more than the largest frame, so an oversized packet is
        // seen as truncated rather than silently fitting.
        Ok(Channel {
            sock,
            peer,
            queue: VecDeque::new(),
            buf: vec![0u8; MAX_PACKET + 1].into_boxed_slice(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// True while frames wait for the socket to drain.
    pub fn wants_write(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Queue `msg` with its descriptors and try to send everything queued.
    pub fn send<M: Message>(&mut self, msg: &M, fds: Vec<OwnedFd>) -> Result<(), IpcError> {
        if fds.len() != msg.fds() {
            return Err(FrameError::FdsUnexpected {
                message: msg.name(),
                expected: msg.fds(),
                actual: fds.len(),
            }
            .into());
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(IpcError::Stuck);
        }
        self.queue.push_back((frame::encode(msg, fds.len())?, fds));
        self.flush()
    }

    /// Send what is queued until the socket would block.
    pub fn flush(&mut self) -> Result<(), IpcError> {
        while let Some((data, fds)) = self.queue.front() {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            match fdpass::send_packet(self.sock.as_fd(), data, &borrowed) {
                Ok(()) => {
                    self.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Err(IpcError::Closed),
                Err(e) => return Err(IpcError::Io(e)),
            }
        }
        Ok(())
    }

    /// Receive one message if one is waiting (`Ok(None)` if not).
    pub fn recv<M: Message>(&mut self) -> Result<Option<Received<M>>, IpcError> {
        let mut fds = Vec::new();
        let Some(len) = self.recv_packet(&mut fds)? else {
            return Ok(None);
        };
        let msg: M = super::msg::parse(&self.buf[..len], fds.len())?;
        Ok(Some(Received { msg, fds }))
    }

    /// Receive one packet for a caller that picks the enum at run time:
    /// the checked payload's frame bytes and the descriptors that came
    /// with it (the caller decodes with `frame::parse`).
    pub fn recv_raw(&mut self) -> Result<Option<RawFrame>, IpcError> {
        let mut fds = Vec::new();
        let Some(len) = self.recv_packet(&mut fds)? else {
            return Ok(None);
        };
        Ok(Some((self.buf[..len].to_vec(), fds)))
    }

    fn recv_packet(&mut self, fds: &mut Vec<OwnedFd>) -> Result<Option<usize>, IpcError> {
        loop {
            match fdpass::recv_packet(self.sock.as_fd(), &mut self.buf, MAX_FDS, fds) {
                Ok(Packet::Eof) => return Err(IpcError::Closed),
                Ok(Packet::Data {
                    truncated: true, ..
                }) => return Err(FrameError::Truncated.into()),
                Ok(Packet::Data { len, .. }) => return Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Err(IpcError::Closed)
                }
                Err(e) => return Err(IpcError::Io(e)),
            }
        }
    }

    /// Queue an already encoded frame that carries no descriptors.
    pub fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), IpcError> {
        if self.queue.len() >= MAX_QUEUED {
            return Err(IpcError::Stuck);
        }
        self.queue.push_back((frame, Vec::new()));
        self.flush()
    }

    /// Wait for one message until `deadline` (used only by the start
    /// handshake, before the event loop runs).
    pub fn recv_until<M: Message>(&mut self, deadline: Instant) -> Result<Received<M>, IpcError> {
        loop {
            self.flush()?;
            if let Some(r) = self.recv()? {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IpcError::Timeout);
            }
            wait_readable(self.sock.as_fd(), left).map_err(IpcError::Io)?;
        }
    }

    /// Send everything queued, waiting up to `timeout` for room.
    pub fn flush_blocking(&mut self, timeout: Duration) -> Result<(), IpcError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.flush()?;
            if self.queue.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(IpcError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Block until `fd` is readable or `timeout` passes, with a one-shot mio
/// poll (no raw poll(2) outside `sys`).
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    use mio::{unix::SourceFd, Events, Interest, Poll, Token};
    let mut poll = Poll::new()?;
    let raw = fd.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&raw), Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(1);
    match poll.poll(&mut events, Some(timeout)) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        r => r,
    }
}
