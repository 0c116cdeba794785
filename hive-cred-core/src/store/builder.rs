//! [`RefreshPolicy`] and [`CredentialStoreBuilder`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{CredentialStore, DEFAULT_CACHE_TTL, FastMap, Inner};
use crate::clock::{Clock, SystemClock};
use crate::credential::{CredentialObject, DEFAULT_REFRESH_WINDOW};
use crate::error::{Error, Result};
use crate::hook::AccessHook;
use crate::lock::LockOptions;
use crate::provider::CredentialProvider;
use crate::storage::CredentialStorage;

/// What a lease lock's TTL must exceed beyond the provider's timeout and the storage's
/// load and save: scheduling, clock skew between hosts, the lock's own writes.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// When and how the store refreshes credentials.
///
/// # Default
/// - `window`: 5 minutes. A key expiring within it "needs refresh". Inside the window a
///   failed refresh still returns the valid old credential; past expiry it is an error.
///   The window that applies is at most half the token's lifetime
///   ([`CredentialObject::effective_window`]), so short-lived tokens are cached too.
/// - `provider_windows`: none; a window per `provider_id` replaces `window` for its
///   credentials ([`with_provider_window`](Self::with_provider_window)).
/// - `min_interval`: 5 s. A still-valid credential is not refreshed again sooner than
///   this after its last refresh (an expired one is).
/// - `keep_alive`: off. When set, a credential whose last refresh is older than this is
///   refreshed at its next use even if its token is valid, for providers that expire
///   unused refresh tokens.
/// - `backoff_initial`: 1 s, doubling per consecutive temporary failure,
///   `backoff_max`: 5 minutes, each delay jittered by ±20 %.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// The advisory refresh window before expiry.
    pub window: chrono::Duration,
    /// Windows for the credentials of one `provider_id`, replacing `window`.
    pub provider_windows: BTreeMap<String, chrono::Duration>,
    /// The shortest time between two automatic refreshes of a still-valid credential.
    pub min_interval: chrono::Duration,
    /// Refresh a credential whose last refresh is older than this, valid or not.
    pub keep_alive: Option<chrono::Duration>,
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
            provider_windows: BTreeMap::new(),
            min_interval: chrono::Duration::seconds(5),
            keep_alive: None,
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

    /// Sets the window of the credentials whose `provider_id` is `provider`.
    #[must_use]
    pub fn with_provider_window(
        mut self,
        provider: impl Into<String>,
        window: chrono::Duration,
    ) -> Self {
        self.provider_windows.insert(provider.into(), window);
        self
    }

    /// Sets the shortest time between two automatic refreshes of a still-valid
    /// credential (negative counts as zero).
    #[must_use]
    pub fn with_min_interval(mut self, interval: chrono::Duration) -> Self {
        self.min_interval = interval.max(chrono::Duration::zero());
        self
    }

    /// Refreshes credentials whose last refresh is older than `every`, even with a valid
    /// token (`None`: off, the default).
    #[must_use]
    pub fn with_keep_alive(mut self, every: Option<chrono::Duration>) -> Self {
        self.keep_alive = every;
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

    /// The window for credentials of `provider_id`.
    pub fn window_for(&self, provider_id: Option<&str>) -> chrono::Duration {
        provider_id
            .and_then(|p| self.provider_windows.get(p))
            .copied()
            .unwrap_or(self.window)
    }

    /// When `credential` becomes due for an automatic refresh (`None`: never; it has no
    /// expiry and no keep-alive applies). The one rule the store uses for caching,
    /// refreshing and "another process already refreshed":
    /// - its earliest expiry minus the [effective window](CredentialObject::effective_window)
    ///   of its provider,
    /// - but not before `last_refreshed + min_interval` (unless that is past expiry),
    /// - and, with a keep-alive, no later than `last_refreshed + keep_alive`.
    ///
    /// It does not look at `auto_refresh`.
    pub fn refresh_due_at(&self, credential: &CredentialObject) -> Option<DateTime<Utc>> {
        let last = credential.last_refreshed();
        let by_expiry = credential.earliest_expiry().map(|expiry| {
            let window = credential.effective_window(self.window_for(credential.provider_id()));
            let at = expiry - window;
            match last.and_then(|l| l.checked_add_signed(self.min_interval)) {
                Some(floor) if floor > at => floor.min(expiry),
                _ => at,
            }
        });
        let by_keep_alive = self
            .keep_alive
            .zip(last)
            .and_then(|(every, l)| l.checked_add_signed(every));
        match (by_expiry, by_keep_alive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The delay before attempt `failures + 1`, jittered.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
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

    /// Builds the store. `Config` error without a storage, with two providers of one
    /// id, or with a lease lock ([`StorageCapabilities::lease_lock`](crate::StorageCapabilities))
    /// whose TTL does not exceed the slowest provider's timeout + the storage's load and
    /// save timeouts + [`LEASE_MARGIN`] (the lease is also renewed while held; this bounds
    /// what one stalled request can outlive).
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
        check_lease(&*storage, &providers, &self.lock_options)?;
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
                unsaved: Mutex::new(HashMap::new()),
                flight_seq: std::sync::atomic::AtomicU64::new(0),
                generation: std::sync::atomic::AtomicU64::new(0),
                principal: None,
            }),
        })
    }
}

/// Refuses a lease TTL that one refresh can outlive.
fn check_lease(
    storage: &dyn CredentialStorage,
    providers: &HashMap<String, Arc<dyn CredentialProvider>>,
    options: &LockOptions,
) -> Result<()> {
    let caps = storage.capabilities();
    if !(caps.cross_process_lock && caps.lease_lock) {
        return Ok(());
    }
    let (slowest, provider_timeout) = providers
        .values()
        .filter_map(|p| p.request_timeout().map(|t| (p.provider_id(), t)))
        .max_by_key(|(_, t)| *t)
        .unwrap_or(("", Duration::ZERO));
    let storage_timeout = caps.save_timeout.unwrap_or(Duration::ZERO);
    let needed = provider_timeout + storage_timeout * 2 + LEASE_MARGIN;
    if options.ttl <= needed {
        let mut e = Error::config(format!(
            "the lock TTL ({:?}) must exceed the provider's timeout ({provider_timeout:?}) + the storage's load and save timeouts (2 x {storage_timeout:?}) + {LEASE_MARGIN:?}: raise LockOptions::ttl above {needed:?} or lower the timeouts",
            options.ttl
        ))
        .with_context("backend", storage.backend_name());
        if !slowest.is_empty() {
            e = e.with_context("provider", slowest);
        }
        return Err(e);
    }
    Ok(())
}
