//! The refresh lock of [`McpCredentialStore`]: the credential's cross-process lock
//! (plus an in-process mutex), taken by `acquire_refresh_guard`, or already by `load`
//! for the refresh rmcp starts next ("parked"), and handed to kept credentials whose
//! save has not landed.

use std::sync::Arc;
use std::time::Duration;

use hive_cred_core::{CredentialLock, Result};
use tokio::sync::OwnedMutexGuard;

use super::credentials::{Inner, McpCredentialStore, lock};

/// A lock taken by [`McpCredentialStore`]'s `load` for the refresh rmcp is about to
/// start is released if that refresh has not claimed it within this time. rmcp asks
/// for the guard right after the load (no I/O in between); a load that no refresh
/// follows (`initialize_from_store`, `get_credentials`) holds the lock this long.
const UNCLAIMED_LOCK_TTL: Duration = Duration::from_secs(1);

/// A held refresh lock: the in-process mutex and the storage's lock (if it has one).
pub(super) struct Held {
    _local: OwnedMutexGuard<()>,
    /// Released when dropped (see `CredentialLock`'s drop).
    _storage: Option<CredentialLock>,
}

impl McpCredentialStore {
    /// Takes the in-process mutex and the storage's lock.
    pub(super) async fn take_lock(&self) -> Result<Held> {
        let local = self.inner.local.clone().lock_owned().await;
        let storage = self.inner.store.storage();
        let held = if storage.capabilities().cross_process_lock {
            Some(
                storage
                    .lock(&self.inner.id, self.inner.store.lock_options())
                    .await
                    .map_err(|e| {
                        e.with_context("id", &self.inner.id)
                            .with_context("operation", "lock")
                    })?,
            )
        } else {
            None
        };
        Ok(Held {
            _local: local,
            _storage: held,
        })
    }

    /// Parks `held` for the refresh rmcp starts next; released after
    /// [`UNCLAIMED_LOCK_TTL`] if unclaimed.
    pub(super) fn park(&self, held: Held) {
        let generation = {
            let mut st = lock(&self.inner.state);
            st.generation += 1;
            let g = st.generation;
            st.pending = Some((held, g));
            g
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&self.inner);
            handle.spawn(async move {
                tokio::time::sleep(UNCLAIMED_LOCK_TTL).await;
                if let Some(inner) = weak.upgrade() {
                    let mut st = lock(&inner.state);
                    if st.pending.as_ref().is_some_and(|(_, g)| *g == generation) {
                        tracing::debug!(target: "hive_cred::mcp", id = %inner.id, "releasing a refresh lock no refresh claimed");
                        st.pending = None;
                    }
                }
            });
        }
    }
}

/// The guard handed to rmcp: releases the refresh lock on drop, or hands it to kept
/// credentials whose save has not landed.
pub(super) struct Guard {
    pub(super) inner: Arc<Inner>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.state);
        let held = st.guard.take();
        if let (Some(held), Some(u)) = (held, st.unsaved.as_mut())
            && u.held.is_none()
        {
            u.held = Some(held);
        }
    }
}
