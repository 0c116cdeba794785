//! [`MemoryStorage`]: credentials in process memory.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use crate::credential::CredentialObject;
use crate::error::{Error, ErrorKind, Result};
use crate::id::CredentialId;
use crate::storage::CredentialStorage;

/// Credentials held in memory only, gone when the process exits. For tests, examples
/// and as a layer of [`CompositeStorage`](crate::CompositeStorage). Implements the full
/// [`CredentialStorage`] contract, check-and-set included.
#[derive(Default)]
pub struct MemoryStorage {
    map: RwLock<HashMap<CredentialId, CredentialObject>>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes every credential; returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        let mut map = self.write()?;
        let n = map.len();
        map.clear();
        Ok(n)
    }

    fn read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, HashMap<CredentialId, CredentialObject>>> {
        self.map
            .read()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "memory storage lock poisoned"))
    }

    fn write(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<CredentialId, CredentialObject>>> {
        self.map
            .write()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "memory storage lock poisoned"))
    }
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.map.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("MemoryStorage")
            .field("credentials", &len)
            .finish()
    }
}

#[async_trait]
impl CredentialStorage for MemoryStorage {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        Ok(self.read()?.get(id).cloned())
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        let mut map = self.write()?;
        let stored = map
            .get(credential.id())
            .map_or(0, CredentialObject::version);
        if stored != credential.version() {
            return Err(Error::conflict(
                credential.id(),
                format!(
                    "credential changed since it was read (read at version {}, stored version is {stored}); load it again and retry",
                    credential.version()
                ),
            )
            .with_context("backend", "memory"));
        }
        let mut next = credential.clone();
        next.set_version(stored + 1);
        map.insert(credential.id().clone(), next);
        Ok(())
    }

    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        Ok(self.write()?.remove(id).is_some())
    }

    async fn list(&self) -> Result<Vec<CredentialId>> {
        Ok(self.read()?.keys().cloned().collect())
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        Ok(self.read()?.contains_key(id))
    }

    fn backend_name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    crate::storage_conformance_tests!(async { super::MemoryStorage::new() });
}
