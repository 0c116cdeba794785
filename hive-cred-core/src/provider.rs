//! The [`CredentialProvider`] trait: refresh logic, located by `provider_id`.

use async_trait::async_trait;

use chrono::Utc;

use crate::credential::{CredentialObject, CredentialType};
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

    /// The credential types this provider handles. Default: empty, meaning any type.
    fn credential_types(&self) -> Vec<CredentialType> {
        Vec::new()
    }

    /// Whether this provider can refresh `credential`. Default: whether its type is
    /// one of [`credential_types`](Self::credential_types) (any type when that is empty).
    fn supports(&self, credential: &CredentialObject) -> bool {
        let types = self.credential_types();
        types.is_empty() || types.contains(&credential.credential_type())
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

/// A provider for credentials that cannot be refreshed (API keys, static bearer
/// tokens, basic-auth pairs): the Python Hive's `StaticProvider`.
///
/// # Behavior
/// - `refresh` fails with `Unsupported`: a static credential is replaced by a person.
/// - `validate` is the offline form of a health check: `Ok(true)` when every required
///   key is present, not empty and not expired; `Ok(false)` otherwise.
/// - `credential_types` is what it was built with (default: api_key, bearer_token,
///   basic_auth, custom).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
/// use hive_cred_core::{CredentialObject, CredentialProvider, CredentialType, StaticProvider};
///
/// let provider = StaticProvider::new("static").require_key("api_key");
/// let mut brave = CredentialObject::new("brave_search", CredentialType::ApiKey)?;
/// assert!(!provider.validate(&brave).await?);
/// brave.set_key("api_key", "BSA-123", None)?;
/// assert!(provider.validate(&brave).await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct StaticProvider {
    id: String,
    types: Vec<CredentialType>,
    required_keys: Vec<String>,
}

impl StaticProvider {
    /// A static provider registered as `provider_id`.
    pub fn new(provider_id: impl Into<String>) -> Self {
        StaticProvider {
            id: provider_id.into(),
            types: vec![
                CredentialType::ApiKey,
                CredentialType::BearerToken,
                CredentialType::BasicAuth,
                CredentialType::Custom,
            ],
            required_keys: Vec::new(),
        }
    }

    /// Replaces the supported credential types.
    #[must_use]
    pub fn with_types(mut self, types: impl IntoIterator<Item = CredentialType>) -> Self {
        self.types = types.into_iter().collect();
        self
    }

    /// A key every valid credential must have. Without any, a credential needs at
    /// least one key.
    #[must_use]
    pub fn require_key(mut self, key: impl Into<String>) -> Self {
        self.required_keys.push(key.into());
        self
    }
}

#[async_trait]
impl CredentialProvider for StaticProvider {
    fn provider_id(&self) -> &str {
        &self.id
    }

    fn credential_types(&self) -> Vec<CredentialType> {
        self.types.clone()
    }

    async fn refresh(&self, credential: &CredentialObject) -> Result<CredentialObject> {
        Err(
            Error::unsupported("a static credential cannot be refreshed; store a new value")
                .with_context("id", credential.id())
                .with_context("provider", &self.id),
        )
    }

    async fn validate(&self, credential: &CredentialObject) -> Result<bool> {
        use secrecy::ExposeSecret;
        let now = Utc::now();
        let usable = |name: &str| {
            credential.key(name).is_some_and(|k| {
                // EXPOSE: only emptiness is checked.
                !k.value().expose_secret().is_empty() && !k.is_expired_at(now)
            })
        };
        if self.required_keys.is_empty() {
            let names: Vec<&str> = credential.key_names().collect();
            return Ok(!names.is_empty() && names.into_iter().all(usable));
        }
        Ok(self.required_keys.iter().all(|k| usable(k)))
    }
}
