//! [`CredentialStore`]: the cached, auto-refreshing front of a storage.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::{ExposeSecret, SecretString};

use crate::clock::{Clock, SystemClock};
use crate::credential::validate_key_name;
use crate::credential::{CredentialObject, DEFAULT_REFRESH_WINDOW};
use crate::error::{Error, ErrorKind, Result};
use crate::hook::{AccessEvent, AccessHook, AccessOperation, AccessOutcome};
use crate::id::CredentialId;
use crate::lock::LockOptions;
use crate::provider::CredentialProvider;
use crate::storage::CredentialStorage;
use crate::template::{Segment, bad_placeholder, parse_placeholder, segments_unchecked};

/// The default cache TTL: 300 s.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

/// When and how the store refreshes credentials.
///
/// # Default
/// - `window`: 5 minutes. A key expiring within it "needs refresh". Inside the window a
///   failed refresh still returns the valid old credential; past expiry it is an error.
/// - `backoff_initial`: 1 s, doubling per consecutive temporary failure,
///   `backoff_max`: 5 minutes, each delay jittered by ±20 %.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// The advisory refresh window before expiry.
    pub window: chrono::Duration,
    /// The first backoff delay after a temporary refresh failure.
    pub backoff_initial: Duration,
    /// The longest backoff delay.
    pub backoff_max: Duration,
    /// Relative jitter applied to each delay, `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            window: DEFAULT_REFRESH_WINDOW,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RefreshPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the advisory window.
    #[must_use]
    pub fn with_window(mut self, window: chrono::Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the backoff bounds.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Sets the jitter (clamped to `0.0..=1.0`).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// The delay before attempt `failures + 1`, jittered.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .backoff_initial
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
        let base = exp.min(self.backoff_max);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = 1.0 + self.jitter * (rand::random::<f64>() * 2.0 - 1.0);
        base.mul_f64(factor.max(0.0)).min(self.backoff_max)
    }
}

struct CacheEntry {
    credential: Arc<CredentialObject>,
    /// The cached value must be re-read at or after this instant (TTL or refresh due), in
    /// Unix nanoseconds so a cache hit compares two integers.
    stale_at: i64,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the store remembers of a failed refresh.
#[derive(Clone)]
struct Failure {
    /// The stored version the failure applies to: a new version (another writer, a
    /// re-authorisation) clears it.
    version: u64,
    /// `None`: a permanent failure (dead grant), not retried for this version.
    retry_at: Option<DateTime<Utc>>,
    failures: u32,
    error: Error,
}

/// The result of waiting for a credential's lock.
enum Acquired {
    /// This process holds the lock (`None`: the storage has no cross-process locks).
    Held(Option<crate::lock::CredentialLock>),
    /// Another process saved a fresh credential while this one waited.
    RefreshedElsewhere(CredentialObject),
}

type Flight = Shared<BoxFuture<'static, Result<Arc<CredentialObject>>>>;

struct Inner {
    storage: Arc<dyn CredentialStorage>,
    providers: HashMap<String, Arc<dyn CredentialProvider>>,
    policy: RefreshPolicy,
    cache_ttl: chrono::Duration,
    clock: Arc<dyn Clock>,
    hooks: Vec<Arc<dyn AccessHook>>,
    lock_options: LockOptions,
    cache: RwLock<FastMap<CredentialId, CacheEntry>>,
    flights: Mutex<HashMap<CredentialId, Flight>>,
    failures: Mutex<HashMap<CredentialId, Failure>>,
    /// Bumped by every save and delete; a fetch that started before a write does not
    /// overwrite the cache with what it read.
    generation: std::sync::atomic::AtomicU64,
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
/// - If saving a refreshed credential conflicts (another process wrote first), the store
///   re-reads it and uses the other writer's credential when it is fresh.
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

/// Builder for [`CredentialStore`].
#[derive(Default)]
#[must_use]
pub struct CredentialStoreBuilder {
    storage: Option<Arc<dyn CredentialStorage>>,
    providers: Vec<Arc<dyn CredentialProvider>>,
    policy: RefreshPolicy,
    cache_ttl: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    hooks: Vec<Arc<dyn AccessHook>>,
    lock_options: LockOptions,
}

impl fmt::Debug for CredentialStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStoreBuilder")
            .field("storage", &self.storage)
            .field("providers", &self.providers.len())
            .finish_non_exhaustive()
    }
}

impl CredentialStoreBuilder {
    /// The storage (required).
    pub fn storage(mut self, storage: Arc<dyn CredentialStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Registers a provider under its [`provider_id`](CredentialProvider::provider_id).
    pub fn provider(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// The refresh policy. Default: [`RefreshPolicy::default`].
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a credential is served from cache before storage is read again.
    /// Default: 300 s. `Duration::ZERO` disables the cache.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// The clock. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How long cross-process refresh locks live and how long to wait for one.
    /// Default: [`LockOptions::default`].
    pub fn lock_options(mut self, options: LockOptions) -> Self {
        self.lock_options = options;
        self
    }

    /// Adds an access hook (audit trail).
    pub fn access_hook(mut self, hook: Arc<dyn AccessHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Builds the store: `Config` error without a storage or with two providers of one id.
    pub fn build(self) -> Result<CredentialStore> {
        let storage = self.storage.ok_or_else(|| {
            Error::config("CredentialStore needs a storage: call .storage(...) on the builder")
        })?;
        let mut providers = HashMap::new();
        for p in self.providers {
            let pid = p.provider_id().to_string();
            if providers.insert(pid.clone(), p).is_some() {
                return Err(
                    Error::config("two providers registered with the same provider_id")
                        .with_context("provider", pid),
                );
            }
        }
        let ttl = self.cache_ttl.unwrap_or(DEFAULT_CACHE_TTL);
        let cache_ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        Ok(CredentialStore {
            inner: Arc::new(Inner {
                storage,
                providers,
                policy: self.policy,
                cache_ttl,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                hooks: self.hooks,
                lock_options: self.lock_options,
                cache: RwLock::new(FastMap::default()),
                flights: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

    /// Gets a credential, refreshing it first when it has `auto_refresh` and needs it.
    /// `NotFound` when absent; `InvalidInput` for a malformed id.
    pub async fn get(&self, id: &str) -> Result<Arc<CredentialObject>> {
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
        result.map(|(c, _)| c)
    }

    /// Gets the value of one key. `KeyNotFound` when the credential has no such key,
    /// `Expired` when the key has expired (and refresh, if any, did not help).
    pub async fn get_key(&self, id: &str, key: &str) -> Result<SecretString> {
        let started = Instant::now();
        let result = self.key_value(id, key).await;
        let outcome = match &result {
            Ok(_) => AccessOutcome::Ok,
            Err(e) => AccessOutcome::Error(e.kind()),
        };
        self.emit(id, Some(key), AccessOperation::GetKey, outcome, started);
        result
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
        let started = Instant::now();
        let result = self.fetch(id, true).await;
        self.finish(id, None, AccessOperation::Refresh, &result, started);
        result.map(|(c, _)| c)
    }

    /// Saves a credential (check-and-set on its version, see [`CredentialStorage`]) and
    /// returns the stored copy with its new version.
    pub async fn save(&self, credential: CredentialObject) -> Result<Arc<CredentialObject>> {
        let started = Instant::now();
        let id = credential.id().clone();
        self.bump_generation();
        let result = self.inner.storage.save(&credential).await;
        self.invalidate(id.as_str());
        lock(&self.inner.failures).remove(id.as_str());
        let result = result.map(|()| {
            let mut stored = credential;
            stored.set_version(stored.version() + 1);
            let stored = Arc::new(stored);
            self.put_cache(&stored, self.generation());
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

    /// Deletes a credential; `Ok(false)` when it did not exist.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let started = Instant::now();
        let cid = CredentialId::new(id)?;
        self.bump_generation();
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

    /// Fills `{{id.key}}` and `{{id}}` placeholders (see [`Template`](crate::Template)).
    /// Unknown ids or keys are errors naming them.
    pub async fn resolve(&self, template: &str) -> Result<SecretString> {
        // Pass 1 looks every placeholder up and sizes the output; pass 2 writes it into a
        // buffer of exactly that size. Besides saving reallocations, this means the
        // secret is never copied by a growing buffer into freed, un-zeroized memory.
        // Placeholders are validated only when a lookup misses: a cached id is valid.
        let mut first: Option<Arc<CredentialObject>> = None;
        let mut rest: Vec<Arc<CredentialObject>> = Vec::new();
        let mut len = 0usize;
        for seg in segments_unchecked(template) {
            match seg? {
                Segment::Literal(s) => len += s.len(),
                Segment::Placeholder { id, key } => {
                    let started = (!self.inner.hooks.is_empty()).then(Instant::now);
                    let body = || match key {
                        Some(k) => format!("{id}.{k}"),
                        None => id.to_string(),
                    };
                    let cred = match self.cached(id) {
                        Some(c) => c,
                        None => {
                            parse_placeholder(&body())?;
                            self.fetch(id, false).await?.0
                        }
                    };
                    let value = match key {
                        Some(k) => cred.get_key(k).ok_or_else(|| {
                            if validate_key_name(k).is_err() {
                                bad_placeholder(&body())
                            } else {
                                Error::key_not_found(id, k)
                            }
                        })?,
                        None => single_value(&cred, id)?,
                    };
                    // EXPOSE: only the length is read here.
                    len += value.expose_secret().len();
                    if let Some(started) = started {
                        self.emit(
                            id,
                            key,
                            AccessOperation::Resolve,
                            AccessOutcome::Ok,
                            started,
                        );
                    }
                    if first.is_none() {
                        first = Some(cred);
                    } else {
                        rest.push(cred);
                    }
                }
            }
        }
        let mut out = String::with_capacity(len);
        let mut creds = first.into_iter().chain(rest);
        for seg in segments_unchecked(template) {
            match seg? {
                Segment::Literal(s) => out.push_str(s),
                Segment::Placeholder { id, key } => {
                    let cred = creds.next().ok_or_else(|| {
                        Error::new(ErrorKind::Unexpected, "template changed between passes")
                    })?;
                    let value = match key {
                        Some(k) => cred.get_key(k).ok_or_else(|| Error::key_not_found(id, k))?,
                        None => single_value(&cred, id)?,
                    };
                    // EXPOSE: the resolved template is returned as a SecretString.
                    out.push_str(value.expose_secret());
                }
            }
        }
        debug_assert_eq!(out.len(), out.capacity());
        Ok(SecretString::from(out))
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
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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
        if credential.auto_refresh() {
            if let Some(exp) = credential.earliest_expiry() {
                stale_at = stale_at.min(exp - self.inner.policy.window);
            }
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
    async fn fetch(&self, id: &str, force: bool) -> Result<(Arc<CredentialObject>, bool)> {
        let cid = CredentialId::new(id)?;
        let flight = {
            let mut flights = lock(&self.inner.flights);
            if let Some(f) = flights.get(&cid) {
                f.clone()
            } else {
                let store = self.clone();
                let key = cid.clone();
                let work = async move {
                    let result = store.load_and_refresh(&key, force).await;
                    lock(&store.inner.flights).remove(&key);
                    result
                };
                let fut: BoxFuture<'static, Result<Arc<CredentialObject>>> =
                    match tokio::runtime::Handle::try_current() {
                        Ok(handle) => {
                            let task = handle.spawn(work);
                            async move {
                                task.await.unwrap_or_else(|join| {
                                    Err(Error::new(
                                        ErrorKind::Unexpected,
                                        if join.is_panic() {
                                            "credential refresh task panicked"
                                        } else {
                                            "credential refresh task was cancelled"
                                        },
                                    ))
                                })
                            }
                            .boxed()
                        }
                        Err(_) => work.boxed(),
                    };
                let shared = fut.shared();
                flights.insert(cid.clone(), shared.clone());
                shared
            }
        };
        let result = flight.await?;
        // A stale result is marked by the failure map still holding a failure for its version.
        let stale = result.auto_refresh()
            && result.needs_refresh_at(self.inner.clock.now(), self.inner.policy.window)
            && lock(&self.inner.failures).contains_key(&cid);
        Ok((result, stale))
    }

    async fn load_and_refresh(
        &self,
        id: &CredentialId,
        force: bool,
    ) -> Result<Arc<CredentialObject>> {
        let generation = self.generation();
        let started = Instant::now();
        let loaded = self
            .inner
            .storage
            .load(id)
            .await
            .map_err(|e| e.with_context("id", id).with_context("operation", "load"))?
            .ok_or_else(|| {
                Error::not_found(id).with_context("backend", self.inner.storage.backend_name())
            })?;
        tracing::debug!(
            target: "hive_cred::store",
            id = %id,
            version = loaded.version(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "loaded credential from storage"
        );
        let now = self.inner.clock.now();
        let wants_refresh = force
            || (loaded.auto_refresh() && loaded.needs_refresh_at(now, self.inner.policy.window));
        if !wants_refresh {
            let c = Arc::new(loaded);
            self.put_cache(&c, generation);
            return Ok(c);
        }
        self.refresh_loaded(loaded, force, generation).await
    }

    fn provider_for(&self, c: &CredentialObject) -> Result<Arc<dyn CredentialProvider>> {
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

    async fn refresh_loaded(
        &self,
        loaded: CredentialObject,
        force: bool,
        generation: u64,
    ) -> Result<Arc<CredentialObject>> {
        let id = loaded.id().clone();
        let provider = self.provider_for(&loaded)?;
        let now = self.inner.clock.now();
        let expired = loaded.is_expired_at(now);

        // Honour earlier failures for this stored version.
        if !force {
            let previous = lock(&self.inner.failures).get(&id).cloned();
            if let Some(f) = previous.filter(|f| f.version == loaded.version()) {
                let waiting = f.retry_at.is_none_or(|at| now < at);
                if waiting {
                    if !expired {
                        return Ok(Arc::new(loaded));
                    }
                    return Err(f.error.clone());
                }
            }
        }

        // Cross-process coordination: hold the credential's lock around the refresh.
        let held = match self.acquire_lock(&id, loaded.version(), force).await? {
            Acquired::Held(held) => held,
            Acquired::RefreshedElsewhere(current) => {
                tracing::debug!(target: "hive_cred::store", id = %id, version = current.version(), "another process refreshed the credential while this one waited; no token request");
                let current = Arc::new(current);
                self.put_cache(&current, generation);
                return Ok(current);
            }
        };
        let result = if held.is_some() {
            // Another process may have refreshed while this one waited: re-read.
            match self.inner.storage.load(&id).await {
                Ok(Some(current)) => {
                    let now = self.inner.clock.now();
                    if !force
                        && current.version() != loaded.version()
                        && !current.needs_refresh_at(now, self.inner.policy.window)
                    {
                        tracing::debug!(target: "hive_cred::store", id = %id, version = current.version(), "another process refreshed the credential; no token request");
                        let current = Arc::new(current);
                        self.put_cache(&current, generation);
                        Ok(current)
                    } else {
                        self.refresh_with(current, &provider, force, generation)
                            .await
                    }
                }
                Ok(None) => Err(Error::not_found(&id)),
                Err(e) => Err(e),
            }
        } else {
            self.refresh_with(loaded, &provider, force, generation)
                .await
        };
        if let Some(held) = held {
            if let Err(e) = held.release().await {
                tracing::warn!(target: "hive_cred::store", id = %id, kind = %e.kind(), "could not release the credential lock; it expires at its TTL");
            }
        }
        result
    }

    /// Takes the storage's lock for `id`. While another process holds it, re-reads the
    /// credential between attempts: once the holder has saved a fresh version, a waiter
    /// uses it without ever taking the lock, so waiting processes do not queue behind
    /// each other after the one refresh. Bounded by `LockOptions::wait`; a failing read
    /// (backend down) ends the wait at once.
    async fn acquire_lock(
        &self,
        id: &CredentialId,
        read_version: u64,
        force: bool,
    ) -> Result<Acquired> {
        let options = &self.inner.lock_options;
        let attempt = options.clone().with_wait(Duration::ZERO);
        let deadline = Instant::now() + options.wait;
        let mut pause = Duration::from_millis(5);
        loop {
            let busy = match self.inner.storage.lock(id, &attempt).await {
                Ok(held) => return Ok(Acquired::Held(held)),
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
                let current = self
                    .inner
                    .storage
                    .load(id)
                    .await
                    .map_err(|e| e.with_context("id", id).with_context("operation", "load"))?
                    .ok_or_else(|| Error::not_found(id))?;
                if current.version() != read_version
                    && !current.needs_refresh_at(self.inner.clock.now(), self.inner.policy.window)
                {
                    return Ok(Acquired::RefreshedElsewhere(current));
                }
            }
            let jitter = 0.75 + rand::random::<f64>() * 0.5;
            tokio::time::sleep(pause.mul_f64(jitter).min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Calls the provider, persists the result, records failures.
    async fn refresh_with(
        &self,
        loaded: CredentialObject,
        provider: &Arc<dyn CredentialProvider>,
        force: bool,
        generation: u64,
    ) -> Result<Arc<CredentialObject>> {
        let id = loaded.id().clone();
        let now = self.inner.clock.now();
        let expired = loaded.is_expired_at(now);
        let started = Instant::now();
        let refreshed = provider.refresh(&loaded).await;
        let elapsed = started.elapsed();
        match refreshed {
            Ok(mut fresh) => {
                if fresh.id() != &id {
                    return Err(Error::new(
                        ErrorKind::Unexpected,
                        "provider returned a credential with another id",
                    )
                    .with_context("id", &id)
                    .with_context("provider", provider.provider_id()));
                }
                fresh.set_version(loaded.version());
                match self.inner.storage.save(&fresh).await {
                    Ok(()) => {
                        fresh.set_version(loaded.version() + 1);
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
                        let fresh = Arc::new(fresh);
                        self.put_cache(&fresh, generation);
                        Ok(fresh)
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        // Another writer got there first. Use its credential if it is fresh.
                        let current = self
                            .inner
                            .storage
                            .load(&id)
                            .await?
                            .ok_or_else(|| Error::not_found(&id))?;
                        if !current
                            .needs_refresh_at(self.inner.clock.now(), self.inner.policy.window)
                        {
                            tracing::info!(target: "hive_cred::store", id = %id, "refresh raced with another writer; using its credential");
                            let current = Arc::new(current);
                            self.put_cache(&current, generation);
                            Ok(current)
                        } else {
                            Err(e.with_message_prefix("refreshed credential could not be saved"))
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            target: "hive_cred::store",
                            id = %id,
                            kind = %e.kind(),
                            "refreshed credential could not be saved; the new tokens are not used"
                        );
                        Err(e
                            .with_message_prefix("credential was refreshed but could not be saved")
                            .with_context("id", &id))
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::RefreshRejected && !force => {
                // Before declaring the grant dead: did another process win a race and
                // rotate the refresh token under us? Then adopt its credential.
                if let Ok(Some(current)) = self.inner.storage.load(&id).await {
                    if current.version() != loaded.version()
                        && !current
                            .needs_refresh_at(self.inner.clock.now(), self.inner.policy.window)
                    {
                        tracing::info!(target: "hive_cred::store", id = %id, "refresh rejected but another writer refreshed meanwhile; using its credential");
                        let current = Arc::new(current);
                        self.put_cache(&current, generation);
                        return Ok(current);
                    }
                }
                self.record_failure(loaded, provider, e, expired, force, now, elapsed)
            }
            Err(e) => self.record_failure(loaded, provider, e, expired, force, now, elapsed),
        }
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

    fn emit_refresh(&self, id: &CredentialId, outcome: AccessOutcome, elapsed: Duration) {
        for h in &self.inner.hooks {
            h.on_access(&AccessEvent::new(
                self.inner.clock.now(),
                id.as_str(),
                None,
                AccessOperation::Refresh,
                outcome,
                elapsed,
            ));
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
        );
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

/// The value of a credential's only key, for `{{id}}` placeholders.
fn single_value<'c>(cred: &'c CredentialObject, id: &str) -> Result<&'c SecretString> {
    let mut keys = cred.keys();
    match (keys.next(), keys.next()) {
        (Some(only), None) => Ok(only.value()),
        _ => Err(Error::invalid_input(format!(
            "placeholder {{{{{id}}}}} needs a key name: the credential has {} keys; write {{{{{id}.KEY}}}}",
            cred.keys().len()
        ))
        .with_context("id", id)),
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
#[path = "store_tests.rs"]
mod tests;
