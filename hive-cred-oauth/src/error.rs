//! Mapping of OAuth2 failures to hive-cred's [`ErrorKind`]s. The one place that decides
//! which failures are dead grants, configuration mistakes or temporary trouble.

use hive_cred_core::{Error, ErrorKind};
use oauth2::RequestTokenError;
use oauth2::basic::BasicErrorResponse;

use crate::transport::TransportError;

/// What the transport saw of the token endpoint's answer (status and content type; no
/// body), for messages about answers the oauth2 crate could not read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub(crate) status: Option<u16>,
    pub(crate) content_type: Option<String>,
}

/// OAuth error codes meaning the grant is dead and the user must authorise again.
/// `invalid_grant` and `unauthorized_client` are RFC 6749's; the rest are what real
/// providers send for revoked, expired or unknown refresh tokens (GitHub
/// `bad_refresh_token`, Slack `invalid_refresh_token`/`token_revoked`, HubSpot
/// `bad_refresh_token` via its `status`, Microsoft `interaction_required`, ...).
const REJECTED_CODES: &[&str] = &[
    "invalid_grant",
    "unauthorized_client",
    "invalid_token",
    "token_revoked",
    "revoked",
    "revoked_token",
    "bad_refresh_token",
    "invalid_refresh_token",
    "expired_token",
    "token_expired",
    "refresh_token_expired",
    "access_denied",
    "consent_required",
    "interaction_required",
    "login_required",
    "account_inactive",
    "invalid_auth",
    "not_authed",
];

/// Codes meaning our configuration is wrong; re-authorising would not help.
const CONFIG_CODES: &[&str] = &[
    "invalid_client",
    "invalid_request",
    "invalid_scope",
    "unsupported_grant_type",
    "invalid_client_id",
    "bad_client_id",
    "bad_client_secret",
    "bad_redirect_uri",
];

const TEMPORARY_CODES: &[&str] = &["temporarily_unavailable", "server_error"];

const RATE_LIMIT_CODES: &[&str] = &["slow_down", "rate_limited", "ratelimited"];

/// An OAuth error code fit to appear in a message: the code itself when it is a short
/// token of `A-Z a-z 0-9 _ . -`, else a placeholder (server-chosen text may hold
/// anything).
pub(crate) fn shown_code(code: &str) -> &str {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { code } else { "<non-standard>" }
}

/// The [`ErrorKind`] of an OAuth error code from `what` (`"token endpoint"`, ...).
pub(crate) fn kind_of_code(code: &str) -> ErrorKind {
    let lower = code.to_ascii_lowercase();
    let code = lower.as_str();
    if REJECTED_CODES.contains(&code) {
        ErrorKind::RefreshRejected
    } else if CONFIG_CODES.contains(&code) {
        ErrorKind::Config
    } else if TEMPORARY_CODES.contains(&code) {
        ErrorKind::Unavailable
    } else if RATE_LIMIT_CODES.contains(&code) {
        ErrorKind::RateLimited
    } else {
        // An unknown error code in an error response: the server refused; asking again
        // with the same grant will not change its answer.
        ErrorKind::RefreshRejected
    }
}

/// Context of a refresh: who and what, for messages.
pub(crate) struct RefreshContext<'a> {
    pub(crate) id: &'a str,
    pub(crate) provider: &'a str,
}

impl RefreshContext<'_> {
    fn tag(&self, e: Error) -> Error {
        e.with_context("id", self.id)
            .with_context("provider", self.provider)
            .with_context("operation", "refresh")
    }

    /// A credential without a refresh token.
    pub(crate) fn no_refresh_token(&self) -> Error {
        self.tag(Error::new(
            ErrorKind::RefreshRejected,
            format!(
                "credential {:?} has no refresh_token key, so OAuth2 provider {:?} cannot refresh it; authorise again to obtain a refresh token",
                self.id, self.provider
            ),
        ))
    }

    /// An error response with `code` from the token endpoint.
    pub(crate) fn code_error(&self, code: &str, status: Option<u16>) -> Error {
        let shown = shown_code(code);
        let kind = kind_of_code(code);
        let (id, provider) = (self.id, self.provider);
        let message = match kind {
            ErrorKind::RefreshRejected => format!(
                "OAuth2 provider {provider:?} rejected the refresh of credential {id:?} ({shown}): the grant is revoked, expired or invalid; authorise again to obtain a new refresh token"
            ),
            ErrorKind::Config => format!(
                "OAuth2 provider {provider:?} refused the refresh request for credential {id:?} ({shown}): check client_id, client_secret, auth_style, scopes and extra parameters"
            ),
            ErrorKind::RateLimited => format!(
                "OAuth2 provider {provider:?} asked to slow down while refreshing credential {id:?} ({shown})"
            ),
            _ => format!(
                "OAuth2 provider {provider:?} is temporarily unable to refresh credential {id:?} ({shown})"
            ),
        };
        let mut e = self
            .tag(Error::new(kind, message))
            .with_context("error_code", shown);
        if let Some(s) = status {
            e = e.with_context("status", s);
        }
        e
    }

    /// Any failure of the oauth2 crate's token request.
    pub(crate) fn request_error(
        &self,
        err: RequestTokenError<TransportError, BasicErrorResponse>,
        observed: &Observed,
    ) -> Error {
        let with_observed = |mut e: Error| {
            if let Some(s) = observed.status {
                e = e.with_context("status", s);
            }
            if let Some(ct) = &observed.content_type {
                e = e.with_context("content_type", ct);
            }
            e
        };
        match err {
            RequestTokenError::ServerResponse(resp) => {
                self.code_error(resp.error().as_ref(), observed.status)
            }
            RequestTokenError::Request(t) => {
                self.tag(t.into_error("token endpoint"))
                    .with_message_prefix(format!(
                        "refreshing credential {:?} with OAuth2 provider {:?} failed",
                        self.id, self.provider
                    ))
            }
            // Never attach the parse error: serde messages quote body values.
            RequestTokenError::Parse(..) => with_observed(self.tag(Error::unavailable(
                "the token endpoint sent a response that is not a valid OAuth2 token response; the body is withheld because it may hold secrets",
            ))),
            // The oauth2 crate's own messages (Content-Type mismatch, empty body) are
            // replaced by one that carries only what `observed` recorded.
            RequestTokenError::Other(_) => with_observed(self.tag(Error::unavailable(
                "the token endpoint sent an empty or non-JSON response; the body is withheld because it may hold secrets",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        for c in [
            "invalid_grant",
            "unauthorized_client",
            "token_revoked",
            "BAD_REFRESH_TOKEN",
            "something_new",
        ] {
            assert_eq!(kind_of_code(c), ErrorKind::RefreshRejected, "{c}");
        }
        for c in ["invalid_client", "invalid_scope", "unsupported_grant_type"] {
            assert_eq!(kind_of_code(c), ErrorKind::Config, "{c}");
        }
        assert_eq!(
            kind_of_code("temporarily_unavailable"),
            ErrorKind::Unavailable
        );
        assert_eq!(kind_of_code("slow_down"), ErrorKind::RateLimited);
    }

    #[test]
    fn rejected_message_names_credential_and_provider() {
        let ctx = RefreshContext {
            id: "github_production",
            provider: "github_oauth",
        };
        let e = ctx.code_error("invalid_grant", Some(400));
        assert_eq!(e.kind(), ErrorKind::RefreshRejected);
        assert!(!e.is_temporary());
        assert!(e.message().contains("github_production") && e.message().contains("github_oauth"));
        assert_eq!(e.context_value("error_code"), Some("invalid_grant"));
        assert_eq!(e.context_value("status"), Some("400"));
        let e = ctx.no_refresh_token();
        assert_eq!(e.kind(), ErrorKind::RefreshRejected);
        assert!(e.message().contains("no refresh_token"));
    }

    #[test]
    fn weird_codes_are_not_echoed() {
        assert_eq!(shown_code("invalid_grant"), "invalid_grant");
        assert_eq!(shown_code("has space"), "<non-standard>");
        assert_eq!(shown_code(&"x".repeat(65)), "<non-standard>");
        assert_eq!(shown_code(""), "<non-standard>");
    }
}
