//! Hot paths of hive-cred-core: warm `get`, `resolve`, `needs_refresh`, and the stored
//! codec every persistent backend decodes with on each load.
//!
//! `accounts/*`: warm `get`, `get_key` and `resolve` of an account addressed as
//! `provider/alias` (`github/work`) against the same calls by plain id (`github`, an
//! identical credential) and by the stored account id (`github.work`), measured in one
//! run: the cost of account addressing on the calls tools make.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use chrono::{Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::{
    CredentialObject, CredentialStore, CredentialType, DEFAULT_REFRESH_WINDOW, MemoryStorage,
};

fn store_with_credentials(rt: &tokio::runtime::Runtime) -> CredentialStore {
    let store = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .build()
        .expect("store");
    rt.block_on(async {
        let mut gh = CredentialObject::builder("github", CredentialType::OAuth2)
            .provider_id("oauth2_provider")
            .auto_refresh(true)
            .build()
            .expect("valid");
        gh.set_key(
            "access_token",
            "gho_0123456789abcdef",
            Some(Utc::now() + Duration::hours(8)),
        )
        .expect("key");
        gh.set_key("refresh_token", "ghr_0123456789abcdef", None)
            .expect("key");
        store.save(gh).await.expect("save");
        // Warm the cache.
        store.get("github").await.expect("get");
    });
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = store_with_credentials(&rt);

    c.bench_function("store/get_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.get(black_box("github")).await.expect("get")) })
    });
    c.bench_function("store/resolve_one_placeholder", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                store
                    .resolve(black_box("Bearer {{github.access_token}}"))
                    .await
                    .expect("resolve"),
            )
        })
    });

    let mut five = CredentialObject::new("five", CredentialType::Custom).expect("valid");
    for i in 0..5 {
        five.set_key(
            format!("k{i}"),
            "v",
            Some(Utc::now() + Duration::hours(i + 1)),
        )
        .expect("key");
    }
    let now = Utc::now();
    c.bench_function("credential/needs_refresh_5_keys", |b| {
        b.iter(|| black_box(&five).needs_refresh_at(black_box(now), DEFAULT_REFRESH_WINDOW))
    });

    // The shape of an OAuth2 record: two keys, one with an expiry, nanosecond timestamps.
    let mut oauth = CredentialObject::builder("github", CredentialType::OAuth2)
        .provider_id("oauth2_provider")
        .auto_refresh(true)
        .build()
        .expect("valid");
    oauth
        .set_key(
            "access_token",
            "gho_".repeat(10),
            Some(Utc::now() + Duration::hours(1)),
        )
        .expect("key");
    oauth
        .set_key("refresh_token", "ghr_".repeat(10), None)
        .expect("key");
    let bin = hive_cred_core::codec::to_stored_bytes(&oauth).expect("encode");
    c.bench_function("codec/decode_binary_oauth2", |b| {
        b.iter(|| hive_cred_core::codec::from_stored(black_box(&bin)).expect("decode"))
    });
    c.bench_function("codec/encode_binary_oauth2", |b| {
        b.iter(|| hive_cred_core::codec::to_stored_bytes(black_box(&oauth)).expect("encode"))
    });
}

/// Two credentials with the same keys: `github` (plain id) and the account
/// `github.work`; both warm in the cache.
fn store_with_account(rt: &tokio::runtime::Runtime) -> CredentialStore {
    let store = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .build()
        .expect("store");
    rt.block_on(async {
        for (id, account) in [("github", None), ("github.work", Some("work"))] {
            let mut b = CredentialObject::builder(id, CredentialType::ApiKey);
            if let Some(alias) = account {
                b = b.account("github", Some(alias));
            }
            let mut c = b.build().expect("valid");
            c.set_key("access_token", "gho_0123456789abcdef", None)
                .expect("key");
            store.save(c).await.expect("save");
            store.get(id).await.expect("warm");
        }
    });
    store
}

fn bench_accounts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = store_with_account(&rt);
    let mut g = c.benchmark_group("accounts");
    for (name, id) in [
        ("plain_id", "github"),
        ("account_id", "github.work"),
        ("provider_alias", "github/work"),
    ] {
        g.bench_function(format!("get/{name}"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(store.get(black_box(id)).await.expect("get")) })
        });
        g.bench_function(format!("get_key/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    store
                        .get_key(black_box(id), "access_token")
                        .await
                        .expect("get_key"),
                )
            })
        });
        let template = format!("Bearer {{{{{id}.access_token}}}}");
        g.bench_function(format!("resolve/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(store.resolve(black_box(&template)).await.expect("resolve"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_accounts);
criterion_main!(benches);
