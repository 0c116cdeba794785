//! What a store does with hostile or odd files at its paths (FIFOs, links, older formats,
//! forged scrypt costs), and that its work never stalls the async executor.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hive_cred_core::{CredentialStorage, ErrorKind};
use hive_cred_local::{LocalStorage, LocalStorageOptions, ScryptParams};

#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `$body` (with a clone of the handle `$s`) in a task and fails the test if it takes
/// over 5 s: a hang, even one that blocks a worker thread, is a failure, not a stuck test.
macro_rules! within {
    ($s:ident, $body:expr) => {{
        let $s = $s.clone();
        tokio::time::timeout(Duration::from_secs(5), tokio::spawn(async move { $body }))
            .await
            .expect("hung")
            .unwrap()
    }};
}

/// A store with credential `a` saved, and the path of its record file.
async fn store_with_a() -> (tempfile::TempDir, LocalStorage, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    s.save(&api_key("a", "v1")).await.unwrap();
    let file = record_files(tmp.path()).remove(0);
    (tmp, s, file)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_a_record_header_or_lock_path_is_a_prompt_error_never_a_hang() {
    let (tmp, s, file) = store_with_a().await;
    fs::remove_file(&file).unwrap();
    mkfifo(&file);
    let err = within!(s, s.load(&id("a")).await).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(
        err.message()
            .contains("credential record path holds a FIFO"),
        "{err}"
    );
    let err = within!(s, s.save(&api_key("a", "v2")).await).unwrap_err();
    assert!(err.message().contains("FIFO"), "{err}");
    assert!(within!(s, s.exists(&id("a")).await).is_err());
    // A fresh handle's list skips it with a warning instead of hanging.
    let fresh = open(tmp.path(), raw_key(1)).await;
    assert!(within!(fresh, fresh.list().await).unwrap().is_empty());
    fs::remove_file(&file).unwrap();

    let header = tmp.path().join("store.header");
    let saved = fs::read(&header).unwrap();
    fs::remove_file(&header).unwrap();
    mkfifo(&header);
    let dir = tmp.path().to_owned();
    let err = within!(
        dir,
        LocalStorage::open_with(dir, raw_key(1), fast_options()).await
    )
    .unwrap_err();
    assert!(
        err.message().contains("store header path holds a FIFO"),
        "{err}"
    );
    fs::remove_file(&header).unwrap();
    fs::write(&header, saved).unwrap();

    let lock = tmp.path().join("store.lock");
    let _ = fs::remove_file(&lock);
    mkfifo(&lock);
    let err = within!(s, s.save(&api_key("b", "v")).await).unwrap_err();
    assert!(
        err.message().contains("lock file path holds a FIFO"),
        "{err}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_or_hard_link_at_a_record_path_is_refused_and_never_written_through() {
    let (tmp, s, file) = store_with_a().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("target.cred");
    fs::rename(&file, &target).unwrap();
    std::os::unix::fs::symlink(&target, &file).unwrap();
    let before = fs::read(&target).unwrap();
    let err = s.load(&id("a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.message().contains("symbolic link"), "{err}");
    let stale = api_key("a", "v2");
    assert!(s.save(&stale).await.is_err());
    assert_eq!(fs::read(&target).unwrap(), before, "written through a link");
    fs::remove_file(&file).unwrap();

    fs::hard_link(&target, &file).unwrap();
    let err = s.load(&id("a")).await.unwrap_err();
    assert!(err.message().contains("2 hard links"), "{err}");
    let mut current = api_key("a", "v2");
    current.set_version(1);
    assert!(s.save(&current).await.is_err());
    assert_eq!(fs::read(&target).unwrap(), before, "written through a link");
    drop(tmp);
}

#[tokio::test]
async fn files_of_the_unreleased_format_1_are_refused_with_what_to_do() {
    let (tmp, _s, file) = store_with_a().await;
    for path in [file, tmp.path().join("store.header")] {
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[8..10], &[2, 0], "this build writes version 2");
        bytes[8] = 1;
        fs::write(&path, bytes).unwrap();
    }
    let err = LocalStorage::open_with(tmp.path(), raw_key(1), fast_options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.message().contains("format version 1"), "{err}");
    assert!(
        err.message().contains("unreleased development build"),
        "{err}"
    );
    assert!(err.message().contains("new store"), "{err}");
}

/// Rewrites the scrypt cost in a passphrase store's header (bytes 28.. : log_n, r, p).
fn forge_cost(header: &std::path::Path, log_n: u8, r: u32, p: u32) {
    let mut bytes = fs::read(header).unwrap();
    let at = 8 + 2 + 1 + 16 + 1;
    bytes[at] = log_n;
    bytes[at + 1..at + 5].copy_from_slice(&r.to_le_bytes());
    bytes[at + 5..at + 9].copy_from_slice(&p.to_le_bytes());
    fs::write(header, bytes).unwrap();
}

#[tokio::test]
async fn a_forged_header_asking_for_more_scrypt_work_is_refused_before_deriving() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), passphrase("pw")).await;
    s.save(&api_key("a", "v")).await.unwrap();
    let header = tmp.path().join("store.header");
    // 128 MiB like the default, but p = 16: sixteen times its work (about 8 s here).
    forge_cost(&header, 17, 8, 16);
    let start = Instant::now();
    let err = LocalStorage::open_with(tmp.path(), passphrase("pw"), fast_options())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.message().contains("work cap"), "{err}");
    assert!(ScryptParams::new(17, 8, 16).is_err());
}

/// The store derives a key on a load when another handle created the store: a timer on
/// the same single-threaded runtime must keep firing meanwhile.
#[test]
fn a_load_that_derives_a_key_does_not_stall_the_executor() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let options =
            || LocalStorageOptions::new().with_scrypt_params(ScryptParams::new(16, 8, 1).unwrap());
        let reader = LocalStorage::open_with(tmp.path(), passphrase("pw"), options())
            .await
            .unwrap();
        let writer = LocalStorage::open_with(tmp.path(), passphrase("pw"), options())
            .await
            .unwrap();
        // The writer creates the store with its own salt: the reader must derive again.
        writer.save(&api_key("a", "v")).await.unwrap();

        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = Arc::clone(&ticks);
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        let loaded = reader.load(&id("a")).await.unwrap();
        let stalled = start.elapsed();
        ticker.abort();
        assert!(loaded.is_some());
        assert!(
            stalled >= Duration::from_millis(20),
            "no derivation? {stalled:?}"
        );
        let ticks = ticks.load(Ordering::Relaxed);
        assert!(
            ticks >= 5,
            "the timer fired {ticks} times during a {stalled:?} load"
        );
    });
}
