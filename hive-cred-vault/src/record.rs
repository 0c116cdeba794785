//! The layout of one credential in a KV v2 secret.
//!
//! ```json
//! {
//!   "access_token": "gho_...",          // one string field per key: the secret values
//!   "refresh_token": "ghr_...",
//!   "hive.meta": {                       // non-secret metadata (CredentialMetadata)
//!     "v": 1, "id": "github", "credential_type": "oauth2",
//!     "provider_id": "oauth2_provider", "auto_refresh": true,
//!     "created_at": "...", "updated_at": "...",
//!     "keys": {"access_token": {"expires_at": "..."}, "refresh_token": {}}
//!   }
//! }
//! ```
//!
//! Key names are `[A-Za-z0-9_-]`, so the reserved field `hive.meta` (with a dot) never
//! collides with a key. The KV version is the credential's version; the version inside
//! `hive.meta` is not used. A secret without `hive.meta` (written by hand with
//! `bao kv put`) loads as a `custom` credential whose string fields are its keys.

use chrono::{DateTime, Utc};
use hive_cred_core::{
    CredentialId, CredentialMetadata, CredentialObject, CredentialType, Error, ExposeSecret,
    Result, SecretString, validate_key_name,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The reserved data field holding the non-secret metadata.
pub const META_FIELD: &str = "hive.meta";
/// The layout version written into `hive.meta`.
pub const LAYOUT_VERSION: u32 = 1;

#[derive(Serialize)]
struct MetaOut<'a> {
    v: u32,
    #[serde(flatten)]
    meta: &'a CredentialMetadata,
}

#[derive(Deserialize)]
struct MetaIn {
    v: u32,
    #[serde(flatten)]
    meta: CredentialMetadata,
}

/// The KV data of a credential: its values plus `hive.meta`.
///
/// The values pass through a `serde_json::Value` into vaultrs' request buffer; neither
/// is zeroized (vaultrs offers no way to), which is the one place values sit in plain
/// memory outside `SecretString`.
pub(crate) fn encode(credential: &CredentialObject) -> Result<Value> {
    let mut data = Map::with_capacity(credential.keys().len() + 1);
    for key in credential.keys() {
        data.insert(
            key.name().to_owned(),
            // EXPOSE: the value is sent to Vault, which is where it is stored.
            Value::String(key.value().expose_secret().to_owned()),
        );
    }
    let mut meta = credential.metadata();
    meta.version = 0;
    let meta = serde_json::to_value(MetaOut {
        v: LAYOUT_VERSION,
        meta: &meta,
    })
    .map_err(|e| {
        Error::new(
            hive_cred_core::ErrorKind::Unexpected,
            format!("could not encode credential metadata: {e}"),
        )
        .with_context("id", credential.id())
    })?;
    data.insert(META_FIELD.to_owned(), meta);
    Ok(Value::Object(data))
}

/// Rebuilds a credential from KV `data` stored at `id` as KV version `version`.
/// `created_time` is the KV creation time of the version, used for hand-written secrets.
pub(crate) fn decode(
    id: &CredentialId,
    data: Value,
    version: u64,
    created_time: &str,
) -> Result<CredentialObject> {
    let Value::Object(mut fields) = data else {
        return Err(Error::corrupted("Vault secret data is not a JSON object"));
    };
    let meta = fields.remove(META_FIELD);
    let mut values = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match value {
            Value::String(s) => values.push((name, SecretString::from(s))),
            // The value is not shown; only the key name and the JSON kind.
            other => {
                return Err(Error::corrupted(format!(
                    "Vault secret field is a {}, hive-cred stores every key value as a string",
                    json_kind(&other)
                ))
                .with_context("key", name));
            }
        }
    }
    let mut credential = match meta {
        Some(meta) => {
            let parsed: MetaIn = serde_json::from_value(meta).map_err(|e| {
                // Metadata is not secret, but keep the message to the failing spot.
                Error::corrupted(format!(
                    "Vault secret has an invalid {META_FIELD} field ({:?} error)",
                    e.classify()
                ))
            })?;
            if parsed.v != LAYOUT_VERSION {
                return Err(Error::corrupted(format!(
                    "Vault secret was written in layout version {}, this build reads version {LAYOUT_VERSION}; upgrade hive-cred",
                    parsed.v
                )));
            }
            let mut meta = parsed.meta;
            // The path is authoritative: a secret copied to another path loads there.
            meta.id = id.clone();
            CredentialObject::from_parts(meta, values)?
        }
        None => hand_written(id, values, created_time)?,
    };
    credential.set_version(version);
    Ok(credential)
}

fn hand_written(
    id: &CredentialId,
    values: Vec<(String, SecretString)>,
    created_time: &str,
) -> Result<CredentialObject> {
    let mut credential = CredentialObject::with_id(id.clone(), CredentialType::Custom);
    for (name, value) in values {
        validate_key_name(&name).map_err(|e| {
            Error::corrupted(format!(
                "Vault secret written without hive-cred metadata has a field that is not a valid key name: {}",
                e.message()
            ))
        })?;
        credential.set_key(name, value, None)?;
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(created_time) {
        let at = at.with_timezone(&Utc);
        credential.set_timestamps(at, at);
    }
    Ok(credential)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use hive_cred_core::{ErrorKind, Metadata};
    use serde_json::json;

    fn sample() -> CredentialObject {
        let mut c = CredentialObject::builder("gh.prod", CredentialType::OAuth2)
            .provider_id("oauth2_provider")
            .auto_refresh(true)
            .description("GitHub")
            .tag("team-a")
            .build()
            .unwrap();
        c.set_key_with_metadata(
            "access_token",
            "at-value",
            Some(Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 6).unwrap()),
            Metadata::from([("token_type".into(), "bearer".into())]),
        )
        .unwrap();
        c.set_key("refresh_token", "rt-value", None).unwrap();
        c.set_version(4);
        c
    }

    #[test]
    fn round_trip_keeps_metadata_and_values_and_takes_the_kv_version() {
        let c = sample();
        let data = encode(&c).unwrap();
        assert_eq!(data["access_token"], "at-value");
        assert_eq!(data[META_FIELD]["v"], 1);
        assert_eq!(data[META_FIELD]["credential_type"], "oauth2");
        assert!(
            !data[META_FIELD].to_string().contains("at-value"),
            "values never go into the metadata"
        );
        let id = c.id().clone();
        let back = decode(&id, data, 5, "").unwrap();
        assert_eq!(back.version(), 5);
        let mut expect = c.metadata();
        expect.version = 5;
        assert_eq!(back.metadata(), expect);
        assert_eq!(
            back.get_key("refresh_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            "rt-value"
        );
    }

    #[test]
    fn hand_written_secrets_load_as_custom() {
        let id = CredentialId::new("openai").unwrap();
        let data = json!({"api_key": "sk-1", "org": "o-1"});
        let c = decode(&id, data, 2, "2024-05-06T07:08:09.123456Z").unwrap();
        assert_eq!(c.credential_type(), CredentialType::Custom);
        assert_eq!(c.get_key("api_key").unwrap().expose_secret(), "sk-1"); // EXPOSE: the test compares the secret value.
        assert_eq!(c.version(), 2);
        assert_eq!(
            c.created_at(),
            Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
                + chrono::Duration::microseconds(123456)
        );
    }

    #[test]
    fn malformed_data_is_corrupted_without_quoting_values() {
        let id = CredentialId::new("x").unwrap();
        let secret = "canary-vault-record";
        for data in [
            json!([secret]),
            json!({"api_key": [secret]}),
            json!({"api_key": secret, "hive.meta": {"v": 1, "id": secret}}),
            json!({"api_key": secret, "hive.meta": {"v": 9}}),
            json!({"bad key": secret}),
        ] {
            let err = decode(&id, data, 1, "").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
            assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
        }
        // A value without a key entry in the metadata is inconsistent.
        let mut data = encode(&sample()).unwrap();
        data["extra"] = json!(secret);
        let err = decode(&id, data, 1, "").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        assert!(!format!("{err:?}").contains(secret));
    }
}
