//! The main job of hive-cred, end to end, with no setup:
//!
//! 1. an encrypted local store in a temporary directory (raw key generated in-process);
//! 2. a GitHub-style OAuth2 credential whose access token has expired, and a
//!    Brave-Search-style API key;
//! 3. an OAuth2 token endpoint on 127.0.0.1 (hive-cred-oauth's `testkit` mock server,
//!    which rotates refresh tokens and checks the client's credentials);
//! 4. a two-node agent: node 1 needs the GitHub credential, which the runtime refreshes
//!    before the node starts; node 2's tool output contains the API key, which reaches
//!    the "LLM" only as `[hive:brave_search.api_key]`;
//! 5. the audit trail.
//!
//! Run: `cargo run -p hive-cred-runtime --example agent`
#![allow(
    clippy::print_stdout,
    reason = "an example shows what it does on stdout"
)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use hive_cred_core::{CredentialObject, CredentialType, ExposeSecret};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_oauth::testkit::{MockConfig, MockTokenServer};
use hive_cred_oauth::{AuthStyle, OAuth2Config, OAuth2Provider};
use hive_cred_runtime::{AgentRuntime, NodeSpec, UnavailableCredentials};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn random_hex() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stand-in for the GitHub API: echoes the request like an API debug response would.
fn github_list_repos(authorization: &str) -> String {
    format!(
        "GET https://api.github.com/user/repos -> 200\nrequest headers: {{\"Authorization\": \"{authorization}\"}}\n[\"hive-cred\", \"agents\"]"
    )
}

/// A stand-in for the Brave Search API whose response leaks the key it was called with
/// (as debug URLs, error pages and echoed requests do).
fn brave_search(api_key: &str, query: &str) -> Vec<String> {
    let body = format!(
        "{{\"query\": \"{query}\", \"debug\": {{\"url\": \"https://api.search.brave.com/res/v1/web/search?q={query}&token={api_key}\"}}, \"results\": [\"The Rust Book\", \"Rust by Example\"]}}"
    );
    // Streamed to the model in 16-byte chunks: the key is split across chunks.
    body.as_bytes()
        .chunks(16)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = std::time::Instant::now();

    // 1. A fresh encrypted store, keyed in-process (a raw key: no scrypt cost).
    let dir = tempfile::tempdir()?;
    let (key, _key_text) = KeySource::generate()?;
    let storage = LocalStorage::open(dir.path().join("credentials"), key).await?;
    println!("1. local encrypted store in {}", storage.dir().display());

    // 3. The token endpoint on loopback.
    let client_secret = format!("cs_{}", random_hex());
    let endpoint = MockTokenServer::start(
        MockConfig::new()
            .with_client("Iv1.hive-example", client_secret.clone())
            .with_expires_in(Some(28_800))
            .with_scope("repo"),
    )
    .await;
    println!("3. token endpoint on {}", endpoint.token_url());

    // The runtime: the store, a GitHub-style OAuth2 provider against the local endpoint.
    let provider = OAuth2Provider::new(
        OAuth2Config::new("github", endpoint.token_url(), "Iv1.hive-example")
            .with_client_secret(client_secret.into())
            .with_auth_style(AuthStyle::RequestBody),
    )?;
    let runtime = AgentRuntime::builder()
        .storage(Arc::new(storage))
        .provider(Arc::new(provider))
        .build()
        .await?;

    // 2. The credentials: GitHub (access token expired an hour ago) and Brave Search.
    let mut github = CredentialObject::builder("github", CredentialType::OAuth2)
        .provider_id("github")
        .auto_refresh(true)
        .description("GitHub OAuth app user token")
        .build()?;
    github.set_key(
        "access_token",
        format!("gho_expired_{}", random_hex()),
        Some(Utc::now() - Duration::hours(1)),
    )?;
    // The refresh token the endpoint issued earlier (a person connected the account once).
    github.set_key("refresh_token", endpoint.current_refresh_token(), None)?;
    runtime.credential_store.save(github).await?;
    let mut brave = CredentialObject::new("brave_search", CredentialType::ApiKey)?;
    brave.set_key("api_key", format!("BSA{}", random_hex()), None)?;
    runtime.credential_store.save(brave).await?;
    println!("2. saved `github` (access token expired 1 h ago) and `brave_search`");

    // 4a. Node 1: needs GitHub. The pre-step refreshes it before the node starts.
    let node1 = NodeSpec::new("list_repos").credential("github");
    let for_llm = runtime
        .run_node(&node1, |ctx| async move {
            let gh = ctx.credential("github").expect("declared in the spec");
            let expires = gh
                .key("access_token")
                .and_then(|k| k.expires_at())
                .expect("the provider set an expiry");
            println!(
                "4. node `{}` starts with a refreshed token (expires {}, refreshed {})",
                ctx.name(),
                expires.format("%H:%M:%S UTC"),
                gh.last_refreshed()
                    .map_or_else(|| "never".into(), |t| t.format("%H:%M:%S UTC").to_string())
            );
            // The tool builds its header from a template; the value never passes the model.
            let header = ctx
                .credential_store
                .resolve("Bearer {{github.access_token}}")
                .await?;
            // EXPOSE: the (simulated) HTTP request needs the header value.
            let tool_output = github_list_repos(header.expose_secret());
            Ok::<_, hive_cred_core::Error>(ctx.redact(&tool_output))
        })
        .await?;
    println!("   tool output as the LLM sees it:\n{}", indent(&for_llm));
    assert!(for_llm.contains("[hive:github.access_token]"));

    // 4b. Node 2: needs Brave Search; its tool output leaks the key, streamed in chunks.
    let node2 = NodeSpec::new("web_search").credential("brave_search");
    let for_llm = runtime
        .run_node(&node2, |ctx| async move {
            // How tools fetch credentials: by id, from the runtime's store.
            let creds = ctx.credential_store.get("brave_search").await?;
            let api_key = creds.get_key("api_key").expect("saved above");
            // EXPOSE: the (simulated) search request needs the key.
            let chunks = brave_search(api_key.expose_secret(), "rust");
            let mut stream = ctx.redactor().stream();
            let mut to_model = String::new();
            for chunk in &chunks {
                to_model.push_str(&stream.push(chunk));
            }
            to_model.push_str(&stream.finish());
            // EXPOSE: the example checks that the key really is gone.
            assert!(!to_model.contains(api_key.expose_secret()));
            Ok::<_, hive_cred_core::Error>(to_model)
        })
        .await?;
    println!(
        "   node `web_search` tool output (streamed in 16-byte chunks) as the LLM sees it:\n{}",
        indent(&for_llm)
    );
    assert!(for_llm.contains("[hive:brave_search.api_key]"));

    // A node whose credential is missing is not started; one error names it.
    let node3 = NodeSpec::new("post_to_slack")
        .credential("slack_bot")
        .credential("github");
    let outcome = runtime
        .run_node(&node3, |_ctx| async { Ok::<_, hive_cred_core::Error>(()) })
        .await;
    let err = outcome.expect_err("slack_bot is not stored");
    let missing: Vec<&str> = UnavailableCredentials::from_error(&err)
        .map(|u| u.ids().collect())
        .unwrap_or_default();
    assert_eq!(missing, ["slack_bot"]);
    println!("   {err}");

    // 5. The audit trail: who touched which credential, never a value.
    println!(
        "5. audit trail ({} token endpoint call(s)):",
        endpoint.counts().arrivals
    );
    for record in runtime.audit_trail() {
        println!("   {record}");
    }
    // 6. Before exiting: nothing refreshed may be left only in memory.
    runtime.shutdown(std::time::Duration::from_secs(10)).await?;
    println!("done in {} ms", started.elapsed().as_millis());
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("     | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
