//! Cross-process credential locks: one refresh per expiry across processes and hosts.
//!
//! Storage backends that several processes share offer a lock per credential through
//! [`CredentialStorage::lock`](crate::CredentialStorage::lock): the local store with an OS
//! file lock, the Vault store with a lease kept in KV and taken with check-and-set.
//! [`CredentialStore`](crate::CredentialStore) takes it around every refresh, re-reads
//! the credential once it holds it, and skips the token request when another process
//! already refreshed. Backends without shared state return `Ok(None)`: in-process
//! single-flight is all they need.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::CredentialId;

/// How long locks live and how long to wait for one.
///
/// # Default
/// - `ttl`: 60 s. A lease lock whose holder died is taken over after this. It must exceed
///   the longest refresh (the OAuth2 provider's default request timeout is 30 s). OS file
///   locks die with their process and ignore it.
/// - `wait`: 70 s. Waiting longer for a lock fails with `ErrorKind::Unavailable`.
///   Exceeding `ttl` means a waiter outlasts a dead holder.
/// - `holder`: `"{pid}-{random}"`, unique per process and store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// Lease lifetime.
    pub ttl: Duration,
    /// Longest wait for the lock.
    pub wait: Duration,
    /// Who holds the lock (written into lease locks; not secret).
    pub holder: String,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(60),
            wait: Duration::from_secs(70),
            holder: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }
}

impl LockOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lease lifetime.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the longest wait.
    #[must_use]
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the holder name.
    #[must_use]
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }
}

/// The backend side of a held lock.
#[async_trait]
pub trait LockRelease: Send + Sync + fmt::Debug {
    /// Releases the lock. Called at most once.
    async fn release(self: Box<Self>) -> Result<()>;
}

/// A held credential lock. Release it with [`release`](Self::release). Dropped without a
/// release, it is released in the background when a Tokio runtime is around, else by the
/// backend's own `Drop` (file locks) or at its TTL (leases).
#[derive(Debug)]
pub struct CredentialLock {
    id: CredentialId,
    inner: Option<Box<dyn LockRelease>>,
}

impl CredentialLock {
    /// Wraps a backend's held lock.
    pub fn new(id: CredentialId, held: impl LockRelease + 'static) -> Self {
        CredentialLock {
            id,
            inner: Some(Box::new(held)),
        }
    }

    /// The same lock reported under another id (for storage views that map ids: the
    /// lock secret of a per-user view is named in the backend's terms).
    pub fn renamed(mut self, id: CredentialId) -> Self {
        self.id = id;
        self
    }

    /// The locked credential's id.
    pub fn id(&self) -> &CredentialId {
        &self.id
    }

    /// Releases the lock.
    pub async fn release(mut self) -> Result<()> {
        match self.inner.take() {
            Some(held) => held.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for CredentialLock {
    fn drop(&mut self) {
        if let Some(held) = self.inner.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let id = self.id.clone();
            handle.spawn(async move {
                    if let Err(e) = held.release().await {
                        tracing::warn!(target: "hive_cred::lock", id = %id, kind = %e.kind(), "releasing a dropped credential lock failed; it expires at its TTL");
                    }
                });
        }
    }
}
