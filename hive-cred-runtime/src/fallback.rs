//! The environment fallback of an agent's store: credentials saved in the backend win,
//! and environment variables (the specs' names such as `BRAVE_SEARCH_API_KEY`,
//! `HIVE_CRED_{ID}__{KEY}`, Hive's `{ID}_API_KEY`) fill the gaps.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, EnvStorage, Result, ScopedStorage,
    StorageLayer,
};

/// The backend with the environment under it, built on [`StorageLayer`]: writes,
/// deletes, locks, capabilities and the backend name are the backend's; reads fall
/// through to the environment only for ids the backend does not hold.
///
/// The order is the one the Python Hive's tools get (`CredentialStoreAdapter`:
/// encrypted primary, environment fallback): a credential a person stored, or a token a
/// refresh rotated, is never shadowed by a stale variable. To make a variable win,
/// delete the stored credential.
///
/// A per-user view ([`scoped`](CredentialStorage::scoped)) has no environment layer: the
/// environment holds the deployment's credentials, and a user's tools act with the
/// user's own.
pub(crate) struct EnvFallback {
    inner: Arc<dyn CredentialStorage>,
    env: EnvStorage,
}

impl EnvFallback {
    pub(crate) fn new(inner: Arc<dyn CredentialStorage>, env: EnvStorage) -> Self {
        EnvFallback { inner, env }
    }
}

impl fmt::Debug for EnvFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvFallback")
            .field("inner", &self.inner)
            .field("env", &self.env)
            .finish()
    }
}

#[async_trait]
impl StorageLayer for EnvFallback {
    fn inner(&self) -> &dyn CredentialStorage {
        &*self.inner
    }

    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        // A backend error is returned, never masked by the environment.
        match self.inner.load(id).await? {
            Some(c) => Ok(Some(c)),
            None => self.env.load(id).await,
        }
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        Ok(self.inner.exists(id).await? || self.env.exists(id).await?)
    }

    async fn list(&self) -> Result<Vec<CredentialId>> {
        let mut ids = self.inner.list().await?;
        let seen: HashSet<CredentialId> = ids.iter().cloned().collect();
        ids.extend(
            self.env
                .list()
                .await?
                .into_iter()
                .filter(|id| !seen.contains(id)),
        );
        Ok(ids)
    }

    fn scoped(&self, principal: &str) -> Option<Arc<dyn CredentialStorage>> {
        // The backend's own view when it has one (Vault's per-principal prefix), else
        // the namespaced one; without the environment either way.
        self.inner.scoped(principal).or_else(|| {
            ScopedStorage::new(self.inner.clone(), principal)
                .ok()
                .map(|s| Arc::new(s) as Arc<dyn CredentialStorage>)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use hive_cred_core::{CredentialStore, CredentialType, ErrorKind, ExposeSecret, MemoryStorage};
    use std::collections::HashMap;

    fn env() -> EnvStorage {
        EnvStorage::from_vars(HashMap::from([(
            "BRAVE_SEARCH_API_KEY".to_string(),
            "from-env-0123".to_string(),
        )]))
        .with_mapping(
            "brave_search",
            "api_key",
            "BRAVE_SEARCH_API_KEY",
            CredentialType::ApiKey,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn stored_wins_env_fills_gaps_and_views_see_no_environment() {
        let memory = Arc::new(MemoryStorage::new());
        let layered: Arc<dyn CredentialStorage> = Arc::new(EnvFallback::new(memory.clone(), env()));
        assert_eq!(layered.backend_name(), "memory");
        let store = CredentialStore::builder()
            .storage(layered.clone())
            .build()
            .unwrap();
        let v = store.get_key("brave_search", "api_key").await.unwrap();
        assert_eq!(v.expose_secret(), "from-env-0123"); // EXPOSE: the test compares the value.
        assert_eq!(
            layered.list().await.unwrap(),
            vec![CredentialId::new("brave_search").unwrap()]
        );

        let mut stored = CredentialObject::new("brave_search", CredentialType::ApiKey).unwrap();
        stored.set_key("api_key", "stored-4567", None).unwrap();
        store.upsert(stored).await.unwrap();
        assert!(
            memory
                .exists(&CredentialId::new("brave_search").unwrap())
                .await
                .unwrap()
        );
        store.clear_cache();
        let v = store.get_key("brave_search", "api_key").await.unwrap();
        assert_eq!(v.expose_secret(), "stored-4567"); // EXPOSE: the test compares the value.
        assert_eq!(layered.list().await.unwrap().len(), 1, "listed once");

        let alice = store.for_user("alice").unwrap();
        let e = alice.get("brave_search").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }

    /// A backend that records which operations reached it.
    #[derive(Debug, Default)]
    struct Recording {
        calls: std::sync::Mutex<Vec<&'static str>>,
    }

    impl Recording {
        fn hit(&self, what: &'static str) {
            self.calls.lock().unwrap().push(what);
        }
    }

    #[derive(Debug)]
    struct Released;

    #[async_trait]
    impl hive_cred_core::LockRelease for Released {
        async fn release(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    #[async_trait]
    impl CredentialStorage for Recording {
        async fn load(&self, _: &CredentialId) -> Result<Option<CredentialObject>> {
            self.hit("load");
            Ok(None)
        }
        async fn save(&self, _: &CredentialObject) -> Result<()> {
            self.hit("save");
            Ok(())
        }
        async fn delete(&self, _: &CredentialId) -> Result<bool> {
            self.hit("delete");
            Ok(true)
        }
        async fn list(&self) -> Result<Vec<CredentialId>> {
            self.hit("list");
            Ok(Vec::new())
        }
        async fn exists(&self, _: &CredentialId) -> Result<bool> {
            self.hit("exists");
            Ok(false)
        }
        fn backend_name(&self) -> &'static str {
            "recording"
        }
        fn capabilities(&self) -> hive_cred_core::StorageCapabilities {
            hive_cred_core::StorageCapabilities::lease_lock(Some(std::time::Duration::from_secs(9)))
        }
        async fn lock(
            &self,
            id: &CredentialId,
            _: &hive_cred_core::LockOptions,
        ) -> Result<hive_cred_core::CredentialLock> {
            self.hit("lock");
            Ok(hive_cred_core::CredentialLock::new(id.clone(), Released))
        }
        fn scoped(&self, _: &str) -> Option<Arc<dyn CredentialStorage>> {
            self.hit("scoped");
            None
        }
    }

    /// Every operation reaches the backend: writes, deletes and locks only there, reads
    /// there first; capabilities and the name are the backend's.
    #[tokio::test]
    async fn every_operation_reaches_the_backend() {
        let backend = Arc::new(Recording::default());
        let layered = EnvFallback::new(backend.clone(), env());
        let s: &dyn CredentialStorage = &layered;
        let id = CredentialId::new("brave_search").unwrap();
        assert!(s.load(&id).await.unwrap().is_some(), "from the environment");
        s.save(&CredentialObject::new("x", CredentialType::ApiKey).unwrap())
            .await
            .unwrap();
        assert!(s.delete(&id).await.unwrap());
        assert_eq!(s.list().await.unwrap(), vec![id.clone()]);
        assert!(s.exists(&id).await.unwrap());
        assert_eq!(s.backend_name(), "recording");
        assert!(s.capabilities().lease_lock);
        let lock = s
            .lock(&id, &hive_cred_core::LockOptions::new())
            .await
            .unwrap();
        lock.release().await.unwrap();
        assert!(s.scoped("alice").is_some(), "a namespaced view");
        assert_eq!(
            *backend.calls.lock().unwrap(),
            ["load", "save", "delete", "list", "exists", "lock", "scoped"]
        );
    }
}
