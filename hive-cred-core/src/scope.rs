//! Per-user views of a storage: [`CredentialStore::for_user`](crate::CredentialStore::for_user).
//!
//! A backend that can scope natively says so through [`CredentialStorage::scoped`]
//! (Vault: a path prefix per principal, which a Vault policy can confine a token to).
//! Every other storage gets a [`ScopedStorage`]: the principal's credentials live in
//! the same storage under ids prefixed `user.{principal}.`, and the view maps ids both
//! ways. A view cannot reach outside its prefix: ids have no `/`, so no id given to
//! the view can name another principal's credential.

use std::sync::Arc;

use async_trait::async_trait;

use crate::credential::CredentialObject;
use crate::error::{Error, Result};
use crate::id::CredentialId;
use crate::lock::{CredentialLock, LockOptions};
use crate::storage::{CredentialStorage, StorageCapabilities};

/// The longest principal name.
pub const MAX_PRINCIPAL_LEN: usize = 64;

/// Checks a principal (end-user) name: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn validate_principal(principal: &str) -> Result<()> {
    let ok = !principal.is_empty()
        && principal.len() <= MAX_PRINCIPAL_LEN
        && principal
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = principal.chars().take(40).collect();
        Err(Error::invalid_input(format!(
            "invalid principal {shown:?}: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// One principal's namespace inside a shared storage (ids prefixed `user.{principal}.`).
#[derive(Debug)]
pub struct ScopedStorage {
    inner: Arc<dyn CredentialStorage>,
    principal: String,
    prefix: String,
}

/// The id under which `principal`'s credential `id` is kept in a shared namespace
/// (`user.{principal}.{id}`): [`ScopedStorage`]'s records, and the names of per-user
/// locks of backends that scope natively.
pub fn scoped_id(principal: &str, id: &CredentialId) -> Result<CredentialId> {
    CredentialId::new(&format!("user.{principal}.{}", id.as_str()))
        .map_err(|e| e.with_context("principal", principal))
}

impl ScopedStorage {
    /// The view of `principal` inside `inner`.
    pub fn new(inner: Arc<dyn CredentialStorage>, principal: &str) -> Result<Self> {
        validate_principal(principal)?;
        Ok(ScopedStorage {
            inner,
            principal: principal.to_owned(),
            prefix: format!("user.{principal}."),
        })
    }

    /// The principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    fn outer(&self, id: &CredentialId) -> Result<CredentialId> {
        scoped_id(&self.principal, id)
    }

    fn local(&self, id: &CredentialId) -> Option<CredentialId> {
        id.as_str()
            .strip_prefix(&self.prefix)
            .and_then(|rest| CredentialId::new(rest).ok())
    }
}

#[async_trait]
impl CredentialStorage for ScopedStorage {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let outer = self.outer(id)?;
        Ok(self
            .inner
            .load(&outer)
            .await?
            .map(|c| c.renamed(id.clone())))
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        let outer = self.outer(credential.id())?;
        self.inner.save(&credential.renamed(outer)).await
    }

    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        self.inner.delete(&self.outer(id)?).await
    }

    async fn list(&self) -> Result<Vec<CredentialId>> {
        Ok(self
            .inner
            .list()
            .await?
            .iter()
            .filter_map(|id| self.local(id))
            .collect())
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        self.inner.exists(&self.outer(id)?).await
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn capabilities(&self) -> StorageCapabilities {
        self.inner.capabilities()
    }

    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        self.inner.lock(&self.outer(id)?, options).await
    }
}
