//! What the dispatcher needs to relay for each `relay` action, resolved
//! by the parent from the config and the files it names: the smarthost
//! URL, the AUTH credentials (from the `auth` table, by the URL's label),
//! the CA to verify servers with, and the system's root bundle.
//!
//! The parent does this once at start, as it reads pki files: the
//! dispatcher is chrooted in /var/empty and opens nothing.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::ast::{Config, Method, RelayOpts, TableRef};
use super::check::parse_relay_url;
use crate::lka::table::Table;

/// How a relay action uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayTls {
    /// STARTTLS when offered, certificate not checked (OpenSMTPD's
    /// default: an MX's certificate is rarely for its MX name).
    Opportunistic,
    /// STARTTLS or fail; `verify` checks the certificate and the name.
    Required { verify: bool },
    /// TLS from the first byte (`smtps://`).
    Smtps { verify: bool },
    /// `smtp+notls://`: never.
    Never,
}

/// A smarthost: `relay host [proto://[label@]]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHost {
    pub host: String,
    pub port: u16,
    /// `lmtp://`.
    pub lmtp: bool,
}

/// AUTH credentials for a smarthost.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAuth {
    pub user: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayAuth {{ user: {:?}, password: .. }}", self.user)
    }
}

/// One `relay` action, ready to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    pub action: String,
    pub host: Option<RelayHost>,
    /// `backup [mx NAME]`: the name, or "" for this host's own.
    pub backup: Option<String>,
    pub helo: Option<String>,
    pub tls: RelayTls,
    /// The `ca` certificates (PEM) to verify servers with; None: the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub auth: Option<RelayAuth>,
    /// `mail-from`: the envelope sender to use instead of the message's.
    pub mail_from: Option<String>,
    /// `pki`: the client certificate to present (its key stays in ca).
    pub pki: Option<String>,
    /// `src`: the addresses to connect from (the first of the target's
    /// family); empty: the kernel chooses.
    pub src: Vec<std::net::IpAddr>,
    /// `helo-src`: the name to greet with, by source address.
    pub helo_src: Vec<(std::net::IpAddr, String)>,
    /// `srs`: rewrite the sender of forwarded mail (needs `srs key`).
    pub srs: bool,
    /// `domain <table>`: a relay host by recipient domain (lower-case);
    /// other domains go by MX.
    pub domains: Vec<(String, RelayHost)>,
}

/// Every relay action of `cfg`, with the files they name read.
/// `table_files` are the `file:` tables' contents, read by the parent.
pub fn views(cfg: &Config, table_files: &[(String, Vec<u8>)]) -> Result<Vec<RelayView>, String> {
    let mut out = Vec::new();
    for a in &cfg.actions {
        let Method::Relay(o) = &a.method else {
            continue;
        };
        out.push(
            view(cfg, &a.name, o, table_files).map_err(|e| format!("action {}: {e}", a.name))?,
        );
    }
    Ok(out)
}

fn view(
    cfg: &Config,
    action: &str,
    o: &RelayOpts,
    table_files: &[(String, Vec<u8>)],
) -> Result<RelayView, String> {
    let url = match &o.host {
        None => None,
        Some(t) => {
            let first = table_values(cfg, t, table_files)?
                .into_iter()
                .next()
                .ok_or("the host table is empty")?;
            Some(parse_relay_url(&first)?)
        }
    };
    let verify = o.tls == Some(true);
    let tls = match url.as_ref().map(|u| u.proto.as_str()) {
        Some("smtps") => RelayTls::Smtps { verify },
        Some("smtp+tls") => RelayTls::Required { verify },
        Some("smtp+notls") | Some("lmtp") => RelayTls::Never,
        _ if o.tls.is_some() => RelayTls::Required { verify },
        _ => RelayTls::Opportunistic,
    };
    let auth = match (&url, &o.auth) {
        (Some(u), Some(t)) => {
            let label = u
                .label
                .as_deref()
                .ok_or("auth without a label in the host url")?;
            Some(credentials(cfg, t, label, table_files)?)
        }
        _ => None,
    };
    let src = match &o.src {
        None => Vec::new(),
        Some(t) => table_values(cfg, t, table_files)?
            .iter()
            .map(|v| v.parse().map_err(|_| format!("src: not an address: {v}")))
            .collect::<Result<_, String>>()?,
    };
    let helo_src = match &o.helo_src {
        None => Vec::new(),
        Some(t) => {
            let table = load(cfg, t, table_files)?;
            let mut pairs = Vec::new();
            for k in table.raw_keys() {
                let ip = k
                    .parse()
                    .map_err(|_| format!("helo-src: not an address: {k}"))?;
                let name = table
                    .get(k)
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("helo-src: no name for {k}"))?;
                pairs.push((ip, name.to_string()));
            }
            pairs
        }
    };
    let domains = match &o.domain {
        None => Vec::new(),
        Some(t) => {
            let table = load(cfg, t, table_files)?;
            let mut out = Vec::new();
            for d in table.raw_keys() {
                let url = table
                    .get(d)
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("domain table: no relay for {d}"))?;
                let u = parse_relay_url(url)?;
                out.push((
                    d.to_ascii_lowercase(),
                    RelayHost {
                        host: u.host,
                        port: u.port,
                        lmtp: u.proto == "lmtp",
                    },
                ));
            }
            out
        }
    };
    let ca_pem = match &o.ca {
        None => None,
        Some(name) => {
            let path = cfg
                .cas
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.cert.clone())
                .ok_or(format!("no ca {name}"))?;
            Some(std::fs::read(&path).map_err(|e| format!("ca {name}: {path}: {e}"))?)
        }
    };
    Ok(RelayView {
        action: action.to_string(),
        host: url.map(|u| RelayHost {
            host: u.host,
            port: u.port,
            lmtp: u.proto == "lmtp",
        }),
        backup: o.backup.clone().map(Option::unwrap_or_default),
        helo: o.helo.clone(),
        tls,
        ca_pem,
        auth,
        mail_from: o.mail_from.clone(),
        pki: o.pki.clone(),
        src,
        helo_src,
        srs: o.srs,
        domains,
    })
}

/// The table `t` as a `Table`, from the config or the file's contents.
fn load(cfg: &Config, t: &TableRef, table_files: &[(String, Vec<u8>)]) -> Result<Table, String> {
    let name = match t {
        TableRef::Inline(values) => {
            return Table::from_list("<inline>", values).map_err(|e| e.to_string())
        }
        TableRef::Named(n) => n,
    };
    let table = cfg
        .tables
        .iter()
        .find(|x| &x.name == name)
        .ok_or(format!("no table {name}"))?;
    Table::from_read(table, table_files).map_err(|e| format!("table {name}: {e}"))
}

fn table_values(
    cfg: &Config,
    t: &TableRef,
    table_files: &[(String, Vec<u8>)],
) -> Result<Vec<String>, String> {
    Ok(load(cfg, t, table_files)?
        .raw_keys()
        .map(str::to_string)
        .collect())
}

/// OpenSMTPD's credentials table: `label user:password`.
fn credentials(
    cfg: &Config,
    t: &TableRef,
    label: &str,
    table_files: &[(String, Vec<u8>)],
) -> Result<RelayAuth, String> {
    let table = load(cfg, t, table_files)?;
    let value = table
        .get(label)
        .map_err(|e| e.to_string())?
        .ok_or(format!("no credentials for {label}"))?;
    let (user, password) = value
        .split_once(':')
        .ok_or(format!("credentials for {label}: not user:password"))?;
    Ok(RelayAuth {
        user: user.to_string(),
        password: password.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        let mut p = crate::config::parser::Parser::new(&[]);
        p.file("t.conf", text.as_bytes());
        let (cfg, errors) = p.finish();
        assert!(errors.is_empty(), "{errors:?}");
        cfg
    }

    #[test]
    fn smarthost_with_credentials() {
        let c = cfg("table secrets { bob = \"bob:s3cret\" }\n\
             action \"out\" relay host smtp+tls://bob@mx.example.org:587 auth <secrets> helo relay.example.org\n\
             match from local for any action \"out\"\n");
        let v = views(&c, &[]).unwrap();
        assert_eq!(v.len(), 1);
        let r = &v[0];
        assert_eq!(
            r.host,
            Some(RelayHost {
                host: "mx.example.org".into(),
                port: 587,
                lmtp: false
            })
        );
        assert_eq!(r.tls, RelayTls::Required { verify: false });
        let auth = r.auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_slice()),
            ("bob", &b"s3cret"[..])
        );
        assert_eq!(r.helo.as_deref(), Some("relay.example.org"));
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn tls_choices() {
        let one = |action: &str| {
            let c = cfg(&format!(
                "action \"r\" relay {action}\nmatch from local for any action \"r\"\n"
            ));
            views(&c, &[]).unwrap().remove(0).tls
        };
        assert_eq!(one(""), RelayTls::Opportunistic);
        assert_eq!(one("tls"), RelayTls::Required { verify: true });
        assert_eq!(one("tls no-verify"), RelayTls::Required { verify: false });
        assert_eq!(
            one("host smtps://mx.example.org"),
            RelayTls::Smtps { verify: false }
        );
        assert_eq!(
            one("host smtps://mx.example.org tls"),
            RelayTls::Smtps { verify: true }
        );
        assert_eq!(one("host smtp+notls://mx.example.org"), RelayTls::Never);
    }

    #[test]
    fn missing_credentials_are_an_error() {
        let c = cfg("table secrets { alice = \"alice:x\" }\n\
             action \"out\" relay host smtp+tls://bob@mx.example.org auth <secrets>\n\
             match from local for any action \"out\"\n");
        let e = views(&c, &[]).unwrap_err();
        assert!(e.contains("no credentials for bob"), "{e}");
    }

    #[test]
    fn source_addresses_and_their_helo_names() {
        let c = cfg("table srcs { 192.0.2.7, 2001:db8::7 }\n\
             table helos { 192.0.2.7 = out.example.org }\n\
             action \"r\" relay src <srcs> helo-src <helos>\n\
             match from local for any action \"r\"\n");
        let r = views(&c, &[]).unwrap().remove(0);
        let ips: Vec<std::net::IpAddr> =
            vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        assert_eq!(r.src, ips);
        assert_eq!(r.helo_src, vec![(ips[0], "out.example.org".to_string())]);
    }
}
