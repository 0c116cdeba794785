//! A refresh whose save fails, through the product as an agent runs it: agents are
//! separate OS processes (this test binary re-executed) built with
//! `AgentRuntime::from_env()`, on a real OpenBao server, against a token endpoint that
//! rotates the refresh token on every refresh and revokes the whole family when a used
//! one comes back.
//!
//! The fault is a real one: the agent's Vault token may read the credential and take
//! its lock, but its policy does not let it write the credential. So the refresh
//! succeeds at the token endpoint (the old refresh token is now spent) and the save
//! right after it is refused by Vault with 403. The agent must serve the new token,
//! keep it, report it unsaved from `AgentRuntime::shutdown`, and save it (shutting down
//! cleanly) once the operator fixes the policy; a second agent started
//! afterwards must then refresh with the rotated refresh token. Had the rotated token
//! been dropped, Vault would still hold the spent one, the second agent would present
//! it, and the endpoint would revoke the family.
#![cfg(all(feature = "vault", feature = "oauth"))]
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

#[allow(dead_code)]
#[path = "coordinated_refresh/mod.rs"]
mod coordinated_refresh;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use coordinated_refresh::endpoint::StrictEndpoint;
use coordinated_refresh::{PROVIDER, fingerprint, seed_credential};
use hive_cred_core::{CredentialId, CredentialStorage, ExposeSecret};
use hive_cred_runtime::AgentRuntime;
use hive_cred_vault::testkit;
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};

const CHILD_ENV: &str = "HIVE_SF_CHILD";
const ID: &str = "github";
const LINE: &str = "HIVE_SF ";

/// The agent side. Returns at once unless run as a child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_agent() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = AgentRuntime::from_env()
        .await
        .expect("AgentRuntime::from_env in the child");
    let store = &runtime.credential_store;
    // The first agent finds the credential expired; the second one forces a refresh
    // of the valid credential the first one saved.
    let got = if role == "first" {
        store.get(ID).await
    } else {
        store.refresh(ID).await
    }
    .expect("the agent gets its credential");
    let access = got.key("access_token").expect("an access token");
    assert!(!access.is_expired_at(Utc::now()), "a refreshed token");
    // EXPOSE: hashed into a fingerprint, never printed.
    let print = fingerprint(access.value().expose_secret());
    println!("{LINE}got {print} unsaved {}", store.unsaved().len());
    if role != "first" {
        return;
    }
    // While Vault still refuses, a shutdown reports what it could not save.
    let refused = runtime
        .shutdown(Duration::from_millis(300))
        .await
        .expect_err("nothing saved yet");
    println!("{LINE}refused {}", refused.kind());
    // Wait until the parent has fixed the policy, then shut down as an agent does.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("parent's go");
    let settled = runtime.shutdown(Duration::from_secs(60)).await;
    println!(
        "{LINE}settled {}",
        settled.is_ok() && store.unsaved().is_empty()
    );
    let again = store.get(ID).await.expect("still served");
    let same = again
        .key("access_token")
        // EXPOSE: hashed into a fingerprint, never printed.
        .map(|k| fingerprint(k.value().expose_secret()));
    println!("{LINE}same {}", same.as_deref() == Some(print.as_str()));
}

/// A child agent process; `lines` are its `HIVE_SF ` lines.
struct Agent {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn spawn(role: &str, addr: &str, token: &str, prefix: &str, config: &std::path::Path) -> Agent {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_agent", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .env("HIVE_VAULT_ADDR", addr)
            .env("HIVE_VAULT_TOKEN", token)
            .env("HIVE_VAULT_PATH", prefix)
            .env("HIVE_CRED_CONFIG", config)
            .env_remove("HIVE_CRED_AUDIT_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test child_agent ... " on the same line first.
                if let Some(at) = line.find(LINE)
                    && tx.send(line[at + LINE.len()..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Agent { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(90))
            .expect("the agent reports in time")
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn succeeds(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the agent process failed: {status}");
    }
}

/// The agent's policy: read everything under the prefix, manage its lock records, and
/// write the credentials only when `writable`.
fn policy(prefix: &str, writable: bool) -> String {
    let data = if writable {
        r#"["create", "read", "update"]"#
    } else {
        r#"["read"]"#
    };
    format!(
        r#"path "secret/data/{prefix}/.locks/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}/.locks/*" {{ capabilities = ["read", "update", "delete", "list"] }}
path "secret/data/{prefix}/*" {{ capabilities = {data} }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read", "list"] }}
path "secret/metadata/{prefix}" {{ capabilities = ["read", "list"] }}
"#
    )
}

async fn vault_call(
    http: &reqwest::Client,
    vault: &testkit::Target,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let response = http
        .post(format!("{}/v1/{path}", vault.addr))
        .header("X-Vault-Token", &vault.root_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "Vault {path}: {status}");
    if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

async fn stored_refresh_fingerprint(storage: &VaultStorage) -> String {
    let stored = storage
        .load(&CredentialId::new(ID).unwrap())
        .await
        .unwrap()
        .expect("the credential is stored");
    let key = stored.key("refresh_token").expect("a refresh token");
    // EXPOSE: hashed into a fingerprint, never printed.
    fingerprint(key.value().expose_secret())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_refused_after_a_refresh_keeps_the_rotated_token_until_vault_takes_it() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(vault) = testkit::shared() else {
        return;
    };
    let prefix = format!("hive-test/save-fault-{:016x}", rand::random::<u64>());
    let policy_name = format!("hive-save-fault-{:016x}", rand::random::<u64>());
    let http = reqwest::Client::new();
    vault_call(
        &http,
        &vault,
        &format!("sys/policies/acl/{policy_name}"),
        serde_json::json!({ "policy": policy(&prefix, false) }),
    )
    .await;
    let created = vault_call(
        &http,
        &vault,
        "auth/token/create",
        serde_json::json!({ "policies": [policy_name], "ttl": "10m" }),
    )
    .await;
    let agent_token = created["auth"]["client_token"]
        .as_str()
        .expect("a token")
        .to_owned();

    let endpoint = StrictEndpoint::start(600).await;
    let root = VaultStorage::new(
        VaultConfig::new(&vault.addr, VaultAuth::token(vault.root_token.clone()))
            .unwrap()
            .with_path_prefix(&prefix)
            .unwrap(),
    )
    .await
    .unwrap();
    root.save(&seed_credential(
        ID,
        endpoint.current_refresh_token(),
        Utc::now(),
    ))
    .await
    .unwrap();
    let seeded = stored_refresh_fingerprint(&root).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hive-cred.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nprovider_id = \"{PROVIDER}\"\ntoken_url = \"{}\"\nclient_id = \"hive-save-fault\"\n",
            endpoint.token_url()
        ),
    )
    .unwrap();

    // The first agent refreshes; Vault refuses the save.
    let mut first = Agent::spawn("first", &vault.addr, &agent_token, &prefix, &config);
    let t0 = Instant::now();
    let report = first.next();
    eprintln!("first agent served after {:?}", t0.elapsed());
    let served = endpoint.latest_access_fingerprint().expect("one refresh");
    assert_eq!(
        report,
        format!("got {served} unsaved 1"),
        "the new token is served and kept"
    );
    assert_eq!(first.next(), "refused unavailable");
    assert_eq!(endpoint.counts().commits, 1);
    assert_eq!(
        stored_refresh_fingerprint(&root).await,
        seeded,
        "Vault refused the save"
    );

    // The operator fixes the policy: the kept credential lands without a new refresh.
    vault_call(
        &http,
        &vault,
        &format!("sys/policies/acl/{policy_name}"),
        serde_json::json!({ "policy": policy(&prefix, true) }),
    )
    .await;
    first.go();
    let t0 = Instant::now();
    assert_eq!(first.next(), "settled true");
    eprintln!("kept save landed {:?} after the policy fix", t0.elapsed());
    assert_eq!(first.next(), "same true", "still the token it was served");
    first.succeeds();
    assert_eq!(
        stored_refresh_fingerprint(&root).await,
        endpoint.current_refresh_fingerprint(),
        "Vault holds the rotated refresh token"
    );
    assert_eq!(
        endpoint.counts().commits,
        1,
        "the retry saved, it did not refresh"
    );

    // A new agent refreshes with the rotated refresh token.
    let second = Agent::spawn("second", &vault.addr, &agent_token, &prefix, &config);
    let t0 = Instant::now();
    let report = second.next();
    second.succeeds();
    eprintln!("second agent done after {:?}", t0.elapsed());
    let counts = endpoint.counts();
    assert!(!counts.revoked, "no refresh token was presented twice");
    assert_eq!(counts.invalid_grants, 0);
    assert_eq!(counts.commits, 2);
    assert_eq!(
        report,
        format!(
            "got {} unsaved 0",
            endpoint.latest_access_fingerprint().unwrap()
        )
    );
    assert_eq!(
        stored_refresh_fingerprint(&root).await,
        endpoint.current_refresh_fingerprint()
    );
}
