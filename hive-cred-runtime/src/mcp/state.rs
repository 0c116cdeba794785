//! [`McpStateStore`]: rmcp's `StateStore` (PKCE verifier and CSRF state of an
//! authorisation in progress) over hive-cred storage.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStore, CredentialType, Error, ExposeSecret, Result,
    SecretString,
};
use rmcp::transport::auth::{AuthError, StateStore, StoredAuthorizationState};
use sha2::{Digest, Sha256};

use super::store_error;

/// The key holding one authorisation's state (JSON).
const STATE_KEY: &str = "authorization_state";

/// How long an authorisation state lives by default.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);

/// The PKCE verifier and CSRF state of MCP authorisations in progress, kept in hive-cred
/// storage: an implementation of [`rmcp::transport::auth::StateStore`] to hand to
/// `AuthorizationManager::set_state_store`. A process that restarts between sending the
/// person to the browser and receiving the callback (or another process receiving it)
/// can still finish the flow, and the verifier is encrypted at rest like every
/// credential.
///
/// # Behavior
/// - Each state is one short-lived credential (type `custom`, tagged `hive:mcp-state`)
///   whose id is `<prefix>-<hash of the CSRF token>`: the CSRF token itself appears in
///   no id, file name or log. Its one key expires `ttl` after `save`
///   ([`DEFAULT_STATE_TTL`], 10 minutes, unless set with [`with_ttl`](Self::with_ttl)).
/// - `load` returns the state saved under that CSRF token, `None` when there is none,
///   when it has expired (it is deleted then) or when the stored token differs.
/// - `delete` removes it; rmcp deletes a state as soon as its callback is accepted.
/// - `save` also deletes expired states of this prefix left by abandoned flows.
#[derive(Clone)]
pub struct McpStateStore {
    store: CredentialStore,
    prefix: String,
    ttl: Duration,
}

impl fmt::Debug for McpStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpStateStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl McpStateStore {
    /// States stored in `store`'s storage under ids starting with `prefix-` (for
    /// example the MCP token credential's id). `InvalidInput` when `prefix` does not
    /// make valid ids (1 to 60 characters of `[A-Za-z0-9_.-]`, not starting with `.`).
    pub fn new(store: &CredentialStore, prefix: &str) -> Result<Self> {
        if prefix.len() > 60 {
            return Err(Error::invalid_input(
                "the MCP state prefix is longer than 60 characters",
            ));
        }
        CredentialId::new(prefix)?;
        Ok(McpStateStore {
            store: store.clone(),
            prefix: format!("{prefix}-state-"),
            ttl: DEFAULT_STATE_TTL,
        })
    }

    /// Sets how long a state lives.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn id_of(&self, csrf_token: &str) -> Result<CredentialId> {
        let digest = Sha256::digest(csrf_token.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        CredentialId::new(&format!("{}{hex}", self.prefix))
    }

    fn now(&self) -> DateTime<Utc> {
        self.store.clock().now()
    }

    /// Deletes this prefix's expired states.
    async fn prune(&self) -> Result<()> {
        let storage = self.store.storage();
        let now = self.now();
        for id in storage.list().await? {
            if !id.as_str().starts_with(&self.prefix) {
                continue;
            }
            if let Some(c) = storage.load(&id).await?
                && c.is_expired_at(now)
            {
                storage.delete(&id).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for McpStateStore {
    async fn save(
        &self,
        csrf_token: &str,
        state: StoredAuthorizationState,
    ) -> std::result::Result<(), AuthError> {
        if let Err(e) = self.prune().await {
            tracing::debug!(target: "hive_cred::mcp", kind = %e.kind(), "could not prune expired MCP authorisation states");
        }
        let id = self.id_of(csrf_token).map_err(store_error)?;
        let json = serde_json::to_string(&state).map_err(|_| {
            AuthError::CredentialStoreError("the authorisation state does not serialize".into())
        })?;
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let mut obj = CredentialObject::with_id(id.clone(), CredentialType::Custom);
        obj.set_tags(vec!["hive:mcp-state".into()]);
        obj.set_key(STATE_KEY, SecretString::from(json), Some(self.now() + ttl))
            .map_err(store_error)?;
        // A fresh random CSRF token names a new id; replace a leftover of the same id.
        self.store
            .upsert(obj)
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn load(
        &self,
        csrf_token: &str,
    ) -> std::result::Result<Option<StoredAuthorizationState>, AuthError> {
        let id = self.id_of(csrf_token).map_err(store_error)?;
        let storage = self.store.storage();
        let Some(obj) = storage.load(&id).await.map_err(store_error)? else {
            return Ok(None);
        };
        if obj.is_expired_at(self.now()) {
            storage.delete(&id).await.map_err(store_error)?;
            return Ok(None);
        }
        let Some(value) = obj.get_key(STATE_KEY) else {
            return Ok(None);
        };
        // EXPOSE: the stored state (PKCE verifier) is parsed back for rmcp's code exchange.
        let state: StoredAuthorizationState =
            serde_json::from_str(value.expose_secret()).map_err(|_| {
                store_error(
                    Error::corrupted("the stored MCP authorisation state is malformed")
                        .with_context("id", &id),
                )
            })?;
        Ok((state.csrf_token == csrf_token).then_some(state))
    }

    async fn delete(&self, csrf_token: &str) -> std::result::Result<(), AuthError> {
        let id = self.id_of(csrf_token).map_err(store_error)?;
        self.store
            .delete(id.as_str())
            .await
            .map(|_| ())
            .map_err(store_error)
    }
}
