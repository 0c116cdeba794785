//! Benchmarks of `VaultStorage` against a real OpenBao dev server
//! (`HIVE_TEST_VAULT_ADDR` / `HIVE_TEST_VAULT_TOKEN`, else one started from
//! `HIVE_TEST_BAO_BIN` or `bao` on PATH): load, save and list with 1,000 credentials
//! stored, a warm `CredentialStore::get` (served from memory, no network), and a cold
//! `CredentialStore::get` (a fresh store: one KV read) over loopback TLS against a
//! `-dev-tls` server vs over plain HTTP against a plain dev server.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialStore, CredentialType,
};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};

const STORED: usize = 1_000;

fn credential(id: &CredentialId, value: &str) -> CredentialObject {
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::OAuth2);
    c.set_provider_id(Some("oauth2_provider".into()));
    c.set_key("access_token", value, None).unwrap();
    c.set_key("refresh_token", "refresh-token-value", None)
        .unwrap();
    c
}

fn bench(c: &mut Criterion) {
    let Some(target) = support::shared() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = support::unique_prefix("bench");
    let storage = rt.block_on(support::root_storage(&target, &prefix));
    let ids: Vec<CredentialId> = (0..STORED)
        .map(|i| CredentialId::new(&format!("cred-{i:04}")).unwrap())
        .collect();
    rt.block_on(async {
        futures::stream::iter(ids.iter())
            .for_each_concurrent(16, |id| {
                let storage = &storage;
                async move {
                    storage
                        .save(&credential(id, "access-token-value"))
                        .await
                        .unwrap();
                }
            })
            .await;
    });
    assert_eq!(rt.block_on(storage.list()).unwrap().len(), STORED);

    let mut group = c.benchmark_group("vault_1000_stored");
    let probe = ids[STORED / 2].clone();
    group.bench_function("load", |b| {
        b.to_async(&rt)
            .iter(|| async { storage.load(&probe).await.unwrap().unwrap() });
    });

    let mut current = rt.block_on(storage.load(&probe)).unwrap().unwrap();
    group.bench_function("save", |b| {
        b.iter(|| {
            rt.block_on(storage.save(&current)).unwrap();
            let next = current.version() + 1;
            current.set_version(next);
        });
    });

    group.bench_function("list", |b| {
        b.to_async(&rt).iter(|| async {
            let listed = storage.list().await.unwrap();
            assert_eq!(listed.len(), STORED);
            listed
        });
    });
    group.finish();

    let store = CredentialStore::builder()
        .storage(Arc::new(storage.clone()))
        .cache_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    rt.block_on(store.get(probe.as_str())).unwrap();
    c.bench_function("credential_store_warm_get", |b| {
        b.to_async(&rt)
            .iter(|| async { store.get(probe.as_str()).await.unwrap() });
    });

    // Leave a shared server as it was.
    rt.block_on(async {
        futures::stream::iter(ids.iter())
            .for_each_concurrent(16, |id| {
                let storage = &storage;
                async move {
                    storage.delete(id).await.unwrap();
                }
            })
            .await;
    });
}

/// `CredentialStore::get` through a fresh store (nothing cached: one KV read over a
/// pooled connection) against a plain dev server and a `-dev-tls` one.
fn cold_get(c: &mut Criterion) {
    let (Some(plain), Some(tls)) = (support::own_server(None), support::own_tls_server()) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let id = CredentialId::new("cold").unwrap();
    let mut group = c.benchmark_group("vault_cold_get");
    for (name, config) in [
        (
            "http",
            VaultConfig::new(&plain.addr(), VaultAuth::token(support::ROOT_TOKEN)).unwrap(),
        ),
        (
            "tls",
            VaultConfig::new(&tls.addr(), VaultAuth::token(support::ROOT_TOKEN))
                .unwrap()
                .with_ca_cert(tls.tls_ca()),
        ),
    ] {
        let storage: Arc<dyn CredentialStorage> =
            Arc::new(rt.block_on(VaultStorage::new(config)).unwrap());
        rt.block_on(storage.save(&credential(&id, "access-token-value")))
            .unwrap();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let store = CredentialStore::builder()
                    .storage(storage.clone())
                    .build()
                    .unwrap();
                store.get("cold").await.unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench, cold_get);
criterion_main!(benches);
