//! What `smtpd -n` checks beyond the grammar: names that must resolve,
//! files that must exist with safe permissions, relay URLs that must
//! parse, and warnings for configs that run but are probably wrong (an
//! action no rule uses, an open relay).

use super::ast::*;
use super::ConfigError;

#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Report {
    fn error(&mut self, pos: &Pos, message: String) {
        self.errors.push(ConfigError {
            file: pos.file.clone(),
            line: pos.line,
            message,
        });
    }
    fn warn(&mut self, pos: &Pos, message: String) {
        self.warnings.push(ConfigError {
            file: pos.file.clone(),
            line: pos.line,
            message,
        });
    }
}

/// A relay URL, `[proto://[label@]]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub proto: String,
    pub label: Option<String>,
    pub host: String,
    pub port: u16,
}

/// Parse a relay URL as smtpd.conf(5) describes it.
pub fn parse_relay_url(s: &str) -> Result<RelayUrl, String> {
    let bad = || format!("invalid relay url: {s}");
    let (proto, rest) = match s.split_once("://") {
        Some((p, r)) => (p.to_ascii_lowercase(), r),
        None => ("smtp".to_string(), s),
    };
    let default_port = match proto.as_str() {
        "smtp" | "smtp+tls" | "smtp+notls" => 25,
        "smtps" => 465,
        "lmtp" => 0,
        _ => return Err(format!("invalid relay url: unknown protocol {proto}")),
    };
    let (label, hostport) = match rest.rsplit_once('@') {
        Some((l, h)) if !l.is_empty() => (Some(l.to_string()), h),
        Some(_) => return Err(bad()),
        None => (None, rest),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let valid_host = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    if !valid_host {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)?,
        None if default_port == 0 => {
            return Err(format!("invalid relay url: {proto} needs a port"))
        }
        None => default_port,
    };
    Ok(RelayUrl {
        proto,
        label,
        host,
        port,
    })
}

/// Every check; `name` is the top-level file (for whole-config messages).
pub fn check(cfg: &Config, name: &str) -> Report {
    let mut r = Report::default();
    if cfg.matches.is_empty() {
        r.errors.push(ConfigError {
            file: name.into(),
            line: 0,
            message: "no rules, nothing to do".into(),
        });
    }
    check_pkis(cfg, &mut r);
    for ca in &cfg.cas {
        if let Some(cert) = &ca.cert {
            readable(&mut r, &ca.pos, cert, "ca certificate");
        }
    }
    for t in &cfg.tables {
        if let TableSource::Backend { backend, path } = &t.source {
            if backend == "file" || backend == "db" {
                if let Err(e) = std::fs::metadata(path) {
                    r.error(
                        &t.pos,
                        format!(
                            "invalid configuration file {path} for table {}: {e}",
                            t.name
                        ),
                    );
                }
            }
        }
    }
    for l in &cfg.listens {
        check_listen(cfg, l, &mut r);
    }
    for a in &cfg.actions {
        check_action(cfg, a, &mut r);
    }
    for m in &cfg.matches {
        check_match(cfg, m, &mut r);
    }
    r
}

fn check_pkis(cfg: &Config, r: &mut Report) {
    use std::os::unix::fs::MetadataExt;
    for p in &cfg.pkis {
        match &p.cert {
            None => r.error(
                &p.pos,
                format!("pki {}: no certificate (pki {} cert FILE)", p.name, p.name),
            ),
            Some(c) => readable(r, &p.pos, c, "certificate"),
        }
        let line = if p.key_line > 0 {
            p.key_line
        } else {
            p.pos.line
        };
        let key_pos = Pos {
            file: p.pos.file.clone(),
            line,
        };
        match &p.key {
            None => r.error(
                &p.pos,
                format!("pki {}: no key (pki {} key FILE)", p.name, p.name),
            ),
            Some(k) => match std::fs::metadata(k) {
                Err(e) => r.error(&key_pos, format!("pki {}: key file {k}: {e}", p.name)),
                Ok(md) if md.mode() & 0o077 != 0 => r.error(
                    &key_pos,
                    format!(
                        "pki {}: key file {k} must not be group- or world-accessible (mode {:o})",
                        p.name,
                        md.mode() & 0o777
                    ),
                ),
                Ok(md) if md.uid() != 0 => r.error(
                    &key_pos,
                    format!("pki {}: key file {k} must be owned by root", p.name),
                ),
                Ok(_) => {}
            },
        }
    }
}

fn readable(r: &mut Report, pos: &Pos, path: &str, what: &str) {
    if let Err(e) = std::fs::File::open(path) {
        r.error(pos, format!("{what} {path}: {e}"));
    }
}

fn check_listen(cfg: &Config, l: &Listen, r: &mut Report) {
    let o = &l.opts;
    if o.tls.is_some() && o.pki.is_empty() {
        r.error(
            &l.pos,
            "listen: tls, tls-require and smtps need a pki".into(),
        );
    }
    if !o.pki.is_empty() && o.tls.is_none() {
        r.error(
            &l.pos,
            "invalid listen option: pki requires tls/smtps".into(),
        );
    }
    if o.auth.is_some() && o.tls.is_none() {
        r.error(
            &l.pos,
            "invalid listen option: auth requires tls/smtps".into(),
        );
    }
    if let ListenOn::Name(name) = &l.on {
        if name != "localhost" && !resolvable(name) {
            r.error(&l.pos, format!("invalid virtual ip or interface: {name}"));
        }
    }
    for name in &o.pki {
        if !cfg.pkis.iter().any(|p| &p.name == name) {
            r.error(&l.pos, format!("pki name not found: {name}"));
        }
    }
    if let Some(ca) = &o.ca {
        if !cfg.cas.iter().any(|c| &c.name == ca) {
            r.error(&l.pos, format!("ca name not found: {ca}"));
        }
    }
}

/// An interface with an address, or a name that resolves.
fn resolvable(name: &str) -> bool {
    use std::net::ToSocketAddrs;
    let is_interface = crate::sys::ifaddrs::addresses_of(name)
        .map(|a| !a.is_empty())
        .unwrap_or(false);
    is_interface
        || (name, 25)
            .to_socket_addrs()
            .map(|mut a| a.next().is_some())
            .unwrap_or(false)
}

fn check_action(cfg: &Config, a: &Action, r: &mut Report) {
    if let Method::Relay(o) = &a.method {
        if let Some(TableRef::Inline(hosts)) = &o.host {
            for h in hosts {
                match parse_relay_url(h) {
                    Err(e) => r.error(&a.pos, e),
                    Ok(u) => {
                        if u.label.is_some() && o.auth.is_none() {
                            r.error(
                                &a.pos,
                                format!(
                                    "action {}: relay url {h} has a label but no auth table",
                                    a.name
                                ),
                            );
                        }
                        if u.proto == "smtp+notls" && o.tls.is_some() {
                            r.error(
                                &a.pos,
                                format!("action {}: tls with a smtp+notls:// relay", a.name),
                            );
                        }
                    }
                }
            }
        }
        if let Some(p) = &o.pki {
            if !cfg.pkis.iter().any(|x| &x.name == p) {
                r.error(&a.pos, format!("pki name not found: {p}"));
            }
        }
        if let Some(c) = &o.ca {
            if !cfg.cas.iter().any(|x| &x.name == c) {
                r.error(&a.pos, format!("ca name not found: {c}"));
            }
        }
    }
    if !cfg
        .matches
        .iter()
        .any(|m| m.decision == Decision::Action(a.name.clone()))
    {
        r.warn(
            &a.pos,
            format!("action \"{}\" is not used by any match rule", a.name),
        );
    }
}

fn check_match(cfg: &Config, m: &Match, r: &mut Report) {
    let Decision::Action(name) = &m.decision else {
        return;
    };
    let Some(a) = cfg.actions.iter().find(|a| &a.name == name) else {
        return;
    };
    if !matches!(a.method, Method::Relay(_)) {
        return;
    }
    let from_any = m.criteria.contains(&(false, Criterion::From(From::Any)));
    let for_any = m.criteria.contains(&(false, Criterion::For(For::Any)));
    let authed = m.criteria.iter().any(|(neg, c)| {
        !neg && matches!(
            c,
            Criterion::Auth(_) | Criterion::From(From::Auth(_)) | Criterion::From(From::Src(_))
        )
    });
    if from_any && for_any && !authed {
        r.warn(&m.pos, format!("match from any for any action \"{name}\" relays mail from anyone to anywhere: an open relay"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let u = parse_relay_url("smtp+tls://bob@smtp.example.com").unwrap();
        assert_eq!(
            (
                u.proto.as_str(),
                u.label.as_deref(),
                u.host.as_str(),
                u.port
            ),
            ("smtp+tls", Some("bob"), "smtp.example.com", 25)
        );
        assert_eq!(parse_relay_url("smtps://mx:2465").unwrap().port, 2465);
        assert_eq!(parse_relay_url("[::1]:26").unwrap().host, "::1");
        assert!(parse_relay_url("lmtp://host").is_err());
        assert!(parse_relay_url("gopher://host").is_err());
        assert!(parse_relay_url("host:0").is_err());
        assert!(parse_relay_url("bad host").is_err());
    }
}
