//! Import from the Python Hive store, with files written by real Fernet implementations:
//! Python's `cryptography` (checked-in fixture, see fixtures/python_store/generate.py)
//! and the `fernet` crate.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::PathBuf;

use common::*;
use hive_cred_core::testkit::CANARY;
use hive_cred_core::{CredentialStorage, CredentialType, ErrorKind};
use hive_cred_local::import_python_store;
use secrecy::{ExposeSecret, SecretString};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_store")
}

fn fixture_key() -> SecretString {
    SecretString::from(std::fs::read_to_string(fixture().join("fernet.key")).unwrap())
}

#[tokio::test]
async fn imports_a_store_written_by_python_cryptography() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    // The parent directory: the importer finds the nested credentials/ folder.
    let report = import_python_store(fixture(), &fixture_key(), &s)
        .await
        .unwrap();
    let mut imported: Vec<_> = report.imported.iter().map(|i| i.to_string()).collect();
    imported.sort();
    assert_eq!(imported, ["brave_search", "github_oauth"]);
    let mut failed: Vec<_> = report
        .failures
        .iter()
        .map(|f| f.file.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    failed.sort();
    assert_eq!(failed, ["garbage.enc", "other_key.enc"]);
    assert!(report.failures.iter().all(|f| f.reason.contains("decrypt")));

    let gh = s.load(&id("github_oauth")).await.unwrap().unwrap();
    assert_eq!(gh.credential_type(), CredentialType::OAuth2);
    assert_eq!(gh.provider_id(), Some("oauth2"));
    assert!(gh.auto_refresh());
    assert_eq!(gh.description(), Some("GitHub"));
    assert_eq!(gh.tags(), ["vcs".to_string()]);
    let at = gh.key("access_token").unwrap();
    assert_eq!(at.value().expose_secret(), "gho_fixture_access"); // EXPOSE: the test compares the secret value.
    assert_eq!(
        at.expires_at().unwrap().to_rfc3339(),
        "2030-01-02T03:04:05+00:00"
    );
    assert_eq!(at.metadata().get("token_type").unwrap(), "bearer");
    let rt = gh.key("refresh_token").unwrap();
    assert_eq!(rt.value().expose_secret(), "ghr_fixture_refresh"); // EXPOSE: the test compares the secret value.
    assert_eq!(rt.expires_at(), None);
    assert_eq!(
        gh.created_at().to_rfc3339(),
        "2024-05-06T07:08:09.123456+00:00"
    );
    assert_eq!(
        gh.last_refreshed().unwrap().to_rfc3339(),
        "2024-05-07T07:08:09+00:00"
    );

    let brave = s.load(&id("brave_search")).await.unwrap().unwrap();
    assert_eq!(brave.credential_type(), CredentialType::ApiKey);
    assert_eq!(brave.provider_id(), None);
    assert!(!brave.auto_refresh());
    assert_eq!(
        brave.get_key("api_key").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "BSA-fixture-key"
    );
}

#[tokio::test]
async fn imports_files_from_the_fernet_crate_and_never_overwrites() {
    let src = tempfile::tempdir().unwrap();
    let key = fernet::Fernet::generate_key();
    let f = fernet::Fernet::new(&key).unwrap();
    let json = serde_json::json!({
        "id": "slack",
        "credential_type": "bearer_token",
        "keys": {"token": {"name": "token", "value": CANARY, "expires_at": null, "metadata": {}}},
        "provider_id": null,
        "auto_refresh": false,
        "description": "Slack bot",
        "tags": [],
        "created_at": "2024-02-03T04:05:06",
        "updated_at": "2024-02-03T04:05:06",
        "last_refreshed": null
    });
    std::fs::write(
        src.path().join("slack.enc"),
        f.encrypt(json.to_string().as_bytes()),
    )
    .unwrap();
    std::fs::write(src.path().join("notes.txt"), "ignored").unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    let key = SecretString::from(key);
    let report = import_python_store(src.path(), &key, &s).await.unwrap();
    assert_eq!(report.imported, vec![id("slack")]);
    assert!(report.failures.is_empty());
    let shown = format!("{report:?}");
    assert!(!shown.contains(CANARY), "{shown}");

    // Change it in the new store; a second import must not clobber it.
    let mut slack = s.load(&id("slack")).await.unwrap().unwrap();
    assert_eq!(slack.credential_type(), CredentialType::BearerToken);
    slack.set_key("token", "rotated", None).unwrap();
    s.save(&slack).await.unwrap();
    let again = import_python_store(src.path(), &key, &s).await.unwrap();
    assert!(again.imported.is_empty());
    assert_eq!(again.failures.len(), 1);
    assert!(again.failures[0].reason.contains("already exists"));
    let kept = s.load(&id("slack")).await.unwrap().unwrap();
    assert_eq!(kept.get_key("token").unwrap().expose_secret(), "rotated"); // EXPOSE: the test compares the secret value.
}

#[tokio::test]
async fn a_wrong_or_malformed_fernet_key_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    let wrong = SecretString::from(fernet::Fernet::generate_key());
    let report = import_python_store(fixture(), &wrong, &s).await.unwrap();
    assert!(report.imported.is_empty());
    assert_eq!(report.failures.len(), 4);
    let err = import_python_store(fixture(), &SecretString::from(CANARY), &s)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!format!("{err} {err:?}").contains(CANARY));
    assert!(s.list().await.unwrap().is_empty());
}
