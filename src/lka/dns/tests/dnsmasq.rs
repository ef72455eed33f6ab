//! The resolver against a real server: dnsmasq (package dnsmasq-base,
//! installed by scripts/setup-debian.sh through the Makefile's
//! SETUP_PACKAGES) on 127.0.0.1 at a free unprivileged port, serving only
//! the records given on its command line. A CNAME loop cannot be served
//! by dnsmasq (it refuses the configuration), so that case is covered by
//! the fake server in the parent module.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::super::*;

/// A dnsmasq child, killed when dropped.
pub(crate) struct Dnsmasq {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The records every test here uses, in dnsmasq's option syntax.
const RECORDS: &[&str] = &[
    // Unknown names under .test are NXDOMAIN, not "refused".
    "--local=/test/",
    "--mx-host=mx.test,b.mx.test,20",
    "--mx-host=mx.test,a.mx.test,10",
    "--mx-host=mx.test,c.mx.test,20",
    "--mx-host=mx.test,d.mx.test,30",
    "--host-record=a.mx.test,192.0.2.1,2001:db8::1",
    "--host-record=plain.test,192.0.2.7,2001:db8::7",
    "--host-record=v4only.test,192.0.2.8",
    "--txt-record=textonly.test,hello",
    "--mx-host=null.test,.,0",
    "--cname=c1.test,c2.test",
    "--cname=c2.test,plain.test",
];

fn start() -> Dnsmasq {
    start_with(&[])
}

/// dnsmasq with [`RECORDS`] and `extra` (more dnsmasq options), for other
/// modules' tests (lka's routes).
pub(crate) fn start_with(extra: &[&str]) -> Dnsmasq {
    // A free port: bind, note it, close. dnsmasq takes UDP and TCP on it.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(dnsmasq_path());
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--pid-file=",
        "--log-facility=-",
    ])
    .arg(format!("--port={port}"))
    .args(RECORDS)
    .args(long_chain())
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // As root dnsmasq would switch to "nobody"; keep the user we are.
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.ok() == Some(0) {
        cmd.arg("--user=root");
    }
    let child = cmd.spawn().expect("spawn dnsmasq");
    let server = Dnsmasq {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    // Ready when it answers.
    let probe = resolver(&server, 100, 1);
    let until = Instant::now() + Duration::from_secs(10);
    while probe.addresses("plain.test").is_err() {
        assert!(
            Instant::now() < until,
            "dnsmasq did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// ch0.test -> ch1.test -> ... -> ch10.test -> plain.test: longer than
/// the resolver follows.
fn long_chain() -> Vec<String> {
    let mut v: Vec<String> = (0..10)
        .map(|i| format!("--cname=ch{i}.test,ch{}.test", i + 1))
        .collect();
    v.push("--cname=ch10.test,plain.test".into());
    v
}

fn dnsmasq_path() -> &'static str {
    for p in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!(
        "dnsmasq not installed: run `make setup` (dnsmasq-base) or apt-get install dnsmasq-base"
    );
}

fn resolver(server: &Dnsmasq, timeout_ms: u64, attempts: u32) -> Resolver {
    let mut conf = ResolvConf::with_servers(vec![server.addr]);
    conf.timeout = Duration::from_millis(timeout_ms);
    conf.attempts = attempts;
    Resolver::new(conf, Hosts::default()).with_lookup_time(Duration::from_secs(5))
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn mx(p: u16, h: &str) -> MxHost {
    MxHost {
        preference: p,
        host: h.into(),
    }
}

/// One dnsmasq for all the cases: starting it is the slow part.
#[test]
fn against_dnsmasq() {
    let server = start();
    let r = resolver(&server, 1000, 2);

    // MX order, ties in either order.
    let got = r.mx_hosts("MX.test.").unwrap();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], mx(10, "a.mx.test"));
    let mut mid: Vec<&str> = got[1..3].iter().map(|m| m.host.as_str()).collect();
    mid.sort();
    assert_eq!(mid, ["b.mx.test", "c.mx.test"]);
    assert!(got[1..3].iter().all(|m| m.preference == 20));
    assert_eq!(got[3], mx(30, "d.mx.test"));
    assert_eq!(
        r.addresses(&got[0].host).unwrap(),
        ips(&["2001:db8::1", "192.0.2.1"])
    );

    // We are c.mx.test: only a.mx.test (10) is better.
    assert_eq!(
        mx::below_names("mx.test", got.clone(), &["c.mx.test"]).unwrap(),
        vec![mx(10, "a.mx.test")]
    );
    assert!(matches!(
        mx::below_names("mx.test", got, &["a.mx.test"]),
        Err(DnsError::Loop(_))
    ));

    // No MX: the domain itself, resolved by A/AAAA.
    assert_eq!(r.mx_hosts("plain.test").unwrap(), vec![mx(0, "plain.test")]);
    assert_eq!(
        r.addresses("plain.test").unwrap(),
        ips(&["2001:db8::7", "192.0.2.7"])
    );
    assert_eq!(r.addresses("v4only.test").unwrap(), ips(&["192.0.2.8"]));

    // A name with neither: no address, temporary.
    let e = r.addresses("textonly.test").unwrap_err();
    assert!(
        matches!(e, DnsError::NoAddress(_)) && !e.is_permanent(),
        "{e:?}"
    );

    // Null MX.
    let e = r.mx_hosts("null.test").unwrap_err();
    assert!(
        matches!(e, DnsError::NullMx(_)) && e.is_permanent(),
        "{e:?}"
    );

    // NXDOMAIN.
    let e = r.mx_hosts("nosuch.test").unwrap_err();
    assert!(
        matches!(e, DnsError::NoSuchDomain(_)) && e.is_permanent(),
        "{e:?}"
    );
    assert!(matches!(
        r.addresses("nosuch.test"),
        Err(DnsError::NoSuchDomain(_))
    ));

    // CNAME chain: followed for addresses, and the implicit MX is the
    // canonical name (RFC 5321 5.1).
    assert_eq!(
        r.addresses("c1.test").unwrap(),
        ips(&["2001:db8::7", "192.0.2.7"])
    );
    assert_eq!(r.mx_hosts("c1.test").unwrap(), vec![mx(0, "plain.test")]);

    // A chain longer than the bound.
    let e = r.addresses("ch0.test").unwrap_err();
    assert!(matches!(e, DnsError::CnameChain(_)), "{e:?}");
    // ... but within it from further down.
    assert_eq!(
        r.addresses("ch5.test").unwrap(),
        ips(&["2001:db8::7", "192.0.2.7"])
    );
}

/// A dead server first in the list: its timeout passes the turn to
/// dnsmasq, and the whole look-up stays within its bound.
#[test]
fn dead_server_then_dnsmasq() {
    let server = start();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut conf = ResolvConf::with_servers(vec![silent.local_addr().unwrap(), server.addr]);
    conf.timeout = Duration::from_millis(300);
    conf.attempts = 1;
    let r = Resolver::new(conf, Hosts::default()).with_lookup_time(Duration::from_secs(5));
    let t = Instant::now();
    assert_eq!(r.mx_hosts("mx.test").unwrap()[0], mx(10, "a.mx.test"));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
