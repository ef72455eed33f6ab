//! The Sender Rewriting Scheme, as OpenSMTPD's srs.c does it, so that
//! addresses it made keep decoding after a switch to this daemon (and
//! back): `SRS0=HHHH=TT=domain=user@ourdomain` for a forwarded sender,
//! `SRS1=HHHH=lastdomain==rest@ourdomain` for one that was already
//! rewritten, HHHH the first four base64 characters of SHA-1(key ||
//! the rest), TT the day (mod 1024) in base32.
//!
//! One difference: a hash character `/` (one address in sixteen) is
//! written `_`, because our address parser refuses `/` in a local part
//! (it names files in aliases and .forward): such an address made by
//! OpenSMTPD is refused here at RCPT, and one made here does not decode
//! at an OpenSMTPD. The other fifteen in sixteen are the same.
//!
//! The mta encodes the sender of forwarded mail on `relay ... srs`
//! actions; lka decodes the recipient of a bounce coming back. Decoding
//! takes untrusted input: every step is checked, nothing is indexed
//! without a bound, and a failure is `None`.

#![forbid(unsafe_code)]

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Days a timestamp may be in the future (clock skew), as OpenSMTPD.
const FUTURE_DAYS: u16 = 1;

/// The keys and the lifetime of rewritten addresses (`srs key`, `srs key
/// backup`, `srs ttl`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Srs {
    pub key: String,
    pub backup: Option<String>,
    /// Days an address stays valid.
    pub ttl_days: u16,
}

impl Srs {
    /// From the config's `srs key`, `srs key backup` and `srs ttl`; None
    /// without a key.
    pub fn from_settings(s: &crate::config::ast::Settings) -> Option<Srs> {
        Some(Srs {
            key: s.srs_key.clone()?,
            backup: s.srs_key_backup.clone(),
            ttl_days: u16::try_from(s.srs_ttl.as_secs() / 86400).unwrap_or(u16::MAX),
        })
    }
}

/// Today, as SRS counts days (mod 1024).
pub fn today(unix: u64) -> u16 {
    ((unix / 86400) % 1024) as u16
}

fn hash(key: &str, value: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(value.as_bytes());
    let b64 = crate::smtp::client::base64(ctx.finish().as_ref());
    b64[..4].replace('/', "_")
}

impl Srs {
    /// `sender` rewritten to an address at `domain`; None if it is not
    /// an address with a local part and a domain.
    pub fn encode(&self, sender: &str, domain: &str, day: u16) -> Option<String> {
        let (prefix, rest) = (sender.get(..5), sender.get(5..));
        if let (Some(p), Some(rest)) = (prefix, rest) {
            if p.eq_ignore_ascii_case("SRS0=") {
                // A first-hop SRS address: keep it whole behind SRS1.
                let (user, last) = rest.rsplit_once('@')?;
                let tail = format!("{last}=={user}@{domain}");
                return Some(format!("SRS1={}={tail}", hash(&self.key, &tail)));
            }
            if p.eq_ignore_ascii_case("SRS1=") {
                // Already SRS1: replace its hash, keep the rest.
                let (user, _) = rest.rsplit_once('@')?;
                let tmp = format!("{user}@{domain}");
                let tail = tmp
                    .get(5..)
                    .filter(|_| matches!(tmp.as_bytes().get(4), Some(b'=' | b'+' | b'-')))?;
                return Some(format!("SRS1={}={tail}", hash(&self.key, tail)));
            }
        }
        let (user, orig) = sender.rsplit_once('@')?;
        if user.is_empty() || orig.is_empty() {
            return None;
        }
        let tt = [
            BASE32[usize::from(day >> 5) & 31],
            BASE32[usize::from(day) & 31],
        ];
        let tt = std::str::from_utf8(&tt).ok()?;
        let tail = format!("{tt}={orig}={user}@{domain}");
        Some(format!("SRS0={}={tail}", hash(&self.key, &tail)))
    }

    /// The address `rcpt` (an `SRS0=`/`SRS1=` one) stands for, if its
    /// hash is ours (or the backup key's) and, for SRS0, its day is
    /// within the ttl.
    pub fn decode(&self, rcpt: &str, day: u16) -> Option<String> {
        let kind = rcpt.get(..5)?;
        let rest = rcpt.get(5..)?;
        let srs1 = if kind.eq_ignore_ascii_case("SRS0=") {
            false
        } else if kind.eq_ignore_ascii_case("SRS1=") {
            true
        } else {
            return None;
        };
        let (sum, tail) = (rest.get(..4)?, rest.get(5..)?);
        let ok = |key: &str| hash(key, tail) == sum;
        if !(ok(&self.key) || self.backup.as_deref().is_some_and(ok)) {
            return None;
        }
        if srs1 {
            // lastdomain==SRS0-rest@ourdomain -> SRS0rest@lastdomain
            let (user, _) = tail.rsplit_once('@')?;
            let (last, srs0) = user.split_once('=')?;
            let day0 = srs0.get(6..8)?;
            if !matches!(srs0.as_bytes().get(8), Some(b'=' | b'+' | b'-')) || !self.fresh(day0, day)
            {
                return None;
            }
            return Some(format!("SRS0{srs0}@{last}"));
        }
        // TT=domain=user@ourdomain -> user@domain
        if !self.fresh(tail.get(..2)?, day) || tail.as_bytes().get(2) != Some(&b'=') {
            return None;
        }
        let (user, _) = tail.get(3..)?.rsplit_once('@')?;
        let (domain, local) = user.split_once('=')?;
        if domain.is_empty() || local.is_empty() {
            return None;
        }
        Some(format!("{local}@{domain}"))
    }

    /// Whether the base32 day `tt` is at most ttl days old (or a day
    /// ahead), counting mod 1024.
    fn fresh(&self, tt: &str, today: u16) -> bool {
        let b = tt.as_bytes();
        let digit = |c: u8| BASE32.iter().position(|&x| x == c).map(|p| p as u16);
        let (Some(hi), Some(lo)) = (
            b.first().and_then(|&c| digit(c)),
            b.get(1).and_then(|&c| digit(c)),
        ) else {
            return false;
        };
        let then = (hi << 5) | lo;
        let age = (today + 1024 - then) % 1024;
        let ahead = (then + 1024 - today) % 1024;
        age <= self.ttl_days || ahead <= FUTURE_DAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srs() -> Srs {
        Srs {
            key: "secret".into(),
            backup: None,
            ttl_days: 4,
        }
    }

    #[test]
    fn srs0_round_trip_within_the_ttl() {
        let s = srs();
        let day = 700;
        let a = s.encode("alice@example.org", "fwd.test", day).unwrap();
        assert!(
            a.starts_with("SRS0=") && a.ends_with("=example.org=alice@fwd.test"),
            "{a}"
        );
        assert_eq!(s.decode(&a, day).as_deref(), Some("alice@example.org"));
        assert_eq!(s.decode(&a, day + 4).as_deref(), Some("alice@example.org"));
        assert_eq!(s.decode(&a, day + 5), None, "expired");
        assert_eq!(
            s.decode(&a, day - 1).as_deref(),
            Some("alice@example.org"),
            "skew"
        );
        assert_eq!(s.decode(&a, day - 2), None);
    }

    #[test]
    fn the_day_wraps_at_1024() {
        let s = srs();
        let a = s.encode("alice@example.org", "fwd.test", 1022).unwrap();
        assert!(s.decode(&a, 1).is_some());
    }

    #[test]
    fn a_forged_or_mangled_address_does_not_decode() {
        let s = srs();
        let a = s.encode("alice@example.org", "fwd.test", 10).unwrap();
        let forged = a.replace("alice", "mallory");
        assert_eq!(s.decode(&forged, 10), None);
        let other = Srs {
            key: "other".into(),
            ..srs()
        };
        assert_eq!(other.decode(&a, 10), None);
        let rotated = Srs {
            key: "new".into(),
            backup: Some("secret".into()),
            ..srs()
        };
        assert_eq!(rotated.decode(&a, 10).as_deref(), Some("alice@example.org"));
        for junk in [
            "SRS0=",
            "SRS0=abcd",
            "SRS0=abcd=",
            "SRS1=x",
            "srs0=\u{e9}\u{e9}\u{e9}\u{e9}=AA=b=c@d",
            "plain@x",
        ] {
            assert_eq!(s.decode(junk, 10), None, "{junk}");
        }
    }

    #[test]
    fn a_second_hop_makes_srs1_which_decodes_to_the_srs0() {
        let s = srs();
        let a0 = s.encode("alice@example.org", "hop1.test", 10).unwrap();
        let a1 = s.encode(&a0, "hop2.test", 10).unwrap();
        assert!(
            a1.starts_with("SRS1=") && a1.contains("=hop1.test==") && a1.ends_with("@hop2.test"),
            "{a1}"
        );
        assert_eq!(s.decode(&a1, 10).as_deref(), Some(a0.as_str()));
        // A third hop keeps SRS1 with a fresh hash.
        let a2 = s.encode(&a1, "hop3.test", 10).unwrap();
        assert!(
            a2.starts_with("SRS1=") && a2.ends_with("@hop3.test"),
            "{a2}"
        );
        assert_eq!(s.decode(&a2, 10).as_deref(), Some(a0.as_str()));
    }

    #[test]
    fn the_hash_is_opensmtpds() {
        // SHA-1("secret" || "AA=example.org=alice@fwd.test"), base64,
        // first four characters: what OpenSMTPD's srs0_encode writes.
        let tail = "AA=example.org=alice@fwd.test";
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(b"secret");
        ctx.update(tail.as_bytes());
        let full = crate::smtp::client::base64(ctx.finish().as_ref());
        let want = full[..4].replace('/', "_");
        assert_eq!(hash("secret", tail), want);
        assert_eq!(
            srs().encode("alice@example.org", "fwd.test", 0).unwrap(),
            format!("SRS0={want}={tail}")
        );
    }

    #[test]
    fn every_address_made_parses_as_a_local_part() {
        // No '/' (refused by our parser) whatever the hash.
        let s = srs();
        for i in 0..500 {
            let a = s
                .encode(&format!("u{i}@example.org"), "fwd.test", 3)
                .unwrap();
            let parsed = crate::smtp::address::parse_path(&a, false);
            assert!(matches!(parsed, Ok(Some(_))), "{a}: {parsed:?}");
            assert_eq!(s.decode(&a, 3), Some(format!("u{i}@example.org")));
        }
    }
}
