//! The core storage conformance suite against `LocalStorage` in a temp dir.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

hive_cred_core::storage_conformance_tests!(async { common::TempStore::new().await });

#[tokio::test]
async fn conformance_with_a_passphrase_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(dir.path(), common::passphrase("correct horse")).await;
    hive_cred_core::testkit::run_all(&storage).await;
    assert_eq!(
        hive_cred_core::CredentialStorage::backend_name(&storage),
        "local"
    );
}

/// The lock conformance check on two handles of one store directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_conformance_across_two_handles() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::raw_key(7);
    let a = common::open(dir.path(), key.clone()).await;
    let b = common::open(dir.path(), key).await;
    hive_cred_core::testkit::lock_conformance(&a, &b, std::time::Duration::from_secs(5)).await;
}
