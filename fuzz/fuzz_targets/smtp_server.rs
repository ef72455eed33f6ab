//! The SMTP server engine on arbitrary client bytes, split arbitrarily
//! (A4, A11): no panic; every reply is well-formed CRLF-terminated lines;
//! message bytes only flow while a message is open, add up to the size in
//! DataEnd, and a committed text message is whole CRLF lines within the
//! limits; and the same bytes fed whole or in pieces give the same events.
//!
//! Input: [config bits] [answer bits] [split seed x2] transcript...
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::smtp::server::{Answer, AuthPolicy, Body, Config, Event, Server, MAX_HOPS};

const MAX_LINE: usize = 512;
const MAX_SIZE: u64 = 4096;

fn config(bits: u8) -> Config {
    let mut c = Config::new("mx.example.org");
    c.max_line = MAX_LINE;
    c.max_rcpt = 5;
    c.max_mails = 3;
    c.max_message_size = MAX_SIZE;
    c.tls_available = bits & 1 != 0;
    c.tls_required = bits & 2 != 0;
    c.tls_active = bits & 4 != 0;
    c.auth = match (bits >> 3) & 3 {
        0 => AuthPolicy::None,
        1 => AuthPolicy::Optional,
        _ => AuthPolicy::Required,
    };
    c.auth_plaintext_ok = bits & 32 != 0;
    c.chunking = bits & 64 == 0;
    c.smtputf8 = bits & 128 == 0;
    c
}

/// Follows one session's events and checks them as they come.
struct Checker {
    open: bool,
    binary: bool,
    message: Vec<u8>,
    closed: bool,
    questions: u32,
    answers: u8,
}

impl Checker {
    fn event(&mut self, e: &Event) {
        assert!(!self.closed, "event after Close: {e:?}");
        match e {
            Event::Reply(r) => check_reply(r),
            Event::Log(l) => assert!(!l.chars().any(char::is_control), "{l:?}"),
            Event::NeedMail { params, .. } => {
                self.binary = params.body == Some(Body::BinaryMime);
            }
            Event::Data(d) => {
                assert!(self.open, "Data outside a message");
                assert!(!d.is_empty());
                self.message.extend_from_slice(d);
            }
            Event::DataEnd { size } => {
                assert!(self.open);
                assert_eq!(*size, self.message.len() as u64);
                assert!(*size <= MAX_SIZE);
                if !self.binary {
                    check_text(&self.message);
                }
                self.open = false;
            }
            Event::DataAbort { .. } => {
                assert!(self.open, "DataAbort without a message");
                self.open = false;
            }
            Event::Close => self.closed = true,
            _ => {}
        }
    }

    /// The answer to a question; refusals where the answer bits say so.
    fn answer(&mut self, q: &Event) -> Option<Answer> {
        if !matches!(
            q,
            Event::NeedMail { .. }
                | Event::NeedRcpt { .. }
                | Event::NeedData
                | Event::DataEnd { .. }
                | Event::NeedAuth { .. }
        ) {
            return None;
        }
        let refuse = self.answers & (1 << (self.questions % 8)) != 0;
        self.questions += 1;
        let no = || "550 5.7.1 No".to_string();
        let r = |ok: ()| if refuse { Err(no()) } else { Ok(ok) };
        Some(match q {
            Event::NeedMail { .. } => Answer::Mail(r(())),
            Event::NeedRcpt { .. } => Answer::Rcpt(r(())),
            Event::NeedData => {
                let a = r(());
                if a.is_ok() {
                    assert!(!self.open);
                    self.open = true;
                    self.message.clear();
                }
                Answer::DataReady(a)
            }
            Event::DataEnd { .. } => Answer::Committed(if refuse {
                Err(no())
            } else {
                Ok("0a1b2c3d".into())
            }),
            Event::NeedAuth { .. } => Answer::Auth(!refuse),
            _ => return None,
        })
    }
}

fn check_reply(r: &[u8]) {
    assert!(r.len() >= 6 && r.ends_with(b"\r\n"), "{r:?}");
    let body = &r[..r.len() - 2];
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = if i + 1 < lines.len() {
            line.strip_suffix(b"\r").expect("LF without CR in reply")
        } else {
            line
        };
        assert!(
            line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
            "{r:?}"
        );
        assert_eq!(line[..3], r[..3], "mixed codes: {r:?}");
        assert_eq!(
            line[3],
            if i + 1 == lines.len() { b' ' } else { b'-' },
            "{r:?}"
        );
        assert!(line.iter().all(|&b| (0x20..0x7f).contains(&b)), "{r:?}");
    }
}

/// A stored text message: only CRLF line endings, lines within MAX_LINE,
/// whole lines, and not too many hops.
fn check_text(m: &[u8]) {
    assert!(m.is_empty() || m.ends_with(b"\r\n"), "partial last line");
    let mut received = 0;
    let mut headers = true;
    for line in m.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= MAX_LINE, "long line");
        let text = &line[..line.len() - 2];
        assert!(line.ends_with(b"\r\n") && !text.contains(&b'\r') && !text.contains(&b'\n'));
        if text.is_empty() {
            headers = false;
        }
        if headers && text.len() >= 9 && text[..9].eq_ignore_ascii_case(b"received:") {
            received += 1;
        }
    }
    assert!(received <= MAX_HOPS);
}

/// Run a session on `parts`; returns what the glue would keep, without
/// log lines (their byte counts depend on the split).
fn run(cfg: &Config, answers: u8, parts: &[&[u8]]) -> Vec<Event> {
    let mut s = Server::new(cfg.clone());
    let mut c = Checker {
        open: false,
        binary: false,
        message: Vec::new(),
        closed: false,
        questions: 0,
        answers,
    };
    let mut all = Vec::new();
    let mut evs = s.greeting();
    let mut parts = parts.iter();
    loop {
        let mut question = None;
        let mut tls = false;
        for e in &evs {
            c.event(e);
            if let Some(a) = c.answer(e) {
                assert!(question.is_none(), "two questions at once");
                question = Some(a);
            }
            tls |= *e == Event::StartTls;
        }
        all.append(&mut evs);
        if tls {
            // Bytes after STARTTLS are discarded, so how much of the
            // transcript was buffered matters: stop here.
            break;
        }
        if let Some(a) = question {
            assert!(!s.wants_input());
            evs = s.answer(a);
            continue;
        }
        if c.closed {
            break;
        }
        match parts.next() {
            Some(p) => evs = s.input(p),
            None => {
                evs = s.timeout();
                for e in &evs {
                    c.event(e);
                }
                all.append(&mut evs);
                assert!(c.closed && !c.open);
                break;
            }
        }
    }
    normalize(all)
}

fn normalize(evs: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in evs {
        match (&e, out.last_mut()) {
            (Event::Log(_), _) => continue,
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

fuzz_target!(|data: &[u8]| {
    let [bits, answers, s1, s2, transcript @ ..] = data else {
        return;
    };
    let cfg = config(*bits);
    let whole = run(&cfg, *answers, &[transcript]);
    // Pieces of pseudo-random sizes from the seed.
    let mut seed = u32::from(*s1) << 8 | u32::from(*s2) | 1;
    let mut parts = Vec::new();
    let mut rest = transcript;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed as usize % 64 + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        parts.push(a);
        rest = b;
    }
    assert_eq!(run(&cfg, *answers, &parts), whole);
});
