//! table(5): the static tables of smtpd.conf (`{ a, b }`, `{ k = v }`) and
//! `file:` tables, with OpenSMTPD's lookup rules (table.c, table_static.c,
//! util.c, to.c).
//!
//! File format, as table(5) and `parse_table_line()` have it: one entry a
//! line; blank lines and lines whose first non-blank character is `#` are
//! skipped; leading and trailing blanks are dropped. The first entry decides
//! the shape: a line with a single column makes a list, two columns a
//! mapping, unless a `# @list` comment came first. In a mapping the key ends
//! at the first space, tab or `:`, and the value starts after that one
//! character and any blanks; a key that starts with `[` ends at the first
//! `]`. In a list the whole line is the value. There are no continuation
//! lines. An empty file is a mapping. A later duplicate key replaces an
//! earlier one.
//!
//! Where OpenSMTPD is lax we fail closed (A2): a line with a NUL or another
//! control character than tab, bytes that are not UTF-8, a key longer than
//! 1023 bytes (OpenSMTPD skips it silently), a `[...]` key followed by
//! anything but a separator, a file over `MAX_FILE_BYTES` or with more than
//! `MAX_ENTRIES` entries: the whole table is refused, as a malformed mapping
//! line already makes OpenSMTPD refuse it.
//!
//! Keys are lower-cased when stored and when looked up, as OpenSMTPD does;
//! a lookup key over 1023 bytes, or one holding NUL, CR or LF, is an error
//! (a temporary failure for the caller), never a match (A3).
//!
//! Lookup kinds (the `K_*` services OpenSMTPD's static backend has):
//! - string, and every mapping lookup (alias, virtual, userinfo,
//!   credentials): exact key;
//! - domain: `hostname_match()`: `*` in an entry skips characters of the
//!   name up to the next character of the pattern, without backtracking, so
//!   `*.example.org` matches `a.example.org` but neither `example.org` nor
//!   `a.b.example.org`; `.example.org` has no special meaning;
//! - netaddr: `local` (the local socket) by name, else an address with an
//!   optional prefix length: `192.0.2.1`, `192.0.2.0/24`, `10/8`, `[::1]`,
//!   `::/0`, `[2001:db8::/32]`, `IPv6:` prefixes allowed;
//! - mailaddr: `user`, `@domain`, `user@domain`, `@` (anything), with `*` in
//!   the domain as for domains; the sub-address (`+tag`) of the looked-up
//!   user is ignored unless the entry has one;
//! - regex: every entry is an extended regular expression, not anchored
//!   (POSIX `regexec()` semantics: it may match anywhere), matched without
//!   regard to case against the lower-cased key; OpenSMTPD's `(?i)` prefix
//!   is accepted. The `regex` crate's syntax is close to POSIX ERE for the
//!   patterns people write (no back-references in either).
//!
//! `db:` and `proc:` tables are refused with an error saying so.

use crate::config::ast::{self, TableRef, TableSource};
use regex::{Regex, RegexBuilder};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// OpenSMTPD's lookup buffer is 1024 bytes with its NUL.
pub const MAX_KEY: usize = 1023;
/// The longest line of a table file.
pub const MAX_LINE: usize = 65535;
/// The largest table file read.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// The most entries in one table.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Compiled size cap for one regex entry.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// OpenSMTPD's `struct mailaddr` parts hold 255 bytes.
const MAX_MAILADDR_PART: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    List,
    Map,
}

/// How a key is compared with the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Domain,
    NetAddr,
    MailAddr { subaddr_delim: char },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    Io {
        table: String,
        path: String,
        error: String,
    },
    Malformed {
        table: String,
        path: String,
        line: usize,
        why: &'static str,
    },
    TooLarge {
        table: String,
    },
    /// A key over `MAX_KEY` bytes in a table's definition.
    KeyTooLong {
        table: String,
    },
    Unsupported {
        table: String,
        backend: String,
    },
    NoSuchTable(String),
    /// A mapping lookup on a list.
    NotAMapping(String),
    BadRegex {
        table: String,
        pattern: String,
        error: String,
    },
    /// A lookup key over `MAX_KEY` bytes.
    LookupKeyTooLong,
    /// A lookup key with NUL, CR or LF.
    LookupKeyInvalid,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Io { table, path, error } => {
                write!(f, "table \"{table}\": {path}: {error}")
            }
            TableError::Malformed {
                table,
                path,
                line,
                why,
            } => write!(f, "table \"{table}\": {path}:{line}: {why}"),
            TableError::TooLarge { table } => write!(
                f,
                "table \"{table}\": more than {MAX_FILE_BYTES} bytes or {MAX_ENTRIES} entries"
            ),
            TableError::KeyTooLong { table } => {
                write!(f, "table \"{table}\": key longer than {MAX_KEY} bytes")
            }
            TableError::Unsupported { table, backend } if backend == "db" => write!(
                f,
                "table \"{table}\": db: tables are not supported yet; use a file: table (makemap(8) takes the same text)"
            ),
            TableError::Unsupported { table, backend } => {
                write!(f, "table \"{table}\": backend \"{backend}\" is not supported yet")
            }
            TableError::NoSuchTable(t) => write!(f, "no such table: {t}"),
            TableError::NotAMapping(t) => write!(f, "table \"{t}\" is a list, not a mapping"),
            TableError::BadRegex {
                table,
                pattern,
                error,
            } => write!(f, "table \"{table}\": bad regex {pattern:?}: {error}"),
            TableError::LookupKeyTooLong => write!(f, "lookup key too long"),
            TableError::LookupKeyInvalid => write!(f, "lookup key holds NUL, CR or LF"),
        }
    }
}

impl std::error::Error for TableError {}

/// An address with a prefix length, as `text_to_netaddr()` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetAddr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl NetAddr {
    /// `192.0.2.0/24`, `10/8`, `[::1]`, `::/0`, `[IPv6:2001:db8::/32]`...
    pub fn parse(s: &str) -> Option<NetAddr> {
        let s = strip_prefix_ci(s, "IPv6:").unwrap_or(s);
        if let Some(n) = parse_inet4_net(s) {
            return Some(n);
        }
        let inner = match s.strip_prefix('[') {
            Some(r) => {
                let r = strip_prefix_ci(r, "IPv6:").unwrap_or(r);
                r.strip_suffix(']')?
            }
            None => s,
        };
        let (a, bits) = match inner.split_once('/') {
            Some((a, b)) => (a, parse_bits(b, 128)?),
            None => (inner, 128),
        };
        let a: Ipv6Addr = a.parse().ok()?;
        Some(NetAddr {
            addr: IpAddr::V6(a),
            bits,
        })
    }

    /// Whether `addr` is inside this network (same family only).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = prefix_mask_u32(self.bits);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = prefix_mask_u128(self.bits);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn prefix_mask_u32(bits: u8) -> u32 {
    match bits {
        0 => 0,
        b if b >= 32 => u32::MAX,
        b => u32::MAX << (32 - u32::from(b)),
    }
}

fn prefix_mask_u128(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => u128::MAX,
        b => u128::MAX << (128 - u32::from(b)),
    }
}

fn parse_bits(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let b: u8 = s.parse().ok()?;
    (b <= max).then_some(b)
}

/// `inet_net_pton(AF_INET)` for decimal forms: one to four octets and an
/// optional `/bits`; without bits, the classful width widened to cover the
/// octets given (so a full address is a /32).
fn parse_inet4_net(s: &str) -> Option<NetAddr> {
    let (a, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(parse_bits(b, 32)?)),
        None => (s, None),
    };
    let mut octets = [0u8; 4];
    let mut n = 0usize;
    for part in a.split('.') {
        if n >= 4 || part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        octets[n] = part.parse().ok()?;
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let bits = match bits {
        Some(b) => b,
        None => {
            let class: u8 = match octets[0] {
                240..=255 => 32,
                224..=239 => 4,
                192..=223 => 24,
                128..=191 => 16,
                _ => 8,
            };
            // n <= 4, so n * 8 <= 32.
            let given = u8::try_from(n * 8).unwrap_or(32);
            let b = class.max(given);
            if b == 8 && octets[0] == 224 {
                4
            } else {
                b
            }
        }
    };
    Some(NetAddr {
        addr: IpAddr::V4(Ipv4Addr::from(octets)),
        bits,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// OpenSMTPD's `hostname_match()`: case-insensitive (both sides are
/// lower-cased by the caller), `*` skips up to the next pattern character
/// with no backtracking.
pub fn hostname_match(host: &str, pattern: &str) -> bool {
    let mut h = host.chars().peekable();
    let mut p = pattern.chars().peekable();
    while let (Some(&pc), Some(&hc)) = (p.peek(), h.peek()) {
        if pc == '*' {
            while p.peek() == Some(&'*') {
                p.next();
            }
            match p.peek() {
                None => h.by_ref().for_each(drop),
                Some(&c) => {
                    while h.peek().is_some_and(|&x| x != c) {
                        h.next();
                    }
                }
            }
            continue;
        }
        if pc != hc {
            return false;
        }
        p.next();
        h.next();
    }
    h.peek().is_none() && p.peek().is_none()
}

/// `text_to_mailaddr()`: split at the last `@`; `None` if a part is over
/// 255 bytes.
fn split_mailaddr(s: &str) -> Option<(&str, &str)> {
    let (user, domain) = match s.rfind('@') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    (user.len() <= MAX_MAILADDR_PART && domain.len() <= MAX_MAILADDR_PART).then_some((user, domain))
}

/// `mailaddr_match()`: `key` from the session, `entry` from the table.
fn mailaddr_match(key: (&str, &str), entry: (&str, &str), delim: char) -> bool {
    let (user, domain) = key;
    let (euser, edomain) = entry;
    if euser.is_empty() && edomain.is_empty() {
        return true;
    }
    if !edomain.is_empty() && !hostname_match(domain, edomain) {
        return false;
    }
    if !euser.is_empty() {
        let user = if euser.contains(delim) {
            user
        } else {
            user.split(delim).next().unwrap_or(user)
        };
        if user != euser {
            return false;
        }
    }
    true
}

#[derive(Debug, Clone)]
struct Entry {
    /// Lower-cased.
    key: String,
    /// As written (regexes are compiled from this).
    raw: String,
    value: Option<String>,
    /// The key read as a network, when it is one.
    net: Option<NetAddr>,
}

/// One table, read and checked.
#[derive(Debug, Clone)]
pub struct Table {
    name: String,
    shape: Shape,
    /// Sorted by key, keys unique.
    entries: Vec<Entry>,
    /// Indexes of entries whose key has a `*`.
    wild: Vec<usize>,
}

fn c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

impl Table {
    fn build<I>(name: &str, shape: Shape, items: I) -> Result<Table, TableError>
    where
        I: IntoIterator<Item = (String, Option<String>)>,
    {
        let mut map: BTreeMap<String, Entry> = BTreeMap::new();
        for (raw, value) in items {
            if raw.len() > MAX_KEY {
                return Err(TableError::KeyTooLong { table: name.into() });
            }
            let key = raw.to_lowercase();
            let net = NetAddr::parse(&key);
            map.insert(
                key.clone(),
                Entry {
                    key,
                    raw,
                    value,
                    net,
                },
            );
            if map.len() > MAX_ENTRIES {
                return Err(TableError::TooLarge { table: name.into() });
            }
        }
        let entries: Vec<Entry> = map.into_values().collect();
        let wild = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.key.contains('*'))
            .map(|(i, _)| i)
            .collect();
        Ok(Table {
            name: name.into(),
            shape,
            entries,
            wild,
        })
    }

    /// `table NAME { a, b }`, or an inline list.
    pub fn from_list(name: &str, values: &[String]) -> Result<Table, TableError> {
        Table::build(name, Shape::List, values.iter().map(|v| (v.clone(), None)))
    }

    /// `table NAME { k = v, ... }`.
    pub fn from_map(name: &str, pairs: &[(String, String)]) -> Result<Table, TableError> {
        Table::build(
            name,
            Shape::Map,
            pairs.iter().map(|(k, v)| (k.clone(), Some(v.clone()))),
        )
    }

    /// Read a table(5) file's text; `path` is for messages.
    pub fn parse_file(name: &str, path: &str, bytes: &[u8]) -> Result<Table, TableError> {
        let malformed = |line: usize, why: &'static str| TableError::Malformed {
            table: name.into(),
            path: path.into(),
            line,
            why,
        };
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(TableError::TooLarge { table: name.into() });
        }
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(malformed(line, "NUL byte"));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            malformed(line, "not UTF-8")
        })?;
        let mut shape: Option<Shape> = None;
        let mut items: Vec<(String, Option<String>)> = Vec::new();
        for (n, line) in text.split('\n').enumerate() {
            let lineno = n + 1;
            if line.len() > MAX_LINE {
                return Err(malformed(lineno, "line too long"));
            }
            let l = line.trim_matches(c_space);
            if l.is_empty() {
                continue;
            }
            if let Some(comment) = l.strip_prefix('#') {
                if shape.is_none() && comment.trim_start_matches(c_space) == "@list" {
                    shape = Some(Shape::List);
                }
                continue;
            }
            if l.chars().any(|c| c.is_control() && c != '\t') {
                return Err(malformed(lineno, "control character"));
            }
            let (key, rest) = if l.starts_with('[') {
                match l.find(']') {
                    Some(i) => l.split_at(i + 1),
                    None => return Err(malformed(lineno, "invalid map entry")),
                }
            } else {
                l.split_at(l.find([' ', '\t', ':']).unwrap_or(l.len()))
            };
            let shape = *shape.get_or_insert(if rest.is_empty() {
                Shape::List
            } else {
                Shape::Map
            });
            match shape {
                Shape::List => items.push((l.to_string(), None)),
                Shape::Map => {
                    let mut chars = rest.chars();
                    match chars.next() {
                        Some(' ' | '\t' | ':') => {}
                        _ => return Err(malformed(lineno, "invalid map entry")),
                    }
                    let value = chars.as_str().trim_start_matches([' ', '\t']);
                    if value.is_empty() {
                        return Err(malformed(lineno, "invalid map entry"));
                    }
                    items.push((key.to_string(), Some(value.to_string())));
                }
            }
            if items.len() > MAX_ENTRIES {
                return Err(TableError::TooLarge { table: name.into() });
            }
        }
        // OpenSMTPD: "Accept empty alias files; treat them as hashes".
        Table::build(name, shape.unwrap_or(Shape::Map), items)
    }

    /// Read a `file:` table from disk, at most `MAX_FILE_BYTES`.
    pub fn load_file(name: &str, path: &str) -> Result<Table, TableError> {
        let io = |e: std::io::Error| TableError::Io {
            table: name.into(),
            path: path.into(),
            error: e.to_string(),
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Table::parse_file(name, path, &bytes)
    }

    /// A table as the config declares it, a `file:` one parsed from the
    /// contents the parent read (`files`, by table name): how the roles,
    /// which open no file, build theirs.
    pub fn from_read(t: &ast::Table, files: &[(String, Vec<u8>)]) -> Result<Table, String> {
        match &t.source {
            TableSource::Backend { backend, path } if backend == "file" => {
                let bytes = files
                    .iter()
                    .find(|(n, _)| n == &t.name)
                    .map(|(_, b)| b.as_slice())
                    .ok_or("contents not sent")?;
                Table::parse_file(&t.name, path, bytes)
            }
            _ => Table::from_config(t),
        }
        .map_err(|e| e.to_string())
    }

    /// A table as the config declares it.
    pub fn from_config(t: &ast::Table) -> Result<Table, TableError> {
        match &t.source {
            TableSource::List(v) => Table::from_list(&t.name, v),
            TableSource::Map(m) => Table::from_map(&t.name, m),
            TableSource::Backend { backend, path } => match backend.as_str() {
                "file" | "static" => Table::load_file(&t.name, path),
                other => Err(TableError::Unsupported {
                    table: t.name.clone(),
                    backend: other.into(),
                }),
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys (lower-cased), in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.as_str())
    }

    /// The keys as written, in order (regex tables compile these).
    pub fn raw_keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.raw.as_str())
    }

    fn exact(&self, key: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.key.as_str().cmp(key))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Whether `key` matches an entry, compared as `kind`.
    pub fn matches(&self, kind: Kind, key: &str) -> Result<bool, TableError> {
        let key = lookup_key(key)?;
        Ok(match kind {
            Kind::String => self.exact(&key).is_some(),
            Kind::Domain => {
                self.exact(&key).is_some()
                    || self
                        .wild
                        .iter()
                        .filter_map(|&i| self.entries.get(i))
                        .any(|e| hostname_match(&key, &e.key))
            }
            Kind::NetAddr | Kind::MailAddr { .. } => self.find_entry(kind, &key).is_some(),
        })
    }

    /// The first entry (in key order, as OpenSMTPD iterates) that `key`
    /// matches as `kind`: its key and value (`None` in a list).
    pub fn find(&self, kind: Kind, key: &str) -> Result<Option<(&str, Option<&str>)>, TableError> {
        let key = lookup_key(key)?;
        Ok(self
            .find_entry(kind, &key)
            .map(|e| (e.key.as_str(), e.value.as_deref())))
    }

    fn find_entry(&self, kind: Kind, key: &str) -> Option<&Entry> {
        match kind {
            Kind::String => self.exact(key),
            Kind::Domain => self.entries.iter().find(|e| hostname_match(key, &e.key)),
            Kind::NetAddr => {
                let addr = NetAddr::parse(key);
                self.entries.iter().find(|e| {
                    e.key == key
                        || match (addr, e.net) {
                            (Some(a), Some(n)) => n.contains(a.addr),
                            _ => false,
                        }
                })
            }
            Kind::MailAddr { subaddr_delim } => {
                let k = split_mailaddr(key)?;
                self.entries.iter().find(|e| {
                    split_mailaddr(&e.key).is_some_and(|en| mailaddr_match(k, en, subaddr_delim))
                })
            }
        }
    }

    /// A mapping's value for exactly `key` (lower-cased): the lookup that
    /// alias, virtual, userinfo and credentials tables use.
    pub fn get(&self, key: &str) -> Result<Option<&str>, TableError> {
        if self.shape != Shape::Map {
            return Err(TableError::NotAMapping(self.name.clone()));
        }
        let key = lookup_key(key)?;
        Ok(self.exact(&key).and_then(|e| e.value.as_deref()))
    }

    /// `alias <table>`: the aliases(5) value for a user, unparsed.
    pub fn lookup_alias(&self, user: &str) -> Result<Option<&str>, TableError> {
        self.get(user)
    }

    /// `virtual <table>`: the value for one key (`user@domain`, `user`,
    /// `@domain`, `@`); the order of tries is the expander's.
    pub fn lookup_virtual(&self, key: &str) -> Result<Option<&str>, TableError> {
        self.get(key)
    }

    /// `senders <table>` (a mailaddrmap): may the authenticated `user`
    /// send as `sender`? The user's value lists addresses, separated by
    /// commas or blanks, each matched as `mailaddr_match()` does; a user
    /// without an entry may send as no one.
    pub fn sender_allowed(
        &self,
        user: &str,
        sender: &str,
        delim: char,
    ) -> Result<bool, TableError> {
        let Some(value) = self.get(user)? else {
            return Ok(false);
        };
        let sender = lookup_key(sender)?;
        let Some(key) = split_mailaddr(&sender) else {
            return Ok(false);
        };
        Ok(value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|a| !a.is_empty())
            .any(|a| {
                let a = a.to_lowercase();
                split_mailaddr(&a).is_some_and(|entry| mailaddr_match(key, entry, delim))
            }))
    }

    /// `userbase <table>`: `uid:gid:home` for a user, unparsed.
    pub fn lookup_userinfo(&self, user: &str) -> Result<Option<&str>, TableError> {
        self.get(user)
    }

    /// Check that every entry reads as `kind` wants it (netaddr: `local`
    /// or a network; mailaddr: parts within bounds), so that an entry that
    /// can never match is a config error rather than a silent miss.
    pub fn validate(&self, kind: Kind) -> Result<(), String> {
        for e in &self.entries {
            let ok = match kind {
                Kind::NetAddr => e.key == "local" || e.net.is_some(),
                Kind::MailAddr { .. } => split_mailaddr(&e.key).is_some(),
                Kind::String | Kind::Domain => true,
            };
            if !ok {
                return Err(format!(
                    "table \"{}\": entry {:?} is not a valid {}",
                    self.name,
                    e.raw,
                    match kind {
                        Kind::NetAddr => "network address",
                        _ => "mail address",
                    }
                ));
            }
        }
        Ok(())
    }
}

/// Lower-case a lookup key, refusing what could never be a key (A3).
fn lookup_key(key: &str) -> Result<String, TableError> {
    if key.len() > MAX_KEY {
        return Err(TableError::LookupKeyTooLong);
    }
    if key.contains(['\0', '\r', '\n']) {
        return Err(TableError::LookupKeyInvalid);
    }
    Ok(key.to_lowercase())
}

/// A table whose entries are regular expressions (`regex <table>`).
#[derive(Debug, Clone)]
pub struct RegexTable {
    name: String,
    patterns: Vec<Regex>,
}

impl RegexTable {
    pub fn compile(table: &Table) -> Result<RegexTable, TableError> {
        let mut patterns = Vec::with_capacity(table.len());
        for raw in table.raw_keys() {
            let re = RegexBuilder::new(raw)
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| TableError::BadRegex {
                    table: table.name().into(),
                    pattern: raw.into(),
                    error: e.to_string(),
                })?;
            patterns.push(re);
        }
        Ok(RegexTable {
            name: table.name().into(),
            patterns,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn matches(&self, key: &str) -> Result<bool, TableError> {
        let key = lookup_key(key)?;
        Ok(self.patterns.iter().any(|re| re.is_match(&key)))
    }
}

/// The config's named tables, read once.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    by_name: BTreeMap<String, Arc<Table>>,
}

impl Tables {
    /// Read every table of the config; the first error stops it.
    pub fn load(defs: &[ast::Table]) -> Result<Tables, TableError> {
        let mut t = Tables::default();
        for d in defs {
            t.insert(Table::from_config(d)?);
        }
        Ok(t)
    }

    pub fn insert(&mut self, t: Table) {
        self.by_name.insert(t.name.clone(), Arc::new(t));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Table>> {
        self.by_name.get(name)
    }

    /// A `<name>` reference, or an inline list as an anonymous table.
    pub fn resolve(&self, r: &TableRef) -> Result<Arc<Table>, TableError> {
        match r {
            TableRef::Named(n) => self
                .get(n)
                .cloned()
                .ok_or_else(|| TableError::NoSuchTable(n.clone())),
            TableRef::Inline(v) => Ok(Arc::new(Table::from_list("<inline>", v)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn list(v: &[&str]) -> Table {
        Table::from_list("t", &s(v)).unwrap()
    }

    #[test]
    fn file_list_and_map() {
        let t = Table::parse_file("t", "f", b"# a list\n\n  one  \ntwo\r\nThree Words\n").unwrap();
        assert_eq!(t.shape(), Shape::List);
        assert_eq!(t.keys().collect::<Vec<_>>(), ["one", "three words", "two"]);

        let t = Table::parse_file(
            "t",
            "f",
            b"# c\nkey1:\tvalue1\nkey2 value2\nKey3\t\t value 3 \nkey4::x\n[::1] localhost\n[::2]:x\n",
        )
        .unwrap();
        assert_eq!(t.shape(), Shape::Map);
        assert_eq!(t.get("KEY1").unwrap(), Some("value1"));
        assert_eq!(t.get("key2").unwrap(), Some("value2"));
        assert_eq!(t.get("key3").unwrap(), Some("value 3"));
        assert_eq!(t.get("key4").unwrap(), Some(":x"));
        assert_eq!(t.get("[::1]").unwrap(), Some("localhost"));
        assert_eq!(t.get("[::2]").unwrap(), Some("x"));
        assert_eq!(t.get("nope").unwrap(), None);

        // `# @list` before the first entry forces a list.
        let t = Table::parse_file("t", "f", b"#   @list\nfoo bar\nbaz\n").unwrap();
        assert_eq!(t.shape(), Shape::List);
        assert!(t.matches(Kind::String, "foo bar").unwrap());
        // ...and not after it.
        let t = Table::parse_file("t", "f", b"a b\n# @list\nc d\n").unwrap();
        assert_eq!(t.shape(), Shape::Map);
        // Empty: a mapping.
        assert_eq!(
            Table::parse_file("t", "f", b"").unwrap().shape(),
            Shape::Map
        );
        assert_eq!(
            Table::parse_file("t", "f", b"# x\n \n").unwrap().shape(),
            Shape::Map
        );
        // Duplicate keys: the last wins.
        let t = Table::parse_file("t", "f", b"a 1\nA 2\n").unwrap();
        assert_eq!(t.get("a").unwrap(), Some("2"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn file_errors() {
        let bad: &[(&[u8], usize)] = &[
            (b"a 1\nb\n", 2),
            (b"a 1\nb:\n", 2),
            (b"[::1 x\n", 1),
            (b"[::1]x y\n", 1),
            (b"a 1\nb\0 2\n", 2),
            (b"a 1\nb \x01 2\n", 2),
            (b"a 1\nb \xff\n", 2),
        ];
        for (text, line) in bad {
            match Table::parse_file("t", "f", text) {
                Err(TableError::Malformed { line: l, .. }) => assert_eq!(l, *line),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let long = format!("{} v\n", "k".repeat(MAX_KEY + 1));
        assert!(matches!(
            Table::parse_file("t", "f", long.as_bytes()),
            Err(TableError::KeyTooLong { .. })
        ));
        let longline = format!("k {}\n", "v".repeat(MAX_LINE));
        assert!(matches!(
            Table::parse_file("t", "f", longline.as_bytes()),
            Err(TableError::Malformed { .. })
        ));
    }

    #[test]
    fn backends() {
        let db = ast::Table {
            pos: ast::Pos::default(),
            name: "aliases".into(),
            source: TableSource::Backend {
                backend: "db".into(),
                path: "/etc/mail/aliases.db".into(),
            },
        };
        let e = Table::from_config(&db).unwrap_err();
        assert!(
            e.to_string().contains("db: tables are not supported yet"),
            "{e}"
        );
        let missing = ast::Table {
            source: TableSource::Backend {
                backend: "file".into(),
                path: "/nonexistent/smtpd-rs-table".into(),
            },
            ..db.clone()
        };
        assert!(matches!(
            Table::from_config(&missing),
            Err(TableError::Io { .. })
        ));
        let dir = std::env::temp_dir().join(format!("smtpd-rs-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("aliases");
        std::fs::write(&p, "root: admin\npostmaster: root, admin@example.org\n").unwrap();
        let file = ast::Table {
            source: TableSource::Backend {
                backend: "file".into(),
                path: p.to_string_lossy().into_owned(),
            },
            ..db
        };
        let t = Table::from_config(&file).unwrap();
        assert_eq!(
            t.lookup_alias("Postmaster").unwrap(),
            Some("root, admin@example.org")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lookup_keys_are_checked() {
        let t = list(&["a"]);
        assert_eq!(
            t.matches(Kind::String, &"a".repeat(MAX_KEY + 1)),
            Err(TableError::LookupKeyTooLong)
        );
        for k in ["a\n", "a\r", "a\0", "\na"] {
            assert_eq!(
                t.matches(Kind::String, k),
                Err(TableError::LookupKeyInvalid)
            );
        }
        assert_eq!(t.get("a"), Err(TableError::NotAMapping("t".into())));
    }

    #[test]
    fn domain_matching() {
        let t = list(&["Example.ORG", "*.example.net", "mx*.example.com"]);
        assert!(t.matches(Kind::Domain, "example.org").unwrap());
        assert!(t.matches(Kind::Domain, "EXAMPLE.org").unwrap());
        assert!(!t.matches(Kind::Domain, "sub.example.org").unwrap());
        assert!(t.matches(Kind::Domain, "a.example.net").unwrap());
        // No backtracking, as OpenSMTPD: one label only.
        assert!(!t.matches(Kind::Domain, "a.b.example.net").unwrap());
        assert!(!t.matches(Kind::Domain, "example.net").unwrap());
        assert!(t.matches(Kind::Domain, "mx1.example.com").unwrap());
        assert!(!t.matches(Kind::Domain, "example.org.evil").unwrap());
        assert!(!t.matches(Kind::Domain, "evilexample.org").unwrap());
        // `.example.org` is just a string.
        let t = list(&[".example.org"]);
        assert!(!t.matches(Kind::Domain, "a.example.org").unwrap());
        // `*` alone matches any non-empty name.
        let t = list(&["*"]);
        assert!(t.matches(Kind::Domain, "x").unwrap());
        assert!(!t.matches(Kind::Domain, "").unwrap());
    }

    #[test]
    fn hostname_match_cases() {
        assert!(hostname_match("abc", "abc"));
        assert!(hostname_match("abc", "*"));
        assert!(hostname_match("abc", "a*"));
        assert!(hostname_match("abc", "**c"));
        assert!(!hostname_match("abc", "ab"));
        assert!(!hostname_match("ab", "abc"));
        assert!(!hostname_match("", "*"));
        assert!(hostname_match("", ""));
        assert!(!hostname_match("a", "a*b"));
        // First-occurrence skip: "*b" against "abab" stops at the first b.
        assert!(!hostname_match("abab", "*b"));
        assert!(hostname_match("mx.exämple.org", "*.exämple.org"));
        assert!(hostname_match("é.example", "*.example"));
        assert!(!hostname_match("é.example", "*é"));
        // Characters, not bytes: è and é share their first byte.
        assert!(hostname_match("èé", "*é"));
    }

    #[test]
    fn netaddr_matching() {
        let t = list(&[
            "192.0.2.1",
            "198.51.100.0/24",
            "10/8",
            "[::1]",
            "[2001:db8::/32]",
            "IPv6:fe80::/10",
            "local",
        ]);
        for k in [
            "192.0.2.1",
            "198.51.100.77",
            "10.200.0.1",
            "[::1]",
            "[2001:db8:1::5]",
            "[fe80::1]",
            "local",
            "LOCAL",
        ] {
            assert!(t.matches(Kind::NetAddr, k).unwrap(), "{k}");
        }
        for k in [
            "192.0.2.2",
            "198.51.101.1",
            "11.0.0.1",
            "[::2]",
            "[2001:db9::1]",
            "socket",
        ] {
            assert!(!t.matches(Kind::NetAddr, k).unwrap(), "{k}");
        }
        let any = list(&["0.0.0.0/0", "::/0"]);
        assert!(any.matches(Kind::NetAddr, "203.0.113.9").unwrap());
        assert!(any.matches(Kind::NetAddr, "[2001:db8::9]").unwrap());
        assert!(!any.matches(Kind::NetAddr, "local").unwrap());
        // Families never cross.
        let v4 = list(&["0.0.0.0/0"]);
        assert!(!v4.matches(Kind::NetAddr, "[::ffff:1.2.3.4]").unwrap());
        assert!(list(&["nonsense"]).validate(Kind::NetAddr).is_err());
        assert!(t.validate(Kind::NetAddr).is_ok());
    }

    #[test]
    fn netaddr_parse() {
        let p = |s: &str| NetAddr::parse(s).map(|n| (n.addr.to_string(), n.bits));
        assert_eq!(p("10"), Some(("10.0.0.0".into(), 8)));
        assert_eq!(p("10.1"), Some(("10.1.0.0".into(), 16)));
        assert_eq!(p("192.168.1"), Some(("192.168.1.0".into(), 24)));
        assert_eq!(p("172.16"), Some(("172.16.0.0".into(), 16)));
        assert_eq!(p("1.2.3.4"), Some(("1.2.3.4".into(), 32)));
        assert_eq!(p("1.2.3.0/24"), Some(("1.2.3.0".into(), 24)));
        assert_eq!(p("::/0"), Some(("::".into(), 0)));
        assert_eq!(p("[IPv6:::1]"), Some(("::1".into(), 128)));
        for bad in [
            "1.2.3.4/33",
            "1.2.3.4.5",
            "256.1.1.1",
            "1..2",
            "[::1",
            "::1]",
            "1.2.3.4/",
            "/8",
            "::/129",
            "",
            "x",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn senders_mailaddrmap() {
        let t = Table::parse_file(
            "senders",
            "f",
            b"joe joe@example.org, Joe.Alias@example.org\nann @example.net\nroot @\n",
        )
        .unwrap();
        let ok = |u: &str, s: &str| t.sender_allowed(u, s, '+').unwrap();
        assert!(ok("joe", "joe@example.org"));
        assert!(ok("JOE", "joe.alias@EXAMPLE.org"));
        assert!(ok("joe", "joe+tag@example.org"));
        assert!(!ok("joe", "ann@example.org"));
        assert!(!ok("joe", "joe@example.net"));
        assert!(ok("ann", "anyone@example.net"));
        assert!(!ok("ann", "anyone@example.org"));
        assert!(ok("root", "x@y.example"));
        assert!(ok("root", ""));
        assert!(!ok("nobody", "nobody@example.org"), "no entry: no address");
    }

    #[test]
    fn mailaddr_matching() {
        let k = Kind::MailAddr { subaddr_delim: '+' };
        let t = list(&[
            "Joe",
            "@example.org",
            "ann@*.example.net",
            "bob+list@example.com",
        ]);
        assert!(t.matches(k, "joe@anywhere.example").unwrap());
        assert!(t.matches(k, "JOE+tag@anywhere.example").unwrap());
        assert!(t.matches(k, "anyone@example.org").unwrap());
        assert!(!t.matches(k, "anyone@sub.example.org").unwrap());
        assert!(t.matches(k, "ann@mx.example.net").unwrap());
        assert!(t.matches(k, "ann+x@mx.example.net").unwrap());
        assert!(!t.matches(k, "ann@example.net").unwrap());
        assert!(t.matches(k, "bob+list@example.com").unwrap());
        assert!(!t.matches(k, "bob@example.com").unwrap());
        assert!(!t.matches(k, "bob+other@example.com").unwrap());
        // The null sender is "@": only a catch-all matches it.
        assert!(!t.matches(k, "@").unwrap());
        assert!(list(&["@"]).matches(k, "@").unwrap());
        assert!(list(&["@"]).matches(k, "x@y").unwrap());
        // Another delimiter.
        let t = list(&["joe@x.org"]);
        assert!(t
            .matches(Kind::MailAddr { subaddr_delim: '-' }, "joe-a@x.org")
            .unwrap());
        assert!(!t
            .matches(Kind::MailAddr { subaddr_delim: '-' }, "joe+a@x.org")
            .unwrap());
    }

    #[test]
    fn regex_matching() {
        let re = |v: &[&str]| RegexTable::compile(&list(v)).unwrap();
        let r = re(&["^mx[0-9]+\\.example\\.org$"]);
        assert!(r.matches("MX12.example.org").unwrap());
        assert!(!r.matches("mx.example.org.x").unwrap());
        assert!(!r.matches("mx1.example.org.x").unwrap());
        // Unanchored, like regexec().
        let r = re(&["(?i)EVIL", "bad"]);
        assert!(r.matches("not-evil-at-all").unwrap());
        assert!(r.matches("BADHOST").unwrap());
        assert!(!r.matches("good").unwrap());
        // Compiled from the entry as written: \D stays "non-digit".
        let r = re(&["^\\D{3}$"]);
        assert!(r.matches("abc").unwrap());
        assert!(!r.matches("123").unwrap());
        assert!(r.matches(&"x".repeat(MAX_KEY + 1)).is_err());
        let bad = list(&["(unclosed"]);
        assert!(matches!(
            RegexTable::compile(&bad),
            Err(TableError::BadRegex { .. })
        ));
        let huge = list(&["\\w{1000}\\w{1000}\\w{1000}"]);
        assert!(RegexTable::compile(&huge).is_err());
    }

    #[test]
    fn string_matching_and_tables() {
        let mut tables = Tables::default();
        tables.insert(Table::from_map("m", &[("K".into(), "V".into())]).unwrap());
        let m = tables.resolve(&TableRef::Named("m".into())).unwrap();
        assert!(m.matches(Kind::String, "k").unwrap());
        assert_eq!(m.find(Kind::String, "K").unwrap(), Some(("k", Some("V"))));
        assert!(!m.matches(Kind::String, "k2").unwrap());
        assert!(tables.resolve(&TableRef::Named("x".into())).is_err());
        let i = tables
            .resolve(&TableRef::Inline(vec!["Tag1".into()]))
            .unwrap();
        assert!(i.matches(Kind::String, "TAG1").unwrap());
        assert_eq!(i.shape(), Shape::List);
    }

    #[test]
    fn total_on_random_files() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"ab:[] \t\n#@list\r\x00\xc3\xa9*./";
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let mut x = seed;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[((x >> 33) % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(t) = Table::parse_file("t", "f", &bytes) {
                for k in ["a", "ab", "[]", "*", "local", "a@b"] {
                    let _ = t.matches(Kind::Domain, k);
                    let _ = t.matches(Kind::NetAddr, k);
                    let _ = t.matches(Kind::MailAddr { subaddr_delim: '+' }, k);
                    let _ = t.get(k);
                }
            }
        }
    }
}
