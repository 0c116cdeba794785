//! Benchmarks against the loopback token endpoint of the tests:
//! - `refresh_round_trip`: one `OAuth2Provider::refresh` (HTTP POST, parse, new credential);
//! - `store_get_with_refresh`: `CredentialStore::get` of a credential that needs a refresh
//!   every time (the endpoint answers `expires_in: 0`): load, refresh, save, cache.
//!
//! Store-level overhead of a refresh = `store_get_with_refresh` − `refresh_round_trip`
//! (both hit the same endpoint, so the endpoint's own time cancels out).

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::{CredentialStorage, CredentialStore, MemoryStorage, SecretString};
use hive_cred_oauth::{OAuth2Config, OAuth2Provider};

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = rt.block_on(common::TestServer::start());
    let make_provider = || {
        OAuth2Provider::new(
            OAuth2Config::new(
                "bench_oauth",
                server.url("/token/instant-expiry"),
                common::CLIENT_ID,
            )
            .with_client_secret(SecretString::from(common::CLIENT_SECRET)),
        )
        .expect("valid config")
    };

    let provider = make_provider();
    let mut credential = common::expired_credential("bench", "bench_oauth", "rt-bench");
    // Expired on the real clock (the tests' helper expires it relative to their fixed t0).
    credential
        .set_key(
            "access_token",
            "at-old",
            Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .expect("valid key");

    let storage = Arc::new(MemoryStorage::new());
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .provider(Arc::new(make_provider()))
        .build()
        .expect("store");
    rt.block_on(storage.save(&credential))
        .expect("seed credential");

    let mut group = c.benchmark_group("oauth");
    group.bench_function("refresh_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            use hive_cred_core::CredentialProvider;
            provider.refresh(&credential).await.expect("refresh")
        })
    });
    group.bench_function("store_get_with_refresh", |b| {
        b.to_async(&rt)
            .iter(|| async { store.get("bench").await.expect("get with refresh") })
    });
    group.finish();
}

criterion_group!(oauth, benches);
criterion_main!(oauth);
