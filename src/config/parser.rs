//! smtpd.conf statements to `ast::Config`, following OpenSMTPD's parse.y:
//! same statements, same keyword rules (an unquoted keyword is never a
//! name), same order rules (a table, filter or action is declared before
//! it is used), and OpenSMTPD's error messages where it has them. Errors
//! are collected per statement; parsing goes on with the next line.

use super::ast::*;
use super::lexer::{LexError, Lexer, Tok, Token};
use super::ConfigError;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Deepest `include` nesting.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most tokens in one statement (a table may span many lines).
const MAX_STATEMENT_TOKENS: usize = 1 << 20;

/// OpenSMTPD's reserved words: unquoted, they are never names.
const KEYWORDS: &[&str] = &[
    "action",
    "admd",
    "alias",
    "any",
    "auth",
    "auth-optional",
    "backup",
    "bounce",
    "bypass",
    "ca",
    "cert",
    "chain",
    "chroot",
    "ciphers",
    "commit",
    "compression",
    "connect",
    "data",
    "data-line",
    "dhe",
    "disconnect",
    "domain",
    "ehlo",
    "encryption",
    "expand-only",
    "fcrdns",
    "filter",
    "for",
    "forward-only",
    "from",
    "group",
    "helo",
    "helo-src",
    "host",
    "hostname",
    "hostnames",
    "include",
    "inet4",
    "inet6",
    "junk",
    "key",
    "limit",
    "listen",
    "lmtp",
    "local",
    "mail-from",
    "maildir",
    "mask-src",
    "masquerade",
    "match",
    "max-deferred",
    "max-message-size",
    "mbox",
    "mda",
    "mta",
    "mx",
    "no-dsn",
    "no-verify",
    "noop",
    "on",
    "phase",
    "pki",
    "port",
    "proc",
    "proc-exec",
    "protocols",
    "proxy-v2",
    "queue",
    "quit",
    "rcpt-to",
    "rdns",
    "received-auth",
    "recipient",
    "regex",
    "reject",
    "relay",
    "report",
    "rewrite",
    "rset",
    "scheduler",
    "senders",
    "smtp",
    "smtp-in",
    "smtp-out",
    "smtps",
    "socket",
    "src",
    "srs",
    "sub-addr-delim",
    "table",
    "tag",
    "tagged",
    "tls",
    "tls-require",
    "ttl",
    "user",
    "userbase",
    "verify",
    "virtual",
    "warn-interval",
    "wrapper",
];

/// Table backends we know (`table NAME backend:/path`).
const BACKENDS: &[&str] = &["file", "db", "static", "proc"];

pub fn is_keyword(w: &str) -> bool {
    KEYWORDS.binary_search(&w).is_ok()
}

/// The parse of one config: the value, or every error found.
pub struct Parser {
    macros: HashMap<String, String>,
    /// Macros from `-D`: a definition in the file does not override them.
    persistent: HashSet<String>,
    pub errors: Vec<ConfigError>,
    cfg: Config,
    /// Files being read, outermost first, to refuse include loops.
    stack: Vec<std::path::PathBuf>,
}

type R<T> = Result<T, String>;

impl Parser {
    pub fn new(defines: &[(String, String)]) -> Self {
        let mut p = Parser {
            macros: HashMap::new(),
            persistent: HashSet::new(),
            errors: Vec::new(),
            cfg: Config::default(),
            stack: Vec::new(),
        };
        for (k, v) in defines {
            p.macros.insert(k.clone(), v.clone());
            p.persistent.insert(k.clone());
        }
        p
    }

    /// Parse `path` and what it includes.
    pub fn file(&mut self, path: &str, bytes: &[u8]) {
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
        self.stack.push(canon);
        let mut lx = Lexer::new(bytes);
        loop {
            match self.statement_tokens(&mut lx, path) {
                Ok(None) => break,
                Ok(Some(toks)) if toks.is_empty() => {}
                Ok(Some(toks)) => {
                    let line = toks[0].line;
                    let mut st = Stmt {
                        toks: &toks,
                        i: 0,
                        line,
                        bad: std::cell::Cell::new(None),
                    };
                    if let Err(m) = self.statement(&mut st, path) {
                        let line = st.err_line();
                        self.errors.push(ConfigError {
                            file: path.into(),
                            line,
                            message: m,
                        });
                    }
                }
                Err(e) => self.errors.push(ConfigError {
                    file: path.into(),
                    line: e.line,
                    message: e.message,
                }),
            }
        }
        self.stack.pop();
    }

    pub fn finish(self) -> (Config, Vec<ConfigError>) {
        (self.cfg, self.errors)
    }

    /// The tokens of one statement: up to a newline outside braces.
    fn statement_tokens(
        &mut self,
        lx: &mut Lexer<'_>,
        path: &str,
    ) -> Result<Option<Vec<Token>>, LexError> {
        let mut toks = Vec::new();
        let mut depth = 0usize;
        loop {
            let t = match lx.next(&self.macros) {
                Ok(t) => t,
                Err(e) => {
                    // Drop the rest of the statement; report this error.
                    let _ = path;
                    return Err(e);
                }
            };
            match &t.tok {
                Tok::Eof => {
                    if depth > 0 {
                        return Err(LexError {
                            line: t.line,
                            message: "unterminated { list".into(),
                        });
                    }
                    return Ok(if toks.is_empty() { None } else { Some(toks) });
                }
                Tok::Nl if depth == 0 => return Ok(Some(toks)),
                Tok::Nl => continue,
                Tok::Sym('{') => depth += 1,
                Tok::Sym('}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            toks.push(t);
            if toks.len() > MAX_STATEMENT_TOKENS {
                lx.skip_line();
                return Err(LexError {
                    line: lx.line(),
                    message: "statement too long".into(),
                });
            }
        }
    }

    fn statement(&mut self, st: &mut Stmt<'_>, path: &str) -> R<()> {
        // A macro definition: NAME = VALUE.
        if st.toks.len() >= 2 && st.toks[1].tok == Tok::Sym('=') {
            return self.varset(st);
        }
        let kw = st.keyword()?;
        match kw.as_str() {
            "include" => self.include(st, path),
            "table" => self.table(st),
            "pki" => self.pki(st),
            "ca" => self.ca(st),
            "listen" => self.listen(st),
            "action" => self.action(st),
            "match" => self.match_(st),
            "filter" => self.filter(st),
            "proc" => self.proc_(st),
            "queue" => self.queue(st),
            "bounce" => self.bounce(st),
            "smtp" => self.smtp(st),
            "mta" => self.mta(st),
            "mda" => self.mda(st),
            "srs" => self.srs(st),
            "admd" => {
                let v = st.string()?;
                if !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                {
                    return Err("Invalid admd".into());
                }
                self.cfg.settings.admd = Some(v);
                st.end()
            }
            "scheduler" => {
                st.expect("limit")?;
                self.limits(
                    st,
                    "scheduler",
                    &[
                        "max-inflight",
                        "max-evp-batch-size",
                        "max-msg-batch-size",
                        "max-schedule",
                    ],
                )
            }
            _ => Err(st.bad_prev()),
        }
    }

    fn varset(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let name = match &st.toks[0].tok {
            Tok::Word(w) | Tok::Str(w) => w.clone(),
            _ => return Err(st.bad_prev()),
        };
        if name.chars().any(|c| c.is_whitespace()) {
            return Err("macro name cannot contain whitespace".into());
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "macro name '{name}' may hold only letters, digits and _"
            ));
        }
        if matches!(st.toks[0].tok, Tok::Word(_)) && is_keyword(&name) {
            return Err(format!("syntax error: '{name}' is a reserved word"));
        }
        st.i = 2;
        // OpenSMTPD takes a string, not a number: `x = 587` is refused,
        // `x = "587"` is fine.
        let value = match st.take() {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => w,
            _ => return Err(st.bad_prev()),
        };
        st.end()?;
        if !self.persistent.contains(&name) {
            self.macros.insert(name, value);
        }
        Ok(())
    }

    fn include(&mut self, st: &mut Stmt<'_>, path: &str) -> R<()> {
        let file = st.quoted_or_string()?;
        st.end()?;
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(format!(
                "include nesting deeper than {MAX_INCLUDE_DEPTH}: {file}"
            ));
        }
        let canon = std::fs::canonicalize(&file).map_err(|e| format!("{file}: {e}"))?;
        if self.stack.contains(&canon) {
            return Err(format!("include loop: {file} is already being read"));
        }
        let bytes = std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?;
        let _ = path;
        self.file(&file, &bytes);
        Ok(())
    }

    fn table(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let name = st.string()?;
        if self.cfg.tables.iter().any(|t| t.name == name) {
            return Err(format!("table \"{name}\" already defined"));
        }
        let source = if st.peek_sym('{') {
            let (list, map) = st.braced_values()?;
            match (list.is_empty(), map.is_empty()) {
                (false, true) => TableSource::List(list),
                (true, false) => TableSource::Map(map),
                (true, true) => {
                    return Err(format!("table \"{name}\" must contain at least one value"))
                }
                (false, false) => {
                    return Err(format!("table \"{name}\" mixes values and key=value pairs"))
                }
            }
        } else {
            let spec = st.string()?;
            if spec.starts_with('/') {
                TableSource::Backend {
                    backend: "file".into(),
                    path: spec,
                }
            } else {
                let (backend, path) = spec
                    .split_once(':')
                    .ok_or(format!("invalid backend parameter for table: {name}"))?;
                if !path.starts_with('/') {
                    return Err(format!("invalid backend parameter for table: {name}"));
                }
                if !BACKENDS.contains(&backend) {
                    return Err(format!("table \"{name}\": unknown backend \"{backend}\""));
                }
                TableSource::Backend {
                    backend: backend.into(),
                    path: path.into(),
                }
            }
        };
        st.end()?;
        self.cfg.tables.push(Table { pos, name, source });
        Ok(())
    }

    fn pki(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let name = st.string()?.to_ascii_lowercase();
        let idx = match self.cfg.pkis.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                self.cfg.pkis.push(Pki {
                    pos,
                    name,
                    ..Pki::default()
                });
                self.cfg.pkis.len() - 1
            }
        };
        let mut any = false;
        while !st.at_end() {
            let kw = st.keyword()?;
            let v = st.string()?;
            let p = &mut self.cfg.pkis[idx];
            match kw.as_str() {
                "cert" => p.cert = Some(v),
                "key" => {
                    p.key = Some(v);
                    p.key_line = st.line;
                }
                "dhe" => {
                    if !["none", "auto", "legacy"].contains(&v.to_ascii_lowercase().as_str()) {
                        return Err(format!("invalid DHE keyword: {v}"));
                    }
                    p.dhe = Some(v.to_ascii_lowercase());
                }
                _ => return Err(st.bad_prev()),
            }
            any = true;
        }
        if !any {
            return Err("syntax error".into());
        }
        Ok(())
    }

    fn ca(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let name = st.string()?.to_ascii_lowercase();
        st.expect("cert")?;
        let cert = st.string()?;
        st.end()?;
        match self.cfg.cas.iter_mut().find(|c| c.name == name) {
            Some(c) => c.cert = Some(cert),
            None => self.cfg.cas.push(Ca {
                pos,
                name,
                cert: Some(cert),
            }),
        }
        Ok(())
    }

    fn listen(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        st.expect("on")?;
        let on = if st.peek_word("socket") {
            st.i += 1;
            if self.cfg.listens.iter().any(|l| l.on == ListenOn::Socket) {
                return Err("socket listener already configured".into());
            }
            ListenOn::Socket
        } else {
            let s = st.string()?;
            match s.parse() {
                Ok(a) => ListenOn::Addr(a),
                Err(_) => ListenOn::Name(s),
            }
        };
        let mut o = ListenOpts::default();
        while !st.at_end() {
            let kw = st.keyword()?;
            let socket_ok = ["filter", "mask-src", "no-dsn", "tag"].contains(&kw.as_str());
            if on == ListenOn::Socket && !socket_ok {
                return Err(format!("listen on socket: option {kw} is not valid here"));
            }
            match kw.as_str() {
                "inet4" | "inet6" => set_once(
                    &mut o.family,
                    if kw == "inet4" {
                        Family::Inet4
                    } else {
                        Family::Inet6
                    },
                    "address family already specified",
                )?,
                "port" => {
                    let p = match st.take() {
                        Some(Tok::Num(n)) if (1..=65535).contains(&n) => n as u16,
                        Some(Tok::Num(n)) => return Err(format!("invalid port: {n}")),
                        Some(Tok::Word(w)) | Some(Tok::Str(w)) => {
                            service_port(&w).ok_or(format!("invalid port: {w}"))?
                        }
                        _ => return Err(st.bad_prev()),
                    };
                    set_once(&mut o.port, p, "port already specified")?;
                }
                "tls" => set_once(&mut o.tls, TlsMode::StartTls, "TLS mode already specified")?,
                "tls-require" => {
                    let verify = st.eat_word("verify");
                    set_once(
                        &mut o.tls,
                        TlsMode::Require { verify },
                        "TLS mode already specified",
                    )?
                }
                "smtps" => {
                    let verify = st.eat_word("verify");
                    set_once(
                        &mut o.tls,
                        TlsMode::Smtps { verify },
                        "TLS mode already specified",
                    )?
                }
                "pki" => {
                    if o.pki.len() >= 16 {
                        return Err("too many pki specified".into());
                    }
                    o.pki.push(st.string()?.to_ascii_lowercase());
                }
                "ca" => set_once(
                    &mut o.ca,
                    st.string()?.to_ascii_lowercase(),
                    "ca already specified",
                )?,
                "auth" | "auth-optional" => {
                    let mode = if kw == "auth" {
                        AuthMode::Required
                    } else {
                        AuthMode::Optional
                    };
                    let table = if st.peek_sym('<') || st.peek_sym('{') || st.peek_string() {
                        Some(self.tables(st)?)
                    } else {
                        None
                    };
                    set_once(&mut o.auth, (mode, table), "auth already specified")?;
                }
                "tag" => {
                    let t = st.string()?;
                    if t.len() >= 32 {
                        return Err("tag name too long".into());
                    }
                    set_once(&mut o.tag, t, "tag already specified")?
                }
                "hostname" => {
                    set_once(&mut o.hostname, st.string()?, "hostname already specified")?
                }
                "hostnames" => {
                    let t = self.tables(st)?;
                    set_once(&mut o.hostnames, t, "hostnames already specified")?
                }
                "senders" => {
                    let t = self.tables(st)?;
                    let masq = st.eat_word("masquerade");
                    set_once(&mut o.senders, (t, masq), "senders already specified")?
                }
                "mask-src" => o.mask_src = true,
                "no-dsn" => set_flag(&mut o.no_dsn, "no-dsn already specified")?,
                "proxy-v2" => set_flag(&mut o.proxy_v2, "proxy-v2 already specified")?,
                "received-auth" => {
                    set_flag(&mut o.received_auth, "received-auth already specified")?
                }
                "filter" => {
                    let f = self.filter_ref(st)?;
                    set_once(&mut o.filter, f, "filter already specified")?
                }
                "ciphers" => set_once(&mut o.ciphers, st.string()?, "ciphers already specified")?,
                "protocols" => set_once(
                    &mut o.protocols,
                    st.string()?,
                    "protocols already specified",
                )?,
                _ => return Err(st.bad_prev()),
            }
        }
        self.cfg.listens.push(Listen { pos, on, opts: o });
        Ok(())
    }

    /// `filter NAME` or `filter { a, b }` (an anonymous chain).
    fn filter_ref(&mut self, st: &mut Stmt<'_>) -> R<FilterRef> {
        if st.peek_sym('{') {
            let (names, map) = st.braced_values()?;
            if !map.is_empty() || names.is_empty() {
                return Err("syntax error".into());
            }
            for n in &names {
                self.filter_exists(n)?;
            }
            return Ok(FilterRef::Chain(names));
        }
        let name = st.string()?;
        self.filter_exists(&name)?;
        Ok(FilterRef::Named(name))
    }

    fn filter_exists(&self, name: &str) -> R<()> {
        if self.cfg.filters.iter().any(|f| f.name == name) {
            Ok(())
        } else {
            Err(format!("no filter exist with that name: {name}"))
        }
    }

    /// `<name>` (must exist), or an inline value or `{ list }`.
    fn tables(&mut self, st: &mut Stmt<'_>) -> R<TableRef> {
        if st.peek_sym('<') {
            st.i += 1;
            let name = st.string()?;
            if !st.eat_sym('>') {
                return Err("syntax error".into());
            }
            if !self.cfg.tables.iter().any(|t| t.name == name) {
                return Err(format!("no such table: {name}"));
            }
            return Ok(TableRef::Named(name));
        }
        if st.peek_sym('{') {
            let (list, map) = st.braced_values()?;
            if !map.is_empty() || list.is_empty() {
                return Err("syntax error".into());
            }
            return Ok(TableRef::Inline(list));
        }
        Ok(TableRef::Inline(vec![st.string()?]))
    }

    fn pattern(&mut self, st: &mut Stmt<'_>) -> R<Pattern> {
        let regex = st.eat_word("regex");
        let table = self.tables(st)?;
        self.want_kind(&table, false, "from")?;
        Ok(Pattern { regex, table })
    }

    /// A static table declared as a list where a mapping is needed, or the
    /// other way round, is refused as OpenSMTPD refuses it. (File tables
    /// are checked when lka reads them.)
    fn want_kind(&self, t: &TableRef, mapping: bool, what: &str) -> R<()> {
        let TableRef::Named(name) = t else {
            return Ok(());
        };
        let Some(table) = self.cfg.tables.iter().find(|x| &x.name == name) else {
            return Ok(());
        };
        let is_map = matches!(table.source, TableSource::Map(_));
        let is_list = matches!(table.source, TableSource::List(_));
        if (mapping && is_list) || (!mapping && is_map) {
            return Err(format!(
                "table \"{name}\" may not be used for {what} lookups"
            ));
        }
        Ok(())
    }

    /// A pattern if one follows (for criteria where the table is optional).
    fn opt_pattern(&mut self, st: &mut Stmt<'_>) -> R<Option<Pattern>> {
        if st.peek_word("regex") || st.peek_sym('<') || st.peek_sym('{') || st.peek_string() {
            Ok(Some(self.pattern(st)?))
        } else {
            Ok(None)
        }
    }

    fn action(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let name = st.string()?;
        if self.cfg.actions.iter().any(|a| a.name == name) {
            return Err(format!(
                "dispatcher already declared with that name: {name}"
            ));
        }
        let kw = st.keyword()?;
        let mut method = match kw.as_str() {
            "mbox" => Method::Mbox,
            "maildir" => {
                let path = if st.peek_string() {
                    Some(st.string()?)
                } else {
                    None
                };
                let junk = st.eat_word("junk");
                Method::Maildir { path, junk }
            }
            "lmtp" => {
                let dest = st.string()?;
                let rcpt_to = st.eat_word("rcpt-to");
                Method::Lmtp { dest, rcpt_to }
            }
            "mda" => Method::Mda(st.string()?),
            "forward-only" => Method::ForwardOnly,
            "expand-only" => Method::ExpandOnly,
            "relay" => Method::Relay(Box::default()),
            _ => return Err(st.bad_prev()),
        };
        let mut local = LocalOpts::default();
        let mut ttl = None;
        while !st.at_end() {
            let kw = st.keyword()?;
            if kw == "ttl" {
                let s = st.string_or_num()?;
                let d = delay(&s).ok_or(format!("ttl delay \"{s}\" is invalid"))?;
                set_once(&mut ttl, d, "ttl already specified for this dispatcher")?;
                continue;
            }
            match &mut method {
                Method::Relay(r) => self.relay_option(st, &kw, r)?,
                m => self.local_option(st, &kw, m, &mut local)?,
            }
        }
        if let Method::Relay(r) = &method {
            if r.auth.is_some() && r.host.is_none() {
                return Err("auth may not be specified without host on a dispatcher".into());
            }
        }
        self.cfg.actions.push(Action {
            pos,
            name,
            method,
            local,
            ttl,
        });
        Ok(())
    }

    fn local_option(
        &mut self,
        st: &mut Stmt<'_>,
        kw: &str,
        m: &Method,
        o: &mut LocalOpts,
    ) -> R<()> {
        match kw {
            "alias" => {
                if o.virtual_.is_some() {
                    return Err("virtual mapping already specified for this dispatcher".into());
                }
                let t = self.tables(st)?;
                self.want_kind(&t, true, "alias")?;
                set_once(
                    &mut o.alias,
                    t,
                    "alias mapping already specified for this dispatcher",
                )
            }
            "virtual" => {
                if o.alias.is_some() {
                    return Err("alias mapping already specified for this dispatcher".into());
                }
                let t = self.tables(st)?;
                self.want_kind(&t, true, "virtual")?;
                set_once(
                    &mut o.virtual_,
                    t,
                    "virtual mapping already specified for this dispatcher",
                )
            }
            "userbase" => {
                let t = self.tables(st)?;
                set_once(
                    &mut o.userbase,
                    t,
                    "userbase mapping already specified for this dispatcher",
                )
            }
            "user" => {
                if *m == Method::ExpandOnly {
                    return Err("user may not be specified for expand-only".into());
                }
                if *m == Method::Mbox {
                    return Err("user may not be specified for mbox".into());
                }
                set_once(
                    &mut o.user,
                    st.string()?,
                    "user already specified for this dispatcher",
                )
            }
            "wrapper" => {
                let w = st.string()?;
                if !self.cfg.wrappers.iter().any(|x| x.name == w) {
                    return Err(format!("no mda wrapper with that name: {w}"));
                }
                set_once(
                    &mut o.wrapper,
                    w,
                    "wrapper already specified for this dispatcher",
                )
            }
            _ => Err(st.bad_prev()),
        }
    }

    fn relay_option(&mut self, st: &mut Stmt<'_>, kw: &str, r: &mut RelayOpts) -> R<()> {
        let d = "already specified for this dispatcher";
        match kw {
            "helo" => set_once(&mut r.helo, st.string()?, &format!("helo {d}")),
            "helo-src" => {
                let t = self.tables(st)?;
                set_once(&mut r.helo_src, t, &format!("helo-source mapping {d}"))
            }
            "pki" => set_once(
                &mut r.pki,
                st.string()?.to_ascii_lowercase(),
                &format!("pki {d}"),
            ),
            "ca" => set_once(
                &mut r.ca,
                st.string()?.to_ascii_lowercase(),
                &format!("ca {d}"),
            ),
            "ciphers" => set_once(&mut r.ciphers, st.string()?, &format!("ciphers {d}")),
            "protocols" => set_once(&mut r.protocols, st.string()?, &format!("protocols {d}")),
            "src" => {
                let t = self.tables(st)?;
                set_once(&mut r.src, t, &format!("source mapping {d}"))
            }
            "mail-from" => set_once(&mut r.mail_from, st.string()?, &format!("mail-from {d}")),
            "backup" => {
                if r.host.is_some() || r.domain.is_some() {
                    return Err("backup and host are mutually exclusive".into());
                }
                let mx = if st.eat_word("mx") {
                    Some(st.string()?)
                } else {
                    None
                };
                set_once(&mut r.backup, mx, &format!("backup {d}"))
            }
            "host" => {
                if r.backup.is_some() {
                    return Err("backup and host are mutually exclusive".into());
                }
                if r.domain.is_some() {
                    return Err(format!("host mapping {d}"));
                }
                let t = self.tables(st)?;
                set_once(&mut r.host, t, &format!("host mapping {d}"))
            }
            "domain" => {
                if r.backup.is_some() {
                    return Err("backup and domain are mutually exclusive".into());
                }
                if r.host.is_some() {
                    return Err(format!("host mapping {d}"));
                }
                let t = self.tables(st)?;
                set_once(&mut r.domain, t, &format!("host mapping {d}"))
            }
            "tls" => {
                let verify = !st.eat_word("no-verify");
                set_once(&mut r.tls, verify, &format!("tls {d}"))
            }
            "auth" => {
                let t = self.tables(st)?;
                self.want_kind(&t, true, "auth")?;
                set_once(&mut r.auth, t, &format!("auth mapping {d}"))
            }
            "filter" => {
                let f = self.filter_ref(st)?;
                set_once(&mut r.filter, f, &format!("filter {d}"))
            }
            "srs" => {
                if self.cfg.settings.srs_key.is_none() {
                    return Err(
                        "an srs key is required for srs to be specified in an action".into(),
                    );
                }
                set_flag(&mut r.srs, &format!("srs {d}"))
            }
            _ => Err(st.bad_prev()),
        }
    }

    fn match_(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let mut criteria: Vec<(bool, Criterion)> = Vec::new();
        let decision = loop {
            if st.at_end() {
                return Err("syntax error: match needs `action NAME` or `reject`".into());
            }
            let negate = st.eat_sym('!');
            let kw = st.keyword()?;
            let c = match kw.as_str() {
                "action" if !negate => {
                    let name = st.string()?;
                    if !self.cfg.actions.iter().any(|a| a.name == name) {
                        return Err(format!("no such dispatcher: {name}"));
                    }
                    break Decision::Action(name);
                }
                "reject" if !negate => break Decision::Reject,
                "from" => {
                    let k = st.keyword()?;
                    Criterion::From(match k.as_str() {
                        "any" => From::Any,
                        "local" => From::Local,
                        "socket" => From::Socket,
                        "src" => From::Src(self.pattern(st)?),
                        "rdns" => From::Rdns(self.opt_pattern(st)?),
                        "auth" => From::Auth(self.opt_pattern(st)?),
                        "mail-from" => From::MailFrom(self.pattern(st)?),
                        _ => return Err(st.bad_prev()),
                    })
                }
                "for" => {
                    let k = st.keyword()?;
                    Criterion::For(match k.as_str() {
                        "any" => For::Any,
                        "local" => For::Local,
                        "domain" => For::Domain(self.pattern(st)?),
                        "rcpt-to" => For::RcptTo(self.pattern(st)?),
                        _ => return Err(st.bad_prev()),
                    })
                }
                "tag" | "tagged" => Criterion::Tag(self.pattern(st)?),
                "helo" => Criterion::Helo(self.pattern(st)?),
                "tls" => Criterion::Tls,
                "auth" => Criterion::Auth(self.opt_pattern(st)?),
                "mail-from" => Criterion::MailFrom(self.pattern(st)?),
                "rcpt-to" => Criterion::RcptTo(self.pattern(st)?),
                _ => return Err(st.bad_prev()),
            };
            let kind = std::mem::discriminant(&c);
            if criteria
                .iter()
                .any(|(_, x)| std::mem::discriminant(x) == kind)
            {
                let what = match c {
                    Criterion::From(_) => "from",
                    Criterion::For(_) => "for",
                    Criterion::Tag(_) => "tag",
                    Criterion::Helo(_) => "helo",
                    Criterion::Tls => "tls",
                    Criterion::Auth(_) => "auth",
                    Criterion::MailFrom(_) => "mail-from",
                    Criterion::RcptTo(_) => "rcpt-to",
                };
                return Err(format!("{what} already specified for this rule"));
            }
            criteria.push((negate, c));
        };
        st.end()?;
        self.cfg.matches.push(Match {
            pos,
            criteria,
            decision,
        });
        Ok(())
    }

    fn filter(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let name = st.string()?;
        if self.cfg.filters.iter().any(|f| f.name == name) {
            return Err(format!("filter already exists with that name: {name}"));
        }
        let kw = st.keyword()?;
        let kind = match kw.as_str() {
            "proc" => {
                let p = st.string()?;
                if !self.cfg.procs.iter().any(|x| x.name == p) {
                    return Err(format!("no processor exist with that name: {p}"));
                }
                FilterKind::Proc(p)
            }
            "proc-exec" => {
                let command = st.string()?;
                FilterKind::ProcExec {
                    command,
                    opts: proc_opts(st)?,
                }
            }
            "chain" => {
                let (names, map) = st.braced_values()?;
                if !map.is_empty() || names.is_empty() {
                    return Err("syntax error".into());
                }
                let mut seen = HashSet::new();
                let mut procs = HashSet::new();
                for n in &names {
                    let f = self.cfg.filters.iter().find(|f| &f.name == n);
                    let f = f.ok_or(format!("no filter exist with that name: {n}"))?;
                    if matches!(f.kind, FilterKind::Chain(_)) {
                        return Err(format!(
                            "no filter chain allowed within a filter chain: {n}"
                        ));
                    }
                    if !seen.insert(n.clone()) {
                        return Err(format!(
                            "no filter allowed twice within a filter chain: {n}"
                        ));
                    }
                    if let FilterKind::Proc(p) = &f.kind {
                        if !procs.insert(p.clone()) {
                            return Err(format!(
                                "no proc allowed twice within a filter chain: {p}"
                            ));
                        }
                    }
                }
                FilterKind::Chain(names)
            }
            "phase" => self.builtin_filter(st)?,
            _ => return Err(st.bad_prev()),
        };
        st.end()?;
        self.cfg.filters.push(Filter { pos, name, kind });
        Ok(())
    }

    fn builtin_filter(&mut self, st: &mut Stmt<'_>) -> R<FilterKind> {
        let p = st.keyword()?;
        let phase = match p.as_str() {
            "connect" => Phase::Connect,
            "helo" => Phase::Helo,
            "ehlo" => Phase::Ehlo,
            "auth" => Phase::Auth,
            "mail-from" => Phase::MailFrom,
            "rcpt-to" => Phase::RcptTo,
            "data" => Phase::Data,
            "commit" => Phase::Commit,
            _ => return Err(format!("invalid filter phase: {p}")),
        };
        st.expect("match")?;
        let negate = st.eat_sym('!');
        let c = st.keyword()?;
        let cond = match c.as_str() {
            "fcrdns" => FilterCond::Fcrdns,
            "rdns" => FilterCond::Rdns(self.opt_pattern(st)?),
            "src" => FilterCond::Src(self.pattern(st)?),
            "helo" => FilterCond::Helo(self.pattern(st)?),
            "auth" => FilterCond::Auth(self.opt_pattern(st)?),
            "mail-from" => FilterCond::MailFrom(self.pattern(st)?),
            "rcpt-to" => FilterCond::RcptTo(self.pattern(st)?),
            _ => return Err(st.bad_prev()),
        };
        // What each phase knows: a condition on data not yet sent is refused.
        let known: &[&str] = match phase {
            Phase::Connect => &["fcrdns", "rdns", "src"],
            Phase::Helo | Phase::Ehlo => &["fcrdns", "rdns", "src", "helo"],
            Phase::Auth => &["fcrdns", "rdns", "src", "helo", "auth"],
            Phase::MailFrom => &["fcrdns", "rdns", "src", "helo", "auth", "mail-from"],
            _ => &[
                "fcrdns",
                "rdns",
                "src",
                "helo",
                "auth",
                "mail-from",
                "rcpt-to",
            ],
        };
        if !known.contains(&c.as_str()) {
            return Err(format!(
                "filter condition {c} is not available at phase {p}"
            ));
        }
        let v = st.keyword()?;
        let verdict = match v.as_str() {
            "junk" if phase != Phase::Commit => FilterVerdict::Junk,
            "bypass" => FilterVerdict::Bypass,
            "reject" => FilterVerdict::Reject(reply_message(st.string()?)?),
            "disconnect" => FilterVerdict::Disconnect(reply_message(st.string()?)?),
            "rewrite" => FilterVerdict::Rewrite(st.string()?),
            "report" => FilterVerdict::Report(st.string()?),
            _ => return Err(st.bad_prev()),
        };
        Ok(FilterKind::Builtin {
            phase,
            negate,
            cond,
            verdict,
        })
    }

    fn proc_(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let pos = st.pos(self.current_file());
        let name = st.string()?;
        if self.cfg.procs.iter().any(|p| p.name == name) {
            return Err(format!("processor already exists with that name: {name}"));
        }
        let command = st.string()?;
        let opts = proc_opts(st)?;
        self.cfg.procs.push(Proc {
            pos,
            name,
            command,
            opts,
        });
        Ok(())
    }

    fn queue(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let kw = st.keyword()?;
        let s = &mut self.cfg.settings;
        match kw.as_str() {
            "compression" => s.queue_compression = true,
            "encryption" => {
                let key = if st.at_end() {
                    None
                } else {
                    Some(st.string()?)
                };
                if let Some(k) = &key {
                    if k != "-" && k != "stdin" && k.len() != 32 {
                        return Err("invalid queue encryption key".into());
                    }
                }
                s.queue_encryption = Some(key);
            }
            "ttl" => {
                let v = st.string_or_num()?;
                s.queue_ttl = delay(&v).ok_or(format!("invalid ttl delay: {v}"))?;
            }
            _ => return Err(st.bad_prev()),
        }
        st.end()
    }

    fn bounce(&mut self, st: &mut Stmt<'_>) -> R<()> {
        st.expect("warn-interval")?;
        let mut delays = Vec::new();
        loop {
            let v = st.string_or_num()?;
            delays.push(delay(&v).ok_or(format!("invalid bounce delay: {v}"))?);
            if !st.eat_sym(',') {
                break;
            }
        }
        if delays.len() > 4 {
            return Err(format!(
                "bounce warn-interval: at most 4 delays, {} given",
                delays.len()
            ));
        }
        st.end()?;
        self.cfg.settings.bounce_warn = delays;
        Ok(())
    }

    fn smtp(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let kw = st.keyword()?;
        match kw.as_str() {
            "limit" => return self.limits(st, "smtp", &["max-mails", "max-rcpt"]),
            "ciphers" => self.cfg.settings.smtp_ciphers = Some(st.string()?),
            "max-message-size" => {
                let v = st.string_or_num()?;
                self.cfg.settings.max_message_size =
                    size(&v).ok_or(format!("invalid size: {v}"))?;
            }
            "sub-addr-delim" => {
                let v = st.string()?;
                let mut chars = v.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_graphic() => self.cfg.settings.sub_addr_delim = c,
                    _ => return Err(format!("invalid sub-addr-delim: {v}")),
                }
            }
            _ => return Err(st.bad_prev()),
        }
        st.end()
    }

    /// `KIND limit KEY N [KEY N ...]` with the keys OpenSMTPD knows.
    fn limits(&mut self, st: &mut Stmt<'_>, kind: &str, keys: &[&str]) -> R<()> {
        while !st.at_end() {
            let k = st.string_or_keyword()?;
            if !keys.contains(&k.as_str()) {
                return Err(format!("invalid {kind} limit keyword: {k}"));
            }
            let n = st.number()?;
            match (kind, k.as_str()) {
                ("smtp", "max-mails") => self.cfg.settings.max_mails = n,
                ("smtp", "max-rcpt") => self.cfg.settings.max_rcpt = n,
                _ => {}
            }
            self.cfg.settings.limits.push((kind.into(), k, n));
        }
        Ok(())
    }

    fn mta(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let kw = st.keyword()?;
        match kw.as_str() {
            "max-deferred" => {
                self.cfg.settings.mta_max_deferred = st.number()?;
                st.end()
            }
            "limit" => {
                if st.eat_word("for") {
                    st.expect("domain")?;
                    st.string()?;
                }
                let keys = [
                    "session-time",
                    "session-mail-time",
                    "session-rcpt-time",
                    "session-delay",
                    "max-sessions",
                    "max-sessions-per-route",
                    "max-mx-sessions",
                    "max-conn",
                    "max-conn-per-host",
                    "max-conn-delay",
                    "max-conn-per-route",
                    "conn-delay",
                    "max-domain",
                    "discdelay-route",
                    "inet4",
                    "inet6",
                ];
                while st.eat_word("inet4") || st.eat_word("inet6") {}
                self.limits(st, "mta", &keys)
            }
            _ => Err(st.bad_prev()),
        }
    }

    fn mda(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let kw = st.keyword()?;
        match kw.as_str() {
            "wrapper" => {
                let pos = st.pos(self.current_file());
                let name = st.string()?;
                let command = st.string()?;
                st.end()?;
                if self.cfg.wrappers.iter().any(|w| w.name == name) {
                    return Err(format!(
                        "mda wrapper already declared with that name: {name}"
                    ));
                }
                self.cfg.wrappers.push(MdaWrapper { pos, name, command });
                Ok(())
            }
            "limit" => self.limits(
                st,
                "mda",
                &[
                    "max-session",
                    "max-session-per-user",
                    "task-lowat",
                    "task-hiwat",
                    "task-release",
                ],
            ),
            _ => Err(st.bad_prev()),
        }
    }

    fn srs(&mut self, st: &mut Stmt<'_>) -> R<()> {
        let kw = st.keyword()?;
        match kw.as_str() {
            "key" => {
                if st.eat_word("backup") {
                    self.cfg.settings.srs_key_backup = Some(st.string()?);
                } else {
                    self.cfg.settings.srs_key = Some(st.string()?);
                }
            }
            "ttl" => {
                let v = st.string_or_num()?;
                self.cfg.settings.srs_ttl =
                    delay(&v).ok_or(format!("ttl delay \"{v}\" is invalid"))?;
            }
            _ => return Err(st.bad_prev()),
        }
        st.end()
    }

    fn current_file(&self) -> String {
        self.stack
            .last()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn proc_opts(st: &mut Stmt<'_>) -> R<ProcOpts> {
    let mut o = ProcOpts::default();
    while !st.at_end() {
        let kw = st.keyword()?;
        match kw.as_str() {
            "user" => set_once(&mut o.user, st.string()?, "user already specified")?,
            "group" => set_once(&mut o.group, st.string()?, "group already specified")?,
            "chroot" => set_once(&mut o.chroot, st.string()?, "chroot already specified")?,
            _ => return Err(st.bad_prev()),
        }
    }
    Ok(o)
}

/// A filter's reply must be an SMTP reply: 4xx or 5xx and text.
fn reply_message(s: String) -> R<String> {
    let b = s.as_bytes();
    let ok = b.len() >= 4
        && matches!(b[0], b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b[3] == b' ';
    if ok {
        Ok(s)
    } else {
        Err(format!("invalid reject message: {s}"))
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T, msg: &str) -> R<()> {
    if slot.is_some() {
        return Err(msg.into());
    }
    *slot = Some(v);
    Ok(())
}

fn set_flag(flag: &mut bool, msg: &str) -> R<()> {
    if *flag {
        return Err(msg.into());
    }
    *flag = true;
    Ok(())
}

/// `N{s|m|h|d}`, positive.
pub fn delay(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok().filter(|&n| n > 0)?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(mult)?))
}

/// Bytes, or scan_scaled(3): a number with B, K, M, G or T.
pub fn size(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A port by number or by the names smtpd.conf users write.
fn service_port(s: &str) -> Option<u16> {
    match s {
        "smtp" => Some(25),
        "smtps" => Some(465),
        "submission" => Some(587),
        "lmtp" => Some(24),
        _ => s.parse::<u16>().ok().filter(|&p| p > 0),
    }
}

/// A `{ ... }` list: plain values, and key = value pairs.
type Braced = (Vec<String>, Vec<(String, String)>);

/// The tokens of one statement, consumed left to right.
struct Stmt<'t> {
    toks: &'t [Token],
    i: usize,
    line: usize,
    /// The token an error was found at, for its line.
    bad: std::cell::Cell<Option<usize>>,
}

impl Stmt<'_> {
    fn err_line(&self) -> usize {
        let at = self
            .bad
            .get()
            .unwrap_or(self.i)
            .min(self.toks.len().saturating_sub(1));
        self.toks.get(at).map(|t| t.line).unwrap_or(self.line)
    }

    /// "syntax error" naming the token at `idx` (and remembering its line).
    fn syntax_at(&self, idx: usize) -> String {
        self.bad.set(Some(idx));
        match self.toks.get(idx).map(|t| &t.tok) {
            Some(Tok::Word(w)) => format!("syntax error: unexpected `{w}`"),
            Some(Tok::Str(w)) => format!("syntax error: unexpected \"{w}\""),
            Some(Tok::Num(n)) => format!("syntax error: unexpected number {n}"),
            Some(Tok::Sym(c)) => format!("syntax error: unexpected `{c}`"),
            _ => "syntax error: unexpected end of line".into(),
        }
    }

    /// The token just taken was wrong.
    fn bad_prev(&self) -> String {
        self.syntax_at(self.i.saturating_sub(1))
    }

    /// The token about to be taken is wrong.
    fn bad_here(&self) -> String {
        self.syntax_at(self.i)
    }

    fn pos(&self, file: String) -> Pos {
        Pos {
            file,
            line: self.line,
        }
    }

    fn at_end(&self) -> bool {
        self.i >= self.toks.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn take(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.tok.clone());
        self.i += 1;
        t
    }

    fn end(&self) -> R<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.bad_here())
        }
    }

    /// An unquoted keyword.
    fn keyword(&mut self) -> R<String> {
        match self.take() {
            Some(Tok::Word(w)) if is_keyword(&w) => Ok(w),
            _ => Err(self.bad_prev()),
        }
    }

    fn expect(&mut self, kw: &str) -> R<()> {
        if self.eat_word(kw) {
            Ok(())
        } else {
            Err(self.bad_here())
        }
    }

    fn peek_word(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == kw)
    }

    fn eat_word(&mut self, kw: &str) -> bool {
        let yes = self.peek_word(kw);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn peek_sym(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Sym(c))
    }

    fn eat_sym(&mut self, c: char) -> bool {
        let yes = self.peek_sym(c);
        if yes {
            self.i += 1;
        }
        yes
    }

    /// A STRING: quoted, or an unquoted word that is not a keyword.
    fn peek_string(&self) -> bool {
        match self.peek() {
            Some(Tok::Str(_)) => true,
            Some(Tok::Word(w)) => !is_keyword(w),
            _ => false,
        }
    }

    fn string(&mut self) -> R<String> {
        if !self.peek_string() {
            return Err(self.bad_here());
        }
        match self.take() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => Ok(s),
            _ => Err(self.bad_prev()),
        }
    }

    fn quoted_or_string(&mut self) -> R<String> {
        self.string()
    }

    fn string_or_num(&mut self) -> R<String> {
        if let Some(Tok::Num(n)) = self.peek() {
            let n = *n;
            self.i += 1;
            return Ok(n.to_string());
        }
        self.string()
    }

    fn string_or_keyword(&mut self) -> R<String> {
        match self.take() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => Ok(s),
            _ => Err(self.bad_prev()),
        }
    }

    fn number(&mut self) -> R<u64> {
        match self.take() {
            Some(Tok::Num(n)) if n >= 0 => Ok(n as u64),
            Some(Tok::Num(n)) => Err(format!("invalid number: {n}")),
            _ => Err(self.bad_prev()),
        }
    }

    /// `{ a, b }` or `{ k = v, ... }` (newlines were dropped by the
    /// statement reader); values are strings or numbers.
    fn braced_values(&mut self) -> R<Braced> {
        if !self.eat_sym('{') {
            return Err(self.bad_prev());
        }
        let (mut list, mut map) = (Vec::new(), Vec::new());
        loop {
            if self.eat_sym('}') {
                return Ok((list, map));
            }
            let v = self.value()?;
            if self.eat_sym('=') {
                // `k = v` or `k => v`, as parse.y's `assign`.
                self.eat_sym('>');
                map.push((v, self.value()?));
            } else {
                list.push(v);
            }
            if self.eat_sym(',') && self.peek_sym('}') {
                return Err(self.bad_here());
            }
            // OpenSMTPD also takes lists separated by newlines alone.
            if self.at_end() {
                return Err("syntax error: unterminated { list".into());
            }
        }
    }

    fn value(&mut self) -> R<String> {
        match self.take() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => Ok(s),
            Some(Tok::Num(n)) => Ok(n.to_string()),
            _ => Err(self.bad_prev()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_sorted_for_binary_search() {
        let mut k = KEYWORDS.to_vec();
        k.sort();
        assert_eq!(k, KEYWORDS);
    }

    #[test]
    fn delays_and_sizes() {
        assert_eq!(delay("4d"), Some(Duration::from_secs(345600)));
        assert_eq!(delay("0h"), None);
        assert_eq!(delay("5x"), None);
        assert_eq!(delay(""), None);
        assert_eq!(size("35M"), Some(35 << 20));
        assert_eq!(size("1000"), Some(1000));
        assert_eq!(size("99999999999999999999G"), None);
    }
}
