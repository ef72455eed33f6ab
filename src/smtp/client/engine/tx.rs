//! The transaction: RSET (on a reused connection), MAIL, one RCPT per
//! recipient, DATA, the body, the final reply.
//!
//! With PIPELINING, MAIL, every RCPT and DATA go out in one write and
//! their replies are matched in order; without it, one command per reply,
//! and the transaction stops early when MAIL is refused or no recipient
//! was accepted. A refused MAIL gives its reply to every recipient (the
//! replies to the pipelined RCPTs after it mean nothing). A 354 with no
//! recipient accepted (only possible when pipelining) is answered with an
//! empty body, as RFC 2920 3.1 says. In LMTP each accepted recipient
//! gets its own reply after the dot (RFC 2033 4.2).

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use super::super::command::{self, path, token};
use super::super::{Envelope, Event, Outcome, Reply};
use super::{Client, Expect};

/// The message being sent.
#[derive(Debug)]
pub(super) struct Tx {
    env: Envelope,
    /// Final answers, per recipient; `None` until known.
    outcomes: Vec<Option<Outcome>>,
    /// Recipients whose RCPT was accepted: the DATA replies are theirs.
    accepted: Vec<bool>,
    /// MAIL was refused with this reply.
    mail_failed: bool,
    /// Commands not sent yet (without PIPELINING).
    rest: VecDeque<(Vec<u8>, Expect)>,
    /// Waiting for the driver's `body_done`.
    pub(super) in_body: bool,
}

impl Tx {
    /// The `Done` event for a transaction cut short: every recipient
    /// without a final answer fails temporarily with `reply`.
    pub(super) fn abort(self, reply: &Reply) -> Event {
        let outcomes = self
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::TempFail(reply.clone())))
            .collect();
        Event::Done {
            id: self.env.id,
            outcomes,
        }
    }

    fn any_accepted(&self) -> bool {
        self.accepted.iter().any(|&a| a)
    }

    /// The recipients whose RCPT was accepted, in order.
    pub(super) fn accepted_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.accepted
            .iter()
            .enumerate()
            .filter(|(_, &a)| a)
            .map(|(i, _)| i)
    }

    /// Give `r` to every recipient still without an answer (after a
    /// refused MAIL) or to every accepted one (the DATA replies).
    fn settle(&mut self, r: &Reply, only_accepted: bool) {
        for (o, &acc) in self.outcomes.iter_mut().zip(&self.accepted) {
            if o.is_none() && (acc || !only_accepted) {
                *o = Some(outcome(r));
            }
        }
    }
}

/// A reply as a recipient's fate.
fn outcome(r: &Reply) -> Outcome {
    if r.is_positive() {
        Outcome::Ok(r.clone())
    } else if r.is_temporary() {
        Outcome::TempFail(r.clone())
    } else {
        Outcome::PermFail(r.clone())
    }
}

/// Why the server cannot take this message at all, as a local reply.
fn unsendable(c: &Client, env: &Envelope, utf8: bool) -> Option<Reply> {
    if env.body_8bit && !c.caps.eightbitmime {
        return Some(Reply::local(
            554,
            "5.6.3 the server does not support 8BITMIME",
        ));
    }
    if utf8 && !c.caps.smtputf8 {
        return Some(Reply::local(
            553,
            "5.6.7 the server does not support SMTPUTF8",
        ));
    }
    match c.caps.size {
        Some(max) if max > 0 && env.size > max => {
            Some(Reply::local(552, "5.3.4 message too big for the server"))
        }
        _ => None,
    }
}

impl Client {
    /// Start sending `env` (RSET first on a reused connection), or give
    /// its `Done` at once if it cannot be sent here.
    pub(super) fn start_tx(&mut self, env: Envelope, ev: &mut Vec<Event>) {
        let n = env.rcpts.len();
        let utf8 = env.smtputf8
            || env
                .mail_from
                .as_ref()
                .is_some_and(|m| !m.to_string().is_ascii())
            || env.rcpts.iter().any(|r| !r.addr.to_string().is_ascii());
        let refuse = unsendable(self, &env, utf8).or_else(|| match path(&env.mail_from) {
            Some(_) => None,
            None => Some(Reply::local(553, "5.1.7 invalid sender address")),
        });
        if let Some(r) = refuse {
            let outcomes = vec![Outcome::PermFail(r); n];
            return ev.push(Event::Done {
                id: env.id,
                outcomes,
            });
        }
        let from = path(&env.mail_from).unwrap_or_default();
        let mut rest = VecDeque::new();
        rest.push_back((command::mail(&env, &from, utf8, &self.caps), Expect::Mail));
        let mut outcomes = vec![None; n];
        for (i, r) in env.rcpts.iter().enumerate() {
            let to = if self.cfg.rcpt_local_part {
                token(r.addr.local.clone())
            } else {
                path(&Some(r.addr.clone()))
            };
            match to {
                Some(to) => rest.push_back((command::rcpt(r, &to, &self.caps), Expect::Rcpt(i))),
                None => {
                    let r = Reply::local(553, "5.1.3 invalid recipient address");
                    outcomes[i] = Some(Outcome::PermFail(r));
                }
            }
        }
        if rest.len() == 1 {
            // No recipient left to send to.
            let outcomes = outcomes.into_iter().flatten().collect();
            return ev.push(Event::Done {
                id: env.id,
                outcomes,
            });
        }
        rest.push_back((b"DATA\r\n".to_vec(), Expect::Data));
        self.tx = Some(Tx {
            env,
            outcomes,
            accepted: vec![false; n],
            mail_failed: false,
            rest,
            in_body: false,
        });
        if std::mem::replace(&mut self.used, true) {
            self.send(b"RSET\r\n".to_vec(), Expect::Rset, ev);
        } else {
            self.tx_next(ev);
        }
    }

    /// Send what comes next in the transaction: everything left with
    /// PIPELINING, else one command; or end it early.
    pub(super) fn tx_next(&mut self, ev: &mut Vec<Event>) {
        let Some(tx) = self.tx.as_mut() else { return };
        let early = tx.mail_failed
            || (tx.rest.front().map(|c| c.1) == Some(Expect::Data) && !tx.any_accepted());
        if early || tx.rest.is_empty() {
            return self.tx_finish(ev);
        }
        let take = if self.caps.pipelining && self.cfg.pipelining {
            tx.rest.len()
        } else {
            1
        };
        let mut out = Vec::new();
        for (line, exp) in tx.rest.drain(..take) {
            out.extend_from_slice(&line);
            self.expect.push_back(exp);
        }
        ev.push(Event::Send(out));
    }

    /// A reply to MAIL, RCPT, DATA or the dot.
    pub(super) fn tx_reply(&mut self, exp: Expect, r: Reply, ev: &mut Vec<Event>) {
        let Some(tx) = self.tx.as_mut() else {
            unreachable!("transaction replies are expected only during a transaction")
        };
        let intermediate = r.code / 100 == 3;
        match exp {
            Expect::Data if r.code == 354 => {
                if tx.any_accepted() {
                    tx.in_body = true;
                    ev.push(Event::SendBody { id: tx.env.id });
                } else {
                    self.send(b".\r\n".to_vec(), Expect::Dot, ev);
                }
                return;
            }
            _ if intermediate || (exp == Expect::Data && r.is_positive()) => {
                let why = format!("unexpected reply: {r}");
                return self.fail(&why, None, false, ev);
            }
            Expect::Mail if !r.is_positive() => {
                tx.mail_failed = true;
                tx.settle(&r, false);
            }
            Expect::Mail => {}
            Expect::Rcpt(_) if tx.mail_failed => {}
            Expect::Rcpt(i) if r.is_positive() => tx.accepted[i] = true,
            Expect::Rcpt(i) => tx.outcomes[i] = Some(outcome(&r)),
            Expect::Data | Expect::Dot => {
                tx.settle(&r, true);
                return self.tx_finish(ev);
            }
            Expect::LmtpDot(i) => {
                tx.outcomes[i] = Some(outcome(&r));
                if !self.expect.iter().any(|e| matches!(e, Expect::LmtpDot(_))) {
                    return self.tx_finish(ev);
                }
                return;
            }
            _ => unreachable!("not a transaction reply"),
        }
        if self.expect.is_empty() {
            self.tx_next(ev);
        }
    }

    /// The transaction is over: give its outcomes, go on.
    fn tx_finish(&mut self, ev: &mut Vec<Event>) {
        let Some(tx) = self.tx.take() else { return };
        // Every recipient has an answer by now; the fallback only keeps
        // a bug here from losing a message.
        ev.push(tx.abort(&Reply::local(451, "4.3.0 no answer for this recipient")));
        self.pump(ev);
    }
}
