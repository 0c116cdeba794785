//! Orchestration tests of `CredentialStore`: mocks for the provider, real MemoryStorage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use secrecy::ExposeSecret;

use super::*;
use crate::{
    CredentialType, ErrorKind, ManualClock, MemoryStorage, MockCredentialProvider,
    MockCredentialStorage,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
}

fn oauth(id: &str, token: &str, expires_at: DateTime<Utc>) -> CredentialObject {
    let mut c = CredentialObject::builder(id, CredentialType::OAuth2)
        .provider_id("oauth2_provider")
        .auto_refresh(true)
        .build()
        .unwrap();
    c.set_key("access_token", token, Some(expires_at)).unwrap();
    c.set_key("refresh_token", "rt-1", None).unwrap();
    c
}

/// A refreshed copy: new token valid for an hour after `now`.
fn refreshed(c: &CredentialObject, token: &str, now: DateTime<Utc>) -> CredentialObject {
    let mut n = c.clone();
    n.set_key(
        "access_token",
        token,
        Some(now + chrono::Duration::hours(1)),
    )
    .unwrap();
    n.set_last_refreshed(now);
    n
}

struct Fixture {
    store: CredentialStore,
    storage: Arc<MemoryStorage>,
    clock: Arc<ManualClock>,
}

fn fixture(provider: Option<Arc<dyn CredentialProvider>>, policy: RefreshPolicy) -> Fixture {
    let storage = Arc::new(MemoryStorage::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let mut b = CredentialStore::builder()
        .storage(storage.clone())
        .clock(clock.clone())
        .refresh_policy(policy);
    if let Some(p) = provider {
        b = b.provider(p);
    }
    Fixture {
        store: b.build().unwrap(),
        storage,
        clock,
    }
}

fn mock_provider() -> MockCredentialProvider {
    let mut p = MockCredentialProvider::new();
    p.expect_provider_id()
        .return_const("oauth2_provider".to_string());
    p
}

fn no_jitter() -> RefreshPolicy {
    RefreshPolicy::default().with_jitter(0.0)
}

#[tokio::test]
async fn builder_requires_storage_and_unique_providers() {
    let err = CredentialStore::builder().build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .provider(Arc::new(mock_provider()))
        .provider(Arc::new(mock_provider()))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.context_value("provider"), Some("oauth2_provider"));
}

#[tokio::test]
async fn fresh_credential_is_not_refreshed() {
    let mut p = mock_provider();
    p.expect_refresh().never();
    let f = fixture(Some(Arc::new(p)), no_jitter());
    f.store
        .save(oauth("gh", "tok", t0() + chrono::Duration::hours(2)))
        .await
        .unwrap();
    let got = f.store.get("gh").await.unwrap();
    assert_eq!(got.get_key("access_token").unwrap().expose_secret(), "tok"); // EXPOSE: the test compares the secret value.
    assert_eq!(
        f.store
            .get_key("gh", "access_token")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "tok"
    );
}

#[tokio::test]
async fn expired_credential_is_refreshed_persisted_then_returned() {
    let mut p = mock_provider();
    p.expect_refresh()
        .times(1)
        .returning(|c| Ok(refreshed(c, "new-token", t0())));
    let f = fixture(Some(Arc::new(p)), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::minutes(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let got = f.store.get("gh").await.unwrap();
    assert_eq!(
        got.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "new-token"
    );
    assert_eq!(got.version(), 2);
    let stored = f
        .storage
        .load(&"gh".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "new-token"
    );
    assert_eq!(stored.version(), 2);
    assert_eq!(stored.last_refreshed(), Some(t0()));
    // Served from cache now: the mock would panic on a second refresh.
    assert_eq!(f.store.get("gh").await.unwrap().version(), 2);
}

#[tokio::test]
async fn credential_without_auto_refresh_is_returned_even_if_expired() {
    let mut p = mock_provider();
    p.expect_refresh().never();
    let f = fixture(Some(Arc::new(p)), no_jitter());
    let mut c = oauth("gh", "old", t0() - chrono::Duration::minutes(1));
    c.set_auto_refresh(false);
    f.store.save(c).await.unwrap();
    assert!(f.store.get("gh").await.unwrap().is_expired_at(t0()));
    let err = f.store.get_key("gh", "access_token").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Expired);
    assert_eq!(err.context_value("key"), Some("access_token"));
}

#[tokio::test]
async fn unknown_or_missing_provider_is_config_error_naming_it() {
    let f = fixture(None, no_jitter());
    f.store.save(oauth("gh", "old", t0())).await.unwrap();
    let err = f.store.get("gh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.context_value("provider"), Some("oauth2_provider"));
    assert_eq!(err.context_value("id"), Some("gh"));

    let mut c = CredentialObject::new("noprov", CredentialType::OAuth2).unwrap();
    c.set_auto_refresh(true);
    c.set_key("access_token", "x", Some(t0())).unwrap();
    f.store.save(c).await.unwrap();
    let err = f.store.get("noprov").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("no provider_id"));
}

#[tokio::test]
async fn missing_and_invalid_ids() {
    let f = fixture(None, no_jitter());
    assert_eq!(
        f.store.get("absent").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        f.store.get("../etc").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let mut c = CredentialObject::new("k", CredentialType::ApiKey).unwrap();
    c.set_key("api_key", "v", None).unwrap();
    f.store.save(c).await.unwrap();
    let err = f.store.get_key("k", "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyNotFound);
    assert_eq!(err.context_value("key"), Some("nope"));
}

#[tokio::test]
async fn failure_inside_advisory_window_returns_old_credential() {
    let mut p = mock_provider();
    p.expect_refresh()
        .times(1)
        .returning(|_| Err(Error::unavailable("token endpoint down")));
    let f = fixture(Some(Arc::new(p)), no_jitter());
    // Expires in 2 minutes: inside the 5-minute window, still valid.
    f.store
        .save(oauth("gh", "old", t0() + chrono::Duration::minutes(2)))
        .await
        .unwrap();
    f.store.clear_cache();
    let got = f.store.get("gh").await.unwrap();
    assert_eq!(got.get_key("access_token").unwrap().expose_secret(), "old"); // EXPOSE: the test compares the secret value.
    // Backoff: within 1 s the provider is not asked again (the mock allows one call).
    let again = f.store.get("gh").await.unwrap();
    assert_eq!(
        again.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "old"
    );
}

#[tokio::test]
async fn failure_past_expiry_is_an_error_of_the_provider_kind() {
    let mut p = mock_provider();
    p.expect_refresh().times(1).returning(|_| {
        Err(Error::new(
            ErrorKind::RefreshRejected,
            "refresh token revoked (invalid_grant)",
        ))
    });
    let f = fixture(Some(Arc::new(p)), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let err = f.store.get("gh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected);
    assert_eq!(err.context_value("id"), Some("gh"));
    assert_eq!(err.context_value("provider"), Some("oauth2_provider"));
    // A rejection is not retried for the same stored version, even much later.
    f.clock.advance(chrono::Duration::hours(5));
    assert_eq!(
        f.store.get("gh").await.unwrap_err().kind(),
        ErrorKind::RefreshRejected
    );
}

#[tokio::test]
async fn rejection_is_forgotten_when_the_credential_is_saved_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut p = mock_provider();
    let n = calls.clone();
    p.expect_refresh().returning(move |c| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(Error::new(ErrorKind::RefreshRejected, "invalid_grant"))
        } else {
            Ok(refreshed(c, "after-reauth", t0()))
        }
    });
    let f = fixture(Some(Arc::new(p)), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    assert!(f.store.get("gh").await.is_err());
    // The user re-authorises: a new save.
    let mut c = f
        .storage
        .load(&"gh".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    c.set_key("refresh_token", "rt-2", None).unwrap();
    f.store.save(c).await.unwrap();
    f.store.clear_cache();
    let got = f.store.get("gh").await.unwrap();
    assert_eq!(
        got.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "after-reauth"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn temporary_failures_back_off_exponentially_and_honour_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut p = mock_provider();
    let n = calls.clone();
    p.expect_refresh().returning(move |_| {
        let k = n.fetch_add(1, Ordering::SeqCst);
        let e = Error::unavailable("503 from token endpoint");
        Err(if k == 2 {
            e.with_retry_after(Duration::from_secs(60))
        } else {
            e
        })
    });
    let policy = RefreshPolicy::default()
        .with_jitter(0.0)
        .with_backoff(Duration::from_secs(1), Duration::from_secs(300));
    let f = fixture(Some(Arc::new(p)), policy);
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let calls_now = || calls.load(Ordering::SeqCst);

    assert_eq!(
        f.store.get("gh").await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(calls_now(), 1);
    // Within the first backoff (1 s): no new request, same error.
    f.clock.advance(chrono::Duration::milliseconds(900));
    assert_eq!(
        f.store.get("gh").await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(calls_now(), 1);
    // After 1 s: second attempt, then a 2 s backoff.
    f.clock.advance(chrono::Duration::milliseconds(200));
    assert!(f.store.get("gh").await.is_err());
    assert_eq!(calls_now(), 2);
    f.clock.advance(chrono::Duration::milliseconds(1500));
    assert!(f.store.get("gh").await.is_err());
    assert_eq!(calls_now(), 2, "2 s backoff after the second failure");
    f.clock.advance(chrono::Duration::milliseconds(600));
    let err = f.store.get("gh").await.unwrap_err();
    assert_eq!(calls_now(), 3);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    // Retry-After (60 s) beats the 4 s exponential step.
    f.clock.advance(chrono::Duration::seconds(30));
    assert!(f.store.get("gh").await.is_err());
    assert_eq!(calls_now(), 3);
    f.clock.advance(chrono::Duration::seconds(31));
    assert!(f.store.get("gh").await.is_err());
    assert_eq!(calls_now(), 4);
}

#[test]
fn backoff_is_capped_and_jittered_within_bounds() {
    let p = RefreshPolicy::default().with_backoff(Duration::from_secs(1), Duration::from_secs(10));
    for failures in 1..40 {
        let d = p.backoff(failures);
        assert!(d <= Duration::from_secs(10), "{failures}: {d:?}");
        let nominal = Duration::from_secs(1 << (failures - 1).min(20)).min(Duration::from_secs(10));
        assert!(
            d >= nominal.mul_f64(0.8) - Duration::from_millis(1),
            "{failures}: {d:?}"
        );
    }
}

/// A provider that blocks until released, counting calls.
#[derive(Debug)]
struct GatedProvider {
    calls: AtomicUsize,
    gate: tokio::sync::Semaphore,
    now: DateTime<Utc>,
}

#[async_trait]
impl CredentialProvider for GatedProvider {
    fn provider_id(&self) -> &str {
        "oauth2_provider"
    }
    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.expect("gate open");
        Ok(refreshed(c, "single-flight-token", self.now))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_gets_make_one_refresh() {
    let provider = Arc::new(GatedProvider {
        calls: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
        now: t0(),
    });
    let f = fixture(Some(provider.clone()), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let s = f.store.clone();
            tokio::spawn(async move { s.get("gh").await })
        })
        .collect();
    // Let every task reach the flight, then open the gate.
    while provider.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    provider.gate.add_permits(1000);
    for t in tasks {
        let c = t.await.unwrap().unwrap();
        assert_eq!(
            c.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            "single-flight-token"
        );
    }
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.storage
            .load(&"gh".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_one_error() {
    let mut p = mock_provider();
    p.expect_refresh()
        .times(1)
        .returning(|_| Err(Error::new(ErrorKind::RefreshRejected, "invalid_grant")));
    let f = fixture(Some(Arc::new(p)), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let results = futures::future::join_all((0..50).map(|_| f.store.get("gh"))).await;
    for r in results {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::RefreshRejected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_of_one_credential_does_not_block_another() {
    let provider = Arc::new(GatedProvider {
        calls: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
        now: t0(),
    });
    let f = fixture(Some(provider.clone()), no_jitter());
    f.store
        .save(oauth("slow", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    let mut other = CredentialObject::new("other", CredentialType::ApiKey).unwrap();
    other.set_key("api_key", "k", None).unwrap();
    f.store.save(other).await.unwrap();
    f.store.clear_cache();
    let s = f.store.clone();
    let slow = tokio::spawn(async move { s.get("slow").await });
    while provider.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The slow refresh is parked on the gate; the other credential still loads.
    assert_eq!(
        f.store
            .get_key("other", "api_key")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "k"
    );
    provider.gate.add_permits(1);
    slow.await.unwrap().unwrap();
}

#[tokio::test]
async fn caller_dropping_does_not_abandon_a_rotated_token() {
    let provider = Arc::new(GatedProvider {
        calls: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
        now: t0(),
    });
    let f = fixture(Some(provider.clone()), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let s = f.store.clone();
    let caller = tokio::spawn(async move { s.get("gh").await });
    while provider.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    caller.abort();
    provider.gate.add_permits(1);
    // The refresh task runs to completion and persists the rotated credential.
    for _ in 0..10_000 {
        let stored = f
            .storage
            .load(&"gh".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        if stored.version() == 2 {
            assert_eq!(
                stored.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
                "single-flight-token"
            );
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("refresh was abandoned with its caller");
}

#[tokio::test]
async fn save_conflict_after_refresh_adopts_the_other_writers_credential() {
    // Storage whose save conflicts once, after which a fresh credential is stored.
    let winner = refreshed(&oauth("gh", "old", t0()), "winner-token", t0());
    let mut stored = oauth("gh", "old", t0() - chrono::Duration::seconds(1));
    stored.set_version(1);
    let mut storage = MockCredentialStorage::new();
    let loads = Arc::new(Mutex::new(vec![
        {
            let mut w = winner.clone();
            w.set_version(2);
            w
        },
        stored,
    ]));
    let l = loads.clone();
    storage
        .expect_load()
        .returning(move |_| Ok(l.lock().unwrap().pop()));
    storage
        .expect_save()
        .times(1)
        .returning(|c| Err(Error::conflict(c.id(), "cas mismatch")));
    storage.expect_backend_name().return_const("mock");
    storage
        .expect_capabilities()
        .return_const(crate::StorageCapabilities::none());
    let mut p = mock_provider();
    p.expect_refresh()
        .times(1)
        .returning(|c| Ok(refreshed(c, "loser-token", t0())));
    let store = CredentialStore::builder()
        .storage(Arc::new(storage))
        .provider(Arc::new(p))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    let got = store.get("gh").await.unwrap();
    assert_eq!(
        got.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "winner-token"
    );
}

#[tokio::test]
async fn cache_ttl_and_invalidation() {
    let f = fixture(None, no_jitter());
    let mut c = CredentialObject::new("k", CredentialType::ApiKey).unwrap();
    c.set_key("api_key", "v1", None).unwrap();
    f.store.save(c).await.unwrap();
    assert_eq!(
        f.store
            .get_key("k", "api_key")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "v1"
    );
    // Another writer changes storage behind the store's back.
    let mut behind = f
        .storage
        .load(&"k".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    behind.set_key("api_key", "v2", None).unwrap();
    f.storage.save(&behind).await.unwrap();
    assert_eq!(
        f.store
            .get_key("k", "api_key")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "v1",
        "cached"
    );
    f.clock.advance(chrono::Duration::seconds(301));
    assert_eq!(
        f.store
            .get_key("k", "api_key")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "v2",
        "TTL passed"
    );
    // delete invalidates.
    assert!(f.store.delete("k").await.unwrap());
    assert_eq!(
        f.store.get("k").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!f.store.delete("k").await.unwrap());
}

#[tokio::test]
async fn cached_credential_is_refreshed_when_it_enters_the_window() {
    let mut p = mock_provider();
    p.expect_refresh()
        .times(1)
        .returning(|c| Ok(refreshed(c, "next", t0() + chrono::Duration::minutes(56))));
    let f = fixture(Some(Arc::new(p)), no_jitter());
    f.store
        .save(oauth("gh", "first", t0() + chrono::Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(
        f.store
            .get_key("gh", "access_token")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "first"
    );
    f.clock.advance(chrono::Duration::minutes(56));
    assert_eq!(
        f.store
            .get_key("gh", "access_token")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "next"
    );
}

#[tokio::test]
async fn resolve_templates() {
    let f = fixture(None, no_jitter());
    f.store
        .save(oauth(
            "github",
            "gho_abc",
            t0() + chrono::Duration::hours(1),
        ))
        .await
        .unwrap();
    let mut brave = CredentialObject::new("brave", CredentialType::ApiKey).unwrap();
    brave.set_key("api_key", "BSA", None).unwrap();
    f.store.save(brave).await.unwrap();
    let v = f
        .store
        .resolve("Bearer {{github.access_token}}")
        .await
        .unwrap();
    assert_eq!(v.expose_secret(), "Bearer gho_abc"); // EXPOSE: the test compares the secret value.
    let v = f
        .store
        .resolve("{{ brave }}/{{brave.api_key}}")
        .await
        .unwrap();
    assert_eq!(v.expose_secret(), "BSA/BSA"); // EXPOSE: the test compares the secret value.
    assert_eq!(
        f.store
            .resolve("no placeholders")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "no placeholders"
    );
    // Two keys: the default key (`access_token`), as the Python Hive does.
    assert_eq!(
        f.store.resolve("{{github}}").await.unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        f.store
            .resolve("{{github.access_token}}")
            .await
            .unwrap()
            .expose_secret()  // EXPOSE: the test compares the secret value.
    );
    let err = f.store.resolve("{{nope.key}}").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.context_value("id")),
        (ErrorKind::NotFound, Some("nope"))
    );
    let err = f.store.resolve("{{github.nope}}").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.context_value("key")),
        (ErrorKind::KeyNotFound, Some("nope"))
    );
    assert!(f.store.resolve("{{github.access_token").await.is_err());
}

type Recorded = (String, Option<String>, AccessOperation, AccessOutcome);

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Recorded>>);

impl AccessHook for Recorder {
    fn on_access(&self, e: &AccessEvent<'_>) {
        self.0.lock().unwrap().push((
            e.credential_id.to_string(),
            e.key.map(str::to_string),
            e.operation,
            e.outcome,
        ));
    }
}

#[tokio::test]
async fn access_hook_sees_every_access_without_values() {
    let rec = Arc::new(Recorder::default());
    let mut p = mock_provider();
    p.expect_refresh()
        .times(1)
        .returning(|c| Ok(refreshed(c, "new", t0())));
    let store = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .provider(Arc::new(p))
        .clock(Arc::new(ManualClock::new(t0())))
        .access_hook(rec.clone())
        .build()
        .unwrap();
    store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    store.clear_cache();
    store.get("gh").await.unwrap();
    store.get_key("gh", "access_token").await.unwrap();
    store.resolve("{{gh.access_token}}").await.unwrap();
    assert!(store.get("missing").await.is_err());
    store.delete("gh").await.unwrap();
    let events = rec.0.lock().unwrap().clone();
    let ops: Vec<_> = events.iter().map(|e| (e.0.as_str(), e.2, e.3)).collect();
    assert_eq!(
        ops,
        vec![
            ("gh", AccessOperation::Save, AccessOutcome::Ok),
            ("gh", AccessOperation::Refresh, AccessOutcome::Ok),
            ("gh", AccessOperation::Get, AccessOutcome::Ok),
            ("gh", AccessOperation::GetKey, AccessOutcome::Ok),
            ("gh", AccessOperation::Resolve, AccessOutcome::Ok),
            (
                "missing",
                AccessOperation::Get,
                AccessOutcome::Error(ErrorKind::NotFound)
            ),
            ("gh", AccessOperation::Delete, AccessOutcome::Ok),
        ]
    );
    assert_eq!(events[3].1.as_deref(), Some("access_token"));
}

/// MemoryStorage plus a per-credential lock, standing in for a storage shared by
/// several processes (each `CredentialStore` below plays one process).
#[derive(Debug, Default)]
struct LockingMemory {
    mem: MemoryStorage,
    locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    lock_calls: AtomicUsize,
}

#[derive(Debug)]
struct HeldGuard(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

#[async_trait]
impl crate::LockRelease for HeldGuard {
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl CredentialStorage for LockingMemory {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        self.mem.load(id).await
    }
    async fn save(&self, c: &CredentialObject) -> Result<()> {
        self.mem.save(c).await
    }
    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        self.mem.delete(id).await
    }
    async fn list(&self) -> Result<Vec<CredentialId>> {
        self.mem.list().await
    }
    fn capabilities(&self) -> crate::StorageCapabilities {
        crate::StorageCapabilities::process_lock()
    }
    async fn lock(
        &self,
        id: &CredentialId,
        options: &LockOptions,
    ) -> Result<crate::CredentialLock> {
        self.lock_calls.fetch_add(1, Ordering::SeqCst);
        let m = self
            .locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone();
        match tokio::time::timeout(options.wait, m.lock_owned()).await {
            Ok(g) => Ok(crate::CredentialLock::new(id.clone(), HeldGuard(g))),
            Err(_) => Err(Error::unavailable(
                "timed out waiting for the credential lock",
            )),
        }
    }
}

/// Rotates the refresh token on every refresh and revokes the family when a used one
/// comes back (RFC 9700 reuse detection).
#[derive(Debug)]
struct StrictProvider {
    current: Mutex<String>,
    requests: AtomicUsize,
    revoked: std::sync::atomic::AtomicBool,
    now: DateTime<Utc>,
}

impl StrictProvider {
    fn new() -> Self {
        StrictProvider {
            current: Mutex::new("rt-1".into()),
            requests: AtomicUsize::new(0),
            revoked: Default::default(),
            now: t0(),
        }
    }
}

#[async_trait]
impl CredentialProvider for StrictProvider {
    fn provider_id(&self) -> &str {
        "oauth2_provider"
    }
    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::yield_now().await;
        let presented = c
            .get_key("refresh_token")
            .map(|v| v.expose_secret().to_string()); // EXPOSE: the test compares the secret value.
        let mut cur = self.current.lock().unwrap();
        if self.revoked.load(Ordering::SeqCst) || presented.as_deref() != Some(cur.as_str()) {
            self.revoked.store(true, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::RefreshRejected,
                "invalid_grant: refresh token reused; family revoked",
            ));
        }
        *cur = format!("rt-{}", n + 1);
        let mut fresh = refreshed(c, &format!("at-{n}"), self.now);
        fresh.set_key("refresh_token", cur.as_str(), None).unwrap();
        Ok(fresh)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_sharing_a_locking_storage_make_one_token_request() {
    let storage = Arc::new(LockingMemory::default());
    let provider = Arc::new(StrictProvider::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let stores: Vec<CredentialStore> = (0..4)
        .map(|_| {
            CredentialStore::builder()
                .storage(storage.clone())
                .provider(provider.clone())
                .clock(clock.clone())
                .build()
                .unwrap()
        })
        .collect();
    stores[0]
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    for s in &stores {
        s.clear_cache();
    }
    let tasks: Vec<_> = stores
        .iter()
        .flat_map(|s| (0..50).map(move |_| s.clone()))
        .map(|s| tokio::spawn(async move { s.get_key("gh", "access_token").await }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().expose_secret(), "at-1"); // EXPOSE: the test compares the secret value.
    }
    assert_eq!(
        provider.requests.load(Ordering::SeqCst),
        1,
        "one token request across all stores"
    );
    assert!(!provider.revoked.load(Ordering::SeqCst));
    assert!(storage.lock_calls.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn rejection_after_a_lost_race_adopts_the_winners_credential() {
    // No lock: store A refreshes; store B, which read the old version, gets invalid_grant
    // and must adopt A's credential instead of declaring the grant dead.
    let storage = Arc::new(MemoryStorage::new());
    let provider = Arc::new(StrictProvider::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let make = || {
        CredentialStore::builder()
            .storage(storage.clone())
            .provider(provider.clone())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (make(), make());
    a.save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    let stale = storage.load(&"gh".parse().unwrap()).await.unwrap().unwrap();
    a.clear_cache();
    assert_eq!(
        a.get_key("gh", "access_token")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "at-1"
    );
    // B refreshes with the stale copy (as if it had loaded before A saved).
    let got = b
        .refresh_with(
            stale,
            &(provider.clone() as Arc<dyn CredentialProvider>),
            false,
            b.generation(),
            &mut None,
        )
        .await
        .unwrap();
    assert_eq!(got.get_key("access_token").unwrap().expose_secret(), "at-1"); // EXPOSE: the test compares the secret value.
}

#[tokio::test]
async fn lock_timeout_is_unavailable() {
    let storage = Arc::new(LockingMemory::default());
    let provider = Arc::new(StrictProvider::new());
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .provider(provider.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .lock_options(LockOptions::default().with_wait(Duration::from_millis(20)))
        .build()
        .unwrap();
    store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    store.clear_cache();
    // Another "process" holds the lock.
    let held = storage
        .lock(&"gh".parse().unwrap(), &LockOptions::default())
        .await
        .unwrap();
    let err = store.get("gh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.context_value("operation"), Some("lock"));
    assert_eq!(provider.requests.load(Ordering::SeqCst), 0);
    held.release().await.unwrap();
    assert_eq!(
        store
            .get_key("gh", "access_token")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "at-1"
    );
}

// ------------------------------------------------------------------ issue 15 defects

/// MemoryStorage whose next `fail_saves` saves fail with `Unavailable` (a Vault 503, a
/// full disk), built on the forwarding layer.
#[derive(Debug)]
struct FlakySaves {
    mem: Arc<MemoryStorage>,
    fail_saves: AtomicUsize,
    saves: AtomicUsize,
}

#[async_trait]
impl crate::StorageLayer for FlakySaves {
    fn inner(&self) -> &dyn CredentialStorage {
        &*self.mem
    }
    async fn save(&self, c: &CredentialObject) -> Result<()> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let left = self.fail_saves.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_saves.store(left - 1, Ordering::SeqCst);
            return Err(Error::unavailable("injected: storage is down"));
        }
        self.mem.save(c).await
    }
}

#[derive(Debug, Default)]
struct Events(Mutex<Vec<(String, AccessOperation, AccessOutcome)>>);

impl AccessHook for Events {
    fn on_access(&self, e: &AccessEvent<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((e.credential_id.to_string(), e.operation, e.outcome));
    }
}

/// Defect 1: a failed save after a successful refresh used to drop the new tokens, so
/// the next refresh presented the consumed refresh token (invalid_grant, family revoked).
#[tokio::test(start_paused = true)]
async fn a_refresh_whose_save_fails_is_served_and_saved_later_never_reused() {
    let mem = Arc::new(MemoryStorage::new());
    let storage = Arc::new(FlakySaves {
        mem: mem.clone(),
        fail_saves: AtomicUsize::new(0),
        saves: AtomicUsize::new(0),
    });
    let provider = Arc::new(StrictProvider::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let events = Arc::new(Events::default());
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .provider(provider.clone())
        .clock(clock.clone())
        .access_hook(events.clone())
        .refresh_policy(no_jitter())
        .build()
        .unwrap();
    let mut seed = oauth("gh", "old", t0() - chrono::Duration::seconds(1));
    seed.set_key("refresh_token", "rt-1", None).unwrap();
    store.save(seed).await.unwrap();
    store.clear_cache();
    storage.fail_saves.store(3, Ordering::SeqCst);

    // The refresh succeeds, its save fails: the caller still gets the new token.
    let got = store.get_key("gh", "access_token").await.unwrap();
    assert_eq!(got.expose_secret(), "at-1"); // EXPOSE: the test compares the secret value.
    let unsaved = store.unsaved();
    assert_eq!(unsaved.len(), 1);
    assert_eq!(unsaved[0].error.kind(), ErrorKind::Unavailable);
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(id, op, out)| id == "gh"
                && *op == AccessOperation::Save
                && *out == AccessOutcome::Error(ErrorKind::Unavailable))
    );

    // Inside the new token's window, before the save lands: the next refresh starts
    // from the kept credential (rt-2), not from storage (rt-1, consumed).
    store.clear_cache();
    clock.advance(chrono::Duration::minutes(56));
    let got = store.get_key("gh", "access_token").await.unwrap();
    assert_eq!(got.expose_secret(), "at-2"); // EXPOSE: the test compares the secret value.
    assert!(
        !provider.revoked.load(Ordering::SeqCst),
        "no refresh token was reused"
    );

    // The background retry lands the newest tokens (paused time runs the backoff).
    for _ in 0..100 {
        if store.unsaved().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(store.unsaved().is_empty(), "the save landed");
    let stored = mem.load(&"gh".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(
        stored.get_key("refresh_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "rt-3",
        "storage holds the last refresh token issued"
    );
    assert_eq!(provider.requests.load(Ordering::SeqCst), 2);
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(id, op, out)| id == "gh"
                && *op == AccessOperation::Save
                && *out == AccessOutcome::Ok)
    );
}

/// A store over `storage` with a [`StrictProvider`], holding `gh` expired with `rt-1`
/// (not cached).
async fn strict_store_with_expired_gh(storage: Arc<dyn CredentialStorage>) -> CredentialStore {
    let store = CredentialStore::builder()
        .storage(storage)
        .provider(Arc::new(StrictProvider::new()))
        .clock(Arc::new(ManualClock::new(t0())))
        .refresh_policy(no_jitter())
        .build()
        .unwrap();
    let mut seed = oauth("gh", "old", t0() - chrono::Duration::seconds(1));
    seed.set_key("refresh_token", "rt-1", None).unwrap();
    store.save(seed).await.unwrap();
    store.clear_cache();
    store
}

/// Saves fail `fail_saves` times; releasing a lock waits for a permit of `gate`.
#[derive(Debug)]
struct SlowRelease {
    mem: Arc<MemoryStorage>,
    fail_saves: AtomicUsize,
    gate: Arc<tokio::sync::Semaphore>,
    released: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct GatedGuard {
    gate: Arc<tokio::sync::Semaphore>,
    released: Arc<AtomicUsize>,
}

#[async_trait]
impl crate::LockRelease for GatedGuard {
    async fn release(self: Box<Self>) -> Result<()> {
        self.gate.acquire().await.unwrap().forget();
        self.released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl crate::StorageLayer for SlowRelease {
    fn inner(&self) -> &dyn CredentialStorage {
        &*self.mem
    }
    async fn save(&self, c: &CredentialObject) -> Result<()> {
        if self.fail_saves.load(Ordering::SeqCst) > 0 {
            self.fail_saves.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::unavailable("injected: storage is down"));
        }
        self.mem.save(c).await
    }
    fn capabilities(&self) -> crate::StorageCapabilities {
        crate::StorageCapabilities::process_lock()
    }
    async fn lock(&self, id: &CredentialId, _: &LockOptions) -> Result<crate::CredentialLock> {
        let guard = GatedGuard {
            gate: self.gate.clone(),
            released: self.released.clone(),
        };
        Ok(crate::CredentialLock::new(id.clone(), guard))
    }
}

/// A process that waits for `unsaved()` to empty before it exits (a graceful shutdown)
/// must not leave the lock behind for other processes to wait out: the kept refresh is
/// settled only once its lock is released too.
#[tokio::test(start_paused = true)]
async fn a_kept_refresh_is_settled_only_after_its_lock_is_released() {
    let mem = Arc::new(MemoryStorage::new());
    let storage = Arc::new(SlowRelease {
        mem: mem.clone(),
        fail_saves: AtomicUsize::new(0),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        released: Arc::new(AtomicUsize::new(0)),
    });
    let store = strict_store_with_expired_gh(storage.clone()).await;
    storage.fail_saves.store(1, Ordering::SeqCst);

    let got = store.get_key("gh", "access_token").await.unwrap();
    assert_eq!(got.expose_secret(), "at-1"); // EXPOSE: the test compares the secret value.
    assert_eq!(store.unsaved().len(), 1);
    let id: CredentialId = "gh".parse().unwrap();
    let stored_rt = || async {
        let c = mem.load(&id).await.unwrap().unwrap();
        // EXPOSE: the test compares the secret value.
        c.get_key("refresh_token")
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    for _ in 0..100 {
        if stored_rt().await == "rt-2" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(stored_rt().await, "rt-2", "the retried save landed");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(storage.released.load(Ordering::SeqCst), 0);
    assert_eq!(
        store.unsaved().len(),
        1,
        "not settled while the lock is still held"
    );
    storage.gate.add_permits(1);
    for _ in 0..100 {
        if store.unsaved().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.unsaved().is_empty());
    assert_eq!(storage.released.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn settle_saves_kept_refreshes_now_or_names_the_ones_it_could_not() {
    let mem = Arc::new(MemoryStorage::new());
    let storage = Arc::new(FlakySaves {
        mem: mem.clone(),
        fail_saves: AtomicUsize::new(0),
        saves: AtomicUsize::new(0),
    });
    let store = strict_store_with_expired_gh(storage.clone()).await;
    assert!(store.settle(Duration::from_secs(1)).await.is_empty());
    storage.fail_saves.store(usize::MAX, Ordering::SeqCst);
    store.get("gh").await.unwrap();

    let started = tokio::time::Instant::now();
    let left = store.settle(Duration::from_secs(2)).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "waited the whole timeout"
    );
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id.as_str(), "gh");
    assert!(left[0].attempts > 2, "tried again while waiting");

    storage.fail_saves.store(0, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    assert!(store.settle(Duration::from_secs(60)).await.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "saved at once, not at the next backoff"
    );
    let stored = mem.load(&"gh".parse().unwrap()).await.unwrap().unwrap();
    // EXPOSE: the test compares the secret value.
    assert_eq!(
        stored.get_key("refresh_token").unwrap().expose_secret(),
        "rt-2"
    );
}

/// Defect 1, conflict branch: another writer changed a field (not the secrets) while the
/// refresh ran; the new tokens go on top of its copy instead of being dropped.
#[tokio::test]
async fn a_conflicting_edit_of_other_fields_keeps_the_refreshed_tokens() {
    let mem = Arc::new(MemoryStorage::new());
    let provider = Arc::new(StrictProvider::new());
    let store = CredentialStore::builder()
        .storage(mem.clone())
        .provider(provider.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    let stale = mem.load(&"gh".parse().unwrap()).await.unwrap().unwrap();
    // Someone edits the description (same secrets) after `stale` was read.
    let mut edited = stale.clone();
    edited.set_description(Some("edited".into()));
    mem.save(&edited).await.unwrap();
    let got = store
        .refresh_with(
            stale,
            &(provider.clone() as Arc<dyn CredentialProvider>),
            false,
            store.generation(),
            &mut None,
        )
        .await
        .unwrap();
    assert_eq!(got.get_key("access_token").unwrap().expose_secret(), "at-1"); // EXPOSE: the test compares the secret value.
    let stored = mem.load(&"gh".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.description(), Some("edited"));
    assert_eq!(
        stored.get_key("refresh_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "rt-2"
    );
    assert_eq!(stored.version(), 3);
}

/// A provider that panics on its first refresh.
#[derive(Debug, Default)]
struct PanicsOnce {
    calls: AtomicUsize,
}

#[async_trait]
impl CredentialProvider for PanicsOnce {
    fn provider_id(&self) -> &str {
        "oauth2_provider"
    }
    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("injected provider panic");
        }
        Ok(refreshed(c, "after-panic", t0()))
    }
}

/// Defect 2: a panic inside a refresh left its finished flight in the map, failing every
/// later call of the id until restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_refresh_fails_its_callers_and_the_next_call_tries_again() {
    let provider = Arc::new(PanicsOnce::default());
    let f = fixture(Some(provider.clone()), no_jitter());
    f.store
        .save(oauth("gh", "old", t0() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    f.store.clear_cache();
    let err = f.store.get("gh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.to_string().contains("panicked"), "{err}");
    let got = f.store.get("gh").await.unwrap();
    assert_eq!(
        got.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "after-panic"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

/// Defect 3: a token living no longer than the refresh window (Keycloak: 5 minutes) was
/// due the moment it was issued: never cached, one token request per get.
#[tokio::test]
async fn a_five_minute_token_is_cached_and_refreshed_once_per_half_life() {
    let provider = Arc::new(StrictProvider::new());
    let f = fixture(Some(provider.clone()), no_jitter());
    let mut seed = oauth("kc", "old", t0() - chrono::Duration::seconds(1));
    seed.set_key("refresh_token", "rt-1", None).unwrap();
    f.store.save(seed).await.unwrap();
    // Tokens from this provider live 5 minutes.
    let short = |c: &CredentialObject, n: usize, now: DateTime<Utc>| {
        let mut c = c.clone();
        c.set_key(
            "access_token",
            format!("at-{n}"),
            Some(now + chrono::Duration::minutes(5)),
        )
        .unwrap();
        c.set_last_refreshed(now);
        c
    };
    // First get: one refresh; then ten gets within a second: none.
    let c = f.store.get("kc").await.unwrap();
    let mut as_issued = short(&c, 1, t0());
    as_issued.set_version(c.version());
    f.storage.save(&as_issued).await.unwrap();
    f.store.clear_cache();
    let before = provider.requests.load(Ordering::SeqCst);
    for _ in 0..10 {
        f.store.get("kc").await.unwrap();
        f.clock.advance(chrono::Duration::milliseconds(100));
    }
    assert_eq!(
        provider.requests.load(Ordering::SeqCst),
        before,
        "cached, not refreshed"
    );
    // Past half its life it is refreshed once.
    f.clock.set(t0() + chrono::Duration::seconds(151));
    f.store.get("kc").await.unwrap();
    f.store.get("kc").await.unwrap();
    assert_eq!(provider.requests.load(Ordering::SeqCst), before + 1);
}

/// The minimum interval: a credential refreshed moments ago is not refreshed again while
/// valid, even inside its window; the keep-alive refreshes an idle credential.
#[test]
fn min_interval_and_keep_alive_set_when_a_refresh_is_due() {
    let policy = RefreshPolicy::default()
        .with_min_interval(chrono::Duration::seconds(30))
        .with_keep_alive(Some(chrono::Duration::days(7)));
    let mut c = oauth("x", "t", t0() + chrono::Duration::seconds(20));
    c.set_last_refreshed(t0());
    // Lifetime 20 s: window 10 s -> due at +10 s, but the floor is +30 s; past expiry (+20 s)
    // the floor does not hold.
    assert_eq!(
        policy.refresh_due_at(&c),
        Some(t0() + chrono::Duration::seconds(20))
    );
    c.set_key("access_token", "t", Some(t0() + chrono::Duration::days(30)))
        .unwrap();
    assert_eq!(
        policy.refresh_due_at(&c),
        Some(t0() + chrono::Duration::days(7))
    );
    let per_provider =
        RefreshPolicy::default().with_provider_window("oauth2_provider", chrono::Duration::days(1));
    c.set_key("access_token", "t", Some(t0() + chrono::Duration::days(4)))
        .unwrap();
    assert_eq!(
        per_provider.refresh_due_at(&c),
        Some(t0() + chrono::Duration::days(3))
    );
}

/// Defect 5: a failed `resolve` left no audit record.
#[tokio::test]
async fn every_resolve_is_audited_failures_included() {
    let events = Arc::new(Events::default());
    let store = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .access_hook(events.clone())
        .build()
        .unwrap();
    let mut c = CredentialObject::new("brave", CredentialType::ApiKey).unwrap();
    c.set_key("api_key", "BSA-0123456789", None).unwrap();
    store.save(c).await.unwrap();
    store.resolve("{{brave.api_key}}").await.unwrap();
    assert_eq!(
        store.resolve("{{nope.api_key}}").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.resolve("{{brave.missing}}").await.unwrap_err().kind(),
        ErrorKind::KeyNotFound
    );
    assert!(store.resolve("{{unclosed").await.is_err());
    let resolves: Vec<_> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, op, _)| *op == AccessOperation::Resolve)
        .cloned()
        .collect();
    assert_eq!(
        resolves,
        vec![
            ("brave".into(), AccessOperation::Resolve, AccessOutcome::Ok),
            (
                "nope".into(),
                AccessOperation::Resolve,
                AccessOutcome::Error(ErrorKind::NotFound)
            ),
            (
                "brave".into(),
                AccessOperation::Resolve,
                AccessOutcome::Error(ErrorKind::KeyNotFound)
            ),
            (
                "".into(),
                AccessOperation::Resolve,
                AccessOutcome::Error(ErrorKind::InvalidInput)
            ),
        ]
    );
}

/// A lease TTL that one refresh can outlive is refused when the store is built.
#[test]
fn a_lease_ttl_shorter_than_a_refresh_is_a_config_error() {
    #[derive(Debug)]
    struct Leases(MemoryStorage);
    #[async_trait]
    impl crate::StorageLayer for Leases {
        fn inner(&self) -> &dyn CredentialStorage {
            &self.0
        }
        fn capabilities(&self) -> crate::StorageCapabilities {
            crate::StorageCapabilities::lease_lock(Some(Duration::from_secs(10)))
        }
    }
    let mut p = mock_provider();
    p.expect_request_timeout()
        .return_const(Some(Duration::from_secs(30)));
    let p: Arc<dyn CredentialProvider> = Arc::new(p);
    let build = |ttl: u64| {
        CredentialStore::builder()
            .storage(Arc::new(Leases(MemoryStorage::new())))
            .provider(p.clone())
            .lock_options(LockOptions::new().with_ttl(Duration::from_secs(ttl)))
            .build()
    };
    let err = build(50).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("lock TTL"), "{err}");
    assert!(build(56).is_ok(), "30 s + 2 x 10 s + 5 s = 55 s");
}

/// A storage whose first load panics.
#[derive(Debug)]
struct PanickyLoad {
    mem: MemoryStorage,
    loads: AtomicUsize,
}

#[async_trait]
impl crate::StorageLayer for PanickyLoad {
    fn inner(&self) -> &dyn CredentialStorage {
        &self.mem
    }
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        if self.loads.fetch_add(1, Ordering::SeqCst) == 0 {
            // Let a second caller join this flight first.
            tokio::task::yield_now().await;
            panic!("injected storage panic");
        }
        self.mem.load(id).await
    }
}

/// A panic in the storage during a load (which runs on the caller's task) fails that
/// flight's callers and leaves no entry behind.
#[tokio::test]
async fn a_panicking_load_fails_its_callers_and_the_next_call_tries_again() {
    let storage = Arc::new(PanickyLoad {
        mem: MemoryStorage::new(),
        loads: AtomicUsize::new(0),
    });
    let mut c = CredentialObject::new("k", CredentialType::ApiKey).unwrap();
    c.set_key("api_key", "v1", None).unwrap();
    storage.mem.save(&c).await.unwrap();
    let store = CredentialStore::builder().storage(storage).build().unwrap();
    let (a, b) = tokio::join!(store.get("k"), store.get("k"));
    for r in [a, b] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unexpected);
        assert!(e.to_string().contains("panicked"), "{e}");
    }
    assert!(store.get("k").await.is_ok());
}

/// A storage whose first load waits for a permit.
#[derive(Debug)]
struct GatedLoad {
    mem: MemoryStorage,
    loads: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl crate::StorageLayer for GatedLoad {
    fn inner(&self) -> &dyn CredentialStorage {
        &self.mem
    }
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        if self.loads.fetch_add(1, Ordering::SeqCst) == 0 {
            let _permit = self.gate.acquire().await.expect("gate open");
        }
        self.mem.load(id).await
    }
}

/// Concurrent cold gets share one load, and when the caller that started it gives up,
/// the others still get the credential (one of them loads it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_credential_when_the_first_caller_gives_up() {
    let storage = Arc::new(GatedLoad {
        mem: MemoryStorage::new(),
        loads: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
    });
    let mut c = CredentialObject::new("k", CredentialType::ApiKey).unwrap();
    c.set_key("api_key", "v1", None).unwrap();
    storage.mem.save(&c).await.unwrap();
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .build()
        .unwrap();
    let s = store.clone();
    let first = tokio::spawn(async move { s.get("k").await });
    while storage.loads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.get("k").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The waiters joined the gated load: nothing loaded again yet.
    assert_eq!(storage.loads.load(Ordering::SeqCst), 1);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    storage.gate.add_permits(1);
    for w in waiters {
        let got = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("a waiter was left waiting on an abandoned load")
            .unwrap()
            .unwrap();
        assert_eq!(got.id().as_str(), "k");
    }
    assert!(storage.loads.load(Ordering::SeqCst) <= 2);
}

/// The keep-alive: an idle credential whose token is still valid for weeks is refreshed
/// by the scheduled `refresh_due` once its last refresh is older than the keep-alive,
/// and not before; credentials that are not due are left alone.
#[tokio::test(start_paused = true)]
async fn refresh_due_keeps_idle_refresh_tokens_alive() {
    let mut provider = StrictProvider::new();
    // It stamps its tokens with the time of the refresh below.
    provider.now = t0() + chrono::Duration::days(8);
    let provider = Arc::new(provider);
    let f = fixture(
        Some(provider.clone()),
        no_jitter().with_keep_alive(Some(chrono::Duration::days(7))),
    );
    let mut idle = oauth("idle", "at-0", t0() + chrono::Duration::days(30));
    idle.set_last_refreshed(t0());
    f.store.save(idle).await.unwrap();
    let mut key = CredentialObject::new("plain", CredentialType::ApiKey).unwrap();
    key.set_key("api_key", "v", None).unwrap();
    f.store.save(key).await.unwrap();

    assert_eq!(f.store.refresh_due().await.unwrap(), 0);
    f.clock.advance(chrono::Duration::days(6));
    assert_eq!(f.store.refresh_due().await.unwrap(), 0);
    assert_eq!(provider.requests.load(Ordering::SeqCst), 0);
    f.clock.advance(chrono::Duration::days(2));
    f.store.clear_cache();
    assert_eq!(f.store.refresh_due().await.unwrap(), 1);
    assert_eq!(provider.requests.load(Ordering::SeqCst), 1);
    let stored = f
        .storage
        .load(&"idle".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.last_refreshed(),
        Some(t0() + chrono::Duration::days(8))
    );
    assert_eq!(
        stored.get_key("refresh_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "rt-2"
    );

    // The loop does the same on its own.
    f.clock.advance(chrono::Duration::days(8));
    let handle = f.store.spawn_refresh_loop(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(61)).await;
    handle.abort();
    assert!(provider.requests.load(Ordering::SeqCst) >= 2);
}

/// `upsert` creates, replaces a fresh object over an existing id (where `save`
/// conflicts), and concurrent upserts all land: each conflict means another upsert
/// landed, so 8 writers need at most 8 of its 16 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_creates_and_replaces_whatever_version_is_stored() {
    let f = fixture(None, no_jitter());
    let make = |v: &str| {
        let mut c = CredentialObject::new("brave", CredentialType::ApiKey).unwrap();
        c.set_key("api_key", v, None).unwrap();
        c
    };
    let created = f.store.upsert(make("v1")).await.unwrap();
    assert_eq!(created.version(), 1);
    assert_eq!(
        f.store.save(make("v2")).await.unwrap_err().kind(),
        ErrorKind::Conflict,
        "save stays check-and-set"
    );
    let replaced = f.store.upsert(make("v2")).await.unwrap();
    assert_eq!(replaced.version(), 2);
    assert_eq!(
        f.store
            .get_key("brave", "api_key")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "v2"
    );
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = f.store.clone();
            tokio::spawn(async move { store.upsert(make(&format!("c{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stored = f
        .storage
        .load(&"brave".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version(), 10, "every upsert landed once");
}

/// `{{id}}` on a credential with several keys takes its default key in the Python
/// Hive's order (`value`, `api_key`, `access_token`, else the first by name).
#[tokio::test]
async fn a_bare_placeholder_takes_the_default_key() {
    let f = fixture(None, no_jitter());
    f.store
        .save(oauth("gh", "gho_token", t0() + chrono::Duration::hours(2)))
        .await
        .unwrap();
    let mut basic = CredentialObject::new("basic", CredentialType::BasicAuth).unwrap();
    basic.set_key("username", "agent", None).unwrap();
    basic.set_key("password", "hunter2-long", None).unwrap();
    f.store.save(basic).await.unwrap();
    let mut both = CredentialObject::new("both", CredentialType::Custom).unwrap();
    both.set_key("access_token", "tok", None).unwrap();
    both.set_key("api_key", "key", None).unwrap();
    f.store.save(both).await.unwrap();
    let got = f.store.resolve("{{gh}} {{basic}} {{both}}").await.unwrap();
    assert_eq!(got.expose_secret(), "gho_token hunter2-long key"); // EXPOSE: the test compares the secret value.
    assert_eq!(f.storage.clear().unwrap(), 3);
    assert!(f.storage.list().await.unwrap().is_empty());
}

mod accounts_and_users {
    use super::super::CredentialStore;
    use crate::storage::CredentialStorage as _;
    use crate::{
        AccessEvent, AccessHook, AccountStatus, ActionRequired, CredentialIdentity,
        CredentialObject, CredentialType, ErrorKind, ExposeSecret, MemoryStorage,
    };
    use std::sync::{Arc, Mutex};

    fn store() -> CredentialStore {
        CredentialStore::builder()
            .storage(Arc::new(MemoryStorage::new()))
            .build()
            .unwrap()
    }

    fn key(id: &str, value: &str) -> CredentialObject {
        let mut c = CredentialObject::new(id, CredentialType::ApiKey).unwrap();
        c.set_key("api_key", value, None).unwrap();
        c
    }

    #[tokio::test]
    async fn provider_alias_addresses_work_in_get_get_key_and_templates() {
        let s = store();
        s.save(key("github", "personal-token")).await.unwrap();
        s.save(key("github.work", "work-token")).await.unwrap();
        assert_eq!(
            s.get("github/work").await.unwrap().id().as_str(),
            "github.work"
        );
        assert_eq!(
            s.get("github/default").await.unwrap().id().as_str(),
            "github"
        );
        let v = s.get_key("github/work", "api_key").await.unwrap();
        assert_eq!(v.expose_secret(), "work-token"); // EXPOSE: the test compares the value.
        let t = s
            .resolve("a={{github/work.api_key}} b={{github/default}}")
            .await
            .unwrap();
        assert_eq!(t.expose_secret(), "a=work-token b=personal-token"); // EXPOSE: the test compares the value.
        let bad = s.get("github/wo rk").await.unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn accounts_are_listed_without_values_and_selection_needs_a_choice() {
        let s = store();
        let mut work = CredentialObject::builder("gh_w", CredentialType::ApiKey)
            .account("github", Some("work"))
            .key("api_key", "canary-5f3b-accounts", None)
            .build()
            .unwrap();
        work.account_mut().unwrap().identity =
            CredentialIdentity::new().with_email("me@work.example");
        s.save(work).await.unwrap();
        s.save(key("github.personal", "p")).await.unwrap();
        s.save(key("slack", "x")).await.unwrap();
        let accounts = s.list_accounts("github").await.unwrap();
        let aliases: Vec<&str> = accounts.iter().map(|a| a.alias()).collect();
        assert_eq!(aliases, ["personal", "work"]);
        let json = serde_json::to_string(&accounts).unwrap();
        assert!(!json.contains("canary-5f3b"), "{json}");
        assert!(json.contains("me@work.example"));

        let err = s.select_account("github", None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccountSelectionRequired);
        let Some(ActionRequired::AccountSelectionRequired { accounts, .. }) = err.action_required()
        else {
            panic!("{err:?}");
        };
        assert_eq!(accounts[1].identity.as_deref(), Some("me@work.example"));
        let tool = serde_json::to_value(err.tool_result()).unwrap();
        assert_eq!(tool["action"]["action"], "account_selection_required");
        assert!(!tool.to_string().contains("canary-5f3b"));

        assert_eq!(
            s.select_account("github", Some("github/work"))
                .await
                .unwrap()
                .as_str(),
            "github.work"
        );
        assert_eq!(
            s.select_account("slack", None).await.unwrap().as_str(),
            "slack"
        );
        let missing = s.select_account("notion", None).await.unwrap_err();
        assert!(
            matches!(missing.action_required(), Some(ActionRequired::CredentialMissing { env_var: Some(v), .. }) if v == "NOTION_API_KEY")
        );
    }

    #[tokio::test]
    async fn missing_credentials_carry_an_action() {
        let s = store();
        let err = s.get("brave_search").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let tool = serde_json::to_value(err.tool_result()).unwrap();
        assert_eq!(tool["action"]["action"], "credential_missing");
        assert_eq!(tool["action"]["env_var"], "BRAVE_SEARCH_API_KEY");
        let err = s.resolve("{{brave_search.api_key}}").await.unwrap_err();
        assert!(err.action_required().is_some());
    }

    #[tokio::test]
    async fn record_check_keeps_the_credential_and_stores_status() {
        let s = store();
        s.save(key("github.work", "v")).await.unwrap();
        s.record_check(
            "github/work",
            AccountStatus::Failed,
            Some(CredentialIdentity::new().with_username("octo")),
        )
        .await
        .unwrap();
        let c = s.get("github.work").await.unwrap();
        let a = c.account().unwrap();
        assert_eq!((a.provider.as_str(), a.alias.as_str()), ("github", "work"));
        assert_eq!(a.status, AccountStatus::Failed);
        assert!(a.last_checked.is_some());
        assert_eq!(a.identity.label(), Some("octo"));
        assert!(c.has_key("api_key"));
    }

    #[tokio::test]
    async fn record_check_does_not_copy_an_environment_credential_into_the_store() {
        let primary = Arc::new(MemoryStorage::new());
        let env = crate::EnvStorage::from_vars(std::collections::HashMap::from([(
            "BRAVE_SEARCH_API_KEY".to_string(),
            "from-env-0123".to_string(),
        )]));
        let s = CredentialStore::builder()
            .storage(Arc::new(
                crate::CompositeStorage::new(primary.clone()).layer(Arc::new(env)),
            ))
            .build()
            .unwrap();
        let checked = s
            .record_check("brave_search", AccountStatus::Active, None)
            .await
            .unwrap();
        assert_eq!(checked.account().unwrap().status, AccountStatus::Active);
        assert!(primary.list().await.unwrap().is_empty(), "not persisted");
    }

    #[derive(Debug, Default)]
    struct Principals(Mutex<Vec<Option<String>>>);
    impl AccessHook for Principals {
        fn on_access(&self, e: &AccessEvent<'_>) {
            self.0.lock().unwrap().push(e.principal.map(str::to_owned));
        }
    }

    #[tokio::test]
    async fn user_views_are_isolated_and_audited() {
        let storage = Arc::new(MemoryStorage::new());
        let hook = Arc::new(Principals::default());
        let s = CredentialStore::builder()
            .storage(storage.clone())
            .access_hook(hook.clone())
            .build()
            .unwrap();
        let alice = s.for_user("alice").unwrap();
        let bob = s.for_user("bob").unwrap();
        alice.save(key("github", "alice-token")).await.unwrap();
        bob.save(key("github", "bob-token")).await.unwrap();
        let a = alice.get_key("github", "api_key").await.unwrap();
        assert_eq!(a.expose_secret(), "alice-token"); // EXPOSE: the test compares the value.
        let b = bob.get_key("github", "api_key").await.unwrap();
        assert_eq!(b.expose_secret(), "bob-token"); // EXPOSE: the test compares the value.
        assert_eq!(alice.list().await.unwrap().len(), 1);
        assert_eq!(
            s.get("github").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // No id given to a view reaches another principal's namespace.
        assert!(alice.get("user.bob.github").await.is_err());
        assert_eq!(alice.principal(), Some("alice"));
        assert!(alice.for_user("bob").is_err());
        assert!(s.for_user("../bob").is_err());
        let seen = hook.0.lock().unwrap().clone();
        assert!(seen.contains(&Some("alice".into())) && seen.contains(&Some("bob".into())));
        assert!(seen.contains(&None));
    }
}
