//! Message and envelope identifiers, as OpenSMTPD makes them.
//!
//! A message id is 32 random bits, never 0, printed as 8 lowercase hex
//! digits (`1a2b3c4d`). An envelope id is 64 bits: its message's id in the
//! high half and non-zero bits of its own in the low half, printed as 16
//! hex digits (`1a2b3c4d00f0e1d2`), so the message of an envelope is
//! always known from the envelope alone. Both name files in the spool, so
//! parsing is strict: exactly 8 (or 16) hex digits, nothing else, and the
//! zero parts OpenSMTPD never hands out are refused.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A message: a file in the spool and the envelopes that point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MsgId(u32);

/// One recipient of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct EvpId(u64);

/// Why a number or name is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadId;

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid message or envelope id")
    }
}

impl std::error::Error for BadId {}

impl MsgId {
    /// The id with this value; None for 0.
    pub fn new(v: u32) -> Option<MsgId> {
        (v != 0).then_some(MsgId(v))
    }

    /// A fresh random id (the spool checks it is unused).
    pub fn random() -> MsgId {
        loop {
            let v = random_u64();
            if let Some(id) = MsgId::new((v >> 32) as u32 ^ v as u32) {
                return id;
            }
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Exactly 8 hex digits (either case); anything else is refused.
    pub fn parse(s: &str) -> Result<MsgId, BadId> {
        let v = parse_hex(s.as_bytes(), 8).ok_or(BadId)?;
        MsgId::new(v as u32).ok_or(BadId)
    }

    /// The spool bucket this message lives in: its high byte, as two hex
    /// digits (OpenSMTPD's `(msgid & 0xff000000) >> 24`).
    pub fn bucket(self) -> u8 {
        (self.0 >> 24) as u8
    }

    /// Ids for this message's envelopes: a random start, then counting up
    /// (skipping the reserved low part 0), so the 2^32 - 1 ids it yields
    /// are all distinct. One iterator per message gives collision-free
    /// envelope file names without looking at the disk.
    pub fn envelope_ids(self) -> EvpIds {
        EvpIds {
            msgid: self,
            next: random_u64() as u32,
            left: u32::MAX as u64,
        }
    }
}

impl EvpId {
    /// The id with this value; None if its message part or its own part
    /// is 0.
    pub fn new(v: u64) -> Option<EvpId> {
        ((v >> 32) != 0 && (v as u32) != 0).then_some(EvpId(v))
    }

    /// The envelope `low` of message `msgid`; None if `low` is 0.
    pub fn from_parts(msgid: MsgId, low: u32) -> Option<EvpId> {
        EvpId::new(((msgid.0 as u64) << 32) | low as u64)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The message this envelope belongs to.
    pub fn msgid(self) -> MsgId {
        MsgId((self.0 >> 32) as u32)
    }

    /// Exactly 16 hex digits (either case); anything else is refused.
    pub fn parse(s: &str) -> Result<EvpId, BadId> {
        let v = parse_hex(s.as_bytes(), 16).ok_or(BadId)?;
        EvpId::new(v).ok_or(BadId)
    }
}

/// See [`MsgId::envelope_ids`].
#[derive(Debug, Clone)]
pub struct EvpIds {
    msgid: MsgId,
    next: u32,
    left: u64,
}

impl EvpIds {
    /// The ids `envelope_ids` yields from `first` on: what another role
    /// knowing only a message's first envelope id can tell of the others.
    pub fn from_first(first: EvpId) -> EvpIds {
        EvpIds {
            msgid: first.msgid(),
            next: first.0 as u32,
            left: u32::MAX as u64,
        }
    }
}

impl Iterator for EvpIds {
    type Item = EvpId;

    fn next(&mut self) -> Option<EvpId> {
        while self.left > 0 {
            let low = self.next;
            self.next = self.next.wrapping_add(1);
            if let Some(id) = EvpId::from_parts(self.msgid, low) {
                self.left -= 1;
                return Some(id);
            }
        }
        None
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Display for EvpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for MsgId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<MsgId, BadId> {
        MsgId::parse(s)
    }
}

impl std::str::FromStr for EvpId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<EvpId, BadId> {
        EvpId::parse(s)
    }
}

impl TryFrom<u32> for MsgId {
    type Error = BadId;
    fn try_from(v: u32) -> Result<MsgId, BadId> {
        MsgId::new(v).ok_or(BadId)
    }
}

impl From<MsgId> for u32 {
    fn from(id: MsgId) -> u32 {
        id.0
    }
}

impl TryFrom<u64> for EvpId {
    type Error = BadId;
    fn try_from(v: u64) -> Result<EvpId, BadId> {
        EvpId::new(v).ok_or(BadId)
    }
}

impl From<EvpId> for u64 {
    fn from(id: EvpId) -> u64 {
        id.0
    }
}

/// `digits` hex digits exactly, as a number.
fn parse_hex(s: &[u8], digits: usize) -> Option<u64> {
    if s.len() != digits {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// 64 unpredictable bits without a dependency and without unsafe: SipHash
/// keyed by std's per-thread random keys (drawn from getrandom(2) or
/// arc4random(3) on first use) over a process-wide counter, the pid and
/// the time. Uniqueness is never trusted to it: the spool creates ids with
/// O_EXCL / mkdir and retries.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    // Keys drawn once per thread (getrandom), a counter, and the time: a
    // forked child that shares the keys and counter differs by the time.
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse() {
        let m = MsgId::new(0x1a2b3c4d).expect("nonzero");
        assert_eq!(m.to_string(), "1a2b3c4d");
        assert_eq!(MsgId::parse("1a2b3c4d"), Ok(m));
        assert_eq!(MsgId::parse("1A2B3C4D"), Ok(m));
        assert_eq!(m.bucket(), 0x1a);
        let e = EvpId::from_parts(m, 0xf0e1d2).expect("nonzero");
        assert_eq!(e.to_string(), "1a2b3c4d00f0e1d2");
        assert_eq!(EvpId::parse("1a2b3c4d00f0e1d2"), Ok(e));
        assert_eq!(e.msgid(), m);
        assert_eq!(
            MsgId::new(1).map(|m| m.to_string()).as_deref(),
            Some("00000001")
        );
    }

    #[test]
    fn parse_is_strict() {
        for bad in [
            "",
            "1a2b3c4",
            "1a2b3c4d5",
            "00000000",
            "+1a2b3c4",
            "1a2b3c4 ",
            " 1a2b3c4",
            "1a2b3c4g",
            "0x1a2b3c",
            "１a2b3c4d",
            "1a2b\n3c4",
            "1a2b3c4\0",
        ] {
            assert_eq!(MsgId::parse(bad), Err(BadId), "{bad:?}");
        }
        for bad in [
            "",
            "1a2b3c4d00f0e1d",
            "1a2b3c4d00f0e1d2a",
            "0000000000f0e1d2",
            "1a2b3c4d00000000",
            "1a2b3c4d-0f0e1d2",
            "1a2b3c4d00f0e1d2\n",
        ] {
            assert_eq!(EvpId::parse(bad), Err(BadId), "{bad:?}");
        }
        assert_eq!(MsgId::new(0), None);
        assert_eq!(EvpId::new(0x1_0000_0000), None);
        assert_eq!(EvpId::new(0xffff_ffff), None);
    }

    #[test]
    fn parse_total_on_any_short_input() {
        // Every 1- and 2-byte input, and a sweep of lengths around the real
        // ones: never a panic.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let s = [a, b];
                if let Ok(s) = std::str::from_utf8(&s) {
                    let _ = MsgId::parse(s);
                    let _ = EvpId::parse(s);
                }
            }
        }
        for n in 0..40 {
            let s = "f".repeat(n);
            assert_eq!(MsgId::parse(&s).is_ok(), n == 8);
            assert_eq!(EvpId::parse(&s).is_ok(), n == 16);
        }
    }

    #[test]
    fn envelope_ids_are_distinct_and_skip_zero() {
        let m = MsgId::new(7).expect("nonzero");
        let mut it = EvpIds {
            msgid: m,
            next: u32::MAX - 2,
            left: u32::MAX as u64,
        };
        let first: Vec<u32> = (&mut it).take(5).map(|e| e.get() as u32).collect();
        assert_eq!(first, vec![u32::MAX - 2, u32::MAX - 1, u32::MAX, 1, 2]);
        let ids: std::collections::HashSet<EvpId> = m.envelope_ids().take(5000).collect();
        assert_eq!(ids.len(), 5000);
        assert!(ids.iter().all(|e| e.msgid() == m));
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<MsgId> = (0..1000).map(|_| MsgId::random()).collect();
        assert!(ids.len() > 990);
    }
}
