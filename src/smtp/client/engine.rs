//! The session state machine: the server's bytes are cut into replies,
//! and each reply answers the oldest command still waiting for one
//! (`expect`, in the order the commands were sent, so PIPELINING needs no
//! special matching). This file holds the session (banner, EHLO/HELO,
//! STARTTLS, AUTH, QUIT, failures); `tx` the transaction.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use super::command::{base64, plain};
use super::reply::Parser;
use super::{Capabilities, Config, Envelope, Event, Outcome, Reply, TlsPolicy};

mod tx;

use tx::Tx;

/// What the reply at the head of the queue answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Banner,
    Ehlo,
    Helo,
    StartTls,
    /// `334` to `AUTH LOGIN`: send the user name.
    AuthLoginUser,
    /// `334` to the user name: send the password.
    AuthLoginPass,
    /// `235` to the credentials.
    AuthDone,
    Rset,
    Mail,
    /// The recipient at this index of the envelope.
    Rcpt(usize),
    Data,
    /// The final reply, after the body and its dot.
    Dot,
    /// LMTP: the final reply for the recipient at this index.
    LmtpDot(usize),
    Quit,
}

/// One SMTP client session.
#[derive(Debug)]
pub struct Client {
    cfg: Config,
    parser: Parser,
    /// The commands sent and not yet answered, oldest first.
    expect: VecDeque<Expect>,
    caps: Capabilities,
    esmtp: bool,
    tls_active: bool,
    /// The 220 to STARTTLS came; waiting for `tls_started`.
    handshake: bool,
    /// STARTTLS was refused (opportunistic TLS): don't ask again.
    tls_refused: bool,
    /// Greeted (and authenticated): transactions may start.
    ready: bool,
    /// A transaction was started on this connection: RSET before the next.
    used: bool,
    /// Messages handed in and not yet started.
    queue: VecDeque<Envelope>,
    tx: Option<Tx>,
    quit_wanted: bool,
    /// `Idle` was given and nothing happened since.
    idle_told: bool,
    closed: bool,
}

impl Client {
    /// A session on a freshly connected socket: it waits for the banner.
    pub fn new(mut cfg: Config) -> Client {
        // The name goes into our EHLO line: keep it one printable token.
        if cfg.helo.is_empty() || !cfg.helo.bytes().all(|b| b.is_ascii_graphic()) {
            cfg.helo = "localhost".to_string();
        }
        let tls_active = cfg.tls_active;
        Client {
            cfg,
            parser: Parser::default(),
            expect: VecDeque::from([Expect::Banner]),
            caps: Capabilities::default(),
            esmtp: false,
            tls_active,
            handshake: false,
            tls_refused: false,
            ready: false,
            used: false,
            queue: VecDeque::new(),
            tx: None,
            quit_wanted: false,
            idle_told: false,
            closed: false,
        }
    }

    /// Bytes from the server, any split.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut ev = Vec::new();
        if self.closed || bytes.is_empty() {
            return ev;
        }
        // Only commands already sent when these bytes were read can be
        // answered by them: whatever we send while handling them was not
        // seen by the server when it sent these bytes.
        let mut answerable = self.expect.len();
        let was_handshake = self.handshake;
        self.parser.push(bytes);
        while !self.closed {
            if answerable == 0 {
                if self.parser.pending() {
                    self.fail("unsolicited reply from the server", None, false, &mut ev);
                }
                break;
            }
            match self.parser.next_reply() {
                Err(e) => self.fail(&e.to_string(), None, false, &mut ev),
                Ok(None) => break,
                Ok(Some(r)) => {
                    answerable -= 1;
                    let exp = self.expect.pop_front().expect("answerable counts expect");
                    self.on_reply(exp, r, &mut ev);
                }
            }
        }
        // Announced only now: bytes after the 220 (read in the clear, to
        // be taken as encrypted) fail the session instead.
        if self.handshake && !was_handshake && !self.closed {
            ev.push(Event::StartTls);
        }
        ev
    }

    /// The TLS handshake asked for by `StartTls` succeeded.
    pub fn tls_started(&mut self) -> Vec<Event> {
        let mut ev = Vec::new();
        if !self.handshake || self.closed {
            return ev;
        }
        self.handshake = false;
        self.tls_active = true;
        // RFC 3207 4.2: forget everything learnt in the clear.
        self.caps = Capabilities::default();
        self.esmtp = false;
        self.parser.clear();
        self.send_ehlo(&mut ev);
        ev
    }

    /// Queue a message; it is sent once the session is ready and the
    /// messages before it are done.
    pub fn send_message(&mut self, env: Envelope) -> Vec<Event> {
        let mut ev = Vec::new();
        if self.closed || self.quit_wanted {
            let r = Reply::local(421, "4.4.0 session closed");
            ev.push(Event::Done {
                id: env.id,
                outcomes: vec![Outcome::TempFail(r); env.rcpts.len()],
            });
            return ev;
        }
        self.queue.push_back(env);
        self.idle_told = false;
        self.pump(&mut ev);
        ev
    }

    /// The body given by `SendBody` was written, with its final dot.
    pub fn body_done(&mut self) -> Vec<Event> {
        if let Some(tx) = self.tx.as_mut().filter(|t| t.in_body) {
            tx.in_body = false;
            if self.cfg.lmtp {
                // RFC 2033 4.2: one reply per recipient RCPT accepted.
                self.expect
                    .extend(tx.accepted_indexes().map(Expect::LmtpDot));
            } else {
                self.expect.push_back(Expect::Dot);
            }
        }
        Vec::new()
    }

    /// End the session once the queued messages are done.
    pub fn quit(&mut self) -> Vec<Event> {
        let mut ev = Vec::new();
        if !self.closed && !self.quit_wanted {
            self.quit_wanted = true;
            self.pump(&mut ev);
        }
        ev
    }

    /// The driver's timer fired: everything in flight fails temporarily.
    pub fn timeout(&mut self) -> Vec<Event> {
        self.abort("timeout")
    }

    /// The driver gives up for a reason of its own (a read or write
    /// error, the message file unreadable mid-body): everything in flight
    /// fails temporarily, with `why` in the reply.
    pub fn abort(&mut self, why: &str) -> Vec<Event> {
        let mut ev = Vec::new();
        self.fail(why, None, false, &mut ev);
        ev
    }

    /// The connection closed (or the TLS handshake failed).
    pub fn disconnected(&mut self) -> Vec<Event> {
        let mut ev = Vec::new();
        if self.expect.front() == Some(&Expect::Quit) {
            self.closed = true;
            ev.push(Event::Close);
        } else {
            self.fail("connection closed by the server", None, false, &mut ev);
        }
        ev
    }

    /// What the server offers (as of its last EHLO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The server answered EHLO (not only HELO).
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// The connection is encrypted.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// `Close` was given: nothing more will happen.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn send(&mut self, line: Vec<u8>, exp: Expect, ev: &mut Vec<Event>) {
        self.expect.push_back(exp);
        ev.push(Event::Send(line));
    }

    fn send_ehlo(&mut self, ev: &mut Vec<Event>) {
        let verb = if self.cfg.lmtp { "LHLO" } else { "EHLO" };
        let line = format!("{verb} {}\r\n", self.cfg.helo).into_bytes();
        self.send(line, Expect::Ehlo, ev);
    }

    fn on_reply(&mut self, exp: Expect, r: Reply, ev: &mut Vec<Event>) {
        if exp == Expect::Quit {
            self.closed = true;
            ev.push(Event::Close);
            return;
        }
        if r.code == 421 {
            // RFC 5321 3.8: the server is closing the connection.
            let why = format!("server closing the session: {r}");
            return self.fail(&why, Some(r), false, ev);
        }
        match exp {
            Expect::Banner if r.code == 220 => self.send_ehlo(ev),
            Expect::Banner => self.fail(&format!("banner: {r}"), Some(r), true, ev),
            Expect::Ehlo if r.is_positive() => {
                self.esmtp = true;
                self.caps = Capabilities::from_ehlo(&r);
                self.greeted(ev);
            }
            // LMTP has no HELO to fall back to.
            Expect::Ehlo if r.is_permanent() && !self.cfg.lmtp => {
                let line = format!("HELO {}\r\n", self.cfg.helo).into_bytes();
                self.send(line, Expect::Helo, ev);
            }
            Expect::Helo if r.is_positive() => {
                self.caps = Capabilities::default();
                self.greeted(ev);
            }
            Expect::Ehlo | Expect::Helo => self.fail(&format!("greeting: {r}"), Some(r), true, ev),
            Expect::StartTls if r.code == 220 => {
                // `input` gives `StartTls` once no byte follows the 220.
                self.handshake = true;
            }
            // Opportunistic TLS goes on in the clear after a 4xx or 5xx;
            // any other reply is not a refusal but nonsense.
            Expect::StartTls
                if self.cfg.tls == TlsPolicy::Required
                    || !(r.is_temporary() || r.is_permanent()) =>
            {
                self.fail(&format!("STARTTLS refused: {r}"), Some(r), true, ev)
            }
            Expect::StartTls => {
                self.tls_refused = true;
                self.greeted(ev);
            }
            Expect::AuthLoginUser | Expect::AuthLoginPass if r.code == 334 => {
                let Some(c) = &self.cfg.auth else {
                    unreachable!("AUTH sent without credentials")
                };
                let (data, next) = if exp == Expect::AuthLoginUser {
                    (base64(c.user.as_bytes()), Expect::AuthLoginPass)
                } else {
                    (base64(&c.password.0), Expect::AuthDone)
                };
                self.send(format!("{data}\r\n").into_bytes(), next, ev);
            }
            Expect::AuthDone if r.code == 235 => self.set_ready(ev),
            Expect::AuthLoginUser | Expect::AuthLoginPass | Expect::AuthDone => {
                self.fail(&format!("authentication failed: {r}"), Some(r), true, ev)
            }
            Expect::Rset if r.is_positive() => self.tx_next(ev),
            Expect::Rset => self.fail(&format!("RSET: {r}"), Some(r), true, ev),
            Expect::Mail | Expect::Rcpt(_) | Expect::Data | Expect::Dot | Expect::LmtpDot(_) => {
                self.tx_reply(exp, r, ev)
            }
            Expect::Quit => unreachable!("handled above"),
        }
    }

    /// EHLO or HELO accepted (or STARTTLS refused): TLS, then AUTH.
    fn greeted(&mut self, ev: &mut Vec<Event>) {
        if !self.tls_active {
            if self.caps.starttls && self.cfg.tls != TlsPolicy::Never && !self.tls_refused {
                return self.send(b"STARTTLS\r\n".to_vec(), Expect::StartTls, ev);
            }
            if self.cfg.tls == TlsPolicy::Required {
                let why = "TLS required but the server does not offer STARTTLS";
                return self.fail(why, None, true, ev);
            }
        }
        let Some(c) = &self.cfg.auth else {
            return self.set_ready(ev);
        };
        if !self.tls_active {
            return self.fail("refusing to send credentials without TLS", None, true, ev);
        }
        if self.caps.auth_plain {
            let line = format!("AUTH PLAIN {}\r\n", plain(&c.user, &c.password.0));
            self.send(line.into_bytes(), Expect::AuthDone, ev);
        } else if self.caps.auth_login {
            self.send(b"AUTH LOGIN\r\n".to_vec(), Expect::AuthLoginUser, ev);
        } else {
            self.fail("the server offers no AUTH PLAIN or LOGIN", None, true, ev);
        }
    }

    fn set_ready(&mut self, ev: &mut Vec<Event>) {
        self.ready = true;
        self.pump(ev);
    }

    /// With nothing in flight: start the next message, or QUIT, or say
    /// `Idle`.
    fn pump(&mut self, ev: &mut Vec<Event>) {
        while self.ready && !self.closed && self.tx.is_none() && self.expect.is_empty() {
            if let Some(env) = self.queue.pop_front() {
                self.idle_told = false;
                // A message refused before anything is sent leaves the
                // session idle: go on with the next one.
                self.start_tx(env, ev);
            } else if self.quit_wanted {
                self.send(b"QUIT\r\n".to_vec(), Expect::Quit, ev);
            } else {
                if !self.idle_told {
                    self.idle_told = true;
                    ev.push(Event::Idle);
                }
                return;
            }
        }
    }

    /// End the session: every recipient without a final answer fails
    /// temporarily with `reply` (or a local 421 with `why`). With `quit`,
    /// the session is at a command boundary and QUIT is sent as a
    /// courtesy, without waiting for its reply.
    fn fail(&mut self, why: &str, reply: Option<Reply>, quit: bool, ev: &mut Vec<Event>) {
        if self.closed {
            return;
        }
        self.closed = true;
        let reply = reply.unwrap_or_else(|| Reply::local(421, &format!("4.4.0 {why}")));
        if let Some(tx) = self.tx.take() {
            ev.push(tx.abort(&reply));
        }
        for env in self.queue.drain(..) {
            ev.push(Event::Done {
                id: env.id,
                outcomes: vec![Outcome::TempFail(reply.clone()); env.rcpts.len()],
            });
        }
        if quit && !self.handshake {
            ev.push(Event::Send(b"QUIT\r\n".to_vec()));
        }
        self.expect.clear();
        ev.push(Event::Error(why.to_string()));
        ev.push(Event::Close);
    }
}
