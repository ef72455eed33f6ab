//! The workers as lka's loop drives them: questions in, answers through
//! the wake-up socket in a mio loop, against dnsmasq and against a name
//! server that never answers.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};

use mio::Token;

use super::*;
use crate::event::Loop;
use crate::lka::dns::tests::dnsmasq::start_with;
use crate::lka::dns::{Hosts, ResolvConf};

fn config(servers: Vec<SocketAddr>, route_time: Duration) -> RouteConfig {
    let mut conf = ResolvConf::with_servers(servers);
    // More tries than fit in the route time: the route's deadline ends a
    // look-up on a silent server, not the tries running out.
    conf.timeout = Duration::from_millis(400);
    conf.attempts = 10;
    RouteConfig {
        resolver: Resolver::new(conf, Hosts::default()).with_lookup_time(Duration::from_secs(5)),
        names: vec!["mx.regress.test".into()],
        route_time,
    }
}

fn q(domain: &str) -> RouteQuery {
    RouteQuery {
        domain: domain.into(),
        host: None,
        backup: None,
    }
}

/// Waits in a loop as lka's does (edge-triggered) until `n` answers came
/// or `limit` passed; each answer with when it came.
fn collect(w: &mut RouteWorkers, n: usize, limit: Duration) -> Vec<(u64, RouteAnswer, Instant)> {
    let mut lp = Loop::new().unwrap();
    lp.watch(w.fd(), Token(0), false).unwrap();
    let until = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < until {
        for r in lp.wait(Some(until)).unwrap() {
            assert_eq!(r.token, Token(0));
            let now = Instant::now();
            got.extend(w.take().unwrap().into_iter().map(|(req, a)| (req, a, now)));
        }
    }
    got
}

/// A slow look-up (dnsmasq forwards slow.test to a server that reads and
/// drops) holds one worker; the others answer meanwhile, and the slow one
/// ends by its route deadline as a temporary failure.
#[test]
fn a_slow_lookup_does_not_hold_the_others() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forward = format!("--server=/slow.test/{}", silent.local_addr().unwrap()).replace(':', "#");
    let server = start_with(&[&forward]);
    let route_time = Duration::from_millis(1500);
    let mut w = RouteWorkers::start(config(vec![server.addr], route_time), 2, 8).unwrap();
    let t = Instant::now();
    w.submit(1, q("slow.test")).unwrap();
    w.submit(2, q("plain.test")).unwrap();
    w.submit(3, q("mx.test")).unwrap();
    w.submit(4, q("nosuch.test")).unwrap();
    let got = collect(&mut w, 4, Duration::from_secs(10));
    let by_req: HashMap<u64, (RouteAnswer, Duration)> = got
        .into_iter()
        .map(|(req, a, at)| (req, (a, at - t)))
        .collect();
    assert_eq!(by_req.len(), 4, "{by_req:?}");
    let (slow, slow_at) = &by_req[&1];
    assert!(matches!(slow, RouteAnswer::TempFail(_)), "{slow:?}");
    assert!(
        *slow_at >= route_time && *slow_at < route_time + Duration::from_secs(1),
        "{slow_at:?}"
    );
    for req in [2, 3, 4] {
        let (a, at) = &by_req[&req];
        assert!(at < slow_at, "{req} answered after the slow one: {at:?}");
        match req {
            4 => assert!(matches!(a, RouteAnswer::PermFail(_)), "{a:?}"),
            _ => assert!(matches!(a, RouteAnswer::Hosts(h) if !h.is_empty()), "{a:?}"),
        }
    }
}

/// Beyond the workers and the queue, a question is refused at once with
/// a temporary failure; every question taken is answered.
#[test]
fn a_full_queue_refuses_at_once() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = config(
        vec![silent.local_addr().unwrap()],
        Duration::from_millis(800),
    );
    let mut w = RouteWorkers::start(config, 1, 1).unwrap();
    let mut taken = Vec::new();
    let mut refused = 0;
    // One in the worker (once it took it), one in the queue: the rest
    // are refused, whatever the worker's timing.
    for req in 0..5 {
        match w.submit(req, q("example.test")) {
            Ok(()) => taken.push(req),
            Err(why) => {
                assert_eq!(why, "Too many DNS lookups in progress");
                refused += 1;
            }
        }
    }
    assert!((1..=2).contains(&taken.len()), "{taken:?}");
    assert_eq!(refused, 5 - taken.len());
    let got = collect(&mut w, taken.len(), Duration::from_secs(10));
    let mut reqs: Vec<u64> = got.iter().map(|(r, _, _)| *r).collect();
    reqs.sort();
    assert_eq!(reqs, taken);
    assert!(got
        .iter()
        .all(|(_, a, _)| matches!(a, RouteAnswer::TempFail(_))));
}
