//! TLS to the database: libpq's `sslmode` and `sslrootcert` URL parameters, with rustls.
//!
//! ```text
//!  sslmode      encrypted   server's certificate checked against the roots   host name checked
//!  disable      no          -                                                 -
//!  prefer       if offered  no                                                no
//!  require      yes         no (with sslrootcert: yes, as libpq does)         no
//!  verify-ca    yes         yes                                               no
//!  verify-full  yes         yes                                               yes
//! ```
//!
//! The default, as libpq's, is `prefer`. The roots are the PEM certificates of the file
//! `sslrootcert` names, or Mozilla's (`webpki-roots`) for `sslrootcert=system`; `verify-ca`
//! and `verify-full` need one of the two (libpq's fallback, `~/.postgresql/root.crt`, is not
//! read: a collector's roots are named in its configuration). tokio-postgres knows only
//! `disable`, `prefer` and `require`, so both parameters are taken out of the URL here and the
//! verification is set up in the rustls configuration. Errors name the parameter or the file,
//! never the URL (it may hold a password).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::storage::StoreError;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What a URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tls {
    pub(super) mode: Mode,
    /// `sslrootcert`: a PEM file, or `system` for Mozilla's roots.
    pub(super) root: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` off a `postgres://` URL's query: the URL tokio-postgres
/// is given, and what they ask. A URL in libpq's `key=value` form is returned as it is, with
/// the default mode (tokio-postgres reads its `sslmode`, and refuses `verify-*` there).
pub(super) fn split(url: &str) -> Result<(String, Tls), StoreError> {
    let mut tls = Tls {
        mode: Mode::Prefer,
        root: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), tls));
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.to_owned(), tls));
    }
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                tls.mode = match value {
                    "disable" => Mode::Disable,
                    "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(misconfigured(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => tls.root = Some(percent_decoded(value)?),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

/// A query value with its `%XX` escapes decoded (a path may hold spaces or `&`).
fn percent_decoded(value: &str) -> Result<String, StoreError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| misconfigured("sslrootcert has a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| misconfigured("sslrootcert is not UTF-8"))
}

impl Tls {
    /// tokio-postgres's mode: every mode that encrypts is its `require`; the checks are in the
    /// connector.
    pub(super) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector for this mode: reads the roots now, so that a missing or empty file stops
    /// the collector at start rather than at its first connection.
    pub(super) fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| misconfigured(format!("tls: {e}")))?;
        let roots = match (&self.root, self.mode) {
            (Some(root), _) => Some(Arc::new(roots(root)?)),
            (None, Mode::VerifyCa | Mode::VerifyFull) => {
                return Err(misconfigured(
                    "sslmode=verify-ca and verify-full need sslrootcert=<PEM file> (or sslrootcert=system)",
                ));
            }
            (None, _) => None,
        };
        let config = match (self.mode, roots) {
            (Mode::VerifyFull, Some(roots)) => {
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            // libpq: `require` with a root file given checks the chain as `verify-ca` does.
            (Mode::VerifyCa | Mode::Require, Some(roots)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    roots: Some(roots),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    roots: None,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The roots `sslrootcert` names.
fn roots(root: &str) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    let path = PathBuf::from(root);
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .and_then(|certificates| certificates.collect::<Result<_, _>>())
        .map_err(|e| misconfigured(format!("sslrootcert {}: {e}", path.display())))?;
    let (added, _) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(misconfigured(format!(
            "sslrootcert {}: no certificate in it",
            path.display()
        )));
    }
    Ok(store)
}

/// The checks of `verify-ca`, `require` and `prefer`, which rustls's own verifier (always
/// checking the host name) does not make. With roots (`verify-ca`, or `require` given
/// `sslrootcert`): the chain must lead to one of them; the host name is not checked. Without
/// (`prefer`, `require`): encrypted, the certificate not checked (libpq's meaning: protection
/// from eavesdropping, not from an impostor). Either way the handshake's signatures are
/// checked, so the session is bound to the certificate shown.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS failure told in words: rustls's certificate errors, which tokio-postgres wraps as
/// "error performing TLS handshake", with what to check.
pub(super) fn explain(error: &CertificateError) -> &'static str {
    match error {
        CertificateError::UnknownIssuer => "the server's certificate is not signed by sslrootcert",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host connected to"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        _ => "the server's certificate was refused",
    }
}

/// A TLS setting the collector cannot work with: the operator must change the store's URL or
/// the files it names.
fn misconfigured(detail: impl Into<String>) -> StoreError {
    StoreError::Misconfigured {
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (url, tls) = split(
            "postgres://me:pw@db:5432/t?application_name=x&sslmode=verify-full&sslrootcert=/etc/ca%20root.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://me:pw@db:5432/t?application_name=x");
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.root.as_deref(), Some("/etc/ca root.pem"));
        let (url, tls) = split("postgres://db/t?sslmode=disable").unwrap();
        assert_eq!((url.as_str(), tls.mode), ("postgres://db/t", Mode::Disable));
        assert_eq!(split("postgres://db/t").unwrap().1.mode, Mode::Prefer);
    }

    #[test]
    fn a_bad_sslmode_or_a_verifying_one_without_roots_is_refused_by_name() {
        let error = split("postgres://u:hunter2@db/t?sslmode=verify").unwrap_err();
        assert!(
            error.to_string().contains("sslmode=verify is not one of"),
            "{error}"
        );
        assert!(!error.to_string().contains("hunter2"));
        let (_, tls) = split("postgres://db/t?sslmode=verify-ca").unwrap();
        let Err(error) = tls.connector() else {
            panic!("verify-ca without roots accepted");
        };
        assert!(error.to_string().contains("need sslrootcert"), "{error}");
        let (_, tls) = split("postgres://db/t?sslmode=require&sslrootcert=/no/such.pem").unwrap();
        let Err(error) = tls.connector() else {
            panic!("a missing root file accepted");
        };
        assert!(
            error.to_string().contains("sslrootcert /no/such.pem"),
            "{error}"
        );
    }
}
