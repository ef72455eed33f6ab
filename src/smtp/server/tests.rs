//! Session-level tests: transcripts in, events out.

use super::auth::base64_encode;
use super::*;

fn cfg() -> Config {
    let mut c = Config::new("mx.example.org");
    c.peer = Some("192.0.2.1".parse().unwrap());
    c
}

/// The answers a well-behaved glue gives: everything is fine, and the
/// only valid credentials are joe / secret.
fn ok_policy(e: &Event) -> Answer {
    match e {
        Event::NeedMail { .. } => Answer::Mail(Ok(())),
        Event::NeedRcpt { .. } => Answer::Rcpt(Ok(())),
        Event::NeedData => Answer::DataReady(Ok(())),
        Event::DataEnd { .. } => Answer::Committed(Ok("0a1b2c3d".into())),
        Event::NeedAuth { user, password, .. } => {
            Answer::Auth(user == "joe" && password.0 == b"secret")
        }
        _ => unreachable!(),
    }
}

fn is_question(e: &Event) -> bool {
    matches!(
        e,
        Event::NeedMail { .. }
            | Event::NeedRcpt { .. }
            | Event::NeedData
            | Event::DataEnd { .. }
            | Event::NeedAuth { .. }
    )
}

/// A session and everything it said.
struct Session {
    s: Server,
    events: Vec<Event>,
    policy: Box<dyn FnMut(&Event) -> Answer>,
}

impl Session {
    fn new(c: Config) -> Session {
        Session::with(c, ok_policy)
    }

    fn with(c: Config, policy: impl FnMut(&Event) -> Answer + 'static) -> Session {
        let mut s = Server::new(c);
        let greeting = s.greeting();
        let mut t = Session {
            s,
            events: Vec::new(),
            policy: Box::new(policy),
        };
        t.pump(greeting);
        t
    }

    /// Record events, answering each question as the policy says.
    fn pump(&mut self, mut evs: Vec<Event>) {
        loop {
            check_replies(&evs);
            let questions: Vec<Event> = evs.iter().filter(|e| is_question(e)).cloned().collect();
            assert!(questions.len() <= 1, "two questions at once: {evs:?}");
            assert!(!evs.iter().any(|e| matches!(e, Event::Close)) || questions.is_empty());
            self.events.extend(evs);
            match questions.first() {
                Some(q) => {
                    assert!(!self.s.wants_input());
                    let a = (self.policy)(q);
                    evs = self.s.answer(a);
                }
                None => break,
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> &mut Session {
        let evs = self.s.input(bytes);
        self.pump(evs);
        self
    }

    /// Events since the last call.
    fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn replies(&mut self) -> Vec<String> {
        replies(&self.take())
    }
}

fn replies(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Reply(r) => Some(String::from_utf8(r.clone()).unwrap()),
            _ => None,
        })
        .collect()
}

fn codes(evs: &[Event]) -> Vec<String> {
    replies(evs).iter().map(|r| r[..3].to_string()).collect()
}

/// Every reply is CRLF-terminated lines, with a consistent code, and an
/// enhanced status code where RFC 2034 wants one.
fn check_replies(evs: &[Event]) {
    for e in evs {
        let Event::Reply(r) = e else { continue };
        let text = std::str::from_utf8(r).unwrap();
        assert!(text.ends_with("\r\n"), "{text:?}");
        let lines: Vec<&str> = text[..text.len() - 2].split("\r\n").collect();
        let code = &text[..3];
        let exempt = text.starts_with("220 mx.example.org ESMTP")
            || text.contains(" Hello ")
            || text.starts_with("334 ")
            || text.starts_with("354 ");
        for (i, line) in lines.iter().enumerate() {
            assert!(!line.contains('\r') && !line.contains('\n'), "{text:?}");
            assert!(line.starts_with(code), "{text:?}");
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            assert_eq!(line.as_bytes()[3], sep as u8, "{text:?}");
            if !exempt {
                let esc = line[4..].split(' ').next().unwrap();
                let parts: Vec<&str> = esc.split('.').collect();
                assert!(
                    parts.len() == 3
                        && parts[0] == &code[..1]
                        && parts
                            .iter()
                            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
                    "no enhanced code: {text:?}"
                );
            }
        }
    }
}

/// What the glue keeps: adjacent Data events merged, and the Data of a
/// message later aborted dropped. How input was split decides how message
/// bytes are chunked, and how many of an aborted message's bytes were
/// passed on before the abort; it may decide nothing else.
fn normalize(evs: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in evs {
        match (&e, out.last_mut()) {
            (Event::Data(new), Some(Event::Data(prev))) => {
                prev.extend_from_slice(new);
                continue;
            }
            (Event::DataAbort { .. }, _) => {
                let start = out.iter().rposition(|e| *e == Event::NeedData).unwrap_or(0);
                let tail: Vec<Event> = out
                    .drain(start..)
                    .filter(|e| !matches!(e, Event::Data(_)))
                    .collect();
                out.extend(tail);
            }
            _ => {}
        }
        out.push(e);
    }
    out
}

fn run_split(c: &Config, parts: &[&[u8]]) -> Vec<Event> {
    let mut t = Session::new(c.clone());
    for p in parts {
        t.send(p);
    }
    normalize(t.take())
}

/// The transcript gives the same events however it is split in two, and
/// byte by byte.
fn assert_split_invariant(c: &Config, transcript: &[u8]) -> Vec<Event> {
    let whole = run_split(c, &[transcript]);
    for i in 1..transcript.len() {
        let (a, b) = transcript.split_at(i);
        assert_eq!(run_split(c, &[a, b]), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = transcript.chunks(1).collect();
    assert_eq!(run_split(c, &bytes), whole, "byte by byte");
    whole
}

fn data_of(evs: &[Event]) -> Vec<u8> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

const EHLO: &[u8] = b"EHLO client.example\r\n";

fn ready(c: Config) -> Session {
    let mut t = Session::new(c);
    t.send(EHLO);
    t.take();
    t
}

fn in_transaction(c: Config) -> Session {
    let mut t = ready(c);
    t.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n");
    assert_eq!(codes(&t.take()), ["250", "250"]);
    t
}

// ---- greeting, EHLO, HELO ------------------------------------------------

#[test]
fn greeting_and_ehlo() {
    let mut t = Session::new(cfg());
    assert_eq!(t.replies(), ["220 mx.example.org ESMTP smtpd-rs\r\n"]);
    t.send(EHLO);
    let evs = t.take();
    assert_eq!(
        evs[0],
        Event::Helo {
            name: "client.example".into(),
            esmtp: true
        }
    );
    assert_eq!(
        replies(&evs),
        [
            "250-mx.example.org Hello client.example [192.0.2.1], pleased to meet you\r\n\
          250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 36700160\r\n250-DSN\r\n\
          250-PIPELINING\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        ]
    );
    assert_eq!(t.s.helo(), Some("client.example"));
    assert!(t.s.esmtp());
}

#[test]
fn ehlo_extensions_follow_config() {
    let ehlo = |c: Config| {
        let mut t = Session::new(c);
        t.take();
        t.send(EHLO);
        t.replies().concat()
    };
    let mut c = cfg();
    c.dsn = false;
    c.pipelining = false;
    c.chunking = false;
    c.smtputf8 = false;
    let r = ehlo(c);
    for ext in [
        "DSN",
        "PIPELINING",
        "CHUNKING",
        "SMTPUTF8",
        "STARTTLS",
        "AUTH",
    ] {
        assert!(!r.contains(ext), "{ext} in {r}");
    }
    let mut c = cfg();
    c.tls_available = true;
    c.auth = AuthPolicy::Optional;
    let r = ehlo(c.clone());
    assert!(r.contains("250-STARTTLS\r\n") && !r.contains("AUTH"), "{r}");
    c.tls_active = true;
    let r = ehlo(c.clone());
    assert!(
        !r.contains("STARTTLS") && r.contains("250-AUTH PLAIN LOGIN\r\n"),
        "{r}"
    );
    c.tls_active = false;
    c.auth_plaintext_ok = true;
    assert!(ehlo(c).contains("250-AUTH PLAIN LOGIN\r\n"));
    let mut c = cfg();
    c.max_message_size = 1234;
    assert!(ehlo(c).contains("250-SIZE 1234\r\n"));
}

#[test]
fn helo_and_bad_names() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(b"HELO client.example\r\n");
    let evs = t.take();
    assert_eq!(
        evs[0],
        Event::Helo {
            name: "client.example".into(),
            esmtp: false
        }
    );
    assert_eq!(
        replies(&evs),
        ["250 mx.example.org Hello client.example [192.0.2.1], pleased to meet you\r\n"]
    );
    t.send(b"EHLO\r\nHELO a b\r\nEHLO exa(mple\r\nEHLO [1.2.3]\r\n");
    assert_eq!(
        t.replies(),
        [
            "501 5.5.4 EHLO requires domain name\r\n",
            "501 5.5.4 Invalid domain name\r\n",
            "501 5.5.4 Invalid domain name\r\n",
            "501 5.5.4 Invalid domain name\r\n"
        ]
    );
    let mut c = cfg();
    c.peer = None;
    let mut t = Session::new(c);
    t.take();
    t.send(b"HELO [IPv6:2001:db8::1]\r\n");
    assert_eq!(
        t.replies(),
        ["250 mx.example.org Hello [IPv6:2001:db8::1] [local], pleased to meet you\r\n"]
    );
}

#[test]
fn hostname_cannot_inject_lines() {
    let mut c = cfg();
    c.hostname = "mx\r\n250 evil".into();
    let mut s = Server::new(c);
    let r = replies(&s.greeting());
    assert_eq!(r, ["220 mx??250?evil ESMTP smtpd-rs\r\n"]);
}

// ---- a whole transaction ---------------------------------------------------

const TRANSACTION: &[u8] = b"EHLO client.example\r\n\
MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n\
RCPT TO:<b@example.org> NOTIFY=FAILURE\r\n\
RCPT TO:<c@example.org>\r\n\
DATA\r\n\
Subject: hi\r\n\
\r\n\
..leading dot\r\n\
body\r\n\
.\r\n\
QUIT\r\n";

#[test]
fn one_transaction_event_by_event() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(TRANSACTION);
    let evs: Vec<Event> = normalize(t.take())
        .into_iter()
        .filter(|e| !matches!(e, Event::Reply(_) | Event::Log(_)))
        .collect();
    assert_eq!(
        evs,
        [
            Event::Helo {
                name: "client.example".into(),
                esmtp: true
            },
            Event::NeedMail {
                path: "a@example.com".into(),
                params: MailParams {
                    size: Some(100),
                    body: Some(Body::EightBitMime),
                    ..MailParams::default()
                }
            },
            Event::NeedRcpt {
                path: "b@example.org".into(),
                params: RcptParams {
                    notify: Some(Notify::When {
                        success: false,
                        failure: true,
                        delay: false
                    }),
                    orcpt: None
                }
            },
            Event::NeedRcpt {
                path: "c@example.org".into(),
                params: RcptParams::default()
            },
            Event::NeedData,
            Event::Data(b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n".to_vec()),
            Event::DataEnd { size: 35 },
            Event::Close,
        ]
    );
}

#[test]
fn one_transaction_replies() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(TRANSACTION);
    let r = t.replies();
    assert_eq!(
        r[1..],
        [
            "250 2.0.0 Ok\r\n",
            "250 2.1.5 Destination address valid: Recipient ok\r\n",
            "250 2.1.5 Destination address valid: Recipient ok\r\n",
            "354 Enter mail, end with \".\" on a line by itself\r\n",
            "250 2.0.0 0a1b2c3d Message accepted for delivery\r\n",
            "221 2.0.0 Bye\r\n",
        ]
    );
    assert!(t.s.is_closed());
    assert!(t.s.input(b"NOOP\r\n").is_empty());
    assert!(t.s.answer(Answer::Mail(Ok(()))).is_empty());
}

#[test]
fn pipelined_transaction_is_split_invariant() {
    let evs = assert_split_invariant(&cfg(), TRANSACTION);
    assert_eq!(
        data_of(&evs),
        b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    );
}

#[test]
fn bare_lf_terminates_commands_too() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(b"EHLO x\nNOOP\n");
    assert_eq!(codes(&t.take()), ["250", "250"]);
}

#[test]
fn engine_waits_for_each_answer() {
    let mut s = Server::new(cfg());
    s.greeting();
    s.input(EHLO);
    let evs = s.input(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@h.i>\r\n");
    assert!(
        matches!(evs.as_slice(), [Event::NeedMail { .. }]),
        "{evs:?}"
    );
    assert!(!s.wants_input());
    // More input while waiting is kept, not parsed.
    assert!(s.input(b"DATA\r\n").is_empty());
    let evs = s.answer(Answer::Mail(Ok(())));
    assert_eq!(replies(&evs), ["250 2.0.0 Ok\r\n"]);
    assert!(matches!(&evs[1], Event::NeedRcpt { path, .. } if path == "d@e.f"));
    let evs = s.answer(Answer::Rcpt(Err("550 5.1.1 No such user".into())));
    assert_eq!(replies(&evs), ["550 5.1.1 No such user\r\n"]);
    assert!(matches!(&evs[2], Event::NeedRcpt { path, .. } if path == "g@h.i"));
    // An answer to another question is ignored.
    let evs = s.answer(Answer::DataReady(Ok(())));
    assert!(matches!(evs.as_slice(), [Event::Log(_)]));
    let evs = s.answer(Answer::Rcpt(Ok(())));
    assert_eq!(codes(&evs), ["250"]);
    assert_eq!(evs.last(), Some(&Event::NeedData));
    let evs = s.answer(Answer::DataReady(Ok(())));
    assert_eq!(codes(&evs), ["354"]);
    assert!(s.wants_input());
}

// ---- command errors ----------------------------------------------------

#[test]
fn unknown_bad_sequence_and_syntax() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(b"FOO\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@b>\r\nDATA\r\nRSET\r\n");
    assert_eq!(
        t.replies(),
        [
            "500 5.5.1 Invalid command: Command unrecognized\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "250 2.0.0 Reset state\r\n",
        ]
    );
    t.send(EHLO);
    t.take();
    t.send(b"MAIL FROM:a@b\r\nMAIL TO:<a@b>\r\nMAIL FROM:<a@b> FOO=1\r\nDATA\r\n");
    assert_eq!(
        t.replies(),
        [
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
            "501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
            "555 5.5.4 Unsupported option\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
        ]
    );
    let mut t = ready(cfg());
    t.send(b"MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nDATA\r\nRCPT TO:<>\r\nRCPT TO:x\r\nDATA x\r\n");
    assert_eq!(
        t.replies(),
        [
            "250 2.0.0 Ok\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "503 5.5.1 Invalid command: No recipient specified\r\n",
            "501 5.1.3 Recipient address syntax error\r\n",
            "501 5.5.4 Syntax: RCPT TO:<address>\r\n",
            "501 5.5.4 Syntax error: no parameters allowed\r\n",
        ]
    );
}

#[test]
fn failed_commands_are_logged_escaped() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(b"FOO \"bar\\\r\n");
    let evs = t.take();
    assert!(evs.contains(&Event::Log(
        "failed-command command=\"FOO \\x22bar\\x5c\" result=\"500 5.5.1 Invalid command: Command unrecognized\"".into()
    )), "{evs:?}");
    // A control character is refused as a failed command, as OpenSMTPD
    // logs it.
    t.send(b"NOOP\x01\r\n");
    let evs = t.take();
    assert_eq!(
        logs(&evs),
        ["failed-command command=\"NOOP\\x01\" result=\"500 5.5.2 Invalid character in command\""]
    );
    // Input that is no SMTP any more: one `bad-input` line, as OpenSMTPD's.
    t.send(&[b'x'; 70000]);
    let evs = t.take();
    assert_eq!(logs(&evs), ["bad-input result=\"500 5.5.1 Line too long\""]);
    let mut t = Session::new(cfg());
    t.take();
    t.send(b"GET / HTTP/1.1\r\n");
    let evs = t.take();
    assert_eq!(
        logs(&evs),
        ["failed-command command=\"GET / HTTP/1.1\" result=\"421 4.7.0 mx.example.org Not an SMTP client, closing connection\""]
    );
}

fn logs(evs: &[Event]) -> Vec<&str> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Log(l) => Some(l.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn small_commands() {
    let mut t = ready(cfg());
    t.send(b"NOOP\r\nNOOP anything\r\nHELP\r\nHELP topic\r\nVRFY joe\r\nVRFY\r\nEXPN list\r\nRSET x\r\n");
    assert_eq!(
        t.replies(),
        [
            "250 2.0.0 Ok\r\n",
            "250 2.0.0 Ok\r\n",
            "214-2.0.0 This is smtpd-rs\r\n214 2.0.0 End of HELP info\r\n",
            "214-2.0.0 This is smtpd-rs\r\n214 2.0.0 End of HELP info\r\n",
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
            "501 5.5.4 Syntax: VRFY address\r\n",
            "502 5.5.1 EXPN not supported\r\n",
            "501 5.5.4 Syntax error: no parameters allowed\r\n",
        ]
    );
}

#[test]
fn rset_and_ehlo_end_the_transaction() {
    let mut t = in_transaction(cfg());
    t.send(b"RSET\r\nRCPT TO:<x@y>\r\n");
    let evs = t.take();
    assert_eq!(evs[0], Event::TxReset);
    assert_eq!(codes(&evs), ["250", "503"]);
    let mut t = in_transaction(cfg());
    t.send(EHLO);
    let evs = t.take();
    assert_eq!(evs[0], Event::TxReset);
    t.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(codes(&t.take()), ["250"]);
}

// ---- DATA ------------------------------------------------------------------

fn message(c: Config, body: &[u8]) -> Vec<Event> {
    let mut t = in_transaction(c);
    t.send(b"DATA\r\n");
    t.send(body);
    t.send(b"NOOP\r\n");
    t.take()
}

#[test]
fn data_in_the_same_packet_as_data_command() {
    let mut t = in_transaction(cfg());
    t.send(b"DATA\r\nx\r\n.\r\nNOOP\r\n");
    let evs = t.take();
    assert_eq!(data_of(&evs), b"x\r\n");
    assert_eq!(codes(&evs), ["354", "250", "250"]);
}

#[test]
fn smuggling_never_starts_a_second_message() {
    let fakes: &[&[u8]] = &[
        b"\n.\n",
        b"\r.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\r.\n",
        b"\r\n.\r\r\n",
        b"\r\n\n.\r\n",
        b"\r\r\n.\n",
    ];
    for fake in fakes {
        let transcript = [
            b"EHLO client.example\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nSubject: x\r\n\r\nhello".as_slice(),
            fake,
            b"MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@e.f>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n",
        ]
        .concat();
        let evs = assert_split_invariant(&cfg(), &transcript);
        let mails = evs
            .iter()
            .filter(|e| matches!(e, Event::NeedMail { .. }))
            .count();
        assert_eq!(mails, 1, "{fake:?}");
        assert!(
            !evs.iter().any(|e| matches!(e, Event::DataEnd { .. })),
            "{fake:?}"
        );
        assert!(evs.contains(&Event::DataAbort {
            reason: AbortReason::BareNewline
        }));
        let r = replies(&evs);
        assert_eq!(
            r[r.len() - 2],
            "550 5.6.0 Bare CR or LF not allowed in message, use CRLF\r\n",
            "{fake:?}"
        );
        assert_eq!(r[r.len() - 1], "221 2.0.0 Bye\r\n");
    }
}

#[test]
fn bare_newline_refusal_keeps_the_session() {
    let evs = message(cfg(), b"a\nb\r\n.\r\n");
    assert_eq!(codes(&evs), ["354", "550", "250"]);
    assert_eq!(
        evs.iter().filter(|e| matches!(e, Event::TxReset)).count(),
        1
    );
}

#[test]
fn size_limit_reads_to_the_end() {
    let mut c = cfg();
    c.max_message_size = 10;
    let evs = message(c.clone(), b"0123456789\r\nmore\r\n.\r\n");
    assert_eq!(codes(&evs), ["354", "552", "250"]);
    assert!(evs.contains(&Event::DataAbort {
        reason: AbortReason::TooBig
    }));
    assert_eq!(replies(&evs)[1], "552 5.3.4 Message too big for system\r\n");
    // Exactly at the limit (after unstuffing) is fine.
    let evs = message(c.clone(), b"..2345678\r\n.\r\n");
    assert!(evs.contains(&Event::DataEnd { size: 10 }));
    // The session goes on.
    let mut t = in_transaction(c.clone());
    t.send(b"DATA\r\n0123456789abc\r\n.\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(codes(&t.take()), ["354", "552", "250"]);
    // SIZE= says so up front.
    let mut t = ready(c);
    t.send(b"MAIL FROM:<a@b> SIZE=11\r\n");
    assert_eq!(
        t.replies(),
        ["552 5.3.4 Message size exceeds fixed maximum message size\r\n"]
    );
}

#[test]
fn received_loop_is_refused() {
    let hops = |n: usize| {
        let mut m = b"Received: from x by y; date\r\n".repeat(n);
        m.extend_from_slice(b"\r\nbody\r\n.\r\n");
        m
    };
    let evs = message(cfg(), &hops(100));
    assert!(evs.iter().any(|e| matches!(e, Event::DataEnd { .. })));
    let evs = message(cfg(), &hops(101));
    assert!(evs.contains(&Event::DataAbort {
        reason: AbortReason::Loop
    }));
    assert_eq!(
        replies(&evs)[1],
        "554 5.4.6 Routing loop detected: too many Received headers\r\n"
    );
}

#[test]
fn long_data_lines_refuse_the_message_not_the_session() {
    let mut c = cfg();
    c.max_line = 1000;
    let mut body = vec![b'x'; 998];
    body.extend_from_slice(b"\r\n.\r\n");
    let evs = message(c.clone(), &body);
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::DataEnd { size: 1000 })));
    let mut body = vec![b'x'; 999];
    body.extend_from_slice(b"\r\n.\r\n");
    let evs = message(c, &body);
    assert_eq!(codes(&evs), ["354", "550", "250"]);
    assert_eq!(
        replies(&evs)[1],
        "550 5.6.0 Line too long in message (limit 1000 bytes)\r\n"
    );
}

#[test]
fn data_ready_failure_keeps_the_transaction() {
    let mut first = true;
    let mut t = Session::with(cfg(), move |e| match e {
        Event::NeedData if first => {
            first = false;
            Answer::DataReady(Err("451 4.3.0 Queue busy".into()))
        }
        e => ok_policy(e),
    });
    t.send(EHLO);
    t.take();
    t.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(codes(&t.take()), ["250", "250", "451", "354", "250"]);
}

#[test]
fn commit_failure_and_421_from_the_glue() {
    let mut t = Session::with(cfg(), |e| match e {
        Event::DataEnd { .. } => {
            Answer::Committed(Err("452 4.3.1 Insufficient system storage".into()))
        }
        Event::NeedRcpt { path, .. } if path == "bye@x" => {
            Answer::Rcpt(Err("421 4.3.0 Gone".into()))
        }
        e => ok_policy(e),
    });
    t.send(EHLO);
    t.take();
    t.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(t.replies()[3], "452 4.3.1 Insufficient system storage\r\n");
    t.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bye@x>\r\nNOOP\r\n");
    let evs = t.take();
    assert_eq!(codes(&evs), ["250", "421"]);
    assert_eq!(&evs[evs.len() - 2..], [Event::TxReset, Event::Close]);
}

#[test]
fn invalid_glue_replies_are_replaced() {
    let mut t = Session::with(cfg(), |e| match e {
        Event::NeedMail { .. } => Answer::Mail(Err("250 fine\r\n250 really".into())),
        Event::NeedRcpt { .. } => Answer::Rcpt(Err("550 5.1.1 <é>\r\nx".into())),
        e => ok_policy(e),
    });
    t.send(EHLO);
    t.take();
    t.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(t.replies(), ["451 4.3.0 Temporary failure\r\n"]);
}

// ---- limits ----------------------------------------------------------------

#[test]
fn command_line_length() {
    let mut c = cfg();
    c.max_line = 600;
    let mut t = ready(c.clone());
    // 600 bytes with CRLF is fine.
    let mut line = b"NOOP ".to_vec();
    line.resize(598, b'x');
    line.extend_from_slice(b"\r\n");
    t.send(&line);
    assert_eq!(codes(&t.take()), ["250"]);
    // One more is not, even before the line ends.
    let mut t = ready(c);
    t.send(&vec![b'x'; 599]);
    assert!(t.take().is_empty());
    t.send(b"x");
    let evs = t.take();
    assert_eq!(replies(&evs), ["500 5.5.1 Line too long\r\n"]);
    assert_eq!(evs.last(), Some(&Event::Close));
}

#[test]
fn slow_long_lines_are_scanned_once() {
    // Byte by byte up to the limit: stays linear thanks to `scanned`.
    let mut s = Server::new(cfg());
    s.greeting();
    for _ in 0..65534 {
        assert!(s.input(b"a").is_empty());
    }
    let evs = s.input(b"a");
    assert_eq!(replies(&evs), ["500 5.5.1 Line too long\r\n"]);
}

#[test]
fn nul_and_8bit_in_commands() {
    let mut t = ready(cfg());
    t.send(b"NO\0OP\r\nNOOP \xff\r\nEHLO \xc3\xa9.example\r\nMAIL FROM:<\xc3\xa9@b>\r\nNOOP\r\n");
    assert_eq!(
        t.replies(),
        [
            "500 5.5.2 Invalid character in command\r\n",
            "500 5.5.2 Invalid character in command\r\n",
            "500 5.5.2 Invalid character in command\r\n",
            "500 5.5.2 Invalid character in command\r\n",
            "250 2.0.0 Ok\r\n",
        ]
    );
    t.send("MAIL FROM:<é@b> SMTPUTF8\r\nRCPT TO:<ü@b>\r\n".as_bytes());
    let evs = t.take();
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::NeedMail { path, .. } if path == "é@b")));
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::NeedRcpt { path, .. } if path == "ü@b")));
    let mut t = in_transaction(cfg());
    t.send("RCPT TO:<ü@b>\r\n".as_bytes());
    assert_eq!(t.replies(), ["500 5.5.2 Invalid character in command\r\n"]);
}

#[test]
fn too_many_recipients() {
    let mut c = cfg();
    c.max_rcpt = 3;
    let mut t = in_transaction(c);
    t.send(&b"RCPT TO:<x@y>\r\n".repeat(2));
    assert_eq!(codes(&t.take()), ["250", "250"]);
    // Overshoot up to max_rcpt more is answered, not counted.
    t.send(&b"RCPT TO:<x@y>\r\n".repeat(3));
    assert_eq!(t.replies(), ["452 4.5.3 Too many recipients\r\n"; 3]);
    t.send(b"DATA\r\nx\r\n.\r\n");
    assert_eq!(codes(&t.take()), ["354", "250"]);
}

#[test]
fn too_many_transactions() {
    let mut c = cfg();
    c.max_mails = 2;
    let mut t = ready(c);
    t.send(b"MAIL FROM:<a@b>\r\nRSET\r\nMAIL FROM:<a@b>\r\nRSET\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(t.replies()[4], "452 4.5.3 Too many messages sent\r\n");
}

#[test]
fn too_many_errors_close_the_session() {
    let mut t = ready(cfg());
    t.send(&b"FOO\r\n".repeat(9));
    assert_eq!(codes(&t.take()), ["500"; 9]);
    t.send(b"FOO\r\nNOOP\r\n");
    let evs = t.take();
    assert_eq!(
        replies(&evs),
        ["421 4.7.0 mx.example.org Too many errors, closing connection\r\n"]
    );
    assert_eq!(evs.last(), Some(&Event::Close));
}

#[test]
fn junk_commands_end_up_counting() {
    let mut t = ready(cfg());
    t.send(&b"NOOP\r\n".repeat(100 + 9));
    assert!(!t.s.is_closed());
    t.send(b"NOOP\r\n");
    assert!(t.s.is_closed());
}

#[test]
fn pipelined_rest_of_a_refused_mail_is_not_abuse() {
    let mut t = Session::with(cfg(), |e| match e {
        Event::NeedMail { .. } => Answer::Mail(Err("550 5.7.1 Sender rejected".into())),
        e => ok_policy(e),
    });
    t.send(EHLO);
    t.take();
    let mut batch = b"MAIL FROM:<spam@x>\r\n".to_vec();
    batch.extend_from_slice(&b"RCPT TO:<a@b>\r\n".repeat(50));
    batch.extend_from_slice(b"DATA\r\n");
    t.send(&batch);
    assert!(!t.s.is_closed());
    assert_eq!(
        t.take()
            .iter()
            .filter(|e| matches!(e, Event::Reply(_)))
            .count(),
        52
    );
}

#[test]
fn input_while_waiting_is_bounded() {
    let mut s = Server::new(cfg());
    s.greeting();
    s.input(EHLO);
    s.input(b"MAIL FROM:<a@b>\r\n");
    assert!(!s.wants_input());
    let big = vec![b'x'; 65535 + INPUT_SLACK];
    assert!(s.input(&big).is_empty());
    let evs = s.input(b"x");
    assert_eq!(
        replies(&evs),
        ["421 4.7.0 mx.example.org Too much input, closing connection\r\n"]
    );
    assert_eq!(evs.last(), Some(&Event::Close));
}

#[test]
fn http_requests_are_dropped() {
    let mut t = Session::new(cfg());
    t.take();
    t.send(b"POST / HTTP/1.1\r\nHost: x\r\n\r\nMAIL FROM:<a@b>\r\n");
    let evs = t.take();
    assert_eq!(codes(&evs), ["421"]);
    assert_eq!(evs.last(), Some(&Event::Close));
}

#[test]
fn timeout_during_data_discards_the_message() {
    let mut t = in_transaction(cfg());
    t.send(b"DATA\r\npartial");
    t.take();
    let evs = t.s.timeout();
    assert_eq!(
        evs,
        [
            // No failed-command line: the 421 answers no command.
            Event::Reply(b"421 4.4.2 mx.example.org Timeout, closing connection\r\n".to_vec()),
            Event::DataAbort {
                reason: AbortReason::SessionEnd
            },
            Event::TxReset,
            Event::Close
        ]
    );
    // A message already refused is not discarded twice.
    let mut t = in_transaction(cfg());
    t.send(b"DATA\r\nbare\nLF");
    let evs = t.take();
    assert_eq!(
        evs.last(),
        Some(&Event::DataAbort {
            reason: AbortReason::BareNewline
        })
    );
    let evs = t.s.timeout();
    assert!(!evs.iter().any(|e| matches!(e, Event::DataAbort { .. })));
    assert_eq!(&evs[evs.len() - 2..], [Event::TxReset, Event::Close]);
    let mut t = in_transaction(cfg());
    assert_eq!(t.s.disconnected(), [Event::TxReset]);
    assert!(t.s.is_closed());
}

// ---- TLS and AUTH ----------------------------------------------------------

#[test]
fn tls_required_refuses_before_starttls() {
    let mut c = cfg();
    c.tls_available = true;
    c.tls_required = true;
    c.auth = AuthPolicy::Optional;
    c.auth_plaintext_ok = true;
    let mut t = ready(c);
    t.send(
        b"MAIL FROM:<a@b>\r\nRCPT TO:<a@b>\r\nDATA\r\nBDAT 3\r\nabcAUTH PLAIN AGpvZQBzZWNyZXQ=\r\n",
    );
    assert_eq!(
        t.replies(),
        ["530 5.7.0 Must issue a STARTTLS command first\r\n"; 5]
    );
    t.send(b"STARTTLS\r\n");
    let evs = t.take();
    assert_eq!(
        evs,
        [
            Event::Reply(b"220 2.0.0 Ready to start TLS\r\n".to_vec()),
            Event::StartTls
        ]
    );
    assert!(!t.s.wants_input());
    let evs = t.s.tls_started();
    assert!(evs.is_empty());
    assert!(t.s.tls_active());
    // EHLO again: the name from before TLS is forgotten.
    t.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(codes(&t.take()), ["503"]);
    t.send(EHLO);
    let r = t.replies().concat();
    assert!(!r.contains("STARTTLS"));
    t.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(codes(&t.take()), ["250", "250", "354", "250"]);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut c = cfg();
    c.tls_available = true;
    let mut t = ready(c);
    t.send(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n");
    let evs = t.take();
    assert_eq!(codes(&evs), ["220"]);
    assert!(evs.contains(&Event::StartTls));
    assert!(evs.contains(&Event::Log(
        "bad-input reason=\"pipelined after STARTTLS\" bytes=20".into()
    )));
    // Plaintext during the handshake is dropped too.
    let evs = t.s.input(b"RCPT TO:<x@y>\r\n");
    assert!(matches!(evs.as_slice(), [Event::Log(_)]));
    t.s.tls_started();
    t.send(EHLO);
    t.send(b"STARTTLS\r\n");
    assert_eq!(
        t.replies().last().unwrap(),
        "503 5.5.1 Invalid command: Channel already secured\r\n"
    );
    let mut t = ready(cfg());
    t.send(b"STARTTLS\r\n");
    assert_eq!(
        t.replies(),
        ["503 5.5.1 Invalid command: Command not supported\r\n"]
    );
}

fn auth_cfg() -> Config {
    let mut c = cfg();
    c.tls_active = true;
    c.auth = AuthPolicy::Required;
    c
}

#[test]
fn auth_required_before_mail() {
    let mut t = ready(auth_cfg());
    t.send(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(t.replies(), ["530 5.7.0 Authentication required\r\n"]);
    let resp = base64_encode(b"\0joe\0secret");
    t.send(format!("AUTH PLAIN {resp}\r\nMAIL FROM:<a@b>\r\n").as_bytes());
    let evs = t.take();
    assert!(evs.contains(&Event::NeedAuth {
        mech: AuthMech::Plain,
        user: "joe".into(),
        password: Password(b"secret".to_vec())
    }));
    assert_eq!(
        replies(&evs),
        ["235 2.0.0 Authentication succeeded\r\n", "250 2.0.0 Ok\r\n"]
    );
    assert_eq!(t.s.auth_user(), Some("joe"));
    // Nothing in the log shows the credentials.
    let logs: String = evs
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert!(!logs.contains(&resp) && !logs.contains("secret"), "{logs}");
    assert_eq!(
        format!("{:?}", Password(b"secret".to_vec())),
        "Password(..)"
    );
    t.send(b"RSET\r\nAUTH PLAIN\r\n");
    assert_eq!(
        t.replies()[1],
        "503 5.5.1 Invalid command: Already authenticated\r\n"
    );
}

#[test]
fn auth_exchanges() {
    let plain = base64_encode(b"\0joe\0secret");
    let mut t = ready(auth_cfg());
    t.send(format!("AUTH PLAIN\r\n{plain}\r\n").as_bytes());
    assert_eq!(codes(&t.take()), ["334", "235"]);
    let mut t = ready(auth_cfg());
    t.send(b"AUTH LOGIN\r\nam9l\r\nc2VjcmV0\r\n");
    assert_eq!(
        t.replies(),
        [
            "334 VXNlcm5hbWU6\r\n",
            "334 UGFzc3dvcmQ6\r\n",
            "235 2.0.0 Authentication succeeded\r\n"
        ]
    );
    let mut t = ready(auth_cfg());
    t.send(b"AUTH LOGIN am9l\r\nc2VjcmV0\r\n");
    assert_eq!(codes(&t.take()), ["334", "235"]);
    let mut t = ready(auth_cfg());
    t.send(b"AUTH LOGIN am9l\r\nd3Jvbmc=\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN !!!!\r\nAUTH CRAM-MD5\r\nAUTH\r\n");
    assert_eq!(
        t.replies(),
        [
            "334 UGFzc3dvcmQ6\r\n",
            "535 5.7.8 Authentication failed\r\n",
            "334 \r\n",
            "501 5.7.0 Authentication cancelled\r\n",
            "501 5.5.2 Syntax error in authentication response\r\n",
            "504 5.5.4 AUTH mechanism not supported\r\n",
            "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n",
        ]
    );
    let evs = {
        let mut t = ready(auth_cfg());
        t.send(b"AUTH LOGIN am9l\r\nd3Jvbmc=\r\n");
        t.take()
    };
    assert!(evs.contains(&Event::Log(
        "authentication user=joe result=permfail".into()
    )));
    // The name is unquoted, as OpenSMTPD's: a space in it is escaped so
    // it stays one field.
    let evs = {
        let mut t = ready(auth_cfg());
        t.send(b"AUTH PLAIN AGpvIGUAd3Jvbmc=\r\n");
        t.take()
    };
    assert!(evs.contains(&Event::Log(
        "authentication user=jo\\x20e result=permfail".into()
    )));
}

#[test]
fn auth_availability() {
    // Not configured.
    let mut t = ready(cfg());
    t.send(b"AUTH PLAIN\r\n");
    assert_eq!(
        t.replies(),
        ["503 5.5.1 Invalid command: Command not supported\r\n"]
    );
    // Configured, but not in the clear.
    let mut c = auth_cfg();
    c.tls_active = false;
    let mut t = ready(c.clone());
    t.send(b"AUTH PLAIN\r\n");
    assert_eq!(
        t.replies(),
        ["538 5.7.11 Encryption required for requested authentication mechanism\r\n"]
    );
    c.auth_plaintext_ok = true;
    let mut t = ready(c);
    t.send(b"AUTH PLAIN\r\n");
    assert_eq!(t.replies(), ["334 \r\n"]);
    // Not before EHLO, not in a transaction.
    let mut t = Session::new(auth_cfg());
    t.take();
    t.send(b"AUTH PLAIN\r\n");
    assert_eq!(codes(&t.take()), ["503"]);
    let mut c = auth_cfg();
    c.auth = AuthPolicy::Optional;
    let mut t = in_transaction(c);
    t.send(b"AUTH PLAIN\r\n");
    assert_eq!(codes(&t.take()), ["503"]);
}

#[test]
fn auth_brute_force_ends_in_421() {
    let mut t = ready(auth_cfg());
    t.send(&b"AUTH LOGIN am9l\r\nd3Jvbmc=\r\n".repeat(9));
    assert!(!t.s.is_closed());
    t.send(b"AUTH LOGIN am9l\r\nd3Jvbmc=\r\n");
    assert!(t.s.is_closed());
}

// ---- BDAT ------------------------------------------------------------------

#[test]
fn bdat_chunks() {
    let mut t = in_transaction(cfg());
    t.send(b"BDAT 9\r\nline\r\n.\r\nBDAT 5 LAST\r\n..x\r\nNOOP\r\n");
    let evs = t.take();
    assert_eq!(
        replies(&evs),
        [
            "250 2.0.0 9 octets received\r\n",
            "250 2.0.0 0a1b2c3d Message accepted for delivery\r\n",
            "250 2.0.0 Ok\r\n"
        ]
    );
    // No dot handling: bytes are stored as sent.
    assert_eq!(data_of(&evs), b"line\r\n.\r\n..x\r\n");
    assert!(evs.contains(&Event::DataEnd { size: 14 }));
}

#[test]
fn bdat_is_split_invariant() {
    let transcript = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 4\r\nab\r\nBDAT 0\r\nBDAT 3 LAST\r\ncd\nRSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2 LAST\r\nxyQUIT\r\n";
    let evs = assert_split_invariant(&cfg(), transcript);
    // The first message is refused for its bare LF; the second does not
    // end with CRLF: one is added.
    assert_eq!(data_of(&evs), b"xy\r\n");
    assert!(evs.contains(&Event::DataAbort {
        reason: AbortReason::BareNewline
    }));
}

#[test]
fn bdat_zero_last_and_empty_message() {
    let mut t = in_transaction(cfg());
    t.send(b"BDAT 0 LAST\r\n");
    let evs = t.take();
    assert!(evs.contains(&Event::DataEnd { size: 0 }));
    assert_eq!(codes(&evs), ["250"]);
}

#[test]
fn bdat_refused_chunks_are_still_read() {
    let mut t = ready(cfg());
    t.send(b"BDAT 6\r\nRSET\r\nNOOP\r\n");
    assert_eq!(
        t.replies(),
        [
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "250 2.0.0 Ok\r\n"
        ]
    );
    let mut t = ready(cfg());
    t.send(b"MAIL FROM:<a@b>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(
        t.replies()[1..],
        [
            "503 5.5.1 Invalid command: No recipient specified\r\n",
            "250 2.0.0 Ok\r\n"
        ]
    );
    let mut t = ready(cfg());
    t.send(b"BDAT x\r\nBDAT 1 FIRST\r\n");
    assert_eq!(codes(&t.take()), ["501", "501"]);
}

#[test]
fn bdat_and_data_do_not_mix() {
    let mut t = in_transaction(cfg());
    t.send(b"BDAT 3\r\nabcDATA\r\nRCPT TO:<x@y>\r\nBDAT 0 LAST\r\n");
    let evs = t.take();
    assert_eq!(
        replies(&evs),
        [
            "250 2.0.0 3 octets received\r\n",
            "503 5.5.1 Invalid command: DATA after BDAT\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "250 2.0.0 0a1b2c3d Message accepted for delivery\r\n",
        ]
    );
    let mut t = ready(cfg());
    t.send(b"MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\nDATA\r\nBDAT 4 LAST\r\na\nb\0");
    let evs = t.take();
    assert_eq!(
        replies(&evs)[2],
        "503 5.5.1 Invalid command: BINARYMIME requires BDAT\r\n"
    );
    assert_eq!(data_of(&evs), b"a\nb\0");
    assert!(evs.contains(&Event::DataEnd { size: 4 }));
}

#[test]
fn bdat_rset_and_limits() {
    let mut t = in_transaction(cfg());
    t.send(b"BDAT 3\r\nabcRSET\r\n");
    let evs = t.take();
    assert_eq!(
        &evs[evs.len() - 3..evs.len() - 1],
        [
            Event::DataAbort {
                reason: AbortReason::Reset
            },
            Event::TxReset
        ]
    );
    let mut c = cfg();
    c.max_message_size = 5;
    let mut t = in_transaction(c);
    t.send(b"BDAT 3\r\nabcBDAT 3\r\ndefNOOP\r\n");
    let evs = t.take();
    assert_eq!(
        replies(&evs),
        [
            "250 2.0.0 3 octets received\r\n",
            "552 5.3.4 Message too big for system\r\n",
            "250 2.0.0 Ok\r\n"
        ]
    );
    assert!(evs.contains(&Event::DataAbort {
        reason: AbortReason::TooBig
    }));
    let mut c = cfg();
    c.chunking = false;
    let mut t = in_transaction(c);
    t.send(b"BDAT 4\r\nNOOP\r\n");
    assert_eq!(codes(&t.take()), ["500", "250"]);
}

#[test]
fn bdat_data_ready_failure_drops_the_chunk() {
    let mut t = Session::with(cfg(), |e| match e {
        Event::NeedData => Answer::DataReady(Err("452 4.3.1 Insufficient system storage".into())),
        e => ok_policy(e),
    });
    t.send(EHLO);
    t.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
    t.take();
    t.send(b"BDAT 6\r\nNOOP\r\nBDAT 2 LAST\r\nxyNOOP\r\n");
    let evs = t.take();
    assert_eq!(evs[1], Event::TxReset);
    assert_eq!(
        replies(&evs),
        [
            "452 4.3.1 Insufficient system storage\r\n",
            "503 5.5.1 Invalid command: Command not allowed at this point.\r\n",
            "250 2.0.0 Ok\r\n"
        ]
    );
}

// ---- everything at once ------------------------------------------------------

#[test]
fn long_mixed_transcript_is_split_invariant() {
    let mut c = auth_cfg();
    c.auth = AuthPolicy::Optional;
    let transcript = b"EHLO a.example\r\nNOOP\r\nAUTH LOGIN\r\nam9l\r\nc2VjcmV0\r\n\
MAIL FROM:<> RET=HDRS ENVID=x\r\nRCPT TO:<p@q> ORCPT=rfc822;p@q\r\nRCPT TO:<>\r\n\
DATA\r\nA: b\r\n\r\n..\r\n...\r\n.\r\nFOO\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\n\
BDAT 5\r\n.\r\n\r\nBDAT 1 LAST\r\n\rVRFY x\r\nHELO b.example\r\nQUIT\r\nNOOP\r\n";
    let evs = assert_split_invariant(&c, transcript);
    assert_eq!(
        codes(&evs),
        [
            "220", "250", "250", "334", "334", "235", "250", "250", "501", "354", "250", "500",
            "250", "250", "250", "550", "252", "250", "221"
        ]
    );
    assert_eq!(data_of(&evs), b"A: b\r\n\r\n.\r\n..\r\n");
}

/// A deterministic stand-in for the fuzz target, run by `cargo test`:
/// transcripts built from SMTP-ish pieces, fed whole and in random
/// pieces, must give the same events, with well-formed replies.
#[test]
fn random_transcripts_are_split_invariant() {
    const PIECES: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"HELO y\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"MAIL FROM:<> BODY=BINARYMIME\r\n",
        b"RCPT TO:<c@d>\r\n",
        b"DATA\r\n",
        b"BDAT 3\r\n",
        b"BDAT 2 LAST\r\n",
        b"BDAT 0 LAST\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
        b"AUTH PLAIN AGpvZQBzZWNyZXQ=\r\n",
        b"AUTH LOGIN\r\n",
        b"am9l\r\n",
        b"*\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"..",
        b".\r\n",
        b"\r\n.\r\n",
        b"x",
        b"Received: z\r\n",
        b"\0",
        b"\xff",
        b"FOO\r\n",
        b"STARTTLS\r\n",
        b"VRFY u\r\n",
    ];
    let mut seed = 0x2545_f491_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize
    };
    let mut c = auth_cfg();
    c.auth = AuthPolicy::Optional;
    c.max_message_size = 200;
    c.max_rcpt = 3;
    c.max_mails = 4;
    for _ in 0..300 {
        let mut t = Vec::new();
        for _ in 0..next() % 60 {
            t.extend_from_slice(PIECES[next() % PIECES.len()]);
        }
        let whole = run_split(&c, &[&t]);
        let mut parts = Vec::new();
        let mut rest = t.as_slice();
        while !rest.is_empty() {
            let n = (next() % 16 + 1).min(rest.len());
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        let split = run_split(&c, &parts);
        // STARTTLS drops what was buffered with it, which depends on the
        // split; compare up to it.
        let upto = |evs: &[Event]| -> Vec<Event> {
            let end = evs
                .iter()
                .position(|e| *e == Event::StartTls)
                .unwrap_or(evs.len());
            evs[..end]
                .iter()
                .filter(|e| !matches!(e, Event::Log(_)))
                .cloned()
                .collect()
        };
        assert_eq!(
            upto(&split),
            upto(&whole),
            "{:?}",
            String::from_utf8_lossy(&t)
        );
    }
}
