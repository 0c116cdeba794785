//! The one mapping from vaultrs errors to hive-cred's [`Error`].
//!
//! Response bodies are never copied into an error: only the HTTP status, Vault's short
//! `errors` strings (which describe the failure, never the request data) and transport
//! causes (connection refused, timeout) are kept.

use hive_cred_core::{Error, ErrorKind};
use rustify::errors::ClientError as HttpError;
use vaultrs::error::ClientError;

use crate::transport::{find_tls_error, root_cause, tls_reason};

/// What was being done when an error happened, for the message and the context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    /// `"load"`, `"save"`, `"delete"`, `"list"`, `"login"`, ...
    pub(crate) name: &'static str,
    /// The Vault API path (`secret/data/hive/credentials/github`).
    pub(crate) path: &'a str,
    /// The server address, for transport errors.
    pub(crate) address: &'a str,
}

/// Maps a vaultrs error. `404` becomes `NotFound`: callers that treat absence as a
/// value (`load` -> `Ok(None)`) check for it first.
pub(crate) fn map_error(err: ClientError, op: Op<'_>) -> Error {
    let mapped = match err {
        ClientError::APIError { code, errors } => from_status(code, &errors, op),
        ClientError::RestClientError { source } => from_http(source, op),
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => Error::new(
            ErrorKind::Corrupted,
            format!(
                "Vault answered {} of {} with an empty response",
                op.name, op.path
            ),
        ),
        ClientError::FileReadError { path, .. } | ClientError::FileNotFoundError { path } => {
            Error::config(format!(
                "cannot read the Vault CA certificate file {path}: check HIVE_VAULT_CACERT / VAULT_CACERT"
            ))
        }
        ClientError::ParseCertificateError { path, .. } => Error::config(format!(
            "the Vault CA certificate file {path} is not a PEM certificate"
        )),
        ClientError::RestClientBuildError { .. } => {
            Error::config("could not build the HTTP client for Vault (TLS configuration)")
        }
        other => Error::new(
            ErrorKind::Unexpected,
            format!("Vault {} of {} failed: {other}", op.name, op.path),
        ),
    };
    mapped
        .with_context("backend", "vault")
        .with_context("op", op.name)
        .with_context("path", op.path)
}

fn from_status(code: u16, errors: &[String], op: Op<'_>) -> Error {
    // Vault's error strings are short diagnostics ("permission denied", "Vault is
    // sealed", "check-and-set parameter did not match the current version"). Keep a
    // bounded excerpt for the message.
    let detail: String = errors.join("; ").chars().take(300).collect();
    let detail = detail.trim();
    let suffix = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    let lower = detail.to_ascii_lowercase();
    match code {
        400 if lower.contains("check-and-set") => Error::new(
            ErrorKind::Conflict,
            format!(
                "Vault rejected the {} of {}: another writer changed it since it was read (check-and-set); load it again and retry",
                op.name, op.path
            ),
        ),
        403 => Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "Vault denied {} of {}: the token's policy does not allow this operation on that path, or the token is invalid or expired (HTTP 403)",
                op.name, op.path
            ),
        ),
        404 => Error::new(
            ErrorKind::NotFound,
            format!("Vault has nothing at {} (HTTP 404)", op.path),
        ),
        300..=399 => Error::config(format!(
            "Vault at {} answered {} of {} with a redirect (HTTP {code}) to another address; it is not followed, so the token never leaves the configured server: set HIVE_VAULT_ADDR to the address the server redirects to (with several nodes, the active one)",
            op.address, op.name, op.path
        )),
        429 => Error::new(
            ErrorKind::RateLimited,
            format!(
                "Vault rate-limited {} of {} (HTTP 429); retry later",
                op.name, op.path
            ),
        ),
        503 if lower.contains("sealed") => Error::new(
            ErrorKind::Unavailable,
            format!(
                "Vault at {} is sealed; {} of {} can succeed once it is unsealed (HTTP 503)",
                op.address, op.name, op.path
            ),
        ),
        // 412: a performance standby has not caught up yet; 5xx: server-side trouble.
        412 | 500..=599 => Error::new(
            ErrorKind::Unavailable,
            format!(
                "Vault at {} failed {} of {} (HTTP {code}){suffix}; retry later",
                op.address, op.name, op.path
            ),
        ),
        401 => Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "Vault rejected the credentials for {} of {} (HTTP 401){suffix}",
                op.name, op.path
            ),
        ),
        400..=499 => Error::new(
            ErrorKind::InvalidInput,
            format!(
                "Vault rejected {} of {} (HTTP {code}){suffix}",
                op.name, op.path
            ),
        ),
        _ => Error::new(
            ErrorKind::Unexpected,
            format!(
                "Vault answered {} of {} with unexpected HTTP {code}",
                op.name, op.path
            ),
        ),
    }
}

fn from_http(err: HttpError, op: Op<'_>) -> Error {
    match err {
        // A non-JSON error body (a proxy's HTML page, ...): the status is all we keep.
        HttpError::ServerResponseError { code, .. } => from_status(code, &[], op),
        HttpError::RequestError { source, .. } => {
            if let Some(tls) = find_tls_error(source.as_ref()) {
                // A configuration problem (CA, name, expiry, client certificate), not an
                // outage: retrying cannot fix it.
                return Error::config(format!(
                    "TLS with the Vault at {} failed during {} of {}: {}",
                    op.address,
                    op.name,
                    op.path,
                    tls_reason(tls)
                ));
            }
            let (what, cause) = match source.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_timeout() => ("timed out", root_cause(e)),
                Some(e) if e.is_connect() => ("could not connect", root_cause(e)),
                Some(e) => ("request failed", root_cause(e)),
                None => ("request failed", source.root_cause().to_string()),
            };
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "Vault at {} is unreachable: {} of {} {what} ({cause}); check that the server is running and HIVE_VAULT_ADDR is right",
                    op.address, op.name, op.path
                ),
            )
        }
        HttpError::ResponseError { .. } => Error::new(
            ErrorKind::Unavailable,
            format!(
                "Vault at {} broke off the response to {} of {}",
                op.address, op.name, op.path
            ),
        ),
        // Parse failures carry the body in the error: never shown.
        HttpError::ResponseParseError { .. } | HttpError::ResponseConversionError { .. } => {
            Error::new(
                ErrorKind::Corrupted,
                format!(
                    "Vault's response to {} of {} is not the expected JSON; is {} a Vault/OpenBao server with KV v2 at this mount?",
                    op.name, op.path, op.address
                ),
            )
        }
        other => Error::new(
            ErrorKind::Unexpected,
            format!("Vault {} of {} failed: {other}", op.name, op.path),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: Op<'static> = Op {
        name: "save",
        path: "secret/data/hive/credentials/gh",
        address: "http://127.0.0.1:8200/",
    };

    fn api(code: u16, errors: &[&str]) -> Error {
        map_error(
            ClientError::APIError {
                code,
                errors: errors.iter().map(|s| s.to_string()).collect(),
            },
            OP,
        )
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let denied = api(403, &["1 error occurred:\n\t* permission denied\n\n"]);
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        assert!(denied.message().contains(OP.path), "{denied}");
        assert!(denied.message().contains("policy"), "{denied}");
        assert!(!denied.is_temporary());

        assert_eq!(api(404, &[]).kind(), ErrorKind::NotFound);

        let limited = api(429, &["request path \"x\": rate limit quota exceeded"]);
        assert_eq!(limited.kind(), ErrorKind::RateLimited);
        assert!(limited.is_temporary());

        let sealed = api(503, &["Vault is sealed"]);
        assert_eq!(sealed.kind(), ErrorKind::Unavailable);
        assert!(sealed.is_temporary());
        assert!(sealed.message().contains("sealed"));

        for code in [500, 502, 503, 504, 412] {
            let e = api(code, &["internal error"]);
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{code}");
            assert!(e.is_temporary(), "{code}");
        }

        let cas = api(
            400,
            &["check-and-set parameter did not match the current version"],
        );
        assert_eq!(cas.kind(), ErrorKind::Conflict);
        assert!(!cas.is_temporary());

        assert_eq!(api(400, &["bad"]).kind(), ErrorKind::InvalidInput);
        assert_eq!(api(401, &[]).kind(), ErrorKind::PermissionDenied);
        let redirect = api(307, &[]);
        assert_eq!(redirect.kind(), ErrorKind::Config);
        assert!(redirect.message().contains("redirect"), "{redirect}");
        assert_eq!(api(600, &[]).kind(), ErrorKind::Unexpected);
    }

    #[test]
    fn context_names_backend_op_and_path() {
        let e = api(403, &[]);
        assert_eq!(e.context_value("backend"), Some("vault"));
        assert_eq!(e.context_value("op"), Some("save"));
        assert_eq!(e.context_value("path"), Some(OP.path));
    }

    #[test]
    fn raw_bodies_never_reach_the_error() {
        let body = "{\"data\":{\"api_key\":\"canary-in-a-body\"}}";
        for err in [
            ClientError::RestClientError {
                source: HttpError::ServerResponseError {
                    code: 502,
                    content: Some(body.into()),
                },
            },
            ClientError::RestClientError {
                source: HttpError::ResponseParseError {
                    source: anyhow::anyhow!("expected value"),
                    content: Some(body.into()),
                },
            },
        ] {
            let e = map_error(err, OP);
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("canary-in-a-body"), "{shown}");
        }
        let e = map_error(
            ClientError::RestClientError {
                source: HttpError::ServerResponseError {
                    code: 502,
                    content: Some(body.into()),
                },
            },
            OP,
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }
}
