//! Per-user views on Vault: `CredentialStore::for_user` puts each principal under
//! `{prefix}/users/{principal}`, and a token whose policy allows one principal's prefix
//! only cannot read another's (against a real OpenBao server; see `support`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::sync::Arc;

use hive_cred_core::{
    AccountStatus, CredentialIdentity, CredentialObject, CredentialStorage, CredentialStore,
    CredentialType, ErrorKind, ExposeSecret,
};
use hive_cred_vault::VaultStorage;
use serde_json::json;

fn key(id: &str, value: &str) -> CredentialObject {
    let mut c = CredentialObject::new(id, CredentialType::ApiKey).unwrap();
    c.set_key("api_key", value, None).unwrap();
    c
}

fn store(storage: VaultStorage) -> CredentialStore {
    CredentialStore::builder()
        .storage(Arc::new(storage))
        .build()
        .unwrap()
}

/// The policy template of the crate README, for one principal.
fn principal_policy(prefix: &str, principal: &str) -> String {
    format!(
        r#"
path "secret/data/{prefix}/users/{principal}/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}/users/{principal}/*" {{ capabilities = ["read", "list", "delete"] }}
path "secret/metadata/{prefix}/users/{principal}" {{ capabilities = ["list"] }}
path "secret/data/{prefix}/.locks/user.{principal}.*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/.locks/user.{principal}.*" {{ capabilities = ["read"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_principal_cannot_read_another() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("per-user");
    let root = store(support::root_storage(&target, &prefix).await);
    let alice = root.for_user("alice").unwrap();
    let bob = root.for_user("bob").unwrap();
    alice.save(key("github", "alice-token")).await.unwrap();
    bob.save(key("github", "bob-token")).await.unwrap();
    // The principal's path prefix is a real Vault path.
    let raw = support::root_api(
        &target,
        "GET",
        &format!("secret/data/{prefix}/users/alice/github"),
        None,
    )
    .await;
    assert!(raw["data"]["data"]["api_key"].is_string());
    assert_eq!(alice.list().await.unwrap().len(), 1);
    assert!(
        root.list()
            .await
            .unwrap()
            .iter()
            .all(|id| id.as_str() != "github")
    );

    let policy = format!("hive-alice-{:x}", support::rand_u64());
    support::put_policy(&target, &policy, &principal_policy(&prefix, "alice")).await;
    let token = support::create_token(&target, json!({"policies": [policy], "ttl": "10m"})).await;
    let limited = store(
        VaultStorage::new(support::config(&target, &token, &prefix))
            .await
            .unwrap(),
    );
    let alice_only = limited.for_user("alice").unwrap();
    let v = alice_only.get_key("github", "api_key").await.unwrap();
    assert_eq!(v.expose_secret(), "alice-token"); // EXPOSE: the test compares the value.
    alice_only.save(key("notion", "n")).await.unwrap();
    assert_eq!(alice_only.list().await.unwrap().len(), 2);
    let denied = limited
        .for_user("bob")
        .unwrap()
        .get("github")
        .await
        .unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
    let denied = limited.get("github").await.unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
    // Refresh locks of a view take the principal's lock secret, which the policy allows.
    let lock = alice_only
        .storage()
        .lock(
            &hive_cred_core::CredentialId::new("github").unwrap(),
            &hive_cred_core::LockOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(lock.id().as_str(), "github");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_metadata_is_kept_in_vault() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("accounts");
    let s = store(support::root_storage(&target, &prefix).await);
    let mut c = CredentialObject::builder("slack.work", CredentialType::ApiKey)
        .account("slack", Some("work"))
        .key("api_key", "xoxb-1", None)
        .build()
        .unwrap();
    c.account_mut().unwrap().identity = CredentialIdentity::new().with_workspace("acme");
    s.save(c).await.unwrap();
    s.record_check("slack/work", AccountStatus::Active, None)
        .await
        .unwrap();
    s.clear_cache();
    let accounts = s.list_accounts("slack").await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].alias(), "work");
    assert_eq!(accounts[0].identity().label(), Some("acme"));
    assert_eq!(accounts[0].status(), AccountStatus::Active);
    assert!(accounts[0].last_checked().is_some());
}
