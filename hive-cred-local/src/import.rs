//! Import from the Python Hive credential store (Fernet-encrypted `{id}.enc` files).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialType, Error, ErrorKind,
    ExposeSecret, Metadata, Result, SecretString,
};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::fs::{Role, io_error, read_regular};
use crate::storage::LocalStorage;

/// Largest `.enc` file read (the Python store writes a few kilobytes per credential).
const MAX_SOURCE_LEN: usize = 4 << 20;

/// The outcome of [`import_python_store`]. Lists ids and reasons, never values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Credentials written into the target store.
    pub imported: Vec<CredentialId>,
    /// Files that were not imported, each with the reason.
    pub failures: Vec<ImportFailure>,
}

/// One `.enc` file that was not imported.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportFailure {
    /// The source file.
    pub file: PathBuf,
    /// What went wrong (never contains a secret value).
    pub reason: String,
}

impl fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

/// Imports every `{id}.enc` file of a Python Hive credential store into `into`.
///
/// `src_dir` is the directory holding the `.enc` files, or its parent (the Python store
/// keeps them in `~/.hive/credentials/credentials/`). `fernet_key` is the Python store's
/// `HIVE_CREDENTIAL_KEY` (a Fernet key: 32 bytes, URL-safe base64).
///
/// Each file is decrypted and mapped: credential type, keys with their `expires_at` and
/// metadata, `provider_id`, `auto_refresh`, description, tags and timestamps. Naive
/// timestamps are taken as UTC. Unknown credential types become `custom`; unknown fields
/// are ignored. A credential whose id already exists in `into` is not overwritten (it is
/// reported as a failure). Files that cannot be imported are listed in
/// [`ImportReport::failures`]; the others are still imported.
///
/// # Errors
/// `Config` if `fernet_key` is not a Fernet key; I/O errors reading `src_dir`. Errors of
/// the target store other than a conflict (for example a wrong passphrase) stop the
/// import.
pub async fn import_python_store(
    src_dir: impl AsRef<Path>,
    fernet_key: &SecretString,
    into: &LocalStorage,
) -> Result<ImportReport> {
    // EXPOSE: the Fernet key text is handed to the Fernet implementation only.
    let fernet = fernet::Fernet::new(fernet_key.expose_secret().trim()).ok_or_else(|| {
        Error::config(
            "the Python store key is not a Fernet key (32 bytes, URL-safe base64, as in its \
             HIVE_CREDENTIAL_KEY)",
        )
    })?;
    let files = source_files(src_dir.as_ref())?;
    let mut report = ImportReport::default();
    for file in files {
        let fail = |reason: String| ImportFailure {
            file: file.clone(),
            reason,
        };
        let credential = match read_one(&fernet, &file) {
            Ok(c) => c,
            Err(reason) => {
                report.failures.push(fail(reason));
                continue;
            }
        };
        match into.save(&credential).await {
            Ok(()) => report.imported.push(credential.id().clone()),
            Err(e) if e.kind() == ErrorKind::Conflict => report.failures.push(fail(format!(
                "credential {} already exists in the target store; not overwritten",
                credential.id()
            ))),
            Err(e) => return Err(e.with_context("file", file.display())),
        }
    }
    tracing::info!(
        imported = report.imported.len(),
        failed = report.failures.len(),
        "imported the Python credential store"
    );
    Ok(report)
}

/// The `.enc` files of `dir`, or of `dir/credentials` when `dir` has none; sorted.
fn source_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io_error(e, "could not list the Python store", dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "enc"))
            .collect();
        files.sort();
        Ok(files)
    };
    let files = list(dir)?;
    let nested = dir.join("credentials");
    if files.is_empty() && nested.is_dir() {
        return list(&nested);
    }
    Ok(files)
}

/// Decrypts and maps one file. The error is a reason for the report.
fn read_one(fernet: &fernet::Fernet, file: &Path) -> std::result::Result<CredentialObject, String> {
    let bytes = read_regular(file, Role::ImportSource, MAX_SOURCE_LEN)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "file disappeared".to_string())?;
    if bytes.len() > MAX_SOURCE_LEN {
        return Err(format!("file is larger than {MAX_SOURCE_LEN} bytes"));
    }
    let token = std::str::from_utf8(&bytes)
        .map_err(|_| "not a Fernet token (not text)".to_string())?
        .trim();
    let plaintext = Zeroizing::new(fernet.decrypt(token).map_err(|_| {
        "could not decrypt: the Fernet key is wrong or the file was modified".to_string()
    })?);
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    map_credential(&plaintext, &stem)
}

#[derive(Deserialize)]
struct PyCredential {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    credential_type: Option<Value>,
    #[serde(default)]
    keys: BTreeMap<String, PyKey>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    auto_refresh: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<Value>>,
    #[serde(default)]
    created_at: Option<Value>,
    #[serde(default)]
    updated_at: Option<Value>,
    #[serde(default)]
    last_refreshed: Option<Value>,
}

#[derive(Deserialize)]
struct PyKey {
    value: Option<SecretString>,
    #[serde(default)]
    expires_at: Option<Value>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
}

/// Maps the Python store's JSON (a pydantic dump of its `CredentialObject`).
pub(crate) fn map_credential(
    json: &[u8],
    fallback_id: &str,
) -> std::result::Result<CredentialObject, String> {
    let py: PyCredential = serde_json::from_slice(json).map_err(|e| {
        // serde_json messages can quote input; keep only the position.
        format!(
            "decrypted content is not a credential (line {}, column {}, {:?})",
            e.line(),
            e.column(),
            e.classify()
        )
    })?;
    let raw_id = py.id.as_deref().unwrap_or(fallback_id);
    let id = CredentialId::new(raw_id).map_err(|e| e.message().to_string())?;
    let mut credential =
        CredentialObject::with_id(id, credential_type(py.credential_type.as_ref()));
    credential
        .set_provider_id(py.provider_id.filter(|p| !p.is_empty()))
        .set_auto_refresh(py.auto_refresh.unwrap_or(false))
        .set_description(py.description.filter(|d| !d.is_empty()))
        .set_tags(
            py.tags
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| match t {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
        );
    for (name, key) in py.keys {
        let value = key
            .value
            .ok_or_else(|| format!("key {name:?} has no value"))?;
        // EXPOSE: comparing with pydantic's mask to refuse importing a masked value.
        if value.expose_secret() == "**********" {
            return Err(format!(
                "key {name:?} holds pydantic's mask instead of a value; the file was not \
                 written by the store"
            ));
        }
        let expires_at = timestamp(key.expires_at.as_ref())
            .map_err(|why| format!("key {name:?} has an invalid expires_at: {why}"))?;
        let metadata: Metadata = key
            .metadata
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::Null => None,
                Value::String(s) => Some((k, s)),
                other => Some((k, other.to_string())),
            })
            .collect();
        credential
            .set_key_with_metadata(name, value, expires_at, metadata)
            .map_err(|e| e.message().to_string())?;
    }
    let created = timestamp(py.created_at.as_ref()).map_err(|w| format!("created_at: {w}"))?;
    let updated = timestamp(py.updated_at.as_ref()).map_err(|w| format!("updated_at: {w}"))?;
    if created.is_some() || updated.is_some() {
        let created = created.unwrap_or_else(|| credential.created_at());
        let updated = updated.unwrap_or(created);
        credential.set_timestamps(created, updated);
    }
    if let Some(at) =
        timestamp(py.last_refreshed.as_ref()).map_err(|w| format!("last_refreshed: {w}"))?
    {
        credential.set_last_refreshed(at);
    }
    Ok(credential)
}

/// `"oauth2"`, `"OAUTH2"`, `"CredentialType.OAUTH2"`, `"api_key"`, ...; unknown -> custom.
fn credential_type(value: Option<&Value>) -> CredentialType {
    let Some(Value::String(text)) = value else {
        return CredentialType::Custom;
    };
    let name = text.rsplit('.').next().unwrap_or(text).to_ascii_lowercase();
    if let Ok(t) = name.parse::<CredentialType>() {
        return t;
    }
    match name.as_str() {
        "apikey" | "api-key" => CredentialType::ApiKey,
        "oauth" | "oauth_2" => CredentialType::OAuth2,
        "basic" | "basicauth" => CredentialType::BasicAuth,
        "bearer" | "bearertoken" | "token" => CredentialType::BearerToken,
        _ => CredentialType::Custom,
    }
}

/// ISO 8601 text (`T` or space separator, offset optional: naive means UTC) or epoch
/// seconds.
fn timestamp(value: Option<&Value>) -> std::result::Result<Option<DateTime<Utc>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().ok_or("not a number")?;
            let whole = secs.floor();
            let nanos = ((secs - whole) * 1e9).round() as u32;
            Utc.timestamp_opt(whole as i64, nanos.min(999_999_999))
                .single()
                .map(Some)
                .ok_or_else(|| "epoch seconds out of range".to_string())
        }
        Some(Value::String(text)) => {
            let mut text = text.trim().to_string();
            if text.len() > 10 && text.as_bytes()[10] == b' ' {
                text.replace_range(10..11, "T");
            }
            if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
                return Ok(Some(at.with_timezone(&Utc)));
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
                if let Ok(at) = DateTime::parse_from_str(&text, format) {
                    return Ok(Some(at.with_timezone(&Utc)));
                }
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
                if let Ok(at) = NaiveDateTime::parse_from_str(&text, format) {
                    return Ok(Some(at.and_utc()));
                }
            }
            Err("not an ISO 8601 date-time".to_string())
        }
        Some(_) => Err("not a date-time".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::testkit::CANARY;

    #[test]
    fn maps_a_pydantic_dump() {
        let json = format!(
            r#"{{"id":"github","credential_type":"oauth2",
                "keys":{{"access_token":{{"name":"access_token","value":"{CANARY}",
                          "expires_at":"2030-01-02T03:04:05.123456","metadata":{{"scope":"repo","n":3,"x":null}}}},
                         "refresh_token":{{"name":"refresh_token","value":"r","expires_at":null,"metadata":{{}}}}}},
                "provider_id":"oauth2","auto_refresh":true,"description":"",
                "tags":["a",1],"created_at":"2024-05-06 07:08:09+02:00",
                "updated_at":"2024-05-07T00:00:00Z","last_refreshed":null,
                "usage_count":4}}"#
        );
        let c = map_credential(json.as_bytes(), "ignored").unwrap();
        assert_eq!(c.id().as_str(), "github");
        assert_eq!(c.credential_type(), CredentialType::OAuth2);
        assert_eq!(c.provider_id(), Some("oauth2"));
        assert!(c.auto_refresh());
        assert_eq!(c.description(), None);
        assert_eq!(c.tags(), ["a".to_string()]);
        let key = c.key("access_token").unwrap();
        assert_eq!(key.value().expose_secret(), CANARY); // EXPOSE: the test compares the secret value.
        assert_eq!(
            key.expires_at().unwrap().to_rfc3339(),
            "2030-01-02T03:04:05.123456+00:00"
        );
        assert_eq!(
            key.metadata().get("scope").map(String::as_str),
            Some("repo")
        );
        assert_eq!(key.metadata().get("n").map(String::as_str), Some("3"));
        assert!(!key.metadata().contains_key("x"));
        assert_eq!(c.created_at().to_rfc3339(), "2024-05-06T05:08:09+00:00");
        assert_eq!(c.updated_at().to_rfc3339(), "2024-05-07T00:00:00+00:00");
        assert_eq!(c.last_refreshed(), None);
    }

    #[test]
    fn credential_types_are_tolerant() {
        let t = |s: &str| credential_type(Some(&Value::String(s.into())));
        assert_eq!(t("CredentialType.API_KEY"), CredentialType::ApiKey);
        assert_eq!(t("bearer_token"), CredentialType::BearerToken);
        assert_eq!(t("BASIC_AUTH"), CredentialType::BasicAuth);
        assert_eq!(t("saml"), CredentialType::Custom);
        assert_eq!(credential_type(None), CredentialType::Custom);
    }

    #[test]
    fn bad_content_gives_reasons_without_values() {
        let masked = br#"{"id":"x","keys":{"k":{"value":"**********"}}}"#;
        assert!(map_credential(masked, "x").unwrap_err().contains("mask"));
        let bad_id = br#"{"id":"../etc","keys":{}}"#;
        assert!(map_credential(bad_id, "x").is_err());
        let garbage = format!(r#"{{"id":"x","keys":{{"k":{{"value":{CANARY}}}}}}}"#);
        let reason = map_credential(garbage.as_bytes(), "x").unwrap_err();
        assert!(!reason.contains(CANARY), "{reason}");
        let bad_date = br#"{"id":"x","keys":{"k":{"value":"v","expires_at":"soon"}}}"#;
        assert!(
            map_credential(bad_date, "x")
                .unwrap_err()
                .contains("expires_at")
        );
        // Missing id falls back to the file name.
        let no_id = br#"{"keys":{}}"#;
        assert_eq!(
            map_credential(no_id, "from_file").unwrap().id().as_str(),
            "from_file"
        );
    }

    #[test]
    fn epoch_timestamps_are_accepted() {
        let at = timestamp(Some(&serde_json::json!(1_700_000_000.5)))
            .unwrap()
            .unwrap();
        assert_eq!(at.timestamp(), 1_700_000_000);
        assert_eq!(at.timestamp_subsec_millis(), 500);
    }
}
