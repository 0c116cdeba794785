//! [`VaultStorage`]: the [`CredentialStorage`] over Vault / OpenBao KV v2.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use hive_cred_core::lock::{CredentialLock, LockOptions};
use hive_cred_core::{
    Clock, CredentialId, CredentialObject, CredentialStorage, Error, ErrorKind, Result,
    StorageCapabilities, SystemClock,
};
use vaultrs::api::kv2::requests::{
    DeleteSecretMetadataRequest, ListSecretsRequest, ReadSecretMetadataRequest, ReadSecretRequest,
};
use vaultrs::api::kv2::responses::ReadSecretMetadataResponse;

use crate::config::VaultConfig;
use crate::consistency;
use crate::record;
use crate::session::{Inner, TaskGuard};

/// Credentials in HashiCorp Vault or OpenBao, one KV v2 secret per credential.
///
/// - A credential lives at `{mount}/data/{prefix}/{id}`; its data holds one string field
///   per key and the non-secret metadata in the field `hive.meta`.
/// - The KV version is the credential's version; `save` sends `cas=version`, so a save
///   based on a stale read fails with `ErrorKind::Conflict` instead of overwriting.
/// - `delete` deletes the secret's metadata: **all versions are destroyed** and the id
///   disappears from `list`; the old values cannot be undeleted.
/// - `exists` and `delete` read only KV metadata, never values.
/// - [`lock`](CredentialStorage::lock) is a lease lock kept in KV at
///   `{prefix}/.locks/{id}`, taken and released with check-and-set (see the crate's
///   "Locks" section); `list` never shows lock secrets.
/// - Nothing is written to the local disk; the only cache is `CredentialStore`'s
///   in-memory one.
///
/// Cloning is cheap and shares the client and token. The background token renewal
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct VaultStorage {
    inner: Arc<Inner>,
    /// Stamps and judges lock leases.
    clock: Arc<dyn Clock>,
    _renewal: Option<Arc<TaskGuard>>,
    /// A per-principal view ([`CredentialStorage::scoped`]): the same session with
    /// `{prefix}/users/{principal}` as its path prefix.
    scope: Option<Arc<Scope>>,
}

struct Scope {
    principal: String,
    config: VaultConfig,
}

impl fmt::Debug for VaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner.config;
        f.debug_struct("VaultStorage")
            .field("address", &c.address())
            .field("mount", &c.mount())
            .field("path_prefix", &c.path_prefix())
            .field("auth", &c.auth().method())
            .field("token_expires_in", &self.inner.token_expires_in())
            .finish_non_exhaustive()
    }
}

impl VaultStorage {
    /// Connects with the configuration from the environment ([`VaultConfig::from_env`]).
    pub async fn from_env() -> Result<Self> {
        Self::new(VaultConfig::from_env()?).await
    }

    /// Connects and authenticates: looks the token up (to learn its TTL) or logs in
    /// with AppRole. Fails with `PermissionDenied` for a rejected token or AppRole
    /// credentials, `Unavailable` when the server cannot be reached, `Config` for plain
    /// `http://` to a non-loopback host (unless allowed), an unusable token, a bad CA or
    /// client certificate, a TLS verification failure or a redirect to another origin
    /// (see the crate's "Transport" section). Must be called inside a Tokio runtime with timers enabled; a
    /// renewable token is renewed by a task on that runtime.
    pub async fn new(config: VaultConfig) -> Result<Self> {
        let (inner, guard) = Inner::connect(config).await?;
        tracing::debug!(
            backend = "vault",
            address = inner.config.address(),
            mount = inner.config.mount(),
            prefix = inner.config.path_prefix(),
            auth = inner.config.auth().method(),
            "connected to Vault"
        );
        Ok(VaultStorage {
            inner,
            clock: Arc::new(SystemClock),
            _renewal: guard.map(Arc::new),
            scope: None,
        })
    }

    /// Sets the clock that stamps lock leases (`expires_at`) and judges whether another
    /// holder's lease has expired. Default: [`SystemClock`]. Tests inject a
    /// [`ManualClock`](hive_cred_core::ManualClock) to expire leases without waiting.
    #[must_use]
    pub fn with_lock_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &VaultConfig {
        &self.inner.config
    }

    /// The configuration whose paths this handle reads and writes: the scoped one for a
    /// per-principal view.
    fn paths(&self) -> &VaultConfig {
        self.scope
            .as_ref()
            .map_or(&self.inner.config, |s| &s.config)
    }

    /// The principal of a per-principal view
    /// ([`CredentialStore::for_user`](hive_cred_core::CredentialStore::for_user)).
    pub fn principal(&self) -> Option<&str> {
        self.scope.as_ref().map(|s| s.principal.as_str())
    }

    /// Reads the KV metadata of `id`; `None` when there is none.
    async fn read_metadata(
        &self,
        id: &CredentialId,
        op: &'static str,
    ) -> Result<Option<ReadSecretMetadataResponse>> {
        let config = self.paths();
        let path = config.kv_metadata_path(id.as_str());
        let build = || {
            ReadSecretMetadataRequest::builder()
                .mount(config.mount())
                .path(config.secret_path(id.as_str()))
                .build()
                .map_err(request_error)
        };
        build()?;
        let meta = self
            .inner
            .kv(op, &path, || {
                build().expect("the same request was built above")
            })
            .await;
        match meta {
            Ok(meta) => Ok(Some(meta)),
            Err(e) => absent_or(e, id),
        }
    }
}

/// The current version is live (not soft-deleted, not destroyed).
fn current_is_live(meta: &ReadSecretMetadataResponse) -> bool {
    meta.versions
        .get(&meta.current_version.to_string())
        .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed)
}

fn absent_or<T>(err: Error, id: &CredentialId) -> Result<Option<T>> {
    if err.kind() == ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(err.with_context("id", id))
    }
}

pub(crate) fn request_error(e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("could not build a Vault request: {e}"),
    )
}

#[async_trait]
impl CredentialStorage for VaultStorage {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let config = self.paths();
        let path = config.kv_path(id.as_str());
        let build = || {
            ReadSecretRequest::builder()
                .mount(config.mount())
                .path(config.secret_path(id.as_str()))
                .build()
                .map_err(request_error)
        };
        build()?;
        let response = self
            .inner
            .kv("load", &path, || {
                build().expect("the same request was built above")
            })
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return absent_or(e, id),
        };
        if response.data.is_null() || response.metadata.destroyed {
            return Ok(None);
        }
        let version = response.metadata.version;
        let credential =
            record::decode(id, response.data, version, &response.metadata.created_time).map_err(
                |e| {
                    e.with_context("id", id)
                        .with_context("backend", "vault")
                        .with_context("path", &path)
                },
            )?;
        tracing::debug!(backend = "vault", id = %id, version, "loaded credential from Vault");
        Ok(Some(credential))
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        let config = self.paths();
        let id = credential.id();
        let path = config.kv_path(id.as_str());
        let cas = u32::try_from(credential.version()).map_err(|_| {
            Error::invalid_input(format!(
                "credential version {} is beyond what Vault's check-and-set accepts",
                credential.version()
            ))
            .with_context("id", id)
        })?;
        let data = record::encode(credential)?;
        let secret = config.secret_path(id.as_str());
        let version = self
            .inner
            .write_cas("save", &path, (config.mount(), &secret), &data, cas)
            .await
            .map_err(|e| {
                let err = e.with_context("id", id);
                if err.kind() == ErrorKind::Conflict {
                    err.with_context("expected_version", cas)
                } else {
                    err
                }
            })?;
        tracing::debug!(backend = "vault", id = %id, version, "saved credential to Vault");
        Ok(())
    }

    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        let Some(meta) = self.read_metadata(id, "delete").await? else {
            return Ok(false);
        };
        let live = current_is_live(&meta);
        let config = self.paths();
        let path = config.kv_metadata_path(id.as_str());
        let build = || {
            DeleteSecretMetadataRequest::builder()
                .mount(config.mount())
                .path(config.secret_path(id.as_str()))
                .build()
                .map_err(request_error)
        };
        build()?;
        self.inner
            .exec("delete", &path, |client| {
                let request = build().expect("the same request was built above");
                async move { consistency::exec_with_empty(&client, &self.inner.index, request).await }
            })
            .await
            .map_err(|e| e.with_context("id", id))?;
        tracing::debug!(backend = "vault", id = %id, "deleted credential and all its versions from Vault");
        Ok(live)
    }

    async fn list(&self) -> Result<Vec<CredentialId>> {
        let config = self.paths();
        let path = format!("{}/metadata/{}", config.mount(), config.path_prefix());
        let build = || {
            ListSecretsRequest::builder()
                .mount(config.mount())
                .path(config.path_prefix())
                .build()
                .map_err(request_error)
        };
        build()?;
        let listed = self
            .inner
            .kv("list", &path, || {
                build().expect("the same request was built above")
            })
            .await;
        let keys = match listed {
            Ok(r) => r.keys,
            Err(err) => {
                return if err.kind() == ErrorKind::NotFound {
                    Ok(Vec::new())
                } else {
                    Err(err)
                };
            }
        };
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            // Folders (`sub/`, the lock folder `.locks/`) below the prefix are not
            // credentials.
            if key.ends_with('/') {
                continue;
            }
            match CredentialId::new(&key) {
                Ok(id) => ids.push(id),
                Err(_) => tracing::warn!(
                    backend = "vault",
                    path = %path,
                    key = %key,
                    "ignoring a Vault secret whose name is not a valid credential id"
                ),
            }
        }
        Ok(ids)
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        Ok(self
            .read_metadata(id, "exists")
            .await?
            .is_some_and(|m| current_is_live(&m)))
    }

    fn backend_name(&self) -> &'static str {
        "vault"
    }

    /// A lease lock in KV (see the crate's "Locks" section): created with `cas=0`,
    /// taken over only after its lease expired (check-and-set on the lock's version),
    /// released only by its holder. Polls with jittered backoff for `options.wait`,
    /// then fails with `ErrorKind::Unavailable` naming the id and the holder.
    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        match &self.scope {
            // Lock secrets stay under the root prefix, named per principal
            // (`{prefix}/.locks/user.{principal}.{id}`), which a policy can grant by glob.
            Some(scope) => {
                let scoped = hive_cred_core::scoped_id(&scope.principal, id)?;
                let held = crate::lock::acquire(&self.inner, &self.clock, &scoped, options).await?;
                Ok(held.renamed(id.clone()))
            }
            None => crate::lock::acquire(&self.inner, &self.clock, id, options).await,
        }
    }

    /// A lease lock in KV; saves give up after the configured request timeout.
    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::lease_lock(Some(self.inner.config.timeout))
    }

    /// A view under `{prefix}/users/{principal}` sharing this handle's session: a
    /// Vault policy can confine a token to one principal's prefix (see the crate's
    /// "Per-user credentials" section). `None` from a view already scoped.
    fn scoped(&self, principal: &str) -> Option<Arc<dyn CredentialStorage>> {
        if self.scope.is_some() {
            return None;
        }
        let base = self.inner.config.path_prefix();
        let prefix = if base.is_empty() {
            format!("users/{principal}")
        } else {
            format!("{base}/users/{principal}")
        };
        let config = self.inner.config.clone().with_path_prefix(&prefix).ok()?;
        let mut view = self.clone();
        view.scope = Some(Arc::new(Scope {
            principal: principal.to_owned(),
            config,
        }));
        Some(Arc::new(view))
    }
}
