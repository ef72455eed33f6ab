//! The mail transaction: MAIL, RCPT, DATA, BDAT, the message readers'
//! results and the commit.

use super::{body_events, Mode, Refusal, Server, Tx, Wait, BAD_SEQUENCE, NEED_TLS, NO_ARGS};
use crate::smtp::server::body::Reader;
use crate::smtp::server::command::{self, Body};
use crate::smtp::server::{AbortReason, AuthPolicy, Event};

impl Server {
    pub(super) fn mail(&mut self, args: &[u8], out: &mut Vec<Event>) {
        self.mail_refused = true;
        self.stray = 0;
        if self.tls_needed() {
            return self.fail(out, NEED_TLS);
        }
        if self.helo.is_none() || self.tx.is_some() {
            return self.fail(out, BAD_SEQUENCE);
        }
        if self.cfg.auth == AuthPolicy::Required && self.auth_user.is_none() {
            return self.fail(out, "530 5.7.0 Authentication required");
        }
        if self.mails >= self.cfg.max_mails {
            return self.fail(out, "452 4.5.3 Too many messages sent");
        }
        match command::parse_mail(args, &self.offer()) {
            Err(text) => self.fail(out, text),
            Ok((path, params)) => {
                self.wait = Some(Wait::Mail {
                    utf8: params.smtputf8,
                    binary: params.body == Some(Body::BinaryMime),
                });
                out.push(Event::NeedMail { path, params });
            }
        }
    }

    pub(super) fn mail_answer(
        &mut self,
        utf8: bool,
        binary: bool,
        r: Result<(), String>,
        out: &mut Vec<Event>,
    ) {
        match r {
            Ok(()) => {
                self.tx = Some(Tx {
                    utf8,
                    binary,
                    tried: 0,
                    overshoot: 0,
                    rcpts: 0,
                    chunked: false,
                    body: None,
                });
                self.mails += 1;
                self.mail_refused = false;
                self.reply(out, "250 2.0.0 Ok");
            }
            Err(text) => self.glue_refusal(out, &text, true),
        }
    }

    pub(super) fn rcpt(&mut self, args: &[u8], out: &mut Vec<Event>) {
        if self.tls_needed() {
            return self.fail(out, NEED_TLS);
        }
        let offer = self.offer();
        let max = self.cfg.max_rcpt;
        let Some(tx) = self.tx.as_mut() else {
            let r = self.no_tx();
            return self.refusal(out, r);
        };
        if tx.chunked {
            return self.fail(out, BAD_SEQUENCE);
        }
        if tx.tried >= max {
            // Like Postfix's recipient overshoot: a big list is not abuse.
            tx.overshoot += 1;
            let text = "452 4.5.3 Too many recipients";
            return match tx.overshoot > max {
                true => self.fail(out, text),
                false => self.reply(out, text),
            };
        }
        match command::parse_rcpt(args, &offer, tx.utf8) {
            Err(text) => self.fail(out, text),
            Ok((path, params)) => {
                tx.tried += 1;
                self.wait = Some(Wait::Rcpt);
                out.push(Event::NeedRcpt { path, params });
            }
        }
    }

    pub(super) fn rcpt_answer(&mut self, r: Result<(), String>, out: &mut Vec<Event>) {
        match (r, self.tx.as_mut()) {
            (Ok(()), Some(tx)) => {
                tx.rcpts += 1;
                self.reply(out, "250 2.1.5 Destination address valid: Recipient ok");
            }
            (Ok(()), None) => self.reply(out, "451 4.3.0 Temporary failure"),
            // Refused recipients are bounded by max_rcpt, not errors.
            (Err(text), _) => self.glue_refusal(out, &text, false),
        }
    }

    pub(super) fn data(&mut self, args: &[u8], out: &mut Vec<Event>) {
        if !args.is_empty() {
            return self.fail(out, NO_ARGS);
        }
        if self.tls_needed() {
            return self.fail(out, NEED_TLS);
        }
        let Some(tx) = self.tx.as_ref() else {
            let r = self.no_tx();
            return self.refusal(out, r);
        };
        if tx.chunked {
            return self.fail(out, "503 5.5.1 Invalid command: DATA after BDAT");
        }
        if tx.binary {
            return self.fail(out, "503 5.5.1 Invalid command: BINARYMIME requires BDAT");
        }
        if tx.rcpts == 0 {
            return self.fail(out, "503 5.5.1 Invalid command: No recipient specified");
        }
        self.wait = Some(Wait::Data);
        out.push(Event::NeedData);
    }

    pub(super) fn data_answer(&mut self, r: Result<(), String>, out: &mut Vec<Event>) {
        let (max_size, max_line) = (self.cfg.max_message_size, self.cfg.max_line);
        match (r, self.tx.as_mut()) {
            (Ok(()), Some(tx)) => {
                tx.body = Some(Reader::dot(max_size, max_line));
                self.mode = Mode::Data;
                self.reply(out, "354 Enter mail, end with \".\" on a line by itself");
            }
            (Ok(()), None) => self.reply(out, "451 4.3.0 Temporary failure"),
            // The transaction stays: the client may try DATA again.
            (Err(text), _) => self.glue_refusal(out, &text, true),
        }
    }

    pub(super) fn bdat(&mut self, args: &[u8], out: &mut Vec<Event>) {
        let Some((size, last)) = command::parse_bdat(args) else {
            return self.fail(out, "501 5.5.4 Syntax: BDAT size [LAST]");
        };
        let refuse = |reply: &str, counts: bool| {
            Some(Refusal {
                reply: reply.into(),
                counts,
            })
        };
        let max = self.cfg.max_message_size;
        // (recipients, bytes stored so far if the message file is open)
        let state = self
            .tx
            .as_ref()
            .map(|tx| (tx.rcpts, tx.body.as_ref().map(Reader::size)));
        let refuse = match state {
            _ if self.tls_needed() => refuse(NEED_TLS, true),
            None => Some(self.no_tx()),
            Some((0, _)) => refuse("503 5.5.1 Invalid command: No recipient specified", true),
            Some((_, stored)) if stored.unwrap_or(0).saturating_add(size) > max => {
                self.reset_tx(AbortReason::TooBig, out);
                refuse("552 5.3.4 Message too big for system", false)
            }
            Some((_, None)) => {
                // The first chunk: the glue opens the message file first.
                if let Some(tx) = self.tx.as_mut() {
                    tx.chunked = true;
                }
                self.wait = Some(Wait::Bdat { size, last });
                out.push(Event::NeedData);
                return;
            }
            Some((_, Some(_))) => None,
        };
        self.mode = Mode::Chunk {
            size,
            left: size,
            last,
            refuse,
        };
    }

    pub(super) fn bdat_answer(
        &mut self,
        size: u64,
        last: bool,
        r: Result<(), String>,
        out: &mut Vec<Event>,
    ) {
        let (max_size, max_line) = (self.cfg.max_message_size, self.cfg.max_line);
        let refuse = match (r, self.tx.as_mut()) {
            (Ok(()), Some(tx)) => {
                tx.body = Some(Reader::chunked(tx.binary, max_size, max_line));
                None
            }
            (r, _) => {
                // Nothing is stored for this message: it is over, and this
                // chunk is read and dropped.
                self.reset_tx(AbortReason::Reset, out);
                let reply = r
                    .err()
                    .unwrap_or_else(|| "451 4.3.0 Temporary failure".into());
                Some(Refusal {
                    reply,
                    counts: true,
                })
            }
        };
        self.mode = Mode::Chunk {
            size,
            left: size,
            last,
            refuse,
        };
    }

    pub(super) fn chunk_end(
        &mut self,
        size: u64,
        last: bool,
        refuse: Option<Refusal>,
        out: &mut Vec<Event>,
    ) {
        if let Some(r) = refuse {
            return self.refusal(out, r);
        }
        let Some(reader) = self.tx.as_mut().and_then(|t| t.body.as_mut()) else {
            return self.reply(out, "451 4.3.0 Temporary failure");
        };
        if last {
            let mut data = Vec::new();
            reader.finish_chunks(&mut data);
            body_events(reader, data, out);
            return self.message_end(out);
        }
        if let Some(e) = reader.error() {
            return self.refuse_message(e, out);
        }
        self.reply(out, &format!("250 2.0.0 {size} octets received"));
    }

    /// The final dot, or the last chunk: commit or refuse.
    pub(super) fn message_end(&mut self, out: &mut Vec<Event>) {
        let Some(reader) = self.tx.as_mut().and_then(|t| t.body.take()) else {
            return self.reply(out, "451 4.3.0 Temporary failure");
        };
        if let Some(e) = reader.error() {
            return self.refuse_message(e, out);
        }
        // The transaction is the glue's to commit now.
        self.tx = None;
        self.wait = Some(Wait::Commit);
        out.push(Event::DataEnd {
            size: reader.size(),
        });
    }

    /// A message broke a limit: it was discarded when that happened
    /// (`DataAbort`); now the transaction ends with the reason.
    pub(super) fn refuse_message(&mut self, e: AbortReason, out: &mut Vec<Event>) {
        if let Some(tx) = self.tx.as_mut() {
            tx.body = None;
        }
        self.reset_tx(e, out);
        let text = match e {
            AbortReason::TooBig => "552 5.3.4 Message too big for system".to_string(),
            AbortReason::Loop => {
                "554 5.4.6 Routing loop detected: too many Received headers".into()
            }
            AbortReason::BareNewline => {
                "550 5.6.0 Bare CR or LF not allowed in message, use CRLF".into()
            }
            AbortReason::LineTooLong => format!(
                "550 5.6.0 Line too long in message (limit {} bytes)",
                self.cfg.max_line
            ),
            AbortReason::Reset | AbortReason::SessionEnd => "451 4.3.0 Temporary failure".into(),
        };
        self.reply(out, &text);
    }

    pub(super) fn commit_answer(&mut self, r: Result<String, String>, out: &mut Vec<Event>) {
        match r {
            Ok(id) => {
                let id: String = id.chars().filter(char::is_ascii_graphic).take(64).collect();
                self.reply(
                    out,
                    &format!("250 2.0.0 {id} Message accepted for delivery"),
                );
            }
            Err(text) => self.glue_refusal(out, &text, false),
        }
    }
}
