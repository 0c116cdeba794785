//! rmcp's `StoredCredentials` <-> a hive-cred OAuth2 `CredentialObject`.
//!
//! # Layout of an MCP token credential
//!
//! | key | value (secret) | expiry | metadata (not secret) |
//! | --- | --- | --- | --- |
//! | `client_id` | the OAuth client id | none | `issuer`, `granted_scopes` (space-separated), `received_at` (Unix seconds) |
//! | `access_token` | the access token | `received_at + expires_in` | `token_type`, `scope`, `expires_in` |
//! | `refresh_token` | the refresh token, when the server issued one | none | |
//! | `token_extra` | other fields of the token response (`id_token`, vendor fields) as JSON, when there are any | none | |
//!
//! The client id is not a secret, but it lives in a key so that a credential holding
//! only a client id (rmcp keeps one when the authorisation server changed) is
//! representable; every backend stores keys encrypted or in Vault alike.

use chrono::{DateTime, Utc};
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialType, Error, ExposeSecret, Metadata, Result,
    SecretString,
};
use rmcp::transport::auth::{OAuthTokenResponse, StoredCredentials};
use serde_json::{Map, Value};

/// The key holding the OAuth client id.
pub const CLIENT_ID: &str = "client_id";
/// The key holding the access token.
pub const ACCESS_TOKEN: &str = "access_token";
/// The key holding the refresh token.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// The key holding the token response's other fields (JSON).
pub const TOKEN_EXTRA: &str = "token_extra";

const META_ISSUER: &str = "issuer";
const META_GRANTED: &str = "granted_scopes";
const META_RECEIVED_AT: &str = "received_at";
const META_TOKEN_TYPE: &str = "token_type";
const META_SCOPE: &str = "scope";
const META_EXPIRES_IN: &str = "expires_in";

fn malformed(id: &CredentialId, what: &str) -> Error {
    Error::corrupted(format!(
        "the MCP token credential is malformed: {what}; authorise the MCP server again"
    ))
    .with_context("id", id)
}

/// `base` (or a new OAuth2 credential `id`) with the keys of `creds`. Keys of `base`
/// that `creds` has no value for (no token response, no refresh token) are removed;
/// everything else of `base` (account, tags, description, version) is kept.
pub(super) fn to_object(
    id: &CredentialId,
    creds: &StoredCredentials,
    base: Option<&CredentialObject>,
) -> Result<CredentialObject> {
    let mut obj = match base {
        Some(b) => b.clone(),
        None => CredentialObject::with_id(id.clone(), CredentialType::OAuth2),
    };
    let mut client_meta = Metadata::new();
    if let Some(issuer) = &creds.issuer {
        client_meta.insert(META_ISSUER.into(), issuer.clone());
    }
    if !creds.granted_scopes.is_empty() {
        client_meta.insert(META_GRANTED.into(), creds.granted_scopes.join(" "));
    }
    if let Some(at) = creds.token_received_at {
        client_meta.insert(META_RECEIVED_AT.into(), at.to_string());
    }
    obj.set_key_with_metadata(
        CLIENT_ID,
        SecretString::from(creds.client_id.clone()),
        None,
        client_meta,
    )?;
    let Some(response) = &creds.token_response else {
        for k in [ACCESS_TOKEN, REFRESH_TOKEN, TOKEN_EXTRA] {
            obj.remove_key(k);
        }
        return Ok(obj);
    };
    // The token response's own serde form; its values move into SecretStrings below.
    let Ok(Value::Object(mut fields)) = serde_json::to_value(response) else {
        return Err(malformed(
            id,
            "the token response does not serialize to an object",
        ));
    };
    let access = match fields.remove("access_token") {
        Some(Value::String(s)) => SecretString::from(s),
        _ => return Err(malformed(id, "the token response has no access_token")),
    };
    let expires_in = fields.remove("expires_in").and_then(|v| v.as_u64());
    let mut meta = Metadata::new();
    if let Some(Value::String(t)) = fields.remove("token_type") {
        meta.insert(META_TOKEN_TYPE.into(), t);
    }
    match fields.remove("scope") {
        Some(Value::String(s)) => {
            meta.insert(META_SCOPE.into(), s);
        }
        Some(Value::Array(a)) => {
            let joined: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            meta.insert(META_SCOPE.into(), joined.join(" "));
        }
        _ => {}
    }
    if let Some(e) = expires_in {
        meta.insert(META_EXPIRES_IN.into(), e.to_string());
    }
    let expires_at = match (creds.token_received_at, expires_in) {
        (Some(at), Some(e)) => i64::try_from(at.saturating_add(e))
            .ok()
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)),
        _ => None,
    };
    obj.set_key_with_metadata(ACCESS_TOKEN, access, expires_at, meta)?;
    match fields.remove("refresh_token") {
        Some(Value::String(r)) => {
            obj.set_key(REFRESH_TOKEN, SecretString::from(r), None)?;
        }
        _ => {
            obj.remove_key(REFRESH_TOKEN);
        }
    }
    fields.retain(|_, v| !v.is_null());
    if fields.is_empty() {
        obj.remove_key(TOKEN_EXTRA);
    } else {
        let json = Value::Object(fields).to_string();
        obj.set_key(TOKEN_EXTRA, SecretString::from(json), None)?;
    }
    Ok(obj)
}

/// The `StoredCredentials` a credential laid out by [`to_object`] holds.
pub(super) fn to_stored(obj: &CredentialObject) -> Result<StoredCredentials> {
    let id = obj.id();
    let client = obj
        .key(CLIENT_ID)
        .ok_or_else(|| malformed(id, "it has no client_id key (was it stored by `hive-cred connect` rather than an MCP client?)"))?;
    let meta = client.metadata();
    let granted: Vec<String> = meta
        .get(META_GRANTED)
        .map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let received_at = meta
        .get(META_RECEIVED_AT)
        .and_then(|s| s.parse::<u64>().ok());
    let issuer = meta.get(META_ISSUER).cloned();
    let token_response = match obj.key(ACCESS_TOKEN) {
        None => None,
        Some(access) => {
            let mut fields = match obj.get_key(TOKEN_EXTRA) {
                // EXPOSE: the stored extra fields are parsed back into the token response.
                Some(extra) => match serde_json::from_str::<Value>(extra.expose_secret()) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(malformed(id, "the token_extra key is not a JSON object")),
                },
                None => Map::new(),
            };
            let am = access.metadata();
            fields.insert(
                "access_token".into(),
                // EXPOSE: rebuilt into rmcp's token response, which the MCP client sends.
                Value::String(access.value().expose_secret().to_owned()),
            );
            fields.insert(
                "token_type".into(),
                Value::String(
                    am.get(META_TOKEN_TYPE)
                        .cloned()
                        .unwrap_or_else(|| "Bearer".into()),
                ),
            );
            if let Some(e) = am.get(META_EXPIRES_IN).and_then(|s| s.parse::<u64>().ok()) {
                fields.insert("expires_in".into(), Value::from(e));
            }
            if let Some(s) = am.get(META_SCOPE) {
                fields.insert("scope".into(), Value::String(s.clone()));
            }
            if let Some(r) = obj.get_key(REFRESH_TOKEN) {
                // EXPOSE: rebuilt into rmcp's token response for its refresh request.
                fields.insert(
                    "refresh_token".into(),
                    Value::String(r.expose_secret().to_owned()),
                );
            }
            let response: OAuthTokenResponse = serde_json::from_value(Value::Object(fields))
                .map_err(|_| malformed(id, "the stored tokens do not form a token response"))?;
            Some(response)
        }
    };
    Ok(
        StoredCredentials::new(client_id_of(obj)?, token_response, granted, received_at)
            .with_issuer(issuer),
    )
}

fn client_id_of(obj: &CredentialObject) -> Result<String> {
    let key = obj
        .get_key(CLIENT_ID)
        .ok_or_else(|| malformed(obj.id(), "it has no client_id key"))?;
    // EXPOSE: the client id is not secret; rmcp configures its OAuth client with it.
    Ok(key.expose_secret().to_owned())
}

/// Whether rmcp's `get_access_token` will refresh the access token of `obj` at
/// `now_secs` (Unix seconds): the same rule as rmcp 3.11 (less than
/// `max(min(30 s, expires_in / 2), 1 s)` left), and only when there is a refresh token.
pub(super) fn refresh_due(obj: &CredentialObject, now_secs: u64) -> bool {
    if !obj.has_key(REFRESH_TOKEN) {
        return false;
    }
    let Some(access) = obj.key(ACCESS_TOKEN) else {
        return false;
    };
    let expires_in = access
        .metadata()
        .get(META_EXPIRES_IN)
        .and_then(|s| s.parse::<u64>().ok());
    let received = obj
        .key(CLIENT_ID)
        .and_then(|k| k.metadata().get(META_RECEIVED_AT))
        .and_then(|s| s.parse::<u64>().ok());
    let (Some(expires_in), Some(received)) = (expires_in, received) else {
        return false;
    };
    let remaining = expires_in.saturating_sub(now_secs.saturating_sub(received));
    remaining < (expires_in / 2).clamp(1, 30)
}

/// Whether `obj` holds `creds`'s refresh token.
pub(super) fn holds_refresh_token_of(obj: &CredentialObject, creds: &StoredCredentials) -> bool {
    let theirs = creds
        .token_response
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| {
            v.get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    match (obj.get_key(REFRESH_TOKEN), theirs) {
        // EXPOSE: compared for equality only.
        (Some(ours), Some(theirs)) => ours.expose_secret() == theirs.as_str(),
        _ => false,
    }
}

/// Whether two credentials hold the same key names and values.
pub(super) fn same_secrets(a: &CredentialObject, b: &CredentialObject) -> bool {
    a.keys().len() == b.keys().len()
        && a.keys().all(|k| {
            b.get_key(k.name()).is_some_and(|v| {
                // EXPOSE: compared for equality only.
                v.expose_secret() == k.value().expose_secret()
            })
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn response(v: Value) -> OAuthTokenResponse {
        serde_json::from_value(v).unwrap()
    }

    fn round_trip(creds: &StoredCredentials) -> StoredCredentials {
        let id = CredentialId::new("mcp-x").unwrap();
        to_stored(&to_object(&id, creds, None).unwrap()).unwrap()
    }

    fn same(a: &StoredCredentials, b: &StoredCredentials) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }

    #[test]
    fn stored_credentials_survive_the_round_trip() {
        let full = StoredCredentials::new(
            "client-1".into(),
            Some(response(json!({
                "access_token": "at-1", "token_type": "bearer", "expires_in": 3600,
                "refresh_token": "rt-1", "scope": "read write",
                "id_token": "jwt-1", "vendor": {"n": 1}
            }))),
            vec!["read".into(), "write".into()],
            Some(1_700_000_000),
        )
        .with_issuer(Some("https://as.example".into()));
        same(&round_trip(&full), &full);

        let minimal = StoredCredentials::new(
            "client-2".into(),
            Some(response(
                json!({"access_token": "at-2", "token_type": "Bearer"}),
            )),
            vec![],
            None,
        );
        same(&round_trip(&minimal), &minimal);

        let client_only = StoredCredentials::new("client-3".into(), None, vec![], None);
        same(&round_trip(&client_only), &client_only);
    }

    #[test]
    fn layout_keys_and_expiry() {
        let creds = StoredCredentials::new(
            "client-1".into(),
            Some(response(json!({
                "access_token": "at-1", "token_type": "bearer", "expires_in": 60,
                "refresh_token": "rt-1", "id_token": "jwt-1"
            }))),
            vec![],
            Some(1_000),
        );
        let id = CredentialId::new("mcp-x").unwrap();
        let obj = to_object(&id, &creds, None).unwrap();
        assert_eq!(obj.credential_type(), CredentialType::OAuth2);
        let names: Vec<&str> = obj.key_names().collect();
        for k in [CLIENT_ID, ACCESS_TOKEN, REFRESH_TOKEN, TOKEN_EXTRA] {
            assert!(names.contains(&k), "{k} in {names:?}");
        }
        assert_eq!(
            obj.key(ACCESS_TOKEN)
                .unwrap()
                .expires_at()
                .unwrap()
                .timestamp(),
            1_060
        );
        // rmcp refreshes when less than min(30, 60 / 2) = 30 s are left.
        assert!(!refresh_due(&obj, 1_029));
        assert!(refresh_due(&obj, 1_031));
        // Without a refresh token, rmcp cannot refresh: nothing is due.
        let mut no_rt = obj.clone();
        no_rt.remove_key(REFRESH_TOKEN);
        assert!(!refresh_due(&no_rt, 5_000));
        // A response without a refresh token removes a stored one.
        let without = StoredCredentials::new(
            "client-1".into(),
            Some(response(
                json!({"access_token": "at-2", "token_type": "bearer"}),
            )),
            vec![],
            Some(2_000),
        );
        let next = to_object(&id, &without, Some(&obj)).unwrap();
        assert!(!next.has_key(REFRESH_TOKEN) && !next.has_key(TOKEN_EXTRA));
    }

    #[test]
    fn a_credential_without_client_id_is_a_clear_error() {
        let mut obj = CredentialObject::new("gh", CredentialType::OAuth2).unwrap();
        obj.set_key(ACCESS_TOKEN, "secret-at", None).unwrap();
        let e = to_stored(&obj).unwrap_err();
        assert_eq!(e.kind(), hive_cred_core::ErrorKind::Corrupted);
        assert!(e.to_string().contains("client_id") && !e.to_string().contains("secret-at"));
    }
}
