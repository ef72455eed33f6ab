//! The MX list a relay works from: preference order with ties shuffled
//! (RFC 5321 5.1), the null MX and implicit MX rules, and OpenSMTPD's cut
//! of every MX not strictly better than this host.

#![forbid(unsafe_code)]

use super::conf::normalize;
use super::message::RData;
use super::DnsError;
use crate::spool::id::random_u64;

/// One mail exchanger for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Lower is tried first.
    pub preference: u16,
    /// The host name, normalized (lower case, no trailing dot).
    pub host: String,
}

/// The MX list for `domain` from the MX records found at `canonical` (the
/// end of any CNAME chain from `domain`).
///
/// - no MX record: the canonical name itself, preference 0 (the implicit MX
///   of RFC 5321 5.1, which the caller resolves as A/AAAA);
/// - only the null MX "." (RFC 7505) — or, like OpenSMTPD, "localhost" —
///   is a permanent error: the domain accepts no mail;
/// - otherwise the usable hosts, sorted by preference, ties shuffled.
pub fn from_records(
    domain: &str,
    canonical: &str,
    data: &[RData],
) -> Result<Vec<MxHost>, DnsError> {
    let mut any_mx = false;
    let mut hosts = Vec::new();
    for d in data {
        if let RData::Mx {
            preference,
            exchange,
        } = d
        {
            any_mx = true;
            // OpenSMTPD skips these in a mixed set too: neither can be
            // delivered to.
            if exchange.is_empty() || exchange == "localhost" {
                continue;
            }
            hosts.push(MxHost {
                preference: *preference,
                host: exchange.clone(),
            });
        }
    }
    if !any_mx {
        return Ok(vec![MxHost {
            preference: 0,
            host: canonical.to_string(),
        }]);
    }
    if hosts.is_empty() {
        return Err(DnsError::NullMx(normalize(domain)));
    }
    hosts.sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
    hosts.dedup();
    order(&mut hosts);
    Ok(hosts)
}

/// Sorts by preference and shuffles each run of equal preferences, so the
/// load spreads over equal MXs as RFC 5321 5.1 asks.
pub fn order(hosts: &mut [MxHost]) {
    hosts.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let end = start
            + hosts[start..]
                .iter()
                .take_while(|h| h.preference == pref)
                .count();
        // Fisher-Yates over hosts[start..end].
        for i in (start + 1..end).rev() {
            let j = start + (random_u64() % (i - start + 1) as u64) as usize;
            hosts.swap(i, j);
        }
        start = end;
    }
}

/// OpenSMTPD's rule when this host is one of the MXs (or, for a `backup`
/// relay, when the backup name is): only MXs with a strictly lower
/// preference value than its best entry are used; if none is left, we
/// are the best MX and relaying would loop, a permanent error. `is_me`
/// decides by name now and can decide by address later. A list without
/// this host is returned whole.
pub fn below_self(
    domain: &str,
    hosts: Vec<MxHost>,
    is_me: impl Fn(&MxHost) -> bool,
) -> Result<Vec<MxHost>, DnsError> {
    let Some(mine) = hosts
        .iter()
        .filter(|h| is_me(h))
        .map(|h| h.preference)
        .min()
    else {
        return Ok(hosts);
    };
    let kept: Vec<MxHost> = hosts.into_iter().filter(|h| h.preference < mine).collect();
    if kept.is_empty() {
        Err(DnsError::Loop(normalize(domain)))
    } else {
        Ok(kept)
    }
}

/// [`below_self`] with this host known by its names (compared
/// case-insensitively, trailing dot ignored).
pub fn below_names(
    domain: &str,
    hosts: Vec<MxHost>,
    names: &[&str],
) -> Result<Vec<MxHost>, DnsError> {
    let names: Vec<String> = names.iter().map(|n| normalize(n)).collect();
    below_self(domain, hosts, |h| names.contains(&h.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(p: u16, h: &str) -> RData {
        RData::Mx {
            preference: p,
            exchange: h.into(),
        }
    }

    fn h(p: u16, n: &str) -> MxHost {
        MxHost {
            preference: p,
            host: n.into(),
        }
    }

    #[test]
    fn sorted_by_preference() {
        let got = from_records(
            "example.com",
            "example.com",
            &[
                mx(30, "c"),
                mx(10, "a"),
                mx(20, "b"),
                RData::A("192.0.2.1".parse().unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(got, vec![h(10, "a"), h(20, "b"), h(30, "c")]);
    }

    #[test]
    fn ties_are_shuffled_but_stay_in_their_rank() {
        let recs: Vec<RData> = (0..6)
            .map(|i| mx(if i < 3 { 10 } else { 20 }, &format!("h{i}")))
            .collect();
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let got = from_records("d", "d", &recs).unwrap();
            assert_eq!(got.len(), 6);
            assert!(got[..3].iter().all(|x| x.preference == 10));
            assert!(got[3..].iter().all(|x| x.preference == 20));
            firsts.insert(got[0].host.clone());
        }
        assert_eq!(firsts.len(), 3, "every equal MX comes first sometimes");
    }

    #[test]
    fn implicit_and_null_mx() {
        assert_eq!(
            from_records("alias.example", "real.example", &[]).unwrap(),
            vec![h(0, "real.example")]
        );
        assert!(matches!(
            from_records("Example.COM.", "example.com", &[mx(0, "")]),
            Err(DnsError::NullMx(d)) if d == "example.com"
        ));
        assert!(matches!(
            from_records("d", "d", &[mx(10, "localhost")]),
            Err(DnsError::NullMx(_))
        ));
        // A null MX beside real ones is skipped (OpenSMTPD), not fatal.
        assert_eq!(
            from_records("d", "d", &[mx(0, ""), mx(5, "a")]).unwrap(),
            vec![h(5, "a")]
        );
        assert_eq!(
            from_records("d", "d", &[mx(5, "a"), mx(5, "a")]).unwrap(),
            vec![h(5, "a")]
        );
    }

    #[test]
    fn only_better_mxs_than_us() {
        let list = vec![h(10, "a"), h(20, "me.example"), h(20, "b"), h(30, "c")];
        assert_eq!(
            below_names("d", list.clone(), &["ME.example."]).unwrap(),
            vec![h(10, "a")]
        );
        assert_eq!(below_names("d", list.clone(), &["other"]).unwrap(), list);
        assert!(matches!(
            below_names("d", list.clone(), &["a"]),
            Err(DnsError::Loop(_))
        ));
        // Listed twice: the best entry counts.
        let twice = vec![h(10, "a"), h(20, "me"), h(5, "me"), h(1, "z")];
        assert_eq!(below_names("d", twice, &["me"]).unwrap(), vec![h(1, "z")]);
        // By address (or anything else) through the predicate.
        let got = below_self("d", list, |m| m.host == "c").unwrap();
        assert_eq!(got.len(), 3);
    }
}
