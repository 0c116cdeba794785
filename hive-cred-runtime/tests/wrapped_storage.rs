//! The storage as `AgentRuntime` wraps it keeps every capability of its backend: the
//! lock conformance check runs on two runtimes built with `AgentRuntime::from_lookup`
//! (the entry point `from_env` uses) over one local store and over one OpenBao prefix.
//! The round-one bug this guards against: the runtime's wrapper forwarded everything but
//! `lock`, so agents never took the cross-process lock.
#![cfg(all(feature = "local", feature = "vault"))]
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hive_cred_core::testkit;
use hive_cred_runtime::AgentRuntime;

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> + Send + Sync {
    let map: Arc<HashMap<&str, String>> = Arc::new(vars.into_iter().collect());
    move |name| map.get(name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtimes_local_storage_keeps_its_lock_and_conforms() {
    use base64::Engine as _;
    let home = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let vars = vec![
        ("HIVE_HOME", home.path().display().to_string()),
        ("HIVE_CREDENTIAL_KEY", key),
    ];
    let a = AgentRuntime::from_lookup(lookup(vars.clone()))
        .await
        .unwrap();
    let b = AgentRuntime::from_lookup(lookup(vars)).await.unwrap();
    let (sa, sb) = (a.credential_store.storage(), b.credential_store.storage());
    assert_eq!(sa.backend_name(), "local");
    testkit::lock_conformance(&**sa, &**sb, Duration::from_secs(5)).await;
    testkit::run_all(&**sa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtimes_vault_storage_keeps_its_lease_lock_and_conforms() {
    let Some(vault) = hive_cred_vault::testkit::shared() else {
        return;
    };
    let vars = vec![
        ("HIVE_VAULT_ADDR", vault.addr.clone()),
        ("HIVE_VAULT_TOKEN", vault.root_token.clone()),
        (
            "HIVE_VAULT_PATH",
            format!("hive-test/wrapped-{:016x}", rand::random::<u64>()),
        ),
    ];
    let a = AgentRuntime::from_lookup(lookup(vars.clone()))
        .await
        .unwrap();
    let b = AgentRuntime::from_lookup(lookup(vars)).await.unwrap();
    let (sa, sb) = (a.credential_store.storage(), b.credential_store.storage());
    assert_eq!(sa.backend_name(), "vault");
    assert!(sa.capabilities().lease_lock);
    testkit::lock_conformance(&**sa, &**sb, Duration::from_secs(10)).await;
    testkit::run_all(&**sa).await;
}
