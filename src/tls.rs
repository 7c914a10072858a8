//! TLS for the io_uring listeners, with rustls as a sans-IO state machine.
//!
//! Nothing here touches a socket. The worker hands every received chunk (the provided buffer
//! the engine passed to `on_data`) to [`TlsConn::read`], which feeds it to
//! `ServerConnection::read_tls`, runs `process_new_packets`, and collects the decrypted
//! plaintext for the usual MQTT frame/decode path and the TLS bytes owed to the peer
//! (handshake messages, alerts) for `Io::send`. Outgoing packets go through
//! [`TlsConn::encrypt`]. No thread and no extra buffer per connection: a plain TCP connection
//! pays one `Option<Box<_>>` (a pointer) in its `Client`.
//!
//! What a TLS connection costs while idle is what rustls keeps in its `ServerConnection`
//! (see the TLS measurements in docs/performance.md); its record buffers are empty between
//! reads since every read is drained completely.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytestring::ByteString;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::config::{CertUsername, Config};

/// Everything a TLS listener needs, built once at start and shared by every worker.
pub struct TlsSetup {
    pub config: Arc<ServerConfig>,
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, String> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key found", path.display()))
}

impl TlsSetup {
    /// Build the server configuration from `tls_cert`, `tls_key` and `tls_client_ca`.
    /// TLS 1.2 and 1.3, ring provider.
    pub fn from_config(cfg: &Config) -> Result<TlsSetup, String> {
        let cert = cfg.tls_cert.as_ref().ok_or("tls_listen needs tls_cert")?;
        let key = cfg.tls_key.as_ref().ok_or("tls_listen needs tls_key")?;
        let certs = load_certs(cert)?;
        let key = load_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &cfg.tls_client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in load_certs(ca)? {
                    roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("client certificate verifier: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
        Ok(TlsSetup {
            config: Arc::new(config),
        })
    }
}

/// Why a TLS connection must end.
#[derive(Debug)]
pub enum TlsError {
    /// The peer sent bytes rustls rejected, or an alert (handshake failures land here).
    Tls(rustls::Error),
    /// rustls refused more input (its buffers are full) or a read failed.
    Io(io::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Tls(e) => write!(f, "tls: {e}"),
            TlsError::Io(e) => write!(f, "tls: {e}"),
        }
    }
}

/// Per-connection TLS state (boxed in the worker's `Client`).
pub struct TlsConn {
    pub conn: ServerConnection,
    /// The MQTT username taken from the client certificate (`tls_cert_username`), once the
    /// handshake is done.
    pub cert_username: Option<ByteString>,
}

impl TlsConn {
    pub fn new(setup: &TlsSetup) -> Result<TlsConn, rustls::Error> {
        let mut conn = ServerConnection::new(setup.config.clone())?;
        // Every write is drained into the engine's send queue at once (bounded by
        // `send_queue_limit` there), so rustls need not bound its own buffer.
        conn.set_buffer_limit(None);
        Ok(TlsConn {
            conn,
            cert_username: None,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feed received TLS bytes. Decrypted application data is appended to `plain`; TLS bytes
    /// owed to the peer (handshake, alerts, key updates) to `out`, also on error (so a fatal
    /// alert reaches the peer before the close).
    pub fn read(
        &mut self,
        mut data: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        while !data.is_empty() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.flush(out);
                    return Err(TlsError::Io(e));
                }
            }
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    self.flush(out);
                    return Err(TlsError::Tls(e));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                if let Err(e) = self.conn.reader().read_exact(&mut plain[start..]) {
                    plain.truncate(start);
                    self.flush(out);
                    return Err(TlsError::Io(e));
                }
            }
        }
        self.flush(out);
        Ok(())
    }

    /// Encrypt `data` (one or more encoded MQTT packets) and append the records to `out`.
    pub fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.flush(out);
        Ok(())
    }

    /// Queue a close_notify alert into `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.flush(out);
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// After the handshake: take the MQTT username from the client certificate, per `mode`.
    /// False when `mode` asks for one and the certificate has none (the connection must not
    /// go on with a username of the client's choosing).
    pub fn take_cert_identity(&mut self, mode: CertUsername) -> bool {
        if mode == CertUsername::None {
            return true;
        }
        let Some(cert) = self.conn.peer_certificates().and_then(|c| c.first()) else {
            return false;
        };
        self.cert_username = cert_identity(cert, mode).map(ByteString::from);
        self.cert_username.is_some()
    }
}

/// The certificate's subject CN (`Cn`) or first DNS subjectAltName (`San`).
pub fn cert_identity(cert: &[u8], mode: CertUsername) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert).ok()?;
    match mode {
        CertUsername::None => None,
        CertUsername::Cn => x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        CertUsername::San => {
            let san = x.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_from_cn_or_first_dns_san() {
        let c = cert("alice", &["10.0.0.1", "alice.example", "other.example"]);
        assert_eq!(
            cert_identity(&c, CertUsername::Cn).as_deref(),
            Some("alice")
        );
        assert_eq!(
            cert_identity(&c, CertUsername::San).as_deref(),
            Some("alice.example")
        );
        assert_eq!(cert_identity(&c, CertUsername::None), None);
        let c = cert("bob", &[]);
        assert_eq!(cert_identity(&c, CertUsername::San), None);
        assert_eq!(cert_identity(b"not a certificate", CertUsername::Cn), None);
    }
}
