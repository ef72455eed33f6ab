//! The parts of a session's log lines that need more than a format string,
//! in OpenSMTPD 6.8's words (smtp_session.c), so that what admins and
//! their parsers (logwatch, fail2ban) read of OpenSMTPD reads ours: the TLS
//! layer named as OpenSSL names it, and one `smtp envelope` line per
//! accepted recipient. regress/test_log_compat.py compares the lines with
//! OpenSMTPD's own.

use crate::log::escape;
use crate::spool::id::EvpIds;
use crate::spool::EvpId;
use rustls::{CipherSuite, CommonState, ProtocolVersion, ServerConnection};
use std::fmt;

/// The negotiated TLS version, cipher and its secret bits, as OpenSSL's
/// `SSL_get_version`, `SSL_get_cipher_name` and `SSL_get_cipher_bits` give
/// them: OpenSMTPD's `ssl_to_text`, in its `smtp tls ciphers=` line and
/// its Received header. rustls uses the IANA names; log readers know
/// OpenSSL's.
pub struct Cipher {
    version: &'static str,
    name: &'static str,
    bits: u32,
}

impl Cipher {
    /// Of either end's connection (the mta logs its own the same way).
    pub fn of(t: &CommonState) -> Option<Cipher> {
        let version = match t.protocol_version()? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let (name, bits) = openssl_name(t.negotiated_cipher_suite()?.suite());
        Some(Cipher {
            version,
            name,
            bits,
        })
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.version, self.name, self.bits)
    }
}

/// OpenSSL's name and key bits of each suite rustls offers.
fn openssl_name(s: CipherSuite) -> (&'static str, u32) {
    match s {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        CipherSuite::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256", 128)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384", 256)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305", 256)
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-RSA-CHACHA20-POLY1305", 256)
        }
        // A suite added to rustls later: its own name, its bits from it.
        other => {
            let name = other.as_str().unwrap_or("unknown");
            (name, if name.contains("128") { 128 } else { 256 })
        }
    }
}

/// The lines OpenSMTPD writes when the TLS handshake is done: the cipher,
/// then, if the client showed a certificate, its check (only `verify`
/// listeners ask for one, and a failed check fails the handshake).
pub fn tls_ready(t: &ServerConnection) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = Cipher::of(t) {
        out.push(format!("tls ciphers={c}"));
    }
    if t.peer_certificates().is_some() {
        out.push("client-cert-check result=\"success\"".into());
    }
    out
}

/// An accepted RCPT of the transaction, and how many envelopes lka made of
/// it (an alias may expand to several).
pub struct AcceptedRcpt {
    pub path: String,
    pub envelopes: usize,
}

/// After `smtp message`, OpenSMTPD writes one `smtp envelope` line per
/// accepted RCPT, naming the last envelope that RCPT made. The queue gives
/// the first envelope's id; the others follow it in the order they were
/// added (`EvpIds`), one RCPT's after the other's.
pub fn envelope_lines(first_evpid: u64, from: &str, rcpts: &[AcceptedRcpt]) -> Vec<String> {
    let Some(first) = EvpId::new(first_evpid) else {
        return Vec::new();
    };
    let mut ids = EvpIds::from_first(first);
    let from = escape(from.as_bytes());
    let mut out = Vec::with_capacity(rcpts.len());
    for r in rcpts {
        let Some(last) = ids.by_ref().take(r.envelopes).last() else {
            continue;
        };
        out.push(format!(
            "envelope evpid={last} from=<{from}> to=<{}>",
            escape(r.path.as_bytes())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::MsgId;

    #[test]
    fn each_rcpt_names_its_last_envelope() {
        let m = MsgId::new(0x1a2b3c4d).expect("msgid");
        // Ids wrap past 0xffffffff, skipping the reserved low part 0.
        let first = EvpId::from_parts(m, 0xffff_fffe).expect("evpid");
        let rcpts = [
            AcceptedRcpt {
                path: "a@example.org".into(),
                envelopes: 1,
            },
            AcceptedRcpt {
                path: "list@example.org".into(),
                envelopes: 3,
            },
        ];
        assert_eq!(
            envelope_lines(first.get(), "", &rcpts),
            [
                "envelope evpid=1a2b3c4dfffffffe from=<> to=<a@example.org>",
                "envelope evpid=1a2b3c4d00000002 from=<> to=<list@example.org>",
            ]
        );
    }

    #[test]
    fn peer_text_is_escaped() {
        let first = EvpId::from_parts(MsgId::new(1).expect("m"), 1).expect("e");
        let rcpts = [AcceptedRcpt {
            path: "\"a b\"@x".into(),
            envelopes: 1,
        }];
        let lines = envelope_lines(first.get(), "s\r\n@x", &rcpts);
        assert_eq!(
            lines,
            ["envelope evpid=0000000100000001 from=<s\\x0d\\x0a@x> to=<\\x22a b\\x22@x>"]
        );
    }
}
