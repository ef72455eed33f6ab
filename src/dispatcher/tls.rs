//! TLS for the dispatcher, without its private keys.
//!
//! Each pki's certificate chain is in the dispatcher's view; its key is in
//! ca's. `RemoteKey` implements rustls's `SigningKey` by asking ca, over a
//! duplicate of the ca channel, to sign: a synchronous round trip, like
//! OpenSMTPD's ca for RSA. The dispatcher is single-threaded, so while it
//! waits nothing else reads that socket, and ca answers nothing else.

use crate::ipc::msg::{DispatcherCa, KeyInfo};
use crate::ipc::Channel;
use crate::proc::Role;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{Error, ServerConfig, SignatureAlgorithm, SignatureScheme};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a signature may take before the handshake fails.
const SIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// The dispatcher's end of the signing protocol.
pub struct CaClient {
    chan: Mutex<(Channel, u64)>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaClient")
    }
}

impl CaClient {
    /// `sock` is a duplicate of the dispatcher's channel to ca.
    pub fn new(sock: OwnedFd) -> std::io::Result<Self> {
        Ok(CaClient {
            chan: Mutex::new((Channel::new(sock, Role::Ca)?, 0)),
        })
    }

    fn sign(&self, pki: &str, scheme: SignatureScheme, data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut guard = self
            .chan
            .lock()
            .map_err(|_| Error::General("ca client poisoned".into()))?;
        let (chan, next) = &mut *guard;
        *next += 1;
        let req = *next;
        let m = DispatcherCa::Sign {
            req,
            pki: pki.into(),
            scheme: u16::from(scheme),
            data: data.to_vec(),
        };
        let fail = |e: String| Error::General(format!("ca: {e}"));
        chan.send(&m, Vec::new()).map_err(|e| fail(e.to_string()))?;
        chan.flush_blocking(SIGN_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        let got = chan
            .recv_until::<DispatcherCa>(Instant::now() + SIGN_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        match got.msg {
            DispatcherCa::Signature { req: r, signature } if r == req => Ok(signature),
            DispatcherCa::SignFailed { req: r, text } if r == req => Err(fail(text)),
            other => Err(fail(format!(
                "unexpected {}",
                crate::ipc::Message::name(&other)
            ))),
        }
    }
}

/// A private key that lives in ca.
#[derive(Debug)]
struct RemoteKey {
    pki: String,
    algorithm: SignatureAlgorithm,
    schemes: Vec<SignatureScheme>,
    ca: Arc<CaClient>,
}

#[derive(Debug)]
struct RemoteSigner {
    pki: String,
    scheme: SignatureScheme,
    ca: Arc<CaClient>,
}

impl SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // Our preference order (ca's), first one the client offers.
        let scheme = self.schemes.iter().find(|s| offered.contains(s))?;
        Some(Box::new(RemoteSigner {
            pki: self.pki.clone(),
            scheme: *scheme,
            ca: self.ca.clone(),
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.ca.sign(&self.pki, self.scheme, message)
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Certificates by pki name, chosen by SNI.
#[derive(Debug)]
struct BySni {
    keys: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some((_, k)) = self.keys.iter().find(|(pki, _)| *pki == name) {
                return Some(k.clone());
            }
        }
        // No SNI, or no pki of that name: the listener's first pki.
        self.keys.first().map(|(_, k)| k.clone())
    }
}

/// A listener's rustls config: its pkis (certificates from the view, keys
/// in ca), SNI among them, no client certificates.
pub fn server_config(
    pkis: &[String],
    certs: &[(String, Vec<u8>)],
    infos: &[KeyInfo],
    ca: &Arc<CaClient>,
    client_ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, String> {
    let mut keys = Vec::new();
    for pki in pkis {
        keys.push((pki.clone(), certified_key(pki, certs, infos, ca)?));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => builder.with_client_cert_verifier(client_verifier(pem, provider)?),
    };
    Ok(Arc::new(
        builder.with_cert_resolver(Arc::new(BySni { keys })),
    ))
}

/// The certificate chain of `pki` (from the view) with its key in ca.
pub fn certified_key(
    pki: &str,
    certs: &[(String, Vec<u8>)],
    infos: &[KeyInfo],
    ca: &Arc<CaClient>,
) -> Result<Arc<CertifiedKey>, String> {
    let pem = certs
        .iter()
        .find(|(n, _)| n == pki)
        .map(|(_, p)| p)
        .ok_or(format!("pki {pki}: no certificate"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("pki {pki}: certificate: {e}"))?;
    if chain.is_empty() {
        return Err(format!("pki {pki}: no certificate in file"));
    }
    let info = infos
        .iter()
        .find(|i| i.pki == pki)
        .ok_or(format!("pki {pki}: ca holds no key"))?;
    let key = RemoteKey {
        pki: pki.to_string(),
        algorithm: SignatureAlgorithm::from(info.algorithm),
        schemes: info
            .schemes
            .iter()
            .map(|s| SignatureScheme::from(*s))
            .collect(),
        ca: ca.clone(),
    };
    Ok(Arc::new(CertifiedKey::new(chain, Arc::new(key))))
}

/// `verify`: a client must present a certificate that chains to one of
/// the CA certificates in `pem` (webpki's checks: validity dates, key
/// usage for client authentication, signatures) or the handshake fails.
fn client_verifier(
    pem: &[u8],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("client CA: {e}"))?;
        roots.add(cert).map_err(|e| format!("client CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("client CA: no certificate in file".into());
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("client CA: {e}"))
}

/// Read certificate PEM blobs as the view carries them.
pub fn cert_pems(certs: &[crate::config::view::PkiCert]) -> Vec<(String, Vec<u8>)> {
    certs
        .iter()
        .map(|c| (c.name.clone(), c.cert_pem.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConnection};
    use std::io::{Read, Write};

    /// Make a self-signed certificate and key with openssl(1).
    fn make_pki(dir: &std::path::Path, name: &str, keyargs: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let key = dir.join(format!("{name}.key"));
        let crt = dir.join(format!("{name}.crt"));
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mx.example",
            "-keyout",
        ];
        args.push(key.to_str().unwrap());
        args.extend(["-out", crt.to_str().unwrap()]);
        args.extend(keyargs);
        let st = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        (std::fs::read(crt).unwrap(), std::fs::read(key).unwrap())
    }

    /// The test client trusts anything: what is under test is the server's
    /// signing path, and rustls checks the signature itself below.
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn handshake(server: &mut ServerConnection, client: &mut ClientConnection) {
        for _ in 0..20 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            client.read_tls(&mut &back[..]).unwrap();
            client.process_new_packets().unwrap();
            if !server.is_handshaking() && !client.is_handshaking() {
                return;
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn handshakes_are_signed_by_ca_over_ipc() {
        let dir = std::env::temp_dir().join(format!("tls-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rsa = make_pki(&dir, "rsa", &["-newkey", "rsa:2048"]);
        let ec = make_pki(
            &dir,
            "ec",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let keys = crate::ca::load_keys(&[
            ("rsa.example".into(), rsa.1.clone()),
            ("ec.example".into(), ec.1.clone()),
        ])
        .unwrap();
        let infos = crate::ca::key_infos(&keys);
        let (ours, theirs) = crate::sys::fdpass::seqpacket_pair().unwrap();
        // The ca side: answer Sign requests until the channel closes.
        let ca_thread = std::thread::spawn(move || {
            let mut chan = Channel::new(theirs, Role::Dispatcher).unwrap();
            let mut signed = 0;
            while let Ok(r) =
                chan.recv_until::<DispatcherCa>(Instant::now() + Duration::from_secs(10))
            {
                let reply = crate::ca::answer(&keys, r.msg).unwrap();
                chan.send(&reply, Vec::new()).unwrap();
                chan.flush_blocking(Duration::from_secs(5)).unwrap();
                signed += 1;
            }
            signed
        });
        let ca = Arc::new(CaClient::new(ours).unwrap());
        let certs = vec![
            ("rsa.example".to_string(), rsa.0),
            ("ec.example".to_string(), ec.0),
        ];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        for (sni, tls12) in [
            ("rsa.example", false),
            ("ec.example", false),
            ("rsa.example", true),
            ("ec.example", true),
        ] {
            let cfg = server_config(
                &["rsa.example".into(), "ec.example".into()],
                &certs,
                &infos,
                &ca,
                None,
            )
            .unwrap();
            let mut server = ServerConnection::new(cfg).unwrap();
            let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
                &[&rustls::version::TLS12]
            } else {
                &[&rustls::version::TLS13]
            };
            let ccfg = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider.clone())))
                .with_no_client_auth();
            let mut client =
                ClientConnection::new(Arc::new(ccfg), ServerName::try_from(sni).unwrap()).unwrap();
            handshake(&mut server, &mut client);
            // Application data flows both ways.
            client.writer().write_all(b"EHLO x\r\n").unwrap();
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut got = [0u8; 8];
            server.reader().read_exact(&mut got).unwrap();
            assert_eq!(&got, b"EHLO x\r\n");
            let sent = client.peer_certificates().unwrap()[0].clone();
            let want = &certs.iter().find(|(n, _)| n == sni).unwrap().1;
            let want = CertificateDer::pem_slice_iter(want)
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(sent, want, "SNI {sni} picked the wrong certificate");
        }
        drop(ca);
        assert_eq!(
            ca_thread.join().unwrap(),
            4,
            "one signature per handshake, all by ca"
        );
    }
}
