//! Routes against a real name server: dnsmasq (see the resolver's own
//! dnsmasq tests for how it runs), with a few more records here.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::lka::dns::tests::dnsmasq::{start_with, Dnsmasq};
use crate::lka::dns::{Hosts, ResolvConf};

/// Records beside the resolver tests' (mx.test: a.mx.test 10 with
/// addresses, b and c 20 and d 30 without any, so NXDOMAIN).
fn extra() -> Vec<String> {
    let mut v: Vec<String> = vec![
        // Every MX host is gone.
        "--mx-host=dead.test,gone1.test,10".into(),
        "--mx-host=dead.test,gone2.test,20".into(),
    ];
    // More MXs than a route holds, each with an address.
    for i in 0..40 {
        v.push(format!("--mx-host=many.test,h{i}.many.test,{i}"));
        v.push(format!("--host-record=h{i}.many.test,192.0.2.{}", i + 10));
    }
    v
}

fn start() -> Dnsmasq {
    let extra = extra();
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    start_with(&refs)
}

fn resolver(servers: Vec<SocketAddr>, hosts: Hosts) -> Resolver {
    let mut conf = ResolvConf::with_servers(servers);
    conf.timeout = Duration::from_millis(500);
    conf.attempts = 2;
    Resolver::new(conf, hosts).with_lookup_time(Duration::from_secs(5))
}

fn q(domain: &str, host: Option<&str>, backup: Option<&str>) -> RouteQuery {
    RouteQuery {
        domain: domain.into(),
        host: host.map(Into::into),
        backup: backup.map(Into::into),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn host(name: &str, preference: u16, addrs: &[&str]) -> RouteHost {
    RouteHost {
        name: name.into(),
        preference,
        addrs: ips(addrs),
    }
}

/// The text of a failure, checked safe for a log line or a bounce.
fn failure_text(a: &RouteAnswer) -> (&'static str, &str) {
    let (kind, text) = match a {
        RouteAnswer::TempFail(t) => ("temp", t.as_str()),
        RouteAnswer::PermFail(t) => ("perm", t.as_str()),
        RouteAnswer::Hosts(h) => panic!("hosts {h:?}"),
    };
    assert!(
        text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) && !text.is_empty(),
        "{text:?}"
    );
    (kind, text)
}

/// One dnsmasq for every case: starting it is the slow part.
#[test]
fn routes_against_dnsmasq() {
    let server = start();
    let r = resolver(vec![server.addr], Hosts::default());
    let me = ["mx.regress.test"];

    // MXs in order; the ones without an address (NXDOMAIN) are left out.
    assert_eq!(
        route(&r, &q("MX.test.", None, None), &me, soon()),
        RouteAnswer::Hosts(vec![host("a.mx.test", 10, &["2001:db8::1", "192.0.2.1"])])
    );

    // The implicit MX: the domain itself, IPv6 first.
    assert_eq!(
        route(&r, &q("plain.test", None, None), &me, soon()),
        RouteAnswer::Hosts(vec![host("plain.test", 0, &["2001:db8::7", "192.0.2.7"])])
    );

    // We are an MX: only better ones; the best: a loop, a bounce.
    assert_eq!(
        route(&r, &q("mx.test", None, None), &["c.mx.test"], soon()),
        RouteAnswer::Hosts(vec![host("a.mx.test", 10, &["2001:db8::1", "192.0.2.1"])])
    );
    let a = route(&r, &q("mx.test", None, None), &["A.mx.test."], soon());
    let (kind, text) = failure_text(&a);
    assert_eq!(kind, "perm");
    assert!(text.starts_with("Loop detected"), "{text}");
    // The same with `relay backup a.mx.test` on a host that is no MX.
    let a = route(&r, &q("mx.test", None, Some("a.mx.test")), &me, soon());
    assert_eq!(failure_text(&a).0, "perm");
    // A backup name not in the list keeps every MX.
    assert!(matches!(
        route(&r, &q("mx.test", None, Some("other.test")), &me, soon()),
        RouteAnswer::Hosts(h) if h.len() == 1
    ));

    // The domain's own failures: bounce.
    for d in ["null.test", "nosuch.test"] {
        let a = route(&r, &q(d, None, None), &me, soon());
        assert_eq!(failure_text(&a).0, "perm", "{d}: {a:?}");
    }
    // Every MX host failed, even for good (NXDOMAIN): retry later, as
    // OpenSMTPD ("No MX found for domain").
    let a = route(&r, &q("dead.test", None, None), &me, soon());
    let (kind, text) = failure_text(&a);
    assert_eq!(kind, "temp");
    assert!(
        text.starts_with("No MX found for domain dead.test"),
        "{text}"
    );
    // A name with no address at all: the same.
    let a = route(&r, &q("textonly.test", None, None), &me, soon());
    assert_eq!(failure_text(&a).0, "temp");

    // Cut to MAX_ROUTE_HOSTS, best first.
    let RouteAnswer::Hosts(h) = route(&r, &q("many.test", None, None), &me, soon()) else {
        panic!("many.test");
    };
    assert_eq!(h.len(), MAX_ROUTE_HOSTS);
    for (i, x) in h.iter().enumerate() {
        assert_eq!(
            x,
            &host(
                &format!("h{i}.many.test"),
                i as u16,
                &[&format!("192.0.2.{}", i + 10)]
            )
        );
    }

    // A smarthost: its addresses, no MX look-up (plain.test's MX is
    // itself, mx.test's are a..d: the answer tells which was used).
    assert_eq!(
        route(&r, &q("mx.test", Some("plain.test"), None), &me, soon()),
        RouteAnswer::Hosts(vec![host("plain.test", 0, &["2001:db8::7", "192.0.2.7"])])
    );
    assert_eq!(
        route(&r, &q("mx.test", Some("[192.0.2.9]"), None), &me, soon()),
        RouteAnswer::Hosts(vec![host("[192.0.2.9]", 0, &["192.0.2.9"])])
    );
    // ... that does not resolve: retry later, even on NXDOMAIN.
    let a = route(&r, &q("mx.test", Some("nosuch.test"), None), &me, soon());
    assert_eq!(failure_text(&a).0, "temp");

    // An address literal as the domain: that address, no look-up.
    assert_eq!(
        route(&r, &q("[IPv6:2001:db8::5]", None, None), &me, soon()),
        RouteAnswer::Hosts(vec![host("[IPv6:2001:db8::5]", 0, &["2001:db8::5"])])
    );
    let a = route(&r, &q("[mx.test]", None, None), &me, soon());
    assert_eq!(failure_text(&a).0, "perm");

    // Hostile names give printable texts (a recipient's domain is any
    // bytes the client sent).
    for d in ["bad\r\nname.test", "caf\u{e9}\u{0}.test", &"x".repeat(300)] {
        let a = route(&r, &q(d, None, None), &me, soon());
        failure_text(&a);
    }
}

/// Addresses cut to MAX_ROUTE_ADDRS, in the resolver's order (from the
/// hosts file: no server needed).
#[test]
fn addresses_are_cut() {
    let lines: String = (0..20)
        .map(|i| format!("192.0.2.{i} wide.test\n"))
        .collect();
    let r = resolver(vec!["127.0.0.1:9".parse().unwrap()], Hosts::parse(&lines));
    let RouteAnswer::Hosts(h) = route(&r, &q("d.test", Some("wide.test"), None), &[], soon())
    else {
        panic!("wide.test");
    };
    let want: Vec<String> = (0..MAX_ROUTE_ADDRS)
        .map(|i| format!("192.0.2.{i}"))
        .collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(h, vec![host("wide.test", 0, &want)]);
}

/// A server that never answers: the route ends by its deadline, not the
/// resolver's look-up bound, as a temporary failure.
#[test]
fn silent_server_ends_by_the_route_deadline() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = resolver(vec![silent.local_addr().unwrap()], Hosts::default());
    let t = Instant::now();
    let a = route(
        &r,
        &q("example.test", None, None),
        &[],
        t + Duration::from_millis(700),
    );
    let took = t.elapsed();
    assert_eq!(failure_text(&a).0, "temp");
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}
