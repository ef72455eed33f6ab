//! The match rules: which action, if any, takes a recipient. The semantics
//! are OpenSMTPD's `ruleset.c` with the rule shapes of its `parse.y` and the
//! built-in tables of its `config.c`:
//!
//! - Rules are tried in order; the first whose every criterion holds wins.
//!   No match, or a `reject` rule, refuses the recipient; a table that
//!   cannot answer (a lookup key over 1023 bytes, say) refuses it for now.
//! - Criteria are evaluated in OpenSMTPD's order (tag, from, for, helo,
//!   auth, tls, mail-from, rcpt-to) and a rule is dropped at its first false
//!   one, so an error in a later criterion does not tempfail a rule that an
//!   earlier one already excluded.
//! - `!` negates a criterion, except that `! from rdns <table>` is false, not
//!   true, when the client has no reverse name (as in OpenSMTPD).
//! - A rule without `from` is `from local`; without `for`, `for local`.
//! - `from any`: anything. `from local`: the local socket, a loopback
//!   address, or one of this host's addresses. `from socket`: the local
//!   socket. `from src <t>`: the client address (`local` for the socket,
//!   `a.b.c.d`, `[v6]`; an IPv4-mapped IPv6 address counts as IPv4) as a
//!   netaddr. `from rdns [<t>]`: has a reverse name [matching the domain
//!   table]. `from auth [<t>]`: any host, authenticated [as a user in the
//!   table: a mailaddr lookup if the user has an `@`, else a string one].
//!   `from mail-from <t>`: any host, and the sender as a mailaddr.
//! - `for any`: any domain. `for local`: `localhost` or this host's name; an
//!   address literal is never local (OpenSMTPD's `<localnames>` holds our
//!   addresses without brackets, so `user@[127.0.0.1]` is not local there
//!   either). `for domain <t>`: the domain (a literal as `[a.b.c.d]` or
//!   `[ipv6:...]`) as a domain. `for rcpt-to <t>`: any domain, and the
//!   recipient as a mailaddr.
//! - `tag`, `helo`, `mail-from` (the null sender is `@`), `rcpt-to`, `auth`
//!   as their table kinds say; `regex` makes any of them a regex lookup.
//! - `tls`: the session is under TLS. (OpenSMTPD evaluates it as a temporary
//!   failure, "not until TLS flag is added to envelope"; we have the flag.)
//!
//! Tables are checked when the ruleset is built, as `parse.y`'s
//! `table_check_use()` does (a mapping where only a list may be used is an
//! error), and further: every entry of a `from src` table must be `local` or
//! a network, every regex must compile. A config that fails is refused.
//!
//! Replies: OpenSMTPD answers a refused recipient "550 Invalid recipient"
//! and a failed lookup "451 Temporary failure" (lka_session.c), each
//! followed by ": <user@domain>"; we add the enhanced codes the issue asks
//! for: 5.7.1 (delivery not authorized) and 4.3.0 (other mail system
//! status). `Decision::reply` gives the whole line.

use super::table::{Kind, RegexTable, Shape, Table, TableError, Tables};
use crate::config::ast::{self, Criterion, For, From, Match, Pattern, Pos};
use crate::config::view::LkaView;
use crate::smtp::address::Mailbox;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// What the policy knows about the SMTP session a recipient arrives in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The client's address; `None` on the local socket.
    pub addr: Option<IpAddr>,
    pub is_local_socket: bool,
    /// The client's reverse name, if it has one.
    pub rdns: Option<String>,
    pub helo: Option<String>,
    /// The user that authenticated, if one did.
    pub auth_user: Option<String>,
    /// The listener's tag.
    pub tag: Option<String>,
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept {
        action: String,
    },
    Reject {
        code: u16,
        enhanced: String,
        text: String,
    },
}

impl Decision {
    fn refused() -> Decision {
        Decision::Reject {
            code: 550,
            enhanced: "5.7.1".into(),
            text: "Invalid recipient".into(),
        }
    }

    fn tempfail() -> Decision {
        Decision::Reject {
            code: 451,
            enhanced: "4.3.0".into(),
            text: "Temporary failure".into(),
        }
    }

    /// The reply line for a refusal, as OpenSMTPD words it (without CRLF):
    /// `550 5.7.1 Invalid recipient: <user@domain>`. `None` for Accept.
    pub fn reply(&self, rcpt: &Mailbox) -> Option<String> {
        match self {
            Decision::Accept { .. } => None,
            Decision::Reject {
                code,
                enhanced,
                text,
            } => Some(format!("{code} {enhanced} {text}: <{rcpt}>")),
        }
    }
}

/// Which rule decided, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The index of the first rule that matched.
    Matched(usize),
    NoMatch,
    /// A table could not answer.
    TempFail,
}

/// This host, for `from local` and `for local`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalHost {
    /// `localhost`, the host name and any other names that are local.
    pub names: Vec<String>,
    /// The addresses of this host's interfaces (loopback is always local).
    pub addrs: Vec<IpAddr>,
}

impl LocalHost {
    /// `localhost` and `hostname`, and these addresses.
    pub fn new(hostname: &str, addrs: &[IpAddr]) -> LocalHost {
        LocalHost {
            names: vec!["localhost".into(), hostname.to_string()],
            addrs: addrs.to_vec(),
        }
    }
}

/// A config the ruleset cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.file.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", self.pos.file, self.pos.line, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// A table compared one way.
#[derive(Debug, Clone)]
enum Matcher {
    Table(Arc<Table>, Kind),
    Regex(Arc<RegexTable>),
    /// `auth <table>`: mailaddr if the user has an `@`, else string.
    AuthUser(Arc<Table>, char),
}

impl Matcher {
    fn eval(&self, key: &str) -> Result<bool, TableError> {
        match self {
            Matcher::Table(t, kind) => t.matches(*kind, key),
            Matcher::Regex(r) => r.matches(key),
            Matcher::AuthUser(t, delim) => {
                let kind = if key.contains('@') {
                    Kind::MailAddr {
                        subaddr_delim: *delim,
                    }
                } else {
                    Kind::String
                };
                t.matches(kind, key)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Tag(Matcher),
    FromAny,
    FromLocal,
    FromSocket,
    FromSrc(Matcher),
    FromRdns(Option<Matcher>),
    ForAny,
    ForLocal,
    ForDomain(Matcher),
    Helo(Matcher),
    Auth(Option<Matcher>),
    Tls,
    MailFrom(Matcher),
    RcptTo(Matcher),
}

impl Cond {
    /// OpenSMTPD's evaluation order.
    fn rank(&self) -> u8 {
        match self {
            Cond::Tag(_) => 0,
            Cond::FromAny
            | Cond::FromLocal
            | Cond::FromSocket
            | Cond::FromSrc(_)
            | Cond::FromRdns(_) => 1,
            Cond::ForAny | Cond::ForLocal | Cond::ForDomain(_) => 2,
            Cond::Helo(_) => 3,
            Cond::Auth(_) => 4,
            Cond::Tls => 5,
            Cond::MailFrom(_) => 6,
            Cond::RcptTo(_) => 7,
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    negate: bool,
    cond: Cond,
}

#[derive(Debug, Clone)]
struct Rule {
    steps: Vec<Step>,
    /// `None` for `reject`.
    action: Option<String>,
}

/// The match rules, built once from the config and then only read.
#[derive(Debug, Clone)]
pub struct Ruleset {
    rules: Vec<Rule>,
    local_names: Table,
    local_addrs: Vec<IpAddr>,
}

/// `MATCH_RESULT()`: an error stays an error, negation flips the rest.
fn apply(negate: bool, r: Result<bool, TableError>) -> Result<bool, TableError> {
    r.map(|b| b != negate)
}

/// What a criterion's table is used for, with OpenSMTPD's `table_check_use`
/// shapes and its error wording.
struct Use {
    what: &'static str,
    map_ok: bool,
}

struct Builder<'a> {
    tables: &'a Tables,
    delim: char,
    pos: &'a Pos,
}

impl Builder<'_> {
    fn err(&self, message: String) -> PolicyError {
        PolicyError {
            pos: self.pos.clone(),
            message,
        }
    }

    fn table(&self, p: &Pattern, u: &Use) -> Result<Arc<Table>, PolicyError> {
        let t = self
            .tables
            .resolve(&p.table)
            .map_err(|e| self.err(e.to_string()))?;
        let map_ok = u.map_ok && !p.regex;
        if t.shape() == Shape::Map && !map_ok {
            return Err(self.err(format!(
                "table \"{}\" may not be used for {} lookups",
                t.name(),
                u.what
            )));
        }
        Ok(t)
    }

    fn matcher(&self, p: &Pattern, kind: Kind, u: &Use) -> Result<Matcher, PolicyError> {
        let t = self.table(p, u)?;
        if p.regex {
            let r = RegexTable::compile(&t).map_err(|e| self.err(e.to_string()))?;
            return Ok(Matcher::Regex(Arc::new(r)));
        }
        t.validate(kind).map_err(|e| self.err(e))?;
        Ok(Matcher::Table(t, kind))
    }

    fn auth_matcher(&self, p: &Pattern, u: &Use) -> Result<Matcher, PolicyError> {
        if p.regex {
            return self.matcher(p, Kind::String, u);
        }
        Ok(Matcher::AuthUser(self.table(p, u)?, self.delim))
    }

    fn mailaddr(&self) -> Kind {
        Kind::MailAddr {
            subaddr_delim: self.delim,
        }
    }

    fn rule(&self, m: &Match) -> Result<Rule, PolicyError> {
        const LIST: bool = false;
        const MAP: bool = true;
        let u = |what, map_ok| Use { what, map_ok };
        let mut steps: Vec<Step> = Vec::new();
        let mut has_from = false;
        let mut has_for = false;
        let mut push = |negate: bool, cond: Cond| steps.push(Step { negate, cond });
        for (negate, c) in &m.criteria {
            let neg = *negate;
            match c {
                Criterion::From(f) => {
                    has_from = true;
                    match f {
                        From::Any => push(neg, Cond::FromAny),
                        From::Local => push(neg, Cond::FromLocal),
                        From::Socket => push(neg, Cond::FromSocket),
                        From::Src(p) => push(
                            neg,
                            Cond::FromSrc(self.matcher(p, Kind::NetAddr, &u("from", LIST))?),
                        ),
                        From::Rdns(p) => {
                            let m = match p {
                                Some(p) => Some(self.matcher(p, Kind::Domain, &u("rdns", LIST))?),
                                None => None,
                            };
                            push(neg, Cond::FromRdns(m));
                        }
                        // parse.y: `from auth` is `from any` and `auth`;
                        // the negation goes to the auth part.
                        From::Auth(p) => {
                            let m = match p {
                                Some(p) => Some(self.auth_matcher(p, &u("from", LIST))?),
                                None => None,
                            };
                            push(false, Cond::FromAny);
                            push(neg, Cond::Auth(m));
                        }
                        From::MailFrom(p) => {
                            let m = self.matcher(p, self.mailaddr(), &u("from", MAP))?;
                            push(false, Cond::FromAny);
                            push(neg, Cond::MailFrom(m));
                        }
                    }
                }
                Criterion::For(f) => {
                    has_for = true;
                    match f {
                        For::Any => push(neg, Cond::ForAny),
                        For::Local => push(neg, Cond::ForLocal),
                        For::Domain(p) => push(
                            neg,
                            Cond::ForDomain(self.matcher(p, Kind::Domain, &u("'for'", LIST))?),
                        ),
                        For::RcptTo(p) => {
                            let m = self.matcher(p, self.mailaddr(), &u("for", MAP))?;
                            push(false, Cond::ForAny);
                            push(neg, Cond::RcptTo(m));
                        }
                    }
                }
                Criterion::Tag(p) => push(
                    neg,
                    Cond::Tag(self.matcher(p, Kind::String, &u("tag", LIST))?),
                ),
                Criterion::Helo(p) => push(
                    neg,
                    Cond::Helo(self.matcher(p, Kind::Domain, &u("helo", LIST))?),
                ),
                Criterion::Tls => push(neg, Cond::Tls),
                Criterion::Auth(p) => {
                    let m = match p {
                        Some(p) => Some(self.auth_matcher(p, &u("auth", MAP))?),
                        None => None,
                    };
                    push(neg, Cond::Auth(m));
                }
                Criterion::MailFrom(p) => push(
                    neg,
                    Cond::MailFrom(self.matcher(p, self.mailaddr(), &u("mail-from", MAP))?),
                ),
                Criterion::RcptTo(p) => push(
                    neg,
                    Cond::RcptTo(self.matcher(p, self.mailaddr(), &u("rcpt-to", MAP))?),
                ),
            }
        }
        if !has_from {
            push(false, Cond::FromLocal);
        }
        if !has_for {
            push(false, Cond::ForLocal);
        }
        // Stable: two criteria of one rank keep their written order.
        steps.sort_by_key(|s| s.cond.rank());
        let action = match &m.decision {
            ast::Decision::Action(a) => Some(a.clone()),
            ast::Decision::Reject => None,
        };
        Ok(Rule { steps, action })
    }
}

/// The client address as OpenSMTPD's `ss_to_text()` writes it.
fn src_key(s: &SessionInfo) -> String {
    if s.is_local_socket {
        return "local".into();
    }
    match s.addr.map(|a| a.to_canonical()) {
        Some(IpAddr::V4(a)) => a.to_string(),
        Some(IpAddr::V6(a)) => format!("[{a}]"),
        // Neither the socket nor an address: matches no netaddr.
        None => "unknown".into(),
    }
}

/// `mailaddr_to_text()`: the null sender is `@`.
fn mailaddr_key(m: Option<&Mailbox>) -> String {
    match m {
        Some(m) => m.to_string(),
        None => "@".into(),
    }
}

impl Ruleset {
    /// Build the rules of `matches` over `tables`. `subaddr_delim` is the
    /// `smtp sub-addr-delim` setting (`+` by default).
    pub fn new(
        matches: &[Match],
        tables: &Tables,
        local: &LocalHost,
        subaddr_delim: char,
    ) -> Result<Ruleset, PolicyError> {
        let mut rules = Vec::with_capacity(matches.len());
        for m in matches {
            let b = Builder {
                tables,
                delim: subaddr_delim,
                pos: &m.pos,
            };
            rules.push(b.rule(m)?);
        }
        // A literal is never local: keep bracketed and wildcard names out.
        let names: Vec<String> = local
            .names
            .iter()
            .filter(|n| !n.is_empty() && !n.starts_with('[') && !n.contains('*'))
            .cloned()
            .collect();
        let local_names = Table::from_list("<localnames>", &names).map_err(|e| PolicyError {
            pos: Pos::default(),
            message: e.to_string(),
        })?;
        Ok(Ruleset {
            rules,
            local_names,
            local_addrs: local.addrs.iter().map(|a| a.to_canonical()).collect(),
        })
    }

    /// Read the lka view's tables (file tables from disk) and build.
    pub fn from_view(view: &LkaView, local_addrs: &[IpAddr]) -> Result<Ruleset, PolicyError> {
        let tables = Tables::load(&view.tables).map_err(|e| PolicyError {
            pos: Pos::default(),
            message: e.to_string(),
        })?;
        Ruleset::new(
            &view.matches,
            &tables,
            &LocalHost::new(&view.common.hostname, local_addrs),
            view.sub_addr_delim,
        )
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision for one recipient of a session.
    pub fn decide(&self, s: &SessionInfo, mail_from: Option<&Mailbox>, rcpt: &Mailbox) -> Decision {
        self.decision(self.evaluate(s, mail_from, rcpt, false))
    }

    /// The decision for an address an alias or `.forward` expanded to
    /// (OpenSMTPD's `EF_INTERNAL` envelopes): the source is `local`, and
    /// rules on `from socket` or on `from rdns` without a table never match.
    pub fn decide_expanded(
        &self,
        s: &SessionInfo,
        mail_from: Option<&Mailbox>,
        rcpt: &Mailbox,
    ) -> Decision {
        self.decision(self.evaluate(s, mail_from, rcpt, true))
    }

    fn decision(&self, o: Outcome) -> Decision {
        match o {
            Outcome::Matched(i) => match self.rules.get(i).and_then(|r| r.action.clone()) {
                Some(action) => Decision::Accept { action },
                None => Decision::refused(),
            },
            Outcome::NoMatch => Decision::refused(),
            Outcome::TempFail => Decision::tempfail(),
        }
    }

    /// Which rule takes the recipient (`ruleset_match()`).
    pub fn evaluate(
        &self,
        s: &SessionInfo,
        mail_from: Option<&Mailbox>,
        rcpt: &Mailbox,
        expanded: bool,
    ) -> Outcome {
        let ctx = Ctx {
            s,
            src: src_key(s),
            sender: mailaddr_key(mail_from),
            rcpt: rcpt.to_string(),
            domain: rcpt.domain.to_string(),
            expanded,
        };
        'rules: for (i, rule) in self.rules.iter().enumerate() {
            for step in &rule.steps {
                match self.step(&ctx, step) {
                    Ok(true) => {}
                    Ok(false) => continue 'rules,
                    Err(_) => return Outcome::TempFail,
                }
            }
            return Outcome::Matched(i);
        }
        Outcome::NoMatch
    }

    fn is_local_source(&self, s: &SessionInfo) -> bool {
        if s.is_local_socket {
            return true;
        }
        match s.addr.map(|a| a.to_canonical()) {
            Some(a) => a.is_loopback() || self.local_addrs.contains(&a),
            None => false,
        }
    }

    fn step(&self, c: &Ctx<'_>, step: &Step) -> Result<bool, TableError> {
        let neg = step.negate;
        let s = c.s;
        match &step.cond {
            Cond::Tag(m) => apply(neg, m.eval(s.tag.as_deref().unwrap_or(""))),
            Cond::FromAny | Cond::FromLocal | Cond::FromSocket | Cond::FromSrc(_) if c.expanded => {
                // EF_INTERNAL: the key is "local", which every built-in
                // source table holds; rules on the socket never match.
                match &step.cond {
                    Cond::FromSocket => Ok(false),
                    Cond::FromSrc(m) => apply(neg, m.eval("local")),
                    _ => apply(neg, Ok(true)),
                }
            }
            Cond::FromRdns(m) if c.expanded => match m {
                None => Ok(false),
                Some(m) => apply(neg, m.eval("local")),
            },
            Cond::FromAny => apply(neg, Ok(true)),
            Cond::FromLocal => apply(neg, Ok(self.is_local_source(s))),
            Cond::FromSocket => apply(neg, Ok(s.is_local_socket)),
            Cond::FromSrc(m) => apply(neg, m.eval(&c.src)),
            Cond::FromRdns(None) => apply(neg, Ok(s.rdns.is_some())),
            Cond::FromRdns(Some(m)) => match &s.rdns {
                // Not negated: no name, no match, as OpenSMTPD.
                None => Ok(false),
                Some(name) => apply(neg, m.eval(name)),
            },
            Cond::ForAny => apply(neg, Ok(true)),
            Cond::ForLocal => apply(neg, self.local_names.matches(Kind::Domain, &c.domain)),
            Cond::ForDomain(m) => apply(neg, m.eval(&c.domain)),
            Cond::Helo(m) => apply(neg, m.eval(s.helo.as_deref().unwrap_or(""))),
            Cond::Auth(m) => {
                let r = match (&s.auth_user, m) {
                    (None, _) => Ok(false),
                    (Some(_), None) => Ok(true),
                    (Some(user), Some(m)) => m.eval(user),
                };
                apply(neg, r)
            }
            Cond::Tls => apply(neg, Ok(s.tls)),
            Cond::MailFrom(m) => apply(neg, m.eval(&c.sender)),
            Cond::RcptTo(m) => apply(neg, m.eval(&c.rcpt)),
        }
    }
}

/// The lookup keys of one evaluation, computed once.
struct Ctx<'a> {
    s: &'a SessionInfo,
    src: String,
    sender: String,
    rcpt: String,
    domain: String,
    expanded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ast::{Decision as AstDecision, TableRef, TableSource};
    use crate::smtp::address::parse_path;

    const HOST: &str = "mx.example.org";

    fn local_host() -> LocalHost {
        LocalHost::new(
            HOST,
            &[
                "192.0.2.25".parse().unwrap(),
                "2001:db8::25".parse().unwrap(),
            ],
        )
    }

    /// Rules from smtpd.conf text (through the real config parser).
    fn rules(conf: &str) -> Ruleset {
        let loaded = crate::config::parse("test.conf", conf.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("{e:?}"));
        let tables = Tables::load(&loaded.config.tables).unwrap();
        Ruleset::new(&loaded.config.matches, &tables, &local_host(), '+').unwrap()
    }

    fn rules_err(conf: &str) -> String {
        let loaded = crate::config::parse("test.conf", conf.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("{e:?}"));
        let tables = Tables::load(&loaded.config.tables).unwrap();
        Ruleset::new(&loaded.config.matches, &tables, &local_host(), '+')
            .unwrap_err()
            .to_string()
    }

    const ACTIONS: &str =
        "action \"a\" mbox\naction \"b\" mbox\naction \"local\" mbox\naction \"relay\" relay\n";

    fn with_actions(m: &str) -> Ruleset {
        rules(&format!("{ACTIONS}{m}\n"))
    }

    fn mb(s: &str) -> Mailbox {
        parse_path(s, false).unwrap().unwrap()
    }

    fn remote() -> SessionInfo {
        SessionInfo {
            addr: Some("203.0.113.7".parse().unwrap()),
            ..SessionInfo::default()
        }
    }

    fn socket() -> SessionInfo {
        SessionInfo {
            is_local_socket: true,
            ..SessionInfo::default()
        }
    }

    fn loopback() -> SessionInfo {
        SessionInfo {
            addr: Some("127.0.0.1".parse().unwrap()),
            ..SessionInfo::default()
        }
    }

    /// The action taken, or None if refused.
    fn act(r: &Ruleset, s: &SessionInfo, from: Option<&str>, rcpt: &str) -> Option<String> {
        let from = from.map(mb);
        match r.decide(s, from.as_ref(), &mb(rcpt)) {
            Decision::Accept { action } => Some(action),
            Decision::Reject { code, .. } => {
                assert_eq!(code, 550);
                None
            }
        }
    }

    fn hit(r: &Ruleset, s: &SessionInfo, rcpt: &str) -> bool {
        act(r, s, Some("sender@example.net"), rcpt).is_some()
    }

    #[test]
    fn defaults_are_from_local_for_local() {
        let r = with_actions("match action \"a\"");
        assert!(hit(&r, &socket(), "u@localhost"));
        assert!(hit(&r, &loopback(), &format!("u@{HOST}")));
        assert!(hit(&r, &loopback(), "u@MX.Example.ORG"));
        assert!(!hit(&r, &loopback(), "u@example.org"));
        assert!(!hit(&r, &remote(), "u@localhost"));
    }

    #[test]
    fn replies() {
        let r = with_actions("match from any for domain example.org reject");
        let d = r.decide(&remote(), None, &mb("u@example.org"));
        assert_eq!(
            d.reply(&mb("u@example.org")).unwrap(),
            "550 5.7.1 Invalid recipient: <u@example.org>"
        );
        let d = r.decide(&remote(), None, &mb("u@example.net"));
        assert_eq!(
            d,
            Decision::Reject {
                code: 550,
                enhanced: "5.7.1".into(),
                text: "Invalid recipient".into()
            }
        );
        let r = with_actions("match from any helo \"x\" action \"a\"");
        let s = SessionInfo {
            helo: Some("h".repeat(2000)),
            ..remote()
        };
        let d = r.decide(&s, None, &mb(&format!("u@{HOST}")));
        assert_eq!(
            d.reply(&mb("u@x.org")).unwrap(),
            "451 4.3.0 Temporary failure: <u@x.org>"
        );
        assert_eq!(
            Decision::Accept { action: "a".into() }.reply(&mb("u@x.org")),
            None
        );
    }

    #[test]
    fn first_match_wins() {
        let r = with_actions(
            "match from any for domain example.org action \"a\"\n\
             match from any for domain { example.org, example.net } action \"b\"\n\
             match from any for any reject\n\
             match from any for any action \"relay\"",
        );
        assert_eq!(
            act(&r, &remote(), None, "u@example.org").as_deref(),
            Some("a")
        );
        assert_eq!(
            act(&r, &remote(), None, "u@example.net").as_deref(),
            Some("b")
        );
        assert_eq!(act(&r, &remote(), None, "u@example.com"), None);
        let u = mb("u@example.net");
        assert_eq!(r.evaluate(&remote(), None, &u, false), Outcome::Matched(1));
        assert_eq!(
            r.evaluate(&remote(), None, &mb("u@example.com"), false),
            Outcome::Matched(2)
        );
        let empty = Ruleset::new(&[], &Tables::default(), &local_host(), '+').unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.evaluate(&socket(), None, &u, false), Outcome::NoMatch);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn from_criteria() {
        let cases: &[(&str, &[(SessionInfo, bool)])] = &[
            (
                "from any",
                &[(remote(), true), (socket(), true), (loopback(), true)],
            ),
            ("! from any", &[(remote(), false), (socket(), false)]),
            (
                "from local",
                &[
                    (remote(), false),
                    (socket(), true),
                    (loopback(), true),
                    (
                        SessionInfo {
                            addr: Some("127.0.0.2".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                    (
                        SessionInfo {
                            addr: Some("::1".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                    (
                        SessionInfo {
                            addr: Some("::ffff:127.0.0.1".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                    (
                        SessionInfo {
                            addr: Some("192.0.2.25".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                    (
                        SessionInfo {
                            addr: Some("2001:db8::25".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                    (
                        SessionInfo {
                            addr: Some("192.0.2.26".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        false,
                    ),
                    (SessionInfo::default(), false),
                ],
            ),
            (
                "! from local",
                &[(remote(), true), (socket(), false), (loopback(), false)],
            ),
            (
                "from socket",
                &[(remote(), false), (socket(), true), (loopback(), false)],
            ),
            (
                "! from socket",
                &[(remote(), true), (socket(), false), (loopback(), true)],
            ),
            (
                "from src { 203.0.113.0/24, \"[2001:db8::/32]\" }",
                &[
                    (remote(), true),
                    (socket(), false),
                    (loopback(), false),
                    (
                        SessionInfo {
                            addr: Some("2001:db8:5::1".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                    (
                        SessionInfo {
                            addr: Some("::ffff:203.0.113.9".parse().unwrap()),
                            ..SessionInfo::default()
                        },
                        true,
                    ),
                ],
            ),
            (
                "! from src 203.0.113.7",
                &[(remote(), false), (loopback(), true)],
            ),
            ("from src \"local\"", &[(remote(), false), (socket(), true)]),
            (
                "from src regex \"^203\\.0\\.\"",
                &[(remote(), true), (loopback(), false), (socket(), false)],
            ),
        ];
        for (crit, sessions) in cases {
            let r = with_actions(&format!("match {crit} for any action \"a\""));
            for (s, want) in sessions.iter() {
                assert_eq!(hit(&r, s, "u@example.com"), *want, "{crit}: {s:?}");
            }
        }
    }

    #[test]
    fn from_rdns() {
        let named = SessionInfo {
            rdns: Some("Mail.Example.NET".into()),
            ..remote()
        };
        let other = SessionInfo {
            rdns: Some("host.example.com".into()),
            ..remote()
        };
        let r = with_actions("match from rdns for any action \"a\"");
        assert!(hit(&r, &named, "u@x.org"));
        assert!(!hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match ! from rdns for any action \"a\"");
        assert!(!hit(&r, &named, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match from rdns \"*.example.net\" for any action \"a\"");
        assert!(hit(&r, &named, "u@x.org"));
        assert!(!hit(&r, &other, "u@x.org"));
        assert!(!hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match ! from rdns \"*.example.net\" for any action \"a\"");
        assert!(!hit(&r, &named, "u@x.org"));
        assert!(hit(&r, &other, "u@x.org"));
        // No reverse name: no match even negated, as OpenSMTPD.
        assert!(!hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match from rdns regex \"example\\.com$\" for any action \"a\"");
        assert!(hit(&r, &other, "u@x.org"));
        assert!(!hit(&r, &named, "u@x.org"));
    }

    #[test]
    fn from_and_match_auth() {
        let joe = SessionInfo {
            auth_user: Some("Joe".into()),
            ..remote()
        };
        let ann = SessionInfo {
            auth_user: Some("ann@example.org".into()),
            ..remote()
        };
        let r = with_actions("match from auth for any action \"a\"");
        assert!(hit(&r, &joe, "u@x.org"));
        assert!(!hit(&r, &remote(), "u@x.org"));
        assert!(!hit(&r, &socket(), "u@x.org"));
        let r = with_actions("match ! from auth for any action \"a\"");
        assert!(!hit(&r, &joe, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));
        assert!(hit(&r, &socket(), "u@x.org"));
        let r = with_actions("match from auth { joe, \"@example.org\" } for any action \"a\"");
        assert!(hit(&r, &joe, "u@x.org"));
        assert!(hit(&r, &ann, "u@x.org"));
        assert!(!hit(
            &r,
            &SessionInfo {
                auth_user: Some("bob".into()),
                ..remote()
            },
            "u@x.org"
        ));
        let r = with_actions("match ! from auth joe for any action \"a\"");
        assert!(!hit(&r, &joe, "u@x.org"));
        assert!(hit(&r, &ann, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));
        // The `auth` option, with the default `from local`.
        let r = with_actions("match auth for any action \"a\"");
        assert!(!hit(&r, &joe, "u@x.org"));
        let joe_local = SessionInfo {
            auth_user: Some("joe".into()),
            ..loopback()
        };
        assert!(hit(&r, &joe_local, "u@x.org"));
        assert!(!hit(&r, &loopback(), "u@x.org"));
        let r = with_actions("match from any auth regex \"^j\" for any action \"a\"");
        assert!(hit(&r, &joe, "u@x.org"));
        assert!(!hit(&r, &ann, "u@x.org"));
        let r = with_actions("match from any ! auth for any action \"a\"");
        assert!(!hit(&r, &joe, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));
    }

    #[test]
    fn credentials_table_as_auth_list() {
        let dir = std::env::temp_dir().join(format!("smtpd-rs-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("creds");
        std::fs::write(
            &p,
            "joe $2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie\n",
        )
        .unwrap();
        let path = p.to_string_lossy();
        let conf = format!(
            "table creds file:{path}\n{ACTIONS}match from any auth <creds> for any action \"a\"\n"
        );
        let r = rules(&conf);
        let joe = SessionInfo {
            auth_user: Some("joe".into()),
            ..remote()
        };
        assert!(hit(&r, &joe, "u@x.org"));
        // `from auth <t>` takes lists only, as parse.y.
        let conf = format!(
            "table creds file:{path}\n{ACTIONS}match from auth <creds> for any action \"a\"\n"
        );
        assert!(rules_err(&conf).contains("may not be used for from lookups"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn for_criteria() {
        let s = remote();
        let r = with_actions("match from any for local action \"a\"");
        assert!(hit(&r, &s, "u@localhost"));
        assert!(hit(&r, &s, "u@MX.EXAMPLE.ORG"));
        assert!(!hit(&r, &s, "u@example.org"));
        assert!(!hit(&r, &s, "u@[192.0.2.25]"));
        assert!(!hit(&r, &s, "u@[127.0.0.1]"));
        assert!(!hit(&r, &s, "u@[IPv6:::1]"));
        let r = with_actions("match from any ! for local action \"a\"");
        assert!(!hit(&r, &s, "u@localhost"));
        assert!(hit(&r, &s, "u@example.org"));
        let r = with_actions("match from any for any action \"a\"");
        assert!(hit(&r, &s, "u@example.org"));
        assert!(hit(&r, &s, "u@[192.0.2.99]"));
        let r = with_actions("match from any ! for any action \"a\"");
        assert!(!hit(&r, &s, "u@example.org"));
        let r = with_actions(
            "match from any for domain { example.org, \"*.example.net\" } action \"a\"",
        );
        assert!(hit(&r, &s, "u@Example.Org"));
        assert!(hit(&r, &s, "u@mx.example.net"));
        assert!(!hit(&r, &s, "u@example.net"));
        assert!(!hit(&r, &s, "u@example.org.evil.example"));
        let r = with_actions("match from any ! for domain example.org action \"a\"");
        assert!(!hit(&r, &s, "u@example.org"));
        assert!(hit(&r, &s, "u@example.net"));
        let r = with_actions("match from any for domain \"[192.0.2.99]\" action \"a\"");
        assert!(hit(&r, &s, "u@[192.0.2.99]"));
        let r =
            with_actions("match from any for domain regex \"^example\\.(org|net)$\" action \"a\"");
        assert!(hit(&r, &s, "u@example.net"));
        assert!(!hit(&r, &s, "u@example.com"));
        let r = with_actions(
            "match from any for rcpt-to { joe@example.org, \"@example.net\" } action \"a\"",
        );
        assert!(hit(&r, &s, "Joe@example.org"));
        assert!(hit(&r, &s, "joe+list@example.org"));
        assert!(!hit(&r, &s, "ann@example.org"));
        assert!(hit(&r, &s, "ann@example.net"));
        let r = with_actions("match from any ! for rcpt-to joe@example.org action \"a\"");
        assert!(!hit(&r, &s, "joe@example.org"));
        assert!(hit(&r, &s, "ann@example.org"));
    }

    #[test]
    fn other_criteria() {
        let tagged = SessionInfo {
            tag: Some("MSA".into()),
            ..remote()
        };
        let r = with_actions("match from any tag msa for any action \"a\"");
        assert!(hit(&r, &tagged, "u@x.org"));
        assert!(!hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match from any ! tag msa for any action \"a\"");
        assert!(!hit(&r, &tagged, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match from any tag regex \"^m\" for any action \"a\"");
        assert!(hit(&r, &tagged, "u@x.org"));

        let helo = SessionInfo {
            helo: Some("client.example.net".into()),
            ..remote()
        };
        let r = with_actions("match from any helo \"*.example.net\" for any action \"a\"");
        assert!(hit(&r, &helo, "u@x.org"));
        assert!(!hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match from any ! helo \"*.example.net\" for any action \"a\"");
        assert!(!hit(&r, &helo, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));

        let tls = SessionInfo {
            tls: true,
            ..remote()
        };
        let r = with_actions("match from any tls for any action \"a\"");
        assert!(hit(&r, &tls, "u@x.org"));
        assert!(!hit(&r, &remote(), "u@x.org"));
        let r = with_actions("match from any ! tls for any action \"a\"");
        assert!(!hit(&r, &tls, "u@x.org"));
        assert!(hit(&r, &remote(), "u@x.org"));

        let r = with_actions("match from any mail-from \"@example.net\" for any action \"a\"");
        assert!(act(&r, &remote(), Some("s@example.net"), "u@x.org").is_some());
        assert!(act(&r, &remote(), Some("s@example.com"), "u@x.org").is_none());
        assert!(act(&r, &remote(), None, "u@x.org").is_none());
        let r = with_actions("match from any ! mail-from \"@example.net\" for any action \"a\"");
        assert!(act(&r, &remote(), Some("s@example.net"), "u@x.org").is_none());
        assert!(act(&r, &remote(), None, "u@x.org").is_some());
        let r = with_actions("match from mail-from \"@\" for any action \"a\"");
        assert!(act(&r, &remote(), None, "u@x.org").is_some());
        let r = with_actions("match from any mail-from regex \"^@$\" for any action \"a\"");
        assert!(act(&r, &remote(), None, "u@x.org").is_some());
        assert!(act(&r, &remote(), Some("s@x.org"), "u@x.org").is_none());

        let r = with_actions("match from any for any rcpt-to \"postmaster\" action \"a\"");
        assert!(hit(&r, &remote(), "PostMaster@anything.example"));
        assert!(!hit(&r, &remote(), "root@anything.example"));
        let r = with_actions("match from any for any ! rcpt-to \"postmaster\" action \"a\"");
        assert!(!hit(&r, &remote(), "postmaster@x.org"));
    }

    #[test]
    fn evaluation_order_and_tempfail() {
        let long = SessionInfo {
            helo: Some("h".repeat(2000)),
            tag: None,
            ..remote()
        };
        // The tag excludes rule 0 before its helo lookup could fail.
        let r = with_actions(
            "match from any tag t helo \"x\" for any action \"a\"\n\
             match from any for any action \"b\"",
        );
        assert_eq!(act(&r, &long, None, "u@x.org").as_deref(), Some("b"));
        // Without it the failed lookup is a temporary failure.
        let r = with_actions(
            "match from any helo \"x\" for any action \"a\"\n\
             match from any for any action \"b\"",
        );
        assert_eq!(
            r.evaluate(&long, None, &mb("u@x.org"), false),
            Outcome::TempFail
        );
        match r.decide(&long, None, &mb("u@x.org")) {
            Decision::Reject { code, .. } => assert_eq!(code, 451),
            d => panic!("{d:?}"),
        }
        // A later criterion is not consulted once an earlier one failed,
        // whatever the order they were written in.
        let r = with_actions(
            "match helo \"x\" from src 198.51.100.1 for any action \"a\"\n\
             match from any for any action \"b\"",
        );
        assert_eq!(act(&r, &long, None, "u@x.org").as_deref(), Some("b"));
    }

    #[test]
    fn expanded_envelopes() {
        let r = with_actions(
            "match from socket for any action \"a\"\n\
             match from rdns for any action \"a\"\n\
             match from local for any action \"relay\"",
        );
        let rc = mb("u@example.net");
        assert_eq!(
            r.decide_expanded(&remote(), None, &rc),
            Decision::Accept {
                action: "relay".into()
            }
        );
        let r = with_actions("match ! from socket for any action \"a\"");
        assert!(matches!(
            r.decide_expanded(&remote(), None, &rc),
            Decision::Reject { code: 550, .. }
        ));
        let r = with_actions("match from src \"local\" for any action \"a\"");
        assert!(matches!(
            r.decide_expanded(&remote(), None, &rc),
            Decision::Accept { .. }
        ));
    }

    #[test]
    fn table_checks() {
        let dir = std::env::temp_dir().join(format!("smtpd-rs-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("map");
        std::fs::write(&p, "a b\n").unwrap();
        let map = format!("table m file:{}\n", p.to_string_lossy());
        for m in [
            "match from src <m> for any action \"a\"",
            "match for domain <m> action \"a\"",
            "match tag <m> action \"a\"",
            "match helo <m> action \"a\"",
            "match from rdns <m> action \"a\"",
        ] {
            let e = rules_err(&format!("{map}{ACTIONS}{m}\n"));
            assert!(e.contains("may not be used for"), "{m}: {e}");
            assert!(e.starts_with("test.conf:"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let e = rules_err(&format!(
            "{ACTIONS}match from src {{ \"10/8\", bogus }} for any action \"a\"\n"
        ));
        assert!(e.contains("not a valid network address"), "{e}");
        let e = rules_err(&format!(
            "{ACTIONS}match from any for domain regex \"(\" action \"a\"\n"
        ));
        assert!(e.contains("bad regex"), "{e}");
        let ok = with_actions(
            "match from src { \"local\", \"10/8\", \"[::1]\", \"::/0\" } for any action \"a\"",
        );
        assert_eq!(ok.len(), 1);
        // The AST can name a table the Tables lack (a view built by hand).
        let m = Match {
            pos: Pos::default(),
            criteria: vec![(
                false,
                Criterion::Tag(Pattern {
                    regex: false,
                    table: TableRef::Named("nope".into()),
                }),
            )],
            decision: AstDecision::Reject,
        };
        let e = Ruleset::new(&[m], &Tables::default(), &local_host(), '+').unwrap_err();
        assert!(e.to_string().contains("no such table"), "{e}");
        // db: tables are a clear error.
        let view = LkaView {
            common: crate::config::view::Common {
                hostname: HOST.into(),
            },
            tables: vec![ast::Table {
                pos: Pos::default(),
                name: "aliases".into(),
                source: TableSource::Backend {
                    backend: "db".into(),
                    path: "/etc/mail/aliases.db".into(),
                },
            }],
            actions: vec![],
            matches: vec![],
            filters: vec![],
            procs: vec![],
            wrappers: vec![],
            sub_addr_delim: '+',
            table_files: vec![],
            local_addrs: vec![],
            listener_auth: vec![],
            listener_senders: vec![],
            srs: None,
        };
        let e = Ruleset::from_view(&view, &[]).unwrap_err();
        assert!(
            e.to_string().contains("db: tables are not supported yet"),
            "{e}"
        );
    }

    /// The classic relay tricks: every one is refused by the address parser
    /// or by the rules; none ever reaches the relay action for a client
    /// that is neither local nor authenticated.
    const TRICKS: &[&str] = &[
        "user@evil.example",
        "user%evil.example@mx.example.org",
        "user%evil.example@[192.0.2.25]",
        "\"user@evil.example\"",
        "\"user%evil.example\"@mx.example.org",
        "\"user@evil.example\"@mx.example.org",
        "user@evil.example@mx.example.org",
        "@mx.example.org:user@evil.example",
        "@[192.0.2.25]:user@evil.example",
        "evil.example!user",
        "evil.example!user@mx.example.org",
        "evil.example!user@[192.0.2.25]",
        "user@[192.0.2.99]",
        "user@[192.0.2.25]",
        "user@[127.0.0.1]",
        "user@[IPv6:::1]",
        "user@[IPv6:::ffff:192.0.2.25]",
        "user@mx.example.org.",
        "user@evil.example.",
        "user@localhost.",
        "USER@EVIL.EXAMPLE",
        "user@192.0.2.25",
        "user\\@evil.example@mx.example.org",
        "user@mx.example.org,user@evil.example",
        "user@evil.example%mx.example.org",
        "user@mx.example.org.evil.example",
        "user@evil.example\u{ff0e}mx.example.org",
        "user\u{ff20}evil.example@mx.example.org",
        "user@evil.example\0@mx.example.org",
    ];

    /// Parse as the dispatcher would (with and without SMTPUTF8) and
    /// decide: the actions a trick can get.
    fn trick_actions(r: &Ruleset, s: &SessionInfo, trick: &str) -> Vec<String> {
        let mut out = Vec::new();
        for utf8 in [false, true] {
            if let Ok(Some(rcpt)) = parse_path(trick, utf8) {
                if let Decision::Accept { action } = r.decide(s, Some(&mb("x@example.net")), &rcpt)
                {
                    out.push(action);
                }
            }
        }
        out
    }

    fn remote_clients() -> Vec<SessionInfo> {
        vec![
            remote(),
            SessionInfo {
                addr: Some("2001:db8:bad::1".parse().unwrap()),
                rdns: Some("mx.example.org".into()),
                helo: Some("localhost".into()),
                tls: true,
                tag: Some("relay".into()),
                ..SessionInfo::default()
            },
            // Neither the socket nor an address: not local either.
            SessionInfo::default(),
        ]
    }

    #[test]
    fn openbsd_default_config_relays_nothing_for_remote_clients() {
        let r = rules(
            "listen on localhost\naction \"local\" mbox\naction \"relay\" relay\n\
             match from local for local action \"local\"\n\
             match from local for any action \"relay\"\n",
        );
        for s in remote_clients() {
            for t in TRICKS {
                assert_eq!(trick_actions(&r, &s, t), Vec::<String>::new(), "{t} {s:?}");
            }
            assert!(!hit(&r, &s, "user@mx.example.org"));
            assert!(!hit(&r, &s, "user@localhost"));
        }
        // The same rules do relay for this host's own clients.
        assert_eq!(
            act(&r, &socket(), None, "user@evil.example").as_deref(),
            Some("relay")
        );
        assert_eq!(
            act(&r, &loopback(), None, "user@localhost").as_deref(),
            Some("local")
        );
    }

    #[test]
    fn mx_config_relays_nothing_for_remote_clients() {
        let r = rules(
            "table domains { example.org, mx.example.org }\n\
             action \"local\" maildir\naction \"relay\" relay\n\
             match from any for domain <domains> action \"local\"\n\
             match from local for any action \"relay\"\n\
             match from auth for any action \"relay\"\n",
        );
        for s in remote_clients() {
            for t in TRICKS {
                let got = trick_actions(&r, &s, t);
                assert!(!got.iter().any(|a| a == "relay"), "{t} {s:?}: {got:?}");
            }
            // What a remote client may do: deliver to our domains.
            assert_eq!(
                act(&r, &s, None, "user@Example.ORG").as_deref(),
                Some("local")
            );
        }
        // Only uppercase, quoted-but-plain and our own domains get through,
        // all to local delivery.
        for t in [
            "USER@MX.EXAMPLE.ORG",
            "\"user\"@mx.example.org",
            "user+tag@example.org",
        ] {
            assert_eq!(trick_actions(&r, &remote(), t), ["local", "local"], "{t}");
        }
        // Authenticated, the same client relays.
        let auth = SessionInfo {
            auth_user: Some("joe".into()),
            ..remote()
        };
        assert_eq!(
            act(&r, &auth, None, "user@evil.example").as_deref(),
            Some("relay")
        );
    }
}
