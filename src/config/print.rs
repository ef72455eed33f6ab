//! The config printed back in normalised form (`smtpd -nv`): macros
//! expanded, includes inlined, every string quoted, declarations before
//! their uses. What this prints parses to the same `Config` (tests.rs).

use super::ast::*;
use std::fmt::Write;
use std::time::Duration;

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

fn dur(d: &Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("{{ {} }}", inner.join(", "))
}

fn table_ref(t: &TableRef) -> String {
    match t {
        TableRef::Named(n) => format!("<{n}>"),
        TableRef::Inline(v) if v.len() == 1 => q(&v[0]),
        TableRef::Inline(v) => list(v),
    }
}

fn pattern(p: &Pattern) -> String {
    format!(
        "{}{}",
        if p.regex { "regex " } else { "" },
        table_ref(&p.table)
    )
}

fn opt_pattern(kw: &str, p: &Option<Pattern>) -> String {
    match p {
        Some(p) => format!("{kw} {}", pattern(p)),
        None => kw.to_string(),
    }
}

fn filter_ref(f: &FilterRef) -> String {
    match f {
        FilterRef::Named(n) => q(n),
        FilterRef::Chain(v) => list(v),
    }
}

fn proc_opts(o: &ProcOpts) -> String {
    let mut s = String::new();
    for (k, v) in [
        ("user", &o.user),
        ("group", &o.group),
        ("chroot", &o.chroot),
    ] {
        if let Some(v) = v {
            let _ = write!(s, " {k} {}", q(v));
        }
    }
    s
}

/// The normalised text of `cfg`.
pub fn print(cfg: &Config) -> String {
    let mut out = String::new();
    let o = &mut out;
    settings(o, &cfg.settings);
    for t in &cfg.tables {
        let src = match &t.source {
            TableSource::Backend { backend, path } => q(&format!("{backend}:{path}")),
            TableSource::List(v) => list(v),
            TableSource::Map(kv) => {
                let inner: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                    .collect();
                format!("{{ {} }}", inner.join(", "))
            }
        };
        let _ = writeln!(o, "table {} {src}", q(&t.name));
    }
    for p in &cfg.pkis {
        for (k, v) in [("cert", &p.cert), ("key", &p.key), ("dhe", &p.dhe)] {
            if let Some(v) = v {
                let _ = writeln!(o, "pki {} {k} {}", q(&p.name), q(v));
            }
        }
    }
    for c in &cfg.cas {
        if let Some(cert) = &c.cert {
            let _ = writeln!(o, "ca {} cert {}", q(&c.name), q(cert));
        }
    }
    for p in &cfg.procs {
        let _ = writeln!(
            o,
            "proc {} {}{}",
            q(&p.name),
            q(&p.command),
            proc_opts(&p.opts)
        );
    }
    for f in &cfg.filters {
        let _ = writeln!(o, "filter {} {}", q(&f.name), filter_kind(&f.kind));
    }
    for w in &cfg.wrappers {
        let _ = writeln!(o, "mda wrapper {} {}", q(&w.name), q(&w.command));
    }
    for l in &cfg.listens {
        let _ = writeln!(o, "{}", listen(l));
    }
    for a in &cfg.actions {
        let _ = writeln!(o, "{}", action(a));
    }
    for m in &cfg.matches {
        let _ = writeln!(o, "{}", match_(m));
    }
    out
}

fn settings(o: &mut String, s: &Settings) {
    let d = Settings::default();
    if let Some(a) = &s.admd {
        let _ = writeln!(o, "admd {}", q(a));
    }
    if s.queue_compression {
        let _ = writeln!(o, "queue compression");
    }
    match &s.queue_encryption {
        Some(Some(k)) => {
            let _ = writeln!(o, "queue encryption {}", q(k));
        }
        Some(None) => {
            let _ = writeln!(o, "queue encryption");
        }
        None => {}
    }
    if s.queue_ttl != d.queue_ttl {
        let _ = writeln!(o, "queue ttl {}", dur(&s.queue_ttl));
    }
    if s.bounce_warn != d.bounce_warn {
        let v: Vec<String> = s.bounce_warn.iter().map(dur).collect();
        let _ = writeln!(o, "bounce warn-interval {}", v.join(", "));
    }
    if let Some(c) = &s.smtp_ciphers {
        let _ = writeln!(o, "smtp ciphers {}", q(c));
    }
    if s.max_message_size != d.max_message_size {
        let _ = writeln!(o, "smtp max-message-size {}", s.max_message_size);
    }
    if s.sub_addr_delim != d.sub_addr_delim {
        let _ = writeln!(
            o,
            "smtp sub-addr-delim {}",
            q(&s.sub_addr_delim.to_string())
        );
    }
    if s.mta_max_deferred != d.mta_max_deferred {
        let _ = writeln!(o, "mta max-deferred {}", s.mta_max_deferred);
    }
    for (kind, key, n) in &s.limits {
        let _ = writeln!(o, "{kind} limit {key} {n}");
    }
    if let Some(k) = &s.srs_key {
        let _ = writeln!(o, "srs key {}", q(k));
    }
    if let Some(k) = &s.srs_key_backup {
        let _ = writeln!(o, "srs key backup {}", q(k));
    }
    if s.srs_ttl != d.srs_ttl {
        let _ = writeln!(o, "srs ttl {}", dur(&s.srs_ttl));
    }
}

fn filter_kind(k: &FilterKind) -> String {
    match k {
        FilterKind::Proc(p) => format!("proc {}", q(p)),
        FilterKind::ProcExec { command, opts } => {
            format!("proc-exec {}{}", q(command), proc_opts(opts))
        }
        FilterKind::Chain(v) => format!("chain {}", list(v)),
        FilterKind::Builtin {
            phase,
            negate,
            cond,
            verdict,
        } => {
            let phase = match phase {
                Phase::Connect => "connect",
                Phase::Helo => "helo",
                Phase::Ehlo => "ehlo",
                Phase::Auth => "auth",
                Phase::MailFrom => "mail-from",
                Phase::RcptTo => "rcpt-to",
                Phase::Data => "data",
                Phase::Commit => "commit",
            };
            let cond = match cond {
                FilterCond::Fcrdns => "fcrdns".to_string(),
                FilterCond::Rdns(p) => opt_pattern("rdns", p),
                FilterCond::Src(p) => format!("src {}", pattern(p)),
                FilterCond::Helo(p) => format!("helo {}", pattern(p)),
                FilterCond::Auth(p) => opt_pattern("auth", p),
                FilterCond::MailFrom(p) => format!("mail-from {}", pattern(p)),
                FilterCond::RcptTo(p) => format!("rcpt-to {}", pattern(p)),
            };
            let verdict = match verdict {
                FilterVerdict::Junk => "junk".to_string(),
                FilterVerdict::Bypass => "bypass".to_string(),
                FilterVerdict::Reject(m) => format!("reject {}", q(m)),
                FilterVerdict::Disconnect(m) => format!("disconnect {}", q(m)),
                FilterVerdict::Rewrite(m) => format!("rewrite {}", q(m)),
                FilterVerdict::Report(m) => format!("report {}", q(m)),
            };
            format!(
                "phase {phase} match {}{cond} {verdict}",
                if *negate { "!" } else { "" }
            )
        }
    }
}

fn listen(l: &Listen) -> String {
    let mut s = match &l.on {
        ListenOn::Socket => "listen on socket".to_string(),
        ListenOn::Addr(a) => format!("listen on {}", q(&a.to_string())),
        ListenOn::Name(n) => format!("listen on {}", q(n)),
    };
    let o = &l.opts;
    match o.family {
        Some(Family::Inet4) => s.push_str(" inet4"),
        Some(Family::Inet6) => s.push_str(" inet6"),
        None => {}
    }
    if let Some(p) = o.port {
        let _ = write!(s, " port {p}");
    }
    match o.tls {
        Some(TlsMode::StartTls) => s.push_str(" tls"),
        Some(TlsMode::Require { verify }) => s.push_str(if verify {
            " tls-require verify"
        } else {
            " tls-require"
        }),
        Some(TlsMode::Smtps { verify }) => {
            s.push_str(if verify { " smtps verify" } else { " smtps" })
        }
        None => {}
    }
    for p in &o.pki {
        let _ = write!(s, " pki {}", q(p));
    }
    if let Some(c) = &o.ca {
        let _ = write!(s, " ca {}", q(c));
    }
    if let Some((mode, t)) = &o.auth {
        s.push_str(if *mode == AuthMode::Required {
            " auth"
        } else {
            " auth-optional"
        });
        if let Some(t) = t {
            let _ = write!(s, " {}", table_ref(t));
        }
    }
    if let Some(t) = &o.tag {
        let _ = write!(s, " tag {}", q(t));
    }
    if let Some(h) = &o.hostname {
        let _ = write!(s, " hostname {}", q(h));
    }
    if let Some(t) = &o.hostnames {
        let _ = write!(s, " hostnames {}", table_ref(t));
    }
    if let Some((t, masq)) = &o.senders {
        let _ = write!(
            s,
            " senders {}{}",
            table_ref(t),
            if *masq { " masquerade" } else { "" }
        );
    }
    for (on, kw) in [
        (o.mask_src, "mask-src"),
        (o.no_dsn, "no-dsn"),
        (o.proxy_v2, "proxy-v2"),
        (o.received_auth, "received-auth"),
    ] {
        if on {
            let _ = write!(s, " {kw}");
        }
    }
    if let Some(f) = &o.filter {
        let _ = write!(s, " filter {}", filter_ref(f));
    }
    if let Some(c) = &o.ciphers {
        let _ = write!(s, " ciphers {}", q(c));
    }
    if let Some(p) = &o.protocols {
        let _ = write!(s, " protocols {}", q(p));
    }
    s
}

fn action(a: &Action) -> String {
    let mut s = format!("action {} ", q(&a.name));
    match &a.method {
        Method::Mbox => s.push_str("mbox"),
        Method::Maildir { path, junk } => {
            s.push_str("maildir");
            if let Some(p) = path {
                let _ = write!(s, " {}", q(p));
            }
            if *junk {
                s.push_str(" junk");
            }
        }
        Method::Lmtp { dest, rcpt_to } => {
            let _ = write!(
                s,
                "lmtp {}{}",
                q(dest),
                if *rcpt_to { " rcpt-to" } else { "" }
            );
        }
        Method::Mda(c) => {
            let _ = write!(s, "mda {}", q(c));
        }
        Method::ForwardOnly => s.push_str("forward-only"),
        Method::ExpandOnly => s.push_str("expand-only"),
        Method::Relay(r) => {
            s.push_str("relay");
            relay(&mut s, r);
        }
    }
    let l = &a.local;
    for (kw, t) in [
        ("alias", &l.alias),
        ("virtual", &l.virtual_),
        ("userbase", &l.userbase),
    ] {
        if let Some(t) = t {
            let _ = write!(s, " {kw} {}", table_ref(t));
        }
    }
    if let Some(u) = &l.user {
        let _ = write!(s, " user {}", q(u));
    }
    if let Some(w) = &l.wrapper {
        let _ = write!(s, " wrapper {}", q(w));
    }
    if let Some(t) = &a.ttl {
        let _ = write!(s, " ttl {}", dur(t));
    }
    s
}

fn relay(s: &mut String, r: &RelayOpts) {
    match &r.backup {
        Some(Some(mx)) => {
            let _ = write!(s, " backup mx {}", q(mx));
        }
        Some(None) => s.push_str(" backup"),
        None => {}
    }
    for (kw, t) in [
        ("host", &r.host),
        ("domain", &r.domain),
        ("helo-src", &r.helo_src),
        ("src", &r.src),
        ("auth", &r.auth),
    ] {
        if let Some(t) = t {
            let _ = write!(s, " {kw} {}", table_ref(t));
        }
    }
    for (kw, v) in [
        ("helo", &r.helo),
        ("pki", &r.pki),
        ("ca", &r.ca),
        ("mail-from", &r.mail_from),
        ("ciphers", &r.ciphers),
        ("protocols", &r.protocols),
    ] {
        if let Some(v) = v {
            let _ = write!(s, " {kw} {}", q(v));
        }
    }
    match r.tls {
        Some(true) => s.push_str(" tls"),
        Some(false) => s.push_str(" tls no-verify"),
        None => {}
    }
    if r.srs {
        s.push_str(" srs");
    }
    if let Some(f) = &r.filter {
        let _ = write!(s, " filter {}", filter_ref(f));
    }
}

fn match_(m: &Match) -> String {
    let mut s = "match".to_string();
    for (neg, c) in &m.criteria {
        s.push(' ');
        if *neg {
            s.push('!');
        }
        let c = match c {
            Criterion::From(f) => match f {
                From::Any => "from any".into(),
                From::Local => "from local".into(),
                From::Socket => "from socket".into(),
                From::Src(p) => format!("from src {}", pattern(p)),
                From::Rdns(p) => format!("from {}", opt_pattern("rdns", p)),
                From::Auth(p) => format!("from {}", opt_pattern("auth", p)),
                From::MailFrom(p) => format!("from mail-from {}", pattern(p)),
            },
            Criterion::For(f) => match f {
                For::Any => "for any".into(),
                For::Local => "for local".into(),
                For::Domain(p) => format!("for domain {}", pattern(p)),
                For::RcptTo(p) => format!("for rcpt-to {}", pattern(p)),
            },
            Criterion::Tag(p) => format!("tag {}", pattern(p)),
            Criterion::Helo(p) => format!("helo {}", pattern(p)),
            Criterion::Tls => "tls".into(),
            Criterion::Auth(p) => opt_pattern("auth", p),
            Criterion::MailFrom(p) => format!("mail-from {}", pattern(p)),
            Criterion::RcptTo(p) => format!("rcpt-to {}", pattern(p)),
        };
        s.push_str(&c);
    }
    match &m.decision {
        Decision::Action(a) => {
            let _ = write!(s, " action {}", q(a));
        }
        Decision::Reject => s.push_str(" reject"),
    }
    s
}
