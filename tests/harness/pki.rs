//! Test certificates written to files for processes the tests start: a CA and a leaf for
//! `localhost` it signed (rcgen), made fresh per call, nothing checked in that expires.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// PEM files in `dir`: `ca.pem` (the CA to trust), `chain.pem` (the leaf for `localhost`) and
/// `key.pem` (the leaf's key), and the same PEM text in memory. `dir` is removed on drop.
pub struct PkiFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

/// Makes a CA and a `localhost` leaf and writes them under `target/test-pki/<name>-<pid>`
/// (emptied first).
pub fn write_pki(name: &str) -> PkiFiles {
    let dir = super::target_dir()
        .join("test-pki")
        .join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("rm {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));

    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rxplus test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    let key = KeyPair::generate().expect("leaf key");
    let cert = leaf
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("leaf certificate");

    let write = |file: &str, text: &str| -> PathBuf {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    };
    let (ca_pem, chain_pem, key_pem) = (ca_cert.pem(), cert.pem(), key.serialize_pem());
    PkiFiles {
        ca: write("ca.pem", &ca_pem),
        chain: write("chain.pem", &chain_pem),
        key: write("key.pem", &key_pem),
        dir: dir.clone(),
        ca_pem,
        chain_pem,
        key_pem,
    }
}

impl Drop for PkiFiles {
    /// The files are read by processes at their start only: removed when the test ends.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path as a command-line argument (tests' paths are UTF-8).
pub fn arg(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}
