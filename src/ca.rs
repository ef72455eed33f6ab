//! The ca role: the only process that holds TLS private keys. It tells the
//! dispatcher which keys exist and how they can sign, then signs what the
//! dispatcher's TLS handshakes need. A compromised dispatcher can ask for
//! signatures while it runs, but can never read a key (OpenSMTPD's ca.c
//! does the same for RSA). Chrooted in /var/empty, pledged "stdio".

#![forbid(unsafe_code)]

use crate::config::view::View;
use crate::ipc::msg::{DispatcherCa, KeyInfo};
use crate::proc::Role;
use crate::prologue::{serve, Setup};
use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use std::collections::HashMap;
use std::sync::Arc;

/// Every scheme rustls can sign a TLS handshake with.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// Largest thing ca agrees to sign: handshake transcripts are hashed
/// first, so a few hundred bytes is the real need.
const MAX_SIGN_INPUT: usize = 16 * 1024;

/// Parse PEM private keys into signing keys.
pub fn load_keys(
    keys: &[(String, Vec<u8>)],
) -> Result<HashMap<String, Arc<dyn SigningKey>>, String> {
    let mut out = HashMap::new();
    for (name, pem) in keys {
        let der =
            PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("pki {name}: key: {e}"))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("pki {name}: unsupported key: {e}"))?;
        out.insert(name.clone(), key);
    }
    Ok(out)
}

/// What the dispatcher needs to know of each key.
pub fn key_infos(keys: &HashMap<String, Arc<dyn SigningKey>>) -> Vec<KeyInfo> {
    let mut v: Vec<KeyInfo> = keys
        .iter()
        .map(|(name, key)| KeyInfo {
            pki: name.clone(),
            algorithm: u8::from(key.algorithm()),
            schemes: SCHEMES
                .iter()
                .filter(|s| key.choose_scheme(&[**s]).is_some())
                .map(|s| u16::from(*s))
                .collect(),
        })
        .collect();
    v.sort_by(|a, b| a.pki.cmp(&b.pki));
    v
}

/// Answer one request; an error for anything but Sign.
pub fn answer(
    keys: &HashMap<String, Arc<dyn SigningKey>>,
    m: DispatcherCa,
) -> Result<DispatcherCa, String> {
    let (req, pki, scheme, data) = match m {
        DispatcherCa::Sign {
            req,
            pki,
            scheme,
            data,
        } => (req, pki, scheme, data),
        other => return Err(crate::ipc::msg::unexpected(Role::Dispatcher, &other)),
    };
    let fail = |text: String| Ok(DispatcherCa::SignFailed { req, text });
    if data.len() > MAX_SIGN_INPUT {
        return fail(format!(
            "{} bytes to sign, over {MAX_SIGN_INPUT}",
            data.len()
        ));
    }
    let Some(key) = keys.get(&pki) else {
        return fail(format!("no pki {pki}"));
    };
    let Some(signer) = key.choose_scheme(&[SignatureScheme::from(scheme)]) else {
        return fail(format!("pki {pki} cannot sign with scheme {scheme:#06x}"));
    };
    match signer.sign(&data) {
        Ok(signature) => Ok(DispatcherCa::Signature { req, signature }),
        Err(e) => fail(format!("signing failed: {e}")),
    }
}

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Ca(view) = setup.view.get() else {
        return Err("not a ca view".into());
    };
    let pems: Vec<(String, Vec<u8>)> = view
        .keys
        .iter()
        .map(|k| (k.name.clone(), k.key_pem.clone()))
        .collect();
    let keys = load_keys(&pems)?;
    drop(pems);
    let infos = key_infos(&keys);
    serve(
        setup.links,
        |links, lp| {
            links.send(
                lp,
                Role::Dispatcher,
                &DispatcherCa::Keys { keys: infos },
                Vec::new(),
            )
        },
        |links, lp, frames| {
            for f in frames {
                if f.peer != Role::Dispatcher {
                    return Err(f.refuse(Role::Ca));
                }
                let reply = answer(&keys, f.decode()?)?;
                links.send(lp, Role::Dispatcher, &reply, Vec::new())?;
            }
            Ok(())
        },
    )
}
