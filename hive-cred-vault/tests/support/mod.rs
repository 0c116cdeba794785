//! Live-server support for the tests and the benchmarks: the servers come from
//! `hive_cred_vault::testkit` (the workspace's one OpenBao launcher; see its docs for
//! `HIVE_TEST_BAO_BIN`, `HIVE_TEST_VAULT_ADDR` and `CI=true`), the API helpers are here.
#![allow(dead_code, clippy::print_stdout)]

use hive_cred_vault::testkit::{DevOptions, DevServer};
#[allow(unused_imports)]
pub use hive_cred_vault::testkit::{ROOT_TOKEN, Target, free_port, shared, skip};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
use serde_json::Value;

/// A dev server of the test's own (for stopping, sealing, audit devices).
pub fn own_server(config_hcl: Option<&str>) -> Option<DevServer> {
    let mut options = DevOptions::default();
    if let Some(hcl) = config_hcl {
        options = options.config_hcl(hcl);
    }
    DevServer::start(options)
}

/// A dev server with TLS (`bao server -dev -dev-tls`) of the test's own: OpenBao
/// generates a CA and a certificate for `localhost` and `127.0.0.1`
/// ([`DevServer::tls_ca`]).
pub fn own_tls_server() -> Option<DevServer> {
    DevServer::start(DevOptions::default().tls())
}

/// A unique path prefix for one test.
pub fn unique_prefix(name: &str) -> String {
    format!("hive-test/{name}-{:016x}", rand_u64())
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A config for `target` with `token` under `prefix`.
pub fn config(target: &Target, token: &str, prefix: &str) -> VaultConfig {
    VaultConfig::new(&target.addr, VaultAuth::token(token.to_owned()))
        .expect("valid address")
        .with_path_prefix(prefix)
        .expect("valid prefix")
}

/// A storage with the root token under `prefix`.
pub async fn root_storage(target: &Target, prefix: &str) -> VaultStorage {
    VaultStorage::new(config(target, &target.root_token, prefix))
        .await
        .expect("connect with the root token")
}

/// Calls the Vault HTTP API with `token`; returns status and JSON body (Null if empty).
pub async fn api_as(
    target: &Target,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/{path}", target.addr.trim_end_matches('/'));
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
    let mut req = client.request(method, url).header("X-Vault-Token", token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("Vault API request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("Vault API response body");
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// Calls the Vault HTTP API as root and panics on a non-2xx answer.
pub async fn root_api(target: &Target, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, json) = api_as(target, &target.root_token, method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path} as root failed with {status}: {json}"
    );
    json
}

/// Creates a policy named `name` with `hcl`.
pub async fn put_policy(target: &Target, name: &str, hcl: &str) {
    root_api(
        target,
        "PUT",
        &format!("sys/policies/acl/{name}"),
        Some(serde_json::json!({ "policy": hcl })),
    )
    .await;
}

/// Read-write policy for everything under `prefix` in the `secret` mount.
pub fn rw_policy(prefix: &str) -> String {
    format!(
        r#"
path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read", "list", "delete"] }}
path "secret/metadata/{prefix}" {{ capabilities = ["list"] }}
"#
    )
}

/// Creates a token as root; returns the token.
pub async fn create_token(target: &Target, body: Value) -> String {
    let json = root_api(target, "POST", "auth/token/create", Some(body)).await;
    json["auth"]["client_token"]
        .as_str()
        .expect("client_token in token/create response")
        .to_owned()
}

/// The remaining TTL of `token` in seconds, or `None` when Vault rejects it (expired).
pub async fn token_ttl(target: &Target, token: &str) -> Option<u64> {
    let (status, json) = api_as(target, token, "GET", "auth/token/lookup-self", None).await;
    (status == 200).then(|| json["data"]["ttl"].as_u64().expect("ttl in lookup-self"))
}
