//! Per-role views of the config: each role is sent only what it needs,
//! serialized, and seals what it decodes (`sys::seal`).
//!
//! - dispatcher: its listeners (with their options), SMTP limits, and each
//!   pki's certificate chain, which is public; never a private key.
//! - ca: the private keys, read by the parent (root) from the pki files.
//! - lka: tables, actions, match rules, filters, procs, mda wrappers.
//! - queue and scheduler: queue lifetime and bounce settings.
//! - control: nothing beyond the common part.

use super::ast::{Action, Config, Filter, ListenOpts, Match, MdaWrapper, Proc, Table};
use crate::proc::Role;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// What one role receives. The variant must match the role that decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    Control(ControlView),
    Lka(LkaView),
    Queue(QueueView),
    Scheduler(SchedulerView),
    Dispatcher(DispatcherView),
    Ca(CaView),
}

impl View {
    pub fn role(&self) -> Role {
        match self {
            View::Control(_) => Role::Control,
            View::Lka(_) => Role::Lka,
            View::Queue(_) => Role::Queue,
            View::Scheduler(_) => Role::Scheduler,
            View::Dispatcher(_) => Role::Dispatcher,
            View::Ca(_) => Role::Ca,
        }
    }
}

/// Settings every role shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    /// This host's name, for banners and Received lines.
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlView {
    pub common: Common,
    /// `-P mda`, `-P mta`, `-P smtp`: what `smtpctl show status` reports
    /// at start.
    pub pause_mda: bool,
    pub pause_mta: bool,
    pub pause_smtp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LkaView {
    pub common: Common,
    pub tables: Vec<Table>,
    pub actions: Vec<Action>,
    pub matches: Vec<Match>,
    pub filters: Vec<Filter>,
    pub procs: Vec<Proc>,
    pub wrappers: Vec<MdaWrapper>,
    pub sub_addr_delim: char,
    /// The contents of every `file:` table, read by the parent at start,
    /// by table name: lka parses them and opens no file itself.
    pub table_files: Vec<(String, Vec<u8>)>,
    /// This host's addresses (`from local`).
    pub local_addrs: Vec<std::net::IpAddr>,
    /// Each listener's `auth <table>`, by the dispatcher's listener index.
    pub listener_auth: Vec<Option<super::ast::TableRef>>,
    /// Per listener: its `senders` table, if any.
    pub listener_senders: Vec<Option<super::ast::TableRef>>,
    /// `srs key ...`: bounces to SRS addresses are sent to what they
    /// stand for.
    pub srs: Option<crate::srs::Srs>,
}

/// Queue lifetime settings, shared by queue and scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub ttl: Duration,
    pub bounce_warn: Vec<Duration>,
    pub compression: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub common: Common,
    pub queue: QueueSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerView {
    pub common: Common,
    pub queue: QueueSettings,
    /// `-P mda`, `-P mta`: those deliveries start paused.
    pub pause_mda: bool,
    pub pause_mta: bool,
}

/// A pki's private key, for ca only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkiKey {
    pub name: String,
    pub key_pem: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaView {
    pub common: Common,
    pub keys: Vec<PkiKey>,
}

/// A pki's public half, for the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkiCert {
    pub name: String,
    pub cert_pem: Vec<u8>,
}

/// One bound SMTP listener: the socket comes as a descriptor with the
/// same index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    pub addr: SocketAddr,
    pub hostname: String,
    pub opts: ListenOpts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherView {
    pub common: Common,
    pub listeners: Vec<ListenerView>,
    /// sendmail's sessions (OpenSMTPD's `listen on socket`): its options
    /// if the config has that line, else none; `addr` is unused. Boxed:
    /// the view enum's variants stay of a size.
    pub local: Box<ListenerView>,
    pub certs: Vec<PkiCert>,
    /// CAs for `verify` listeners (see [`client_ca_name`]).
    pub client_cas: Vec<PkiCert>,
    pub max_mails: u64,
    pub max_rcpt: u64,
    pub max_message_size: u64,
    /// The `relay` actions, resolved (see [`super::relay`]).
    pub relays: Vec<super::relay::RelayView>,
    /// The system's root certificates (PEM), for `tls` relays without a
    /// `ca`; empty if the bundle is missing.
    pub roots_pem: Vec<u8>,
    /// `smtpd -P smtp`: the listeners are not watched until `smtpctl
    /// resume smtp`.
    pub pause_smtp: bool,
    /// `srs key ...`: for relay actions with `srs`.
    pub srs: Option<crate::srs::Srs>,
}

/// What the parent read from disk and the system for the views.
#[derive(Debug, Clone, Default)]
pub struct Material {
    pub certs: Vec<PkiCert>,
    /// CA certificates that client certificates are verified against
    /// (`listen ... verify`), by the name the listener uses for them.
    pub client_cas: Vec<PkiCert>,
    pub keys: Vec<PkiKey>,
    /// `file:` tables' contents, by name.
    pub table_files: Vec<(String, Vec<u8>)>,
    pub local_addrs: Vec<std::net::IpAddr>,
    pub relays: Vec<super::relay::RelayView>,
    pub roots_pem: Vec<u8>,
}

/// Largest table file the parent reads: lka's own bound.
const MAX_TABLE_FILE: u64 = crate::lka::table::MAX_FILE_BYTES;

/// Read every pki's certificate and key (the parent does this, as root,
/// before any role exists).
pub fn read_material(cfg: &Config) -> Result<Material, String> {
    let mut m = Material::default();
    for p in &cfg.pkis {
        let read = |path: &Option<String>, what: &str| -> Result<Vec<u8>, String> {
            let path = path
                .as_deref()
                .ok_or(format!("pki {}: no {what}", p.name))?;
            std::fs::read(path).map_err(|e| format!("pki {}: {what} {path}: {e}", p.name))
        };
        m.certs.push(PkiCert {
            name: p.name.clone(),
            cert_pem: read(&p.cert, "certificate")?,
        });
        m.keys.push(PkiKey {
            name: p.name.clone(),
            key_pem: read(&p.key, "key")?,
        });
    }
    for l in &cfg.listens {
        if let Some(name) = client_ca_name(&l.opts) {
            if !m.client_cas.iter().any(|c| c.name == name) {
                let cert_pem = read_client_ca(cfg, &name)?;
                m.client_cas.push(PkiCert { name, cert_pem });
            }
        }
    }
    for t in &cfg.tables {
        if let super::ast::TableSource::Backend { backend, path } = &t.source {
            if backend == "file" {
                m.table_files
                    .push((t.name.clone(), read_table_file(&t.name, path)?));
            }
        }
    }
    m.relays = super::relay::views(cfg, &m.table_files)?;
    if !m.relays.is_empty() {
        // Missing roots only fail the relays that verify, at delivery.
        m.roots_pem = std::fs::read(SYSTEM_CA_FILE).unwrap_or_default();
    }
    m.local_addrs = crate::sys::ifaddrs::all().map_err(|e| format!("interface addresses: {e}"))?;
    Ok(m)
}

/// The system's CA bundle: where a listener's `verify` looks without a
/// `ca` of its own.
pub const SYSTEM_CA_FILE: &str = if cfg!(target_os = "openbsd") {
    "/etc/ssl/cert.pem"
} else {
    "/etc/ssl/certs/ca-certificates.crt"
};

/// The CA a `verify` listener checks client certificates against: its
/// `ca NAME` option, else the CA named like its first pki (OpenSMTPD's
/// pairing of `pki NAME` and `ca NAME`), else "" for the system bundle.
/// None when the listener does not verify.
pub fn client_ca_name(opts: &ListenOpts) -> Option<String> {
    use super::ast::TlsMode;
    let verify = matches!(
        opts.tls,
        Some(TlsMode::Require { verify: true } | TlsMode::Smtps { verify: true })
    );
    if !verify {
        return None;
    }
    Some(
        opts.ca
            .clone()
            .or_else(|| opts.pki.first().cloned())
            .unwrap_or_default(),
    )
}

fn read_client_ca(cfg: &Config, name: &str) -> Result<Vec<u8>, String> {
    let path = cfg
        .cas
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.cert.clone())
        .unwrap_or_else(|| SYSTEM_CA_FILE.to_string());
    std::fs::read(&path).map_err(|e| format!("ca {name}: {path}: {e}"))
}

/// A `file:` table's bytes, bounded.
fn read_table_file(name: &str, path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("table {name}: {path}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_TABLE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("table {name}: {path}: {e}"))?;
    if bytes.len() as u64 > MAX_TABLE_FILE {
        return Err(format!(
            "table {name}: {path}: larger than {MAX_TABLE_FILE} bytes"
        ));
    }
    Ok(bytes)
}

/// The listener of sendmail's sessions: `listen on socket`'s options.
fn local_listener(cfg: &Config, hostname: &str) -> ListenerView {
    let opts = cfg
        .listens
        .iter()
        .find(|l| l.on == super::ast::ListenOn::Socket)
        .map(|l| l.opts.clone())
        .unwrap_or_default();
    ListenerView {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        hostname: opts
            .hostname
            .clone()
            .unwrap_or_else(|| hostname.to_string()),
        opts,
    }
}

/// Build the view for `role`.
pub fn for_role(
    role: Role,
    cfg: &Config,
    hostname: &str,
    listeners: &[ListenerView],
    material: &Material,
) -> Option<View> {
    let common = Common {
        hostname: hostname.to_string(),
    };
    let s = &cfg.settings;
    let queue = QueueSettings {
        ttl: s.queue_ttl,
        bounce_warn: s.bounce_warn.clone(),
        compression: s.queue_compression,
    };
    Some(match role {
        Role::Parent | Role::Delivery => return None,
        Role::Control => View::Control(ControlView {
            common,
            pause_mda: s.pause_mda,
            pause_mta: s.pause_mta,
            pause_smtp: s.pause_smtp,
        }),
        Role::Lka => View::Lka(LkaView {
            common,
            tables: cfg.tables.clone(),
            actions: cfg.actions.clone(),
            matches: cfg.matches.clone(),
            filters: cfg.filters.clone(),
            procs: cfg.procs.clone(),
            wrappers: cfg.wrappers.clone(),
            sub_addr_delim: s.sub_addr_delim,
            table_files: material.table_files.clone(),
            local_addrs: material.local_addrs.clone(),
            listener_auth: listeners
                .iter()
                .map(|l| l.opts.auth.as_ref().and_then(|(_, t)| t.clone()))
                .collect(),
            listener_senders: listeners
                .iter()
                .map(|l| l.opts.senders.as_ref().map(|(t, _)| t.clone()))
                .collect(),
            srs: crate::srs::Srs::from_settings(s),
        }),
        Role::Queue => View::Queue(QueueView { common, queue }),
        Role::Scheduler => View::Scheduler(SchedulerView {
            common,
            queue,
            pause_mda: s.pause_mda,
            pause_mta: s.pause_mta,
        }),
        Role::Ca => View::Ca(CaView {
            common,
            keys: material.keys.clone(),
        }),
        Role::Dispatcher => View::Dispatcher(DispatcherView {
            local: Box::new(local_listener(cfg, &common.hostname)),
            common,
            listeners: listeners.to_vec(),
            certs: material.certs.clone(),
            client_cas: material.client_cas.clone(),
            max_mails: s.max_mails,
            max_rcpt: s.max_rcpt,
            max_message_size: s.max_message_size,
            relays: material.relays.clone(),
            roots_pem: material.roots_pem.clone(),
            pause_smtp: s.pause_smtp,
            srs: crate::srs::Srs::from_settings(s),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::ROLES;

    #[test]
    fn private_keys_reach_ca_and_no_one_else() {
        let cfg = crate::config::parser::Parser::new(&[]);
        let (mut cfg, _) = {
            let mut p = cfg;
            p.file(
                "t",
                b"table t { a }\naction a mbox\nmatch for local action a\n",
            );
            p.finish()
        };
        cfg.pkis.push(crate::config::ast::Pki {
            name: "mx".into(),
            ..Default::default()
        });
        let secret = b"-----BEGIN PRIVATE KEY----- SECRET-KEY-BYTES".to_vec();
        let material = Material {
            certs: vec![PkiCert {
                name: "mx".into(),
                cert_pem: b"PUBLIC".to_vec(),
            }],
            keys: vec![PkiKey {
                name: "mx".into(),
                key_pem: secret.clone(),
            }],
            ..Default::default()
        };
        for spec in ROLES {
            let v = for_role(spec.role, &cfg, "h", &[], &material).unwrap();
            assert_eq!(v.role(), spec.role);
            let bytes = postcard::to_stdvec(&v).unwrap();
            let has_key = bytes.windows(secret.len()).any(|w| w == secret.as_slice());
            assert_eq!(has_key, spec.role == Role::Ca, "{}", spec.role);
            let has_rules = matches!(&v, View::Lka(l) if !l.matches.is_empty());
            assert_eq!(has_rules, spec.role == Role::Lka, "{}", spec.role);
        }
    }
}
