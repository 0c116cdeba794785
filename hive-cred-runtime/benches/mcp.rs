//! The MCP token store's hot path: rmcp's `AuthorizationManager::get_access_token`
//! with a live access token (one `CredentialStore::load` of the token store, no network),
//! which rmcp runs before every MCP request. Same-run baseline: the same call with
//! rmcp's own `InMemoryCredentialStore`.
//! - `mcp/get_access_token_rmcp_in_memory` (baseline);
//! - `mcp/get_access_token_hive_memory`: `McpCredentialStore` over `MemoryStorage`
//!   (the layout conversion);
//! - `mcp/get_access_token_hive_local`: over the encrypted local store (a file read and
//!   decryption per call).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hive_cred_core::{CredentialStorage, CredentialStore, MemoryStorage};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_runtime::mcp::McpCredentialStore;
use hive_cred_runtime::rmcp::transport::auth::{
    AuthorizationManager, AuthorizationMetadata, CredentialStore as RmcpStore,
    InMemoryCredentialStore, StoredCredentials,
};

fn creds() -> StoredCredentials {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let response = serde_json::from_value(serde_json::json!({
        "access_token": "bench-access-token-0123456789abcdef",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "bench-refresh-token-0123456789abcdef",
        "scope": "mcp:tools",
    }))
    .unwrap();
    StoredCredentials::new(
        "bench-client".into(),
        Some(response),
        vec!["mcp:tools".into()],
        Some(now),
    )
}

async fn manager<S: RmcpStore + Clone + 'static>(store: S) -> AuthorizationManager {
    store.save(creds()).await.unwrap();
    let mut m = AuthorizationManager::new("http://127.0.0.1:9/mcp")
        .await
        .unwrap();
    let mut metadata = AuthorizationMetadata::default();
    metadata.authorization_endpoint = "http://127.0.0.1:9/authorize".into();
    metadata.token_endpoint = "http://127.0.0.1:9/token".into();
    m.set_metadata(metadata);
    m.configure_client_id("bench-client").unwrap();
    m.set_credential_store(store);
    m
}

fn hive_store(storage: Arc<dyn CredentialStorage>) -> McpCredentialStore {
    let store = CredentialStore::builder().storage(storage).build().unwrap();
    McpCredentialStore::new(&store, "mcp-bench").unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = rt
        .block_on(LocalStorage::open(
            dir.path().join("credentials"),
            KeySource::generate().unwrap().0,
        ))
        .unwrap();
    let baseline = rt.block_on(manager(InMemoryCredentialStore::new()));
    let memory = rt.block_on(manager(hive_store(Arc::new(MemoryStorage::new()))));
    let on_disk = rt.block_on(manager(hive_store(Arc::new(local))));

    let mut group = c.benchmark_group("mcp");
    for (name, m) in [
        ("get_access_token_rmcp_in_memory", &baseline),
        ("get_access_token_hive_memory", &memory),
        ("get_access_token_hive_local", &on_disk),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { m.get_access_token().await.unwrap() })
        });
    }
    group.finish();
}

criterion_group!(mcp, benches);
criterion_main!(mcp);
