//! smtpctl's end of /var/run/smtpd.sock: one blocking seqpacket
//! connection, frames as the roles frame them, and every reply decoded
//! without trust (a daemon that is not ours, or not the same version, is
//! an error, not a crash).

use crate::ipc::ctl::{Reply, Request, SOCKET_PATH};
use crate::ipc::frame::{self, MAX_FDS, MAX_PACKET};
use crate::ipc::msg;
use crate::sys::{fdpass, unixsock};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

pub struct Conn {
    sock: OwnedFd,
    buf: Vec<u8>,
    /// The descriptors that came with the last reply.
    fds: Vec<OwnedFd>,
}

impl Conn {
    /// Connect to the daemon; None if none answers.
    pub fn open() -> Option<Conn> {
        let sock = unixsock::connect(Path::new(SOCKET_PATH)).ok()?;
        Some(Conn {
            sock,
            buf: vec![0u8; MAX_PACKET + 1],
            fds: Vec::new(),
        })
    }

    pub fn send(&mut self, r: &Request) -> Result<(), String> {
        let f = frame::encode(r, 0).map_err(|e| e.to_string())?;
        fdpass::send_packet(self.sock.as_fd(), &f, &[]).map_err(|e| format!("write error: {e}"))
    }

    /// The next reply; Err with smtpctl's message if there is none.
    pub fn recv(&mut self) -> Result<Reply, String> {
        let fds = &mut self.fds;
        fds.clear();
        loop {
            match fdpass::recv_packet(self.sock.as_fd(), &mut self.buf, MAX_FDS, fds) {
                Ok(fdpass::Packet::Eof) => return Err("pipe closed".into()),
                Ok(fdpass::Packet::Data {
                    truncated: true, ..
                }) => return Err("message too long".into()),
                Ok(fdpass::Packet::Data { len, .. }) => {
                    return msg::parse::<Reply>(&self.buf[..len], fds.len())
                        .map_err(|e| format!("bad message from smtpd: {e}"));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    /// sendmail: ask for an SMTP session; smtpctl's end of it, or the
    /// reason there is none (OpenSMTPD's enqueue says the same).
    pub fn smtp_session(&mut self) -> Result<OwnedFd, String> {
        match self.ask(&Request::SmtpSession)? {
            Reply::Session => self
                .fds
                .pop()
                .ok_or_else(|| "no descriptor from smtpd".into()),
            Reply::Fail(_) | Reply::Denied => Err("server disallowed submission request".into()),
            _ => Err("unexpected imsg reply type".into()),
        }
    }

    /// Send `r` and return the one reply.
    pub fn ask(&mut self, r: &Request) -> Result<Reply, String> {
        self.send(r)?;
        self.recv()
    }
}
