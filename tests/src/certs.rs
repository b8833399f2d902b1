//! A throwaway PKI for TLS tests, made with the `openssl` command: a root
//! CA, an intermediate CA, server certificates signed by the intermediate
//! (so a client trusting only the root needs the chain the server sends),
//! and client certificates signed by the root.

use std::path::{Path, PathBuf};

use crate::cmd;

/// Kinds of private key, in the PEM encodings registries meet in practice.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    /// EC P-256, SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
    /// RSA 2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
    /// RSA 2048, PKCS#8 (`BEGIN PRIVATE KEY`).
    RsaPkcs8,
}

/// Files of the test PKI, all under one directory.
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
    /// Root CA certificate (what clients trust).
    pub root_cert: PathBuf,
    root_key: PathBuf,
    intermediate_cert: PathBuf,
    intermediate_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = std::process::Command::new(cmd::require_tool("openssl"));
    c.current_dir(dir).args(args);
    cmd::run(&mut c);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn new_key(dir: &Path, name: &str, kind: KeyKind) -> PathBuf {
    let path = dir.join(format!("{name}.key"));
    let p = path.to_str().expect("utf-8 path");
    match kind {
        KeyKind::EcSec1 => openssl(
            dir,
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                p,
            ],
        ),
        KeyKind::RsaPkcs1 => openssl(dir, &["genrsa", "-traditional", "-out", p, "2048"]),
        KeyKind::RsaPkcs8 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                p,
            ],
        ),
    }
    path
}

/// Signs a CSR for `key` with `ca` (cert, key), adding `extensions`.
fn sign(
    dir: &Path,
    name: &str,
    subject: &str,
    key: &Path,
    ca: (&Path, &Path),
    extensions: &str,
) -> PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    let cert = dir.join(format!("{name}.crt"));
    write(&ext, extensions);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            key.to_str().expect("utf-8"),
            "-subj",
            subject,
            "-out",
            csr.to_str().expect("utf-8"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().expect("utf-8"),
            "-CA",
            ca.0.to_str().expect("utf-8"),
            "-CAkey",
            ca.1.to_str().expect("utf-8"),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            ext.to_str().expect("utf-8"),
            "-out",
            cert.to_str().expect("utf-8"),
        ],
    );
    cert
}

impl Pki {
    /// Creates the root and intermediate CAs in `dir`.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let root_key = new_key(dir, "root", KeyKind::EcSec1);
        let root_cert = dir.join("root.crt");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                root_key.to_str().expect("utf-8"),
                "-subj",
                "/CN=berth test root",
                "-days",
                "2",
                "-sha256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                root_cert.to_str().expect("utf-8"),
            ],
        );
        let intermediate_key = new_key(dir, "intermediate", KeyKind::EcSec1);
        let intermediate_cert = sign(
            dir,
            "intermediate",
            "/CN=berth test intermediate",
            &intermediate_key,
            (&root_cert, &root_key),
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        Pki {
            dir: dir.to_owned(),
            root_cert,
            root_key,
            intermediate_cert,
            intermediate_key,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost signed by the
    /// intermediate. Returns (chain file = leaf then intermediate, key file).
    pub fn server(&self, name: &str, kind: KeyKind) -> (PathBuf, PathBuf) {
        let key = new_key(&self.dir, name, kind);
        let leaf = sign(
            &self.dir,
            name,
            &format!("/CN={name}"),
            &key,
            (&self.intermediate_cert, &self.intermediate_key),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        let chain = self.dir.join(format!("{name}.chain.crt"));
        let text = format!(
            "{}{}",
            std::fs::read_to_string(&leaf).expect("leaf"),
            std::fs::read_to_string(&self.intermediate_cert).expect("intermediate")
        );
        write(&chain, &text);
        (chain, key)
    }

    /// A client certificate signed by the root. Returns (cert, key).
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = new_key(&self.dir, name, KeyKind::EcSec1);
        let cert = sign(
            &self.dir,
            name,
            &format!("/CN={name}"),
            &key,
            (&self.root_cert, &self.root_key),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        (cert, key)
    }
}
