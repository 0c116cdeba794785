//! `hive-cred accounts`, `hive-cred check` and `hive-cred doctor --agent`: the
//! agent-side view of the store (accounts, health checks, preflight).

use std::path::Path;

use hive_cred_core::{Error, Result};
use hive_cred_runtime::{AgentRuntime, HealthChecker, NodeSpec};
use serde::Deserialize;

use crate::commands::{config, fmt_time, open_storage};

/// The runtime an agent from `AgentRuntime::from_env` would have over this store:
/// the environment (specs' variables, `HIVE_CRED_{ID}__{KEY}`, `{ID}_API_KEY`) under
/// the stored credentials.
async fn runtime(dir: Option<&Path>, health: bool) -> Result<AgentRuntime> {
    let storage = open_storage(dir).await?;
    let mut builder = AgentRuntime::builder()
        .storage(storage)
        .env_fallback(hive_cred_core::EnvStorage::new());
    match (config()?, health) {
        // The config's [health] table sets the checker up.
        (Some(config), true) => builder = builder.config(config),
        (Some(config), false) => builder = builder.config(config).without_health_checks(),
        (None, true) => builder = builder.health_checker(HealthChecker::new()),
        (None, false) => {}
    }
    builder.build().await
}

fn json_out(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| {
        Error::new(
            hive_cred_core::ErrorKind::Unexpected,
            format!("JSON output: {e}"),
        )
    })?;
    println!("{text}");
    Ok(())
}

/// `hive-cred accounts PROVIDER`: aliases, identities and status, never values.
pub async fn accounts(dir: Option<&Path>, provider: &str, json: bool) -> Result<u8> {
    let rt = runtime(dir, false).await?;
    let accounts = rt.credential_store.list_accounts(provider).await?;
    if json {
        json_out(&accounts)?;
        return Ok(0);
    }
    if accounts.is_empty() {
        println!(
            "no accounts of {provider}: store one with `hive-cred set {provider} api_key` or `hive-cred set {provider}.ALIAS api_key`"
        );
        return Ok(0);
    }
    println!(
        "{:<16} {:<28} {:<28} {:<8} LAST CHECKED",
        "ALIAS", "ID", "IDENTITY", "STATUS"
    );
    for a in &accounts {
        println!(
            "{:<16} {:<28} {:<28} {:<8} {}",
            a.alias(),
            a.id(),
            a.identity().label().unwrap_or("-"),
            a.status(),
            a.last_checked().map_or_else(|| "-".to_owned(), fmt_time)
        );
    }
    Ok(0)
}

/// `hive-cred check [ID]`: runs the health checks of the specs (one credential, or
/// every stored credential whose spec has one). Exit 0 when all are healthy, else 1.
pub async fn check(dir: Option<&Path>, id: Option<&str>, json: bool) -> Result<u8> {
    let rt = runtime(dir, true).await?;
    let checker = rt.health_checker().cloned().unwrap_or_default();
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => rt
            .credential_store
            .list()
            .await?
            .into_iter()
            .map(|i| i.to_string())
            .filter(|i| rt.specs().get(i).is_some_and(|s| s.health_check.is_some()))
            .collect(),
    };
    let mut reports = Vec::new();
    let mut all_ok = true;
    for id in &ids {
        let spec = rt.specs().get(id).cloned().ok_or_else(|| {
            Error::config("no credential spec for this id: add one to a spec file named in the config's `specs`")
                .with_context("id", id)
        })?;
        match checker.check(&rt.credential_store, id, &spec).await? {
            Some(report) => {
                all_ok &= report.is_healthy();
                if !json {
                    println!(
                        "{:<24} {:<12} {:>4} {:>6}ms {}{}",
                        id,
                        report.status.as_str(),
                        report
                            .http_status
                            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                        report.elapsed_ms,
                        report
                            .identity
                            .as_ref()
                            .and_then(|i| i.label())
                            .unwrap_or(""),
                        report
                            .detail
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default(),
                    );
                }
                reports.push(report);
            }
            None if ids.len() == 1 => {
                return Err(Error::config("the credential's spec has no health check")
                    .with_context("id", id));
            }
            None => {}
        }
    }
    if json {
        json_out(&reports)?;
    } else if ids.is_empty() {
        println!("no stored credential has a spec with a health check");
    }
    Ok(if all_ok { 0 } else { 1 })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    #[serde(default)]
    nodes: Vec<NodeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    credentials: Vec<String>,
    #[serde(default)]
    any_of: Vec<Vec<String>>,
    #[serde(default)]
    accounts: std::collections::BTreeMap<String, String>,
}

fn parse_agent(path: &Path) -> Result<Vec<NodeSpec>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::from(e).with_context("path", path.display()))?;
    let file: AgentFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| Error::config(format!("agent file: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| Error::config(format!("agent file: {}", e.message())))?
    };
    Ok(file
        .nodes
        .into_iter()
        .map(|n| {
            let mut spec = NodeSpec::new(n.name).credentials(n.credentials);
            if let Some(kind) = n.kind {
                spec = spec.kind(kind);
            }
            for group in n.any_of {
                spec = spec.any_of(group);
            }
            for (provider, alias) in n.accounts {
                spec = spec.account(provider, alias);
            }
            spec
        })
        .collect())
}

/// `hive-cred doctor --agent FILE [--check]`: preflight of the agent's nodes, with
/// health checks when `check`. Exit 0 when every tool has its credentials, else 1.
pub async fn doctor_agent(dir: Option<&Path>, file: &Path, json: bool, check: bool) -> Result<u8> {
    let nodes = parse_agent(file).map_err(|e| e.with_context("path", file.display()))?;
    let rt = runtime(dir, check).await?;
    let report = rt.preflight(&nodes).await?;
    if json {
        json_out(&report)?;
    } else {
        for c in &report.credentials {
            println!(
                "{:<6} {:<24} {}{}",
                if c.state == hive_cred_runtime::CredentialState::Available {
                    "ok"
                } else {
                    "FAIL"
                },
                c.id,
                c.state.as_str(),
                c.resolved_id
                    .as_deref()
                    .filter(|r| *r != c.id)
                    .map(|r| format!(" (as {r})"))
                    .unwrap_or_default()
            );
        }
        if report.message.is_empty() {
            println!("every tool of the agent has its credentials");
        } else {
            print!("\n{}", report.message);
        }
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}
