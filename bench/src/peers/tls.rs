//! `wss://` for rxplus and for raw tungstenite, with one certificate for both.
//!
//! * The certificate: a CA and a leaf for `localhost` it signed (rcgen's default key type,
//!   ECDSA P-256), made once per orchestrator run ([`pki_files`]) and written as PEM files the
//!   children read.
//! * rxplus as a user sets it up: `ServerTls::from_pem_files` on the server,
//!   `ClientTls::only_roots_pem` on a `wss://localhost:PORT` client.
//! * Raw: blocking tungstenite over `rustls::StreamOwned`, one thread per connection, with
//!   rustls configs built the way rxplus builds its own (the `ring` provider, rustls' safe
//!   default protocol versions and cipher suites), so both negotiate the same protocol version
//!   and suite; [`Negotiated`] records which.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls::{StreamOwned, SupportedCipherSuite};
use rxplus::tls::{ClientTls, ServerTls};
use rxplus::ws::{Datatype, Datatypes, RxWSClient, RxWSServer, WSConfig, WSConnectionConfig};
use serde::{Deserialize, Serialize};
use tungstenite::WebSocket;

use super::raw::{ConnThreads, RawServer, SharedSocket};

/// The name on the certificate, the host in the URLs and the SNI.
pub const HOST: &str = "localhost";

/// Where the run's certificate is: passed to the children in the workload's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
}

impl PkiFiles {
    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// The run's directory of PEM files, made on first use in the orchestrator.
fn pki_dir() -> PathBuf {
    std::env::temp_dir().join(format!("rxplus-bench-tls-{}", std::process::id()))
}

static PKI: OnceLock<Result<PkiFiles, String>> = OnceLock::new();

/// The run's certificate (made on the first call, in the orchestrator), or why it could not
/// be made.
pub fn pki_files() -> Result<PkiFiles, String> {
    PKI.get_or_init(|| make_pki(&pki_dir()).map_err(|e| format!("{e:#}")))
        .clone()
}

/// Removes the run's PEM files, if this process made them.
pub fn remove_pki_files() {
    if let Some(Ok(_)) = PKI.get() {
        let _ = std::fs::remove_dir_all(pki_dir());
    }
}

fn make_pki(dir: &Path) -> Result<PkiFiles> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rxplus-bench CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf = CertificateParams::new(vec![HOST.to_string()])?;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = PkiFiles {
        ca: dir.join("ca.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("key.pem"),
    };
    for (path, pem) in [
        (&files.ca, ca_cert.pem()),
        (&files.chain, cert.pem()),
        (&files.key, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(files)
}

/// The protocol version and cipher suite a connection negotiated, as their IANA codes (so
/// they fit in a [`crate::workloads::Sample`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negotiated {
    pub version: u16,
    pub suite: u16,
}

impl Negotiated {
    fn of(conn: &rustls::CommonState) -> Result<Negotiated> {
        let version = conn.protocol_version().context("no protocol version")?;
        let suite = conn
            .negotiated_cipher_suite()
            .as_ref()
            .map(SupportedCipherSuite::suite)
            .context("no cipher suite")?;
        Ok(Negotiated {
            version: u16::from(version),
            suite: u16::from(suite),
        })
    }

    pub fn describe(version: f64, suite: f64) -> String {
        format!(
            "{:?} {:?}",
            rustls::ProtocolVersion::from(version as u16),
            rustls::CipherSuite::from(suite as u16)
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---- raw tungstenite over rustls ----

pub type RawTlsWs = WebSocket<StreamOwned<ClientConnection, TcpStream>>;
pub type RawTlsServerWs = WebSocket<StreamOwned<ServerConnection, SharedSocket>>;

/// The raw server's rustls config: as `ServerTls::from_pem` builds rxplus'.
fn raw_server_config(pki: &PkiFiles) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(&PkiFiles::read(&pki.chain)?)
        .collect::<Result<Vec<_>, _>>()
        .context("chain PEM")?;
    let key = PrivateKeyDer::from_pem_slice(&PkiFiles::read(&pki.key)?).context("key PEM")?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The raw client's rustls config: as `ClientTls::only_roots_pem` builds rxplus'.
fn raw_client_config(pki: &PkiFiles) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&PkiFiles::read(&pki.ca)?) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A thread-per-connection server ([`RawServer`]): on the connection's thread, the TLS
/// handshake (driven by tungstenite's first read through `StreamOwned`), the WebSocket
/// handshake, then `handler`.
pub fn raw_server<F>(pki: &PkiFiles, handler: F) -> Result<RawServer>
where
    F: Fn(RawTlsServerWs, &ConnThreads) + Send + Sync + 'static,
{
    let config = raw_server_config(pki)?;
    RawServer::start_with(
        move |sock| {
            let conn = ServerConnection::new(config.clone()).ok()?;
            tungstenite::accept(StreamOwned::new(conn, sock)).ok()
        },
        handler,
    )
}

/// A blocking client of `path` on `addr` (certificate checked for [`HOST`]), TCP_NODELAY,
/// with what it negotiated.
pub fn raw_connect(pki: &PkiFiles, addr: SocketAddr, path: &str) -> Result<(RawTlsWs, Negotiated)> {
    let sock = TcpStream::connect(addr).with_context(|| format!("raw tls: connect to {addr}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ClientConnection::new(raw_client_config(pki)?, ServerName::try_from(HOST)?)?;
    let url = wss_url(addr, path);
    let (ws, _) = tungstenite::client::client(url, StreamOwned::new(conn, sock))
        .map_err(|e| anyhow!("raw tls: handshake with {addr}: {e}"))?;
    ws.get_ref().sock.set_read_timeout(None)?;
    let negotiated = Negotiated::of(&ws.get_ref().conn)?;
    Ok((ws, negotiated))
}

// ---- rxplus ----

/// `wss://localhost:PORT/path` for a server on `addr`.
pub fn wss_url(addr: SocketAddr, path: &str) -> String {
    format!("wss://{HOST}:{}{path}", addr.port())
}

/// An rxplus server on a free loopback port serving `wss://` with the run's certificate.
pub fn rx_server<T: Clone + Send + 'static>(
    pki: &PkiFiles,
    datatype: impl Into<Datatypes<T>>,
) -> Result<RxWSServer<T>> {
    let tls = ServerTls::from_pem_files(&pki.chain, &pki.key)?;
    super::rx::server_with(datatype, WSConfig::default().tls_server(tls))
}

/// An rxplus client of `wss://localhost:PORT/path` trusting only the run's CA, connected (or
/// an error after 10 s), with what a connection made with the same client config to the same
/// server negotiates (a TLS-only probe before the client: rxplus does not expose its session).
pub fn rx_client<T: Clone + Send + 'static>(
    pki: &PkiFiles,
    addr: SocketAddr,
    path: &str,
    datatype: impl Datatype<T>,
) -> Result<(RxWSClient<T>, Negotiated)> {
    let tls = ClientTls::only_roots_pem(&PkiFiles::read(&pki.ca)?)?;
    let negotiated = probe(tls.rustls_config().clone(), addr)?;
    let client = RxWSClient::with_config(
        WSConnectionConfig::from_url(&wss_url(addr, path))?,
        datatype,
        WSConfig::default().tls_client(tls),
    )?;
    if !client.wait_connected(Duration::from_secs(10)) {
        bail!("rxplus: client did not connect to {addr} within 10 s");
    }
    Ok((client, negotiated))
}

/// A TLS handshake (no WebSocket) with `config` to `addr`, then close.
fn probe(config: Arc<ClientConfig>, addr: SocketAddr) -> Result<Negotiated> {
    let mut sock = TcpStream::connect(addr).with_context(|| format!("probe: connect to {addr}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = ClientConnection::new(config, ServerName::try_from(HOST)?)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .context("probe: TLS handshake")?;
    }
    let negotiated = Negotiated::of(&conn)?;
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    Ok(negotiated)
}
