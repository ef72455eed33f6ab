//! What the expansion ([`super::expand`]) asks of lka: the match rules for
//! addresses it produces, table lookups, users, `:include:` files and
//! `~/.forward`, for one recipient of one session.
//!
//! Users come from the action's `userbase` table or from the system's
//! (getpwnam: lka reads /etc/passwd and /etc/group, unveiled read-only).
//! `:include:` files are read here, so they must live where lka may read
//! (/etc/mail, as aliases files do). `~/.forward` is not read yet: lka
//! cannot open users' homes, and the delivery runner, which can, does not
//! answer lka yet; until it does, no `.forward` is followed.

#![forbid(unsafe_code)]

use super::aliases;
use super::expand::{Failure, Resolver, UserInfo};
use super::forward::ForwardError;
use super::policy::{self, Decision};
use super::Lka;
use crate::config::ast::{Action, TableRef};
use crate::smtp::address::Mailbox;
use std::path::{Path, PathBuf};

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

    fn forward(&self, _user: &UserInfo) -> Result<Option<String>, ForwardError> {
        Ok(None)
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
