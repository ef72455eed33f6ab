//! DNS for relaying: the MX list of a domain and the addresses of a host,
//! as OpenSMTPD's lka answers mta (issue 7).
//!
//! The `domain` crate (NLnet Labs) encodes queries and decodes replies; no
//! DNS packet code is written here. Around it, a small stub resolver of
//! our own, in layers so a non-blocking version can come later:
//!
//! - [`conf`]: /etc/resolv.conf and /etc/hosts, read once;
//! - [`message`]: sans-I/O core: a [`message::Query`] gives the bytes to
//!   send and judges each datagram received (ours? truncated? parsed into
//!   owned, bounded records);
//! - [`chase`]: the CNAME state machine, fed one answer at a time;
//! - [`mx`]: the MX list rules (order, implicit MX, null MX, self cut);
//! - `transport`: the blocking driver (std UDP/TCP sockets with timeouts).
//!   A mio driver would keep the same `Query`/`Chase` and replace only it:
//!   register the UDP socket, call `accept` on readiness, arm a timer for
//!   the per-server timeout and the look-up deadline.
//!
//! Replies are untrusted: a reply must match the query's id, question and
//! server address, the UDP buffer and the records kept per reply are
//! capped, CNAME chains end after [`chase::MAX_CNAME`] links, and each
//! public look-up has a total deadline. Errors say whether they are
//! permanent (bounce now) or temporary (retry later).

#![forbid(unsafe_code)]

pub mod chase;
pub mod conf;
pub mod message;
pub mod mx;
mod transport;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chase::{Chase, Step};
pub use conf::{Hosts, ResolvConf};
use message::{QType, RData};
pub use mx::MxHost;

/// Default bound on one public look-up (all servers, attempts and CNAME
/// links included).
pub const LOOKUP_TIME: Duration = Duration::from_secs(30);

/// Why a look-up gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist. Permanent.
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): it takes no mail.
    /// Permanent.
    NullMx(String),
    /// Not a valid domain name. Permanent.
    Invalid(String),
    /// This host is the best MX for the domain: relaying would loop.
    /// Permanent (OpenSMTPD's "Loop detected").
    Loop(String),
    /// The host exists but has no A or AAAA record. Temporary, as in
    /// OpenSMTPD (DNS_ENOTFOUND).
    NoAddress(String),
    /// Too many CNAME links, or a loop. Temporary: a zone being edited.
    CnameChain(String),
    /// Timeout, SERVFAIL, network or reply error. Temporary.
    Temporary(String),
}

impl DnsError {
    /// Whether the message should bounce now rather than wait for a retry.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DnsError::NoSuchDomain(_)
                | DnsError::NullMx(_)
                | DnsError::Invalid(_)
                | DnsError::Loop(_)
        )
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names inside come from whoever asked (a recipient's domain)
        // or from a reply; the text goes to logs and bounces: printable
        // ASCII only.
        match self {
            DnsError::NoSuchDomain(d) => write!(f, "Domain does not exist: {}", Printable(d)),
            DnsError::NullMx(d) => write!(f, "Domain does not accept mail: {}", Printable(d)),
            DnsError::Invalid(d) => write!(f, "Invalid domain name: {}", Printable(d)),
            DnsError::Loop(d) => {
                write!(f, "Loop detected: we are the best MX for {}", Printable(d))
            }
            DnsError::NoAddress(h) => write!(f, "Host not found: {}", Printable(h)),
            DnsError::CnameChain(d) => {
                write!(f, "CNAME chain too long or looping: {}", Printable(d))
            }
            DnsError::Temporary(m) => {
                write!(f, "Temporary failure in DNS lookup: {}", Printable(m))
            }
        }
    }
}

/// Longest text of an error's name or detail, in characters.
const MAX_SHOWN: usize = 255;

/// Shows `&str` with everything but printable ASCII as `?`, cut to
/// [`MAX_SHOWN`] characters.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars().take(MAX_SHOWN) {
            f.write_char(if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            })?;
        }
        if self.0.chars().nth(MAX_SHOWN).is_some() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl std::error::Error for DnsError {}

/// A blocking stub resolver: the servers of resolv.conf, the hosts file,
/// and a deadline per look-up.
#[derive(Debug, Clone)]
pub struct Resolver {
    conf: ResolvConf,
    hosts: Hosts,
    lookup_time: Duration,
}

impl Resolver {
    /// A resolver over the given configuration and hosts table.
    pub fn new(conf: ResolvConf, hosts: Hosts) -> Resolver {
        Resolver {
            conf,
            hosts,
            lookup_time: LOOKUP_TIME,
        }
    }

    /// Reads /etc/resolv.conf and /etc/hosts (both optional).
    pub fn from_system() -> Resolver {
        Resolver::new(
            ResolvConf::load(Path::new("/etc/resolv.conf")),
            Hosts::load(Path::new("/etc/hosts")),
        )
    }

    /// Sets the bound on each public look-up.
    pub fn with_lookup_time(mut self, limit: Duration) -> Resolver {
        self.lookup_time = limit;
        self
    }

    /// The MX hosts of `domain` in the order to try them: see
    /// [`mx::from_records`] for the implicit and null MX rules. NXDOMAIN
    /// and null MX are permanent errors, time-outs and SERVFAIL temporary.
    /// Apply [`mx::below_names`] / [`mx::below_self`] to the result for
    /// OpenSMTPD's "only MXs better than us" rule.
    pub fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        self.mx_hosts_until(domain, Instant::now() + self.lookup_time)
    }

    /// [`Resolver::mx_hosts`] ending by `deadline` (or the look-up bound,
    /// whichever comes first): a caller with a budget for several
    /// look-ups.
    pub fn mx_hosts_until(&self, domain: &str, deadline: Instant) -> Result<Vec<MxHost>, DnsError> {
        let deadline = deadline.min(Instant::now() + self.lookup_time);
        let (canonical, data) = self.chase(domain, QType::Mx, deadline)?;
        mx::from_records(domain, &canonical, &data)
    }

    /// The addresses of `host`, IPv6 first then IPv4: an address literal
    /// (bare or in brackets, `[IPv6:...]` too) as is, else /etc/hosts,
    /// else AAAA and A queries (CNAMEs followed within the bound).
    pub fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.addresses_until(host, Instant::now() + self.lookup_time)
    }

    /// [`Resolver::addresses`] ending by `deadline` (or the look-up
    /// bound, whichever comes first).
    pub fn addresses_until(&self, host: &str, deadline: Instant) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = literal(host) {
            return Ok(vec![ip]);
        }
        if let Some(addrs) = self.hosts.lookup(host) {
            return Ok(addrs.to_vec());
        }
        let deadline = deadline.min(Instant::now() + self.lookup_time);
        let mut addrs = Vec::new();
        let mut failure = None;
        for qtype in [QType::Aaaa, QType::A] {
            match self.chase(host, qtype, deadline) {
                Ok((_, data)) => addrs.extend(data.iter().filter_map(|d| match d {
                    RData::A(a) => Some(IpAddr::V4(*a)),
                    RData::Aaaa(a) => Some(IpAddr::V6(*a)),
                    _ => None,
                })),
                // The name is gone for every type: no need to ask again.
                Err(e @ DnsError::NoSuchDomain(_)) | Err(e @ DnsError::Invalid(_)) => {
                    return Err(e)
                }
                Err(e) => failure = Some(e),
            }
        }
        match (addrs.is_empty(), failure) {
            (false, _) => Ok(addrs),
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::NoAddress(conf::normalize(host))),
        }
    }

    /// Runs one chase to its end: the canonical name and its records.
    fn chase(
        &self,
        name: &str,
        qtype: QType,
        deadline: Instant,
    ) -> Result<(String, Vec<RData>), DnsError> {
        let mut chase = Chase::new(name, qtype);
        loop {
            let answer = transport::exchange(&self.conf, chase.name(), qtype, deadline)?;
            match chase.feed(&answer)? {
                Step::Follow => continue,
                Step::Done { canonical, data } => return Ok((canonical, data)),
            }
        }
    }
}

/// `host` as an address: "192.0.2.1", "[192.0.2.1]", "[IPv6:2001:db8::1]".
pub fn literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let inner = match inner.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("IPv6:") => return inner[5..].parse().ok(),
            _ => inner,
        };
        return inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
    }
    host.parse().ok()
}
