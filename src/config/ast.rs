//! The parsed smtpd.conf: typed, so a value that exists is well formed.
//! Every top-level item keeps where it was written, for errors and checks.
//! Names of tables, actions, pki, ca, filters and procs are resolved by
//! `check.rs`, not here.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// Where an item was written: file and line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pos {
    pub file: String,
    pub line: usize,
}

/// A table used by an option: a `<name>` reference, or an inline value or
/// `{ ... }` list that becomes an anonymous table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableRef {
    Named(String),
    Inline(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableSource {
    /// `table NAME [backend:]/path`; a bare absolute path is a static file.
    Backend { backend: String, path: String },
    /// `table NAME { a, b }`
    List(Vec<String>),
    /// `table NAME { k = v, ... }`
    Map(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub pos: Pos,
    pub name: String,
    pub source: TableSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pki {
    pub pos: Pos,
    /// Lower-cased, as OpenSMTPD stores it.
    pub name: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub dhe: Option<String>,
    /// The line of `pki NAME key FILE`, for errors about the key.
    pub key_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ca {
    pub pos: Pos,
    pub name: String,
    pub cert: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Inet4,
    Inet6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    /// STARTTLS offered.
    StartTls,
    /// STARTTLS required before MAIL.
    Require { verify: bool },
    /// TLS from the first byte.
    Smtps { verify: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMode {
    Required,
    Optional,
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenOn {
    /// `listen on socket`: /var/run/smtpd.sock, for the local enqueuer.
    Socket,
    /// An address literal.
    Addr(IpAddr),
    /// An interface, interface group or host name.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListenOpts {
    pub family: Option<Family>,
    /// The port as written (number or service name).
    pub port: Option<u16>,
    pub tls: Option<TlsMode>,
    pub pki: Vec<String>,
    pub ca: Option<String>,
    pub auth: Option<(AuthMode, Option<TableRef>)>,
    pub tag: Option<String>,
    pub hostname: Option<String>,
    pub hostnames: Option<TableRef>,
    pub senders: Option<(TableRef, bool)>,
    pub mask_src: bool,
    pub no_dsn: bool,
    pub proxy_v2: bool,
    pub received_auth: bool,
    pub filter: Option<FilterRef>,
    pub ciphers: Option<String>,
    pub protocols: Option<String>,
}

/// `filter NAME` or `filter { a, b }` on a listener or relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterRef {
    Named(String),
    Chain(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub pos: Pos,
    pub on: ListenOn,
    pub opts: ListenOpts,
}

/// How an action delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Mbox,
    Maildir {
        path: Option<String>,
        junk: bool,
    },
    Lmtp {
        dest: String,
        rcpt_to: bool,
    },
    Mda(String),
    ForwardOnly,
    ExpandOnly,
    /// Boxed: it is much larger than the other methods.
    Relay(Box<RelayOpts>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RelayOpts {
    pub backup: Option<Option<String>>,
    pub host: Option<TableRef>,
    pub domain: Option<TableRef>,
    pub helo: Option<String>,
    pub helo_src: Option<TableRef>,
    pub pki: Option<String>,
    pub ca: Option<String>,
    pub srs: bool,
    /// `tls` (Some(true)) or `tls no-verify` (Some(false)).
    pub tls: Option<bool>,
    pub auth: Option<TableRef>,
    pub mail_from: Option<String>,
    pub src: Option<TableRef>,
    pub filter: Option<FilterRef>,
    pub ciphers: Option<String>,
    pub protocols: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalOpts {
    pub alias: Option<TableRef>,
    pub virtual_: Option<TableRef>,
    pub userbase: Option<TableRef>,
    pub user: Option<String>,
    pub wrapper: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub pos: Pos,
    pub name: String,
    pub method: Method,
    pub local: LocalOpts,
    pub ttl: Option<Duration>,
}

/// What a match criterion compares against: a table (by reference or
/// inline), optionally of regular expressions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    pub regex: bool,
    pub table: TableRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum From {
    Any,
    Local,
    Socket,
    Src(Pattern),
    Rdns(Option<Pattern>),
    Auth(Option<Pattern>),
    MailFrom(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum For {
    Any,
    Local,
    Domain(Pattern),
    RcptTo(Pattern),
}

/// One criterion of a match rule, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Criterion {
    From(From),
    For(For),
    Tag(Pattern),
    Helo(Pattern),
    Tls,
    Auth(Option<Pattern>),
    MailFrom(Pattern),
    RcptTo(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Action(String),
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub pos: Pos,
    pub criteria: Vec<(bool, Criterion)>,
    pub decision: Decision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Connect,
    Helo,
    Ehlo,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    Commit,
}

/// A builtin filter's condition (`filter ... phase P match [!]COND`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterCond {
    Fcrdns,
    Rdns(Option<Pattern>),
    Src(Pattern),
    Helo(Pattern),
    Auth(Option<Pattern>),
    MailFrom(Pattern),
    RcptTo(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterVerdict {
    Junk,
    Bypass,
    Reject(String),
    Disconnect(String),
    Rewrite(String),
    Report(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcOpts {
    pub user: Option<String>,
    pub group: Option<String>,
    pub chroot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterKind {
    Builtin {
        phase: Phase,
        negate: bool,
        cond: FilterCond,
        verdict: FilterVerdict,
    },
    Proc(String),
    ProcExec {
        command: String,
        opts: ProcOpts,
    },
    Chain(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub pos: Pos,
    pub name: String,
    pub kind: FilterKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pos: Pos,
    pub name: String,
    pub command: String,
    pub opts: ProcOpts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdaWrapper {
    pub pos: Pos,
    pub name: String,
    pub command: String,
}

/// Global settings with OpenSMTPD's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub queue_compression: bool,
    /// `queue encryption [key]`: Some(None) reads the key at start.
    pub queue_encryption: Option<Option<String>>,
    pub queue_ttl: Duration,
    pub bounce_warn: Vec<Duration>,
    pub smtp_ciphers: Option<String>,
    pub max_mails: u64,
    pub max_rcpt: u64,
    pub max_message_size: u64,
    pub sub_addr_delim: char,
    /// `smtpd -P mda` / `-P mta`: start with local deliveries or relaying
    /// paused (never from the file).
    pub pause_mda: bool,
    pub pause_mta: bool,
    /// `smtpd -P smtp`: start without accepting SMTP sessions.
    pub pause_smtp: bool,
    pub mta_max_deferred: u64,
    pub srs_key: Option<String>,
    pub srs_key_backup: Option<String>,
    pub srs_ttl: Duration,
    pub admd: Option<String>,
    /// `smtp limit`/`mda limit`/`mta limit`/`scheduler limit` KEY N pairs,
    /// kept as written: each is checked against the keys OpenSMTPD knows.
    pub limits: Vec<(String, String, u64)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue_compression: false,
            queue_encryption: None,
            queue_ttl: Duration::from_secs(4 * 86400),
            bounce_warn: vec![Duration::from_secs(4 * 3600)],
            smtp_ciphers: None,
            max_mails: 100,
            max_rcpt: 1000,
            max_message_size: 35 * 1024 * 1024,
            sub_addr_delim: '+',
            pause_mda: false,
            pause_mta: false,
            pause_smtp: false,
            mta_max_deferred: 100,
            srs_key: None,
            srs_key_backup: None,
            srs_ttl: Duration::from_secs(4 * 86400),
            admd: None,
            limits: Vec::new(),
        }
    }
}

/// The whole config, in the order things were declared.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Config {
    pub tables: Vec<Table>,
    pub pkis: Vec<Pki>,
    pub cas: Vec<Ca>,
    pub listens: Vec<Listen>,
    pub actions: Vec<Action>,
    pub matches: Vec<Match>,
    pub filters: Vec<Filter>,
    pub procs: Vec<Proc>,
    pub wrappers: Vec<MdaWrapper>,
    pub settings: Settings,
}
