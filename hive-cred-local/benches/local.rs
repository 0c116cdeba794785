//! Benchmarks at the level users call: `CredentialStore` over `LocalStorage`, with
//! baselines measured in the same run and group.
//!
//! Run: `cargo bench -p hive-cred-local --bench local -- --warm-up-time 1 --measurement-time 3`.
//! `HIVE_BENCH_SIZES=1000,10000` sets the store sizes (default 1000; every save of the
//! population is durable, so 10,000 takes a while).
//!
//! - `get_cold_<n>`: the first `get` of each credential on a freshly opened store (a new
//!   `LocalStorage` handle with a raw key and a new `CredentialStore`, as in a new
//!   process), per credential. Baselines: the same through `MemoryStorage` (the store's
//!   own miss path), the backend's `load` alone on a fresh handle, and below that the
//!   floor of any load that keeps file I/O off the executor: a `spawn_blocking` hop alone,
//!   and the hop plus reading one record file.
//! - `get_warm_<n>`: a cached `get`.
//! - `list_fresh_<n>`: `list` through a new store on a new handle; baselines: the same on
//!   `MemoryStorage`, and `std::fs::read_dir` of the store directory.
//! - `save_<n>`: a durable save through the store; baseline: the bare
//!   write + fsync + rename + fsync(dir) of a 400-byte file.
//! - `open`: diagnostics of `LocalStorage::open` (raw key, and scrypt at the default cost).
#![allow(clippy::unwrap_used)] // benchmark setup: a panic is the failure report
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialStore, CredentialType,
    MemoryStorage,
};
use hive_cred_local::{KeySource, LocalStorage, RawKey};
use secrecy::SecretString;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn key() -> KeySource {
    KeySource::RawKey(RawKey::from_bytes([42; 32]))
}

fn credential(i: usize) -> CredentialObject {
    let mut c = CredentialObject::builder(format!("cred-{i:05}"), CredentialType::OAuth2)
        .provider_id("oauth2_provider")
        .auto_refresh(true)
        .build()
        .unwrap();
    c.set_key(
        "access_token",
        format!("gho_{i:036}"),
        Some(chrono::Utc::now() + chrono::Duration::hours(24)),
    )
    .unwrap();
    c.set_key("refresh_token", format!("ghr_{i:036}"), None)
        .unwrap();
    c
}

async fn populate(storage: &dyn CredentialStorage, n: usize) {
    let existing = storage.list().await.unwrap().len();
    for i in existing..n {
        storage.save(&credential(i)).await.unwrap();
    }
}

fn store_over(storage: Arc<dyn CredentialStorage>) -> CredentialStore {
    CredentialStore::builder().storage(storage).build().unwrap()
}

async fn fresh_local(dir: &Path) -> LocalStorage {
    LocalStorage::open(dir, key()).await.unwrap()
}

/// Times `iters` first reads, one per credential, on fresh handles: `fresh()` makes one
/// (not timed) every `ids.len()` reads, so that no read repeats on a handle.
fn cold<H, F, R>(
    rt: &Runtime,
    ids: &[CredentialId],
    iters: u64,
    fresh: impl Fn() -> F,
    read: impl Fn(H, CredentialId) -> R,
) -> Duration
where
    H: Clone,
    F: std::future::Future<Output = H>,
    R: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let mut timed = Duration::ZERO;
        let mut handle = None;
        for i in 0..iters as usize {
            let at = i % ids.len();
            if at == 0 {
                handle = Some(fresh().await);
            }
            let h = handle.clone().unwrap();
            let start = Instant::now();
            read(h, ids[at].clone()).await;
            timed += start.elapsed();
        }
        timed
    })
}

fn bench_size(c: &mut Criterion, rt: &Runtime, n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("credentials");
    let memory: Arc<dyn CredentialStorage> = Arc::new(MemoryStorage::new());
    rt.block_on(async {
        populate(&fresh_local(&dir).await, n).await;
        populate(memory.as_ref(), n).await;
    });
    // Let the kernel write back the population before timing.
    let _ = std::process::Command::new("sync").status();
    let ids: Vec<CredentialId> = (0..n)
        .map(|i| CredentialId::new(&format!("cred-{i:05}")).unwrap())
        .collect();

    let mut g = c.benchmark_group(format!("get_cold_{n}"));
    g.bench_function("store_over_local", |b| {
        b.iter_custom(|iters| {
            cold(
                rt,
                &ids,
                iters,
                || async { store_over(Arc::new(fresh_local(&dir).await)) },
                |store, id| async move {
                    store.get(id.as_str()).await.unwrap();
                },
            )
        })
    });
    g.bench_function("baseline_store_over_memory", |b| {
        b.iter_custom(|iters| {
            cold(
                rt,
                &ids,
                iters,
                || async { store_over(Arc::clone(&memory)) },
                |store, id| async move {
                    store.get(id.as_str()).await.unwrap();
                },
            )
        })
    });
    g.bench_function("baseline_local_load", |b| {
        b.iter_custom(|iters| {
            cold(
                rt,
                &ids,
                iters,
                || fresh_local(&dir),
                |local, id| async move {
                    local.load(&id).await.unwrap().unwrap();
                },
            )
        })
    });
    // The floor below `baseline_local_load`: the hop to the blocking pool that keeps file
    // I/O off the executor, plus reading one record file there (no decryption, no decode).
    let records: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cred"))
        .collect();
    assert_eq!(records.len(), n);
    let mut next = 0;
    g.bench_function("baseline_blocking_read_file", |b| {
        b.to_async(rt).iter(|| {
            next = (next + 1) % records.len();
            let path = records[next].clone();
            async move {
                tokio::task::spawn_blocking(move || std::fs::read(path).unwrap())
                    .await
                    .unwrap()
            }
        })
    });
    g.bench_function("baseline_blocking_hop", |b| {
        b.to_async(rt)
            .iter(|| async { tokio::task::spawn_blocking(|| ()).await.unwrap() })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("get_warm_{n}"));
    let store = rt.block_on(async { store_over(Arc::new(fresh_local(&dir).await)) });
    rt.block_on(store.get("cred-00007")).unwrap();
    g.bench_function("store_over_local", |b| {
        b.to_async(rt)
            .iter(|| async { store.get("cred-00007").await.unwrap() })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("list_fresh_{n}"));
    g.sample_size(20);
    let one = [CredentialId::new("cred-00000").unwrap()];
    g.bench_function("store_over_local", |b| {
        b.iter_custom(|iters| {
            cold(
                rt,
                &one,
                iters,
                || async { store_over(Arc::new(fresh_local(&dir).await)) },
                |store, _| async move {
                    assert_eq!(store.list().await.unwrap().len(), n);
                },
            )
        })
    });
    g.bench_function("baseline_store_over_memory", |b| {
        b.iter_custom(|iters| {
            cold(
                rt,
                &one,
                iters,
                || async { store_over(Arc::clone(&memory)) },
                |store, _| async move {
                    assert_eq!(store.list().await.unwrap().len(), n);
                },
            )
        })
    });
    g.bench_function("baseline_read_dir", |b| {
        b.iter(|| std::fs::read_dir(&dir).unwrap().count())
    });
    g.finish();

    let mut g = c.benchmark_group(format!("save_{n}"));
    g.sample_size(20);
    let store = rt.block_on(async { store_over(Arc::new(fresh_local(&dir).await)) });
    let mut current = rt.block_on(store.get("cred-00003")).unwrap();
    g.bench_function("store_over_local_durable", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    current = store.save((*current).clone()).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("baseline_write_fsync_rename_fsync_dir", |b| {
        let scratch = tempfile::tempdir_in(&dir).unwrap();
        let target = scratch.path().join("f");
        b.iter(|| {
            let tmp = scratch.path().join("t");
            let mut f = std::fs::File::create(&tmp).unwrap();
            std::io::Write::write_all(&mut f, &[7u8; 400]).unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, &target).unwrap();
            std::fs::File::open(scratch.path())
                .unwrap()
                .sync_all()
                .unwrap();
        })
    });
    g.finish();
}

fn bench_sizes(c: &mut Criterion) {
    let rt = runtime();
    let sizes = std::env::var("HIVE_BENCH_SIZES").unwrap_or_else(|_| "1000".into());
    for n in sizes.split(',').map(|s| s.trim().parse::<usize>().unwrap()) {
        bench_size(c, &rt, n);
    }
}

fn bench_open(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let pass = || KeySource::Passphrase(SecretString::from("correct horse battery staple"));
    rt.block_on(async {
        let s = LocalStorage::open(tmp.path(), pass()).await.unwrap();
        s.save(&credential(0)).await.unwrap();
    });
    let raw = tempfile::tempdir().unwrap();
    rt.block_on(async { populate(&fresh_local(raw.path()).await, 1).await });
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    g.bench_function("passphrase_scrypt_17_8_1", |b| {
        b.to_async(&rt)
            .iter(|| async { LocalStorage::open(tmp.path(), pass()).await.unwrap() })
    });
    g.bench_function("raw_key", |b| {
        b.to_async(&rt)
            .iter(|| async { fresh_local(raw.path()).await })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_sizes, bench_open
}
criterion_main!(benches);
