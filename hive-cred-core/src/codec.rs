//! The one audited way to serialize secret values.
//!
//! Storage backends that must persist values (encrypted files, Vault) use
//! [`to_stored_json`] / [`from_stored_json`]. The format is versioned:
//!
//! ```json
//! {"v":1,"id":"github","credential_type":"oauth2",...,
//!  "keys":{"access_token":{"value":"...","expires_at":"2030-01-01T00:00:00Z"}}}
//! ```
//!
//! The output buffer is zeroized on drop. Nothing else in hive-cred serializes values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::credential::{
    CredentialMetadata, CredentialObject, CredentialType, KeyMetadata, Metadata,
};
use crate::error::{Error, Result};
use crate::id::CredentialId;

/// The current stored format version.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct StoredOut<'a> {
    v: u32,
    id: &'a str,
    credential_type: CredentialType,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_id: Option<&'a str>,
    auto_refresh: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_refreshed: Option<DateTime<Utc>>,
    version: u64,
    keys: BTreeMap<&'a str, KeyOut<'a>>,
}

#[derive(Serialize)]
struct KeyOut<'a> {
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a Metadata,
}

#[derive(Deserialize)]
struct StoredIn {
    v: u32,
    id: CredentialId,
    credential_type: CredentialType,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    auto_refresh: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    last_refreshed: Option<DateTime<Utc>>,
    #[serde(default)]
    version: u64,
    keys: BTreeMap<String, KeyIn>,
}

#[derive(Deserialize)]
struct KeyIn {
    value: SecretString,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    metadata: Metadata,
}

/// Serializes a credential, values included, to the versioned stored JSON format.
pub fn to_stored_json(credential: &CredentialObject) -> Result<Zeroizing<Vec<u8>>> {
    let out = StoredOut {
        v: FORMAT_VERSION,
        id: credential.id().as_str(),
        credential_type: credential.credential_type(),
        provider_id: credential.provider_id(),
        auto_refresh: credential.auto_refresh(),
        description: credential.description(),
        tags: credential.tags(),
        created_at: credential.created_at(),
        updated_at: credential.updated_at(),
        last_refreshed: credential.last_refreshed(),
        version: credential.version(),
        keys: credential
            .keys()
            .map(|k| {
                (
                    k.name(),
                    KeyOut {
                        // EXPOSE: the audited codec is the one place values are serialized,
                        // into a buffer that is zeroized on drop.
                        value: k.value().expose_secret(),
                        expires_at: k.expires_at(),
                        metadata: k.metadata(),
                    },
                )
            })
            .collect(),
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    serde_json::to_writer(&mut *buf, &out).map_err(|e| {
        // serde_json errors on writing to a Vec only for non-string map keys; no value text.
        Error::new(
            crate::ErrorKind::Unexpected,
            format!("could not encode credential: {e}"),
        )
        .with_context("id", credential.id())
    })?;
    Ok(buf)
}

/// Parses the stored JSON format. Malformed input and unknown format versions fail with
/// `ErrorKind::Corrupted`; the message never quotes the input.
pub fn from_stored_json(bytes: &[u8]) -> Result<CredentialObject> {
    let stored: StoredIn = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's messages can quote input fragments; keep only the position.
        Error::corrupted(format!(
            "stored credential is not valid (line {}, column {}, {:?})",
            e.line(),
            e.column(),
            e.classify()
        ))
    })?;
    if stored.v != FORMAT_VERSION {
        return Err(Error::corrupted(format!(
            "stored credential has format version {}, this build reads version {FORMAT_VERSION}; upgrade hive-cred",
            stored.v
        ))
        .with_context("id", &stored.id));
    }
    let mut keys = BTreeMap::new();
    let mut values = Vec::with_capacity(stored.keys.len());
    for (name, k) in stored.keys {
        keys.insert(name.clone(), KeyMetadata::new(k.expires_at, k.metadata));
        values.push((name, k.value));
    }
    let meta = CredentialMetadata {
        id: stored.id,
        credential_type: stored.credential_type,
        provider_id: stored.provider_id,
        auto_refresh: stored.auto_refresh,
        description: stored.description,
        tags: stored.tags,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
        last_refreshed: stored.last_refreshed,
        version: stored.version,
        keys,
    };
    CredentialObject::from_parts(meta, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn sample(value: &str) -> CredentialObject {
        let mut c = CredentialObject::builder("gh.prod", CredentialType::OAuth2)
            .provider_id("oauth2_provider")
            .auto_refresh(true)
            .description("GitHub")
            .tag("team-a")
            .build()
            .unwrap();
        c.set_key_with_metadata(
            "access_token",
            value,
            Some(Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 6).unwrap()),
            Metadata::from([("token_type".into(), "bearer".into())]),
        )
        .unwrap();
        c.set_key("refresh_token", "r", None).unwrap();
        c.set_last_refreshed(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        c.set_version(3);
        c
    }

    #[test]
    fn round_trip_keeps_everything() {
        let c = sample("ghp_ünïcode\u{0}\n\"quoted\"");
        let bytes = to_stored_json(&c).unwrap();
        assert!(bytes.starts_with(b"{\"v\":1,"));
        let back = from_stored_json(&bytes).unwrap();
        assert_eq!(back.metadata(), c.metadata());
        assert_eq!(
            back.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            c.get_key("access_token").unwrap().expose_secret()
        );
    }

    #[test]
    fn malformed_and_future_versions_are_corrupted_without_quoting_input() {
        let canary = "canary-5f3b-codec";
        let bad = format!("{{\"v\":1,\"id\":\"x\",\"keys\":{{\"a\":{{\"value\":{canary}}}}}}}");
        let err = from_stored_json(bad.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(!format!("{err} {err:?}").contains(canary));

        let c = sample("x");
        let json = String::from_utf8(to_stored_json(&c).unwrap().to_vec()).unwrap();
        let future = json.replacen("\"v\":1", "\"v\":2", 1);
        let err = from_stored_json(future.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(err.to_string().contains("version 2"));
        assert!(from_stored_json(b"").is_err());
    }

    proptest! {
        #[test]
        fn values_round_trip_byte_exact(value in "\\PC{0,200}", name in "[a-z_]{1,20}") {
            let mut c = CredentialObject::new("p", CredentialType::Custom).unwrap();
            c.set_key(name.clone(), value.clone(), None).unwrap();
            let back = from_stored_json(&to_stored_json(&c).unwrap()).unwrap();
            prop_assert_eq!(back.get_key(&name).unwrap().expose_secret(), value.as_str()); // EXPOSE: the test compares the secret value.
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = from_stored_json(&bytes);
        }
    }
}
