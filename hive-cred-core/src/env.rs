//! [`EnvStorage`]: read-only credentials from environment variables.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::credential::{CredentialObject, CredentialType, validate_key_name};
use crate::error::{Error, Result};
use crate::id::CredentialId;
use crate::storage::CredentialStorage;

/// The default prefix of the naming convention.
pub const DEFAULT_ENV_PREFIX: &str = "HIVE_CRED_";

/// One explicit mapping: key `key` of credential `id` comes from variable `var`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvMapping {
    /// The credential.
    pub id: CredentialId,
    /// The key within it.
    pub key: String,
    /// The environment variable holding the value.
    pub var: String,
    /// The credential's type.
    pub credential_type: CredentialType,
}

/// A by-name variable reader (see [`EnvStorage::from_lookup`]).
type Lookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

enum Source {
    Process,
    Vars(HashMap<String, SecretString>),
    Lookup(Lookup),
}

/// Read-only credentials from environment variables.
///
/// # Mapping
/// 1. **Explicit table**: [`with_mapping`](Self::with_mapping) maps a credential key to a
///    variable, e.g. `brave_search` / `api_key` ← `BRAVE_SEARCH_API_KEY`. Several keys of
///    one credential may be mapped; the credential exists when at least one is set.
/// 2. **Convention** for everything else: `{PREFIX}{ID}__{KEY}` (prefix default
///    `HIVE_CRED_`), with `ID` and `KEY` upper-cased and `.`/`-` written as `_`. So
///    `HIVE_CRED_OPENAI__API_KEY` is key `api_key` of credential `openai`. Ids found this
///    way are reported lower-case by `list`; such credentials have type `api_key`.
///
/// 3. **The Python Hive's convention**, last: `{ID}_API_KEY` (the same upper-casing), so
///    `BRAVE_SEARCH_API_KEY` is key `api_key` of credential `brave_search`, as Hive
///    users' env files have it. Found by `load`, not listed (any `*_API_KEY` variable
///    would otherwise show up as a credential); [`with_hive_convention`](Self::with_hive_convention)
///    turns it off.
///
/// Explicit mappings win over the conventions for the same id.
///
/// # Behavior
/// - Writes (`save`, `delete`) fail with `ErrorKind::Unsupported`.
/// - Loaded credentials have version 0, so saving one through a
///   [`CompositeStorage`](crate::CompositeStorage) creates it in the primary layer.
/// - Values are read at each `load` (from the process environment, or from the map
///   given to [`from_vars`](Self::from_vars)) and wrapped as secrets at once.
///
/// ```
/// use std::collections::HashMap;
/// use hive_cred_core::{CredentialType, EnvStorage};
///
/// let env = EnvStorage::new()
///     .with_mapping("brave_search", "api_key", "BRAVE_SEARCH_API_KEY", CredentialType::ApiKey)?;
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
pub struct EnvStorage {
    prefix: String,
    hive_convention: bool,
    mappings: Vec<EnvMapping>,
    source: Source,
}

impl EnvStorage {
    /// Reads the process environment, convention prefix `HIVE_CRED_`.
    pub fn new() -> Self {
        EnvStorage {
            prefix: DEFAULT_ENV_PREFIX.into(),
            hive_convention: true,
            mappings: Vec::new(),
            source: Source::Process,
        }
    }

    /// Whether `{ID}_API_KEY` (the Python Hive's convention) is read when nothing else
    /// names the credential. Default: on.
    #[must_use]
    pub fn with_hive_convention(mut self, on: bool) -> Self {
        self.hive_convention = on;
        self
    }

    /// Reads the given variables instead of the process environment (tests, sandboxes).
    pub fn from_vars(vars: HashMap<String, String>) -> Self {
        EnvStorage {
            prefix: DEFAULT_ENV_PREFIX.into(),
            hive_convention: true,
            mappings: Vec::new(),
            source: Source::Vars(
                vars.into_iter()
                    .map(|(k, v)| (k, SecretString::from(v)))
                    .collect(),
            ),
        }
    }

    /// Reads variables by name through `lookup` (a config layer, a parsed `.env` file).
    ///
    /// A lookup answers for one name at a time and cannot list variables, so this
    /// source finds the explicit mappings and Hive's `{ID}_API_KEY`, but not the
    /// `{PREFIX}{ID}__{KEY}` convention (its key names are only known by listing).
    /// `list` names the mapped credentials whose variable is set.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
    /// use hive_cred_core::{CredentialId, CredentialStorage, EnvStorage};
    ///
    /// let env = EnvStorage::from_lookup(|name| (name == "BRAVE_SEARCH_API_KEY").then(|| "BSA-1".to_string()));
    /// assert!(env.load(&CredentialId::new("brave_search")?).await?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn from_lookup<L>(lookup: L) -> Self
    where
        L: Fn(&str) -> Option<String> + Send + Sync + 'static,
    {
        EnvStorage {
            prefix: DEFAULT_ENV_PREFIX.into(),
            hive_convention: true,
            mappings: Vec::new(),
            source: Source::Lookup(std::sync::Arc::new(lookup)),
        }
    }

    /// Changes the convention prefix. An empty prefix disables the convention.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Adds an explicit mapping.
    pub fn with_mapping(
        mut self,
        id: &str,
        key: &str,
        var: &str,
        credential_type: CredentialType,
    ) -> Result<Self> {
        let id = CredentialId::new(id)?;
        validate_key_name(key)?;
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(Error::invalid_input(format!(
                "invalid environment variable name {var:?}"
            )));
        }
        self.mappings.push(EnvMapping {
            id,
            key: key.into(),
            var: var.into(),
            credential_type,
        });
        Ok(self)
    }

    /// The explicit mappings.
    pub fn mappings(&self) -> &[EnvMapping] {
        &self.mappings
    }

    fn var(&self, name: &str) -> Option<SecretString> {
        match &self.source {
            Source::Process => std::env::var(name).ok().map(SecretString::from),
            Source::Vars(m) => m.get(name).cloned(),
            Source::Lookup(lookup) => lookup(name).map(SecretString::from),
        }
    }

    /// All (name, value) pairs whose name starts with `prefix`.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, SecretString)> {
        match &self.source {
            Source::Process => std::env::vars_os()
                .filter_map(|(k, v)| {
                    let k = k.into_string().ok()?;
                    if !k.starts_with(prefix) {
                        return None;
                    }
                    Some((k, SecretString::from(v.into_string().ok()?)))
                })
                .collect(),
            Source::Vars(m) => m
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            // A lookup cannot enumerate: the prefix convention finds nothing.
            Source::Lookup(_) => Vec::new(),
        }
    }

    fn convention_id_part(id: &str) -> String {
        id.chars()
            .map(|c| {
                if c == '.' || c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    }

    fn convention_keys(&self, id: &CredentialId) -> BTreeMap<String, SecretString> {
        let mut out = BTreeMap::new();
        if self.prefix.is_empty() {
            return out;
        }
        let head = format!("{}{}__", self.prefix, Self::convention_id_part(id.as_str()));
        for (name, value) in self.vars_with_prefix(&head) {
            let key = name[head.len()..].to_ascii_lowercase();
            if validate_key_name(&key).is_ok() && !key.contains("__") {
                out.insert(key, value);
            }
        }
        out
    }
}

impl Default for EnvStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EnvStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvStorage")
            .field("prefix", &self.prefix)
            .field("mappings", &self.mappings)
            .field(
                "source",
                &match self.source {
                    Source::Process => "process",
                    Source::Vars(_) => "vars",
                    Source::Lookup(_) => "lookup",
                },
            )
            .finish()
    }
}

#[async_trait]
impl CredentialStorage for EnvStorage {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let mapped: Vec<&EnvMapping> = self.mappings.iter().filter(|m| &m.id == id).collect();
        if let Some(first) = mapped.first() {
            let mut c = CredentialObject::with_id(id.clone(), first.credential_type);
            for m in &mapped {
                if let Some(v) = self.var(&m.var) {
                    c.set_key(m.key.clone(), v, None)?;
                }
            }
            if c.keys().len() > 0 {
                return Ok(Some(c));
            }
            // No mapped variable is set: the conventions below still apply.
        }
        let mut keys = self.convention_keys(id);
        if keys.is_empty() && self.hive_convention {
            let name = format!("{}_API_KEY", Self::convention_id_part(id.as_str()));
            if let Some(v) = self.var(&name) {
                keys.insert("api_key".to_owned(), v);
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
        for (k, v) in keys {
            c.set_key(k, v, None)?;
        }
        Ok(Some(c))
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        Err(Error::unsupported(
            "environment storage is read-only; save to a writable storage instead",
        )
        .with_context("id", credential.id())
        .with_context("backend", "env"))
    }

    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        Err(
            Error::unsupported("environment storage is read-only; unset the variable instead")
                .with_context("id", id)
                .with_context("backend", "env"),
        )
    }

    async fn list(&self) -> Result<Vec<CredentialId>> {
        let mut ids: Vec<CredentialId> = Vec::new();
        for m in &self.mappings {
            if !ids.contains(&m.id) && self.var(&m.var).is_some() {
                ids.push(m.id.clone());
            }
        }
        if !self.prefix.is_empty() {
            for (name, _) in self.vars_with_prefix(&self.prefix) {
                let rest = &name[self.prefix.len()..];
                let Some((id_part, key_part)) = rest.split_once("__") else {
                    continue;
                };
                if key_part.is_empty() {
                    continue;
                }
                let Ok(id) = CredentialId::new(&id_part.to_ascii_lowercase()) else {
                    continue;
                };
                if !ids.contains(&id) && !self.mappings.iter().any(|m| m.id == id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    fn backend_name(&self) -> &'static str {
        "env"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> EnvStorage {
        EnvStorage::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn explicit_mapping_and_convention() {
        let s = env(&[
            ("BRAVE_SEARCH_API_KEY", "brave-secret"),
            ("HIVE_CRED_OPENAI__API_KEY", "sk-1"),
            ("HIVE_CRED_GH_APP__CLIENT_ID", "cid"),
            ("HIVE_CRED_GH_APP__CLIENT_SECRET", "cs"),
            ("UNRELATED", "x"),
        ])
        .with_mapping(
            "brave_search",
            "api_key",
            "BRAVE_SEARCH_API_KEY",
            CredentialType::ApiKey,
        )
        .unwrap();
        let brave = s
            .load(&"brave_search".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            brave.get_key("api_key").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            "brave-secret"
        );
        assert_eq!(brave.version(), 0);
        let openai = s.load(&"openai".parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(openai.get_key("api_key").unwrap().expose_secret(), "sk-1"); // EXPOSE: the test compares the secret value.
        let gh = s.load(&"gh-app".parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(
            gh.key_names().collect::<Vec<_>>(),
            vec!["client_id", "client_secret"]
        );
        assert!(s.load(&"absent".parse().unwrap()).await.unwrap().is_none());

        let mut listed: Vec<String> = s
            .list()
            .await
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, vec!["brave_search", "gh_app", "openai"]);
    }

    #[tokio::test]
    async fn unset_mapped_variable_is_absent_and_writes_unsupported() {
        let s = env(&[])
            .with_mapping(
                "brave_search",
                "api_key",
                "BRAVE_SEARCH_API_KEY",
                CredentialType::ApiKey,
            )
            .unwrap();
        let id: CredentialId = "brave_search".parse().unwrap();
        assert!(s.load(&id).await.unwrap().is_none());
        assert!(s.list().await.unwrap().is_empty());
        let c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
        assert_eq!(s.save(&c).await.unwrap_err().kind(), ErrorKind::Unsupported);
        assert_eq!(
            s.delete(&id).await.unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert!(s.clone_debug().contains("BRAVE_SEARCH_API_KEY"));
    }

    #[tokio::test]
    async fn an_unset_mapping_falls_back_to_the_conventions() {
        let s = env(&[("HIVE_CRED_GITHUB__API_KEY", "from-hive-cred")])
            .with_mapping("github", "api_key", "GITHUB_TOKEN", CredentialType::ApiKey)
            .unwrap();
        let c = s.load(&"github".parse().unwrap()).await.unwrap().unwrap();
        assert!(c.has_key("api_key"));
        let s = env(&[("GITHUB_API_KEY", "hive-convention")])
            .with_mapping("github", "api_key", "GITHUB_TOKEN", CredentialType::ApiKey)
            .unwrap();
        assert!(s.load(&"github".parse().unwrap()).await.unwrap().is_some());
    }

    #[test]
    fn bad_mappings_are_rejected() {
        assert!(
            env(&[])
                .with_mapping("../x", "k", "V", CredentialType::ApiKey)
                .is_err()
        );
        assert!(
            env(&[])
                .with_mapping("x", "a.b", "V", CredentialType::ApiKey)
                .is_err()
        );
        assert!(
            env(&[])
                .with_mapping("x", "k", "A=B", CredentialType::ApiKey)
                .is_err()
        );
    }

    impl EnvStorage {
        fn clone_debug(&self) -> String {
            format!("{self:?}")
        }
    }

    /// The Python Hive's `{ID}_API_KEY`: read last, not listed, and off on request.
    #[tokio::test]
    async fn hive_convention_is_the_last_fallback() {
        let id = CredentialId::new("brave-search").unwrap();
        let e = env(&[("BRAVE_SEARCH_API_KEY", "from-hive-env")]);
        let c = e.load(&id).await.unwrap().unwrap();
        assert_eq!(c.credential_type(), CredentialType::ApiKey);
        // EXPOSE: the test compares the secret value.
        assert_eq!(
            c.get_key("api_key").unwrap().expose_secret(),
            "from-hive-env"
        );
        assert!(e.list().await.unwrap().is_empty(), "not listed");
        let both = env(&[
            ("BRAVE_SEARCH_API_KEY", "from-hive-env"),
            ("HIVE_CRED_BRAVE_SEARCH__API_KEY", "from-convention"),
        ]);
        let c = both.load(&id).await.unwrap().unwrap();
        // EXPOSE: the test compares the secret value.
        assert_eq!(
            c.get_key("api_key").unwrap().expose_secret(),
            "from-convention"
        );
        let off = env(&[("BRAVE_SEARCH_API_KEY", "x")]).with_hive_convention(false);
        assert!(off.load(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lookup_source_reads_mappings_and_hive_names_by_name() {
        let vars: HashMap<String, String> = [
            ("GH_PAT", "ghp-lookup"),
            ("BRAVE_SEARCH_API_KEY", "brave-lookup"),
            ("HIVE_CRED_OPENAI__API_KEY", "sk-not-found"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = EnvStorage::from_lookup(move |name| vars.get(name).cloned())
            .with_mapping("github", "token", "GH_PAT", CredentialType::BearerToken)
            .unwrap()
            .with_mapping("slack", "api_key", "SLACK_UNSET", CredentialType::ApiKey)
            .unwrap();
        let gh = e
            .load(&CredentialId::new("github").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gh.credential_type(), CredentialType::BearerToken);
        // EXPOSE: the test compares the secret value.
        assert_eq!(gh.get_key("token").unwrap().expose_secret(), "ghp-lookup");
        let brave = e
            .load(&CredentialId::new("brave_search").unwrap())
            .await
            .unwrap()
            .unwrap();
        // EXPOSE: the test compares the secret value.
        assert_eq!(
            brave.get_key("api_key").unwrap().expose_secret(),
            "brave-lookup"
        );
        // The prefix convention needs listing, which a lookup cannot do.
        assert!(
            e.load(&CredentialId::new("openai").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            e.list().await.unwrap(),
            vec![CredentialId::new("github").unwrap()]
        );
        assert!(format!("{e:?}").contains("lookup"));
    }
}
