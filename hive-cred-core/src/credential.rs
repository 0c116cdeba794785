//! The credential model: [`CredentialType`], [`CredentialKey`], [`CredentialObject`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::account::CredentialAccount;
use crate::error::{Error, Result};
use crate::id::CredentialId;

/// The default refresh window: a key expiring within this time "needs refresh".
pub const DEFAULT_REFRESH_WINDOW: Duration = Duration::minutes(5);

/// The longest key name accepted.
pub const MAX_KEY_NAME_LEN: usize = 128;

/// Non-secret key metadata (token type, scope, ...).
pub type Metadata = BTreeMap<String, String>;

/// How the system treats a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CredentialType {
    /// A static token (OpenAI, Brave Search). Serialized as `"api_key"`.
    ApiKey,
    /// OAuth2 `access_token` + `refresh_token`, refreshable. Serialized as `"oauth2"`.
    #[serde(rename = "oauth2")]
    OAuth2,
    /// A username/password pair. Serialized as `"basic_auth"`.
    BasicAuth,
    /// A JWT or other bearer token without refresh logic. Serialized as `"bearer_token"`.
    BearerToken,
    /// A user-defined scheme. Serialized as `"custom"`.
    Custom,
}

impl CredentialType {
    /// The serde name (`"api_key"`, `"oauth2"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::OAuth2 => "oauth2",
            CredentialType::BasicAuth => "basic_auth",
            CredentialType::BearerToken => "bearer_token",
            CredentialType::Custom => "custom",
        }
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CredentialType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "api_key" | "apikey" => CredentialType::ApiKey,
            "oauth2" | "oauth" => CredentialType::OAuth2,
            "basic_auth" | "basic" => CredentialType::BasicAuth,
            "bearer_token" | "bearer" => CredentialType::BearerToken,
            "custom" => CredentialType::Custom,
            _ => {
                return Err(Error::invalid_input(format!(
                    "unknown credential type {s:?}: expected one of api_key, oauth2, basic_auth, bearer_token, custom"
                )));
            }
        })
    }
}

/// Checks a key name: 1 to 128 characters of `A-Z a-z 0-9 _ -` (no `.`, so that
/// `{{id.key}}` templates are unambiguous).
pub fn validate_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(40).collect();
        Err(Error::invalid_input(format!(
            "invalid key name {shown:?}: 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// One secret value of a credential (`access_token`, `api_key`, `password`, ...).
///
/// Debug prints the value as `[REDACTED]`:
///
/// ```
/// use hive_cred_core::CredentialKey;
///
/// let key = CredentialKey::new("api_key", "sk-live-123", None)?;
/// assert!(!format!("{key:?}").contains("sk-live-123"));
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Clone)]
pub struct CredentialKey {
    name: String,
    value: SecretString,
    expires_at: Option<DateTime<Utc>>,
    metadata: Metadata,
}

impl CredentialKey {
    /// A key with a validated name.
    pub fn new(
        name: impl Into<String>,
        value: impl Into<SecretString>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Self> {
        let name = name.into();
        validate_key_name(&name)?;
        Ok(CredentialKey {
            name,
            value: value.into(),
            expires_at,
            metadata: Metadata::new(),
        })
    }

    /// A key read back from storage: a bad name means the record is `Corrupted`.
    pub(crate) fn stored(
        id: &CredentialId,
        name: String,
        value: SecretString,
        expires_at: Option<DateTime<Utc>>,
        metadata: Metadata,
    ) -> Result<Self> {
        validate_key_name(&name).map_err(|e| {
            Error::corrupted(format!(
                "stored credential has an invalid key name: {}",
                e.message()
            ))
            .with_context("id", id)
        })?;
        Ok(CredentialKey {
            name,
            value,
            expires_at,
            metadata,
        })
    }

    /// Adds non-secret metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret value. Read it with [`secrecy::ExposeSecret`].
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// When the value stops being valid, if it expires.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Non-secret metadata (token type, scope, ...).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Whether the key has expired at `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Whether the key expires within `window` of `now` (or has expired).
    pub fn needs_refresh_at(&self, now: DateTime<Utc>, window: Duration) -> bool {
        self.expires_at.is_some_and(|t| t <= now + window)
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CredentialKey");
        d.field("name", &self.name)
            .field("value", &format_args!("[REDACTED]"))
            .field("expires_at", &self.expires_at);
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        d.finish()
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=[REDACTED]", self.name)
    }
}

/// A credential: a named container of secret keys with a type, an optional refresh
/// provider and lifecycle timestamps.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use hive_cred_core::{CredentialObject, CredentialType};
///
/// let mut github_creds = CredentialObject::builder("github_production", CredentialType::OAuth2)
///     .provider_id("oauth2_provider")
///     .auto_refresh(true)
///     .build()?;
/// github_creds.set_key(
///     "access_token",
///     "ghp_xxxx...",
///     Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()),
/// )?;
///
/// assert!(github_creds.has_key("access_token"));
/// assert!(github_creds.needs_refresh());
/// // Secret values never show in Debug output.
/// assert!(!format!("{github_creds:?}").contains("ghp_xxxx"));
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
///
/// # Versions
/// [`version`](Self::version) is the storage version this object was read at (`0` for an
/// object never stored). Storage backends use it for check-and-set: saving an object
/// whose version is not the stored one fails with `ErrorKind::Conflict`.
///
/// # Serialization
/// `Serialize` emits the [`CredentialMetadata`] view: every field but secret values. The
/// only way to serialize values is the audited [`codec`](crate::codec), used by storage
/// backends.
#[derive(Clone)]
pub struct CredentialObject {
    id: CredentialId,
    credential_type: CredentialType,
    keys: BTreeMap<String, CredentialKey>,
    provider_id: Option<String>,
    auto_refresh: bool,
    description: Option<String>,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_refreshed: Option<DateTime<Utc>>,
    version: u64,
    account: Option<CredentialAccount>,
}

impl CredentialObject {
    /// A credential with no keys. Fails with `ErrorKind::InvalidInput` on a bad id.
    pub fn new(id: &str, credential_type: CredentialType) -> Result<Self> {
        Ok(Self::with_id(CredentialId::new(id)?, credential_type))
    }

    /// A credential with an already validated id.
    pub fn with_id(id: CredentialId, credential_type: CredentialType) -> Self {
        let now = Utc::now();
        CredentialObject {
            id,
            credential_type,
            keys: BTreeMap::new(),
            provider_id: None,
            auto_refresh: false,
            description: None,
            tags: Vec::new(),
            created_at: now,
            updated_at: now,
            last_refreshed: None,
            version: 0,
            account: None,
        }
    }

    /// A builder for the optional fields.
    pub fn builder(
        id: impl Into<String>,
        credential_type: CredentialType,
    ) -> CredentialObjectBuilder {
        CredentialObjectBuilder {
            id: id.into(),
            credential_type,
            provider_id: None,
            auto_refresh: false,
            description: None,
            tags: Vec::new(),
            keys: Vec::new(),
            account: None,
        }
    }

    /// Adds or replaces the key `name`, bumping `updated_at`.
    pub fn set_key(
        &mut self,
        name: impl Into<String>,
        value: impl Into<SecretString>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<&mut Self> {
        self.insert_key(CredentialKey::new(name, value, expires_at)?);
        Ok(self)
    }

    /// Adds or replaces the key `name` with non-secret metadata, bumping `updated_at`.
    pub fn set_key_with_metadata(
        &mut self,
        name: impl Into<String>,
        value: impl Into<SecretString>,
        expires_at: Option<DateTime<Utc>>,
        metadata: Metadata,
    ) -> Result<&mut Self> {
        self.insert_key(CredentialKey::new(name, value, expires_at)?.with_metadata(metadata));
        Ok(self)
    }

    /// Adds or replaces a whole key, bumping `updated_at`.
    pub fn insert_key(&mut self, key: CredentialKey) -> &mut Self {
        self.keys.insert(key.name.clone(), key);
        self.touch();
        self
    }

    /// Removes a key, returning it.
    pub fn remove_key(&mut self, name: &str) -> Option<CredentialKey> {
        let removed = self.keys.remove(name);
        if removed.is_some() {
            self.touch();
        }
        removed
    }

    fn touch(&mut self) {
        let now = Utc::now();
        // Never move backwards (a clock step must not make updated_at < created_at).
        if now > self.updated_at {
            self.updated_at = now;
        }
    }

    /// The secret value of key `name`; read it with [`secrecy::ExposeSecret`].
    pub fn get_key(&self, name: &str) -> Option<&SecretString> {
        self.keys.get(name).map(|k| &k.value)
    }

    /// The whole key `name`.
    pub fn key(&self, name: &str) -> Option<&CredentialKey> {
        self.keys.get(name)
    }

    /// Whether key `name` exists.
    pub fn has_key(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    /// All keys, ordered by name.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &CredentialKey> + '_ {
        self.keys.values()
    }

    /// The key names, ordered.
    pub fn key_names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.keys.keys().map(String::as_str)
    }

    /// Whether any key is expired or expires within the default 5-minute window.
    pub fn needs_refresh(&self) -> bool {
        self.needs_refresh_at(Utc::now(), DEFAULT_REFRESH_WINDOW)
    }

    /// Whether any key is expired at `now` or expires within the
    /// [effective window](Self::effective_window) of it. Keys without an expiry never
    /// need refresh.
    pub fn needs_refresh_at(&self, now: DateTime<Utc>, window: Duration) -> bool {
        self.earliest_expiry()
            .is_some_and(|t| t <= now + self.effective_window(window))
    }

    /// The refresh window that applies to this credential: `window`, but at most half
    /// of its token's lifetime when that is known (from [`last_refreshed`](Self::last_refreshed)
    /// to the [`earliest_expiry`](Self::earliest_expiry)). A token that lives 5 minutes
    /// under a 5-minute window is refreshed after 2.5 minutes, not the moment it is
    /// issued.
    pub fn effective_window(&self, window: Duration) -> Duration {
        match (self.last_refreshed, self.earliest_expiry()) {
            (Some(issued), Some(expiry)) => {
                let half = (expiry - issued) / 2;
                window.min(half.max(Duration::zero()))
            }
            _ => window,
        }
    }

    /// Whether any key has expired now.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(Utc::now())
    }

    /// Whether any key has expired at `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.earliest_expiry().is_some_and(|t| t <= now)
    }

    /// The earliest `expires_at` over all keys.
    pub fn earliest_expiry(&self) -> Option<DateTime<Utc>> {
        self.keys.values().filter_map(|k| k.expires_at).min()
    }

    /// The id.
    pub fn id(&self) -> &CredentialId {
        &self.id
    }

    /// The type.
    pub fn credential_type(&self) -> CredentialType {
        self.credential_type
    }

    /// The id of the provider that refreshes this credential.
    pub fn provider_id(&self) -> Option<&str> {
        self.provider_id.as_deref()
    }

    /// Sets the provider id.
    pub fn set_provider_id(&mut self, provider_id: Option<String>) -> &mut Self {
        self.provider_id = provider_id;
        self.touch();
        self
    }

    /// Whether the store refreshes this credential automatically.
    pub fn auto_refresh(&self) -> bool {
        self.auto_refresh
    }

    /// Sets `auto_refresh`.
    pub fn set_auto_refresh(&mut self, auto_refresh: bool) -> &mut Self {
        self.auto_refresh = auto_refresh;
        self.touch();
        self
    }

    /// A human description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Sets the description.
    pub fn set_description(&mut self, description: Option<String>) -> &mut Self {
        self.description = description;
        self.touch();
        self
    }

    /// Free-form tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Sets the tags.
    pub fn set_tags(&mut self, tags: Vec<String>) -> &mut Self {
        self.tags = tags;
        self.touch();
        self
    }

    /// When the credential was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When the credential last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// When a provider last refreshed the credential.
    pub fn last_refreshed(&self) -> Option<DateTime<Utc>> {
        self.last_refreshed
    }

    /// Records a refresh at `at` (providers call this).
    pub fn set_last_refreshed(&mut self, at: DateTime<Utc>) -> &mut Self {
        self.last_refreshed = Some(at);
        if at > self.updated_at {
            self.updated_at = at;
        }
        self
    }

    /// The account this credential is (provider, alias, identity, status), if it is one.
    pub fn account(&self) -> Option<&CredentialAccount> {
        self.account.as_ref()
    }

    /// Sets the account metadata, bumping `updated_at`.
    pub fn set_account(&mut self, account: Option<CredentialAccount>) -> &mut Self {
        self.account = account;
        self.touch();
        self
    }

    /// The account metadata, for in-place changes (status, identity). Does not bump
    /// `updated_at`: a health check is not a change of the credential.
    pub fn account_mut(&mut self) -> Option<&mut CredentialAccount> {
        self.account.as_mut()
    }

    /// The storage version this object was read at (`0` = never stored).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sets the storage version. For storage backends and the store.
    pub fn set_version(&mut self, version: u64) -> &mut Self {
        self.version = version;
        self
    }

    /// The non-secret view of this credential.
    pub fn metadata(&self) -> CredentialMetadata {
        CredentialMetadata {
            id: self.id.clone(),
            credential_type: self.credential_type,
            provider_id: self.provider_id.clone(),
            auto_refresh: self.auto_refresh,
            description: self.description.clone(),
            tags: self.tags.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_refreshed: self.last_refreshed,
            version: self.version,
            account: self.account.clone(),
            keys: self
                .keys
                .values()
                .map(|k| {
                    (
                        k.name.clone(),
                        KeyMetadata {
                            expires_at: k.expires_at,
                            metadata: k.metadata.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Rebuilds a credential from its non-secret view and its values. Every key in
    /// `metadata` must have a value and every value a key entry; otherwise the data is
    /// inconsistent and this fails with `ErrorKind::Corrupted` naming the key.
    pub fn from_parts(
        mut metadata: CredentialMetadata,
        values: impl IntoIterator<Item = (String, SecretString)>,
    ) -> Result<Self> {
        let mut values: BTreeMap<String, SecretString> = values.into_iter().collect();
        let mut keys = BTreeMap::new();
        for (name, km) in std::mem::take(&mut metadata.keys) {
            let value = values.remove(&name).ok_or_else(|| {
                Error::corrupted("stored credential lists a key without a value")
                    .with_context("id", &metadata.id)
                    .with_context("key", &name)
            })?;
            let key = CredentialKey::stored(&metadata.id, name, value, km.expires_at, km.metadata)?;
            keys.insert(key.name.clone(), key);
        }
        if let Some(extra) = values.keys().next() {
            return Err(
                Error::corrupted("stored credential has a value without key metadata")
                    .with_context("id", &metadata.id)
                    .with_context("key", extra),
            );
        }
        Ok(Self::from_keys(metadata, keys))
    }

    /// Puts a decoded credential together: `metadata` without its `keys` map (ignored),
    /// and the complete keys by name.
    pub(crate) fn from_keys(
        metadata: CredentialMetadata,
        keys: BTreeMap<String, CredentialKey>,
    ) -> Self {
        CredentialObject {
            id: metadata.id,
            credential_type: metadata.credential_type,
            keys,
            provider_id: metadata.provider_id,
            auto_refresh: metadata.auto_refresh,
            description: metadata.description,
            tags: metadata.tags,
            created_at: metadata.created_at,
            updated_at: metadata.updated_at,
            last_refreshed: metadata.last_refreshed,
            version: metadata.version,
            account: metadata.account,
        }
    }

    /// A copy under another id (for storage views that map ids, such as per-user
    /// namespaces); everything else, version included, is kept.
    pub fn renamed(&self, id: CredentialId) -> CredentialObject {
        let mut c = self.clone();
        c.id = id;
        c
    }

    /// Sets the timestamps (for backends restoring or importing records).
    pub fn set_timestamps(
        &mut self,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> &mut Self {
        self.created_at = created_at;
        self.updated_at = updated_at;
        self
    }
}

impl fmt::Debug for CredentialObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialObject")
            .field("id", &self.id.as_str())
            .field("credential_type", &self.credential_type)
            .field("keys", &self.keys.values().collect::<Vec<_>>())
            .field("provider_id", &self.provider_id)
            .field("auto_refresh", &self.auto_refresh)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for CredentialObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}; keys:", self.id, self.credential_type)?;
        for (i, name) in self.keys.keys().enumerate() {
            write!(f, "{}{name}=[REDACTED]", if i == 0 { " " } else { ", " })?;
        }
        f.write_str(")")
    }
}

impl Serialize for CredentialObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.metadata().serialize(s)
    }
}

/// Builder for [`CredentialObject`].
#[derive(Debug)]
#[must_use]
pub struct CredentialObjectBuilder {
    id: String,
    credential_type: CredentialType,
    provider_id: Option<String>,
    auto_refresh: bool,
    description: Option<String>,
    tags: Vec<String>,
    keys: Vec<KeyInput>,
    account: Option<(String, Option<String>)>,
}

struct KeyInput(String, SecretString, Option<DateTime<Utc>>);

impl fmt::Debug for KeyInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=[REDACTED]", self.0)
    }
}

impl CredentialObjectBuilder {
    /// The refresh provider's id (e.g. `"oauth2_provider"`).
    pub fn provider_id(mut self, provider_id: impl Into<String>) -> Self {
        self.provider_id = Some(provider_id.into());
        self
    }

    /// Whether the store refreshes this credential automatically. Default: `false`.
    pub fn auto_refresh(mut self, auto_refresh: bool) -> Self {
        self.auto_refresh = auto_refresh;
        self
    }

    /// A human description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// A tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Makes the credential account `alias` of `provider` (`None`: the default alias).
    pub fn account(mut self, provider: impl Into<String>, alias: Option<&str>) -> Self {
        self.account = Some((provider.into(), alias.map(str::to_owned)));
        self
    }

    /// A key.
    pub fn key(
        mut self,
        name: impl Into<String>,
        value: impl Into<SecretString>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        self.keys
            .push(KeyInput(name.into(), value.into(), expires_at));
        self
    }

    /// Validates the id and key names and builds the credential.
    pub fn build(self) -> Result<CredentialObject> {
        let mut obj = CredentialObject::new(&self.id, self.credential_type)?;
        obj.provider_id = self.provider_id;
        obj.auto_refresh = self.auto_refresh;
        obj.description = self.description;
        obj.tags = self.tags;
        if let Some((provider, alias)) = self.account {
            obj.account = Some(CredentialAccount::new(&provider, alias.as_deref())?);
        }
        for KeyInput(name, value, expires_at) in self.keys {
            obj.set_key(name, value, expires_at)?;
        }
        obj.updated_at = obj.created_at;
        Ok(obj)
    }
}

/// Non-secret metadata of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct KeyMetadata {
    /// When the key expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Free-form non-secret metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

impl KeyMetadata {
    /// Key metadata.
    pub fn new(expires_at: Option<DateTime<Utc>>, metadata: Metadata) -> Self {
        KeyMetadata {
            expires_at,
            metadata,
        }
    }
}

/// Everything about a credential except its secret values: safe to serialize, log and
/// show. Backends that keep metadata apart from values (Vault's `custom_metadata`, CLI
/// listings) use it; [`CredentialObject::from_parts`] puts the two back together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CredentialMetadata {
    /// The id.
    pub id: CredentialId,
    /// The type.
    pub credential_type: CredentialType,
    /// The refresh provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Whether refresh is automatic.
    #[serde(default)]
    pub auto_refresh: bool,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last refresh by a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refreshed: Option<DateTime<Utc>>,
    /// Storage version.
    #[serde(default)]
    pub version: u64,
    /// The account (provider, alias, identity, status), if the credential is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<CredentialAccount>,
    /// The keys' non-secret metadata, by key name.
    pub keys: BTreeMap<String, KeyMetadata>,
}

impl CredentialMetadata {
    /// The earliest expiry over all keys.
    pub fn earliest_expiry(&self) -> Option<DateTime<Utc>> {
        self.keys.values().filter_map(|k| k.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use secrecy::ExposeSecret;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, h, m, 0).unwrap()
    }

    #[test]
    fn type_serde_names() {
        for (t, name) in [
            (CredentialType::ApiKey, "api_key"),
            (CredentialType::OAuth2, "oauth2"),
            (CredentialType::BasicAuth, "basic_auth"),
            (CredentialType::BearerToken, "bearer_token"),
            (CredentialType::Custom, "custom"),
        ] {
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<CredentialType>(&format!("\"{name}\"")).unwrap(),
                t
            );
            assert_eq!(name.parse::<CredentialType>().unwrap(), t);
            assert_eq!(t.to_string(), name);
        }
        assert!("nope".parse::<CredentialType>().is_err());
    }

    #[test]
    fn set_key_replaces_and_bumps_updated_at() {
        let mut c = CredentialObject::new("c", CredentialType::ApiKey).unwrap();
        let past = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        c.set_timestamps(past, past);
        c.set_key("api_key", "one", None).unwrap();
        assert!(c.updated_at() > past);
        assert_eq!(c.created_at(), past);
        c.set_key("api_key", "two", Some(at(1, 0))).unwrap();
        assert_eq!(c.keys().len(), 1);
        assert_eq!(c.get_key("api_key").unwrap().expose_secret(), "two"); // EXPOSE: the test compares the secret value.
        assert_eq!(c.key("api_key").unwrap().expires_at(), Some(at(1, 0)));
        assert!(c.get_key("other").is_none());
        assert!(!c.has_key("other"));
    }

    #[test]
    fn bad_id_and_key_names_are_invalid_input() {
        assert_eq!(
            CredentialObject::new("../x", CredentialType::ApiKey)
                .unwrap_err()
                .kind(),
            crate::ErrorKind::InvalidInput
        );
        let mut c = CredentialObject::new("c", CredentialType::ApiKey).unwrap();
        for bad in ["", "a.b", "a b", "{{x}}"] {
            assert!(c.set_key(bad, "v", None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn needs_refresh_windows() {
        let mut c = CredentialObject::new("c", CredentialType::OAuth2).unwrap();
        c.set_key("refresh_token", "r", None).unwrap();
        let w = Duration::minutes(5);
        assert!(
            !c.needs_refresh_at(at(0, 0), w),
            "no expiry never needs refresh"
        );
        c.set_key("access_token", "a", Some(at(1, 0))).unwrap();
        assert!(!c.needs_refresh_at(at(0, 54), w));
        assert!(c.needs_refresh_at(at(0, 55), w), "inside the window");
        assert!(!c.is_expired_at(at(0, 59)));
        assert!(c.is_expired_at(at(1, 0)));
        assert!(c.needs_refresh_at(at(2, 0), w));
        assert!(c.needs_refresh_at(at(0, 30), Duration::minutes(30)));
        assert_eq!(c.earliest_expiry(), Some(at(1, 0)));
    }

    #[test]
    fn a_token_shorter_than_the_window_is_refreshed_at_half_its_life() {
        // A Keycloak-style token: issued at 0:00, lives 5 minutes, window 5 minutes.
        let mut c = CredentialObject::new("kc", CredentialType::OAuth2).unwrap();
        c.set_key("access_token", "a", Some(at(0, 5))).unwrap();
        let w = Duration::minutes(5);
        assert!(
            c.needs_refresh_at(at(0, 0), w),
            "unknown lifetime: the whole window"
        );
        c.set_last_refreshed(at(0, 0));
        assert_eq!(c.effective_window(w), Duration::seconds(150));
        assert!(!c.needs_refresh_at(at(0, 0), w), "fresh from the provider");
        assert!(!c.needs_refresh_at(at(0, 2), w));
        assert!(c.needs_refresh_at(at(0, 3), w), "past half of its life");
        // A long-lived token keeps the configured window.
        c.set_key("access_token", "a", Some(at(2, 0))).unwrap();
        assert_eq!(c.effective_window(w), w);
    }

    #[test]
    fn debug_display_and_serde_hide_values() {
        let canary = "canary-5f3b-credential";
        let c = CredentialObject::builder("gh", CredentialType::OAuth2)
            .provider_id("p")
            .key("access_token", canary, Some(at(1, 0)))
            .build()
            .unwrap();
        let debug = format!("{c:?}");
        let display = c.to_string();
        let json = serde_json::to_string(&c).unwrap();
        for out in [
            &debug,
            &display,
            &json,
            &format!("{:?}", c.key("access_token").unwrap()),
        ] {
            assert!(!out.contains(canary), "{out}");
        }
        assert!(debug.contains("[REDACTED]") && debug.contains("access_token"));
        assert!(display.contains("access_token=[REDACTED]"));
        assert!(json.contains("\"access_token\""));
    }

    #[test]
    fn parts_round_trip_and_inconsistency_is_corrupted() {
        let mut c = CredentialObject::new("c", CredentialType::BasicAuth).unwrap();
        c.set_key("username", "u", None).unwrap();
        c.set_key_with_metadata(
            "password",
            "p",
            Some(at(3, 0)),
            Metadata::from([("k".into(), "v".into())]),
        )
        .unwrap();
        c.set_version(7);
        let values = c
            .keys()
            .map(|k| (k.name().to_string(), k.value().clone()))
            .collect::<Vec<_>>();
        let back = CredentialObject::from_parts(c.metadata(), values.clone()).unwrap();
        assert_eq!(back.metadata(), c.metadata());
        assert_eq!(back.get_key("password").unwrap().expose_secret(), "p"); // EXPOSE: the test compares the secret value.

        let err = CredentialObject::from_parts(c.metadata(), values[..1].to_vec()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        let mut extra = values.clone();
        extra.push(("ghost".into(), "x".into()));
        let err = CredentialObject::from_parts(c.metadata(), extra).unwrap_err();
        assert_eq!(err.context_value("key"), Some("ghost"));
    }
}
