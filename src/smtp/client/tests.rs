//! Session-level tests: a scripted fake server (byte strings fed to the
//! engine), the client's bytes and events checked after each step.

use super::*;
use crate::smtp::address::parse_path;

fn mb(s: &str) -> Mailbox {
    parse_path(s, true).unwrap().unwrap()
}

fn env(id: u64, rcpts: &[&str]) -> Envelope {
    Envelope {
        id,
        mail_from: Some(mb("alice@example.org")),
        size: 1000,
        body_8bit: false,
        smtputf8: false,
        ret: None,
        envid: None,
        rcpts: rcpts
            .iter()
            .map(|r| Recipient {
                addr: mb(r),
                notify: None,
                orcpt: None,
            })
            .collect(),
    }
}

/// An EHLO reply offering `caps`.
fn ehlo(caps: &[&str]) -> String {
    let mut s = String::from("250");
    s += if caps.is_empty() { " " } else { "-" };
    s += "mx.example.net Hello\r\n";
    for (i, c) in caps.iter().enumerate() {
        let sep = if i + 1 == caps.len() { ' ' } else { '-' };
        s += &format!("250{sep}{c}\r\n");
    }
    s
}

/// The bytes to send among `ev`, as text.
fn sent(ev: &[Event]) -> String {
    let mut out = Vec::new();
    for e in ev {
        if let Event::Send(b) = e {
            out.extend_from_slice(b);
        }
    }
    String::from_utf8(out).unwrap()
}

/// The `Done` events among `ev`.
fn done(ev: &[Event]) -> Vec<(u64, Vec<Outcome>)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Done { id, outcomes } => Some((*id, outcomes.clone())),
            _ => None,
        })
        .collect()
}

fn error(ev: &[Event]) -> Option<&str> {
    ev.iter().find_map(|e| match e {
        Event::Error(s) => Some(s.as_str()),
        _ => None,
    })
}

fn code(o: &Outcome) -> (&'static str, u16) {
    match o {
        Outcome::Ok(r) => ("ok", r.code),
        Outcome::TempFail(r) => ("temp", r.code),
        Outcome::PermFail(r) => ("perm", r.code),
    }
}

/// A client past the banner and EHLO, with `caps` offered.
fn greeted(cfg: Config, caps: &[&str]) -> Client {
    let mut c = Client::new(cfg);
    assert_eq!(
        sent(&c.input(b"220 mx.example.net ESMTP\r\n")),
        "EHLO mx.example.org\r\n"
    );
    let ev = c.input(ehlo(caps).as_bytes());
    assert_eq!(ev, [Event::Idle], "{caps:?}");
    c
}

fn cfg() -> Config {
    Config::new("mx.example.org")
}

/// Send one message with one recipient through the whole dialogue
/// (no PIPELINING) and check the lines.
fn deliver_one(c: &mut Client, id: u64, first: bool) {
    let ev = c.send_message(env(id, &["bob@example.net"]));
    let rset = if first { "" } else { "RSET\r\n" };
    let mail = "MAIL FROM:<alice@example.org>";
    if !first {
        assert_eq!(sent(&ev), rset);
        assert_eq!(
            sent(&c.input(b"250 2.0.0 Reset\r\n")),
            format!("{mail}\r\n")
        );
    } else {
        assert!(sent(&ev).starts_with(mail));
    }
    assert_eq!(
        sent(&c.input(b"250 2.1.0 Ok\r\n")),
        "RCPT TO:<bob@example.net>\r\n"
    );
    assert_eq!(sent(&c.input(b"250 2.1.5 Ok\r\n")), "DATA\r\n");
    assert_eq!(c.input(b"354 go ahead\r\n"), [Event::SendBody { id }]);
    assert!(c.body_done().is_empty());
    let ev = c.input(b"250 2.0.0 queued as 1234\r\n");
    assert_eq!(done(&ev)[0].0, id);
    assert_eq!(code(&done(&ev)[0].1[0]), ("ok", 250));
    assert_eq!(ev.last(), Some(&Event::Idle));
}

#[test]
fn ehlo_and_one_message() {
    let mut c = greeted(cfg(), &["SIZE 10000", "8BITMIME", "ENHANCEDSTATUSCODES"]);
    assert!(c.esmtp());
    assert_eq!(c.capabilities().size, Some(10000));
    let ev = c.send_message(env(7, &["bob@example.net"]));
    assert_eq!(sent(&ev), "MAIL FROM:<alice@example.org> SIZE=1000\r\n");
    assert_eq!(
        sent(&c.input(b"250 2.1.0 Ok\r\n")),
        "RCPT TO:<bob@example.net>\r\n"
    );
    assert_eq!(sent(&c.input(b"250 2.1.5 Ok\r\n")), "DATA\r\n");
    assert_eq!(
        c.input(b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        [Event::SendBody { id: 7 }]
    );
    c.body_done();
    let ev = c.input(b"250 2.0.0 Ok: queued as ABC\r\n");
    let Event::Done { id: 7, outcomes } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        outcomes[0],
        Outcome::Ok(Reply::local(250, "2.0.0 Ok: queued as ABC"))
    );
    assert_eq!(ev[1], Event::Idle);
    assert_eq!(sent(&c.quit()), "QUIT\r\n");
    assert_eq!(c.input(b"221 2.0.0 Bye\r\n"), [Event::Close]);
    assert!(c.is_closed());
}

#[test]
fn helo_fallback() {
    let mut c = Client::new(cfg());
    c.input(b"220 old.example.net\r\n");
    let ev = c.input(b"502 5.5.2 what?\r\n");
    assert_eq!(sent(&ev), "HELO mx.example.org\r\n");
    assert_eq!(c.input(b"250 old.example.net\r\n"), [Event::Idle]);
    assert!(!c.esmtp());
    assert_eq!(c.capabilities(), &Capabilities::default());
    deliver_one(&mut c, 1, true);
    // A temporary EHLO failure is not a reason to try HELO.
    let mut c = Client::new(cfg());
    c.input(b"220 x\r\n");
    let ev = c.input(b"451 try later\r\n");
    assert!(error(&ev).is_some() && sent(&ev) == "QUIT\r\n");
}

#[test]
fn starttls_then_ehlo_again() {
    let mut c = Client::new(cfg());
    c.input(b"220 mx\r\n");
    let ev = c.input(ehlo(&["PIPELINING", "STARTTLS", "8BITMIME"]).as_bytes());
    assert_eq!(sent(&ev), "STARTTLS\r\n");
    assert_eq!(
        c.input(b"220 2.0.0 Ready to start TLS\r\n"),
        [Event::StartTls]
    );
    // Nothing may be read until the handshake is done.
    let ev = c.tls_started();
    assert!(c.tls_active());
    assert_eq!(sent(&ev), "EHLO mx.example.org\r\n");
    // The capabilities learnt in the clear are gone.
    assert_eq!(c.capabilities(), &Capabilities::default());
    assert_eq!(c.input(ehlo(&["SIZE 5"]).as_bytes()), [Event::Idle]);
    assert!(!c.capabilities().pipelining && !c.capabilities().starttls);
    assert_eq!(c.capabilities().size, Some(5));
}

#[test]
fn bytes_after_starttls_220_fail() {
    // The classic STARTTLS injection: a reply sent in the clear meant to
    // be read after the handshake.
    let mut c = Client::new(cfg());
    c.input(b"220 mx\r\n");
    c.send_message(env(1, &["bob@example.net"]));
    c.input(ehlo(&["STARTTLS"]).as_bytes());
    let ev = c.input(b"220 go\r\n250-mx\r\n250 AUTH PLAIN\r\n");
    assert!(!ev.contains(&Event::StartTls));
    assert_eq!(error(&ev), Some("unsolicited reply from the server"));
    assert_eq!(code(&done(&ev)[0].1[0]), ("temp", 421));
    assert_eq!(ev.last(), Some(&Event::Close));
}

#[test]
fn starttls_refused() {
    let mut c = Client::new(cfg());
    c.input(b"220 mx\r\n");
    c.input(ehlo(&["STARTTLS"]).as_bytes());
    // Opportunistic: go on in the clear.
    assert_eq!(c.input(b"454 4.7.0 TLS not available\r\n"), [Event::Idle]);
    assert!(!c.tls_active());

    let mut cfg = cfg();
    cfg.tls = TlsPolicy::Required;
    let mut c = Client::new(cfg);
    c.input(b"220 mx\r\n");
    c.input(ehlo(&["STARTTLS"]).as_bytes());
    let ev = c.input(b"454 4.7.0 TLS not available\r\n");
    assert!(error(&ev).unwrap().starts_with("STARTTLS refused"));
}

#[test]
fn tls_required_but_not_offered() {
    let mut cfg = cfg();
    cfg.tls = TlsPolicy::Required;
    let mut c = Client::new(cfg);
    c.send_message(env(3, &["bob@example.net", "carol@example.net"]));
    c.input(b"220 mx\r\n");
    let ev = c.input(ehlo(&["PIPELINING"]).as_bytes());
    assert_eq!(
        error(&ev),
        Some("TLS required but the server does not offer STARTTLS")
    );
    assert_eq!(sent(&ev), "QUIT\r\n");
    let d = done(&ev);
    assert_eq!(d[0].0, 3);
    assert_eq!(
        d[0].1.iter().map(code).collect::<Vec<_>>(),
        [("temp", 421); 2]
    );
    assert_eq!(ev.last(), Some(&Event::Close));
    // Nothing more happens.
    assert!(c.input(b"250 ok\r\n").is_empty());
    assert_eq!(
        code(&done(&c.send_message(env(4, &["x@y.org"])))[0].1[0]),
        ("temp", 421)
    );
}

fn with_auth() -> Config {
    let mut c = cfg();
    c.auth = Some(Credentials {
        user: "joe".into(),
        password: Password(b"secret".to_vec()),
    });
    c
}

#[test]
fn auth_refused_in_the_clear() {
    let mut c = Client::new(with_auth());
    c.input(b"220 mx\r\n");
    let ev = c.input(ehlo(&["AUTH PLAIN LOGIN"]).as_bytes());
    assert_eq!(error(&ev), Some("refusing to send credentials without TLS"));
    assert!(!sent(&ev).contains("AUTH"));
}

#[test]
fn auth_plain_after_tls() {
    let mut c = Client::new(with_auth());
    c.input(b"220 mx\r\n");
    let ev = c.input(ehlo(&["STARTTLS", "AUTH PLAIN LOGIN"]).as_bytes());
    assert_eq!(sent(&ev), "STARTTLS\r\n");
    c.input(b"220 go\r\n");
    c.tls_started();
    let ev = c.input(ehlo(&["AUTH PLAIN LOGIN"]).as_bytes());
    assert_eq!(sent(&ev), "AUTH PLAIN AGpvZQBzZWNyZXQ=\r\n");
    assert_eq!(c.input(b"235 2.7.0 ok\r\n"), [Event::Idle]);
}

#[test]
fn auth_login_and_failure() {
    let mut cfg = with_auth();
    cfg.tls_active = true;
    let mut c = Client::new(cfg.clone());
    c.input(b"220 mx\r\n");
    assert_eq!(
        sent(&c.input(ehlo(&["AUTH LOGIN"]).as_bytes())),
        "AUTH LOGIN\r\n"
    );
    assert_eq!(sent(&c.input(b"334 VXNlcm5hbWU6\r\n")), "am9l\r\n");
    assert_eq!(sent(&c.input(b"334 UGFzc3dvcmQ6\r\n")), "c2VjcmV0\r\n");
    assert_eq!(c.input(b"235 ok\r\n"), [Event::Idle]);

    let mut c = Client::new(cfg);
    c.input(b"220 mx\r\n");
    c.input(ehlo(&["AUTH PLAIN"]).as_bytes());
    let ev = c.input(b"535 5.7.8 bad credentials\r\n");
    assert!(error(&ev)
        .unwrap()
        .starts_with("authentication failed: 535"));
}

#[test]
fn pipelining_batch_and_mixed_rcpts() {
    let mut c = greeted(cfg(), &["PIPELINING", "8BITMIME", "DSN"]);
    let mut e = env(9, &["a@example.net", "b@example.net", "c@example.net"]);
    e.rcpts[0].notify = Some(Notify::Never);
    e.rcpts[0].orcpt = Some("rfc822;a@example.net".into());
    e.envid = Some("QQ123".into());
    e.ret = Some(Ret::Full);
    let ev = c.send_message(e);
    assert_eq!(ev.len(), 1, "one write: {ev:?}");
    assert_eq!(
        sent(&ev),
        "MAIL FROM:<alice@example.org> RET=FULL ENVID=QQ123\r\n\
         RCPT TO:<a@example.net> NOTIFY=NEVER ORCPT=rfc822;a@example.net\r\n\
         RCPT TO:<b@example.net>\r\n\
         RCPT TO:<c@example.net>\r\n\
         DATA\r\n"
    );
    // Replies in pieces, matched in order.
    assert!(c.input(b"250 ok\r\n250 ok\r\n45").is_empty());
    let ev = c.input(b"0 4.2.2 mailbox full\r\n550 5.1.1 no such user\r\n354 go\r\n");
    assert_eq!(ev, [Event::SendBody { id: 9 }]);
    c.body_done();
    let ev = c.input(b"250 2.0.0 queued\r\n");
    let outcomes: Vec<_> = done(&ev)[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("ok", 250), ("temp", 450), ("perm", 550)]);
}

#[test]
fn mixed_rcpts_one_at_a_time() {
    let mut c = greeted(cfg(), &[]);
    let ev = c.send_message(env(1, &["a@example.net", "b@example.net"]));
    assert_eq!(sent(&ev), "MAIL FROM:<alice@example.org>\r\n");
    assert_eq!(sent(&c.input(b"250 ok\r\n")), "RCPT TO:<a@example.net>\r\n");
    assert_eq!(sent(&c.input(b"550 no\r\n")), "RCPT TO:<b@example.net>\r\n");
    // No recipient accepted: no DATA.
    let ev = c.input(b"451 later\r\n");
    assert_eq!(sent(&ev), "");
    let outcomes: Vec<_> = done(&ev)[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("perm", 550), ("temp", 451)]);
    assert_eq!(ev.last(), Some(&Event::Idle));
    // The next message resets the transaction the server may still hold.
    assert_eq!(
        sent(&c.send_message(env(2, &["a@example.net"]))),
        "RSET\r\n"
    );
}

#[test]
fn mail_refused() {
    let mut c = greeted(cfg(), &["PIPELINING"]);
    c.send_message(env(1, &["a@example.net", "b@example.net"]));
    let ev = c.input(b"452 4.3.1 full\r\n503 no mail\r\n503 no mail\r\n503 no mail\r\n");
    let outcomes: Vec<_> = done(&ev)[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("temp", 452); 2]);
    assert_eq!(ev.last(), Some(&Event::Idle));

    let mut c = greeted(cfg(), &[]);
    c.send_message(env(1, &["a@example.net"]));
    let ev = c.input(b"553 5.7.1 sender refused\r\n");
    assert_eq!(code(&done(&ev)[0].1[0]), ("perm", 553));
    assert_eq!(sent(&ev), "");
}

#[test]
fn data_354_without_recipients_gets_an_empty_body() {
    let mut c = greeted(cfg(), &["PIPELINING"]);
    c.send_message(env(1, &["a@example.net"]));
    let ev = c.input(b"250 ok\r\n550 no\r\n354 go\r\n");
    assert_eq!(ev, [Event::Send(b".\r\n".to_vec())]);
    let ev = c.input(b"554 no valid recipients\r\n");
    assert_eq!(code(&done(&ev)[0].1[0]), ("perm", 550));
}

#[test]
fn data_554_after_the_dot() {
    let mut c = greeted(cfg(), &["PIPELINING"]);
    c.send_message(env(1, &["a@example.net", "b@example.net", "c@example.net"]));
    c.input(b"250 ok\r\n250 ok\r\n450 later\r\n250 ok\r\n354 go\r\n");
    c.body_done();
    let ev = c.input(b"554 5.7.1 spam\r\n");
    let outcomes: Vec<_> = done(&ev)[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("perm", 554), ("temp", 450), ("perm", 554)]);
    // DATA refused before the body: the same, for the accepted ones.
    let mut c = greeted(cfg(), &["PIPELINING"]);
    c.send_message(env(1, &["a@example.net"]));
    let ev = c.input(b"250 ok\r\n250 ok\r\n451 4.3.0 no\r\n");
    assert_eq!(code(&done(&ev)[0].1[0]), ("temp", 451));
}

#[test]
fn server_421_mid_transaction() {
    let mut c = greeted(cfg(), &[]);
    c.send_message(env(1, &["a@example.net", "b@example.net", "c@example.net"]));
    c.send_message(env(2, &["d@example.net"]));
    c.input(b"250 ok\r\n");
    c.input(b"550 no\r\n");
    c.input(b"250 ok\r\n");
    let ev = c.input(b"421 4.3.2 shutting down\r\n");
    let d = done(&ev);
    let outcomes: Vec<_> = d[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("perm", 550), ("temp", 421), ("temp", 421)]);
    assert_eq!((d[1].0, code(&d[1].1[0])), (2, ("temp", 421)));
    assert_eq!(sent(&ev), "", "no QUIT after a 421");
    assert_eq!(ev.last(), Some(&Event::Close));
}

#[test]
fn reply_bytes_never_pass_through() {
    let mut c = greeted(cfg(), &[]);
    c.send_message(env(1, &["a@example.net"]));
    c.input(b"250 ok\r\n");
    c.input(b"250 ok\r\n");
    c.input(b"354 go\r\n");
    c.body_done();
    let evil =
        b"250-queued\rRCPT TO:<evil@example.com>\r\n250-\0\x1b[2J\x07\r\n250 ok\xc3\xa9\x7f\r\n";
    let ev = c.input(evil);
    let Outcome::Ok(r) = &done(&ev)[0].1[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        r.lines,
        ["queued?RCPT TO:<evil@example.com>", "??[2J?", "ok???"]
    );
    for l in &r.lines {
        assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    assert!(r.to_string().bytes().all(|b| (0x20..0x7f).contains(&b)));
}

#[test]
fn endless_reply_fails_after_100_lines() {
    let mut c = Client::new(cfg());
    c.input(b"220 mx\r\n");
    for _ in 0..MAX_REPLY_LINES {
        assert!(c.input(b"250-more\r\n").is_empty());
    }
    let ev = c.input(b"250-more\r\n");
    assert_eq!(error(&ev), Some("reply has too many lines"));
    assert!(c.is_closed());
}

#[test]
fn line_over_4k_fails() {
    let mut c = Client::new(cfg());
    let ev = c.input(&vec![b'2'; MAX_LINE]);
    assert_eq!(error(&ev), Some("reply line too long"));
    let mut c = Client::new(cfg());
    let mut line = b"220 ".to_vec();
    line.resize(MAX_LINE + 10, b'x');
    line.extend_from_slice(b"\r\n");
    assert_eq!(error(&c.input(&line)), Some("reply line too long"));
}

#[test]
fn unsolicited_replies_fail() {
    // Two replies at once where only the banner was due.
    let mut c = Client::new(cfg());
    let ev = c.input(b"220 mx\r\n250 hello\r\n");
    assert_eq!(error(&ev), Some("unsolicited reply from the server"));
    // A reply while idle.
    let mut c = greeted(cfg(), &[]);
    c.send_message(env(1, &["a@example.net"]));
    let ev = c.input(b"250 ok\r\n250 ok\r\n");
    assert_eq!(error(&ev), Some("unsolicited reply from the server"));
    assert_eq!(code(&done(&ev)[0].1[0]), ("temp", 421));
    // Anything while the body is being written.
    let mut c = greeted(cfg(), &["PIPELINING"]);
    c.send_message(env(1, &["a@example.net"]));
    c.input(b"250 ok\r\n250 ok\r\n354 go\r\n");
    let ev = c.input(b"2");
    assert_eq!(error(&ev), Some("unsolicited reply from the server"));
    // A 3xx where none fits is a protocol error.
    let mut c = greeted(cfg(), &[]);
    c.send_message(env(1, &["a@example.net"]));
    assert!(error(&c.input(b"354 what\r\n"))
        .unwrap()
        .starts_with("unexpected reply"));
}

#[test]
fn two_messages_with_rset() {
    let mut c = greeted(cfg(), &[]);
    deliver_one(&mut c, 1, true);
    deliver_one(&mut c, 2, false);
    // Queued together: the second starts when the first is done.
    let ev = c.send_message(env(3, &["x@example.net"]));
    assert_eq!(sent(&ev), "RSET\r\n");
    assert!(c.send_message(env(4, &["y@example.net"])).is_empty());
    assert!(c.quit().is_empty());
    c.input(b"250 reset\r\n");
    c.input(b"250 ok\r\n");
    c.input(b"250 ok\r\n");
    c.input(b"354 go\r\n");
    c.body_done();
    let ev = c.input(b"250 sent\r\n");
    assert_eq!(done(&ev)[0].0, 3);
    assert_eq!(sent(&ev), "RSET\r\n");
    c.input(b"250 reset\r\n");
    c.input(b"250 ok\r\n");
    c.input(b"250 ok\r\n");
    c.input(b"354 go\r\n");
    c.body_done();
    let ev = c.input(b"250 sent\r\n");
    assert_eq!(done(&ev)[0].0, 4);
    assert_eq!(sent(&ev), "QUIT\r\n");
    assert_eq!(c.input(b"221 bye\r\n"), [Event::Close]);
}

#[test]
fn missing_extensions_fail_the_message_not_the_session() {
    let mut c = greeted(cfg(), &["SIZE 500"]);
    let mut e = env(1, &["a@example.net", "b@example.net"]);
    e.body_8bit = true;
    let ev = c.send_message(e);
    assert_eq!(sent(&ev), "");
    let d = done(&ev);
    assert_eq!(
        d[0].1.iter().map(code).collect::<Vec<_>>(),
        [("perm", 554); 2]
    );
    let Outcome::PermFail(r) = &d[0].1[0] else {
        unreachable!()
    };
    assert!(r.to_string().contains("8BITMIME"));
    assert_eq!(ev.last(), Some(&Event::Idle));

    let mut e = env(2, &["a@example.net"]);
    e.smtputf8 = true;
    assert_eq!(code(&done(&c.send_message(e))[0].1[0]), ("perm", 553));
    let e = env(3, &["jos\u{e9}@example.net"]);
    assert_eq!(code(&done(&c.send_message(e))[0].1[0]), ("perm", 553));
    // Over the server's SIZE (env gives 1000).
    assert_eq!(
        code(&done(&c.send_message(env(4, &["a@example.net"])))[0].1[0]),
        ("perm", 552)
    );
    // The session is still usable, and was never used: no RSET.
    let mut e = env(5, &["a@example.net"]);
    e.size = 10;
    assert!(sent(&c.send_message(e)).starts_with("MAIL FROM:"));
}

#[test]
fn eightbit_and_utf8_when_offered() {
    let mut c = greeted(cfg(), &["8BITMIME", "SMTPUTF8"]);
    let mut e = env(1, &["jos\u{e9}@example.net"]);
    e.body_8bit = true;
    assert_eq!(
        sent(&c.send_message(e)),
        "MAIL FROM:<alice@example.org> BODY=8BITMIME SMTPUTF8\r\n"
    );
    assert_eq!(
        sent(&c.input(b"250 ok\r\n")),
        "RCPT TO:<jos\u{e9}@example.net>\r\n"
    );
}

#[test]
fn bad_banner() {
    let mut c = Client::new(cfg());
    let ev = c.input(b"554 5.7.1 go away\r\n");
    assert_eq!(sent(&ev), "QUIT\r\n");
    assert!(error(&ev).unwrap().starts_with("banner: 554"));
}

#[test]
fn timeout_and_disconnect_fail_in_flight() {
    let mut c = greeted(cfg(), &["PIPELINING"]);
    c.send_message(env(1, &["a@example.net", "b@example.net"]));
    c.input(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
    c.body_done();
    let ev = c.timeout();
    let outcomes: Vec<_> = done(&ev)[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("temp", 421), ("perm", 550)]);
    assert_eq!(error(&ev), Some("timeout"));
    assert!(c.timeout().is_empty());

    let mut c = greeted(cfg(), &[]);
    c.send_message(env(1, &["a@example.net"]));
    let ev = c.disconnected();
    assert_eq!(code(&done(&ev)[0].1[0]), ("temp", 421));
    // After QUIT, a disconnect is the normal end.
    let mut c = greeted(cfg(), &[]);
    c.quit();
    assert_eq!(c.disconnected(), [Event::Close]);
}

#[test]
fn bad_helo_name_is_replaced() {
    let mut cfg = cfg();
    cfg.helo = "evil\r\nMAIL FROM:<x@y>".into();
    let mut c = Client::new(cfg);
    assert_eq!(sent(&c.input(b"220 mx\r\n")), "EHLO localhost\r\n");
}

/// The local LMTP delivery's settings: no PIPELINING even when offered
/// (no DATA once every recipient is refused), the local part alone in
/// RCPT TO, no `SIZE=` for a size not known, and a driver's own reason
/// for giving up in the outcome.
#[test]
fn local_lmtp_settings() {
    let mut cfg = cfg();
    cfg.lmtp = true;
    cfg.pipelining = false;
    cfg.rcpt_local_part = true;
    let start = |cfg: &Config, size: u64| {
        let mut c = Client::new(cfg.clone());
        assert_eq!(
            sent(&c.input(b"220 lmtp ready\r\n")),
            "LHLO mx.example.org\r\n"
        );
        c.input(b"250-lmtp\r\n250-PIPELINING\r\n250 SIZE 100000\r\n");
        let mut e = env(1, &["bob@example.net", "carol@example.net"]);
        e.size = size;
        let ev = c.send_message(e);
        (c, ev)
    };
    let (mut c, ev) = start(&cfg, 0);
    assert_eq!(sent(&ev), "MAIL FROM:<alice@example.org>\r\n");
    assert_eq!(sent(&c.input(b"250 ok\r\n")), "RCPT TO:<bob>\r\n");
    assert_eq!(sent(&c.input(b"550 no\r\n")), "RCPT TO:<carol>\r\n");
    let ev = c.input(b"450 later\r\n");
    assert_eq!(sent(&ev), "");
    let outcomes: Vec<_> = done(&ev)[0].1.iter().map(code).collect();
    assert_eq!(outcomes, [("perm", 550), ("temp", 450)]);

    // A known size is given; `abort` fails what is in flight with the
    // driver's reason.
    let (mut c, ev) = start(&cfg, 42);
    assert_eq!(sent(&ev), "MAIL FROM:<alice@example.org> SIZE=42\r\n");
    let ev = c.abort("reading the message: I/O error");
    assert_eq!(
        done(&ev)[0].1[0],
        Outcome::TempFail(Reply::local(421, "4.4.0 reading the message: I/O error"))
    );
    assert_eq!(error(&ev), Some("reading the message: I/O error"));
    assert_eq!(ev.last(), Some(&Event::Close));
    assert!(!sent(&ev).contains("QUIT"));
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every line the engine sends is one of our commands, printable, and
/// CRLF-terminated.
fn well_formed(bytes: &[u8]) -> bool {
    const VERBS: &[&str] = &[
        "EHLO ",
        "HELO ",
        "STARTTLS",
        "AUTH ",
        "MAIL FROM:<",
        "RCPT TO:<",
        "DATA",
        "RSET",
        "QUIT",
        ".",
    ];
    let Some(body) = bytes.strip_suffix(b"\r\n") else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    text.split("\r\n").all(|line| {
        // Base64 lines of AUTH LOGIN are the only bare tokens.
        let b64 = !line.is_empty()
            && line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        line.bytes().all(|b| (0x20..0x7f).contains(&b))
            && (b64 || VERBS.iter().any(|v| line.starts_with(v)))
    })
}

/// A plausible answer of a fake server to one of our command lines.
fn plausible(g: &mut Gen, line: &str) -> Vec<u8> {
    let pick = |g: &mut Gen, choices: &[&str]| choices[g.below(choices.len())].as_bytes().to_vec();
    let verb = line.split(' ').next().unwrap_or("");
    match verb {
        "BANNER" => pick(
            g,
            &[
                "220 mx\r\n",
                "220-mx\r\n220 hi\r\n",
                "220 x\r\n",
                "554 no\r\n",
            ],
        ),
        "EHLO" => {
            const CAPS: &[&str] = &[
                "PIPELINING",
                "STARTTLS",
                "8BITMIME",
                "AUTH PLAIN LOGIN",
                "SIZE 5000",
                "DSN",
                "SMTPUTF8",
                "AUTH LOGIN",
            ];
            let caps: Vec<&str> = CAPS.iter().copied().filter(|_| g.below(2) == 0).collect();
            if g.below(10) == 0 {
                b"500 what\r\n".to_vec()
            } else {
                ehlo(&caps).into_bytes()
            }
        }
        "HELO" | "RSET" | "MAIL" | "RCPT" | "." => pick(
            g,
            &[
                "250 ok\r\n",
                "250 ok\r\n",
                "250 ok\r\n",
                "451 later\r\n",
                "550 no\r\n",
            ],
        ),
        "STARTTLS" => pick(g, &["220 go\r\n", "220 go\r\n", "454 no tls\r\n"]),
        "AUTH" => pick(g, &["235 ok\r\n", "235 ok\r\n", "334 x\r\n", "535 bad\r\n"]),
        "DATA" => pick(g, &["354 go\r\n", "354 go\r\n", "554 no\r\n"]),
        "QUIT" => b"221 bye\r\n".to_vec(),
        // The base64 lines of AUTH LOGIN.
        _ => pick(g, &["334 x\r\n", "235 ok\r\n"]),
    }
}

#[test]
fn random_input_never_panics_or_sends_garbage() {
    const PIECES: &[&[u8]] = &[
        b"220 ",
        b"250 ",
        b"250-",
        b"354 ",
        b"421 ",
        b"334 ",
        b"235 ",
        b"450 ",
        b"550 ",
        b"221 ",
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b"PIPELINING",
        b"STARTTLS",
        b"8BITMIME",
        b"AUTH PLAIN LOGIN",
        b"SIZE 10",
        b"DSN",
        b"SMTPUTF8",
        b"x",
        b"\xff",
        b"\x1b",
        b"250 ok\r\n",
    ];
    // How often the deep states were reached: the test must not pass by
    // never getting past the banner.
    let (mut bodies, mut delivered) = (0, 0);
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let mut cfg = with_auth();
        if g.below(2) == 0 {
            cfg.auth = None;
        }
        cfg.tls = [
            TlsPolicy::Never,
            TlsPolicy::Opportunistic,
            TlsPolicy::Required,
        ][g.below(3)];
        cfg.pipelining = g.below(4) != 0;
        cfg.rcpt_local_part = g.below(4) == 0;
        let mut c = Client::new(cfg);
        let mut ids = Vec::new();
        let mut ev: Vec<Event> = Vec::new();
        // Our lines the fake server has not answered yet.
        let mut unanswered: std::collections::VecDeque<String> = ["BANNER".to_string()].into();
        for step in 0..60u64 {
            let mut out = Vec::new();
            if step % 15 == 0 {
                let mut e = env(step, &["a@example.net", "b@example.net"]);
                e.body_8bit = g.below(4) == 0;
                ids.push(step);
                out.extend(c.send_message(e));
            }
            // Mostly the plausible answer to our oldest line, sometimes
            // noise, a split, or a 421.
            let mut chunk = match (g.below(100), unanswered.front()) {
                (0..=94, Some(line)) => {
                    let line = line.clone();
                    unanswered.pop_front();
                    plausible(&mut g, &line)
                }
                (95, _) => b"421 bye\r\n".to_vec(),
                _ => (0..g.below(6))
                    .flat_map(|_| PIECES[g.below(PIECES.len())].iter().copied())
                    .collect(),
            };
            if g.below(10) == 0 {
                let rest = chunk.split_off(g.below(chunk.len() + 1));
                out.extend(c.input(&chunk));
                chunk = rest;
            }
            out.extend(c.input(&chunk));
            if g.below(30) == 0 {
                out.extend(c.quit());
            }
            let mut i = 0;
            while i < out.len() {
                match &out[i] {
                    Event::StartTls => {
                        let more = c.tls_started();
                        out.extend(more);
                    }
                    Event::SendBody { .. } => {
                        bodies += 1;
                        let more = c.body_done();
                        out.extend(more);
                        unanswered.push_back(".".into());
                    }
                    Event::Send(b) => {
                        let text = String::from_utf8_lossy(b).into_owned();
                        unanswered.extend(text.split_terminator("\r\n").map(String::from));
                    }
                    _ => {}
                }
                i += 1;
            }
            ev.extend(out);
        }
        ev.extend(c.timeout());
        // Nothing is sent after `Close`, which comes once.
        let closes: Vec<usize> = (0..ev.len()).filter(|&i| ev[i] == Event::Close).collect();
        assert_eq!(closes.len(), 1, "round {round}");
        assert!(!ev[closes[0]..]
            .iter()
            .any(|e| matches!(e, Event::Send(_) | Event::SendBody { .. })));
        for e in &ev {
            if let Event::Send(b) = e {
                assert!(
                    well_formed(b),
                    "round {round}: {:?}",
                    String::from_utf8_lossy(b)
                );
            }
        }
        // Every message got exactly one answer, one outcome per recipient.
        let mut answered: Vec<u64> = done(&ev).iter().map(|d| d.0).collect();
        answered.sort();
        assert_eq!(answered, ids, "round {round}");
        assert!(done(&ev).iter().all(|d| d.1.len() == 2));
        delivered += done(&ev)
            .iter()
            .filter(|d| matches!(d.1[0], Outcome::Ok(_)))
            .count();
    }
    assert!(
        bodies > 100 && delivered > 50,
        "{bodies} bodies, {delivered} delivered"
    );
}
