//! TLS for `wss://`: what a server presents ([`ServerTls`]) and what a client trusts
//! ([`ClientTls`]). Both wrap a rustls config (the `ring` provider; no OpenSSL). Set them on
//! [`WSConfig`](crate::ws::WSConfig): [`tls_server`](crate::ws::WSConfig::tls_server) makes a
//! server or gateway node serve `wss://` only; [`tls_client`](crate::ws::WSConfig::tls_client)
//! is what a client, group or gateway node dialing a `wss://` URL verifies the server against
//! (Mozilla's roots from `webpki-roots` when unset). Behind the `tls` feature (on by default).
//!
//! ```
//! use rxplus::tls::{ClientTls, ServerTls};
//! use rxplus::ws::{RxWSClient, RxWSServer, Text, WSConfig, WSConnectionConfig};
//! use std::time::Duration;
//!
//! // A certificate for "localhost", signed by its own CA (a test would make one like this).
//! let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! let server_tls = ServerTls::from_pem(ca.cert.pem().as_bytes(), ca.key_pair.serialize_pem().as_bytes())?;
//! let server = RxWSServer::<String>::bind_with_config(
//!     "127.0.0.1:0",
//!     Text,
//!     WSConfig::default().tls_server(server_tls),
//! )?;
//! let echo = server.handle();
//! server.subscribe(move |m| echo.on_next(m.reply(m.data.clone())));
//!
//! let url = format!("wss://localhost:{}/echo", server.local_addr().port());
//! let trust = ClientTls::webpki_roots()?.add_root_pem(ca.cert.pem().as_bytes())?;
//! let client = RxWSClient::<String>::with_config(
//!     WSConnectionConfig::from_url(&url)?,
//!     Text,
//!     WSConfig::default().tls_client(trust),
//! )?;
//! let inbox = client.stream();
//! assert!(client.wait_connected(Duration::from_secs(5)));
//! client.send("over TLS".to_string())?;
//! assert!(matches!(inbox.recv_timeout(Duration::from_secs(5)), Ok(rxplus::Notification::Next(s)) if s == "over TLS"));
//! client.on_completed();
//! server.dispose();
//! # Ok::<(), rxplus::Error>(())
//! ```

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

pub use rustls;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(field: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::config(field, format!("{}: {e}", path.display())))
}

/// The certificate chain and key a server (or a gateway node's accepting side) presents.
///
/// ```no_run
/// use rxplus::tls::ServerTls;
/// let tls = ServerTls::from_pem_files("chain.pem", "key.pem")?;
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) from files.
    ///
    /// # Errors
    /// [`Error::Config`] naming `tls_server` when a file cannot be read or holds no usable
    /// certificate or key, or the key does not match.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let chain = read_file("tls_server.chain", chain.as_ref())?;
        let key = read_file("tls_server.key", key.as_ref())?;
        Self::from_pem(&chain, &key)
    }

    /// Like [`from_pem_files`](Self::from_pem_files), from PEM text in memory.
    ///
    /// # Errors
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self> {
        let certs = certs_from_pem("tls_server.chain", chain)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| Error::config("tls_server.key", format!("no private key: {e}")))?;
        Self::from_der(certs, key)
    }

    /// From a DER certificate chain (leaf first) and key.
    ///
    /// # Errors
    /// [`Error::Config`] when the chain is empty or the key is unusable or does not match.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self> {
        if chain.is_empty() {
            return Err(Error::config("tls_server.chain", "no certificate"));
        }
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| Error::config("tls_server", e.to_string()))?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// Uses a complete rustls server config as it is (client authentication, ALPN, session
    /// storage, another crypto provider).
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        ServerTls { config }
    }

    /// The rustls config in use.
    pub fn rustls_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

/// What a client trusts when it dials `wss://`: Mozilla's root certificates (`webpki-roots`,
/// the same on every machine, no system store read) plus any CA added here, or a complete rustls
/// client config. The server name checked is the URL's host (sent as SNI).
///
/// A certificate the client refuses (unknown issuer, expired, wrong name) ends the client with
/// [`Error::Tls`] instead of retrying, unless
/// [`RetryPolicy::retry_certificate_errors`](crate::ws::RetryPolicy::retry_certificate_errors)
/// is set.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The roots the config was built from; `None` for a config given whole.
    roots: Option<Arc<RootCertStore>>,
}

impl ClientTls {
    /// Trusts Mozilla's root certificates (`webpki-roots`): what a `wss://` client uses when
    /// [`WSConfig::tls_client`](crate::ws::WSConfig::tls_client) is unset. Built once per
    /// process.
    ///
    /// # Errors
    /// [`Error::Config`] if rustls refuses the config (not expected with its `ring` provider).
    pub fn webpki_roots() -> Result<Self> {
        static DEFAULT: OnceLock<Result<ClientTls>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                ClientTls::with_roots(roots)
            })
            .clone()
    }

    /// Trusts only the CAs in `pem` (no public roots): for a private deployment.
    ///
    /// # Errors
    /// [`Error::Config`] when `pem` holds no valid certificate.
    pub fn only_roots_pem(pem: &[u8]) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        add_roots(&mut roots, pem)?;
        ClientTls::with_roots(roots)
    }

    /// Also trusts the CA certificates in `pem`.
    ///
    /// # Errors
    /// [`Error::Config`] when `pem` holds no valid certificate, or this value was made by
    /// [`from_rustls`](Self::from_rustls) (add roots to that config instead).
    pub fn add_root_pem(self, pem: &[u8]) -> Result<Self> {
        let Some(roots) = self.roots else {
            return Err(Error::config(
                "tls_client",
                "a config from from_rustls takes its roots from that config",
            ));
        };
        let mut roots = Arc::unwrap_or_clone(roots);
        add_roots(&mut roots, pem)?;
        ClientTls::with_roots(roots)
    }

    /// [`add_root_pem`](Self::add_root_pem) from a file.
    ///
    /// # Errors
    /// As [`add_root_pem`](Self::add_root_pem), or when the file cannot be read.
    pub fn add_root_pem_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_file("tls_client.root", path.as_ref())?;
        self.add_root_pem(&pem)
    }

    /// Uses a complete rustls client config as it is (client certificates, a custom verifier,
    /// another crypto provider).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        ClientTls {
            config,
            roots: None,
        }
    }

    /// The rustls config in use.
    pub fn rustls_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    fn with_roots(roots: RootCertStore) -> Result<Self> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("tls_client", e.to_string()))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            roots: Some(Arc::new(roots)),
        })
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

fn certs_from_pem(field: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::config(field, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(field, "no certificate in PEM"));
    }
    Ok(certs)
}

fn add_roots(roots: &mut RootCertStore, pem: &[u8]) -> Result<()> {
    for cert in certs_from_pem("tls_client.root", pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::config("tls_client.root", e.to_string()))?;
    }
    Ok(())
}

/// Whether a TLS failure (an `io::Error` wrapping a rustls error) is about a certificate: the
/// kind of failure retrying does not fix.
pub(crate) fn is_certificate_error(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e.get_ref().and_then(|s| s.downcast_ref::<rustls::Error>()),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_)
                | rustls::Error::AlertReceived(
                    A::BadCertificate
                        | A::UnsupportedCertificate
                        | A::CertificateRevoked
                        | A::CertificateExpired
                        | A::CertificateUnknown
                        | A::UnknownCA
                        | A::CertificateRequired
                )
        )
    )
}
