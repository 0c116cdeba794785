//! End to end with hive-cred-core's `CredentialStore` and `MemoryStorage`.

mod common;

use std::sync::Arc;

use common::*;
use hive_cred_core::{CredentialId, CredentialStorage, CredentialStore, ErrorKind, MemoryStorage};

async fn store_with(
    server: &TestServer,
    path: &str,
) -> (
    CredentialStore,
    Arc<MemoryStorage>,
    Arc<hive_cred_core::ManualClock>,
) {
    let clock = clock();
    let storage = Arc::new(MemoryStorage::new());
    let provider = provider(server, path, clock.clone(), |c| c);
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .provider(Arc::new(provider))
        .clock(clock.clone())
        .build()
        .expect("store");
    (store, storage, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credential_is_refreshed_on_get_and_persisted() {
    let server = TestServer::start().await;
    let (store, storage, _clock) = store_with(&server, "/token/rotate").await;
    storage
        .save(&expired_credential("github", "test_oauth", "rt-original"))
        .await
        .unwrap();

    let got = store.get("github").await.unwrap();
    assert_eq!(value(&got, "access_token"), "at-rotated");
    assert_eq!(value(&got, "refresh_token"), "rt-rotated");
    assert_eq!(got.version(), 2);
    assert_eq!(got.last_refreshed(), Some(t0()));

    let stored = storage
        .load(&CredentialId::new("github").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version(), 2, "saved once after the refresh");
    assert_eq!(value(&stored, "access_token"), "at-rotated");
    assert_eq!(value(&stored, "refresh_token"), "rt-rotated");
    assert_eq!(
        stored.key("access_token").unwrap().expires_at(),
        Some(t0() + chrono::Duration::hours(1))
    );
    assert_eq!(
        stored
            .key("access_token")
            .unwrap()
            .metadata()
            .get("token_type")
            .map(String::as_str),
        Some("Bearer")
    );
    assert_eq!(server.hits("/token/rotate"), 1);

    // A second get is served without another token request.
    let again = store.get_key("github", "access_token").await.unwrap();
    assert_eq!(reveal(&again), "at-rotated");
    assert_eq!(server.hits("/token/rotate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_gets_make_one_token_request() {
    let server = TestServer::start().await;
    // The rotating endpoint, slowed so that all hundred gets overlap the one refresh.
    server.mock.set_delay(std::time::Duration::from_millis(50));
    let (store, storage, _clock) = store_with(&server, "/token").await;
    let seed = server.mock.current_refresh_token();
    storage
        .save(&expired_credential("busy", "test_oauth", reveal(&seed)))
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let store = store.clone();
        tasks.spawn(async move { store.get("busy").await });
    }
    let mut n = 0;
    while let Some(joined) = tasks.join_next().await {
        let got = joined.unwrap().unwrap();
        let latest = server.mock.latest_access_token().expect("one grant");
        assert_eq!(value(&got, "access_token"), reveal(&latest));
        n += 1;
    }
    assert_eq!(n, 100);
    assert_eq!(server.hits("/token"), 1, "single flight");
    assert_eq!(server.mock.counts().grants, 1);
    let stored = storage
        .load(&CredentialId::new("busy").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version(), 2);
    assert_eq!(
        value(&stored, "refresh_token"),
        reveal(&server.mock.current_refresh_token()),
        "the rotated refresh token is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_grant_surfaces_as_refresh_rejected_and_keeps_stored_tokens() {
    let server = TestServer::start().await;
    let (store, storage, _clock) = store_with(&server, "/token/invalid-grant").await;
    storage
        .save(&expired_credential("dead", "test_oauth", "rt-dead"))
        .await
        .unwrap();
    let err = store.get("dead").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected, "{err}");
    assert!(err.to_string().contains("dead"));
    // Not retried: the store remembers the rejection for this version.
    let err2 = store.get("dead").await.unwrap_err();
    assert_eq!(err2.kind(), ErrorKind::RefreshRejected);
    assert_eq!(server.hits("/token/invalid-grant"), 1);
    let stored = storage
        .load(&CredentialId::new("dead").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version(), 1, "nothing written");
    assert_eq!(value(&stored, "refresh_token"), "rt-dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_backs_off_for_retry_after() {
    let server = TestServer::start().await;
    let (store, storage, clock) = store_with(&server, "/token/429").await;
    storage
        .save(&expired_credential("limited", "test_oauth", "rt"))
        .await
        .unwrap();
    let err = store.get("limited").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(store.get("limited").await.is_err());
    assert_eq!(server.hits("/token/429"), 1, "waits for Retry-After");
    clock.advance(chrono::Duration::seconds(121));
    assert!(store.get("limited").await.is_err());
    assert_eq!(server.hits("/token/429"), 2, "asks again after Retry-After");
}
