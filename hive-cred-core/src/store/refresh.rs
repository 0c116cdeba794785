//! One refresh, from the lock wait to the save, and the saves kept in memory when
//! storage fails after a refresh.
//!
//! The order of a refresh of credential `id` (one flight per id in this process):
//! 1. honour an earlier failure of the same stored version (backoff, or a dead grant);
//! 2. take the storage's cross-process lock when it has one, re-reading storage while
//!    waiting: a credential another process refreshed meanwhile is adopted without a
//!    token request ([`CredentialStore::adopt_if_refreshed`], the one helper for "another
//!    writer already refreshed");
//! 3. ask the provider;
//! 4. save with check-and-set ([`CredentialStore::persist`]): on a conflict the stored
//!    copy wins only if it holds other secrets than the ones just refreshed away;
//!    otherwise the new tokens go on top of it and the save is tried again;
//! 5. if the save fails otherwise, keep the new credential in memory ([`Unsaved`]),
//!    serve it, and retry the save in the background with backoff while holding the
//!    lock, until it lands. Later refreshes start from the kept credential.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::{CredentialStore, lock};
use crate::credential::CredentialObject;
use crate::error::{Error, ErrorKind, Result};
use crate::hook::{AccessOperation, AccessOutcome};
use crate::id::CredentialId;
use crate::lock::CredentialLock;
use crate::provider::CredentialProvider;

/// How often one save retries a check-and-set conflict by merging before giving up.
const MERGE_ATTEMPTS: u32 = 5;

/// What the store remembers of a failed refresh.
#[derive(Clone)]
pub(super) struct Failure {
    /// The stored version the failure applies to: a new version (another writer, a
    /// re-authorisation) clears it.
    version: u64,
    /// `None`: a permanent failure (dead grant), not retried for this version.
    retry_at: Option<DateTime<Utc>>,
    failures: u32,
    error: Error,
}

/// A refreshed credential whose save has not landed.
pub(super) struct Unsaved {
    /// The newest credential, with the version of `base`.
    fresh: Arc<CredentialObject>,
    /// The stored copy it replaces: what storage holds, with the refresh token the
    /// provider has already answered.
    base: CredentialObject,
    /// The credential's cross-process lock, held until the save lands.
    held: Option<CredentialLock>,
    attempts: u32,
    error: Error,
}

impl Unsaved {
    /// `stored` landed while a newer refresh replaced the kept copy: the newer copy goes
    /// on top of `stored` at the next attempt.
    fn rebase(&mut self, stored: CredentialObject) {
        let mut newer = (*self.fresh).clone();
        newer.set_version(stored.version());
        self.fresh = Arc::new(newer);
        self.base = stored;
        self.attempts = 0;
    }
}

/// A refreshed credential that this store serves from memory because saving it failed;
/// see [`CredentialStore::unsaved`]. Holds no values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnsavedRefresh {
    /// The credential.
    pub id: CredentialId,
    /// Failed save attempts so far.
    pub attempts: u32,
    /// The last save error.
    pub error: Error,
}

/// What became of a refreshed credential handed to [`CredentialStore::persist`].
enum Persisted {
    /// Saved; the stored copy.
    Saved(CredentialObject),
    /// Another writer stored other secrets meanwhile; its copy.
    Adopted(CredentialObject),
}

/// Whether two credentials hold the same key names and values.
fn same_secrets(a: &CredentialObject, b: &CredentialObject) -> bool {
    a.keys().len() == b.keys().len()
        && a.keys().all(|k| {
            b.get_key(k.name()).is_some_and(|v| {
                // EXPOSE: compared for equality only, never copied.
                v.expose_secret() == k.value().expose_secret()
            })
        })
}

fn warn_dropped(id: &CredentialId) {
    tracing::warn!(target: "hive_cred::store", id = %id, "the credential was deleted while its refreshed copy waited to be saved; the copy is dropped");
}

/// `stored` with the keys and refresh time of `fresh` put on top.
fn merged(stored: &CredentialObject, fresh: &CredentialObject) -> CredentialObject {
    let mut out = stored.clone();
    for k in fresh.keys() {
        out.insert_key(k.clone());
    }
    if let Some(at) = fresh.last_refreshed() {
        out.set_last_refreshed(at);
    }
    out
}

impl CredentialStore {
    pub(super) async fn load_and_refresh(
        &self,
        id: &CredentialId,
        force: bool,
    ) -> Result<Arc<CredentialObject>> {
        let generation = self.generation();
        let (current, kept) = self.starting_point(id).await?;
        if !force && !self.due(&current, self.inner.clock.now()) {
            self.put_cache(&current, generation);
            return Ok(current);
        }
        let store = self.clone();
        self.spawn_refresh(id, async move {
            store
                .refresh_loaded(Arc::unwrap_or_clone(current), kept, force, generation)
                .await
        })
        .await
    }

    /// What a `get` starts from: the refreshed credential kept in memory while its save
    /// has not landed (it is newer than storage; `true`), else the stored one.
    pub(super) async fn starting_point(
        &self,
        id: &CredentialId,
    ) -> Result<(Arc<CredentialObject>, bool)> {
        if let Some(kept) = self.kept(id) {
            return Ok((kept, true));
        }
        let started = Instant::now();
        let loaded = self.load_stored(id).await?;
        tracing::debug!(
            target: "hive_cred::store",
            id = %id,
            version = loaded.version(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "loaded credential from storage"
        );
        Ok((Arc::new(loaded), false))
    }

    /// Runs a refresh on a task of its own (when a Tokio runtime is around), so that it
    /// finishes (token saved, lock released) even if every caller gives up: the provider
    /// may already have rotated the refresh token. A panic in it is an error.
    async fn spawn_refresh<F>(&self, id: &CredentialId, refresh: F) -> Result<Arc<CredentialObject>>
    where
        F: std::future::Future<Output = Result<Arc<CredentialObject>>> + Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn(refresh).await.unwrap_or_else(|join| {
                if join.is_panic() {
                    Err(super::panicked(id))
                } else {
                    Err(Error::new(
                        ErrorKind::Unexpected,
                        "the credential's refresh task was cancelled (runtime shutting down); the next call tries again",
                    )
                    .with_context("id", id))
                }
            }),
            Err(_) => refresh.await,
        }
    }

    /// The stored credential; `NotFound` when absent. Errors name the id and operation.
    async fn load_stored(&self, id: &CredentialId) -> Result<CredentialObject> {
        self.inner
            .storage
            .load(id)
            .await
            .map_err(|e| e.with_context("id", id).with_context("operation", "load"))?
            .ok_or_else(|| {
                Error::not_found(id).with_context("backend", self.inner.storage.backend_name())
            })
    }

    /// Releases a credential's lock; a failure only means it lives to its TTL.
    async fn release_lock(id: &CredentialId, held: CredentialLock) {
        if let Err(e) = held.release().await {
            tracing::warn!(target: "hive_cred::store", id = %id, kind = %e.kind(), "could not release the credential lock; it expires at its TTL");
        }
    }

    pub(super) fn provider_for(&self, c: &CredentialObject) -> Result<Arc<dyn CredentialProvider>> {
        let Some(pid) = c.provider_id() else {
            return Err(Error::config(
                "credential has auto_refresh but no provider_id; set provider_id or turn auto_refresh off",
            )
            .with_context("id", c.id()));
        };
        self.inner.providers.get(pid).cloned().ok_or_else(|| {
            Error::config("no provider registered for the credential's provider_id; register a provider with that id (in code, or in the runtime's provider config file)")
                .with_context("id", c.id())
                .with_context("provider", pid)
        })
    }

    /// Honours an earlier failed refresh of the same stored version: while its backoff
    /// runs (or for good after a rejection), the still-valid credential is served, or
    /// the error repeated once it has expired. `None`: go ahead and refresh.
    fn earlier_failure(
        &self,
        loaded: &CredentialObject,
        force: bool,
    ) -> Option<Result<Arc<CredentialObject>>> {
        if force {
            return None;
        }
        let now = self.inner.clock.now();
        let previous = lock(&self.inner.failures).get(loaded.id()).cloned()?;
        if previous.version != loaded.version() || previous.retry_at.is_some_and(|at| now >= at) {
            return None;
        }
        Some(if loaded.is_expired_at(now) {
            Err(previous.error)
        } else {
            Ok(Arc::new(loaded.clone()))
        })
    }

    /// `current` when another writer stored a new version since `read_version` that is
    /// not due for refresh: cached and returned, with no token request.
    fn adopt_if_refreshed(
        &self,
        current: &CredentialObject,
        read_version: u64,
        generation: u64,
        why: &'static str,
    ) -> Option<Arc<CredentialObject>> {
        if current.version() == read_version || self.due(current, self.inner.clock.now()) {
            return None;
        }
        tracing::info!(target: "hive_cred::store", id = %current.id(), version = current.version(), "{why}; using its credential, no token request");
        let current = Arc::new(current.clone());
        self.put_cache(&current, generation);
        Some(current)
    }

    /// Refreshes `loaded` (`kept`: the credential kept in memory, whose pending save
    /// already holds the lock) under the credential's lock.
    async fn refresh_loaded(
        &self,
        loaded: CredentialObject,
        kept: bool,
        force: bool,
        generation: u64,
    ) -> Result<Arc<CredentialObject>> {
        let id = loaded.id().clone();
        let provider = self.provider_for(&loaded)?;
        if let Some(gated) = self.earlier_failure(&loaded, force) {
            return gated;
        }
        if kept {
            return self
                .refresh_with(loaded, &provider, force, generation, &mut None)
                .await;
        }
        let mut held = None;
        let result = async {
            if let Some(adopted) = self
                .acquire_lock(&id, loaded.version(), force, generation, &mut held)
                .await?
            {
                return Ok(adopted);
            }
            let current = if held.is_some() {
                // Another process may have refreshed while this one waited: re-read.
                let current = self.load_stored(&id).await?;
                let adopted = (!force)
                    .then(|| {
                        self.adopt_if_refreshed(
                            &current,
                            loaded.version(),
                            generation,
                            "another process refreshed the credential",
                        )
                    })
                    .flatten();
                if let Some(adopted) = adopted {
                    return Ok(adopted);
                }
                current
            } else {
                loaded
            };
            self.refresh_with(current, &provider, force, generation, &mut held)
                .await
        }
        .await;
        // `refresh_with` takes the lock out when it hands it to a kept save.
        if let Some(held) = held {
            Self::release_lock(&id, held).await;
        }
        result
    }

    /// Takes the storage's lock for `id` into `held` (left `None` when the storage has
    /// no cross-process lock). While another process holds it, re-reads the credential
    /// between attempts: once the holder has saved a fresh version, a waiter adopts it
    /// (`Ok(Some(..))`) without ever taking the lock, so waiting processes do not queue
    /// behind each other after the one refresh. Bounded by `LockOptions::wait`; a failing
    /// read (backend down) ends the wait at once.
    async fn acquire_lock(
        &self,
        id: &CredentialId,
        read_version: u64,
        force: bool,
        generation: u64,
        held: &mut Option<CredentialLock>,
    ) -> Result<Option<Arc<CredentialObject>>> {
        if !self.inner.storage.capabilities().cross_process_lock {
            return Ok(None);
        }
        let options = &self.inner.lock_options;
        let attempt = options.clone().with_wait(Duration::ZERO);
        let deadline = Instant::now() + options.wait;
        let mut pause = Duration::from_millis(5);
        loop {
            let busy = match self.inner.storage.lock(id, &attempt).await {
                Ok(lock) => {
                    *held = Some(lock);
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Unavailable => e,
                Err(e) => return Err(e.with_context("id", id).with_context("operation", "lock")),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(busy
                    .with_message_prefix(format!(
                        "gave up waiting {:?} for the credential's lock",
                        options.wait
                    ))
                    .with_context("id", id)
                    .with_context("operation", "lock"));
            }
            if !force {
                let current = self.load_stored(id).await?;
                if let Some(adopted) = self.adopt_if_refreshed(
                    &current,
                    read_version,
                    generation,
                    "another process refreshed the credential while this one waited",
                ) {
                    return Ok(Some(adopted));
                }
            }
            let jitter = 0.75 + rand::random::<f64>() * 0.5;
            tokio::time::sleep(pause.mul_f64(jitter).min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Calls the provider, persists the result, records failures. `held` is the
    /// credential's lock; it is moved into the kept save when the save fails.
    pub(super) async fn refresh_with(
        &self,
        loaded: CredentialObject,
        provider: &Arc<dyn CredentialProvider>,
        force: bool,
        generation: u64,
        held: &mut Option<CredentialLock>,
    ) -> Result<Arc<CredentialObject>> {
        let id = loaded.id().clone();
        let now = self.inner.clock.now();
        let expired = loaded.is_expired_at(now);
        let started = Instant::now();
        let refreshed = provider.refresh(&loaded).await;
        let elapsed = started.elapsed();
        let mut fresh = match refreshed {
            Ok(fresh) => fresh,
            Err(e) if e.kind() == ErrorKind::RefreshRejected && !force => {
                // Before declaring the grant dead: did another process win a race and
                // rotate the refresh token under us? Then adopt its credential.
                if let Ok(Some(current)) = self.inner.storage.load(&id).await
                    && let Some(adopted) = self.adopt_if_refreshed(
                        &current,
                        loaded.version(),
                        generation,
                        "refresh rejected but another writer refreshed meanwhile",
                    )
                {
                    return Ok(adopted);
                }
                return self.record_failure(loaded, provider, e, expired, force, now, elapsed);
            }
            Err(e) => {
                return self.record_failure(loaded, provider, e, expired, force, now, elapsed);
            }
        };
        if fresh.id() != &id {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "provider returned a credential with another id",
            )
            .with_context("id", &id)
            .with_context("provider", provider.provider_id()));
        }
        fresh.set_version(loaded.version());
        lock(&self.inner.failures).remove(&id);
        tracing::info!(
            target: "hive_cred::store",
            id = %id,
            provider = provider.provider_id(),
            outcome = "ok",
            elapsed_ms = elapsed.as_millis() as u64,
            "refreshed credential"
        );
        self.emit_refresh(&id, AccessOutcome::Ok, elapsed);

        // A refresh of a kept credential stays kept: its save is already being retried.
        if self.update_kept(&fresh) {
            let fresh = Arc::new(fresh);
            self.put_cache(&fresh, generation);
            return Ok(fresh);
        }
        match self.persist(fresh.clone(), &loaded).await {
            Ok(Persisted::Saved(stored)) | Ok(Persisted::Adopted(stored)) => {
                let stored = Arc::new(stored);
                self.put_cache(&stored, generation);
                Ok(stored)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(e
                .with_message_prefix("the credential was deleted while it was refreshed")
                .with_context("id", &id)),
            Err(e) => {
                let fresh = Arc::new(fresh);
                self.keep_unsaved(fresh.clone(), loaded, held.take(), e);
                self.put_cache(&fresh, generation);
                Ok(fresh)
            }
        }
    }

    /// Saves a refreshed credential (version: the stored version it replaces) over
    /// `base`, the stored copy it was refreshed from. On a check-and-set conflict the
    /// stored copy is read again: if it still holds `base`'s secrets (someone changed
    /// other fields), the new secrets go on top and the save is retried; if it holds
    /// other secrets (another refresh, a re-authorisation), it is adopted.
    async fn persist(&self, fresh: CredentialObject, base: &CredentialObject) -> Result<Persisted> {
        let id = fresh.id().clone();
        let mut candidate = fresh;
        for _ in 0..MERGE_ATTEMPTS {
            match self.inner.storage.save(&candidate).await {
                Ok(()) => {
                    candidate.set_version(candidate.version() + 1);
                    return Ok(Persisted::Saved(candidate));
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    let current = self
                        .inner
                        .storage
                        .load(&id)
                        .await?
                        .ok_or_else(|| Error::not_found(&id))?;
                    if !same_secrets(&current, base) {
                        tracing::info!(target: "hive_cred::store", id = %id, version = current.version(), "another writer stored other secrets while this refresh ran; using its credential");
                        return Ok(Persisted::Adopted(current));
                    }
                    tracing::debug!(target: "hive_cred::store", id = %id, version = current.version(), "another writer changed the credential but not its secrets; saving the refreshed secrets on top");
                    candidate = merged(&current, &candidate);
                    candidate.set_version(current.version());
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(
            &id,
            "the credential kept changing while its refreshed secrets were saved",
        ))
    }

    /// The kept (refreshed, unsaved) credential of `id`.
    fn kept(&self, id: &CredentialId) -> Option<Arc<CredentialObject>> {
        lock(&self.inner.unsaved).get(id).map(|u| u.fresh.clone())
    }

    /// Replaces the kept credential of `fresh`'s id; `false` when none is kept.
    fn update_kept(&self, fresh: &CredentialObject) -> bool {
        let mut unsaved = lock(&self.inner.unsaved);
        match unsaved.get_mut(fresh.id()) {
            Some(u) => {
                let mut f = fresh.clone();
                f.set_version(u.base.version());
                u.fresh = Arc::new(f);
                true
            }
            None => false,
        }
    }

    /// Drops the kept credential of `id` (it was deleted), releasing its lock.
    pub(super) fn forget_unsaved(&self, id: &CredentialId) {
        if lock(&self.inner.unsaved).remove(id).is_some() {
            warn_dropped(id);
        }
    }

    /// The refreshed credentials this store serves from memory because saving them
    /// failed, with the last error of each. Empty when every refresh is saved.
    pub fn unsaved(&self) -> Vec<UnsavedRefresh> {
        lock(&self.inner.unsaved)
            .iter()
            .map(|(id, u)| UnsavedRefresh {
                id: id.clone(),
                attempts: u.attempts,
                error: u.error.clone(),
            })
            .collect()
    }

    /// Tries the save of every kept refresh again now, and again every 250 ms, until
    /// all have landed (their locks released) or `timeout` has passed. Returns the ones
    /// still kept: empty means nothing is lost.
    ///
    /// Kept refreshes live only in this process's memory, and the refresh token that
    /// storage still holds has been spent: call this before the process exits (see
    /// `AgentRuntime::shutdown`), so that a storage outage at exit does not cost the
    /// grant.
    pub async fn settle(&self, timeout: Duration) -> Vec<UnsavedRefresh> {
        let all_saved = async {
            loop {
                let ids: Vec<CredentialId> = lock(&self.inner.unsaved).keys().cloned().collect();
                if ids.is_empty() {
                    return;
                }
                for id in &ids {
                    self.save_unsaved(id).await;
                }
                if lock(&self.inner.unsaved).is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let _ = tokio::time::timeout(timeout, all_saved).await;
        self.unsaved()
    }

    /// Keeps a refreshed credential whose save failed and starts retrying the save.
    fn keep_unsaved(
        &self,
        fresh: Arc<CredentialObject>,
        base: CredentialObject,
        held: Option<CredentialLock>,
        error: Error,
    ) {
        let id = fresh.id().clone();
        tracing::warn!(target: "hive_cred::store", id = %id, kind = %error.kind(), "the refreshed credential could not be saved; serving it from memory and retrying the save");
        self.emit_save_failure(&id, &error);
        lock(&self.inner.unsaved).insert(
            id.clone(),
            Unsaved {
                fresh,
                base,
                held,
                attempts: 1,
                error,
            },
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = self.clone();
            handle.spawn(async move { store.retry_unsaved(id).await });
        }
    }

    /// Retries the save of `id`'s kept credential with backoff until it lands, another
    /// writer's secrets are adopted, or the credential is deleted.
    async fn retry_unsaved(self, id: CredentialId) {
        loop {
            let attempts = match lock(&self.inner.unsaved).get(&id) {
                Some(u) => u.attempts,
                None => return,
            };
            tokio::time::sleep(self.inner.policy.backoff(attempts)).await;
            if self.save_unsaved(&id).await {
                return;
            }
        }
    }

    /// One attempt to save `id`'s kept credential; `true` when nothing is left to save.
    pub(super) async fn save_unsaved(&self, id: &CredentialId) -> bool {
        let Some((fresh, base)) = lock(&self.inner.unsaved)
            .get(id)
            .map(|u| (u.fresh.clone(), u.base.clone()))
        else {
            return true;
        };
        let outcome = self.persist((*fresh).clone(), &base).await;
        // Settle the map first, then release and log without holding its lock.
        let settled = {
            let mut unsaved = lock(&self.inner.unsaved);
            let Some(entry) = unsaved.get_mut(id) else {
                return true;
            };
            match outcome {
                Ok(Persisted::Saved(stored)) if !Arc::ptr_eq(&entry.fresh, &fresh) => {
                    // Refreshed again while saving.
                    entry.rebase(stored);
                    return false;
                }
                // The entry stays until the lock is released (below): `unsaved()`
                // empties only when nothing of the refresh is left, lock included.
                Ok(Persisted::Saved(stored)) | Ok(Persisted::Adopted(stored)) => {
                    Ok((stored, entry.held.take()))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    unsaved.remove(id);
                    Err(None)
                }
                Err(e) => {
                    entry.attempts += 1;
                    entry.error = e.clone();
                    Err(Some((e, entry.attempts)))
                }
            }
        };
        match settled {
            Ok((stored, held)) => {
                if let Some(held) = held {
                    Self::release_lock(id, held).await;
                }
                {
                    let mut unsaved = lock(&self.inner.unsaved);
                    match unsaved.get_mut(id) {
                        Some(entry) if !Arc::ptr_eq(&entry.fresh, &fresh) => {
                            // Refreshed again during the release.
                            entry.rebase(stored);
                            return false;
                        }
                        _ => {
                            unsaved.remove(id);
                        }
                    }
                }
                tracing::info!(target: "hive_cred::store", id = %id, version = stored.version(), "the kept refreshed credential is settled in storage");
                self.invalidate(id.as_str());
                self.put_cache(&Arc::new(stored), self.generation());
                self.emit(
                    id.as_str(),
                    None,
                    AccessOperation::Save,
                    AccessOutcome::Ok,
                    Instant::now(),
                );
                true
            }
            Err(None) => {
                warn_dropped(id);
                true
            }
            Err(Some((e, attempts))) => {
                tracing::warn!(target: "hive_cred::store", id = %id, kind = %e.kind(), attempts, "saving the refreshed credential failed again; it is still served from memory");
                self.emit_save_failure(id, &e);
                false
            }
        }
    }

    fn emit_save_failure(&self, id: &CredentialId, error: &Error) {
        self.emit(
            id.as_str(),
            None,
            AccessOperation::Save,
            AccessOutcome::Error(error.kind()),
            Instant::now(),
        );
    }

    #[allow(clippy::too_many_arguments)] // internal: the pieces of one failed refresh
    fn record_failure(
        &self,
        loaded: CredentialObject,
        provider: &Arc<dyn CredentialProvider>,
        e: Error,
        expired: bool,
        force: bool,
        now: DateTime<Utc>,
        elapsed: Duration,
    ) -> Result<Arc<CredentialObject>> {
        let id = loaded.id().clone();
        let e = e
            .with_context("id", &id)
            .with_context("provider", provider.provider_id());
        let mut failures = lock(&self.inner.failures);
        let count = failures
            .get(&id)
            .filter(|f| f.version == loaded.version())
            .map_or(0, |f| f.failures)
            + 1;
        let retry_at = if e.is_temporary() {
            let delay = e
                .retry_after()
                .unwrap_or_default()
                .max(self.inner.policy.backoff(count));
            Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
        } else {
            None
        };
        failures.insert(
            id.clone(),
            Failure {
                version: loaded.version(),
                retry_at,
                failures: count,
                error: e.clone(),
            },
        );
        drop(failures);
        tracing::warn!(
            target: "hive_cred::store",
            id = %id,
            provider = provider.provider_id(),
            kind = %e.kind(),
            temporary = e.is_temporary(),
            failures = count,
            expired,
            "credential refresh failed"
        );
        self.emit_refresh(&id, AccessOutcome::Error(e.kind()), elapsed);
        if !expired && !force {
            // Advisory window: the old credential is still valid (even after a
            // rejection, the access token works until it expires; expiry then
            // surfaces the error).
            return Ok(Arc::new(loaded));
        }
        Err(e)
    }
}
