//! Per-user views through the assembled product: an agent process (this test binary
//! re-executed) built with `AgentRuntime::from_env()` over a real OpenBao dev server,
//! holding a token whose policy allows only alice's prefix (`{prefix}/users/alice`).
//! `runtime.credential_store.for_user("alice")` must reach Vault's per-principal path
//! (not ids namespaced in the shared path, which the policy would refuse), bob's view
//! and the unscoped store are `PermissionDenied`, and every audit record of a view
//! carries its principal.
#![cfg(feature = "vault")]
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::process::Command;
use std::sync::Arc;

use hive_cred_core::{CredentialId, CredentialObject, CredentialType, ErrorKind, ExposeSecret};
use hive_cred_runtime::AgentRuntime;
use hive_cred_vault::testkit;
use serde_json::{Value, json};

const CHILD_ENV: &str = "HIVE_PU_CHILD";
const LINE: &str = "HIVE_PU ";
const ALICE: &str = "alice-github-token-0123456789";
const BOB: &str = "bob-github-token-0123456789";
const ALICE_NOTION: &str = "alice-notion-token-0123456789";

fn key(id: &str, value: &str) -> CredentialObject {
    let mut c = CredentialObject::new(id, CredentialType::ApiKey).unwrap();
    c.set_key("api_key", value, None).unwrap();
    c
}

fn report(what: &str, ok: bool) {
    println!("{LINE}{what} {ok}");
}

/// The agent side. Returns at once unless run as a child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_agent() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let runtime = AgentRuntime::from_env()
        .await
        .expect("from_env in the child");
    report("backend", runtime.backend_name() == "vault");
    let store = &runtime.credential_store;
    let alice = store.for_user("alice").unwrap();
    let got = alice.get_key("github", "api_key").await;
    // EXPOSE: compared with the test's constant, never printed.
    report("alice_reads", got.is_ok_and(|v| v.expose_secret() == ALICE));
    report(
        "alice_saves",
        alice.save(key("notion", ALICE_NOTION)).await.is_ok(),
    );
    report(
        "alice_lists",
        alice.list().await.is_ok_and(|ids| ids.len() == 2),
    );
    // The view's refresh lock is alice's lock secret, which the policy allows.
    let lock = alice
        .storage()
        .lock(
            &CredentialId::new("github").unwrap(),
            &hive_cred_core::LockOptions::default(),
        )
        .await;
    report("alice_locks", lock.is_ok());
    if let Ok(lock) = lock {
        lock.release().await.unwrap();
    }
    // Values read through the view are redacted like any other.
    report(
        "redacted",
        runtime.redact(&format!("t={ALICE}")) == "t=[hive:github.api_key]",
    );
    let bob = store.for_user("bob").unwrap().get("github").await;
    report(
        "bob_denied",
        bob.is_err_and(|e| e.kind() == ErrorKind::PermissionDenied),
    );
    let shared = store.get("github").await;
    report(
        "unscoped_denied",
        shared.is_err_and(|e| e.kind() == ErrorKind::PermissionDenied),
    );

    let trail = runtime.audit_trail();
    let of = |who: Option<&str>| {
        trail
            .iter()
            .filter(|r| r.principal.as_deref() == who)
            .collect::<Vec<_>>()
    };
    let (a, b, none) = (of(Some("alice")), of(Some("bob")), of(None));
    report(
        "audit_alice",
        a.iter()
            .any(|r| r.operation == "get_key" && r.outcome == "ok")
            && a.iter().any(|r| r.operation == "save" && r.outcome == "ok"),
    );
    report(
        "audit_bob",
        b.len() == 1 && b[0].error_kind.as_deref() == Some("permission_denied"),
    );
    // The only record without a principal is the unscoped store's own get.
    report(
        "audit_unscoped",
        none.len() == 1 && none[0].operation == "get" && none[0].credential_id == "github",
    );
    runtime
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    println!("{LINE}done true");
}

async fn api(target: &testkit::Target, method: &str, path: &str, body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/{path}", target.addr);
    let mut req = client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("X-Vault-Token", &target.root_token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_from_env_with_one_principals_token_reaches_only_that_principal() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(target) = testkit::shared() else {
        return;
    };
    let prefix = format!("hive-test/per-user-rt-{:016x}", rand::random::<u64>());
    // The operator (root token) stores each user's credential through their views.
    let root_vars: Arc<Vec<(&str, String)>> = Arc::new(vec![
        ("HIVE_VAULT_ADDR", target.addr.clone()),
        ("HIVE_VAULT_TOKEN", target.root_token.clone()),
        ("HIVE_VAULT_PATH", prefix.clone()),
    ]);
    let vars = root_vars.clone();
    let root = AgentRuntime::from_lookup(move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .await
    .unwrap();
    let store = &root.credential_store;
    store
        .for_user("alice")
        .unwrap()
        .save(key("github", ALICE))
        .await
        .unwrap();
    store
        .for_user("bob")
        .unwrap()
        .save(key("github", BOB))
        .await
        .unwrap();
    // The runtime's views are Vault's per-principal paths.
    for who in ["alice", "bob"] {
        let raw = api(
            &target,
            "GET",
            &format!("secret/data/{prefix}/users/{who}/github"),
            None,
        )
        .await;
        assert!(raw["data"]["data"].is_object(), "{who}: {raw}");
    }

    let policy = format!("hive-rt-alice-{:016x}", rand::random::<u64>());
    let hcl = format!(
        r#"
path "secret/data/{prefix}/users/alice/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}/users/alice/*" {{ capabilities = ["read", "list", "delete"] }}
path "secret/metadata/{prefix}/users/alice" {{ capabilities = ["list"] }}
path "secret/data/{prefix}/.locks/user.alice.*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/.locks/user.alice.*" {{ capabilities = ["read"] }}
"#
    );
    api(
        &target,
        "PUT",
        &format!("sys/policies/acl/{policy}"),
        Some(json!({ "policy": hcl })),
    )
    .await;
    let created = api(
        &target,
        "POST",
        "auth/token/create",
        Some(json!({ "policies": [policy], "ttl": "10m", "no_default_policy": false })),
    )
    .await;
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_agent", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(CHILD_ENV, "1")
        .env("HIVE_VAULT_ADDR", &target.addr)
        .env("HIVE_VAULT_TOKEN", &token)
        .env("HIVE_VAULT_PATH", &prefix)
        .env("HIVE_CRED_AUDIT_LOG", &audit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find(LINE).map(|at| &l[at + LINE.len()..]))
        .collect();
    for what in [
        "backend",
        "alice_reads",
        "alice_saves",
        "alice_lists",
        "alice_locks",
        "redacted",
        "bob_denied",
        "unscoped_denied",
        "audit_alice",
        "audit_bob",
        "audit_unscoped",
        "done",
    ] {
        assert!(
            lines.contains(&format!("{what} true").as_str()),
            "{what}: {lines:?}\n{stderr}"
        );
    }

    // The audit file: every record of a view names its principal, and no value.
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [ALICE, BOB, ALICE_NOTION, token.as_str()] {
        assert!(!text.contains(secret) && !stdout.contains(secret) && !stderr.contains(secret));
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4, "{text}");
    for r in &records {
        match r.get("principal").and_then(Value::as_str) {
            Some("alice") => assert_ne!(r["outcome"], "error", "{r}"),
            Some("bob") => assert_eq!(r["error_kind"], "permission_denied", "{r}"),
            None => assert_eq!(r["operation"], "get", "{r}"),
            Some(other) => panic!("unexpected principal {other}: {r}"),
        }
    }
    // Alice's save landed under her prefix, which the operator sees.
    let raw = api(
        &target,
        "GET",
        &format!("secret/data/{prefix}/users/alice/notion"),
        None,
    )
    .await;
    assert!(raw["data"]["data"].is_object(), "{raw}");
}
