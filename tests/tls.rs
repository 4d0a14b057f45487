//! `wss://` over loopback: every component over TLS, certificates made here (rcgen), refused
//! certificates, plain/TLS mismatches, and the connection core's bounds over TLS.
#![cfg(feature = "tls")]

mod support;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rxplus::tls::{ClientTls, ServerTls};
use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text, WSConfig, WSConnectionConfig};
use rxplus::Notification;
use support::*;

/// A CA and a leaf certificate for `localhost` it signed.
struct Pki {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki_with(leaf: impl FnOnce(&mut CertificateParams)) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "rxplus test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn pki() -> Pki {
    pki_with(|_| {})
}

impl Pki {
    fn server(&self) -> ServerTls {
        ServerTls::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
    fn client(&self) -> ClientTls {
        ClientTls::only_roots_pem(self.ca_pem.as_bytes()).unwrap()
    }
}

fn wss(port: u16, path: &str) -> WSConnectionConfig {
    WSConnectionConfig::from_url(&format!("wss://localhost:{port}{path}")).unwrap()
}

fn tls_echo<T: Clone + Send + 'static>(
    pki: &Pki,
    datatype: impl Into<rxplus::ws::Datatypes<T>>,
    cfg: WSConfig,
) -> RxWSServer<T> {
    let s = RxWSServer::<T>::bind_with_config(any_port(), datatype, cfg.tls_server(pki.server()))
        .unwrap();
    let h = s.handle();
    s.subscribe(move |m: TaggedData<T>| h.on_next(m.reply(m.data.clone())));
    s
}

fn next<T: std::fmt::Debug>(rx: &crossbeam_channel::Receiver<Notification<T>>) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(Notification::Next(v)) => v,
        other => panic!("expected an item, got {other:?}"),
    }
}

#[test]
fn roundtrip_both_ways_over_tls() {
    let pki = pki();
    let server = tls_echo::<String>(&pki, Text, quiet());
    let port = server.local_addr().port();
    let client =
        RxWSClient::<String>::with_config(wss(port, "/s"), Text, quiet().tls_client(pki.client()))
            .unwrap();
    let rx = client.stream();
    assert!(client.wait_connected(WAIT));
    client.send("héllo over TLS".into()).unwrap();
    assert_eq!(next(&rx), "héllo over TLS");
    // Server-initiated, to the path.
    server
        .send(TaggedData::new("/s", "pushed".to_string()))
        .unwrap();
    assert_eq!(next(&rx), "pushed");
    client.on_completed();
    server.dispose();
}
