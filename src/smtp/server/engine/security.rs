//! STARTTLS and AUTH.

use super::{Mode, Server, Wait, BAD_SEQUENCE, NEED_TLS, NO_ARGS};
use crate::log::escape;
use crate::smtp::server::auth::{self, Decoded};
use crate::smtp::server::{AuthMech, AuthPolicy, Event, Password};

impl Server {
    pub(super) fn starttls(&mut self, args: &[u8], out: &mut Vec<Event>) {
        if self.helo.is_none() || self.tx.is_some() {
            return self.fail(out, BAD_SEQUENCE);
        }
        if !self.cfg.tls_available {
            return self.fail(out, "503 5.5.1 Invalid command: Command not supported");
        }
        if self.cfg.tls_active {
            return self.fail(out, "503 5.5.1 Invalid command: Channel already secured");
        }
        if !args.is_empty() {
            return self.fail(out, NO_ARGS);
        }
        self.reply(out, "220 2.0.0 Ready to start TLS");
        out.push(Event::StartTls);
        let extra = self.buf.len() - self.pos;
        if extra > 0 {
            // CVE-2011-0411: bytes sent with STARTTLS are not TLS's.
            out.push(Event::Log(format!(
                "bad-input reason=\"pipelined after STARTTLS\" bytes={extra}"
            )));
        }
        self.discard_input();
        self.mode = Mode::Tls;
    }

    pub(super) fn auth(&mut self, args: &[u8], out: &mut Vec<Event>) {
        if self.tls_needed() {
            return self.fail(out, NEED_TLS);
        }
        if self.helo.is_none() || self.tx.is_some() {
            return self.fail(out, BAD_SEQUENCE);
        }
        if self.auth_user.is_some() {
            return self.fail(out, "503 5.5.1 Invalid command: Already authenticated");
        }
        if self.cfg.auth == AuthPolicy::None {
            return self.fail(out, "503 5.5.1 Invalid command: Command not supported");
        }
        if !self.auth_offered() {
            return self.fail(
                out,
                "538 5.7.11 Encryption required for requested authentication mechanism",
            );
        }
        let (mech, initial) = match args.iter().position(|&b| b == b' ') {
            Some(i) => (&args[..i], Some(command_trim(&args[i + 1..]))),
            None => (args, None),
        };
        if mech.is_empty() {
            return self.fail(out, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        }
        if mech.eq_ignore_ascii_case(b"PLAIN") {
            match initial {
                Some(resp) => self.auth_plain(resp, out),
                None => {
                    self.mode = Mode::AuthPlain;
                    self.reply(out, "334 ");
                }
            }
        } else if mech.eq_ignore_ascii_case(b"LOGIN") {
            match initial {
                Some(user) => self.auth_login_user(user, out),
                None => {
                    self.mode = Mode::AuthLoginUser;
                    self.reply(out, "334 VXNlcm5hbWU6");
                }
            }
        } else {
            self.fail(out, "504 5.5.4 AUTH mechanism not supported");
        }
    }

    pub(super) fn auth_plain(&mut self, line: &[u8], out: &mut Vec<Event>) {
        self.cmd = "AUTH PLAIN (...)".into();
        match auth::plain(line) {
            Decoded::Ok((user, password)) => self.need_auth(AuthMech::Plain, user, password, out),
            Decoded::Cancelled => self.fail(out, "501 5.7.0 Authentication cancelled"),
            Decoded::Bad => self.fail(out, "501 5.5.2 Syntax error in authentication response"),
        }
    }

    pub(super) fn auth_login_user(&mut self, line: &[u8], out: &mut Vec<Event>) {
        self.cmd = "AUTH LOGIN (username)".into();
        match auth::login_user(line) {
            Decoded::Ok(user) => {
                self.mode = Mode::AuthLoginPass(user);
                self.reply(out, "334 UGFzc3dvcmQ6");
            }
            Decoded::Cancelled => self.fail(out, "501 5.7.0 Authentication cancelled"),
            Decoded::Bad => self.fail(out, "501 5.5.2 Syntax error in authentication response"),
        }
    }

    pub(super) fn auth_login_pass(&mut self, user: String, line: &[u8], out: &mut Vec<Event>) {
        self.cmd = "AUTH LOGIN (password)".into();
        match auth::login_password(line) {
            Decoded::Ok(password) => self.need_auth(AuthMech::Login, user, password, out),
            Decoded::Cancelled => self.fail(out, "501 5.7.0 Authentication cancelled"),
            Decoded::Bad => self.fail(out, "501 5.5.2 Syntax error in authentication response"),
        }
    }

    pub(super) fn need_auth(
        &mut self,
        mech: AuthMech,
        user: String,
        password: Vec<u8>,
        out: &mut Vec<Event>,
    ) {
        self.wait = Some(Wait::Auth { user: user.clone() });
        out.push(Event::NeedAuth {
            mech,
            user,
            password: Password(password),
        });
    }

    pub(super) fn auth_answer(&mut self, user: String, ok: bool, out: &mut Vec<Event>) {
        let result = if ok { "ok" } else { "permfail" };
        // Unquoted, as OpenSMTPD writes it (strnvis'd): escaped, and
        // without spaces, it stays one field.
        let shown = escape(user.as_bytes()).replace(' ', "\\x20");
        out.push(Event::Log(format!(
            "authentication user={shown} result={result}"
        )));
        if ok {
            self.auth_user = Some(user);
            self.reply(out, "235 2.0.0 Authentication succeeded");
        } else {
            self.fail(out, "535 5.7.8 Authentication failed");
        }
    }
}

fn command_trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    &s[start..]
}
