//! The client-credentials grant path against `testkit::MockTokenServer` on 127.0.0.1,
//! with a same-run baseline:
//! - `bare_reqwest_token_request`: the baseline, one token request as an application
//!   without hive-cred would make it (reqwest POST with HTTP Basic client
//!   authentication, JSON parse of the answer);
//! - `provider_client_credentials_refresh`: `OAuth2Provider::refresh` of a
//!   client-credentials credential (the same request, plus response classification and
//!   the new credential);
//! - `store_refresh_client_credentials`: `CredentialStore::refresh` of that credential
//!   on `MemoryStorage` (single flight, provider, check-and-set save, cache): what a
//!   caller pays for one "refresh" that is a new grant.
//!
//! Overhead of hive-cred over a bare request = `store_..` / `bare_..`; the mock server's
//! own time is in all three.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::{CredentialProvider, CredentialStorage, CredentialStore, MemoryStorage};
use hive_cred_oauth::testkit::{MockConfig, MockTokenServer};
use hive_cred_oauth::{Grant, OAuth2Config, OAuth2Provider};

const CLIENT_ID: &str = "bench-m2m";
const CLIENT_SECRET: &str = "bench-m2m-secret";

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = rt.block_on(MockTokenServer::start(
        MockConfig::new().with_client(CLIENT_ID, CLIENT_SECRET),
    ));
    let token_url = server.token_url();
    let provider = Arc::new(
        OAuth2Provider::new(
            OAuth2Config::new("m2m", token_url.clone(), CLIENT_ID)
                .with_client_secret(CLIENT_SECRET.into())
                .with_grant(Grant::ClientCredentials)
                .with_scopes(["read"]),
        )
        .expect("valid config"),
    );
    let first = rt
        .block_on(provider.grant_client_credentials("svc"))
        .expect("first grant");
    let storage = Arc::new(MemoryStorage::new());
    rt.block_on(storage.save(&first)).expect("seed");
    let store = CredentialStore::builder()
        .storage(storage)
        .provider(provider.clone())
        .build()
        .expect("store");
    let http = reqwest::Client::new();

    let mut group = c.benchmark_group("grant");
    group.bench_function("bare_reqwest_token_request", |b| {
        b.to_async(&rt).iter(|| async {
            let answer: serde_json::Value = http
                .post(&token_url)
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .form(&[("grant_type", "client_credentials"), ("scope", "read")])
                .send()
                .await
                .expect("token request")
                .error_for_status()
                .expect("granted")
                .json()
                .await
                .expect("JSON answer");
            assert!(answer["access_token"].is_string());
        })
    });
    group.bench_function("provider_client_credentials_refresh", |b| {
        b.to_async(&rt)
            .iter(|| async { provider.refresh(&first).await.expect("grant") })
    });
    group.bench_function("store_refresh_client_credentials", |b| {
        b.to_async(&rt)
            .iter(|| async { store.refresh("svc").await.expect("store refresh") })
    });
    group.finish();
}

criterion_group!(grant, benches);
criterion_main!(grant);
