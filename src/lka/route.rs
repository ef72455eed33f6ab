//! Where mail for a domain goes: the dispatcher's `Route` question,
//! answered from the DNS as OpenSMTPD's lka answers its mta (dns.c), as
//! one blocking function of a [`Resolver`]. The worker threads of
//! [`super::route_workers`] run it off lka's loop.
//!
//! The rules, OpenSMTPD's:
//! - a smarthost (`relay host`) is that host's addresses, preference 0;
//! - a domain that is an address literal is that address;
//! - else the domain's MXs (or its implicit MX), of which only those
//!   strictly better than this host (or the `backup` MX name) are kept:
//!   none left means relaying would loop, a permanent failure;
//! - each MX's addresses in MX order; an MX without any is left out;
//! - no address for any host is temporary, whatever each failure was
//!   (OpenSMTPD's DNS_ENOTFOUND, "No MX found for domain" or "Host not
//!   found"): only the domain's own look-up can bounce (NXDOMAIN, null
//!   MX, invalid name), as in mta.c's mta_on_mx.
//!
//! The answer is cut to [`MAX_ROUTE_HOSTS`] hosts of [`MAX_ROUTE_ADDRS`]
//! addresses, and the whole route to a deadline: a zone with many MXs on
//! dead servers cannot hold a worker for each MX's full look-up time.

#![forbid(unsafe_code)]

use std::time::Instant;

use super::dns::{literal, mx, DnsError, Printable, Resolver};
use crate::ipc::msg::{RouteAnswer, RouteHost, MAX_ROUTE_ADDRS, MAX_ROUTE_HOSTS};

/// One `Route` question, as the dispatcher asks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQuery {
    pub domain: String,
    /// The relay action's smarthost (a name or an address literal).
    pub host: Option<String>,
    /// The MX name of a `relay backup` action.
    pub backup: Option<String>,
}

/// The answer to `q`, by `deadline`. `me` are this host's names (the
/// config's hostname): an MX by one of them is us.
pub fn route(resolver: &Resolver, q: &RouteQuery, me: &[&str], deadline: Instant) -> RouteAnswer {
    if let Some(host) = &q.host {
        // OpenSMTPD: a smarthost that does not resolve is "Host not
        // found", temporary, whatever the DNS said.
        return match resolver.addresses_until(host, deadline) {
            Ok(addrs) => RouteAnswer::Hosts(vec![RouteHost {
                name: host.clone(),
                preference: 0,
                addrs: cut(addrs),
            }]),
            Err(e) => RouteAnswer::TempFail(e.to_string()),
        };
    }
    // user@[192.0.2.1] (RFC 5321 4.1.3): that address, no MX, as
    // OpenSMTPD's dns.c (domainname_is_addr); a bracket that holds no
    // address names no host.
    if q.domain.starts_with('[') {
        return match literal(&q.domain) {
            Some(ip) => RouteAnswer::Hosts(vec![RouteHost {
                name: q.domain.clone(),
                preference: 0,
                addrs: vec![ip],
            }]),
            None => failure(&DnsError::Invalid(q.domain.clone())),
        };
    }
    let mxs = match resolver.mx_hosts_until(&q.domain, deadline) {
        Ok(mxs) => mxs,
        Err(e) => return failure(&e),
    };
    let mut names: Vec<&str> = me.to_vec();
    names.extend(q.backup.as_deref());
    let mxs = match mx::below_names(&q.domain, mxs, &names) {
        Ok(mxs) => mxs,
        Err(e) => return failure(&e),
    };
    let mut hosts = Vec::new();
    let mut last: Option<DnsError> = None;
    for m in mxs {
        if hosts.len() == MAX_ROUTE_HOSTS {
            break;
        }
        if Instant::now() >= deadline {
            last = Some(DnsError::Temporary(format!("{}: route timed out", m.host)));
            break;
        }
        match resolver.addresses_until(&m.host, deadline) {
            Ok(addrs) => hosts.push(RouteHost {
                name: m.host,
                preference: m.preference,
                addrs: cut(addrs),
            }),
            Err(e) => {
                log::debug!("debug: lka: route {}: {e}", Printable(&q.domain));
                last = Some(e);
            }
        }
    }
    if hosts.is_empty() {
        let why = last.map_or_else(String::new, |e| format!(" ({e})"));
        return RouteAnswer::TempFail(format!(
            "No MX found for domain {}{why}",
            Printable(&q.domain)
        ));
    }
    RouteAnswer::Hosts(hosts)
}

/// A failed look-up of the domain itself: bounce or retry, as the DNS
/// said.
fn failure(e: &DnsError) -> RouteAnswer {
    if e.is_permanent() {
        RouteAnswer::PermFail(e.to_string())
    } else {
        RouteAnswer::TempFail(e.to_string())
    }
}

/// At most [`MAX_ROUTE_ADDRS`], keeping the resolver's order (IPv6 first).
fn cut(mut addrs: Vec<std::net::IpAddr>) -> Vec<std::net::IpAddr> {
    addrs.truncate(MAX_ROUTE_ADDRS);
    addrs
}

#[cfg(test)]
mod tests;
