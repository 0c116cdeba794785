//! Behaviour of the encrypted store: bad input, tampering, permissions, re-keying,
//! several handles on one directory.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::fs;

use common::*;
use hive_cred_core::{CredentialStorage, ErrorKind};
use hive_cred_local::{KeySource, LocalStorage};

#[tokio::test]
async fn missing_directory_is_created_private_on_first_save() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("home/.hive/credentials");
    let s = open(&dir, raw_key(1)).await;
    assert!(!dir.exists(), "open must not create the directory");
    assert!(s.load(&id("a")).await.unwrap().is_none());
    assert!(s.list().await.unwrap().is_empty());
    assert!(!s.delete(&id("a")).await.unwrap());
    assert!(!dir.exists(), "reads and no-op deletes must not create it");
    s.save(&api_key("a", "v1")).await.unwrap();
    assert!(dir.is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for (file, _) in snapshot(&dir) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
    // A second handle opens what the first created.
    let again = open(&dir, raw_key(1)).await;
    assert_eq!(value_of(&again, "a").await, "v1");
}

#[tokio::test]
async fn wrong_passphrase_is_a_decryption_error_and_modifies_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), passphrase("right")).await;
    s.save(&api_key("a", "v1")).await.unwrap();
    let before = snapshot(tmp.path());
    let err = LocalStorage::open_with(tmp.path(), passphrase("wrong"), fast_options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption);
    assert!(
        err.message().contains("passphrase or key is wrong"),
        "{err}"
    );
    let err = LocalStorage::open_with(tmp.path(), raw_key(1), fast_options())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Config,
        "raw key for a passphrase store: {err}"
    );
    assert_eq!(snapshot(tmp.path()), before);
}

#[tokio::test]
async fn damaged_records_are_corrupted_naming_the_file_and_others_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    for name in ["truncated", "empty", "foreign", "future", "good"] {
        s.save(&api_key(name, &format!("{name}-value")))
            .await
            .unwrap();
    }
    // Find each id's file by loading through a fresh handle after damaging one at a time.
    let files = record_files(tmp.path());
    assert_eq!(files.len(), 5);
    let mut by_id = std::collections::HashMap::new();
    for file in &files {
        let original = fs::read(file).unwrap();
        fs::write(file, b"").unwrap();
        for name in ["truncated", "empty", "foreign", "future", "good"] {
            if s.load(&id(name)).await.is_err() {
                by_id.insert(name, (file.clone(), original.clone()));
            }
        }
        fs::write(file, &original).unwrap();
    }
    let damage = |name: &str, bytes: Vec<u8>| {
        let (file, _) = &by_id[name];
        fs::write(file, bytes).unwrap();
        file.clone()
    };
    let truncated = by_id["truncated"].1[..40].to_vec();
    let mut future = by_id["future"].1.clone();
    future[8] = 9;
    let cases = [
        ("truncated", damage("truncated", truncated), "truncated"),
        ("empty", damage("empty", Vec::new()), "empty"),
        (
            "foreign",
            damage("foreign", b"{\"id\":\"foreign\"}".to_vec()),
            "unknown file format",
        ),
        ("future", damage("future", future), "newer hive-cred"),
    ];
    let fresh = open(tmp.path(), raw_key(1)).await;
    for (name, file, says) in cases {
        let err = fresh.load(&id(name)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{name}: {err}");
        assert!(err.message().contains(says), "{name}: {err}");
        assert_eq!(
            err.context_value("file"),
            Some(file.display().to_string().as_str()),
            "{name}"
        );
    }
    assert_eq!(value_of(&fresh, "good").await, "good-value");
    // list skips what it cannot read, on a handle that has not cached the ids.
    assert_eq!(fresh.list().await.unwrap(), vec![id("good")]);
}

#[tokio::test]
async fn a_record_copied_over_another_id_or_from_another_store_fails_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    s.save(&api_key("alice", "alice-secret")).await.unwrap();
    s.save(&api_key("bob", "bob-secret")).await.unwrap();
    let files = record_files(tmp.path());
    let (a, b) = (fs::read(&files[0]).unwrap(), fs::read(&files[1]).unwrap());
    fs::write(&files[1], &a).unwrap();
    fs::write(&files[0], &b).unwrap();
    for name in ["alice", "bob"] {
        let err = s.load(&id(name)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decryption, "{err}");
    }

    // Same key, same id, different store: the store id is bound too.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path(), raw_key(1)).await;
    other.save(&api_key("carol", "x")).await.unwrap();
    s.save(&api_key("carol", "y")).await.unwrap();
    let theirs = record_files(other_dir.path()).remove(0);
    let carol_here = record_files(tmp.path())
        .into_iter()
        .find(|f| f != &files[0] && f != &files[1])
        .unwrap();
    fs::copy(theirs, &carol_here).unwrap();
    assert!(s.load(&id("carol")).await.is_err());
}

#[tokio::test]
async fn ids_and_values_never_appear_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    let canary = hive_cred_core::testkit::CANARY;
    s.save(&api_key("very-secret-project-name", canary))
        .await
        .unwrap();
    for (file, bytes) in snapshot(tmp.path()) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains("very-secret"), "{name}");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("very-secret") && !text.contains(canary));
        if name != "store.lock" {
            assert!(
                bytes.starts_with(b"HIVECRED"),
                "{name} has the versioned header"
            );
        }
    }
}

#[tokio::test]
async fn headers_asking_for_absurd_scrypt_cost_or_truncated_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    open(tmp.path(), passphrase("pw"))
        .await
        .save(&api_key("a", "v"))
        .await
        .unwrap();
    let header = tmp.path().join("store.header");
    let original = fs::read(&header).unwrap();
    let mut absurd = original.clone();
    absurd[11 + 16 + 1] = 40; // log_n
    fs::write(&header, &absurd).unwrap();
    let started = std::time::Instant::now();
    let err = LocalStorage::open(tmp.path(), passphrase("pw"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.message().contains("refused"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        err.context_value("file"),
        Some(header.display().to_string().as_str())
    );

    fs::write(&header, &original[..30]).unwrap();
    let err = LocalStorage::open(tmp.path(), passphrase("pw"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);

    fs::remove_file(&header).unwrap();
    let err = LocalStorage::open(tmp.path(), passphrase("pw"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Corrupted,
        "records without a header: {err}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn too_open_permissions_warn_by_default_and_are_refused_when_strict() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    open(&dir, raw_key(1))
        .await
        .save(&api_key("a", "v"))
        .await
        .unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let lenient = open(&dir, raw_key(1)).await;
    assert_eq!(value_of(&lenient, "a").await, "v");
    let err = LocalStorage::open_with(
        &dir,
        raw_key(1),
        fast_options().with_strict_permissions(true),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.message().contains("chmod 700"), "{err}");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(dir.join("store.header"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalStorage::open_with(
        &dir,
        raw_key(1),
        fast_options().with_strict_permissions(true),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}

/// Copies every file of the store directory `from` into a new directory.
fn copy_store(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for (path, bytes) in snapshot(from) {
        fs::write(to.path().join(path.file_name().unwrap()), bytes).unwrap();
    }
    to
}

#[tokio::test]
async fn after_change_passphrase_the_old_passphrase_and_a_saved_old_header_open_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), passphrase("old")).await;
    s.save(&api_key("a", "v1")).await.unwrap();
    let old_header = fs::read(tmp.path().join("store.header")).unwrap();
    let records_before = record_bytes(tmp.path());
    s.change_passphrase(passphrase("new")).await.unwrap();
    let records_after = record_bytes(tmp.path());
    assert_ne!(records_before, records_after, "records are re-encrypted");
    // The handle keeps working; a record written after the change...
    s.save(&api_key("b", "v2")).await.unwrap();
    s.save(&s.load(&id("a")).await.unwrap().unwrap())
        .await
        .unwrap();

    // ...cannot be opened with the old passphrase through the saved old header.
    let attacker = copy_store(tmp.path());
    fs::write(attacker.path().join("store.header"), &old_header).unwrap();
    let old = open(attacker.path(), passphrase("old")).await;
    for name in ["a", "b"] {
        let err = old.load(&id(name)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decryption, "{name}: {err}");
    }

    let err = LocalStorage::open_with(tmp.path(), passphrase("old"), fast_options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption);
    let reopened = open(tmp.path(), passphrase("new")).await;
    assert_eq!(value_of(&reopened, "a").await, "v1");
    assert_eq!(value_of(&reopened, "b").await, "v2");

    // To a raw key and back.
    reopened.change_passphrase(raw_key(9)).await.unwrap();
    let raw = open(tmp.path(), raw_key(9)).await;
    assert_eq!(value_of(&raw, "a").await, "v1");
    assert!(
        s.change_passphrase(KeySource::Passphrase("".into()))
            .await
            .is_err()
    );
}

/// The re-wrap-only form: the old passphrase no longer opens the store as it is, but a
/// saved old header still unwraps the unchanged data key (what `change_passphrase`
/// rotates away), as the README says.
#[tokio::test]
async fn rewrap_passphrase_changes_the_header_only() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), passphrase("old")).await;
    s.save(&api_key("a", "v1")).await.unwrap();
    let old_header = fs::read(tmp.path().join("store.header")).unwrap();
    let records_before = record_bytes(tmp.path());
    s.rewrap_passphrase(passphrase("new")).await.unwrap();
    let records_after = record_bytes(tmp.path());
    assert_eq!(records_before, records_after, "no record is rewritten");
    s.save(&api_key("b", "v2")).await.unwrap();
    let err = LocalStorage::open_with(tmp.path(), passphrase("old"), fast_options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption);
    let reopened = open(tmp.path(), passphrase("new")).await;
    assert_eq!(value_of(&reopened, "a").await, "v1");
    assert_eq!(value_of(&reopened, "b").await, "v2");
    // The documented limit: old header + old passphrase still read the records.
    let attacker = copy_store(tmp.path());
    fs::write(attacker.path().join("store.header"), &old_header).unwrap();
    let old = open(attacker.path(), passphrase("old")).await;
    assert_eq!(value_of(&old, "b").await, "v2");
}

#[tokio::test]
async fn rotate_data_key_reencrypts_everything_and_other_handles_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open(tmp.path(), passphrase("pw")).await;
    let b = open(tmp.path(), passphrase("pw")).await;
    for i in 0..20 {
        a.save(&api_key(&format!("c{i}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    assert_eq!(value_of(&b, "c0").await, "v0");
    let before: Vec<_> = record_files(tmp.path())
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();
    let report = a.rotate_data_key().await.unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.records_reencrypted, 20);
    let after: Vec<_> = record_files(tmp.path())
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();
    assert!(before.iter().zip(&after).all(|(x, y)| x != y));
    // b still holds generation 1 only; it picks up the new header on demand.
    for i in 0..20 {
        assert_eq!(value_of(&b, &format!("c{i}")).await, format!("v{i}"));
    }
    let mut c = b.load(&id("c3")).await.unwrap().unwrap();
    c.set_key("api_key", "changed", None).unwrap();
    b.save(&c).await.unwrap();
    let fresh = open(tmp.path(), passphrase("pw")).await;
    assert_eq!(value_of(&fresh, "c3").await, "changed");
    assert_eq!(fresh.list().await.unwrap().len(), 20);
    assert_eq!(a.rotate_data_key().await.unwrap().generation, 3);
}

#[tokio::test]
async fn a_handle_whose_passphrase_was_changed_elsewhere_is_told_to_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open(tmp.path(), passphrase("one")).await;
    a.save(&api_key("x", "1")).await.unwrap();
    let b = open(tmp.path(), passphrase("one")).await;
    a.change_passphrase(passphrase("two")).await.unwrap();
    // The records are under a data key b does not hold, and it cannot unlock the header
    // that wraps it: it cannot read...
    let err = b.load(&id("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption);
    assert!(err.message().contains("another process"), "{err}");
    // ...nor write under a header it cannot unlock.
    let err = b.save(&api_key("y", "2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption);
    assert!(err.message().contains("another process"), "{err}");
    assert_eq!(
        value_of(&open(tmp.path(), passphrase("two")).await, "x").await,
        "1"
    );
}

#[tokio::test]
async fn stale_saves_conflict_across_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open(tmp.path(), raw_key(1)).await;
    let b = open(tmp.path(), raw_key(1)).await;
    a.save(&api_key("k", "0")).await.unwrap();
    let from_a = a.load(&id("k")).await.unwrap().unwrap();
    let from_b = b.load(&id("k")).await.unwrap().unwrap();
    assert_eq!(from_a.version(), 1);
    b.save(&from_b).await.unwrap();
    let err = a.save(&from_a).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(a.load(&id("k")).await.unwrap().unwrap().version(), 2);
}

#[tokio::test]
async fn credential_locks_exclude_each_other_across_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open(tmp.path(), raw_key(1)).await;
    let b = open(tmp.path(), raw_key(1)).await;
    let held = a.lock_credential(&id("github")).await.unwrap();
    assert!(
        b.try_lock_credential(&id("github"))
            .await
            .unwrap()
            .is_none()
    );
    let other = b.try_lock_credential(&id("slack")).await.unwrap();
    assert!(other.is_some(), "locks are per credential");
    assert!(!held.path().to_string_lossy().contains("github"));
    drop(held);
    assert!(
        b.try_lock_credential(&id("github"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn the_storage_lock_waits_boundedly_and_is_released() {
    use hive_cred_core::LockOptions;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let a = open(tmp.path(), raw_key(1)).await;
    let b = open(tmp.path(), raw_key(1)).await;
    let short = LockOptions::new().with_wait(Duration::from_millis(60));
    assert!(a.capabilities().cross_process_lock);
    let held = a.lock(&id("gh"), &short).await.unwrap();
    assert_eq!(held.id(), &id("gh"));
    let err = b.lock(&id("gh"), &short).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_temporary());
    held.release().await.unwrap();
    let again = b.lock(&id("gh"), &short).await.unwrap();
    assert_eq!(again.id(), &id("gh"));
}

#[test]
fn default_dir_follows_hive_home_then_home() {
    use std::path::PathBuf;
    let dir = LocalStorage::default_dir_from_lookup(|n| match n {
        "HIVE_HOME" => Some(PathBuf::from("/srv/hive")),
        "HOME" => Some(PathBuf::from("/home/u")),
        _ => None,
    })
    .unwrap();
    assert_eq!(dir, PathBuf::from("/srv/hive/credentials"));
    let dir = LocalStorage::default_dir_from_lookup(|n| match n {
        "HIVE_HOME" => Some(PathBuf::new()),
        "HOME" => Some(PathBuf::from("/home/u")),
        _ => None,
    })
    .unwrap();
    assert_eq!(dir, PathBuf::from("/home/u/.hive/credentials"));
    let err = LocalStorage::default_dir_from_lookup(|_| None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn from_env_reads_the_process_environment_in_a_child() {
    // std::env::set_var is unsafe (forbidden here): check the real environment through a
    // child process running this test binary.
    if let Ok(expected) = std::env::var("HIVE_LOCAL_TEST_EXPECT") {
        let source = KeySource::from_env();
        match expected.as_str() {
            "raw" => assert!(matches!(source, Ok(KeySource::RawKey(_)))),
            "passphrase" => assert!(matches!(source, Ok(KeySource::Passphrase(_)))),
            _ => assert_eq!(source.unwrap_err().kind(), ErrorKind::Config),
        }
        return;
    }
    let run = |vars: &[(&str, &str)], expect: &str| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "from_env_reads_the_process_environment_in_a_child",
        ])
        .env_remove("HIVE_CREDENTIAL_KEY")
        .env_remove("HIVE_CREDENTIAL_PASSPHRASE")
        .env("HIVE_LOCAL_TEST_EXPECT", expect);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{expect}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    run(
        &[(
            "HIVE_CREDENTIAL_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )],
        "raw",
    );
    run(&[("HIVE_CREDENTIAL_PASSPHRASE", "pw")], "passphrase");
    run(&[], "none");
}

/// Saves replace record files by rename while other tasks load them: every load sees a
/// whole record, the old or the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_racing_saves_always_see_a_whole_record() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    for name in ["a", "b"] {
        s.save(&api_key(name, &format!("{name}-0"))).await.unwrap();
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = ["a", "b", "a", "b"]
        .into_iter()
        .map(|name| {
            let s = s.clone();
            let done = std::sync::Arc::clone(&done);
            tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let mut loads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let c = rt.block_on(s.load(&id(name))).unwrap().unwrap();
                    // EXPOSE: the test checks the record belongs to this credential.
                    let value = secrecy::ExposeSecret::expose_secret(c.get_key("api_key").unwrap());
                    assert!(
                        value.starts_with(&format!("{name}-")),
                        "{name}: wrong record"
                    );
                    loads += 1;
                }
                loads
            })
        })
        .collect();
    for round in 1..=150 {
        for name in ["a", "b"] {
            let mut c = s.load(&id(name)).await.unwrap().unwrap();
            c.set_key("api_key", format!("{name}-{round}"), None)
                .unwrap();
            s.save(&c).await.unwrap();
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    assert_eq!(value_of(&s, "b").await, "b-150");
}

fn listed(ids: Vec<hive_cred_core::CredentialId>) -> Vec<String> {
    let mut out: Vec<String> = ids.into_iter().map(|i| i.as_str().to_string()).collect();
    out.sort();
    out
}

/// The record file of `name`: the only one that changes when it is saved again.
async fn record_file_of(s: &LocalStorage, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let before = snapshot(dir);
    let c = s.load(&id(name)).await.unwrap().unwrap();
    s.save(&c).await.unwrap();
    let after = snapshot(dir);
    let changed: Vec<_> = after
        .into_iter()
        .filter(|(p, bytes)| {
            p.extension().is_some_and(|x| x == "cred")
                && before.iter().all(|(q, old)| q != p || old != bytes)
        })
        .map(|(p, _)| p)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    changed.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_new_handle_lists_from_the_encrypted_names_index() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = open(tmp.path(), raw_key(1)).await;
    for name in ["alpha-index-canary", "beta", "gamma"] {
        writer.save(&api_key(name, "v")).await.unwrap();
    }
    let index = tmp.path().join("names.index");
    assert!(
        !index.exists(),
        "the writer knew every name: nothing to cache"
    );

    // A new handle decrypts the records to learn their ids, then writes the index.
    let first = open(tmp.path(), raw_key(1)).await;
    assert_eq!(
        listed(first.list().await.unwrap()),
        ["alpha-index-canary", "beta", "gamma"]
    );
    let sealed = fs::read(&index).unwrap();
    assert!(
        !sealed
            .windows(b"index-canary".len())
            .any(|w| w == b"index-canary"),
        "ids must not be readable in the index"
    );

    // Proof that the next new handle reads the index and not the records: a record whose
    // contents are destroyed is still listed (its id comes from the index), while a
    // handle without the index could only skip it.
    let beta = record_file_of(&writer, tmp.path(), "beta").await;
    fs::write(&beta, b"destroyed").unwrap();
    let second = open(tmp.path(), raw_key(1)).await;
    assert_eq!(
        listed(second.list().await.unwrap()),
        ["alpha-index-canary", "beta", "gamma"]
    );
    assert_eq!(
        second.load(&id("beta")).await.unwrap_err().kind(),
        ErrorKind::Corrupted
    );
    fs::remove_file(&index).unwrap();
    let third = open(tmp.path(), raw_key(1)).await;
    assert_eq!(
        listed(third.list().await.unwrap()),
        ["alpha-index-canary", "gamma"]
    );
}

#[tokio::test]
async fn an_old_damaged_or_foreign_names_index_never_changes_what_list_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    for name in ["a", "b", "c"] {
        s.save(&api_key(name, "v")).await.unwrap();
    }
    open(tmp.path(), raw_key(1)).await.list().await.unwrap();
    let index = tmp.path().join("names.index");
    let old_index = fs::read(&index).unwrap();

    // Old: "c" removed behind the store's back and "d" added since the index was written.
    let c = record_file_of(&s, tmp.path(), "c").await;
    fs::remove_file(c).unwrap();
    s.save(&api_key("d", "v")).await.unwrap();
    fs::write(&index, &old_index).unwrap();
    let fresh = open(tmp.path(), raw_key(1)).await;
    assert_eq!(listed(fresh.list().await.unwrap()), ["a", "b", "d"]);
    assert_ne!(
        fs::read(&index).unwrap(),
        old_index,
        "rewritten with what was learned"
    );

    // Damaged.
    fs::write(&index, b"HIVECRED garbage").unwrap();
    let fresh = open(tmp.path(), raw_key(1)).await;
    assert_eq!(listed(fresh.list().await.unwrap()), ["a", "b", "d"]);

    // From another store, whose ids must not show up here.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path(), raw_key(1)).await;
    other.save(&api_key("foreign", "v")).await.unwrap();
    open(other_dir.path(), raw_key(1))
        .await
        .list()
        .await
        .unwrap();
    fs::copy(other_dir.path().join("names.index"), &index).unwrap();
    let fresh = open(tmp.path(), raw_key(1)).await;
    assert_eq!(listed(fresh.list().await.unwrap()), ["a", "b", "d"]);
}

#[tokio::test]
async fn delete_and_key_rotation_remove_the_names_index() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    for name in ["a", "b"] {
        s.save(&api_key(name, "v")).await.unwrap();
    }
    let index = tmp.path().join("names.index");
    open(tmp.path(), raw_key(1)).await.list().await.unwrap();
    assert!(index.exists());
    assert!(s.delete(&id("b")).await.unwrap());
    assert!(
        !index.exists(),
        "the deleted id must not linger in the index"
    );

    open(tmp.path(), raw_key(1)).await.list().await.unwrap();
    assert!(index.exists());
    s.rotate_data_key().await.unwrap();
    assert!(
        !index.exists(),
        "an index sealed under the retired key must go"
    );
    let fresh = open(tmp.path(), raw_key(1)).await;
    assert_eq!(listed(fresh.list().await.unwrap()), ["a"]);
    assert!(index.exists(), "rewritten under the new key");
}
