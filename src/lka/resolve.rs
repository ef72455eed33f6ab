//! What the expansion ([`super::expand`]) asks of lka: the match rules for
//! addresses it produces, table lookups, users, `:include:` files and
//! `~/.forward`, for one recipient of one session.
//!
//! Users come from the action's `userbase` table or from the system's
//! (getpwnam: lka reads /etc/passwd and /etc/group, unveiled read-only).
//! `:include:` files are read here, so they must live where lka may read
//! (/etc/mail, as aliases files do). `~/.forward` is read by the delivery
//! runner, as root, with every check of [`super::forward`]: lka cannot
//! open users' homes. lka asks the runner over a channel of their own
//! (the parent made it at start) and waits for the answer
//! ([`ForwardClient`]), as OpenSMTPD's lka asks its parent.

#![forbid(unsafe_code)]

use super::aliases;
use super::expand::{Failure, Resolver, UserInfo};
use super::forward::ForwardError;
use super::policy::{self, Decision};
use super::Lka;
use crate::config::ast::{Action, TableRef};
use crate::ipc::msg::{ForwardReply, ForwardRequest, FromRunner, ToRunner};
use crate::ipc::Channel;
use crate::proc::Role;
use crate::smtp::address::Mailbox;
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The resolver for one recipient.
pub struct LkaResolver<'a> {
    pub lka: &'a Lka,
    pub session: &'a policy::SessionInfo,
    pub mail_from: Option<&'a Mailbox>,
}

impl Resolver for LkaResolver<'_> {
    fn route(&self, addr: &Mailbox) -> Result<&Action, Failure> {
        match self
            .lka
            .rules
            .decide_expanded(self.session, self.mail_from, addr)
        {
            Decision::Accept { action } => self
                .lka
                .view
                .actions
                .iter()
                .find(|a| a.name == action)
                .ok_or_else(Failure::tempfail),
            Decision::Reject {
                code,
                enhanced,
                text,
            } => Err(Failure {
                code,
                enhanced,
                text,
            }),
        }
    }

    fn lookup(&self, table: &TableRef, key: &str) -> Result<Option<String>, String> {
        let t = self.lka.tables.resolve(table).map_err(|e| e.to_string())?;
        t.get(key)
            .map(|v| v.map(str::to_string))
            .map_err(|e| e.to_string())
    }

    fn userinfo(
        &self,
        userbase: Option<&TableRef>,
        user: &str,
    ) -> Result<Option<UserInfo>, String> {
        if let Some(tref) = userbase {
            let t = self.lka.tables.resolve(tref).map_err(|e| e.to_string())?;
            return match t.lookup_userinfo(user).map_err(|e| e.to_string())? {
                None => Ok(None),
                Some(v) => UserInfo::from_userbase(user, v)
                    .map(Some)
                    .ok_or_else(|| format!("userbase entry of {user} is not uid:gid:home")),
            };
        }
        system_user(user)
    }

    fn include(&self, path: &str) -> Result<String, String> {
        aliases::read_include_file(Path::new(path))
    }

    fn forward(&self, user: &UserInfo) -> Result<Option<String>, ForwardError> {
        match &self.lka.forward {
            Some(client) => client.read(user),
            None => Ok(None),
        }
    }
}

/// How long lka waits for a `~/.forward` (a hung home directory defers
/// the recipient rather than lka).
const FORWARD_WAIT: Duration = Duration::from_secs(5);

/// lka's synchronous line to the delivery runner for `~/.forward`: one
/// question at a time, answered in order (a late answer to a question
/// that timed out is skipped by the next question's wait).
pub struct ForwardClient {
    chan: RefCell<Channel>,
}

impl ForwardClient {
    pub fn new(fd: OwnedFd) -> std::io::Result<ForwardClient> {
        Ok(ForwardClient {
            chan: RefCell::new(Channel::new(fd, Role::Delivery)?),
        })
    }

    fn read(&self, user: &UserInfo) -> Result<Option<String>, ForwardError> {
        let io = |error: String| ForwardError::Io {
            what: "asking for ~/.forward",
            error,
            temporary: true,
        };
        let req = ForwardRequest {
            user: user.name.clone(),
            uid: user.uid,
            home: user.home.to_string_lossy().into_owned(),
        };
        let mut chan = self.chan.borrow_mut();
        chan.send(&ToRunner::ReadForward(req), Vec::new())
            .map_err(|e| io(e.to_string()))?;
        let deadline = Instant::now() + FORWARD_WAIT;
        chan.flush_blocking(FORWARD_WAIT)
            .map_err(|e| io(e.to_string()))?;
        // Answers come in order: one left over from a wait that timed
        // out is this question's predecessor's; only the last counts.
        let mut got = chan
            .recv_until::<FromRunner>(deadline)
            .map_err(|e| io(e.to_string()))?;
        while let Ok(Some(next)) = chan.recv::<FromRunner>() {
            got = next;
        }
        match got.msg {
            FromRunner::Forward(ForwardReply::Missing) => Ok(None),
            FromRunner::Forward(ForwardReply::Content(text)) => Ok(Some(text)),
            FromRunner::Forward(ForwardReply::Refused { reason, temporary }) => {
                Err(ForwardError::Io {
                    what: "",
                    error: reason,
                    temporary,
                })
            }
            other => Err(io(format!(
                "unexpected {} from the parent",
                crate::ipc::msg::Message::name(&other)
            ))),
        }
    }
}

/// A user of the system (OpenSMTPD's default userbase, getpwnam).
pub fn system_user(user: &str) -> Result<Option<UserInfo>, String> {
    // getpwnam knows names, not patterns: refuse what no login has.
    if user.is_empty() || user.len() > 255 || user.contains(['/', '\0', ':']) {
        return Ok(None);
    }
    match crate::sys::privdrop::lookup(user) {
        Ok(a) => Ok(Some(UserInfo {
            name: a.name,
            uid: a.uid,
            gid: a.gid,
            home: PathBuf::from(a.home),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("user {user}: {e}")),
    }
}
