//! Benchmarks of the local store's hot paths.
//!
//! Run: `cargo bench -p hive-cred-local -- --warm-up-time 1 --measurement-time 3`.
//! Populating the 10,000-credential store takes a while (every save is durable).
//! "Cold" means a freshly opened handle (no cached ids, as in a new process) on a store
//! unchanged for over 2 s (see names.index in the README); the OS page cache is warm.
#![allow(clippy::unwrap_used)] // benchmark setup: a panic is the failure report
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hive_cred_core::{CredentialId, CredentialObject, CredentialStorage, CredentialType};
use hive_cred_local::{KeySource, LocalStorage, LocalStorageOptions, RawKey};
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
        Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .unwrap();
    c.set_key("refresh_token", format!("ghr_{i:036}"), None)
        .unwrap();
    c
}

async fn populate(dir: &Path, n: usize) -> LocalStorage {
    let s = LocalStorage::open(dir, key()).await.unwrap();
    let existing = s.list().await.unwrap().len();
    for i in existing..n {
        s.save(&credential(i)).await.unwrap();
    }
    s
}

fn bench_open(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let pass = || KeySource::Passphrase(SecretString::from("correct horse battery staple"));
    rt.block_on(async {
        let s = LocalStorage::open(tmp.path(), pass()).await.unwrap();
        s.save(&credential(0)).await.unwrap();
    });
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    g.bench_function("passphrase_scrypt_17_8_1", |b| {
        b.to_async(&rt)
            .iter(|| async { LocalStorage::open(tmp.path(), pass()).await.unwrap() })
    });
    g.bench_function("raw_key", |b| {
        let raw = tempfile::tempdir().unwrap();
        rt.block_on(populate(raw.path(), 1));
        b.to_async(&rt)
            .iter(|| async { LocalStorage::open(raw.path(), key()).await.unwrap() })
    });
    g.finish();
}

fn bench_store(c: &mut Criterion, n: usize, rt: &Runtime, dir: &Path) {
    let s = rt.block_on(populate(dir, n));
    // Populating leaves thousands of inodes and blocks for the kernel to write back,
    // which would otherwise run during (and slow down) the first benchmarks below.
    let _ = std::process::Command::new("sync").status();
    let mut g = c.benchmark_group(format!("store_{n}"));

    let id = CredentialId::new("cred-00007").unwrap();
    // Loads after the first read the record file kept open (see
    // `with_kept_open_records`)...
    g.bench_function("load_one", |b| {
        b.to_async(rt)
            .iter(|| async { s.load(&id).await.unwrap().unwrap() })
    });
    // ... and without kept files, every load opens the record file.
    let options = LocalStorageOptions::new().with_kept_open_records(0);
    let opening = rt
        .block_on(LocalStorage::open_with(dir, key(), options))
        .unwrap();
    g.bench_function("load_one_files_not_kept", |b| {
        b.to_async(rt)
            .iter(|| async { opening.load(&id).await.unwrap().unwrap() })
    });

    // Floors of this machine, for reading the figures above: the raw syscalls alone.
    let record = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cred"))
        .unwrap();
    g.bench_function("baseline_fs_read_one_file", |b| {
        b.iter(|| std::fs::read(&record).unwrap())
    });
    g.bench_function("baseline_write_fsync_rename_fsync_dir", |b| {
        let scratch = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
        let target = scratch.path().join("f");
        b.iter(|| {
            let tmp = scratch.path().join("t");
            let mut f = std::fs::File::create(&tmp).unwrap();
            std::io::Write::write_all(&mut f, &[7u8; 400]).unwrap();
            f.sync_data().unwrap();
            std::fs::rename(&tmp, &target).unwrap();
            std::fs::File::open(scratch.path())
                .unwrap()
                .sync_all()
                .unwrap();
        })
    });

    let mut target = rt.block_on(s.load(&id)).unwrap().unwrap();
    g.bench_function("save_durable", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    s.save(&target).await.unwrap();
                    let next = target.version() + 1;
                    target.set_version(next);
                }
                start.elapsed()
            })
        })
    });

    if n >= 10_000 {
        rt.block_on(s.list()).unwrap();
        g.bench_function("baseline_read_dir", |b| {
            b.iter(|| std::fs::read_dir(dir).unwrap().count())
        });
        g.bench_function("list_warm", |b| {
            b.to_async(rt).iter(|| async { s.list().await.unwrap() })
        });
        g.sample_size(10);
        // A new handle (a new process) on a store that has not changed for a while: the
        // first new handle decrypts every record and creates names.index; once the
        // directory has settled (2 s unchanged), the next one records that state in the
        // index, and from then on new handles take the listing from it.
        rt.block_on(async { LocalStorage::open(dir, key()).await.unwrap().list().await })
            .unwrap();
        std::thread::sleep(Duration::from_millis(2200));
        rt.block_on(async { LocalStorage::open(dir, key()).await.unwrap().list().await })
            .unwrap();
        g.bench_function("list_cold", |b| {
            b.iter_batched(
                || rt.block_on(LocalStorage::open(dir, key())).unwrap(),
                |fresh| rt.block_on(fresh.list()).unwrap(),
                BatchSize::PerIteration,
            )
        });
        g.bench_function("cold_load_all", |b| {
            b.iter_batched(
                || rt.block_on(LocalStorage::open(dir, key())).unwrap(),
                |fresh| {
                    rt.block_on(async {
                        let ids = fresh.list().await.unwrap();
                        let mut loaded = 0;
                        for id in &ids {
                            loaded += usize::from(fresh.load(id).await.unwrap().is_some());
                        }
                        assert_eq!(loaded, n);
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }

    // A load that finds the record changed since this handle last read it: decrypted
    // again. The change is the record file's bytes put back in place (same inode, no
    // flush) as they were after one of two saves, in turn, so that only the load's own
    // work is timed: right after a durable save, the CPU and its caches are cold from the
    // flush's wait and a load takes two to three times as long here.
    let images = two_saved_images(rt, &s, &mut target, dir);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("load_one_changed", |b| {
        use std::os::unix::fs::FileExt;
        let (path, versions) = &images;
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let mut turn = 0;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    turn = 1 - turn;
                    let (version, bytes) = &versions[turn];
                    file.write_all_at(bytes, 0).unwrap();
                    let start = Instant::now();
                    let loaded = s.load(&id).await.unwrap().unwrap();
                    timed += start.elapsed();
                    assert_eq!(loaded.version(), *version);
                }
                timed
            })
        })
    });
    g.finish();
}

/// The record file `s` saves `target` to, and its bytes after each of two saves, with
/// the version each holds.
fn two_saved_images(
    rt: &Runtime,
    s: &LocalStorage,
    target: &mut CredentialObject,
    dir: &Path,
) -> (PathBuf, [(u64, Vec<u8>); 2]) {
    let mut save = || {
        rt.block_on(s.save(target)).unwrap();
        let next = target.version() + 1;
        target.set_version(next);
        next
    };
    let records = || -> Vec<(PathBuf, Vec<u8>)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cred"))
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    };
    let before = records();
    let first = save();
    // The one record file the save changed (it writes in place: same name).
    let mut changed = records().into_iter().filter(|r| !before.contains(r));
    let (path, first_bytes) = changed.next().unwrap();
    assert!(
        changed.next().is_none(),
        "one save changed two record files"
    );
    let second = save();
    let second_bytes = std::fs::read(&path).unwrap();
    (path, [(first, first_bytes), (second, second_bytes)])
}

fn bench_stores(c: &mut Criterion) {
    let rt = runtime();
    for n in [100, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        bench_store(c, n, &rt, tmp.path());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_open, bench_stores
}
criterion_main!(benches);
