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
