//! `hive-cred doctor`: checks the setup and says what to fix.

use std::path::Path;

use chrono::Utc;
use hive_cred_core::{CredentialStorage, DEFAULT_REFRESH_WINDOW};
use hive_cred_runtime::{Backend, VAULT_ADDR_ENV};

use crate::commands::{backend, config, env, fmt_time, key_source};

#[derive(Default)]
struct Report {
    failures: usize,
    warnings: usize,
}

impl Report {
    fn ok(&mut self, msg: impl AsRef<str>) {
        println!("ok    {}", msg.as_ref());
    }
    fn info(&mut self, msg: impl AsRef<str>) {
        println!("info  {}", msg.as_ref());
    }
    fn warn(&mut self, msg: impl AsRef<str>) {
        self.warnings += 1;
        println!("warn  {}", msg.as_ref());
    }
    fn fail(&mut self, msg: impl AsRef<str>) {
        self.failures += 1;
        println!("FAIL  {}", msg.as_ref());
    }
}

/// Runs every check; exit code 0 when nothing failed (warnings allowed), else 1.
pub async fn doctor(dir: Option<&Path>) -> u8 {
    let mut r = Report::default();

    let config = match config() {
        Ok(Some(c)) => {
            r.ok(format!(
                "config: HIVE_CRED_CONFIG parses ({} provider(s))",
                c.providers.len()
            ));
            Some(c)
        }
        Ok(None) => {
            r.info("config: HIVE_CRED_CONFIG not set (no OAuth2 providers registered)");
            None
        }
        Err(e) => {
            r.fail(format!("config: {e}"));
            None
        }
    };

    check_vault(&mut r).await;
    check_unsaved_refreshes(&mut r, config.as_ref());

    let chosen = match backend(dir) {
        Ok(b) => b,
        Err(e) => {
            r.fail(format!("backend: {e}"));
            return summary(&r);
        }
    };
    let storage: Option<std::sync::Arc<dyn CredentialStorage>> = match &chosen {
        Backend::Local { dir } => check_local(&mut r, dir).await,
        other => match other.open(&env).await {
            Ok(s) => {
                r.ok(format!("backend: {} opened", other.name()));
                Some(s)
            }
            Err(e) => {
                r.fail(format!("backend: {}: {e}", other.name()));
                None
            }
        },
    };
    if let Some(storage) = storage {
        let local_dir = match &chosen {
            Backend::Local { dir } => Some(dir.as_path()),
            _ => None,
        };
        check_credentials(&mut r, &*storage, config.as_ref(), local_dir).await;
    }
    summary(&r)
}

/// Reads the audit log (`HIVE_CRED_AUDIT_LOG`, else the config's `audit_log`) for
/// refreshed credentials whose save failed and never landed since: their new tokens
/// live only in the memory of the agent process that refreshed them.
fn check_unsaved_refreshes(r: &mut Report, config: Option<&hive_cred_runtime::RuntimeConfig>) {
    let path = hive_cred_runtime::audit_log_path(config, &env);
    let Some(path) = path else {
        r.info("audit: no audit log configured (HIVE_CRED_AUDIT_LOG or audit_log); unsaved refreshes cannot be checked");
        return;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.info(format!("audit: {} does not exist yet", path.display()));
            return;
        }
        Err(e) => {
            r.warn(format!("audit: cannot read {}: {e}", path.display()));
            return;
        }
    };
    let unsaved = unsaved_refreshes(&text);
    if unsaved.is_empty() {
        r.ok(format!(
            "audit: every refreshed credential in {} was saved",
            path.display()
        ));
    }
    for (id, (failures, kind, since)) in unsaved {
        r.fail(format!(
            "credential {id}: refreshed at {since} but its save failed {failures} time(s) (last: {kind}); the new tokens exist only in the agent process that refreshed them, which keeps retrying: fix the storage and keep that process running until the audit log shows a successful save"
        ));
    }
}

/// Ids whose last successful refresh was followed by failed saves and no successful
/// one: failures, last error kind, refresh time.
fn unsaved_refreshes(text: &str) -> std::collections::BTreeMap<String, (usize, String, String)> {
    use std::collections::BTreeMap;
    let mut pending: BTreeMap<String, (usize, String, String)> = BTreeMap::new();
    let mut refreshed: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<hive_cred_runtime::AuditRecord>(line) else {
            continue;
        };
        let id = rec.credential_id.clone();
        match (rec.operation.as_ref(), rec.outcome.as_ref()) {
            ("refresh", "ok") => {
                refreshed.insert(id, fmt_time(rec.time));
            }
            ("save", "ok") => {
                refreshed.remove(&id);
                pending.remove(&id);
            }
            ("save", "error") => {
                if let Some(at) = refreshed.get(&id) {
                    let kind = rec.error_kind.as_deref().unwrap_or("unknown").to_owned();
                    let entry = pending.entry(id).or_insert((0, String::new(), at.clone()));
                    entry.0 += 1;
                    entry.1 = kind;
                }
            }
            _ => {}
        }
    }
    pending
}

fn summary(r: &Report) -> u8 {
    println!(
        "doctor: {} problem(s), {} warning(s)",
        r.failures, r.warnings
    );
    u8::from(r.failures > 0)
}

async fn check_vault(r: &mut Report) {
    let Some(addr) = env(VAULT_ADDR_ENV).filter(|a| !a.trim().is_empty()) else {
        r.info(format!("vault: {VAULT_ADDR_ENV} not set"));
        return;
    };
    #[cfg(feature = "vault")]
    {
        let reached = match hive_cred_vault::VaultConfig::from_lookup(env) {
            Ok(c) => hive_cred_vault::VaultStorage::new(c).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match reached {
            Ok(()) => r.ok(format!("vault: {addr} reachable and the token is accepted")),
            Err(e) => r.fail(format!("vault: {addr}: {e}")),
        }
    }
    #[cfg(not(feature = "vault"))]
    r.fail(format!(
        "vault: {VAULT_ADDR_ENV}={addr} is set but this hive-cred was built without the `vault` feature"
    ));
}

async fn check_local(r: &mut Report, dir: &Path) -> Option<std::sync::Arc<dyn CredentialStorage>> {
    r.info(format!("backend: local store in {}", dir.display()));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => check_permissions(r, dir, &m),
        Ok(_) => {
            r.fail(format!("store: {} is not a directory", dir.display()));
            return None;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.fail(format!(
                "store: {} does not exist; create it with `hive-cred init`",
                dir.display()
            ));
            return None;
        }
        Err(e) => {
            r.fail(format!("store: cannot read {}: {e}", dir.display()));
            return None;
        }
    }
    let key = match key_source(dir) {
        Ok(k) => {
            let what = match &k {
                hive_cred_local::KeySource::RawKey(_) => "raw key",
                _ => "passphrase",
            };
            r.ok(format!("key: a {what} is available"));
            k
        }
        Err(e) => {
            r.fail(format!("key: {e}"));
            return None;
        }
    };
    match hive_cred_local::LocalStorage::open(dir, key).await {
        Ok(s) => {
            r.ok("store: opened (the key unlocks the store header)");
            Some(std::sync::Arc::new(s))
        }
        Err(e) => {
            r.fail(format!("store: {e}"));
            None
        }
    }
}

#[cfg(unix)]
fn check_permissions(r: &mut Report, dir: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        r.warn(format!(
            "permissions: {} is mode {mode:o}; others can list it: chmod 700 {}",
            dir.display(),
            dir.display()
        ));
    } else {
        r.ok(format!("permissions: {} is mode {mode:o}", dir.display()));
    }
    let mut open = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(m) = entry.metadata()
                && m.is_file()
                && m.permissions().mode() & 0o077 != 0
            {
                open.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    if !open.is_empty() {
        open.sort();
        r.warn(format!(
            "permissions: readable by group or others: {} (chmod 600 them)",
            open.join(", ")
        ));
    }
}

#[cfg(not(unix))]
fn check_permissions(r: &mut Report, _dir: &Path, _meta: &std::fs::Metadata) {
    r.info("permissions: not checked on this platform");
}

async fn check_credentials(
    r: &mut Report,
    storage: &dyn CredentialStorage,
    config: Option<&hive_cred_runtime::RuntimeConfig>,
    local_dir: Option<&Path>,
) {
    let ids = match storage.list().await {
        Ok(ids) => ids,
        Err(e) => {
            r.fail(format!("credentials: cannot list: {e}"));
            return;
        }
    };
    let now = Utc::now();
    let mut readable = 0;
    for id in &ids {
        let c = match storage.load(id).await {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                r.fail(format!("credential {id}: does not decrypt: {e}"));
                continue;
            }
        };
        readable += 1;
        if let Some(expiry) = c.earliest_expiry() {
            let refreshable = c.auto_refresh() && c.provider_id().is_some();
            if expiry <= now && !refreshable {
                r.warn(format!(
                    "credential {id}: expired {} and has no auto-refresh; store a new value",
                    fmt_time(expiry)
                ));
            } else if expiry <= now + DEFAULT_REFRESH_WINDOW {
                r.info(format!(
                    "credential {id}: expires {}; refreshed before its next use",
                    fmt_time(expiry)
                ));
            }
        }
        if c.auto_refresh()
            && let Some(pid) = c.provider_id()
        {
            let registered =
                config.is_some_and(|cfg| cfg.providers.iter().any(|p| p.provider_id == pid));
            if !registered {
                r.warn(format!(
                        "credential {id}: auto-refresh through provider `{pid}`, which HIVE_CRED_CONFIG does not register"
                    ));
            }
        }
    }
    if readable == ids.len() {
        r.ok(format!("credentials: all {readable} decrypt"));
    }
    if let Some(dir) = local_dir {
        count_unlisted_records(r, dir, ids.len());
    }
}

/// The local store's `list` skips records it cannot read (logging a warning); compare
/// with the number of record files (`*.cred`, see the hive-cred-local format).
fn count_unlisted_records(r: &mut Report, dir: &Path, listed: usize) {
    let files = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cred"))
                .count()
        })
        .unwrap_or(0);
    if files > listed {
        r.fail(format!(
            "credentials: {} record file(s) in {} cannot be read (wrong store, tampered or truncated); the warnings above name them",
            files - listed,
            dir.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::unsaved_refreshes;

    fn line(id: &str, op: &str, outcome: &str) -> String {
        let kind = if outcome == "error" {
            r#","error_kind":"unavailable""#
        } else {
            ""
        };
        format!(
            r#"{{"time":"2030-01-01T00:00:00Z","node":null,"credential_id":"{id}","operation":"{op}","outcome":"{outcome}"{kind},"duration_us":1}}"#
        )
    }

    #[test]
    fn a_refresh_whose_saves_failed_without_a_later_success_is_reported() {
        let log = [
            line("gh", "refresh", "ok"),
            line("gh", "save", "error"),
            line("gh", "save", "error"),
            line("slack", "refresh", "ok"),
            line("slack", "save", "error"),
            line("slack", "save", "ok"),
            line("manual", "save", "error"),
        ]
        .join("\n");
        let unsaved = unsaved_refreshes(&log);
        assert_eq!(unsaved.len(), 1, "{unsaved:?}");
        let (failures, kind, _) = &unsaved["gh"];
        assert_eq!((*failures, kind.as_str()), (2, "unavailable"));
    }
}
