//! The [`CredentialStorage`] trait every backend implements.

use async_trait::async_trait;

use crate::credential::CredentialObject;
use crate::error::Result;
use crate::id::CredentialId;
use crate::lock::{CredentialLock, LockOptions};

/// Where credentials live: memory, environment, encrypted files, Vault.
///
/// # Behavior
/// - `load` of a missing id returns `Ok(None)`; a present one returns the credential
///   with [`version`](CredentialObject::version) set to its stored version (`>= 1` for
///   writable backends).
/// - `save` writes the credential as stored version `credential.version() + 1`, only if
///   the stored version is `credential.version()` (`0` meaning "absent"): check-and-set.
///   Otherwise it fails with `ErrorKind::Conflict` and changes nothing. So saving a freshly
///   built credential (version 0) over an existing id is a conflict; load, modify, save.
/// - `save` that returned `Ok` is durable (for persistent backends) and visible to the
///   next `load` and `list`.
/// - `delete` of a missing id returns `Ok(false)`; of a present one `Ok(true)`, after
///   which `load` returns `None` and `list` omits the id.
/// - `list` returns every stored id, each once, in no particular order.
/// - Read-only backends fail writes with `ErrorKind::Unsupported`.
/// - Errors never contain secret values.
///
/// The [`testkit`](crate::testkit) conformance suite checks all of this.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CredentialStorage: Send + Sync + std::fmt::Debug {
    /// Loads a credential, `Ok(None)` when absent.
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>>;

    /// Saves a credential with check-and-set on its version (see the trait docs).
    async fn save(&self, credential: &CredentialObject) -> Result<()>;

    /// Deletes a credential, `Ok(false)` when it was absent.
    async fn delete(&self, id: &CredentialId) -> Result<bool>;

    /// Lists every stored id.
    async fn list(&self) -> Result<Vec<CredentialId>>;

    /// Whether a credential exists. The default loads it; backends may do better.
    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        Ok(self.load(id).await?.is_some())
    }

    /// A short name for logs and error context (`"memory"`, `"local"`, `"vault"`).
    fn backend_name(&self) -> &'static str {
        "storage"
    }

    /// Takes the cross-process lock of one credential, waiting at most `options.wait`
    /// (then `ErrorKind::Unavailable`). `Ok(None)` means the backend has no cross-process
    /// locking (the default: nothing outside this process shares it). The store holds it
    /// around each refresh; see [`crate::lock`].
    async fn lock(
        &self,
        id: &CredentialId,
        options: &LockOptions,
    ) -> Result<Option<CredentialLock>> {
        let _ = (id, options);
        Ok(None)
    }
}

#[async_trait]
impl<T: CredentialStorage + ?Sized> CredentialStorage for std::sync::Arc<T> {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        (**self).load(id).await
    }
    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        (**self).save(credential).await
    }
    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        (**self).delete(id).await
    }
    async fn list(&self) -> Result<Vec<CredentialId>> {
        (**self).list().await
    }
    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        (**self).exists(id).await
    }
    fn backend_name(&self) -> &'static str {
        (**self).backend_name()
    }
    async fn lock(
        &self,
        id: &CredentialId,
        options: &LockOptions,
    ) -> Result<Option<CredentialLock>> {
        (**self).lock(id, options).await
    }
}
