//! The [`CredentialProvider`] trait: refresh logic, located by `provider_id`.

use async_trait::async_trait;

use crate::credential::CredentialObject;
use crate::error::{Error, Result};

/// Refreshes credentials of one kind (OAuth2 refresh-token grant, a custom scheme, ...).
/// The store finds a provider by a credential's `provider_id`.
///
/// # Behavior
/// - `refresh` returns the updated credential (same id; new values and expiries;
///   `last_refreshed` set). It never persists: the store saves the result before handing
///   it to anyone.
/// - A dead grant (revoked, `invalid_grant`, no refresh token) fails with
///   `ErrorKind::RefreshRejected`, which the store does not retry.
/// - A temporary failure fails with `ErrorKind::Unavailable` or `ErrorKind::RateLimited`
///   (with [`Error::retry_after`] when known); the store backs off.
/// - Errors never contain secret values (tokens, client secrets, response bodies).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CredentialProvider: Send + Sync + std::fmt::Debug {
    /// The id credentials name in their `provider_id`.
    fn provider_id(&self) -> &str;

    /// Produces a refreshed copy of `credential`.
    async fn refresh(&self, credential: &CredentialObject) -> Result<CredentialObject>;

    /// Whether this provider can refresh `credential`. Default: `true`.
    fn supports(&self, credential: &CredentialObject) -> bool {
        let _ = credential;
        true
    }

    /// The longest one [`refresh`](Self::refresh) can take before the provider gives up,
    /// when bounded (an HTTP timeout). The store checks lease-lock TTLs against it.
    /// Default: `None` (unknown).
    fn request_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Checks with the provider that the credential still works. Default: `Ok(true)`
    /// without a network call.
    async fn validate(&self, credential: &CredentialObject) -> Result<bool> {
        let _ = credential;
        Ok(true)
    }

    /// Revokes the credential at the provider. Default: `Unsupported`.
    async fn revoke(&self, credential: &CredentialObject) -> Result<()> {
        Err(
            Error::unsupported("this provider cannot revoke credentials")
                .with_context("id", credential.id())
                .with_context("provider", self.provider_id()),
        )
    }
}
