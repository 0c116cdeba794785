//! The [`CredentialStorage`] trait every backend implements, what a backend declares it
//! can do ([`StorageCapabilities`]), and [`StorageLayer`], the forwarding base every
//! storage wrapper is built on.

use std::time::Duration;

use async_trait::async_trait;

use crate::credential::CredentialObject;
use crate::error::{Error, Result};
use crate::id::CredentialId;
use crate::lock::{CredentialLock, LockOptions};

/// What a storage backend can do beyond load, save, delete and list. Declared by the
/// backend, forwarded by every wrapper, and checked by [`CredentialStore`](crate::CredentialStore)
/// when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StorageCapabilities {
    /// The backend is shared between processes or hosts and offers a per-credential
    /// lock ([`CredentialStorage::lock`]); the store holds it around every refresh.
    /// `false` (the default): nothing outside this process shares the storage, and
    /// in-process single flight is all a refresh needs.
    pub cross_process_lock: bool,
    /// The lock is a lease with a time to live ([`LockOptions::ttl`]) rather than a lock
    /// that dies with its process. The store then refuses a TTL that does not outlast a
    /// refresh (provider timeout + [`save_timeout`](Self::save_timeout) + a margin).
    pub lease_lock: bool,
    /// The longest a `save` can take before the backend gives up, when it is bounded
    /// (Vault's request timeout). Used for the lease check above.
    pub save_timeout: Option<Duration>,
}

impl StorageCapabilities {
    /// No cross-process lock (the default).
    pub const fn none() -> Self {
        StorageCapabilities {
            cross_process_lock: false,
            lease_lock: false,
            save_timeout: None,
        }
    }

    /// A lock that dies with its holder (an OS file lock).
    pub const fn process_lock() -> Self {
        StorageCapabilities {
            cross_process_lock: true,
            lease_lock: false,
            save_timeout: None,
        }
    }

    /// A lease lock with a TTL, for a backend whose saves give up after `save_timeout`.
    pub const fn lease_lock(save_timeout: Option<Duration>) -> Self {
        StorageCapabilities {
            cross_process_lock: true,
            lease_lock: true,
            save_timeout,
        }
    }
}

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
/// - A backend shared between processes declares
///   [`cross_process_lock`](StorageCapabilities::cross_process_lock) in
///   [`capabilities`](Self::capabilities) and implements [`lock`](Self::lock).
/// - Errors never contain secret values.
///
/// Wrappers (a storage that holds another) are built on [`StorageLayer`], which forwards
/// every method, so none is dropped. The [`testkit`](crate::testkit) conformance suite
/// checks all of this.
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

    /// What the backend can do. Default: [`StorageCapabilities::none`] (a storage that
    /// no other process shares).
    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::none()
    }

    /// Takes the cross-process lock of one credential, waiting at most `options.wait`
    /// (then `ErrorKind::Unavailable`). Only called when
    /// [`capabilities`](Self::capabilities) declares
    /// [`cross_process_lock`](StorageCapabilities::cross_process_lock); the default
    /// fails with `Unsupported`. The store holds it around each refresh; see
    /// [`crate::lock`].
    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        let _ = options;
        Err(
            Error::unsupported("this storage has no cross-process credential locks")
                .with_context("id", id)
                .with_context("backend", self.backend_name()),
        )
    }

    /// A view of this storage that holds only `principal`'s credentials, for backends
    /// that scope natively (Vault: a path prefix per principal that a policy can
    /// confine a token to). `principal` is already validated.
    ///
    /// # Behavior
    /// - `None` (the default): [`CredentialStore::for_user`](crate::CredentialStore::for_user)
    ///   namespaces ids inside this storage instead ([`ScopedStorage`](crate::ScopedStorage)).
    /// - `Some(view)`: ids in the view are the principal's own; the view never reaches
    ///   another principal's credentials.
    fn scoped(&self, principal: &str) -> Option<std::sync::Arc<dyn CredentialStorage>> {
        let _ = principal;
        None
    }
}

/// The base of every storage wrapper: a wrapper names the storage it wraps
/// ([`inner`](Self::inner)) and overrides only the operations it changes; every other
/// operation, including those with default bodies in [`CredentialStorage`] (`exists`,
/// `capabilities`, `lock`), is forwarded to the inner storage. Every `StorageLayer` is a
/// [`CredentialStorage`].
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use async_trait::async_trait;
/// use hive_cred_core::{CredentialObject, CredentialStorage, MemoryStorage, Result, StorageLayer};
///
/// /// Counts saves; everything else (including locks) passes through.
/// #[derive(Debug)]
/// struct CountingSaves { inner: Arc<dyn CredentialStorage>, saves: AtomicU64 }
///
/// #[async_trait]
/// impl StorageLayer for CountingSaves {
///     fn inner(&self) -> &dyn CredentialStorage { &*self.inner }
///     async fn save(&self, credential: &CredentialObject) -> Result<()> {
///         self.saves.fetch_add(1, Ordering::Relaxed);
///         self.inner.save(credential).await
///     }
/// }
///
/// let s = CountingSaves { inner: Arc::new(MemoryStorage::new()), saves: AtomicU64::new(0) };
/// // Call it as a storage (both traits name the same methods).
/// let storage: &dyn CredentialStorage = &s;
/// assert_eq!(storage.backend_name(), "memory");
/// ```
#[async_trait]
pub trait StorageLayer: Send + Sync + std::fmt::Debug {
    /// The wrapped storage.
    fn inner(&self) -> &dyn CredentialStorage;

    /// Forwards [`CredentialStorage::load`].
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        self.inner().load(id).await
    }

    /// Forwards [`CredentialStorage::save`].
    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        self.inner().save(credential).await
    }

    /// Forwards [`CredentialStorage::delete`].
    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        self.inner().delete(id).await
    }

    /// Forwards [`CredentialStorage::list`].
    async fn list(&self) -> Result<Vec<CredentialId>> {
        self.inner().list().await
    }

    /// Forwards [`CredentialStorage::exists`].
    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        self.inner().exists(id).await
    }

    /// Forwards [`CredentialStorage::backend_name`].
    fn backend_name(&self) -> &'static str {
        self.inner().backend_name()
    }

    /// Forwards [`CredentialStorage::capabilities`].
    fn capabilities(&self) -> StorageCapabilities {
        self.inner().capabilities()
    }

    /// Forwards [`CredentialStorage::lock`].
    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        self.inner().lock(id, options).await
    }

    /// Deliberately not forwarded: the inner storage's native view would leave this
    /// layer out of the chain. `None` makes the store namespace ids through the layer.
    fn scoped(&self, principal: &str) -> Option<std::sync::Arc<dyn CredentialStorage>> {
        let _ = principal;
        None
    }
}

/// Every layer is a storage. This impl lists every method of [`CredentialStorage`]
/// (the `every_method_of_a_layer_is_forwarded` test fails when one is missing).
#[async_trait]
impl<L: StorageLayer> CredentialStorage for L {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        StorageLayer::load(self, id).await
    }
    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        StorageLayer::save(self, credential).await
    }
    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        StorageLayer::delete(self, id).await
    }
    async fn list(&self) -> Result<Vec<CredentialId>> {
        StorageLayer::list(self).await
    }
    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        StorageLayer::exists(self, id).await
    }
    fn backend_name(&self) -> &'static str {
        StorageLayer::backend_name(self)
    }
    fn capabilities(&self) -> StorageCapabilities {
        StorageLayer::capabilities(self)
    }
    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        StorageLayer::lock(self, id, options).await
    }
    fn scoped(&self, principal: &str) -> Option<std::sync::Arc<dyn CredentialStorage>> {
        StorageLayer::scoped(self, principal)
    }
}

/// An `Arc` of a storage forwards every method to it.
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
    fn capabilities(&self) -> StorageCapabilities {
        (**self).capabilities()
    }
    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        (**self).lock(id, options).await
    }
    fn scoped(&self, principal: &str) -> Option<std::sync::Arc<dyn CredentialStorage>> {
        (**self).scoped(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockRelease;
    use crate::{CredentialType, ErrorKind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug)]
    struct Released(Arc<AtomicBool>);

    #[async_trait]
    impl LockRelease for Released {
        async fn release(self: Box<Self>) -> Result<()> {
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A layer that overrides nothing.
    #[derive(Debug)]
    struct Nothing(Arc<dyn CredentialStorage>);

    #[async_trait]
    impl StorageLayer for Nothing {
        fn inner(&self) -> &dyn CredentialStorage {
            &*self.0
        }
    }

    /// Every method of `CredentialStorage` reaches the inner storage through a layer that
    /// overrides nothing, and through an `Arc`: each expectation is `times(2)`.
    #[tokio::test]
    async fn every_method_of_a_layer_is_forwarded() {
        let id = CredentialId::new("fwd").unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let mut mock = MockCredentialStorage::new();
        mock.expect_load().times(2).returning(|id| {
            Ok(Some(CredentialObject::with_id(
                id.clone(),
                CredentialType::ApiKey,
            )))
        });
        mock.expect_save().times(2).returning(|_| Ok(()));
        mock.expect_delete().times(2).returning(|_| Ok(true));
        mock.expect_list()
            .times(2)
            .returning(|| Ok(vec![CredentialId::new("fwd").unwrap()]));
        mock.expect_exists().times(2).returning(|_| Ok(true));
        mock.expect_backend_name().times(2).return_const("mocked");
        mock.expect_capabilities()
            .times(2)
            .return_const(StorageCapabilities::lease_lock(Some(Duration::from_secs(
                7,
            ))));
        let r = released.clone();
        mock.expect_lock()
            .times(2)
            .returning(move |id, _| Ok(CredentialLock::new(id.clone(), Released(r.clone()))));
        let inner: Arc<dyn CredentialStorage> = Arc::new(mock);
        let layer = Nothing(inner.clone());
        let arc: Arc<dyn CredentialStorage> = inner;
        let wrapped: [&dyn CredentialStorage; 2] = [&layer, &arc];
        for s in wrapped {
            assert!(s.load(&id).await.unwrap().is_some());
            let c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
            s.save(&c).await.unwrap();
            assert!(s.delete(&id).await.unwrap());
            assert_eq!(s.list().await.unwrap(), vec![id.clone()]);
            assert!(s.exists(&id).await.unwrap());
            assert_eq!(s.backend_name(), "mocked");
            assert_eq!(
                s.capabilities(),
                StorageCapabilities::lease_lock(Some(Duration::from_secs(7)))
            );
            let held = s.lock(&id, &LockOptions::new()).await.unwrap();
            held.release().await.unwrap();
            assert!(released.swap(false, Ordering::SeqCst));
        }
    }

    #[tokio::test]
    async fn the_default_lock_is_unsupported_and_capabilities_say_so() {
        let s = crate::MemoryStorage::new();
        assert!(!s.capabilities().cross_process_lock);
        let e = s
            .lock(&CredentialId::new("x").unwrap(), &LockOptions::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }
}
