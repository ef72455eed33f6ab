//! The frame: what one SOCK_SEQPACKET packet between two processes holds.
//!
//! ```text
//! offset 0  u16 LE  version   IPC_VERSION; anything else is refused
//! offset 2  u16 LE  nfds      descriptors attached to this packet (SCM_RIGHTS)
//! offset 4  u32 LE  len       payload length; must equal packet length - 8
//! offset 8  [len]   payload   postcard encoding of the channel's message enum
//! ```
//!
//! The packet boundary is the kernel's, so a frame can never run into the
//! next one; the length field is still checked against it and against
//! `MAX_PAYLOAD` before anything is allocated or decoded (Qualys 2015: an
//! imsg length taken from the peer). Decoding must consume the whole
//! payload. Nothing here does I/O: it is a pure function of bytes, fuzzed by
//! `fuzz/fuzz_targets/ipc_frame.rs`.

use serde::{de::DeserializeOwned, Serialize};
use std::fmt;

/// Bumped whenever any message enum changes shape. Parent and roles are the
/// same binary, so a mismatch means a peer that is not ours.
pub const IPC_VERSION: u16 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// Largest payload of one frame. Large data (config views) is sent in
/// chunks; mail content travels in files, never in frames.
pub const MAX_PAYLOAD: usize = 60 * 1024;
/// Largest packet: what a receive buffer must hold.
pub const MAX_PACKET: usize = HEADER_LEN + MAX_PAYLOAD;
/// Most descriptors one frame may carry.
pub const MAX_FDS: usize = 4;

/// Why a frame was refused. Every variant ends the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header.
    Short(usize),
    /// The version field is not ours.
    Version(u16),
    /// The length field disagrees with the packet.
    Length { claimed: u32, actual: usize },
    /// Payload over `MAX_PAYLOAD` (on send or receive).
    TooLong(usize),
    /// The packet was cut by the kernel (MSG_TRUNC or MSG_CTRUNC).
    Truncated,
    /// The header announces a different number of descriptors than came.
    FdCount { claimed: u16, actual: usize },
    /// The message expects a different number of descriptors.
    FdsUnexpected {
        message: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The payload is not a message of this channel.
    Decode(String),
    /// The payload decoded but bytes were left over.
    Trailing(usize),
    /// Our own message would not encode (a bug, reported not panicked).
    Encode(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "short frame: {n} bytes"),
            FrameError::Version(v) => write!(f, "bad version {v}, expected {IPC_VERSION}"),
            FrameError::Length { claimed, actual } => {
                write!(f, "length field {claimed} but payload is {actual} bytes")
            }
            FrameError::TooLong(n) => write!(f, "payload of {n} bytes over the {MAX_PAYLOAD} cap"),
            FrameError::Truncated => write!(f, "truncated packet"),
            FrameError::FdCount { claimed, actual } => {
                write!(f, "header announces {claimed} descriptors, {actual} came")
            }
            FrameError::FdsUnexpected {
                message,
                expected,
                actual,
            } => {
                write!(f, "{message} carries {expected} descriptors, got {actual}")
            }
            FrameError::Decode(e) => write!(f, "undecodable payload: {e}"),
            FrameError::Trailing(n) => write!(f, "{n} trailing bytes after message"),
            FrameError::Encode(e) => write!(f, "cannot encode message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encode `msg` as a frame announcing `nfds` descriptors.
pub fn encode<M: Serialize>(msg: &M, nfds: usize) -> Result<Vec<u8>, FrameError> {
    if nfds > MAX_FDS {
        return Err(FrameError::FdCount {
            claimed: nfds as u16,
            actual: nfds,
        });
    }
    let mut buf = vec![0u8; HEADER_LEN];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf))
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = buf.len() - HEADER_LEN;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    buf[0..2].copy_from_slice(&IPC_VERSION.to_le_bytes());
    buf[2..4].copy_from_slice(&(nfds as u16).to_le_bytes());
    buf[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Check a received packet's header against the packet itself and the
/// number of descriptors that came with it; return the payload.
pub fn check(packet: &[u8], fds_received: usize) -> Result<&[u8], FrameError> {
    if packet.len() < HEADER_LEN {
        return Err(FrameError::Short(packet.len()));
    }
    let version = u16::from_le_bytes([packet[0], packet[1]]);
    let nfds = u16::from_le_bytes([packet[2], packet[3]]);
    let len = u32::from_le_bytes([packet[4], packet[5], packet[6], packet[7]]);
    if version != IPC_VERSION {
        return Err(FrameError::Version(version));
    }
    let payload = &packet[HEADER_LEN..];
    // Compare in u64: no truncation of either side on any platform.
    if u64::from(len) != payload.len() as u64 {
        return Err(FrameError::Length {
            claimed: len,
            actual: payload.len(),
        });
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLong(payload.len()));
    }
    if usize::from(nfds) != fds_received {
        return Err(FrameError::FdCount {
            claimed: nfds,
            actual: fds_received,
        });
    }
    Ok(payload)
}

/// Decode a payload as one message of the channel's enum `M`. The whole
/// payload must be consumed: trailing bytes mean a peer that lies.
pub fn decode<M: DeserializeOwned>(payload: &[u8]) -> Result<M, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<M>(payload).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// `check` then `decode`: the one path every received frame takes.
pub fn parse<M: DeserializeOwned>(packet: &[u8], fds_received: usize) -> Result<M, FrameError> {
    decode(check(packet, fds_received)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum Msg {
        A,
        B { n: u32, s: String },
    }

    #[test]
    fn round_trip() {
        let m = Msg::B {
            n: 7,
            s: "x".into(),
        };
        let f = encode(&m, 1).unwrap();
        assert_eq!(parse::<Msg>(&f, 1).unwrap(), m);
    }

    #[test]
    fn refuses_bad_headers() {
        let f = encode(&Msg::A, 0).unwrap();
        assert_eq!(check(&f[..7], 0), Err(FrameError::Short(7)));
        let mut v = f.clone();
        v[0] = 9;
        assert_eq!(check(&v, 0), Err(FrameError::Version(9)));
        let mut l = f.clone();
        l[4] = 200;
        assert!(matches!(check(&l, 0), Err(FrameError::Length { .. })));
        assert!(matches!(check(&f, 1), Err(FrameError::FdCount { .. })));
    }

    #[test]
    fn refuses_unknown_variant_and_trailing_bytes() {
        let mut f = encode(&Msg::A, 0).unwrap();
        f[HEADER_LEN] = 5; // no variant 5
        f[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(parse::<Msg>(&f, 0), Err(FrameError::Decode(_))));
        let mut t = encode(&Msg::A, 0).unwrap();
        t.push(0);
        t[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse::<Msg>(&t, 0), Err(FrameError::Trailing(1)));
    }

    #[test]
    fn refuses_oversized_payload_on_encode() {
        let big = Msg::B {
            n: 0,
            s: "x".repeat(MAX_PAYLOAD),
        };
        assert!(matches!(encode(&big, 0), Err(FrameError::TooLong(_))));
    }

    #[test]
    fn huge_claimed_vec_length_is_an_error_not_an_allocation() {
        // A String whose varint length claims ~2^63 bytes.
        let mut p = vec![1u8, 0]; // variant B, n = 0
        p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Msg>(&p).is_err());
    }
}
