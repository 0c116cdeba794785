//! Benchmarks of the Vault lease lock against a real OpenBao dev server
//! (`HIVE_TEST_VAULT_ADDR` / `HIVE_TEST_VAULT_TOKEN`, else one started from
//! `HIVE_TEST_BAO_BIN` or `bao` on PATH): an uncontended acquire + release round trip,
//! and the same with 8 tasks on two storages contending for one lock.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::lock::LockOptions;
use hive_cred_core::{CredentialId, CredentialStorage};

fn bench(c: &mut Criterion) {
    let Some(target) = support::shared() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = support::unique_prefix("bench-lock");
    let a = rt.block_on(support::root_storage(&target, &prefix));
    let b = rt.block_on(support::root_storage(&target, &prefix));
    let options = LockOptions::new()
        .with_ttl(Duration::from_secs(60))
        .with_wait(Duration::from_secs(60));

    let mut group = c.benchmark_group("vault_lock");
    let id = CredentialId::new("bench-uncontended").unwrap();
    group.bench_function("acquire_release", |bench| {
        bench.to_async(&rt).iter(|| async {
            let held = a.lock(&id, &options).await.unwrap();
            held.release().await.unwrap();
        });
    });

    let id = CredentialId::new("bench-contended").unwrap();
    group.sample_size(20);
    group.bench_function("8_tasks_2_storages_each_acquire_release", |bench| {
        bench.to_async(&rt).iter(|| async {
            let mut tasks = Vec::new();
            for t in 0..8 {
                let storage = if t % 2 == 0 { a.clone() } else { b.clone() };
                let (id, options) = (id.clone(), options.clone());
                tasks.push(tokio::spawn(async move {
                    let held = storage.lock(&id, &options).await.unwrap();
                    held.release().await.unwrap();
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
