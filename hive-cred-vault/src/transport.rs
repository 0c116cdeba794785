//! The HTTP client under vaultrs: TLS settings, redirect policy, TLS error reasons.
//!
//! vaultrs would build its own reqwest client (default redirect policy, CA files it
//! accepts even when they hold no certificate, `VAULT_*` variables read behind our
//! back). This module builds the client instead and vaultrs only gets to use it:
//!
//! - **TLS** is rustls with the Mozilla roots, or only the CAs of the configured CA
//!   file / directory; an optional client certificate (mutual TLS); an optional server
//!   name the certificate is verified against. Verification cannot be turned off.
//! - **Redirects** are followed only to the configured origins (scheme, host, port: the
//!   addresses of the cluster), so
//!   the `X-Vault-Token` header, which reqwest does not strip on redirects, never
//!   reaches another server. A redirect elsewhere comes back as the 3xx response.

use std::path::Path;
use std::sync::Arc;

use hive_cred_core::{Error, Result};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use url::Url;

use crate::config::VaultConfig;

/// Most redirects followed within the configured origin.
const MAX_REDIRECTS: usize = 5;

/// The reqwest client for `config`.
pub(crate) fn http_client(config: &VaultConfig) -> Result<reqwest::Client> {
    // The origins of the configured cluster: a standby may redirect to the active node.
    let origins: Vec<_> = config.addresses.iter().map(Url::origin).collect();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if origins.contains(&attempt.url().origin()) {
            attempt.follow()
        } else {
            // Hand the 3xx back: the token header must not go to another origin.
            attempt.stop()
        }
    });
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(config)?)
        .timeout(config.timeout)
        .redirect(redirects);
    if config.addresses.iter().any(|a| a.scheme() == "http") {
        // A proxy (HTTP_PROXY, ALL_PROXY) would read the token of a plain-HTTP request:
        // plain HTTP goes straight to the server. HTTPS tunnels through one unread.
        builder = builder.no_proxy();
    }
    builder.build().map_err(|e| {
        Error::config(format!(
            "could not build the HTTP client for Vault: {}",
            root_cause(&e)
        ))
    })
}

fn tls_config(config: &VaultConfig) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if let Some(file) = &config.ca_cert {
        add_ca_file(&mut roots, file, "HIVE_VAULT_CACERT / VAULT_CACERT")?;
    }
    if let Some(dir) = &config.ca_path {
        add_ca_dir(&mut roots, dir)?;
    }
    if config.ca_cert.is_none() && config.ca_path.is_none() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::config(format!("cannot use the Vault CA certificates: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &config.tls_server_name {
        Some(name) => Arc::new(FixedName {
            name: ServerName::try_from(name.clone()).map_err(|_| {
                Error::config(format!(
                    "invalid TLS server name {name:?} (HIVE_VAULT_TLS_SERVER_NAME / VAULT_TLS_SERVER_NAME): expected a DNS name or an IP address"
                ))
            })?,
            inner: verifier,
        }),
        None => verifier,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup failed: {e}")))?
        .dangerous()
        // Not a way around verification: the verifier is webpki's, at most told which
        // name to check (FixedName).
        .with_custom_certificate_verifier(verifier);
    let mut tls = match &config.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert, "HIVE_VAULT_CLIENT_CERT / VAULT_CLIENT_CERT")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::config(format!(
                    "cannot read a PEM private key from the Vault client key file {} ({}): check HIVE_VAULT_CLIENT_KEY / VAULT_CLIENT_KEY",
                    key.display(),
                    pem_reason(&e)
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::config(format!(
                    "the Vault client certificate {} and its key do not fit together or are not supported: {e}",
                    cert.display()
                ))
            })?
        }
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The reason a PEM file could not be read, without its content.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as PemError;
    match e {
        PemError::Io(io) => io.to_string(),
        PemError::NoItemsFound => "no PEM item of that kind in it".to_owned(),
        _ => "not valid PEM".to_owned(),
    }
}

/// The certificates in a PEM file; a `Config` error naming the file when there are none.
fn read_certs(file: &Path, variables: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::config(format!(
                "cannot read certificates from {} ({}): check {variables}",
                file.display(),
                pem_reason(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block): check {variables}",
            file.display()
        )));
    }
    Ok(certs)
}

fn add_ca_file(roots: &mut RootCertStore, file: &Path, variables: &str) -> Result<()> {
    for cert in read_certs(file, variables)? {
        roots.add(cert).map_err(|e| {
            Error::config(format!(
                "the CA certificate in {} cannot be used: {e}; check {variables}",
                file.display()
            ))
        })?;
    }
    Ok(())
}

fn add_ca_dir(roots: &mut RootCertStore, dir: &Path) -> Result<()> {
    const VARS: &str = "HIVE_VAULT_CAPATH / VAULT_CAPATH";
    let unreadable = |e: std::io::Error| {
        Error::config(format!(
            "cannot read the CA directory {} ({e}): check {VARS}",
            dir.display()
        ))
    };
    let entries = std::fs::read_dir(dir).map_err(unreadable)?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::config(format!(
            "the CA directory {} holds no certificate files: check {VARS}",
            dir.display()
        )));
    }
    files.sort();
    for file in files {
        add_ca_file(roots, &file, VARS)?;
    }
    Ok(())
}

/// webpki verification against a configured name instead of the address's host.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls error somewhere in `err`'s chain (reqwest -> hyper -> io::Error -> rustls).
pub(crate) fn find_tls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error::source() skips the error it wraps (tokio-rustls wraps the rustls
        // error in an io::Error, hyper-util that in another): step into it explicitly.
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What to tell the operator about a TLS failure: the reason and what to change.
pub(crate) fn tls_reason(err: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "the server's certificate was not issued by a trusted CA (unknown issuer): set HIVE_VAULT_CACERT / VAULT_CACERT (or VAULT_CAPATH) to the CA that issued it".to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => "the server's certificate is not valid for the name connected to (name mismatch): use a name from the certificate in HIVE_VAULT_ADDR, or set HIVE_VAULT_TLS_SERVER_NAME / VAULT_TLS_SERVER_NAME".to_owned(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "the server's certificate has expired: renew it on the server (or check this host's clock)".to_owned(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "the server's certificate is not valid yet: check this host's clock".to_owned(),
            CertificateError::Revoked => "the server's certificate is revoked".to_owned(),
            other => format!("the server's certificate was rejected ({other:?})"),
        },
        rustls::Error::AlertReceived(
            Alert::CertificateRequired | Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown,
        ) => "the server rejected this client's certificate or wants one (mutual TLS): check HIVE_VAULT_CLIENT_CERT / VAULT_CLIENT_CERT and HIVE_VAULT_CLIENT_KEY / VAULT_CLIENT_KEY".to_owned(),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "the TLS handshake failed (is the server speaking TLS at this address?)".to_owned(),
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)").
/// Transport errors describe sockets and TLS, never request or response bodies.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_reasons_name_the_cause_and_the_fix() {
        let r = tls_reason(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(
            r.contains("unknown issuer") && r.contains("VAULT_CACERT"),
            "{r}"
        );
        let r = tls_reason(&rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(
            r.contains("name mismatch") && r.contains("VAULT_TLS_SERVER_NAME"),
            "{r}"
        );
        let r = tls_reason(&rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        ));
        assert!(r.contains("expired"), "{r}");
        let r = tls_reason(&rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(r.contains("VAULT_CLIENT_CERT"), "{r}");
    }

    #[test]
    fn ca_files_without_certificates_are_config_errors_naming_the_file() {
        use crate::config::VaultAuth;
        use hive_cred_core::ErrorKind;
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let key_only = dir.path().join("key-only.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        for file in [&empty, &key_only, &missing] {
            let config = VaultConfig::new("https://127.0.0.1:8200", VaultAuth::token("t"))
                .unwrap()
                .with_ca_cert(file);
            let err = http_client(&config).expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            assert!(err.message().contains(&file.display().to_string()), "{err}");
        }
        let sub = dir.path().join("cas");
        std::fs::create_dir(&sub).unwrap();
        let config = VaultConfig::new("https://127.0.0.1:8200", VaultAuth::token("t"))
            .unwrap()
            .with_ca_path(&sub);
        let err = http_client(&config).expect_err("an empty CA directory is refused");
        assert!(err.message().contains("no certificate files"), "{err}");
        std::fs::copy(&empty, sub.join("a.pem")).unwrap();
        let err = http_client(&config).expect_err("a CA directory file without certs");
        assert!(err.message().contains("a.pem"), "{err}");

        let err = http_client(
            &VaultConfig::new("https://127.0.0.1:8200", VaultAuth::token("t"))
                .unwrap()
                .with_tls_server_name("not a name"),
        )
        .expect_err("bad server name");
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn finds_the_rustls_error_inside_an_io_error() {
        // As reqwest/hyper-util deliver it: io::Error(Other, io::Error(InvalidData, rustls)).
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        ));
        let found = find_tls_error(&io).expect("rustls error found");
        assert!(matches!(
            found,
            rustls::Error::InvalidCertificate(CertificateError::Expired)
        ));
        assert!(find_tls_error(&std::io::Error::other("refused")).is_none());
    }
}
