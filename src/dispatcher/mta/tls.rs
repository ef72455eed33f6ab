//! The mta's TLS: one rustls client config per relay action.
//!
//! - `tls` (verify): webpki checks the chain against the action's `ca`
//!   or the system's roots, and the name we connected to.
//! - opportunistic STARTTLS and `no-verify`: the handshake's signatures
//!   are still checked (the session is encrypted to whoever holds the
//!   key), but not who that is, as OpenSMTPD does: an MX's certificate is
//!   seldom valid for its MX name, and refusing would send the mail in
//!   the clear instead.

#![forbid(unsafe_code)]

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// A client config that verifies against the certificates in `roots_pem`
/// (`verify`), or one that takes any certificate; presenting `cert` (a
/// relay's `pki`, signed by ca) when the server asks for one.
pub fn client_config(
    verify: bool,
    roots_pem: &[u8],
    cert: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
        let mut roots = rustls::RootCertStore::empty();
        // A bundle may hold certificates webpki can't use: skip them, as
        // rustls-native-certs does.
        for cert in CertificateDer::pem_slice_iter(roots_pem).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("no CA certificate to verify servers with".into());
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?
    } else {
        Arc::new(AnyCertificate(provider))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(Arc::new(match cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder.with_client_cert_resolver(Arc::new(ClientCert(c))),
    }))
}

/// The one certificate a relay presents.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The name to send as SNI and verify: the host name, or its address.
pub fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    match ServerName::try_from(host.to_string()) {
        Ok(n) => n,
        Err(_) => ServerName::IpAddress(addr.into()),
    }
}

/// Accepts any certificate; checks the handshake's signatures with it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
