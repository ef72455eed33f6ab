//! The mta against real sockets: a server thread plays the remote side
//! (a scripted SMTP server on 127.0.0.1), the test plays queue and lka.
//! The regress tests cover the same with real peers and the whole
//! daemon; these cover the connection logic case by case, fast.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::config::relay::{RelayHost, RelayTls, RelayView};
use crate::config::view::{Common, DispatcherView};
use crate::ipc::msg::RouteHost;

fn view(port: u16) -> &'static DispatcherView {
    view_with(port, false)
}

fn view_with(port: u16, lmtp: bool) -> &'static DispatcherView {
    view_actions(port, lmtp, &["out"])
}

/// One smarthost relay action per name, all to 127.0.0.1:port.
fn view_actions(port: u16, lmtp: bool, actions: &[&str]) -> &'static DispatcherView {
    let relays = actions
        .iter()
        .map(|a| RelayView {
            action: a.to_string(),
            ..relay(port, lmtp)
        })
        .collect();
    Box::leak(Box::new(DispatcherView {
        common: Common {
            hostname: "relay.test".into(),
        },
        listeners: Vec::new(),
        local: Box::new(crate::config::view::ListenerView {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            hostname: "relay.test".into(),
            opts: Default::default(),
        }),
        certs: Vec::new(),
        client_cas: Vec::new(),
        max_mails: 100,
        max_rcpt: 1000,
        max_message_size: 35 << 20,
        relays,
        roots_pem: Vec::new(),
        pause_smtp: false,
        srs: None,
    }))
}

fn relay(port: u16, lmtp: bool) -> RelayView {
    RelayView {
        action: "out".into(),
        host: Some(RelayHost {
            host: "mx.test".into(),
            port,
            lmtp,
        }),
        backup: None,
        helo: None,
        tls: RelayTls::Opportunistic,
        ca_pem: None,
        auth: None,
        mail_from: None,
        pki: None,
        src: Vec::new(),
        helo_src: Vec::new(),
        srs: false,
        domains: Vec::new(),
    }
}

fn envelope(id: u64, dest: &str) -> RelayEnvelope {
    RelayEnvelope {
        id,
        action: "out".into(),
        sender: "alice@here.test".into(),
        dest: dest.into(),
        rcpt: dest.into(),
        notify: Notify::default(),
        ret: None,
        envid: None,
        orcpt: None,
        ctime: crate::spool::unix_now(),
    }
}

fn message(body: &[u8]) -> File {
    let mut f = tempfile();
    f.write_all(body).unwrap();
    f
}

fn tempfile() -> File {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "mta-test-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

/// What the server thread saw of a session.
#[derive(Debug, Default)]
struct Seen {
    commands: Vec<String>,
    data: Vec<u8>,
}

/// A server that answers each command by `script(command) -> reply`
/// (None: close the connection), taking DATA as a well-behaved server.
fn serve(
    listener: TcpListener,
    script: impl Fn(&str) -> Option<String> + Send + 'static,
) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((sock, _)) = listener.accept() else {
            return;
        };
        if let Some(seen) = session(sock, &script) {
            let _ = tx.send(seen);
        }
    });
    rx
}

/// One SMTP session on `sock`, played by `script`; None if the script
/// gave no banner.
fn session(sock: TcpStream, script: &dyn Fn(&str) -> Option<String>) -> Option<Seen> {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let mut seen = Seen::default();
    let banner = script("")?;
    w.write_all(banner.as_bytes()).unwrap();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let cmd = line.trim_end().to_string();
        seen.commands.push(cmd.clone());
        let Some(reply) = script(&cmd) else {
            break;
        };
        let _ = w.write_all(reply.as_bytes());
        if cmd == "DATA" && reply.starts_with("354") {
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 || l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b"..") {
                    &l[1..]
                } else {
                    &l[..]
                };
                seen.data.extend_from_slice(l);
            }
            let Some(reply) = script(".") else {
                break;
            };
            let _ = w.write_all(reply.as_bytes());
        }
        if cmd == "QUIT" {
            break;
        }
    }
    Some(seen)
}

/// A well-behaved server's replies.
fn good(cmd: &str) -> Option<String> {
    Some(
        match cmd {
            "" => "220 mx.test ESMTP\r\n",
            c if c.starts_with("EHLO") => "250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "DATA" => "354 go ahead\r\n",
            "." => "250 2.0.0 queued as 1234\r\n",
            "QUIT" => "221 bye\r\n",
            _ => "250 ok\r\n",
        }
        .to_string(),
    )
}

/// Hand the mta of `view` every envelope (each with a message of
/// `body`) and run it until each has its outcome and every connection is
/// closed (or 30 s passed), answering its route requests with `hosts`.
fn relay_all(
    view: &'static DispatcherView,
    envs: Vec<RelayEnvelope>,
    body: &[u8],
    hosts: &[&str],
) -> Vec<(u64, Outcome)> {
    let lp = &mut Loop::new().unwrap();
    let mut mta = Mta::new(view, 1);
    let hosts: Vec<IpAddr> = hosts.iter().map(|h| h.parse().unwrap()).collect();
    let want = envs.len();
    let mut next_req = 0;
    let mut out: Vec<Out> = envs
        .into_iter()
        .flat_map(|e| mta.relay(lp, e, message(body), &mut next_req))
        .collect();
    let mut results = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let mut more = Vec::new();
        for o in out.drain(..) {
            match o {
                Out::Lka(LkaDispatcher::Route { req, .. }) => {
                    let answer = RouteAnswer::Hosts(vec![RouteHost {
                        name: "mx.test".into(),
                        preference: 0,
                        addrs: hosts.clone(),
                    }]);
                    more.extend(mta.route_answer(lp, req, answer, &mut next_req).unwrap());
                }
                Out::Queue(QueueDispatcher::Relayed { id, outcome }) => results.push((id, outcome)),
                _ => panic!("unexpected output"),
            }
        }
        out = more;
        if !out.is_empty() {
            continue;
        }
        if results.len() >= want && mta.conns.is_empty() {
            return results;
        }
        assert!(Instant::now() < end, "timed out with {results:?}");
        let deadline = mta.deadline().map_or(end, |d| d.min(end));
        for r in lp.wait(Some(deadline)).unwrap() {
            out.extend(mta.ready(
                lp,
                r.token,
                r.readable || r.closed,
                r.writable,
                &mut next_req,
            ));
        }
        out.extend(mta.timers(lp, &mut next_req));
    }
}

fn local() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn two_recipients_of_a_message_in_one_transaction_byte_exact() {
    let (l, port) = local();
    let seen = serve(l, good);
    let body = b"Subject: hi\r\n\r\n.leading dot\r\nend\r\n";
    let results = relay_all(
        view(port),
        vec![
            envelope(0x1111_0000_0001, "bob@there.test"),
            envelope(0x1111_0000_0002, "carol@there.test"),
        ],
        body,
        &["127.0.0.1"],
    );
    assert_eq!(
        results,
        vec![
            (0x1111_0000_0001, Outcome::Delivered),
            (0x1111_0000_0002, Outcome::Delivered)
        ]
    );
    let seen = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(seen.data, body);
    let mails = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("MAIL FROM"))
        .count();
    let rcpts: Vec<&String> = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT TO"))
        .collect();
    assert_eq!(mails, 1, "{:?}", seen.commands);
    assert_eq!(
        rcpts,
        ["RCPT TO:<bob@there.test>", "RCPT TO:<carol@there.test>"]
    );
    assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn per_recipient_replies_decide_each_fate() {
    let (l, port) = local();
    let _seen = serve(l, |cmd| {
        if cmd.starts_with("RCPT TO:<nobody@") {
            return Some("550 5.1.1 no such user\r\n".into());
        }
        if cmd.starts_with("RCPT TO:<later@") {
            return Some("452 4.2.2 mailbox full\r\n".into());
        }
        good(cmd)
    });
    let results = relay_all(
        view(port),
        [(1, "bob"), (2, "nobody"), (3, "later")]
            .iter()
            .map(|(id, who)| envelope(0x2222_0000_0000 | id, &format!("{who}@there.test")))
            .collect(),
        b"x\r\n",
        &["127.0.0.1"],
    );
    assert_eq!(results[0], (0x2222_0000_0001, Outcome::Delivered));
    assert_eq!(
        results[1],
        (
            0x2222_0000_0002,
            Outcome::PermFail("550 5.1.1 no such user".into())
        )
    );
    assert_eq!(
        results[2],
        (
            0x2222_0000_0003,
            Outcome::TempFail("452 4.2.2 mailbox full".into())
        )
    );
}

#[test]
fn a_refusing_address_is_skipped_for_the_next() {
    // Nothing listens on 127.0.0.2 at this port: refused, then 127.0.0.1.
    let (l, port) = local();
    let seen = serve(l, good);
    let results = relay_all(
        view(port),
        vec![envelope(0x3333_0000_0001, "bob@there.test")],
        b"x\r\n",
        &["127.0.0.2", "127.0.0.1"],
    );
    assert_eq!(results, vec![(0x3333_0000_0001, Outcome::Delivered)]);
    assert!(seen.recv_timeout(Duration::from_secs(10)).is_ok());
}

#[test]
fn no_reachable_address_is_a_temporary_failure() {
    let (l, port) = local();
    drop(l);
    let results = relay_all(
        view(port),
        vec![envelope(0x4444_0000_0001, "bob@there.test")],
        b"x\r\n",
        &["127.0.0.1"],
    );
    match &results[..] {
        [(0x4444_0000_0001, Outcome::TempFail(why))] => {
            assert!(why.contains("refused"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_replies_fail_the_try_and_inject_nothing() {
    // CVE-2020-8794's shape: a multi-line reply whose lines carry text
    // meant to become envelope or header lines, with a bare CR and NUL.
    let (l, port) = local();
    let _seen = serve(l, |cmd| {
        if cmd.starts_with("MAIL") {
            return Some("553-rejected\r\n553-\rdest: root@evil\0\r\n553 x\ntype: mda\r\n".into());
        }
        good(cmd)
    });
    let results = relay_all(
        view(port),
        vec![envelope(0x5555_0000_0001, "bob@there.test")],
        b"x\r\n",
        &["127.0.0.1"],
    );
    let [(_, outcome)] = &results[..] else {
        panic!("{results:?}")
    };
    let text = match outcome {
        Outcome::TempFail(t) | Outcome::PermFail(t) => t,
        Outcome::Delivered => panic!("delivered"),
    };
    assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text:?}");
}

#[test]
fn a_421_mid_transaction_is_retried_later() {
    let (l, port) = local();
    let _seen = serve(l, |cmd| {
        if cmd.starts_with("RCPT") {
            return Some("421 4.3.2 shutting down\r\n".into());
        }
        good(cmd)
    });
    let results = relay_all(
        view(port),
        vec![envelope(0x6666_0000_0001, "bob@there.test")],
        b"x\r\n",
        &["127.0.0.1"],
    );
    assert!(
        matches!(&results[..], [(_, Outcome::TempFail(t))] if t.starts_with("421")),
        "{results:?}"
    );
}

#[test]
fn a_server_that_closes_at_the_banner_leaves_the_envelope_for_later() {
    let (l, port) = local();
    thread::spawn(move || {
        // Accept and close at once, twice (no banner).
        for _ in 0..2 {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 1];
                let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
                let _ = s.read(&mut b);
            }
        }
    });
    let results = relay_all(
        view(port),
        vec![envelope(0x7777_0000_0001, "bob@there.test")],
        b"x\r\n",
        &["127.0.0.1"],
    );
    assert!(
        matches!(&results[..], [(_, Outcome::TempFail(_))]),
        "{results:?}"
    );
    // The connection attempt must not have connected to anything else.
    let _ = TcpStream::connect(("127.0.0.1", port));
}

#[test]
fn lmtp_relays_get_one_final_reply_per_recipient() {
    let (l, port) = local();
    let seen = serve(l, |cmd| {
        Some(match cmd {
            c if c.starts_with("LHLO") => "250-lmtp.test\r\n250 PIPELINING\r\n".into(),
            c if c.starts_with("EHLO") => "500 this is LMTP\r\n".into(),
            // bob is taken, nobody refused for good, later for now.
            "." => "250 2.0.0 bob ok\r\n550 5.1.1 nobody\r\n452 4.2.2 later\r\n".into(),
            c => good(c)?,
        })
    });
    let results = relay_all(
        view_with(port, true),
        [(1, "bob"), (2, "nobody"), (3, "later")]
            .iter()
            .map(|(id, who)| envelope(0x8888_0000_0000 | id, &format!("{who}@there.test")))
            .collect(),
        b"x\r\n",
        &["127.0.0.1"],
    );
    assert_eq!(
        results,
        vec![
            (0x8888_0000_0001, Outcome::Delivered),
            (
                0x8888_0000_0002,
                Outcome::PermFail("550 5.1.1 nobody".into())
            ),
            (
                0x8888_0000_0003,
                Outcome::TempFail("452 4.2.2 later".into())
            ),
        ]
    );
    let seen = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(seen.commands[0].starts_with("LHLO "), "{:?}", seen.commands);
}

#[test]
fn connections_to_one_host_are_capped_across_routes() {
    // Three routes (relay actions) to one host, 15 messages each: each
    // route may open 10 connections, the host takes at most 20.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (l, port) = local();
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    {
        let (open, most) = (open.clone(), most.clone());
        thread::spawn(move || {
            for sock in l.incoming() {
                let Ok(sock) = sock else { return };
                let (open, most) = (open.clone(), most.clone());
                thread::spawn(move || {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Slow to greet, so connections overlap.
                    thread::sleep(Duration::from_millis(300));
                    session(sock, &good);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
    let results = relay_all(
        view_actions(port, false, &["a", "b", "c"]),
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .flat_map(|(r, action)| {
                (0..15u64).map(move |i| RelayEnvelope {
                    action: action.to_string(),
                    ..envelope(((r as u64 * 100 + i + 1) << 32) | 1, "bob@there.test")
                })
            })
            .collect(),
        b"x\r\n",
        &["127.0.0.1"],
    );
    assert_eq!(results.len(), 45);
    assert!(
        results.iter().all(|(_, o)| *o == Outcome::Delivered),
        "{results:?}"
    );
    let most = most.load(Ordering::SeqCst);
    assert!(
        (11..=20).contains(&most),
        "at most {most} connections at once"
    );
}
