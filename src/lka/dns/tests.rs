//! Resolver tests against in-process fake servers (odd replies no real
//! server sends on demand) and, in `dnsmasq`, against a real one.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use domain::base::iana::Rcode;

use super::message::tests::reply;
use super::message::RData;
use super::*;

pub(crate) mod dnsmasq;

/// A UDP server on 127.0.0.1 that answers each datagram with whatever
/// `respond` returns (several datagrams, or none), until dropped.
struct Fake {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Fake {
    fn start(respond: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> Fake {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                for r in respond(&buf[..n]) {
                    let _ = sock.send_to(&r, from);
                }
            }
        });
        Fake {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn resolver(servers: &[SocketAddr], timeout_ms: u64, attempts: u32) -> Resolver {
    let mut conf = ResolvConf::with_servers(servers.to_vec());
    conf.timeout = Duration::from_millis(timeout_ms);
    conf.attempts = attempts;
    Resolver::new(conf, Hosts::default()).with_lookup_time(Duration::from_secs(3))
}

fn a(ip: &str) -> RData {
    RData::A(ip.parse().unwrap())
}

#[test]
fn literals_and_hosts_file_need_no_server() {
    let r = Resolver::new(
        ResolvConf::with_servers(vec!["127.0.0.1:9".parse().unwrap()]),
        Hosts::parse("192.0.2.5 relay.example\n"),
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(r.addresses("192.0.2.1").unwrap(), vec![ip("192.0.2.1")]);
    assert_eq!(r.addresses("[192.0.2.1]").unwrap(), vec![ip("192.0.2.1")]);
    assert_eq!(
        r.addresses("[IPv6:2001:db8::1]").unwrap(),
        vec![ip("2001:db8::1")]
    );
    assert_eq!(
        r.addresses("Relay.Example.").unwrap(),
        vec![ip("192.0.2.5")]
    );
    assert!(literal("[2001:db8::1]").is_none());
}

#[test]
fn wrong_id_and_foreign_replies_are_ignored() {
    let fake = Fake::start(|q| {
        let good = reply(
            q,
            None,
            Rcode::NOERROR,
            false,
            &[("x.test", a("192.0.2.9"))],
        );
        let id = u16::from_be_bytes([q[0], q[1]]);
        let forged = reply(
            q,
            Some(id ^ 1),
            Rcode::NOERROR,
            false,
            &[("x.test", a("6.6.6.6"))],
        );
        vec![b"garbage".to_vec(), forged, good]
    });
    let r = resolver(&[fake.addr], 1000, 1);
    assert_eq!(
        r.addresses("x.test").unwrap(),
        vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn silent_server_is_a_temporary_error_within_the_bound() {
    let fake = Fake::start(|_| vec![]);
    let r = resolver(&[fake.addr, fake.addr], 200, 2);
    let t = Instant::now();
    let e = r.mx_hosts("example.test").unwrap_err();
    assert!(matches!(e, DnsError::Temporary(_)), "{e:?}");
    assert!(!e.is_permanent());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // The total bound wins over servers x attempts x timeout.
    let r = resolver(&[fake.addr], 1000, 5).with_lookup_time(Duration::from_millis(300));
    let t = Instant::now();
    assert!(matches!(
        r.mx_hosts("example.test"),
        Err(DnsError::Temporary(_))
    ));
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn servfail_passes_to_the_next_server() {
    let bad = Fake::start(|q| vec![reply(q, None, Rcode::SERVFAIL, false, &[])]);
    let good = Fake::start(|q| {
        let mx = RData::Mx {
            preference: 5,
            exchange: "mx.example.test".into(),
        };
        vec![reply(
            q,
            None,
            Rcode::NOERROR,
            false,
            &[("example.test", mx)],
        )]
    });
    let r = resolver(&[bad.addr, good.addr], 500, 1);
    let got = r.mx_hosts("example.test").unwrap();
    assert_eq!(
        got,
        vec![MxHost {
            preference: 5,
            host: "mx.example.test".into()
        }]
    );
    let r = resolver(&[bad.addr], 500, 2);
    assert!(matches!(
        r.mx_hosts("example.test"),
        Err(DnsError::Temporary(_))
    ));
}

#[test]
fn truncated_reply_switches_to_tcp() {
    use std::io::{Read, Write};
    // UDP and TCP on the same port, as a real server.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let t1 = thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = udp.recv_from(&mut buf).unwrap();
        udp.send_to(&reply(&buf[..n], None, Rcode::NOERROR, true, &[]), from)
            .unwrap();
    });
    let t2 = thread::spawn(move || {
        let (mut s, _) = tcp.accept().unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; u16::from_be_bytes(len).into()];
        s.read_exact(&mut q).unwrap();
        let recs: Vec<(&str, RData)> = (1..=40)
            .map(|i| ("big.test", a(&format!("192.0.2.{i}"))))
            .collect();
        let r = reply(&q, None, Rcode::NOERROR, false, &recs);
        let mut out = (r.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&r);
        s.write_all(&out).unwrap();
    });
    let r = resolver(&[SocketAddr::from(([127, 0, 0, 1], port))], 1000, 1);
    let (_, data) = r
        .chase(
            "big.test",
            QType::A,
            Instant::now() + Duration::from_secs(2),
        )
        .unwrap();
    assert_eq!(data.len(), 40);
    t1.join().unwrap();
    t2.join().unwrap();
}

#[test]
fn cname_loop_is_bounded() {
    let fake = Fake::start(|q| {
        let recs = [
            ("loop.test", RData::Cname("back.test".into())),
            ("back.test", RData::Cname("loop.test".into())),
        ];
        vec![reply(q, None, Rcode::NOERROR, false, &recs)]
    });
    let r = resolver(&[fake.addr], 500, 1);
    assert!(matches!(
        r.addresses("loop.test"),
        Err(DnsError::CnameChain(_))
    ));
    assert!(matches!(
        r.mx_hosts("loop.test"),
        Err(DnsError::CnameChain(_))
    ));
}

#[test]
fn null_mx_and_nxdomain_are_permanent() {
    let fake = Fake::start(|q| {
        let null = RData::Mx {
            preference: 0,
            exchange: String::new(),
        };
        let name = if q.windows(4).any(|w| w == b"null") {
            Rcode::NOERROR
        } else {
            Rcode::NXDOMAIN
        };
        let recs: &[(&str, RData)] = if name == Rcode::NOERROR {
            &[("null.test", null)]
        } else {
            &[]
        };
        vec![reply(q, None, name, false, recs)]
    });
    let r = resolver(&[fake.addr], 500, 1);
    let e = r.mx_hosts("null.test").unwrap_err();
    assert!(
        matches!(e, DnsError::NullMx(_)) && e.is_permanent(),
        "{e:?}"
    );
    let e = r.mx_hosts("gone.test").unwrap_err();
    assert!(
        matches!(e, DnsError::NoSuchDomain(_)) && e.is_permanent(),
        "{e:?}"
    );
    let e = r.addresses("gone.test").unwrap_err();
    assert!(matches!(e, DnsError::NoSuchDomain(_)), "{e:?}");
}

#[test]
fn error_texts_are_printable_ascii() {
    let e = DnsError::Invalid("a\r\nb\u{e9}\0.test".into());
    assert_eq!(e.to_string(), "Invalid domain name: a??b??.test");
    let long = DnsError::NoSuchDomain("x".repeat(1000)).to_string();
    assert_eq!(
        long,
        format!("Domain does not exist: {}...", "x".repeat(255))
    );
    let exact = DnsError::NoAddress("y".repeat(255)).to_string();
    assert_eq!(exact, format!("Host not found: {}", "y".repeat(255)));
}
