//! deliver() end to end, against a scripted LMTP server on a real
//! socket: what it sees on the wire and the outcome of each recipient.
//! The protocol details (reply parsing, dot-stuffing, the state machine)
//! are the engine's, tested in smtp::client.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

fn recipient(user: &str, dest: &str) -> Recipient {
    Recipient {
        sender: "alice@example.org".into(),
        rcpt: dest.into(),
        dest: dest.into(),
        user: user.into(),
        home: PathBuf::from("/home").join(user),
        uid: 1000,
        gid: 1000,
        hostname: "mx.example.net".into(),
    }
}

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        io: Duration::from_secs(5),
        session: Duration::from_secs(20),
    }
}

/// What the test server saw.
#[derive(Debug, Default)]
struct Seen {
    commands: Vec<String>,
    data: Vec<u8>,
}

/// A small LMTP server: `rcpt` is the reply to each RCPT in turn,
/// `finals` the per-recipient replies after the dot.
fn serve(stream: impl Read + Write, rcpt: &[&str], finals: &[&str]) -> Seen {
    let mut r = BufReader::new(stream);
    let mut seen = Seen::default();
    let mut rcpt = rcpt.iter();
    let send = |r: &mut BufReader<_>, s: &str| {
        let w: &mut dyn Write = r.get_mut();
        let _ = w.write_all(s.as_bytes());
    };
    send(&mut r, "220 lmtp.test LMTP ready\r\n");
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return seen;
        }
        seen.commands.push(line.trim_end().to_string());
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            // Offered and not used: no STARTTLS, no SIZE=, one command
            // at a time.
            "LHLO" => send(
                &mut r,
                "250-lmtp.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n\
                 250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n",
            ),
            "MAIL" => send(&mut r, "250 2.1.0 ok\r\n"),
            "RCPT" => {
                let rep = rcpt.next().copied().unwrap_or("250 ok");
                send(&mut r, &format!("{rep}\r\n"));
            }
            "DATA" => {
                send(&mut r, "354 go ahead\r\n");
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                        return seen;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    seen.data.extend_from_slice(&l);
                }
                let all: String = finals.iter().map(|f| format!("{f}\r\n")).collect();
                send(&mut r, &all);
            }
            "QUIT" => {
                send(&mut r, "221 bye\r\n");
                return seen;
            }
            _ => send(&mut r, "500 what\r\n"),
        }
    }
}

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nlast";

#[test]
fn mixed_replies_over_tcp() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        // a and b accepted, c refused at RCPT; after the dot a is
        // delivered and b is over quota.
        serve(
            s,
            &["250 2.1.5 ok", "250 2.1.5 ok", "550 5.1.1 no such user"],
            &[
                "250 2.0.0 delivered",
                "452-4.2.2 mailbox\r\n452 4.2.2 full\x07",
            ],
        )
    });
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let rcpts = [
        recipient("alice", "a@example.net"),
        recipient("bob", "b@example.net"),
        recipient("carol", "c@example.net"),
    ];
    let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
    assert_eq!(
        out,
        vec![
            Outcome::Delivered,
            // Lines joined by " / ", the BEL made a '?'.
            Outcome::TempFail("452 4.2.2 mailbox / 4.2.2 full?".into()),
            Outcome::PermFail("550 5.1.1 no such user".into()),
        ]
    );
    let seen = server.join().expect("server");
    assert_eq!(
        seen.commands,
        vec![
            "LHLO mx.example.net",
            "MAIL FROM:<alice@example.org>",
            "RCPT TO:<alice>",
            "RCPT TO:<bob>",
            "RCPT TO:<carol>",
            "DATA",
            "QUIT"
        ]
    );
    assert_eq!(
        seen.data,
        b"Subject: test\r\n\r\nline one\r\n..leading dot\r\n...two dots\r\n..\r\nlast\r\n"
    );
}

#[test]
fn rcpt_to_and_unix_socket() {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "smtpd-lmtp-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).expect("bind");
    let server = thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        serve(s, &["250 ok", "452 4.2.1 try later"], &["250 ok"])
    });
    let target = LmtpTarget::parse(path.to_str().expect("utf-8"), true).expect("target");
    assert!(matches!(target.addr, LmtpAddr::Unix(_)));
    let rcpts = [
        recipient("alice", "alice@example.net"),
        recipient("bob", "bob@example.net"),
    ];
    let out = deliver(
        &target,
        &rcpts,
        &mut &b"Subject: x\n\nbare LF\n"[..],
        quick(),
    );
    let seen = server.join().expect("server");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        out,
        vec![
            Outcome::Delivered,
            Outcome::TempFail("452 4.2.1 try later".into())
        ]
    );
    assert!(seen
        .commands
        .contains(&"RCPT TO:<alice@example.net>".to_string()));
    assert!(seen
        .commands
        .contains(&"RCPT TO:<bob@example.net>".to_string()));
    assert_eq!(seen.data, b"Subject: x\r\n\r\nbare LF\r\n");
}

#[test]
fn every_recipient_refused_means_no_data() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        serve(s, &["550 no", "450 later"], &[])
    });
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let rcpts = [recipient("a", "a@x"), recipient("b", "b@x")];
    let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
    let seen = server.join().expect("server");
    assert_eq!(
        out,
        vec![
            Outcome::PermFail("550 no".into()),
            Outcome::TempFail("450 later".into())
        ]
    );
    assert!(!seen.commands.iter().any(|c| c == "DATA"));
    assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn endless_reply_is_a_temp_fail() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        // Until the client hangs up (bounded, should it not).
        for _ in 0..1_000_000 {
            if s.write_all(b"220-more and more\r\n").is_err() {
                break;
            }
        }
    });
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let out = deliver(
        &target,
        &[recipient("a", "a@x")],
        &mut &MESSAGE[..],
        quick(),
    );
    assert_eq!(
        out,
        vec![Outcome::TempFail(
            "421 4.4.0 reply has too many lines".into()
        )]
    );
    server.join().expect("server");
}

#[test]
fn overlong_line_is_a_temp_fail() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let _ = s.write_all(format!("220 {}", "x".repeat(100_000)).as_bytes());
    });
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let out = deliver(
        &target,
        &[recipient("a", "a@x")],
        &mut &MESSAGE[..],
        quick(),
    );
    assert_eq!(
        out,
        vec![Outcome::TempFail("421 4.4.0 reply line too long".into())]
    );
    server.join().expect("server");
}

#[test]
fn silent_server_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        // Hold the connection open, say nothing, until the client
        // goes away.
        let mut b = [0u8; 16];
        let _ = s.read(&mut b);
    });
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let t = Timeouts {
        io: Duration::from_millis(300),
        ..quick()
    };
    let start = Instant::now();
    let out = deliver(&target, &[recipient("a", "a@x")], &mut &MESSAGE[..], t);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        out,
        vec![Outcome::TempFail("421 4.4.0 read timed out".into())]
    );
    server.join().expect("server");

    // The session deadline bounds a server that answers, slowly.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        for _ in 0..100 {
            if s.write_all(b"2").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let t = Timeouts {
        io: Duration::from_secs(5),
        session: Duration::from_millis(500),
        ..quick()
    };
    let start = Instant::now();
    let out = deliver(&target, &[recipient("a", "a@x")], &mut &MESSAGE[..], t);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(matches!(&out[..], [Outcome::TempFail(_)]), "{out:?}");
    server.join().expect("server");
}

#[test]
fn connection_refused_is_a_temp_fail() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    let rcpts = [recipient("a", "a@x"), recipient("b", "b@x")];
    let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
    assert_eq!(out.len(), 2);
    assert!(
        out.iter().all(|o| matches!(o, Outcome::TempFail(_))),
        "{out:?}"
    );
    let target = LmtpTarget::parse("/nonexistent/lmtp.sock", false).expect("target");
    let out = deliver(&target, &rcpts[..1], &mut &MESSAGE[..], quick());
    assert!(matches!(&out[..], [Outcome::TempFail(_)]));
    assert!(deliver(&target, &[], &mut &MESSAGE[..], quick()).is_empty());
}

/// A one-shot server on a free port that runs `script` on its socket.
fn server<T: Send + 'static>(
    script: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
) -> (LmtpTarget, thread::JoinHandle<T>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = thread::spawn(move || script(l.accept().expect("accept").0));
    let target = LmtpTarget::parse(&format!("127.0.0.1:{port}"), false).expect("target");
    (target, h)
}

#[test]
fn refused_lhlo_is_a_temp_fail() {
    // A 5xx before any transaction is the server's state, not the
    // recipient's: retried, with the server's reply as the reason.
    let (target, h) = server(|s| {
        let mut r = BufReader::new(s);
        let _ = r.get_mut().write_all(b"220 lmtp.test\r\n");
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = r.get_mut().write_all(b"554 5.7.1 not you\r\n");
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        (line, rest)
    });
    let out = deliver(
        &target,
        &[recipient("a", "a@x")],
        &mut &MESSAGE[..],
        quick(),
    );
    assert_eq!(out, vec![Outcome::TempFail("554 5.7.1 not you".into())]);
    let (lhlo, rest) = h.join().expect("server");
    assert_eq!(lhlo, "LHLO mx.example.net\r\n");
    assert_eq!(rest, "QUIT\r\n");
}

/// A message file that fails after its first bytes.
struct Unreadable(bool);

impl Read for Unreadable {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        if std::mem::replace(&mut self.0, true) {
            return Err(io::Error::other("I/O error"));
        }
        let head = b"Subject: cut\r\n";
        b[..head.len()].copy_from_slice(head);
        Ok(head.len())
    }
}

#[test]
fn unreadable_message_never_gets_its_dot() {
    let (target, h) = server(|s| serve(s, &[], &["250 2.0.0 delivered"]));
    let out = deliver(
        &target,
        &[recipient("a", "a@x")],
        &mut Unreadable(false),
        quick(),
    );
    assert_eq!(
        out,
        vec![Outcome::TempFail(
            "421 4.4.0 reading the message: I/O error".into()
        )]
    );
    // The server saw the start of the body, then the connection end:
    // no dot, no QUIT.
    let seen = h.join().expect("server");
    assert_eq!(seen.data, b"Subject: cut\r\n");
    assert_eq!(seen.commands.last().map(String::as_str), Some("DATA"));
}

#[test]
fn unsendable_addresses_fail_for_good() {
    // With rcpt-to: a destination that is no address is refused here,
    // the others go on.
    let (target, h) = server(|s| serve(s, &[], &["250 2.0.0 delivered"]));
    let target = LmtpTarget {
        rcpt_to: true,
        ..target
    };
    let rcpts = [recipient("a", "not an address"), recipient("b", "b@x")];
    let out = deliver(&target, &rcpts, &mut &MESSAGE[..], quick());
    assert!(
        matches!(&out[0], Outcome::PermFail(t) if t.starts_with("lmtp: invalid recipient")),
        "{out:?}"
    );
    assert_eq!(out[1], Outcome::Delivered);
    let seen = h.join().expect("server");
    let rcpt: Vec<_> = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    assert_eq!(rcpt, ["RCPT TO:<b@x>"]);

    // Without: a login name that could break the line is never sent.
    let (target, h) = server(|s| serve(s, &[], &[]));
    let out = deliver(
        &target,
        &[recipient("a>\r\nRSET", "a@x")],
        &mut &MESSAGE[..],
        quick(),
    );
    assert_eq!(
        out,
        vec![Outcome::PermFail(
            "553 5.1.3 invalid recipient address".into()
        )]
    );
    let seen = h.join().expect("server");
    assert!(!seen.commands.iter().any(|c| c.starts_with("RCPT")));

    // A sender that is no address fails everyone before connecting.
    let mut r = recipient("a", "a@x");
    r.sender = "x>\r\nRCPT TO:<y".into();
    let target = LmtpTarget::parse("/nonexistent/lmtp.sock", false).expect("target");
    let out = deliver(&target, &[r.clone(), r], &mut &MESSAGE[..], quick());
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|o| matches!(o, Outcome::PermFail(t) if t.starts_with("lmtp: invalid sender"))),
        "{out:?}"
    );
}

#[test]
fn target_parsing() {
    let p = |s| LmtpTarget::parse(s, false).map(|t| t.addr);
    let tcp = |h: &str, port| {
        Ok(LmtpAddr::Tcp {
            host: h.into(),
            port,
        })
    };
    assert_eq!(p("127.0.0.1:24"), tcp("127.0.0.1", 24));
    assert_eq!(p("localhost"), tcp("localhost", 25));
    assert_eq!(p("[::1]:2424"), tcp("::1", 2424));
    assert_eq!(p("[IPv6:::1]"), tcp("::1", 25));
    assert_eq!(
        p("/var/run/dovecot/lmtp"),
        Ok(LmtpAddr::Unix("/var/run/dovecot/lmtp".into()))
    );
    for bad in [
        "",
        "host:",
        "host:0",
        "host:99999",
        ":24",
        "[::1",
        "[::1]x",
        "a\nb",
    ] {
        assert!(p(bad).is_err(), "{bad:?}");
    }
    assert!(LmtpTarget::parse("x:24", true).expect("ok").rcpt_to);
}
