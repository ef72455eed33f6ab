//! The blocking driver: sends one [`Query`] to the configured servers over
//! UDP (TCP when the reply is truncated) and waits, within a deadline, for
//! the reply that [`Query::accept`] takes as ours. Everything about the
//! wire is in `message`; a mio-driven driver can replace this file alone.

#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::conf::ResolvConf;
use super::message::{Answer, QType, Query, Status, Verdict};
use super::DnsError;
use crate::spool::id::random_u64;

/// Receive buffer for UDP replies. We send no EDNS0, so servers keep to
/// 512 bytes; anything longer is cut here and then fails to parse.
const MAX_UDP: usize = 4096;

/// Asks `name`/`qtype` of each server in turn, `conf.attempts` rounds, and
/// returns the first usable answer (NOERROR or NXDOMAIN). A server that
/// times out, fails (SERVFAIL, REFUSED...) or sends garbage passes the
/// turn; when none is left, or `deadline` passes, the error is temporary.
pub fn exchange(
    conf: &ResolvConf,
    name: &str,
    qtype: QType,
    deadline: Instant,
) -> Result<Answer, DnsError> {
    let mut last = String::from("no server answered");
    for _ in 0..conf.attempts.max(1) {
        for &server in &conf.servers {
            let now = Instant::now();
            if now >= deadline {
                return Err(DnsError::Temporary(format!("{name}: lookup timed out")));
            }
            // A fresh id and a fresh socket (so a fresh OS-chosen port) per
            // try: a forger has to guess both again.
            let query = Query::new(name, qtype, random_u64() as u16)?;
            let until = deadline.min(now + conf.timeout);
            match ask_udp(server, &query, until) {
                Ok(answer) => match answer.status {
                    Status::Ok | Status::NoName => return Ok(answer),
                    Status::Failed(rcode) => last = format!("{server}: rcode {rcode}"),
                },
                Err(e) => last = format!("{server}: {e}"),
            }
        }
    }
    Err(DnsError::Temporary(format!("{name}: {last}")))
}

/// Why one server did not give an answer.
#[derive(Debug)]
enum TryError {
    Timeout,
    Malformed,
    Io(std::io::Error),
}

impl std::fmt::Display for TryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TryError::Timeout => f.write_str("timed out"),
            TryError::Malformed => f.write_str("malformed reply"),
            TryError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<std::io::Error> for TryError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => TryError::Timeout,
            _ => TryError::Io(e),
        }
    }
}

fn remaining(until: Instant) -> Result<Duration, TryError> {
    let left = until.saturating_duration_since(Instant::now());
    // A zero timeout means "block forever" to std: never pass one.
    if left < Duration::from_millis(1) {
        Err(TryError::Timeout)
    } else {
        Ok(left)
    }
}

fn ask_udp(server: SocketAddr, query: &Query, until: Instant) -> Result<Answer, TryError> {
    // Connected: the kernel drops datagrams from other sources and
    // reports ICMP unreachable as an error, so a dead server fails fast.
    // (sys::dnssock: SOCK_DNS on OpenBSD, what pledge "dns" allows.)
    let sock = crate::sys::dnssock::udp(server)?;
    sock.send(query.wire())?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        sock.set_read_timeout(Some(remaining(until)?))?;
        let (n, from) = sock.recv_from(&mut buf)?;
        if from != server {
            continue;
        }
        match query.accept(&buf[..n]) {
            Verdict::Ignore => continue,
            Verdict::Malformed => return Err(TryError::Malformed),
            Verdict::Answer(a) => return Ok(a),
            Verdict::Truncated => return ask_tcp(server, query, until),
        }
    }
}

/// RFC 1035 4.2.2 / RFC 7766: the same query over TCP, length-prefixed.
fn ask_tcp(server: SocketAddr, query: &Query, until: Instant) -> Result<Answer, TryError> {
    let mut stream = crate::sys::dnssock::tcp(server, remaining(until)?)?;
    stream.set_write_timeout(Some(remaining(until)?))?;
    let len = u16::try_from(query.wire().len()).map_err(|_| TryError::Malformed)?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(query.wire());
    stream.write_all(&out)?;
    let mut len = [0u8; 2];
    read_exact(&mut stream, &mut len, until)?;
    // The length field caps the reply at 64 KiB.
    let mut reply = vec![0u8; u16::from_be_bytes(len).into()];
    read_exact(&mut stream, &mut reply, until)?;
    match query.accept(&reply) {
        Verdict::Answer(a) => Ok(a),
        // Over TCP there is nothing else to wait for.
        _ => Err(TryError::Malformed),
    }
}

/// read_exact with the deadline re-armed before each read, so a server
/// that trickles bytes cannot hold us past it.
fn read_exact(stream: &mut TcpStream, mut buf: &mut [u8], until: Instant) -> Result<(), TryError> {
    while !buf.is_empty() {
        stream.set_read_timeout(Some(remaining(until)?))?;
        match stream.read(buf) {
            Ok(0) => return Err(TryError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
