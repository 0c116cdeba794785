//! [`CompositeStorage`]: ordered layers of storages.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::credential::CredentialObject;
use crate::error::{Error, Result};
use crate::id::CredentialId;
use crate::storage::CredentialStorage;

/// Ordered layers: reads come from the first layer that has the id; writes and deletes
/// go to the primary (first) layer only.
///
/// A typical stack is an encrypted store over environment variables: credentials saved
/// by the CLI win, and `BRAVE_SEARCH_API_KEY` in the environment fills the gaps.
///
/// # Behavior
/// - `load` asks each layer in order and returns the first `Some`. An error from a
///   layer is returned (not skipped), so a broken primary is never masked by a stale
///   lower layer.
/// - `save` and `delete` go to the primary. Saving a credential read from a lower layer
///   (version 0) creates it in the primary, which then shadows the lower layer.
/// - `list` is the union of all layers, each id once.
#[derive(Debug, Clone)]
pub struct CompositeStorage {
    layers: Vec<Arc<dyn CredentialStorage>>,
}

impl CompositeStorage {
    /// A composite of `primary` alone; add lower layers with [`layer`](Self::layer).
    pub fn new(primary: Arc<dyn CredentialStorage>) -> Self {
        CompositeStorage {
            layers: vec![primary],
        }
    }

    /// Adds a lower-priority layer.
    #[must_use]
    pub fn layer(mut self, storage: Arc<dyn CredentialStorage>) -> Self {
        self.layers.push(storage);
        self
    }

    /// Builds from layers in priority order; fails with `Config` when empty.
    pub fn from_layers(layers: Vec<Arc<dyn CredentialStorage>>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::config("CompositeStorage needs at least one layer"));
        }
        Ok(CompositeStorage { layers })
    }

    fn primary(&self) -> &Arc<dyn CredentialStorage> {
        &self.layers[0]
    }
}

#[async_trait]
impl CredentialStorage for CompositeStorage {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        for layer in &self.layers {
            if let Some(c) = layer.load(id).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        self.primary().save(credential).await
    }

    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        self.primary().delete(id).await
    }

    async fn list(&self) -> Result<Vec<CredentialId>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for layer in &self.layers {
            for id in layer.list().await? {
                if seen.insert(id.clone()) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        for layer in &self.layers {
            if layer.exists(id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn backend_name(&self) -> &'static str {
        "composite"
    }

    fn capabilities(&self) -> crate::StorageCapabilities {
        // Refreshed credentials are written to the primary, so its lock is the one.
        self.primary().capabilities()
    }

    async fn lock(
        &self,
        id: &CredentialId,
        options: &crate::lock::LockOptions,
    ) -> Result<crate::lock::CredentialLock> {
        self.primary().lock(id, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CredentialType, EnvStorage, ErrorKind, MemoryStorage};
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    crate::storage_conformance_tests!(async {
        CompositeStorage::new(Arc::new(MemoryStorage::new()))
            .layer(Arc::new(EnvStorage::from_vars(HashMap::new())))
    });

    #[tokio::test]
    async fn reads_first_layer_writes_primary() {
        let primary = Arc::new(MemoryStorage::new());
        let env = Arc::new(
            EnvStorage::from_vars(HashMap::from([(
                "BRAVE_SEARCH_API_KEY".to_string(),
                "from-env".to_string(),
            )]))
            .with_mapping(
                "brave_search",
                "api_key",
                "BRAVE_SEARCH_API_KEY",
                CredentialType::ApiKey,
            )
            .unwrap(),
        );
        let c = CompositeStorage::new(primary.clone()).layer(env);
        let id = CredentialId::new("brave_search").unwrap();
        let mut got = c.load(&id).await.unwrap().unwrap();
        assert_eq!(got.get_key("api_key").unwrap().expose_secret(), "from-env"); // EXPOSE: the test compares the secret value.
        got.set_key("api_key", "from-primary", None).unwrap();
        c.save(&got).await.unwrap();
        assert!(primary.exists(&id).await.unwrap());
        let got = c.load(&id).await.unwrap().unwrap();
        assert_eq!(
            got.get_key("api_key").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            "from-primary"
        );
        assert_eq!(c.list().await.unwrap(), vec![id.clone()]);
        assert!(c.delete(&id).await.unwrap());
        // The environment layer shows through again.
        assert_eq!(
            c.load(&id)
                .await
                .unwrap()
                .unwrap()
                .get_key("api_key")
                .unwrap()
                .expose_secret(), // EXPOSE: the test compares the secret value.
            "from-env"
        );
        assert!(CompositeStorage::from_layers(vec![]).unwrap_err().kind() == ErrorKind::Config);
    }
}
