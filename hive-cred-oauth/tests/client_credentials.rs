//! The client credentials grant (machine to machine) against the testkit's mock server:
//! a provider whose "refresh" is a new grant, through the store's single flight.

mod common;

use std::sync::Arc;

use common::*;
use hive_cred_core::{
    CredentialProvider, CredentialStorage, CredentialStore, ErrorKind, MemoryStorage,
};
use hive_cred_oauth::testkit::{Fault, MockConfig, MockTokenServer};
use hive_cred_oauth::{Grant, OAuth2Config, OAuth2Provider};

fn cc_provider(
    server: &MockTokenServer,
    secret: &str,
    clock: Arc<hive_cred_core::ManualClock>,
) -> OAuth2Provider {
    OAuth2Provider::new(
        OAuth2Config::new("m2m", server.token_url(), CLIENT_ID)
            .with_client_secret(secret.into())
            .with_grant(Grant::ClientCredentials)
            .with_scopes(["read"]),
    )
    .expect("test fixture")
    .with_clock(clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_replaced_by_a_new_grant_once_for_many_callers() {
    let server =
        MockTokenServer::start(MockConfig::new().with_client(CLIENT_ID, CLIENT_SECRET)).await;
    let clock = clock();
    let provider = Arc::new(cc_provider(&server, CLIENT_SECRET, clock.clone()));
    let first = provider.grant_client_credentials("svc").await.unwrap();
    assert!(first.get_key("refresh_token").is_none(), "no refresh token");
    assert!(first.auto_refresh());
    assert_eq!(first.provider_id(), Some("m2m"));
    let form = server.requests("/token")[0].form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "read");
    assert!(!form.contains_key("refresh_token"));

    let storage = Arc::new(MemoryStorage::new());
    storage.save(&first).await.unwrap();
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .provider(provider.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    // Fresh: served from storage.
    let got = store.get("svc").await.unwrap();
    assert_eq!(value(&got, "access_token"), value(&first, "access_token"));
    assert_eq!(server.counts().grants, 1);

    // Two hours later the token has expired: one new grant for fifty callers.
    clock.advance(chrono::Duration::hours(2));
    server.set_delay(std::time::Duration::from_millis(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.spawn(async move { store.get("svc").await });
    }
    while let Some(joined) = tasks.join_next().await {
        let got = joined.unwrap().unwrap();
        assert_eq!(
            value(&got, "access_token"),
            reveal(&server.latest_access_token().unwrap())
        );
    }
    assert_eq!(server.counts().grants, 2, "single flight");
}

#[tokio::test]
async fn error_classes_match_the_refresh_grant() {
    let server =
        MockTokenServer::start(MockConfig::new().with_client(CLIENT_ID, CLIENT_SECRET)).await;
    let wrong = cc_provider(&server, "wrong-secret", clock());
    let err = wrong.grant_client_credentials("svc").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    let p = cc_provider(&server, CLIENT_SECRET, clock());
    server.fail_next(Fault::RateLimited(Some(3)));
    assert_eq!(
        p.grant_client_credentials("svc").await.unwrap_err().kind(),
        ErrorKind::RateLimited
    );
    server.fail_next(Fault::ServerError);
    assert!(
        p.grant_client_credentials("svc")
            .await
            .unwrap_err()
            .is_temporary()
    );
    server.fail_next(Fault::OAuthError("unauthorized_client".into()));
    assert_eq!(
        p.grant_client_credentials("svc").await.unwrap_err().kind(),
        ErrorKind::RefreshRejected
    );
    // supports() needs no refresh token with this grant.
    let cred = p.grant_client_credentials("svc").await.unwrap();
    assert!(p.supports(&cred));
}

#[tokio::test]
async fn refresh_token_provider_refuses_grant_client_credentials() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let p = OAuth2Provider::new(OAuth2Config::new("p", server.token_url(), "c")).unwrap();
    let err = p.grant_client_credentials("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(server.counts().arrivals, 0);
}
