//! Refresh and pre-step costs where users feel them, each beside a baseline measured in
//! the same run:
//! - `refresh/overhead_local_durable`: a forced refresh through `AgentRuntime`'s store
//!   over the local encrypted store (lock, re-read, provider, durable check-and-set save,
//!   cache), with a provider that answers at once, so the endpoint's own time is
//!   excluded. Baseline: `refresh/baseline_local_durable_save`, one durable save of the
//!   same credential straight to `LocalStorage`.
//! - `prestep/5_warm`: `AgentRuntime::prepare_node` of a node declaring 5 cached
//!   credentials. Baseline: `prestep/baseline_5_warm_gets`, five warm `get`s in a row.
//! - `runtime_store/get_warm`: a cache hit through the runtime's store (observed local
//!   storage, audit hook). Baseline: `runtime_store/baseline_bare_get_warm`, a bare
//!   `CredentialStore` over `MemoryStorage` without hooks.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::{
    CredentialObject, CredentialProvider, CredentialStorage, CredentialStore, CredentialType,
    MemoryStorage, Result,
};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_runtime::{AgentRuntime, NodeSpec};

/// A token endpoint that answers at once with a rotated pair.
#[derive(Debug, Default)]
struct Instant {
    n: AtomicU64,
}

#[async_trait]
impl CredentialProvider for Instant {
    fn provider_id(&self) -> &str {
        "instant"
    }
    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        let mut fresh = c.clone();
        fresh.set_key(
            "access_token",
            format!("gho_access_token_value_{n:016}"),
            Some(now + chrono::Duration::hours(1)),
        )?;
        fresh.set_key(
            "refresh_token",
            format!("ghr_refresh_token_value_{n:016}"),
            None,
        )?;
        fresh.set_last_refreshed(now);
        Ok(fresh)
    }
}

fn oauth(id: &str) -> CredentialObject {
    let mut c = CredentialObject::builder(id, CredentialType::OAuth2)
        .provider_id("instant")
        .auto_refresh(true)
        .build()
        .unwrap();
    c.set_key(
        "access_token",
        "gho_initial_access_token_0000",
        Some(Utc::now() + chrono::Duration::hours(1)),
    )
    .unwrap();
    c.set_key("refresh_token", "ghr_initial_refresh_token_0000", None)
        .unwrap();
    c
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = || KeySource::RawKey(hive_cred_local::RawKey::from_bytes([7u8; 32]));
    let (runtime, local) = rt.block_on(async {
        let local = Arc::new(LocalStorage::open(dir.path(), key()).await.unwrap());
        let runtime = AgentRuntime::builder()
            .storage(local.clone())
            .provider(Arc::new(Instant::default()))
            .build()
            .await
            .unwrap();
        runtime
            .credential_store
            .save(oauth("github"))
            .await
            .unwrap();
        for i in 0..5 {
            let mut k = CredentialObject::new(&format!("key{i}"), CredentialType::ApiKey).unwrap();
            k.set_key("api_key", format!("api-key-value-{i:04}-abcdef"), None)
                .unwrap();
            runtime.credential_store.save(k).await.unwrap();
        }
        local.save(&oauth("baseline")).await.unwrap();
        (runtime, local)
    });

    let mut g = c.benchmark_group("refresh");
    g.bench_function("overhead_local_durable", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(runtime.credential_store.refresh("github").await.unwrap()) })
    });
    let id = "baseline".parse().unwrap();
    g.bench_function("baseline_local_durable_save", |b| {
        b.to_async(&rt).iter(|| async {
            let current = local.load(&id).await.unwrap().unwrap();
            local.save(black_box(&current)).await.unwrap();
        })
    });
    g.finish();

    let spec = NodeSpec::new("bench").credentials((0..5).map(|i| format!("key{i}")));
    rt.block_on(runtime.prepare_node(&spec)).unwrap();
    let mut g = c.benchmark_group("prestep");
    g.bench_function("5_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(runtime.prepare_node(&spec).await.unwrap()) })
    });
    g.bench_function("baseline_5_warm_gets", |b| {
        b.to_async(&rt).iter(|| async {
            for i in ["key0", "key1", "key2", "key3", "key4"] {
                black_box(runtime.credential_store.get(i).await.unwrap());
            }
        })
    });
    g.finish();

    let bare = rt.block_on(async {
        let store = CredentialStore::builder()
            .storage(Arc::new(MemoryStorage::new()))
            .build()
            .unwrap();
        let mut k = CredentialObject::new("key0", CredentialType::ApiKey).unwrap();
        k.set_key("api_key", "api-key-value-0000-abcdef", None)
            .unwrap();
        store.save(k).await.unwrap();
        store
    });
    let mut g = c.benchmark_group("runtime_store");
    g.bench_function("get_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(runtime.credential_store.get("key0").await.unwrap()) })
    });
    g.bench_function("baseline_bare_get_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.get("key0").await.unwrap()) })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
