//! Expansion of an accepted recipient into what is delivered: aliases,
//! virtual mappings, `:include:` files and `~/.forward`, as OpenSMTPD's
//! `lka_expand()` (lka_session.c), `aliases_get()` and
//! `aliases_virtual_get()` (aliases.c), `expand_insert()` (expand.c) and
//! `forwards_get()` (forward.c) do it.
//!
//! The recipient is the root of a tree of nodes, expanded breadth first:
//! - an address is given to the match rules again (the root keeps the
//!   action its rule chose): a relay action relays it; a local action with
//!   a `virtual` table expands it by the table (keys `user+tag@domain`,
//!   `user@domain`, `user+tag`, `user`, `@domain`, `@`, the first found; no
//!   entry refuses the recipient); another local action makes its local
//!   part, lower-cased, a user node;
//! - a user node is looked up in the action's `alias` table (`user+tag`
//!   first, then `user`) or `virtual` table (`user+tag`, then `user`); if
//!   found, its items become children. Otherwise the sub-address is cut
//!   (`joe+box` is user `joe`, sub-address `box`, kept for the delivery),
//!   the user must exist in the `userbase` (or the system's users) or the
//!   recipient is refused ("550 5.1.1 Invalid recipient"), and the user's
//!   `~/.forward` is read, its items becoming children; without one (or
//!   with an empty one) the user gets the mail with the action's method.
//!   `.forward` is not read when a `user` option names another user, nor
//!   for a user listed in their own `.forward` (`joe` or `\joe` in joe's
//!   file): that is joe's own mailbox, not a loop;
//! - `/path` and `|command` are delivered as the user whose `.forward`
//!   named them, or as the daemon's unprivileged user when they come from
//!   an alias (never as root: in root's `.forward` they fail);
//! - `error:NNN text` refuses the recipient with that reply.
//!
//! A node equal to one already in the tree (same kind and value, expanded
//! for the same address, and for files and commands on behalf of the same
//! user: `expand_cmp()`) is dropped, so `a: b` with `b: a` ends; a chain
//! deeper than [`MAX_DEPTH`] (OpenSMTPD's `EXPAND_DEPTH`) refuses the
//! recipient. Any failure stops the whole expansion (one reply for the
//! recipient), and so does an expansion to nothing.
//!
//! `forward-only` actions only relay: a local delivery, a file, a command
//! or an `error:` item in their expansion is a temporary failure, as
//! OpenSMTPD has it. `expand-only` actions deliver only what aliases or a
//! `.forward` name: a user who would get the mail in a mailbox is refused.
//!
//! Replies (OpenSMTPD's texts, with our enhanced codes): "524 5.2.4" /
//! "424 4.2.4 Mailing list expansion problem" for expansion failures,
//! "451 4.3.0 Temporary failure" where OpenSMTPD gives its generic
//! temporary failure, "550 5.1.1 Invalid recipient" for an unknown user.
//!
//! Where we are stricter than OpenSMTPD (A2, fail closed):
//! - an item that does not parse, an `:include:` that cannot be read, or
//!   an `:include:` inside an included file defers the recipient
//!   (OpenSMTPD logs and drops them, and with nothing left may deliver to
//!   a system user named like the alias);
//! - an alias whose value holds no item defers the recipient;
//! - the tree holds at most [`MAX_NODES`] nodes (OpenSMTPD has no bound
//!   outside `.forward`), and a `.forward` at most [`MAX_FORWARD_ITEMS`]
//!   items (OpenSMTPD counts every node of the session there, so that a
//!   large list fails as soon as one member has a `.forward`);
//! - in a forward-only or expand-only action, a user node that would be
//!   delivered locally always fails (OpenSMTPD submits it to the action,
//!   which has no method, when `user` or `\user` skip the `.forward`).
//!
//! Lookups go through a [`Resolver`] so this code opens no file and knows
//! no table backend.

#![forbid(unsafe_code)]

use super::aliases::{self, ErrorReply, Item};
use super::forward::{self, ForwardError};
use crate::config::ast::{Action, Method, TableRef};
use crate::proc::USER_SMTPD;
use crate::smtp::address::Mailbox;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::path::PathBuf;

/// Nodes deeper than this refuse the recipient (lka_session.c's
/// `EXPAND_DEPTH`; the recipient is at depth 0).
pub const MAX_DEPTH: usize = 10;
/// The most nodes one recipient may expand to.
pub const MAX_NODES: usize = 10_000;
/// The most items one `~/.forward` may hold (forward.c's
/// `MAX_EXPAND_NODES`).
pub const MAX_FORWARD_ITEMS: usize = 100;

/// A user who can receive mail: from the system's users or a `userbase`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl UserInfo {
    /// A `userbase` table's value for `name`: `uid:gid:/home/dir` (table(5);
    /// to.c's `text_to_userinfo()`). The directory may hold `:`; it must
    /// be absolute.
    pub fn from_userbase(name: &str, value: &str) -> Option<UserInfo> {
        let mut parts = value.splitn(3, ':');
        let num = |s: Option<&str>| -> Option<u32> {
            let s = s?;
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let uid = num(parts.next())?;
        let gid = num(parts.next())?;
        let home = parts.next()?;
        if !home.starts_with('/') || home.contains('\0') {
            return None;
        }
        Some(UserInfo {
            name: name.to_string(),
            uid,
            gid,
            home: PathBuf::from(home),
        })
    }
}

/// Whose privileges a file or command delivery runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The daemon's unprivileged user (`_smtpd`): items of an alias.
    Daemon,
    /// The user whose `.forward` named the item.
    User(UserInfo),
}

/// One delivery the recipient expanded to. `dest` is the address the
/// delivery was expanded for (the recipient, or an address an alias or
/// `.forward` gave): OpenSMTPD's `dest` of the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expanded {
    /// Deliver to this local user with the action's method; the
    /// sub-address (`box` of `joe+box`) is kept for it.
    User {
        action: String,
        dest: Mailbox,
        user: UserInfo,
        subaddress: Option<String>,
    },
    /// Append the message to this file.
    File {
        action: String,
        dest: Mailbox,
        path: String,
        run_as: RunAs,
    },
    /// Pipe the message to this command.
    Command {
        action: String,
        dest: Mailbox,
        command: String,
        run_as: RunAs,
    },
    /// Relay the message to this address with the action's relay method.
    Relay { action: String, dest: Mailbox },
}

/// Why a recipient is refused or deferred: the reply the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

impl Failure {
    /// "424 4.2.4" or "524 5.2.4 Mailing list expansion problem".
    pub fn expansion(temporary: bool) -> Failure {
        let (code, enhanced) = if temporary {
            (424, "4.2.4")
        } else {
            (524, "5.2.4")
        };
        Failure {
            code,
            enhanced: enhanced.into(),
            text: "Mailing list expansion problem".into(),
        }
    }

    /// "451 4.3.0 Temporary failure".
    pub fn tempfail() -> Failure {
        Failure {
            code: 451,
            enhanced: "4.3.0".into(),
            text: "Temporary failure".into(),
        }
    }

    /// "550 5.1.1 Invalid recipient": no such user.
    pub fn invalid_recipient() -> Failure {
        Failure {
            code: 550,
            enhanced: "5.1.1".into(),
            text: "Invalid recipient".into(),
        }
    }

    /// A 4xx reply: the client should try again later.
    pub fn is_temporary(&self) -> bool {
        self.code < 500
    }
}

impl From<&ErrorReply> for Failure {
    /// An `error:` item's reply; without an enhanced code, X.0.0 (RFC 3463
    /// "other or undefined status").
    fn from(e: &ErrorReply) -> Failure {
        Failure {
            code: e.code,
            enhanced: e
                .enhanced
                .clone()
                .unwrap_or_else(|| format!("{}.0.0", e.code / 100)),
            text: e.text.clone(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// What the expansion needs from the rest of lka.
pub trait Resolver {
    /// The action for an address an expansion produced: the match rules,
    /// evaluated as for an internal envelope (`Ruleset::decide_expanded`),
    /// or the reply that refuses it.
    fn route(&self, addr: &Mailbox) -> Result<&Action, Failure>;
    /// A mapping table's value for `key` (alias and virtual tables); an
    /// error defers the recipient.
    fn lookup(&self, table: &TableRef, key: &str) -> Result<Option<String>, String>;
    /// A user: from `userbase` when the action has one, else the system's
    /// users. `None`: no such user.
    fn userinfo(&self, userbase: Option<&TableRef>, user: &str)
        -> Result<Option<UserInfo>, String>;
    /// The text of an `:include:` file (see `aliases::read_include_file`).
    fn include(&self, path: &str) -> Result<String, String>;
    /// The user's `~/.forward` (see `forward::read_forward`).
    fn forward(&self, user: &UserInfo) -> Result<Option<String>, ForwardError>;
}

/// Settings of the expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `smtp sub-addr-delim`: `+` by default.
    pub subaddr_delim: char,
    /// An insecure `.forward` (a link, writable by others...) refuses the
    /// recipient, as OpenSMTPD does ("524 5.2.4"); with this set it is
    /// logged and ignored, and the user gets the mail in the mailbox.
    pub ignore_insecure_forward: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            subaddr_delim: '+',
            ignore_insecure_forward: false,
        }
    }
}

/// Expand `rcpt`, which the match rules gave to `action`, into its
/// deliveries (never empty), or the reply that refuses it.
pub fn expand<'a, R: Resolver + ?Sized>(
    action: &'a Action,
    rcpt: &Mailbox,
    resolver: &'a R,
    opts: &Options,
) -> Result<Vec<Expanded>, Failure> {
    let mut x = Expander {
        resolver,
        opts,
        nodes: Vec::new(),
        seen: HashSet::new(),
        queue: VecDeque::new(),
        out: Vec::new(),
    };
    x.insert(Kind::Address(rcpt.clone()), action, None)?;
    while let Some(i) = x.queue.pop_front() {
        if x.nodes[i].depth >= MAX_DEPTH {
            log::warn!("warn: lka: expansion of <{rcpt}> deeper than {MAX_DEPTH} (a loop?)");
            return Err(Failure::expansion(false));
        }
        match x.nodes[i].kind.clone() {
            Kind::Address(m) => x.address(i, &m)?,
            Kind::User(u) => x.user(i, &u)?,
            Kind::File(p) => x.file_or_command(i, p, false)?,
            Kind::Command(c) => x.file_or_command(i, c, true)?,
            Kind::Error(e) => return Err(x.error(i, &e)),
        }
    }
    if x.out.is_empty() {
        log::warn!("warn: lka: <{rcpt}> expanded to nothing");
        return Err(Failure::expansion(false));
    }
    Ok(x.out)
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Address(Mailbox),
    User(String),
    File(String),
    Command(String),
    Error(ErrorReply),
}

impl Kind {
    /// An item as a node; `:include:` is expanded in place, never a node.
    fn of(item: Item) -> Option<Kind> {
        Some(match item {
            Item::User(u) => Kind::User(u),
            Item::Address(m) => Kind::Address(m),
            Item::File(p) => Kind::File(p),
            Item::Command(c) => Kind::Command(c),
            Item::Error(e) => Kind::Error(e),
            Item::Include(_) => return None,
        })
    }

    /// The kind and value that, with the context, make a node unique.
    fn identity(&self) -> (u8, String) {
        match self {
            Kind::User(u) => (0, u.clone()),
            Kind::File(p) => (1, p.clone()),
            Kind::Command(c) => (2, c.clone()),
            Kind::Address(m) => (3, m.to_string()),
            Kind::Error(e) => (4, format!("{} {:?} {}", e.code, e.enhanced, e.text)),
        }
    }
}

struct Node<'a> {
    kind: Kind,
    /// The action the node is expanded under (an address gets its own
    /// from the match rules when it is expanded).
    action: &'a Action,
    parent: Option<usize>,
    depth: usize,
    /// The address node it is expanded for (itself for an address), and
    /// that address: the envelope's `dest`.
    dest_node: usize,
    dest: Mailbox,
    /// A user node listed by that same user (in their `.forward`).
    same_user: bool,
    /// A user node's entry in the userbase, once found.
    real_user: Option<UserInfo>,
    subaddress: Option<String>,
    /// A user node whose `.forward` was read.
    forwarded: bool,
}

/// A node's identity in the tree (`expand_cmp()`): equal nodes expand once.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: u8,
    value: String,
    same_user: bool,
    /// The address node it was expanded for (None: the recipient itself).
    dest: Option<usize>,
    /// For files and commands: the user node they run for.
    owner: Option<usize>,
}

struct Expander<'a, 'o, R: ?Sized> {
    resolver: &'a R,
    opts: &'o Options,
    nodes: Vec<Node<'a>>,
    seen: HashSet<Key>,
    queue: VecDeque<usize>,
    out: Vec<Expanded>,
}

impl<'a, R: Resolver + ?Sized> Expander<'a, '_, R> {
    /// Add a node unless an equal one is in the tree; `Ok(false)` if it was.
    fn insert(
        &mut self,
        kind: Kind,
        action: &'a Action,
        parent: Option<usize>,
    ) -> Result<bool, Failure> {
        let same_user = match (&kind, parent) {
            (Kind::User(u), Some(p)) => matches!(&self.nodes[p].kind, Kind::User(pu) if pu == u),
            _ => false,
        };
        let owner = match kind {
            Kind::File(_) | Kind::Command(_) => parent.and_then(|p| self.user_ancestor(p)),
            _ => None,
        };
        let (k, value) = kind.identity();
        let key = Key {
            kind: k,
            value,
            same_user,
            dest: parent.map(|p| self.nodes[p].dest_node),
            owner,
        };
        if self.seen.contains(&key) {
            return Ok(false);
        }
        if self.nodes.len() >= MAX_NODES {
            log::warn!("warn: lka: expansion over {MAX_NODES} nodes");
            return Err(Failure::expansion(false));
        }
        self.seen.insert(key);
        let index = self.nodes.len();
        let (depth, dest_node, dest) = match (&kind, parent) {
            (Kind::Address(m), p) => (p.map_or(0, |p| self.nodes[p].depth + 1), index, m.clone()),
            (_, Some(p)) => {
                let n = &self.nodes[p];
                (n.depth + 1, n.dest_node, n.dest.clone())
            }
            // Only the recipient, an address, has no parent.
            (_, None) => return Err(Failure::tempfail()),
        };
        self.nodes.push(Node {
            kind,
            action,
            parent,
            depth,
            dest_node,
            dest,
            same_user,
            real_user: None,
            subaddress: None,
            forwarded: false,
        });
        self.queue.push_back(index);
        Ok(true)
    }

    /// The nearest user node at or above `i`.
    fn user_ancestor(&self, mut i: usize) -> Option<usize> {
        loop {
            if let Kind::User(_) = self.nodes[i].kind {
                return Some(i);
            }
            i = self.nodes[i].parent?;
        }
    }

    fn address(&mut self, i: usize, m: &Mailbox) -> Result<(), Failure> {
        let action = match self.nodes[i].parent {
            None => self.nodes[i].action,
            Some(_) => self.resolver.route(m)?,
        };
        self.nodes[i].action = action;
        if let Method::Relay(_) = action.method {
            self.out.push(Expanded::Relay {
                action: action.name.clone(),
                dest: m.clone(),
            });
            return Ok(());
        }
        let user = m.local.to_lowercase();
        if let Some(table) = &action.local.virtual_ {
            let domain = m.domain.to_string().to_lowercase();
            let Some((key, value)) = self.virtual_lookup(table, &user, Some(&domain))? else {
                log::info!("info: lka: <{m}>: no entry in the virtual table");
                return Err(Failure::expansion(false));
            };
            if self.expand_value(i, action, &key, &value)? == 0 {
                return Err(Failure::expansion(false));
            }
            return Ok(());
        }
        self.insert(Kind::User(user), action, Some(i))?;
        Ok(())
    }

    fn user(&mut self, i: usize, name: &str) -> Result<(), Failure> {
        let action = self.nodes[i].action;
        let same_user = self.nodes[i].same_user;
        if !same_user {
            let found = if let Some(t) = &action.local.virtual_ {
                self.virtual_lookup(t, name, None)?
            } else if let Some(t) = &action.local.alias {
                self.alias_lookup(t, name)?
            } else {
                None
            };
            if let Some((key, value)) = found {
                if self.expand_value(i, action, &key, &value)? == 0 {
                    log::warn!("warn: lka: alias \"{key}\" has no item");
                    return Err(Failure::expansion(true));
                }
                return Ok(());
            }
        }
        let (user, subaddress) = split_subaddress(name, self.opts.subaddr_delim);
        let info = match self.resolver.userinfo(action.local.userbase.as_ref(), user) {
            Ok(Some(u)) => u,
            Ok(None) => return Err(Failure::invalid_recipient()),
            Err(e) => {
                log::warn!("warn: lka: user lookup for \"{user}\": {e}");
                return Err(Failure::tempfail());
            }
        };
        let parent_forwarded = self.nodes[i]
            .parent
            .is_some_and(|p| self.nodes[p].forwarded);
        let node = &mut self.nodes[i];
        node.kind = Kind::User(user.to_string());
        node.subaddress = subaddress.map(str::to_string);
        node.real_user = Some(info.clone());
        if same_user && parent_forwarded {
            // Listed in their own .forward: their own mailbox.
            return self.deliver_local(i, info);
        }
        if action.local.user.as_deref().is_some_and(|u| u != user) {
            // `user` delivers for everyone: only that user's .forward counts.
            return self.deliver_local(i, info);
        }
        self.nodes[i].forwarded = true;
        match self.resolver.forward(&info) {
            Ok(None) => self.deliver_local(i, info),
            Ok(Some(text)) => {
                let items = forward::parse_forward(&text).map_err(|e| {
                    log::warn!("warn: ~/.forward of {user}: {e}");
                    Failure::expansion(true)
                })?;
                if items.len() > MAX_FORWARD_ITEMS {
                    log::warn!("warn: ~/.forward of {user}: more than {MAX_FORWARD_ITEMS} items");
                    return Err(Failure::expansion(true));
                }
                let (_, inserted) = self.expand_items(i, action, items, true)?;
                if inserted == 0 {
                    // Empty, or nothing new: as if there were none.
                    return self.deliver_local(i, info);
                }
                Ok(())
            }
            Err(e) if e.is_temporary() => {
                log::warn!("warn: ~/.forward of {user} deferred: {e}");
                Err(Failure::expansion(true))
            }
            Err(e) if self.opts.ignore_insecure_forward => {
                log::warn!("warn: ~/.forward of {user} ignored: {e}");
                self.deliver_local(i, info)
            }
            Err(e) => {
                log::warn!("warn: ~/.forward of {user} refused: {e}");
                Err(Failure::expansion(false))
            }
        }
    }

    /// User node `i`, found in the userbase as `user`, gets the mail with
    /// the action's method.
    fn deliver_local(&mut self, i: usize, user: UserInfo) -> Result<(), Failure> {
        let node = &self.nodes[i];
        match node.action.method {
            // Nothing relays it (no .forward, or one that names only the
            // user): OpenSMTPD defers on forward-only, refuses on
            // expand-only.
            Method::ForwardOnly => return Err(Failure::expansion(true)),
            Method::ExpandOnly => return Err(Failure::expansion(false)),
            _ => {}
        }
        let delivery = Expanded::User {
            action: node.action.name.clone(),
            dest: node.dest.clone(),
            user,
            subaddress: node.subaddress.clone(),
        };
        self.out.push(delivery);
        Ok(())
    }

    fn file_or_command(&mut self, i: usize, text: String, command: bool) -> Result<(), Failure> {
        let node = &self.nodes[i];
        let what = if command { "command" } else { "file" };
        let run_as = match node.parent.and_then(|p| self.nodes[p].real_user.clone()) {
            Some(u) if u.uid == 0 => {
                log::warn!("warn: lka: {what} not allowed in root's ~/.forward: {text}");
                return Err(Failure::tempfail());
            }
            Some(u) => RunAs::User(u),
            None => RunAs::Daemon,
        };
        if node.action.method == Method::ForwardOnly {
            log::warn!("warn: lka: {what} in the expansion of a forward-only action: {text}");
            return Err(Failure::tempfail());
        }
        if command && run_as == RunAs::Daemon {
            log::warn!(
                "warn: lka: commands executed from aliases run with {USER_SMTPD} privileges"
            );
        }
        let (action, dest) = (node.action.name.clone(), node.dest.clone());
        self.out.push(if command {
            Expanded::Command {
                action,
                dest,
                command: text,
                run_as,
            }
        } else {
            Expanded::File {
                action,
                dest,
                path: text,
                run_as,
            }
        });
        Ok(())
    }

    fn error(&self, i: usize, e: &ErrorReply) -> Failure {
        if self.nodes[i].action.method == Method::ForwardOnly {
            log::warn!("warn: lka: error item in the expansion of a forward-only action");
            return Failure::tempfail();
        }
        Failure::from(e)
    }

    /// `aliases_get()`: `user+tag`, then `user`.
    fn alias_lookup(
        &self,
        table: &TableRef,
        name: &str,
    ) -> Result<Option<(String, String)>, Failure> {
        let name = name.to_lowercase();
        let (base, tag) = split_subaddress(&name, self.opts.subaddr_delim);
        let mut keys = Vec::with_capacity(2);
        if tag.is_some() {
            keys.push(name.clone());
        }
        keys.push(base.to_string());
        self.first_of(table, keys)
    }

    /// `aliases_virtual_get()`: `user+tag@domain`, `user@domain`,
    /// `user+tag`, `user`, `@domain`, `@`; without a domain (a user node)
    /// only `user+tag` and `user`.
    fn virtual_lookup(
        &self,
        table: &TableRef,
        name: &str,
        domain: Option<&str>,
    ) -> Result<Option<(String, String)>, Failure> {
        let name = name.to_lowercase();
        let (base, tag) = split_subaddress(&name, self.opts.subaddr_delim);
        let mut keys = Vec::with_capacity(6);
        if let Some(d) = domain {
            if tag.is_some() {
                keys.push(format!("{name}@{d}"));
            }
            keys.push(format!("{base}@{d}"));
        }
        if tag.is_some() {
            keys.push(name.clone());
        }
        keys.push(base.to_string());
        if let Some(d) = domain.filter(|d| !d.is_empty()) {
            keys.push(format!("@{d}"));
            keys.push("@".to_string());
        }
        self.first_of(table, keys)
    }

    /// The first key found in the table, with its value.
    fn first_of(
        &self,
        table: &TableRef,
        keys: Vec<String>,
    ) -> Result<Option<(String, String)>, Failure> {
        for key in keys {
            match self.resolver.lookup(table, &key) {
                Ok(Some(v)) => return Ok(Some((key, v))),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("warn: lka: lookup of \"{key}\": {e}");
                    return Err(Failure::expansion(true));
                }
            }
        }
        Ok(None)
    }

    /// Expand a table's value under node `i`: the number of items (an
    /// `:include:` counts one, as in `aliases_get()`).
    fn expand_value(
        &mut self,
        i: usize,
        action: &'a Action,
        key: &str,
        value: &str,
    ) -> Result<usize, Failure> {
        let items = aliases::parse_value(value).map_err(|e| {
            log::warn!("warn: lka: table entry \"{key}\": {e}");
            Failure::expansion(true)
        })?;
        Ok(self.expand_items(i, action, items, false)?.0)
    }

    /// Add items as children of node `i`: (items taken, nodes added).
    /// `:include:` is read in place, one level deep; in a `.forward` it is
    /// ignored, as OpenSMTPD ignores it there (the file would be read with
    /// the daemon's rights, not the user's).
    fn expand_items(
        &mut self,
        i: usize,
        action: &'a Action,
        items: Vec<Item>,
        from_forward: bool,
    ) -> Result<(usize, usize), Failure> {
        let (mut taken, mut added) = (0, 0);
        for item in items {
            match item {
                Item::Include(path) if from_forward => {
                    log::warn!("warn: lka: :include:{path} in a ~/.forward ignored");
                }
                Item::Include(path) => {
                    let text = self.resolver.include(&path).map_err(|e| {
                        log::warn!("warn: lka: include file {path}: {e}");
                        Failure::expansion(true)
                    })?;
                    let included = aliases::parse_lines(&text).map_err(|e| {
                        log::warn!("warn: lka: include file {path}: {e}");
                        Failure::expansion(true)
                    })?;
                    for sub in included {
                        let Some(kind) = Kind::of(sub) else {
                            log::warn!("warn: lka: include file {path}: nested :include:");
                            return Err(Failure::expansion(true));
                        };
                        added += usize::from(self.insert(kind, action, Some(i))?);
                    }
                    taken += 1;
                }
                other => {
                    if let Some(kind) = Kind::of(other) {
                        added += usize::from(self.insert(kind, action, Some(i))?);
                    }
                    taken += 1;
                }
            }
        }
        Ok((taken, added))
    }
}

/// `joe+box` → (`joe`, Some(`box`)), at the first delimiter.
fn split_subaddress(name: &str, delim: char) -> (&str, Option<&str>) {
    match name.split_once(delim) {
        Some((user, tag)) => (user, Some(tag)),
        None => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ast::{LocalOpts, Pos};
    use crate::smtp::address;
    use std::collections::HashMap;

    fn mb(s: &str) -> Mailbox {
        address::parse_path(s, false).unwrap().unwrap()
    }

    fn named(t: &str) -> Option<TableRef> {
        Some(TableRef::Named(t.into()))
    }

    fn action(name: &str, method: Method, local: LocalOpts) -> Action {
        Action {
            pos: Pos::default(),
            name: name.into(),
            method,
            local,
            ttl: None,
        }
    }

    fn user(name: &str, uid: u32) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid,
            gid: 100,
            home: PathBuf::from(format!("/home/{name}")),
        }
    }

    /// Tables, users, files and rules in memory.
    struct Fake {
        actions: Vec<Action>,
        /// Domain → action name: the match rules of the expanded addresses.
        routes: Vec<(&'static str, &'static str)>,
        tables: HashMap<&'static str, HashMap<String, String>>,
        users: HashMap<String, UserInfo>,
        /// Any user name starting with `u` exists (for large lists).
        u_users: bool,
        includes: HashMap<String, String>,
        forwards: HashMap<String, Result<Option<String>, ForwardError>>,
    }

    impl Fake {
        fn new() -> Fake {
            let alias = || LocalOpts {
                alias: named("aliases"),
                ..LocalOpts::default()
            };
            let actions = vec![
                action("local", Method::Mbox, alias()),
                action("relay", Method::Relay(Box::default()), LocalOpts::default()),
                action(
                    "virt",
                    Method::Maildir {
                        path: None,
                        junk: false,
                    },
                    LocalOpts {
                        virtual_: named("virtual"),
                        userbase: named("userbase"),
                        ..LocalOpts::default()
                    },
                ),
                action("fwd", Method::ForwardOnly, alias()),
                action("exp", Method::ExpandOnly, alias()),
                action(
                    "vmail",
                    Method::Mbox,
                    LocalOpts {
                        alias: named("aliases"),
                        user: Some("vmail".into()),
                        ..LocalOpts::default()
                    },
                ),
                action("plain", Method::Mbox, LocalOpts::default()),
            ];
            let mut users = HashMap::new();
            for (n, uid) in [
                ("root", 0),
                ("joe", 1000),
                ("bob", 1001),
                ("carol", 1002),
                ("vmail", 2000),
            ] {
                users.insert(n.to_string(), user(n, uid));
            }
            Fake {
                actions,
                routes: vec![
                    ("local.example", "local"),
                    ("remote.example", "relay"),
                    ("virt.example", "virt"),
                ],
                tables: HashMap::new(),
                users,
                u_users: false,
                includes: HashMap::new(),
                forwards: HashMap::new(),
            }
        }

        fn table(mut self, name: &'static str, entries: &[(&str, &str)]) -> Fake {
            let t = self.tables.entry(name).or_default();
            for (k, v) in entries {
                t.insert(k.to_lowercase(), v.to_string());
            }
            self
        }

        fn aliases(self, entries: &[(&str, &str)]) -> Fake {
            self.table("aliases", entries)
        }

        fn forward(mut self, user: &str, r: Result<Option<&str>, ForwardError>) -> Fake {
            self.forwards
                .insert(user.into(), r.map(|o| o.map(str::to_string)));
            self
        }

        fn include(mut self, path: &str, text: &str) -> Fake {
            self.includes.insert(path.into(), text.into());
            self
        }

        fn action(&self, name: &str) -> &Action {
            self.actions.iter().find(|a| a.name == name).unwrap()
        }

        /// Expand `rcpt` as if the rules gave it to `action`.
        fn run(&self, action: &str, rcpt: &str) -> Result<Vec<String>, Failure> {
            self.run_with(action, rcpt, &Options::default())
        }

        fn run_with(&self, action: &str, rcpt: &str, o: &Options) -> Result<Vec<String>, Failure> {
            expand(self.action(action), &mb(rcpt), self, o).map(|v| v.iter().map(show).collect())
        }
    }

    impl Resolver for Fake {
        fn route(&self, addr: &Mailbox) -> Result<&Action, Failure> {
            let d = addr.domain.to_string();
            match self.routes.iter().find(|(dom, _)| *dom == d) {
                Some((_, a)) => Ok(self.action(a)),
                None => Err(Failure {
                    code: 550,
                    enhanced: "5.7.1".into(),
                    text: "Invalid recipient".into(),
                }),
            }
        }

        fn lookup(&self, table: &TableRef, key: &str) -> Result<Option<String>, String> {
            let TableRef::Named(n) = table else {
                return Err("inline".into());
            };
            if key.len() > 1023 {
                return Err("lookup key too long".into());
            }
            Ok(self
                .tables
                .get(n.as_str())
                .and_then(|t| t.get(&key.to_lowercase()))
                .cloned())
        }

        fn userinfo(
            &self,
            userbase: Option<&TableRef>,
            name: &str,
        ) -> Result<Option<UserInfo>, String> {
            if name == "broken" {
                return Err("backend down".into());
            }
            if let Some(t) = userbase {
                return Ok(self
                    .lookup(t, name)?
                    .and_then(|v| UserInfo::from_userbase(name, &v)));
            }
            if self.u_users && name.starts_with('u') {
                return Ok(Some(user(name, 3000)));
            }
            Ok(self.users.get(name).cloned())
        }

        fn include(&self, path: &str) -> Result<String, String> {
            self.includes
                .get(path)
                .cloned()
                .ok_or_else(|| format!("{path}: No such file or directory"))
        }

        fn forward(&self, user: &UserInfo) -> Result<Option<String>, ForwardError> {
            self.forwards.get(&user.name).cloned().unwrap_or(Ok(None))
        }
    }

    /// One line per delivery, for readable assertions.
    fn show(e: &Expanded) -> String {
        let who = |r: &RunAs| match r {
            RunAs::Daemon => "daemon".to_string(),
            RunAs::User(u) => u.name.clone(),
        };
        match e {
            Expanded::User {
                action,
                dest,
                user,
                subaddress,
            } => match subaddress {
                Some(s) => format!("{action}: user {} +{s} for {dest}", user.name),
                None => format!("{action}: user {} for {dest}", user.name),
            },
            Expanded::File {
                action,
                dest,
                path,
                run_as,
            } => format!("{action}: file {path} as {} for {dest}", who(run_as)),
            Expanded::Command {
                action,
                dest,
                command,
                run_as,
            } => format!("{action}: command {command} as {} for {dest}", who(run_as)),
            Expanded::Relay { action, dest } => format!("{action}: relay {dest}"),
        }
    }

    fn code(r: Result<Vec<String>, Failure>) -> String {
        match r {
            Err(f) => f.to_string(),
            Ok(v) => panic!("expanded: {v:?}"),
        }
    }

    const EXPANSION_PERM: &str = "524 5.2.4 Mailing list expansion problem";
    const EXPANSION_TEMP: &str = "424 4.2.4 Mailing list expansion problem";
    const TEMPFAIL: &str = "451 4.3.0 Temporary failure";
    const NO_USER: &str = "550 5.1.1 Invalid recipient";

    #[test]
    fn plain_users() {
        let f = Fake::new();
        assert_eq!(
            f.run("local", "Joe@local.example").unwrap(),
            ["local: user joe for Joe@local.example"]
        );
        assert_eq!(code(f.run("local", "nobody@local.example")), NO_USER);
        assert_eq!(code(f.run("local", "broken@local.example")), TEMPFAIL);
        // A relay action relays the recipient itself.
        assert_eq!(
            f.run("relay", "x@remote.example").unwrap(),
            ["relay: relay x@remote.example"]
        );
    }

    #[test]
    fn aliases_of_every_kind() {
        let f = Fake::new().aliases(&[(
            "root",
            "joe, /var/mail/root-copy, \"|/usr/bin/logger -t mail\", Bob@Remote.Example",
        )]);
        assert_eq!(
            f.run("local", "root@local.example").unwrap(),
            [
                "local: user joe for root@local.example",
                "local: file /var/mail/root-copy as daemon for root@local.example",
                "local: command /usr/bin/logger -t mail as daemon for root@local.example",
                "relay: relay Bob@remote.example",
            ]
        );
        // An address that the rules refuse refuses the recipient.
        let f = Fake::new().aliases(&[("a", "joe, x@elsewhere.example")]);
        assert_eq!(
            code(f.run("local", "a@local.example")),
            "550 5.7.1 Invalid recipient"
        );
        // A user in the aliases that does not exist.
        let f = Fake::new().aliases(&[("a", "joe, ghost")]);
        assert_eq!(code(f.run("local", "a@local.example")), NO_USER);
        // A value that does not parse defers, and says why in the log.
        let f = Fake::new().aliases(&[("a", "joe, a%b@remote.example")]);
        assert_eq!(code(f.run("local", "a@local.example")), EXPANSION_TEMP);
        let f = Fake::new().aliases(&[("a", " , ")]);
        assert_eq!(code(f.run("local", "a@local.example")), EXPANSION_TEMP);
    }

    #[test]
    fn local_addresses_in_aliases_are_expanded_again() {
        let f = Fake::new().aliases(&[("staff", "joe@local.example, carol"), ("joe", "bob")]);
        assert_eq!(
            f.run("local", "staff@local.example").unwrap(),
            [
                "local: user carol for staff@local.example",
                "local: user bob for joe@local.example",
            ]
        );
    }

    #[test]
    fn includes() {
        let f = Fake::new()
            .aliases(&[("list", "carol, :include:/etc/mail/list")])
            .include(
                "/etc/mail/list",
                "# members\njoe\nbob, x@remote.example # c\n\n",
            );
        assert_eq!(
            f.run("local", "list@local.example").unwrap(),
            [
                "local: user carol for list@local.example",
                "local: user joe for list@local.example",
                "local: user bob for list@local.example",
                "relay: relay x@remote.example",
            ]
        );
        // A missing include defers rather than drop its members.
        let f = Fake::new().aliases(&[("list", ":include:/etc/mail/missing")]);
        assert_eq!(code(f.run("local", "list@local.example")), EXPANSION_TEMP);
        // So do a nested include and a bad item in the file.
        let f = Fake::new()
            .aliases(&[("list", ":include:/a")])
            .include("/a", "joe\n:include:/b\n")
            .include("/b", "bob\n");
        assert_eq!(code(f.run("local", "list@local.example")), EXPANSION_TEMP);
        let f = Fake::new()
            .aliases(&[("list", ":include:/a")])
            .include("/a", "joe\nbad item\n");
        assert_eq!(code(f.run("local", "list@local.example")), EXPANSION_TEMP);
        // An empty include is an empty list.
        let f = Fake::new()
            .aliases(&[("list", ":include:/a")])
            .include("/a", "# nobody yet\n");
        assert_eq!(code(f.run("local", "list@local.example")), EXPANSION_PERM);
    }

    #[test]
    fn error_items() {
        let f = Fake::new().aliases(&[
            ("gone", "\"error:550 5.1.6 Gone, try joe@example.org\""),
            ("split", "error:550 Gone, try joe@example.org"),
            ("later", "joe, \"error:450 Mailbox being moved\""),
        ]);
        assert_eq!(
            code(f.run("local", "gone@local.example")),
            "550 5.1.6 Gone, try joe@example.org"
        );
        // Unquoted, the comma splits the item: "try joe@..." is no item.
        assert_eq!(code(f.run("local", "split@local.example")), EXPANSION_TEMP);
        let e = f.run("local", "later@local.example").unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.to_string(), "450 4.0.0 Mailbox being moved");
    }

    #[test]
    fn loops_end() {
        // a: b, b: a: each user once, then nothing is left to deliver.
        let f = Fake::new().aliases(&[("a", "b"), ("b", "a")]);
        assert_eq!(code(f.run("local", "a@local.example")), EXPANSION_PERM);
        // With a real user in the loop, the loop is cut and joe gets it once.
        let f = Fake::new().aliases(&[("a", "b, joe"), ("b", "a, joe")]);
        assert_eq!(
            f.run("local", "a@local.example").unwrap(),
            ["local: user joe for a@local.example"]
        );
        // Through addresses, each one a new context: the depth ends it.
        let f = Fake::new().aliases(&[("a", "b@local.example"), ("b", "a@local.example")]);
        assert_eq!(code(f.run("local", "a@local.example")), EXPANSION_PERM);
        // Duplicates in one list are delivered once.
        let f = Fake::new().aliases(&[("list", "joe, joe, bob, joe")]);
        assert_eq!(
            f.run("local", "list@local.example").unwrap(),
            [
                "local: user joe for list@local.example",
                "local: user bob for list@local.example",
            ]
        );
    }

    #[test]
    fn depth_is_capped() {
        // recipient (0) -> user a0 (1) -> a1 (2) ... -> a{n} (n+1) -> joe.
        let chain = |n: usize| {
            let mut entries: Vec<(String, String)> = (0..n)
                .map(|i| (format!("a{i}"), format!("a{}", i + 1)))
                .collect();
            entries.push((format!("a{n}"), "joe".into()));
            let refs: Vec<(&str, &str)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Fake::new().aliases(&refs).run("local", "a0@local.example")
        };
        // joe ends at depth n + 2, which must stay below MAX_DEPTH.
        assert_eq!(
            chain(MAX_DEPTH - 3).unwrap(),
            ["local: user joe for a0@local.example"]
        );
        assert_eq!(code(chain(MAX_DEPTH - 2)), EXPANSION_PERM);
        assert_eq!(code(chain(50)), EXPANSION_PERM);
    }

    #[test]
    fn node_count_is_capped() {
        let members: String = (0..MAX_NODES).map(|i| format!("u{i}\n")).collect();
        let mut f = Fake::new()
            .aliases(&[("big", ":include:/big")])
            .include("/big", &members);
        f.u_users = true;
        assert_eq!(code(f.run("local", "big@local.example")), EXPANSION_PERM);
        let some: String = (0..1000).map(|i| format!("u{i}\n")).collect();
        f.includes.insert("/big".into(), some);
        assert_eq!(f.run("local", "big@local.example").unwrap().len(), 1000);
    }

    #[test]
    fn subaddresses() {
        let f = Fake::new();
        assert_eq!(
            f.run("local", "Joe+Lists@local.example").unwrap(),
            ["local: user joe +lists for Joe+Lists@local.example"]
        );
        // The alias without the tag, then with it when it exists.
        let f = Fake::new().aliases(&[("info", "bob"), ("info+sales", "carol")]);
        assert_eq!(
            f.run("local", "info+support@local.example").unwrap(),
            ["local: user bob for info+support@local.example"]
        );
        assert_eq!(
            f.run("local", "info+sales@local.example").unwrap(),
            ["local: user carol for info+sales@local.example"]
        );
        // An alias to a user with a tag keeps it for the delivery.
        let f = Fake::new().aliases(&[("boxes", "joe+archive")]);
        assert_eq!(
            f.run("local", "boxes@local.example").unwrap(),
            ["local: user joe +archive for boxes@local.example"]
        );
        // Another delimiter.
        let o = Options {
            subaddr_delim: '-',
            ..Options::default()
        };
        assert_eq!(
            Fake::new()
                .run_with("local", "joe-x@local.example", &o)
                .unwrap(),
            ["local: user joe +x for joe-x@local.example"]
        );
    }

    #[test]
    fn virtual_tables() {
        let f = Fake::new()
            .table(
                "virtual",
                &[
                    ("joe@virt.example", "vjoe"),
                    ("sales+eu@virt.example", "vcarol"),
                    ("sales@virt.example", "vjoe, partner@remote.example"),
                    ("postmaster", "vjoe"),
                    ("@virt.example", "vcatch"),
                    ("vcatch", "vjoe"),
                ],
            )
            .table(
                "userbase",
                &[
                    ("vjoe", "1000:100:/var/vmail/joe"),
                    ("vcarol", "1000:100:/var/vmail/carol"),
                ],
            );
        assert_eq!(
            f.run("virt", "Joe@virt.example").unwrap(),
            ["virt: user vjoe for Joe@virt.example"]
        );
        // user+tag@domain first, then user@domain.
        assert_eq!(
            f.run("virt", "sales+eu@virt.example").unwrap(),
            ["virt: user vcarol for sales+eu@virt.example"]
        );
        assert_eq!(
            f.run("virt", "sales+us@virt.example").unwrap(),
            [
                "virt: user vjoe for sales+us@virt.example",
                "relay: relay partner@remote.example"
            ]
        );
        // joe+tag@domain: the entry without the tag.
        assert_eq!(
            f.run("virt", "joe+x@virt.example").unwrap(),
            ["virt: user vjoe for joe+x@virt.example"]
        );
        // The bare user, then the catch-all, itself expanded again.
        assert_eq!(
            f.run("virt", "postmaster@virt.example").unwrap(),
            ["virt: user vjoe for postmaster@virt.example"]
        );
        assert_eq!(
            f.run("virt", "anyone@virt.example").unwrap(),
            ["virt: user vjoe for anyone@virt.example"]
        );
        // No entry and no catch-all: refused.
        let f2 = Fake::new().table("virtual", &[("joe@virt.example", "vjoe")]);
        assert_eq!(code(f2.run("virt", "other@virt.example")), EXPANSION_PERM);
        // The global catch-all.
        let f3 = Fake::new().table("virtual", &[("@", "bob@remote.example")]);
        assert_eq!(
            f3.run("virt", "x@virt.example").unwrap(),
            ["relay: relay bob@remote.example"]
        );
        // A user the userbase does not know.
        let f4 = Fake::new()
            .table("virtual", &[("@virt.example", "ghost")])
            .table("userbase", &[("vjoe", "1000:100:/var/vmail/joe")]);
        assert_eq!(code(f4.run("virt", "x@virt.example")), NO_USER);
    }

    #[test]
    fn forward_only() {
        let f = Fake::new()
            .aliases(&[
                ("list", "joe, bob"),
                ("files", "/tmp/x"),
                ("err", "error:550 no"),
            ])
            .forward("joe", Ok(Some("joe@remote.example\n")))
            .forward(
                "bob",
                Ok(Some("bob@remote.example, carol@remote.example\n")),
            );
        assert_eq!(
            f.run("fwd", "list@local.example").unwrap(),
            [
                "relay: relay joe@remote.example",
                "relay: relay bob@remote.example",
                "relay: relay carol@remote.example",
            ]
        );
        // A user without .forward: nothing relays it, try later.
        assert_eq!(code(f.run("fwd", "carol@local.example")), EXPANSION_TEMP);
        // Files, commands and errors are not forwarding.
        assert_eq!(code(f.run("fwd", "files@local.example")), TEMPFAIL);
        assert_eq!(code(f.run("fwd", "err@local.example")), TEMPFAIL);
        // Nor is a user listing themselves.
        let f = Fake::new().forward("joe", Ok(Some("\\joe, joe@remote.example")));
        assert_eq!(code(f.run("fwd", "joe@local.example")), EXPANSION_TEMP);
    }

    #[test]
    fn expand_only() {
        let f = Fake::new()
            .aliases(&[("pipe", "|/usr/local/bin/ticket")])
            .forward("joe", Ok(Some("|/usr/bin/procmail\n")));
        assert_eq!(
            f.run("exp", "pipe@local.example").unwrap(),
            ["exp: command /usr/local/bin/ticket as daemon for pipe@local.example"]
        );
        assert_eq!(
            f.run("exp", "joe@local.example").unwrap(),
            ["exp: command /usr/bin/procmail as joe for joe@local.example"]
        );
        // No delivery method named anywhere: refused.
        assert_eq!(code(f.run("exp", "bob@local.example")), EXPANSION_PERM);
    }

    #[test]
    fn dot_forward() {
        let f = Fake::new()
            .aliases(&[("staff", "joe, bob")])
            .forward(
                "joe",
                Ok(Some(
                    "# keep a copy\n\\joe\njoe@remote.example, \"|/usr/bin/vacation joe\"\n/home/joe/archive\n",
                )),
            );
        let local_copy = [
            "local: user joe for staff@local.example",
            "relay: relay joe@remote.example",
            "local: command /usr/bin/vacation joe as joe for staff@local.example",
            "local: file /home/joe/archive as joe for staff@local.example",
        ];
        let mut want = vec!["local: user bob for staff@local.example"];
        want.extend(local_copy);
        assert_eq!(f.run("local", "staff@local.example").unwrap(), want);
        // Without the backslash it is the same: joe's own mailbox.
        let f = Fake::new().forward("joe", Ok(Some("joe, bob")));
        assert_eq!(
            f.run("local", "joe@local.example").unwrap(),
            [
                "local: user joe for joe@local.example",
                "local: user bob for joe@local.example",
            ]
        );
        // An empty .forward, or one naming only known nodes: deliver.
        let f = Fake::new().forward("joe", Ok(Some("# nothing\n")));
        assert_eq!(
            f.run("local", "joe@local.example").unwrap(),
            ["local: user joe for joe@local.example"]
        );
        // :include: in a .forward is ignored.
        let f = Fake::new()
            .forward("joe", Ok(Some(":include:/etc/shadow\n")))
            .include("/etc/shadow", "root\n");
        assert_eq!(
            f.run("local", "joe@local.example").unwrap(),
            ["local: user joe for joe@local.example"]
        );
        // Mutual forwards end: joe is already in the tree, so bob's
        // .forward adds nothing and bob gets the mail (forward.c).
        let f = Fake::new()
            .forward("joe", Ok(Some("bob")))
            .forward("bob", Ok(Some("joe")));
        assert_eq!(
            f.run("local", "joe@local.example").unwrap(),
            ["local: user bob for joe@local.example"]
        );
        // A bad line, or too many items, defers.
        let f = Fake::new().forward("joe", Ok(Some("bob\nnot valid\n")));
        assert_eq!(code(f.run("local", "joe@local.example")), EXPANSION_TEMP);
        let many: String = (0..=MAX_FORWARD_ITEMS)
            .map(|i| format!("u{i}@remote.example\n"))
            .collect();
        let f = Fake::new().forward("joe", Ok(Some(&many)));
        assert_eq!(code(f.run("local", "joe@local.example")), EXPANSION_TEMP);
    }

    #[test]
    fn root_forward_cannot_run_things() {
        for item in ["|/bin/sh -c id", "/etc/passwd"] {
            let f = Fake::new().forward("root", Ok(Some(item)));
            assert_eq!(
                code(f.run("local", "root@local.example")),
                TEMPFAIL,
                "{item}"
            );
        }
        // Forwarding root's mail is fine.
        let f = Fake::new().forward("root", Ok(Some("admin@remote.example")));
        assert_eq!(
            f.run("local", "root@local.example").unwrap(),
            ["relay: relay admin@remote.example"]
        );
    }

    #[test]
    fn unreadable_forward() {
        let f = Fake::new().forward("joe", Err(ForwardError::Symlink));
        assert_eq!(code(f.run("local", "joe@local.example")), EXPANSION_PERM);
        let ignore = Options {
            ignore_insecure_forward: true,
            ..Options::default()
        };
        assert_eq!(
            f.run_with("local", "joe@local.example", &ignore).unwrap(),
            ["local: user joe for joe@local.example"]
        );
        // A temporary condition defers whatever the option.
        let f = Fake::new().forward("joe", Err(ForwardError::HomeSticky));
        assert_eq!(
            code(f.run_with("local", "joe@local.example", &ignore)),
            EXPANSION_TEMP
        );
    }

    #[test]
    fn user_option_reads_only_that_users_forward() {
        let f = Fake::new()
            .aliases(&[("list", "joe, vmail")])
            .forward("joe", Ok(Some("joe@remote.example")))
            .forward("vmail", Ok(Some("vmail, archive@remote.example")));
        assert_eq!(
            f.run("vmail", "list@local.example").unwrap(),
            [
                "vmail: user joe for list@local.example",
                "vmail: user vmail for list@local.example",
                "relay: relay archive@remote.example",
            ]
        );
    }

    #[test]
    fn lookup_errors_defer() {
        // An alias table that cannot answer (the fake refuses inline ones).
        let mut f = Fake::new();
        f.actions[0].local.alias = Some(TableRef::Inline(vec!["x".into()]));
        assert_eq!(code(f.run("local", "joe@local.example")), EXPANSION_TEMP);
        // Without an alias table the user is looked up directly.
        assert_eq!(
            Fake::new().run("plain", "joe@local.example").unwrap(),
            ["plain: user joe for joe@local.example"]
        );
    }

    #[test]
    fn userbase_values() {
        let u = UserInfo::from_userbase("joe", "1000:100:/home/v:joe").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 100));
        assert_eq!(u.home, PathBuf::from("/home/v:joe"));
        for bad in [
            "",
            "1000",
            "1000:100",
            "1000:100:",
            "1000:100:relative",
            "-1:100:/h",
            "+1:100:/h",
            " 1:100:/h",
            "1:x:/h",
            "99999999999:1:/h",
        ] {
            assert_eq!(UserInfo::from_userbase("joe", bad), None, "{bad}");
        }
    }
}
