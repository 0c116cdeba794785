//! [`CredentialStore`]: the cached, auto-refreshing front of a storage.
//!
//! The store is split by concern:
//! - this file: the handle, its cache, the public operations and the single-flight map;
//! - [`builder`]: [`RefreshPolicy`] and [`CredentialStoreBuilder`];
//! - [`refresh`]: one refresh, from the lock wait to the save, and the saves kept in
//!   memory when storage fails after a refresh;
//! - [`resolve`]: `{{id.key}}` templates.

mod accounts;
mod builder;
mod refresh;
mod resolve;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use secrecy::SecretString;

pub use accounts::hive_env_var;
pub use builder::{CredentialStoreBuilder, LEASE_MARGIN, RefreshPolicy};
pub use refresh::UnsavedRefresh;

use crate::clock::Clock;
use crate::credential::CredentialObject;
use crate::error::{Error, ErrorKind, Result};
use crate::hook::{AccessEvent, AccessHook, AccessOperation, AccessOutcome};
use crate::id::CredentialId;
use crate::lock::LockOptions;
use crate::provider::CredentialProvider;
use crate::storage::CredentialStorage;

/// The default cache TTL: 300 s.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

struct CacheEntry {
    credential: Arc<CredentialObject>,
    /// The cached value must be re-read at or after this instant (TTL or refresh due), in
    /// Unix nanoseconds so a cache hit compares two integers.
    stale_at: i64,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One load in flight and its result, shared by every caller that asked meanwhile.
type Flight = Arc<tokio::sync::OnceCell<Result<Arc<CredentialObject>>>>;

struct Inner {
    storage: Arc<dyn CredentialStorage>,
    providers: HashMap<String, Arc<dyn CredentialProvider>>,
    policy: RefreshPolicy,
    cache_ttl: chrono::Duration,
    clock: Arc<dyn Clock>,
    hooks: Vec<Arc<dyn AccessHook>>,
    lock_options: LockOptions,
    cache: RwLock<FastMap<CredentialId, CacheEntry>>,
    /// In-flight loads and refreshes, by id, each tagged with a sequence number so that
    /// only the flight itself removes its entry.
    flights: Mutex<HashMap<CredentialId, (u64, Flight)>>,
    flight_seq: AtomicU64,
    failures: Mutex<HashMap<CredentialId, refresh::Failure>>,
    /// Refreshed credentials whose save has not landed yet (see [`refresh`]).
    unsaved: Mutex<HashMap<CredentialId, refresh::Unsaved>>,
    /// Bumped by every save and delete; a fetch that started before a write does not
    /// overwrite the cache with what it read.
    generation: AtomicU64,
    /// The end user this view is scoped to ([`CredentialStore::for_user`]).
    principal: Option<Arc<str>>,
}

/// The front door to credentials: a cache over a [`CredentialStorage`], refresh through
/// [`CredentialProvider`]s, `{{id.key}}` templates, and an access hook for audit trails.
///
/// Cloning is cheap; clones share cache and state.
///
/// # Behavior
/// - `get` of a cached credential returns it without I/O until the cache TTL passes or
///   the credential enters its refresh window.
/// - A credential with `auto_refresh` that needs refresh is refreshed by the provider
///   named by its `provider_id`, and the result is **saved before it is returned**.
///   Concurrent `get`s of one credential share one refresh (single-flight), and the
///   refresh runs on its own task, so a caller that gives up does not abandon a token
///   the provider has already rotated. Other credentials are not blocked.
/// - Inside the advisory window, a failed refresh returns the still-valid credential
///   (outcome `Stale`); past expiry, it is an error (`RefreshRejected` for a dead grant,
///   `Unavailable`/`RateLimited` for temporary trouble).
/// - After a temporary failure the provider is not asked again before a jittered,
///   exponential, capped backoff (or the provider's `Retry-After`) has passed. After a
///   rejection it is not asked again until the stored credential changes.
/// - When to refresh is one rule, [`RefreshPolicy::refresh_due_at`]: the window (per
///   provider if configured), capped at half the token's lifetime, a minimum interval
///   between refreshes, an optional keep-alive. The cache holds a credential until then.
/// - A successful refresh is never lost. If saving it conflicts (another writer wrote
///   first), the store keeps the stored copy only when it holds other tokens than the
///   ones just refreshed away; otherwise it puts the new tokens on top of the stored copy
///   and saves again. If the save fails for any other reason (disk full, Vault down),
///   the store serves the new credential from memory and retries the save in the
///   background with backoff, holding the credential's lock, until it lands; later
///   refreshes start from the kept credential, never from the used refresh token in
///   storage. Each failed attempt is a warning, an audit event (`Save`, error outcome)
///   and an entry in [`unsaved`](Self::unsaved).
/// - A panic in a provider or storage during a refresh fails that refresh's callers
///   with an `Unexpected` error; the next call tries again.
/// - `auto_refresh` with an unknown or missing `provider_id` is a `Config` error naming it.
/// - Across processes: when the storage offers a credential lock
///   ([`CredentialStorage::lock`]), the refresh holds it (bounded wait, see
///   [`LockOptions`]), re-reads the credential, and makes no token request when another
///   process already refreshed it. A `RefreshRejected` is checked against storage first:
///   if another writer moved the version meanwhile, its credential is used.
///
/// Requires a Tokio runtime for refreshes (it spawns them); everything else is
/// executor-agnostic.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
/// use std::sync::Arc;
/// use hive_cred_core::{CredentialObject, CredentialStore, CredentialType, ExposeSecret, MemoryStorage};
///
/// let store = CredentialStore::builder().storage(Arc::new(MemoryStorage::new())).build()?;
/// let mut brave = CredentialObject::new("brave_search", CredentialType::ApiKey)?;
/// brave.set_key("api_key", "BSA-123", None)?;
/// store.save(brave).await?;
///
/// let creds = store.get("brave_search").await?;
/// let api_key = creds.get_key("api_key").expect("saved above");
/// // EXPOSE: the example shows the value a tool would use.
/// assert_eq!(api_key.expose_secret(), "BSA-123");
/// let header = store.resolve("X-Subscription-Token: {{brave_search.api_key}}").await?;
/// // EXPOSE: the example shows the value a tool would use.
/// assert_eq!(header.expose_secret(), "X-Subscription-Token: BSA-123");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CredentialStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut providers: Vec<&str> = self.inner.providers.keys().map(String::as_str).collect();
        providers.sort_unstable();
        f.debug_struct("CredentialStore")
            .field("storage", &self.inner.storage)
            .field("providers", &providers)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is one insert or
    // remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CredentialStore {
    /// A builder.
    pub fn builder() -> CredentialStoreBuilder {
        CredentialStoreBuilder::default()
    }

    /// The storage behind the store.
    pub fn storage(&self) -> &Arc<dyn CredentialStorage> {
        &self.inner.storage
    }

    /// The provider registered under `provider_id`.
    pub fn provider(&self, provider_id: &str) -> Option<&Arc<dyn CredentialProvider>> {
        self.inner.providers.get(provider_id)
    }

    /// The refresh policy.
    pub fn refresh_policy(&self) -> &RefreshPolicy {
        &self.inner.policy
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The options of the cross-process credential locks this store takes around
    /// refreshes (see [`crate::lock`]), for code that coordinates with those refreshes
    /// under the same lock (the runtime's MCP token store).
    pub fn lock_options(&self) -> &LockOptions {
        &self.inner.lock_options
    }

    /// Gets a credential, refreshing it first when it has `auto_refresh` and needs it.
    /// `NotFound` when absent; `InvalidInput` for a malformed id.
    pub async fn get(&self, id: &str) -> Result<Arc<CredentialObject>> {
        let id = &*crate::account::canonical_id(id)?;
        let hooks = !self.inner.hooks.is_empty();
        let started = hooks.then(Instant::now);
        if let Some(hit) = self.cached(id) {
            if let Some(started) = started {
                self.emit(id, None, AccessOperation::Get, AccessOutcome::Ok, started);
            }
            tracing::trace!(target: "hive_cred::store", id, "get: cache hit");
            return Ok(hit);
        }
        let started = started.unwrap_or_else(Instant::now);
        let result = self.fetch(id, false).await;
        self.finish(id, None, AccessOperation::Get, &result, started);
        result.map(|(c, _)| c).map_err(|e| self.actionable(id, e))
    }

    /// Gets the value of one key. `KeyNotFound` when the credential has no such key,
    /// `Expired` when the key has expired (and refresh, if any, did not help).
    pub async fn get_key(&self, id: &str, key: &str) -> Result<SecretString> {
        let id = &*crate::account::canonical_id(id)?;
        let started = Instant::now();
        let result = self.key_value(id, key).await;
        let outcome = match &result {
            Ok(_) => AccessOutcome::Ok,
            Err(e) => AccessOutcome::Error(e.kind()),
        };
        self.emit(id, Some(key), AccessOperation::GetKey, outcome, started);
        result.map_err(|e| self.actionable(id, e))
    }

    async fn key_value(&self, id: &str, key: &str) -> Result<SecretString> {
        let cred = match self.cached(id) {
            Some(c) => c,
            None => self.fetch(id, false).await?.0,
        };
        let k = cred.key(key).ok_or_else(|| Error::key_not_found(id, key))?;
        if k.is_expired_at(self.inner.clock.now()) {
            return Err(Error::new(ErrorKind::Expired, "credential key has expired")
                .with_context("id", id)
                .with_context("key", key));
        }
        Ok(k.value().clone())
    }

    /// Refreshes a credential now, whether or not it needs it (it must have a
    /// `provider_id` with a registered provider). Joins a refresh already in flight.
    pub async fn refresh(&self, id: &str) -> Result<Arc<CredentialObject>> {
        let id = &*crate::account::canonical_id(id)?;
        let started = Instant::now();
        let result = self.fetch(id, true).await;
        self.finish(id, None, AccessOperation::Refresh, &result, started);
        result.map(|(c, _)| c).map_err(|e| self.actionable(id, e))
    }

    /// Saves a credential (check-and-set on its version, see [`CredentialStorage`]) and
    /// returns the stored copy with its new version.
    pub async fn save(&self, credential: CredentialObject) -> Result<Arc<CredentialObject>> {
        let started = Instant::now();
        let id = credential.id().clone();
        self.bump_generation();
        let result = self.inner.storage.save(&credential).await;
        let kept = result.is_ok() && lock(&self.inner.unsaved).contains_key(&id);
        if kept {
            // Storage works again, and this save is newer than the kept refresh: settle
            // the kept copy against it now (merged on top or dropped, see `persist`); the
            // settled copy is what the cache then holds.
            self.save_unsaved(&id).await;
        }
        if !kept {
            self.invalidate(id.as_str());
        }
        lock(&self.inner.failures).remove(id.as_str());
        let result = result.map(|()| {
            let mut stored = credential;
            stored.set_version(stored.version() + 1);
            let stored = Arc::new(stored);
            if !kept {
                self.put_cache(&stored, self.generation());
            }
            stored
        });
        let outcome = match &result {
            Ok(_) => AccessOutcome::Ok,
            Err(e) => AccessOutcome::Error(e.kind()),
        };
        self.emit(id.as_str(), None, AccessOperation::Save, outcome, started);
        trace_result("save", id.as_str(), outcome, started);
        result
    }

    /// Creates or replaces a credential, whatever version is stored: reads the stored
    /// version, saves over it with check-and-set, and tries again when another writer
    /// got in between. Returns the stored copy.
    ///
    /// Unlike [`save`](Self::save), it overwrites concurrent changes, so do not use it
    /// for credentials a refresh may rotate concurrently: it could put back a refresh
    /// token the provider has already replaced. For those, get, modify and `save`.
    pub async fn upsert(&self, mut credential: CredentialObject) -> Result<Arc<CredentialObject>> {
        const ATTEMPTS: u32 = 16;
        let id = credential.id().clone();
        for _ in 0..ATTEMPTS {
            let stored = self
                .inner
                .storage
                .load(&id)
                .await
                .map_err(|e| e.with_context("id", &id).with_context("operation", "load"))?;
            credential.set_version(stored.map_or(0, |c| c.version()));
            match self.save(credential.clone()).await {
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                other => return other,
            }
        }
        Err(Error::conflict(
            &id,
            "the credential kept changing while it was replaced; try again",
        ))
    }

    /// Deletes a credential; `Ok(false)` when it did not exist. A refreshed copy still
    /// waiting to be saved is dropped with it.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let id = &*crate::account::canonical_id(id)?;
        let started = Instant::now();
        let cid = CredentialId::new(id)?;
        self.bump_generation();
        self.forget_unsaved(&cid);
        let result = self.inner.storage.delete(&cid).await;
        self.invalidate(id);
        lock(&self.inner.failures).remove(id);
        let outcome = match &result {
            Ok(_) => AccessOutcome::Ok,
            Err(e) => AccessOutcome::Error(e.kind()),
        };
        self.emit(id, None, AccessOperation::Delete, outcome, started);
        trace_result("delete", id, outcome, started);
        result
    }

    /// Lists every stored id.
    pub async fn list(&self) -> Result<Vec<CredentialId>> {
        self.inner.storage.list().await
    }

    /// Refreshes every stored credential with `auto_refresh` that is due
    /// ([`RefreshPolicy::refresh_due_at`], keep-alive included), as a `get` would, and
    /// returns how many were refreshed. For schedulers: an idle agent makes no `get`, so
    /// without this a provider that expires unused refresh tokens would expire them. A
    /// credential that fails is logged and audited (as any refresh) and does not stop
    /// the others; only a failing `list` is an error.
    pub async fn refresh_due(&self) -> Result<usize> {
        let mut refreshed = 0;
        for id in self.inner.storage.list().await? {
            // What a get would start from, without refreshing it yet.
            let current = match self.cached(id.as_str()) {
                Some(c) => c,
                None => match self.starting_point(&id).await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        tracing::warn!(target: "hive_cred::store", id = %id, kind = %e.kind(), "scheduled refresh could not load the credential");
                        continue;
                    }
                },
            };
            let before = current.last_refreshed();
            let result = if self.due(&current, self.inner.clock.now()) {
                self.fetch(id.as_str(), false).await.map(|(c, _)| c)
            } else {
                Ok(current)
            };
            match result {
                Ok(c) if c.last_refreshed() > before => refreshed += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "hive_cred::store", id = %id, kind = %e.kind(), "scheduled refresh failed");
                }
            }
        }
        Ok(refreshed)
    }

    /// Runs [`refresh_due`](Self::refresh_due) every `every` on a Tokio task until the
    /// returned handle is aborted. With [`RefreshPolicy::with_keep_alive`] this keeps
    /// refresh tokens of idle agents alive; without it, it refreshes tokens before they
    /// expire instead of on the next use.
    pub fn spawn_refresh_loop(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = store.refresh_due().await {
                    tracing::warn!(target: "hive_cred::store", kind = %e.kind(), "scheduled refresh could not list credentials");
                }
            }
        })
    }

    /// Drops one credential from the cache.
    pub fn invalidate(&self, id: &str) {
        let mut cache = self.inner.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.remove(id);
    }

    /// Drops every cached credential.
    pub fn clear_cache(&self) {
        self.bump_generation();
        self.inner
            .cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `credential` is due for an automatic refresh at `now`.
    fn due(&self, credential: &CredentialObject, now: DateTime<Utc>) -> bool {
        credential.auto_refresh()
            && self
                .inner
                .policy
                .refresh_due_at(credential)
                .is_some_and(|at| at <= now)
    }

    /// The cached credential, when it is neither past its TTL nor due for refresh.
    fn cached(&self, id: &str) -> Option<Arc<CredentialObject>> {
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(id)?;
        if self.inner.clock.now_unix_nanos() < entry.stale_at {
            Some(entry.credential.clone())
        } else {
            None
        }
    }

    fn put_cache(&self, credential: &Arc<CredentialObject>, generation: u64) {
        if self.inner.cache_ttl <= chrono::Duration::zero() {
            return;
        }
        let now = self.inner.clock.now();
        let mut stale_at = now
            .checked_add_signed(self.inner.cache_ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if credential.auto_refresh()
            && let Some(due) = self.inner.policy.refresh_due_at(credential)
        {
            stale_at = stale_at.min(due);
        }
        let mut cache = self.inner.cache.write().unwrap_or_else(|p| p.into_inner());
        if self.generation() != generation {
            return;
        }
        cache.insert(
            credential.id().clone(),
            CacheEntry {
                credential: credential.clone(),
                stale_at: crate::clock::to_unix_nanos(stale_at),
            },
        );
    }

    /// Loads (and refreshes if needed) through the single-flight map. The bool tells
    /// whether the result is a stale credential returned after a failed refresh.
    ///
    /// A flight is a [`tokio::sync::OnceCell`]: the first caller runs the load on its
    /// own task, the others wait for its result, and if that caller gives up (its
    /// future is dropped) the next waiter runs the load instead (`get_or_init`'s
    /// guarantee), so nobody waits on an abandoned flight. A cold get thus costs the
    /// backend's load and little more; only the refresh itself runs on a task of its
    /// own (see `refresh::spawn_refresh`), so a caller that gives up never abandons a
    /// token the provider has rotated. A load removes its flight's map entry when it
    /// ends, however it ends ([`FlightEntry`]); a panic becomes an error for every
    /// waiter.
    async fn fetch(&self, id: &str, force: bool) -> Result<(Arc<CredentialObject>, bool)> {
        let cid = CredentialId::new(id)?;
        let (seq, flight) = lock(&self.inner.flights)
            .entry(cid.clone())
            .or_insert_with(|| {
                let seq = self.inner.flight_seq.fetch_add(1, Ordering::Relaxed);
                (seq, Arc::new(tokio::sync::OnceCell::new()))
            })
            .clone();
        let result = flight
            .get_or_init(|| async {
                let _entry = FlightEntry {
                    store: self.clone(),
                    id: cid.clone(),
                    seq,
                };
                std::panic::AssertUnwindSafe(self.load_and_refresh(&cid, force))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(panicked(&cid)))
            })
            .await
            .clone()?;
        // A stale result is marked by the failure map still holding a failure for its version.
        let stale = self.due(&result, self.inner.clock.now())
            && lock(&self.inner.failures).contains_key(&cid);
        Ok((result, stale))
    }

    fn emit_refresh(&self, id: &CredentialId, outcome: AccessOutcome, elapsed: Duration) {
        for h in &self.inner.hooks {
            h.on_access(
                &AccessEvent::new(
                    self.inner.clock.now(),
                    id.as_str(),
                    None,
                    AccessOperation::Refresh,
                    outcome,
                    elapsed,
                )
                .with_principal(self.inner.principal.as_deref()),
            );
        }
    }

    fn emit(
        &self,
        id: &str,
        key: Option<&str>,
        op: AccessOperation,
        outcome: AccessOutcome,
        started: Instant,
    ) {
        if self.inner.hooks.is_empty() {
            return;
        }
        let event = AccessEvent::new(
            self.inner.clock.now(),
            id,
            key,
            op,
            outcome,
            started.elapsed(),
        )
        .with_principal(self.inner.principal.as_deref());
        for h in &self.inner.hooks {
            h.on_access(&event);
        }
    }

    fn finish(
        &self,
        id: &str,
        key: Option<&str>,
        op: AccessOperation,
        result: &Result<(Arc<CredentialObject>, bool)>,
        started: Instant,
    ) {
        let outcome = match result {
            Ok((_, false)) => AccessOutcome::Ok,
            Ok((_, true)) => AccessOutcome::Stale,
            Err(e) => AccessOutcome::Error(e.kind()),
        };
        self.emit(id, key, op, outcome, started);
        trace_result(op.as_str(), id, outcome, started);
    }
}

/// The error every caller of a flight or refresh that panicked gets.
fn panicked(id: &CredentialId) -> Error {
    tracing::error!(target: "hive_cred::store", id = %id, "a credential load or refresh panicked; the next call tries again");
    Error::new(
        ErrorKind::Unexpected,
        "the credential's refresh panicked (in a provider or storage); the next call tries again",
    )
    .with_context("id", id)
}

/// Removes a flight's entry from the map when the flight ends, however it ends.
struct FlightEntry {
    store: CredentialStore,
    id: CredentialId,
    seq: u64,
}

impl Drop for FlightEntry {
    fn drop(&mut self) {
        let mut flights = lock(&self.store.inner.flights);
        if flights
            .get(&self.id)
            .is_some_and(|(seq, _)| *seq == self.seq)
        {
            flights.remove(&self.id);
        }
    }
}

fn trace_result(op: &str, id: &str, outcome: AccessOutcome, started: Instant) {
    let elapsed_us = started.elapsed().as_micros() as u64;
    match outcome {
        AccessOutcome::Ok => {
            tracing::debug!(target: "hive_cred::store", op, id, outcome = "ok", elapsed_us)
        }
        AccessOutcome::Stale => {
            tracing::warn!(target: "hive_cred::store", op, id, outcome = "stale", elapsed_us, "served the old credential after a failed refresh")
        }
        AccessOutcome::Error(kind) => {
            tracing::debug!(target: "hive_cred::store", op, id, outcome = "error", kind = %kind, elapsed_us)
        }
    }
}

#[cfg(test)]
mod tests;
