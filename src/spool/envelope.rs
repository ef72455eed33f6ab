//! The envelope: one recipient of one message, and its file format.
//!
//! # File format (version 1)
//! An envelope file is one frame, all integers little-endian:
//!
//! ```text
//! offset size  field
//!      0    8  magic  89 45 56 50 0d 0a 1a 0a   ("\x89EVP\r\n\x1a\n")
//!      8    2  version          = 1
//!     10    2  reserved         = 0
//!     12    4  payload length n (1 ..= MAX_PAYLOAD)
//!     16    4  CRC-32 (IEEE, as zlib) of bytes 0..16 followed by the payload
//!     20    n  payload: the Envelope fields in declaration order, postcard
//! ```
//!
//! The file is exactly `20 + n` bytes: shorter (torn) or longer (garbage
//! appended) is refused, as is any magic, version, reserved value, length
//! or checksum that does not match. The magic (as PNG's) also catches a
//! file mangled by a text-mode copy: the high byte and the CR LF, ^Z, LF
//! would not survive one. The CRC-32 guards against torn and corrupted
//! files, not against a forger: the spool is written by the queue role
//! alone and is 0700 to it.
//!
//! The payload is postcard (varint integers, length-prefixed UTF-8
//! strings, Option as a 0/1 tag, enums as a varint index); it must be
//! consumed exactly. Nothing is ever split on lines, so CR, LF or NUL in a
//! field could not forge another field or another envelope (A3); on top
//! of that every string is checked, on encode and on decode, to hold no
//! control character at all and to fit its cap, so the values the rest of
//! the daemon sees are always printable (A2: refused, not repaired).
//!
//! Decoding is total (A4): any bytes give an `Envelope` or a
//! [`FormatError`], never a panic; nothing is allocated beyond the payload
//! cap. A new field means a new version: the decoder keeps reading every
//! version it ever wrote.

use super::crc32::Crc32;
use super::id::EvpId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The frame's first bytes.
pub const MAGIC: [u8; 8] = *b"\x89EVP\r\n\x1a\n";
/// The version `encode` writes.
pub const VERSION: u16 = 1;
/// Header bytes before the payload.
pub const HEADER_LEN: usize = 20;
/// The largest payload accepted (every field at its cap fits).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// The largest envelope file accepted.
pub const MAX_FILE: usize = HEADER_LEN + MAX_PAYLOAD;

/// Cap on every string field but the two below, in bytes.
pub const MAX_FIELD: usize = 1024;
/// RFC 3461: ENVID is at most 100 characters.
pub const MAX_ENVID: usize = 100;
/// RFC 3461: ORCPT is at most 500 characters.
pub const MAX_ORCPT: usize = 500;

/// How an envelope is delivered (OpenSMTPD's `enum delivery_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Delivered on this host: maildir, mbox, lmtp, mda (D_MDA).
    Local,
    /// Sent on to another MTA (D_MTA).
    Relay,
    /// A bounce or delay notice to generate for the sender (D_BOUNCE).
    Bounce,
}

/// What an alias or `.forward` item delivers to, instead of the action's
/// method: `/path` (appended in mbox format) or `|command` (run as an mda).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalTarget {
    File(String),
    Command(String),
}

/// A `userbase` user, as the delivery needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAccount {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// RFC 3461 RET: what a bounce carries of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DsnRet {
    Full,
    Hdrs,
}

/// RFC 3461 NOTIFY, as OpenSMTPD's bits. Empty means "not given" (the
/// default: failures, and delays at the server's discretion). NEVER
/// excludes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Notify(u8);

impl Notify {
    pub const SUCCESS: Notify = Notify(0x01);
    pub const FAILURE: Notify = Notify(0x02);
    pub const DELAY: Notify = Notify(0x04);
    pub const NEVER: Notify = Notify(0x08);
    const ALL: u8 = 0x0f;

    /// None for unknown bits or NEVER combined with another.
    pub fn from_bits(b: u8) -> Option<Notify> {
        let ok = b & !Self::ALL == 0 && (b & Self::NEVER.0 == 0 || b == Self::NEVER.0);
        ok.then_some(Notify(b))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn contains(self, other: Notify) -> bool {
        other.0 != 0 && self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union; None if it would mix NEVER with another.
    pub fn with(self, other: Notify) -> Option<Notify> {
        Notify::from_bits(self.0 | other.0)
    }
}

impl TryFrom<u8> for Notify {
    type Error = &'static str;
    fn try_from(b: u8) -> Result<Notify, &'static str> {
        Notify::from_bits(b).ok_or("bad DSN notify bits")
    }
}

impl From<Notify> for u8 {
    fn from(n: Notify) -> u8 {
        n.0
    }
}

/// Envelope flags, as OpenSMTPD's `EF_*` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Flags(u32);

impl Flags {
    /// The sender authenticated (EF_AUTHENTICATED).
    pub const AUTHENTICATED: Flags = Flags(0x01);
    /// This envelope is a bounce: it must never bounce in turn (EF_BOUNCE).
    pub const BOUNCE: Flags = Flags(0x02);
    /// Made by an internal expansion (.forward, alias), not by a client
    /// (EF_INTERNAL).
    pub const INTERNAL: Flags = Flags(0x04);
    const ALL: u32 = 0x07;

    /// None for unknown bits.
    pub fn from_bits(b: u32) -> Option<Flags> {
        (b & !Self::ALL == 0).then_some(Flags(b))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
}

impl TryFrom<u32> for Flags {
    type Error = &'static str;
    fn try_from(b: u32) -> Result<Flags, &'static str> {
        Flags::from_bits(b).ok_or("unknown envelope flags")
    }
}

impl From<Flags> for u32 {
    fn from(f: Flags) -> u32 {
        f.0
    }
}

/// One recipient of one message, as stored in the spool. Times are unix
/// seconds. The field order is the payload's: changing it, or a field's
/// type, is a new format version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: EvpId,
    /// MAIL FROM; "" for the null sender `<>`.
    pub sender: String,
    /// RCPT TO, as the client gave it.
    pub rcpt: String,
    /// The recipient this one was expanded from (alias, virtual,
    /// .forward), for X-Original-To; None when `rcpt` was not rewritten.
    pub orig_rcpt: Option<String>,
    /// Where it goes after expansion: the mailbox user or the remote
    /// address.
    pub dest: String,
    /// For a local delivery: the user it is delivered as ("" when the
    /// delivery derives it from `dest`), and what is written instead of
    /// the action's method when an alias or `.forward` named a file or a
    /// command.
    pub user: String,
    pub target: Option<LocalTarget>,
    /// The user's uid, gid and home when lka found them in a `userbase`
    /// table (virtual users have no passwd entry); None: look the user
    /// up in the system's users at delivery.
    pub account: Option<LocalAccount>,
    /// The name of the smtpd.conf action that delivers it.
    pub action: String,
    pub kind: Kind,
    /// The listener's or the match rule's tag.
    pub tag: Option<String>,
    /// What the client said in HELO/EHLO.
    pub helo: String,
    /// The client's address, as logged ("192.0.2.1", "local").
    pub client: String,
    /// The listener's hostname (for Received: and bounces).
    pub hostname: String,
    /// When the message was accepted.
    pub ctime: u64,
    /// How long, from `ctime`, delivery is tried before it bounces
    /// (`queue ttl`, 4 days by default).
    pub expire: u64,
    /// Delivery attempts so far.
    pub retry: u32,
    /// When the last attempt ended; 0 for never.
    pub last_try: u64,
    /// When the last delay notice was sent; 0 for never.
    pub last_warn: u64,
    /// The last attempt's error, escaped to printable ASCII (set it with
    /// [`Envelope::set_last_error`]); "" if none.
    pub last_error: String,
    /// RFC 3461 NOTIFY.
    pub notify: Notify,
    /// RFC 3461 RET; None if not given.
    pub ret: Option<DsnRet>,
    /// RFC 3461 ENVID, as xtext; None if not given.
    pub envid: Option<String>,
    /// RFC 3461 ORCPT ("rfc822;user@example.org"), as xtext; None if not
    /// given.
    pub orcpt: Option<String>,
    pub flags: Flags,
    /// The message file's size in bytes, and its CRC-32: what the commit
    /// made durable, checked at recovery (a message whose file does not
    /// match was renamed into queue/ by a commit whose flush a crash
    /// interrupted, and never acknowledged).
    pub size: u64,
    pub body_crc: u32,
}

/// Why bytes are not an envelope, or an envelope cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Shorter than its header says (or than a header).
    Truncated,
    /// Longer than its header says.
    TrailingBytes,
    BadMagic,
    /// A version this build does not know.
    Version(u16),
    BadHeader,
    /// Payload over MAX_PAYLOAD (or empty).
    TooLarge,
    BadChecksum,
    /// The payload is not a postcard Envelope.
    Payload,
    /// The envelope decoded but a field is invalid (which, and why).
    Invalid(&'static str),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Truncated => f.write_str("truncated"),
            FormatError::TrailingBytes => f.write_str("trailing bytes"),
            FormatError::BadMagic => f.write_str("bad magic"),
            FormatError::Version(v) => write!(f, "unknown version {v}"),
            FormatError::BadHeader => f.write_str("bad header"),
            FormatError::TooLarge => f.write_str("bad payload length"),
            FormatError::BadChecksum => f.write_str("checksum mismatch"),
            FormatError::Payload => f.write_str("undecodable payload"),
            FormatError::Invalid(why) => write!(f, "invalid field: {why}"),
        }
    }
}

impl std::error::Error for FormatError {}

impl From<FormatError> for std::io::Error {
    fn from(e: FormatError) -> std::io::Error {
        let kind = match e {
            FormatError::Invalid(_) => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// Seconds since the epoch: the clock of every envelope time (ctime,
/// last_try...) and of the scheduler's schedule.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Envelope {
    /// A bounce or report the queue made: it never bounces in turn.
    pub fn is_bounce(&self) -> bool {
        self.kind == Kind::Bounce || self.flags.contains(Flags::BOUNCE)
    }
    /// Store the text of a delivery error (a remote server's reply, a
    /// local failure): escaped to printable ASCII with `\xNN` (as log
    /// lines are, A12/A15) and cut to MAX_FIELD bytes.
    pub fn set_last_error(&mut self, raw: &[u8]) {
        let mut s = crate::log::escape(raw);
        if s.len() > MAX_FIELD {
            // escape() yields ASCII: any byte offset is a char boundary.
            s.truncate(MAX_FIELD);
            // Never end inside a `\xNN` sequence.
            if let Some(p) = s[s.len().saturating_sub(3)..].find('\\') {
                s.truncate(s.len().saturating_sub(3) + p);
            }
        }
        self.last_error = s;
    }

    /// Check every field against its cap and rules.
    pub fn validate(&self) -> Result<(), FormatError> {
        let text = |s: &str, cap: usize, name: &'static str| {
            if s.len() > cap || s.chars().any(char::is_control) {
                Err(FormatError::Invalid(name))
            } else {
                Ok(())
            }
        };
        text(&self.sender, MAX_FIELD, "sender")?;
        text(&self.rcpt, MAX_FIELD, "rcpt")?;
        if self.rcpt.is_empty() {
            return Err(FormatError::Invalid("rcpt"));
        }
        if let Some(o) = &self.orig_rcpt {
            text(o, MAX_FIELD, "orig_rcpt")?;
        }
        text(&self.dest, MAX_FIELD, "dest")?;
        if self.dest.is_empty() {
            return Err(FormatError::Invalid("dest"));
        }
        text(&self.action, MAX_FIELD, "action")?;
        text(&self.user, MAX_FIELD, "user")?;
        match &self.target {
            Some(LocalTarget::File(p)) => text(p, MAX_FIELD, "target")?,
            Some(LocalTarget::Command(c)) => text(c, MAX_FIELD, "target")?,
            None => {}
        }
        if let Some(a) = &self.account {
            text(&a.home, MAX_FIELD, "account")?;
            if !a.home.starts_with('/') {
                return Err(FormatError::Invalid("account"));
            }
        }
        if let Some(t) = &self.tag {
            text(t, MAX_FIELD, "tag")?;
        }
        text(&self.helo, MAX_FIELD, "helo")?;
        text(&self.client, MAX_FIELD, "client")?;
        text(&self.hostname, MAX_FIELD, "hostname")?;
        text(&self.last_error, MAX_FIELD, "last_error")?;
        if let Some(e) = &self.envid {
            text(e, MAX_ENVID, "envid")?;
        }
        if let Some(o) = &self.orcpt {
            text(o, MAX_ORCPT, "orcpt")?;
        }
        Ok(())
    }

    /// The envelope as a file (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let payload = postcard::to_stdvec(self).map_err(|_| FormatError::Payload)?;
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(FormatError::TooLarge);
        }
        Ok(frame(&payload))
    }

    /// Bytes read back from the spool, untrusted, to an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, FormatError> {
        let header = bytes.get(..HEADER_LEN).ok_or(FormatError::Truncated)?;
        if header[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        if header[10..12] != [0, 0] {
            return Err(FormatError::BadHeader);
        }
        let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
        if len == 0 || len > MAX_PAYLOAD {
            return Err(FormatError::TooLarge);
        }
        let body = &bytes[HEADER_LEN..];
        if body.len() < len {
            return Err(FormatError::Truncated);
        }
        if body.len() > len {
            return Err(FormatError::TrailingBytes);
        }
        let stored = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        let mut crc = Crc32::new();
        crc.update(&header[..16]);
        crc.update(body);
        if crc.finish() != stored {
            return Err(FormatError::BadChecksum);
        }
        let (evp, rest) =
            postcard::take_from_bytes::<Envelope>(body).map_err(|_| FormatError::Payload)?;
        if !rest.is_empty() {
            return Err(FormatError::Payload);
        }
        evp.validate()?;
        Ok(evp)
    }
}

/// The frame around a payload of at most [`MAX_PAYLOAD`] bytes: header
/// and checksum. `encode` writes with it; the fuzzer reaches the payload
/// decoder through it (a checksum is not something fuzzing finds).
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = Crc32::new();
    crc.update(&out);
    crc.update(payload);
    out.extend_from_slice(&crc.finish().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spool::id::MsgId;

    /// A plausible envelope, for tests here and in the store.
    pub(crate) fn sample(id: EvpId) -> Envelope {
        Envelope {
            id,
            sender: "alice@example.org".into(),
            rcpt: "bob@example.net".into(),
            orig_rcpt: Some("postmaster@example.net".into()),
            dest: "bob@example.net".into(),
            action: "relay".into(),
            kind: Kind::Relay,
            tag: Some("IN".into()),
            helo: "mail.example.org".into(),
            client: "192.0.2.1".into(),
            hostname: "mx.example.net".into(),
            ctime: 1_700_000_000,
            expire: 4 * 86400,
            retry: 3,
            last_try: 1_700_000_600,
            last_warn: 0,
            last_error: "421 4.7.0 try again later".into(),
            notify: Notify::FAILURE.with(Notify::DELAY).expect("valid"),
            ret: Some(DsnRet::Hdrs),
            envid: Some("QQ314159".into()),
            orcpt: Some("rfc822;bob@example.net".into()),
            flags: Flags::AUTHENTICATED,
            user: "bob".into(),
            target: Some(LocalTarget::Command("/usr/bin/procmail -a x".into())),
            account: None,
            size: 4242,
            body_crc: 0xCBF4_3926,
        }
    }

    fn id() -> EvpId {
        EvpId::new(0x1a2b_3c4d_00f0_e1d2).expect("valid")
    }

    #[test]
    fn round_trip() {
        let e = sample(id());
        let b = e.encode().expect("encode");
        assert_eq!(&b[..8], &MAGIC);
        assert_eq!(Envelope::decode(&b), Ok(e.clone()));

        let mut minimal = e;
        minimal.sender = String::new();
        minimal.orig_rcpt = None;
        minimal.tag = None;
        minimal.ret = None;
        minimal.envid = None;
        minimal.orcpt = None;
        minimal.notify = Notify::NEVER;
        minimal.flags = Flags::default();
        minimal.kind = Kind::Bounce;
        minimal.sender = String::new();
        minimal.rcpt = "ü@bücher.example".into();
        let b = minimal.encode().expect("encode");
        assert_eq!(Envelope::decode(&b), Ok(minimal));
    }

    /// The bytes of version 1 must never change: an old spool has to stay
    /// readable. If this fails, the format changed: make it version 2 and
    /// keep decoding version 1.
    #[test]
    fn golden_v1() {
        let b = sample(id()).encode().expect("encode");
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex, GOLDEN_V1);
        assert_eq!(Envelope::decode(&b).map(|e| e.id), Ok(id()));
    }

    // body_crc, user, target and account joined version 1 before any
    // release wrote a spool.
    const GOLDEN_V1: &str = concat!(
        "894556500d0a1a0a01000000fc000000265b868ed2c3c387d089cf951a11616c",
        "696365406578616d706c652e6f72670f626f62406578616d706c652e6e657401",
        "16706f73746d6173746572406578616d706c652e6e65740f626f62406578616d",
        "706c652e6e657403626f620101162f7573722f62696e2f70726f636d61696c20",
        "2d612078000572656c6179010102494e106d61696c2e6578616d706c652e6f72",
        "67093139322e302e322e310e6d782e6578616d706c652e6e657480e2cfaa0680",
        "8c1503d8e6cfaa06001934323120342e372e302074727920616761696e206c61",
        "7465720601010108515133313431353901167266633832323b626f6240657861",
        "6d706c652e6e6574019221a6f2d0df0c",
    );

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let b = sample(id()).encode().expect("encode");
        for n in 0..b.len() {
            assert!(Envelope::decode(&b[..n]).is_err(), "truncated to {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(Envelope::decode(&longer), Err(FormatError::TrailingBytes));
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let e = sample(id());
        let b = e.encode().expect("encode");
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                match Envelope::decode(&c) {
                    Err(_) => {}
                    // Never expected with a CRC, but the property is only
                    // that nothing else can come out.
                    Ok(d) => assert_eq!(d, e, "byte {i} bit {bit}"),
                }
            }
        }
    }

    #[test]
    fn every_byte_value_everywhere_is_total() {
        let b = sample(id()).encode().expect("encode");
        for i in 0..b.len() {
            for v in 0..=255u8 {
                let mut c = b.clone();
                c[i] = v;
                let _ = Envelope::decode(&c);
            }
        }
    }

    /// Re-checksummed garbage payloads get past the CRC: postcard and
    /// validate must still refuse them without panicking.
    #[test]
    fn forged_payloads_are_total() {
        let reframe = |payload: &[u8]| {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut crc = Crc32::new();
            crc.update(&out);
            crc.update(payload);
            out.extend_from_slice(&crc.finish().to_le_bytes());
            out.extend_from_slice(payload);
            out
        };
        let good = sample(id()).encode().expect("encode");
        let payload = &good[HEADER_LEN..];
        // Every truncation and every byte value at every offset.
        for n in 0..payload.len() {
            let _ = Envelope::decode(&reframe(&payload[..n]));
        }
        let mut rng = 0x1234_5678_9abc_def0u64;
        for i in 0..payload.len() {
            for v in [0u8, 1, 0x0a, 0x0d, 0x7f, 0x80, 0xff, 0xc3] {
                let mut p = payload.to_vec();
                p[i] = v;
                let _ = Envelope::decode(&reframe(&p));
            }
        }
        // Random payloads of random lengths.
        for _ in 0..20000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 300) as usize;
            let p: Vec<u8> = (0..len)
                .map(|k| (rng.rotate_left(k as u32 % 64) >> 3) as u8)
                .collect();
            let _ = Envelope::decode(&reframe(&p));
        }
        // A huge claimed string length in a valid-looking frame.
        let mut p = payload.to_vec();
        p.truncate(9);
        p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(Envelope::decode(&reframe(&p)).is_err());
    }

    #[test]
    fn injection_is_refused() {
        for bad in ["a\r\nb", "a\nb", "a\0b", "a\x1bb", "a\u{85}b", "a\x7fb"] {
            let mut e = sample(id());
            e.rcpt = bad.into();
            assert_eq!(e.encode(), Err(FormatError::Invalid("rcpt")), "{bad:?}");
            let mut e = sample(id());
            e.helo = bad.into();
            assert_eq!(e.encode(), Err(FormatError::Invalid("helo")));
        }
        // A CR/LF in a payload that is re-checksummed is refused on read
        // too: the decoder does not trust the writer.
        let mut e = sample(id());
        e.helo = "xxxxxxxxxx".into();
        let mut b = e.encode().expect("encode");
        let at = b
            .windows(10)
            .position(|w| w == b"xxxxxxxxxx")
            .expect("helo in payload");
        b[at + 3] = b'\n';
        let mut crc = Crc32::new();
        crc.update(&b[..16]);
        crc.update(&b[HEADER_LEN..]);
        let c = crc.finish().to_le_bytes();
        b[16..20].copy_from_slice(&c);
        assert_eq!(Envelope::decode(&b), Err(FormatError::Invalid("helo")));
    }

    #[test]
    fn caps() {
        let mut e = sample(id());
        e.envid = Some("x".repeat(MAX_ENVID + 1));
        assert!(e.encode().is_err());
        let mut e = sample(id());
        e.orcpt = Some("x".repeat(MAX_ORCPT + 1));
        assert!(e.encode().is_err());
        // Every field at its cap still fits in one frame.
        let big = "x".repeat(MAX_FIELD);
        let mut e = sample(id());
        for f in [
            &mut e.sender,
            &mut e.rcpt,
            &mut e.dest,
            &mut e.action,
            &mut e.helo,
            &mut e.client,
            &mut e.hostname,
            &mut e.last_error,
        ] {
            *f = big.clone();
        }
        e.orig_rcpt = Some(big.clone());
        e.tag = Some(big);
        e.envid = Some("e".repeat(MAX_ENVID));
        e.orcpt = Some("o".repeat(MAX_ORCPT));
        e.ctime = u64::MAX;
        e.size = u64::MAX;
        let b = e.encode().expect("fits");
        assert!(b.len() <= MAX_FILE);
        assert_eq!(Envelope::decode(&b), Ok(e));
    }

    #[test]
    fn bad_ids_and_bits_are_refused_on_read() {
        // Patch a field inside a valid payload and re-checksum: the id
        // with a zero low part, an unknown flag, NEVER|FAILURE.
        let e = sample(EvpId::from_parts(MsgId::new(1).expect("m"), 1).expect("e"));
        let b = e.encode().expect("encode");
        // The id is the first varint of the payload: 1<<32 | 1.
        let mut p = b[HEADER_LEN..].to_vec();
        assert_eq!(p[0], 0x81, "varint of (1<<32)|1 starts 0x81");
        p[0] = 0x80; // low part 0
        let mut f = b[..HEADER_LEN].to_vec();
        f.extend_from_slice(&p);
        let mut crc = Crc32::new();
        crc.update(&f[..16]);
        crc.update(&f[HEADER_LEN..]);
        let c = crc.finish().to_le_bytes();
        f[16..20].copy_from_slice(&c);
        assert_eq!(Envelope::decode(&f), Err(FormatError::Payload));
        assert_eq!(Notify::from_bits(0x0a), None);
        assert_eq!(Notify::from_bits(0x10), None);
        assert_eq!(Flags::from_bits(0x08), None);
    }

    #[test]
    fn last_error_is_escaped_and_capped() {
        let mut e = sample(id());
        e.set_last_error(b"550 no\r\n250 ok\0");
        assert_eq!(e.last_error, "550 no\\x0d\\x0a250 ok\\x00");
        e.encode().expect("storable");
        e.set_last_error(&[0xffu8; 2000]);
        assert!(e.last_error.len() <= MAX_FIELD);
        assert!(e.last_error.ends_with("\\xff"));
        e.encode().expect("storable");
    }
}
