//! Vault-specific behaviour against a real OpenBao server (see `support` for how the
//! server is found or started).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_cred_core::testkit::unique_id;
use hive_cred_core::{
    CredentialObject, CredentialStorage, CredentialStore, CredentialType, ErrorKind, ExposeSecret,
};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
use serde_json::json;

fn api_key(id: &hive_cred_core::CredentialId, value: &str) -> CredentialObject {
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
    c.set_key("api_key", value, None).expect("valid key");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflict_between_two_storages() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("cas");
    let host_a = support::root_storage(&target, &prefix).await;
    let host_b = support::root_storage(&target, &prefix).await;
    let id = unique_id("shared");

    host_a.save(&api_key(&id, "v1")).await.expect("create");
    let mut from_a = host_a.load(&id).await.unwrap().expect("stored");
    let mut from_b = host_b.load(&id).await.unwrap().expect("stored");
    assert_eq!(from_a.version(), 1);
    assert_eq!(from_b.version(), 1);

    from_a.set_key("api_key", "from-a", None).unwrap();
    host_a.save(&from_a).await.expect("first writer wins");
    from_b.set_key("api_key", "from-b", None).unwrap();
    let err = host_b
        .save(&from_b)
        .await
        .expect_err("a save based on version 1 after version 2 was written must conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(!err.is_temporary());
    assert_eq!(err.context_value("id"), Some(id.as_str()));
    assert_eq!(err.context_value("expected_version"), Some("1"));

    let reread = host_b.load(&id).await.unwrap().expect("stored");
    assert_eq!(
        reread.version(),
        2,
        "the KV version is the credential version"
    );
    assert_eq!(reread.get_key("api_key").unwrap().expose_secret(), "from-a"); // EXPOSE: the test compares the secret value.

    // Two hosts creating the same new id: cas=0 lets exactly one win.
    let fresh = unique_id("race");
    let (cred_a, cred_b) = (api_key(&fresh, "a"), api_key(&fresh, "b"));
    let (a, b) = tokio::join!(host_a.save(&cred_a), host_b.save(&cred_b));
    let outcomes = [a, b];
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1);
    let loser = outcomes
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one save failed");
    assert_eq!(loser.kind(), ErrorKind::Conflict, "{loser}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_policy_denies_writes_with_a_clear_error() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("readonly");
    let policy = format!("hive-ro-{:x}", support::rand_u64());
    support::put_policy(
        &target,
        &policy,
        &format!(
            r#"
path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}" {{ capabilities = ["list"] }}
"#
        ),
    )
    .await;
    let token = support::create_token(&target, json!({"policies": [policy], "ttl": "10m"})).await;

    let root = support::root_storage(&target, &prefix).await;
    let id = unique_id("ro");
    root.save(&api_key(&id, "readable")).await.unwrap();

    let ro = VaultStorage::new(support::config(&target, &token, &prefix))
        .await
        .expect("a read-only token can connect");
    let loaded = ro.load(&id).await.unwrap().expect("reads are allowed");
    assert_eq!(
        loaded.get_key("api_key").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "readable"
    );
    assert!(ro.list().await.unwrap().contains(&id));
    assert!(ro.exists(&id).await.unwrap());

    let mut changed = loaded.clone();
    changed.set_key("api_key", "written", None).unwrap();
    let err = ro.save(&changed).await.expect_err("writes are denied");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let kv_path = ro.config().kv_path(id.as_str());
    assert!(err.message().contains(&kv_path), "{err}");
    assert!(err.message().contains("policy"), "{err}");
    assert!(!err.is_temporary());
    assert!(!format!("{err:?}").contains(&token));

    let err = ro.delete(&id).await.expect_err("deletes are denied");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // Nothing changed.
    let back = root.load(&id).await.unwrap().unwrap();
    assert_eq!(back.get_key("api_key").unwrap().expose_secret(), "readable"); // EXPOSE: the test compares the secret value.
    assert_eq!(back.version(), 1);

    // A token without any access to the prefix is denied reads too.
    let none = support::create_token(&target, json!({"policies": ["default"], "ttl": "10m"})).await;
    let denied = VaultStorage::new(support::config(&target, &none, &prefix))
        .await
        .unwrap();
    let err = denied.load(&id).await.expect_err("no read access");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // An invalid token is rejected when connecting.
    let err = VaultStorage::new(support::config(&target, "not-a-real-token", &prefix))
        .await
        .expect_err("invalid token");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.to_string().contains("not-a-real-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_and_login_again_after_max_ttl() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("approle");
    let mount = format!("approle-{:x}", support::rand_u64());
    let policy = format!("hive-rw-{:x}", support::rand_u64());
    support::put_policy(&target, &policy, &support::rw_policy(&prefix)).await;
    support::root_api(
        &target,
        "POST",
        &format!("sys/auth/{mount}"),
        Some(json!({"type": "approle"})),
    )
    .await;
    // Short TTLs so renewal hits the max TTL and a new login is needed within seconds.
    support::root_api(
        &target,
        "POST",
        &format!("auth/{mount}/role/agent"),
        Some(json!({"token_policies": [policy], "token_ttl": "3s", "token_max_ttl": "5s"})),
    )
    .await;
    let role_id = support::root_api(
        &target,
        "GET",
        &format!("auth/{mount}/role/agent/role-id"),
        None,
    )
    .await["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    let secret_id = support::root_api(
        &target,
        "POST",
        &format!("auth/{mount}/role/agent/secret-id"),
        None,
    )
    .await["data"]["secret_id"]
        .as_str()
        .expect("secret_id")
        .to_owned();

    let config = |secret: &str| {
        VaultConfig::new(
            &target.addr,
            VaultAuth::approle(role_id.clone(), secret.to_owned()),
        )
        .unwrap()
        .with_approle_mount(&mount)
        .unwrap()
        .with_path_prefix(&prefix)
        .unwrap()
    };

    let err = VaultStorage::new(config("wrong-secret-id"))
        .await
        .expect_err("a wrong secret id fails the login");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-secret-id"));

    let storage = VaultStorage::new(config(&secret_id)).await.expect("login");
    assert!(!format!("{storage:?}").contains(&secret_id));
    let id = unique_id("via-approle");
    storage.save(&api_key(&id, "approle-value")).await.unwrap();

    // Keep working well past two max TTLs (10 s): only possible if the storage logged in
    // again, because every token it got dies after 5 s.
    let start = Instant::now();
    let mut version = 1;
    while start.elapsed() < Duration::from_secs(12) {
        let mut c = storage
            .load(&id)
            .await
            .unwrap_or_else(|e| panic!("load after {:?}: {e}", start.elapsed()))
            .expect("stored");
        assert_eq!(c.version(), version);
        c.set_key("api_key", format!("v{version}"), None).unwrap();
        storage
            .save(&c)
            .await
            .unwrap_or_else(|e| panic!("save after {:?}: {e}", start.elapsed()));
        version += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    drop(storage);
    support::root_api(&target, "DELETE", &format!("sys/auth/{mount}"), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewable_token_is_renewed_in_the_background_until_dropped() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("renew");
    let policy = format!("hive-rw-{:x}", support::rand_u64());
    support::put_policy(&target, &policy, &support::rw_policy(&prefix)).await;
    let token = support::create_token(
        &target,
        json!({"policies": [policy], "ttl": "4s", "renewable": true}),
    )
    .await;
    let storage = VaultStorage::new(support::config(&target, &token, &prefix))
        .await
        .unwrap();

    // Poll the token's TTL. Without renewal it only falls and the token dies after 4 s;
    // with renewal at ~2/3 of the TTL it jumps back up.
    let start = Instant::now();
    let mut last = support::token_ttl(&target, &token)
        .await
        .expect("token valid");
    let mut renewals = 0;
    while start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ttl = support::token_ttl(&target, &token)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "token expired after {:?}: not renewed in time",
                    start.elapsed()
                )
            });
        if ttl > last {
            renewals += 1;
        }
        last = ttl;
        if renewals >= 2 && start.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    assert!(
        renewals >= 2,
        "expected at least two renewals, saw {renewals}"
    );
    assert!(
        start.elapsed() > Duration::from_secs(5),
        "the token outlived its TTL"
    );
    let id = unique_id("after-renewal");
    storage
        .save(&api_key(&id, "x"))
        .await
        .expect("token still valid");

    // Dropping the storage stops the renewal: the token then runs out.
    drop(storage);
    let dropped = Instant::now();
    loop {
        if support::token_ttl(&target, &token).await.is_none() {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(15),
            "token still alive 15 s after the storage was dropped: renewal did not stop"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A server that is not there: connection refused is `Unavailable`, and so is a
/// server that accepts but never answers, after the configured timeout.
#[tokio::test]
async fn unreachable_and_silent_servers_are_unavailable() {
    let port = support::free_port();
    let config = VaultConfig::new(
        &format!("http://127.0.0.1:{port}"),
        VaultAuth::token("t-refused"),
    )
    .unwrap();
    let err = VaultStorage::new(config)
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let config = VaultConfig::new(&format!("http://{addr}"), VaultAuth::token("t-silent"))
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let err = VaultStorage::new(config).await.expect_err("no answer");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("timed out"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "timeout not applied: {:?}",
        start.elapsed()
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_secrets_load_and_exists_reads_no_values() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("handwritten");
    let storage = support::root_storage(&target, &prefix).await;
    support::root_api(
        &target,
        "POST",
        &format!("secret/data/{prefix}/openai"),
        Some(json!({"data": {"api_key": "sk-by-hand", "org": "org-1"}})),
    )
    .await;
    let id = hive_cred_core::CredentialId::new("openai").unwrap();
    let mut c = storage.load(&id).await.unwrap().expect("present");
    assert_eq!(c.credential_type(), CredentialType::Custom);
    assert_eq!(c.get_key("api_key").unwrap().expose_secret(), "sk-by-hand"); // EXPOSE: the test compares the secret value.
    assert_eq!(c.version(), 1);
    c.set_key("api_key", "sk-rotated", None).unwrap();
    storage.save(&c).await.expect("save adds hive.meta");
    let data = support::root_api(
        &target,
        "GET",
        &format!("secret/data/{prefix}/openai"),
        None,
    )
    .await;
    assert_eq!(data["data"]["data"]["api_key"], "sk-rotated");
    assert_eq!(
        data["data"]["data"]["hive.meta"]["credential_type"],
        "custom"
    );

    // `exists` needs only metadata access.
    let policy = format!("hive-meta-{:x}", support::rand_u64());
    support::put_policy(
        &target,
        &policy,
        &format!(r#"path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}"#),
    )
    .await;
    let token = support::create_token(&target, json!({"policies": [policy], "ttl": "10m"})).await;
    let meta_only = VaultStorage::new(support::config(&target, &token, &prefix))
        .await
        .unwrap();
    assert!(meta_only.exists(&id).await.unwrap());
    assert!(!meta_only.exists(&unique_id("absent")).await.unwrap());
    assert_eq!(
        meta_only.load(&id).await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

/// The empty-disk check runs in a child process (this test binary, filtered to
/// `empty_disk_child`) whose HOME, TMPDIR and XDG directories point at an empty
/// directory; afterwards the directory must still be empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_to_local_disk() {
    let Some(target) = support::shared() else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let prefix = support::unique_prefix("empty-disk");
    let exe = std::env::current_exe().unwrap();
    let dir = empty.path();
    let output = tokio::process::Command::new(exe)
        .args([
            "empty_disk_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HIVE_TEST_EMPTY_DISK_CHILD", "1")
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("XDG_CACHE_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_STATE_HOME", dir)
        .env("HIVE_VAULT_ADDR", &target.addr)
        .env("HIVE_VAULT_TOKEN", &target.root_token)
        .env("HIVE_VAULT_PATH", &prefix)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("HIVE_TEST_VAULT_ADDR")
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("empty-disk child: done"),
        "child did not run the operations:\n{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "files written to local disk: {left:?}");
}

/// Helper for `nothing_is_written_to_local_disk`; does nothing unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_disk_child() {
    if std::env::var("HIVE_TEST_EMPTY_DISK_CHILD").is_err() {
        return;
    }
    let storage = Arc::new(VaultStorage::from_env().await.expect("from_env"));
    let id = unique_id("disk");
    storage.save(&api_key(&id, "on-vault-only")).await.unwrap();
    let store = CredentialStore::builder()
        .storage(storage.clone())
        .build()
        .unwrap();
    let got = store.get(id.as_str()).await.unwrap();
    assert_eq!(
        got.get_key("api_key").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
        "on-vault-only"
    );
    assert!(store.list().await.unwrap().contains(&id));
    let mut c = (*got).clone();
    c.set_key("api_key", "rotated", None).unwrap();
    store.save(c).await.unwrap();
    assert_eq!(
        store
            .get_key(id.as_str(), "api_key")
            .await
            .unwrap()
            .expose_secret(), // EXPOSE: the test compares the secret value.
        "rotated"
    );
    assert!(store.delete(id.as_str()).await.unwrap());
    #[allow(clippy::print_stdout)]
    {
        println!("empty-disk child: done");
    }
}
