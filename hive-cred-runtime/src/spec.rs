//! Credential specs: what a credential is, who needs it, how to get it and how to
//! check it. [`SpecCatalogue`] holds them: the starter catalogue shipped with the crate
//! (`specs/catalogue.toml`) plus the user's own files.

use std::collections::BTreeMap;
use std::path::Path;

use hive_cred_core::{CredentialType, Error, Result};
use serde::{Deserialize, Serialize};

/// The starter catalogue, compiled in.
const BUILTIN: &str = include_str!("../specs/catalogue.toml");

/// Where a health check puts the credential in its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthPlacement {
    /// `Authorization: Bearer <value>`.
    #[default]
    Bearer,
    /// A header named by [`HealthCheckSpec::header`], with an optional prefix.
    Header,
    /// A query parameter named by [`HealthCheckSpec::param`].
    Query,
    /// HTTP basic auth from the `username` and `password` keys.
    Basic,
}

/// Which identity field a health check's JSON pointer fills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IdentityField {
    /// `CredentialIdentity::email`.
    Email,
    /// `CredentialIdentity::username`.
    #[default]
    Username,
    /// `CredentialIdentity::workspace`.
    Workspace,
    /// `CredentialIdentity::account_id`.
    AccountId,
}

/// How to probe a credential: one HTTP request and what a good answer looks like.
///
/// ```toml
/// [credentials.health_check]
/// method = "GET"                       # default GET
/// url = "https://api.github.com/user"
/// auth = "bearer"                      # bearer | header | query | basic
/// # header = "X-Subscription-Token"    # auth = "header"
/// # prefix = "Token "                  # auth = "header", before the value
/// # param = "key"                      # auth = "query"
/// # key = "api_key"                    # which key; default the first required key
/// expect_status = [200]                # default [200]
/// identity_pointer = "/login"          # JSON pointer into the response body
/// identity_field = "username"          # email | username | workspace | account_id
/// headers = { "User-Agent" = "hive-cred" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthCheckSpec {
    /// The HTTP method. Default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL.
    pub url: String,
    /// Where the credential goes.
    #[serde(default)]
    pub auth: AuthPlacement,
    /// The header name for [`AuthPlacement::Header`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Text before the value in the header ([`AuthPlacement::Header`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The query parameter for [`AuthPlacement::Query`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The key whose value is sent. Default: the spec's first required key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Statuses that mean the credential works. Default `[200]`.
    #[serde(default = "default_statuses")]
    pub expect_status: Vec<u16>,
    /// A JSON pointer (RFC 6901) into the response body where the identity is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_pointer: Option<String>,
    /// Which identity field the pointer fills. Default `username`.
    #[serde(default)]
    pub identity_field: IdentityField,
    /// Extra request headers (never secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_statuses() -> Vec<u16> {
    vec![200]
}

impl HealthCheckSpec {
    /// A `GET` of `url` with a bearer token, expecting 200.
    pub fn new(url: impl Into<String>) -> Self {
        HealthCheckSpec {
            method: default_method(),
            url: url.into(),
            auth: AuthPlacement::Bearer,
            header: None,
            prefix: None,
            param: None,
            key: None,
            expect_status: default_statuses(),
            identity_pointer: None,
            identity_field: IdentityField::Username,
            headers: BTreeMap::new(),
        }
    }

    /// Sends the credential in header `name` instead.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>) -> Self {
        self.auth = AuthPlacement::Header;
        self.header = Some(name.into());
        self
    }

    /// Reads the identity at `pointer` into `field`.
    #[must_use]
    pub fn with_identity(mut self, pointer: impl Into<String>, field: IdentityField) -> Self {
        self.identity_pointer = Some(pointer.into());
        self.identity_field = field;
        self
    }

    fn validate(&self, id: &str) -> Result<()> {
        let bad = |what: &str| {
            Err(
                Error::config(format!("credential spec health check: {what}"))
                    .with_context("id", id),
            )
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad("url must start with http:// or https://");
        }
        if self.auth == AuthPlacement::Header && self.header.is_none() {
            return bad("auth = \"header\" needs header = \"NAME\"");
        }
        if self.auth == AuthPlacement::Query && self.param.is_none() {
            return bad("auth = \"query\" needs param = \"NAME\"");
        }
        if self.expect_status.is_empty() {
            return bad("expect_status is empty");
        }
        if let Some(p) = &self.identity_pointer
            && !(p.is_empty() || p.starts_with('/'))
        {
            return bad("identity_pointer is a JSON pointer and starts with '/'");
        }
        Ok(())
    }
}

/// What one credential is and who needs it.
///
/// ```toml
/// [[credentials]]
/// id = "brave_search"
/// description = "Brave Search API key"
/// credential_type = "api_key"          # default api_key
/// required_keys = ["api_key"]          # default ["api_key"]
/// env_var = "BRAVE_SEARCH_API_KEY"     # the environment fallback
/// help_url = "https://brave.com/search/api/"
/// instructions = "..."
/// tools = ["web_search"]               # tools (node names) that need it
/// node_kinds = ["search"]              # node kinds that need it
/// alternatives = ["serpapi"]           # credentials that satisfy those tools instead
/// oauth_provider = "github"            # connected with `hive-cred connect PROVIDER`
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CredentialSpec {
    /// The credential id (and the provider name of its accounts).
    pub id: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its type. Default `api_key`.
    #[serde(default = "default_type")]
    pub credential_type: CredentialType,
    /// The keys it must have. Default `["api_key"]`.
    #[serde(default = "default_keys")]
    pub required_keys: Vec<String>,
    /// The environment variable that provides it (beside `HIVE_CRED_{ID}__{KEY}` and
    /// `{ID}_API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var: Option<String>,
    /// Where to obtain it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_url: Option<String>,
    /// How to obtain it, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Tools (node names) that need it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Node kinds that need it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_kinds: Vec<String>,
    /// Credentials that satisfy the same tools instead (either is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<String>,
    /// The OAuth provider it is connected through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_provider: Option<String>,
    /// How to probe it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

fn default_type() -> CredentialType {
    CredentialType::ApiKey
}

fn default_keys() -> Vec<String> {
    vec!["api_key".to_owned()]
}

impl CredentialSpec {
    /// A spec for an API key `id` with defaults.
    pub fn new(id: impl Into<String>) -> Self {
        CredentialSpec {
            id: id.into(),
            description: None,
            credential_type: default_type(),
            required_keys: default_keys(),
            env_var: None,
            help_url: None,
            instructions: None,
            tools: Vec::new(),
            node_kinds: Vec::new(),
            alternatives: Vec::new(),
            oauth_provider: None,
            health_check: None,
        }
    }

    /// Sets the tools that need it.
    #[must_use]
    pub fn with_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tools: I) -> Self {
        self.tools = tools.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the alternatives.
    #[must_use]
    pub fn with_alternatives<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.alternatives = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the health check.
    #[must_use]
    pub fn with_health_check(mut self, check: HealthCheckSpec) -> Self {
        self.health_check = Some(check);
        self
    }

    /// Sets the help URL.
    #[must_use]
    pub fn with_help_url(mut self, url: impl Into<String>) -> Self {
        self.help_url = Some(url.into());
        self
    }

    /// The key a health check sends: its `key`, else the first required key.
    pub fn probe_key(&self) -> &str {
        self.health_check
            .as_ref()
            .and_then(|h| h.key.as_deref())
            .or_else(|| self.required_keys.first().map(String::as_str))
            .unwrap_or("api_key")
    }

    /// The environment variable a person should set: `env_var`, else Hive's
    /// `{ID}_API_KEY`.
    pub fn env_var_name(&self) -> String {
        self.env_var
            .clone()
            .unwrap_or_else(|| hive_cred_core::hive_env_var(&self.id))
    }

    fn validate(&self) -> Result<()> {
        hive_cred_core::CredentialId::new(&self.id)
            .map_err(|e| Error::config(format!("credential spec: {}", e.message())))?;
        for k in &self.required_keys {
            hive_cred_core::validate_key_name(k).map_err(|e| {
                Error::config(format!("credential spec: {}", e.message()))
                    .with_context("id", &self.id)
            })?;
        }
        if let Some(h) = &self.health_check {
            h.validate(&self.id)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    credentials: Vec<CredentialSpec>,
}

/// The credential specs an agent knows: the starter catalogue plus the user's files.
/// A later spec with the same id replaces an earlier one.
///
/// ```
/// use hive_cred_runtime::SpecCatalogue;
///
/// let catalogue = SpecCatalogue::builtin();
/// assert!(catalogue.len() >= 15);
/// let brave = catalogue.get("brave_search").expect("shipped");
/// assert_eq!(brave.env_var.as_deref(), Some("BRAVE_SEARCH_API_KEY"));
/// assert!(catalogue.for_tool("web_search").any(|s| s.id == "brave_search"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpecCatalogue {
    specs: BTreeMap<String, CredentialSpec>,
}

impl SpecCatalogue {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The starter catalogue shipped with the crate (`specs/catalogue.toml`).
    pub fn builtin() -> Self {
        let mut c = Self::new();
        // The shipped file is checked by a test; a parse failure here is a build bug.
        if let Err(e) = c.add_toml_str(BUILTIN) {
            tracing::error!(target: "hive_cred::spec", error = %e, "the built-in credential catalogue does not parse");
        }
        c
    }

    /// Adds (or replaces) one spec.
    pub fn insert(&mut self, spec: CredentialSpec) -> Result<()> {
        spec.validate()?;
        self.specs.insert(spec.id.clone(), spec);
        Ok(())
    }

    /// Adds the `[[credentials]]` of a TOML text.
    pub fn add_toml_str(&mut self, text: &str) -> Result<()> {
        let file: SpecFile = toml::from_str(text)
            .map_err(|e| Error::config(format!("credential spec file: {}", e.message())))?;
        self.add_all(file.credentials)
    }

    /// Adds the `"credentials"` of a JSON text (`{"credentials": [...]}`) or a JSON
    /// array of specs.
    pub fn add_json_str(&mut self, text: &str) -> Result<()> {
        let specs = match serde_json::from_str::<SpecFile>(text) {
            Ok(f) => f.credentials,
            Err(_) => serde_json::from_str::<Vec<CredentialSpec>>(text)
                .map_err(|e| Error::config(format!("credential spec file: {e}")))?,
        };
        self.add_all(specs)
    }

    /// Adds a file: JSON when it ends in `.json`, TOML otherwise.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::from(e).with_context("path", path.display()))?;
        let result = if path.extension().is_some_and(|e| e == "json") {
            self.add_json_str(&text)
        } else {
            self.add_toml_str(&text)
        };
        result.map_err(|e| e.with_context("path", path.display()))
    }

    fn add_all(&mut self, specs: Vec<CredentialSpec>) -> Result<()> {
        for s in &specs {
            s.validate()?;
        }
        for s in specs {
            self.specs.insert(s.id.clone(), s);
        }
        Ok(())
    }

    /// `env` with a mapping for every spec that names an `env_var`: the variable fills
    /// the spec's first required key. The storage's own conventions
    /// (`HIVE_CRED_{ID}__{KEY}`, Hive's `{ID}_API_KEY`) still apply when the variable is
    /// unset.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
    /// use std::collections::HashMap;
    /// use hive_cred_core::{CredentialId, CredentialStorage, EnvStorage};
    /// use hive_cred_runtime::SpecCatalogue;
    ///
    /// let vars = HashMap::from([("GITHUB_TOKEN".to_string(), "ghp-1".to_string())]);
    /// let env = SpecCatalogue::builtin().env_storage(EnvStorage::from_vars(vars))?;
    /// let github = env.load(&CredentialId::new("github")?).await?.expect("from GITHUB_TOKEN");
    /// assert!(github.has_key("api_key"));
    /// # Ok(()) }
    /// ```
    pub fn env_storage(
        &self,
        mut env: hive_cred_core::EnvStorage,
    ) -> Result<hive_cred_core::EnvStorage> {
        for spec in self.specs.values() {
            if let (Some(var), Some(key)) = (&spec.env_var, spec.required_keys.first()) {
                env = env.with_mapping(&spec.id, key, var, spec.credential_type)?;
            }
        }
        Ok(env)
    }

    /// The spec of `id` (a `provider/alias` or `provider.alias` id finds the
    /// provider's spec).
    pub fn get(&self, id: &str) -> Option<&CredentialSpec> {
        self.specs.get(id).or_else(|| {
            let provider = id.split(['/', '.']).next()?;
            self.specs.get(provider)
        })
    }

    /// The specs that name `tool` among their tools.
    pub fn for_tool<'a>(&'a self, tool: &'a str) -> impl Iterator<Item = &'a CredentialSpec> + 'a {
        self.specs
            .values()
            .filter(move |s| s.tools.iter().any(|t| t == tool))
    }

    /// The specs that name `kind` among their node kinds.
    pub fn for_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a CredentialSpec> + 'a {
        self.specs
            .values()
            .filter(move |s| s.node_kinds.iter().any(|k| k == kind))
    }

    /// Every spec, by id.
    pub fn iter(&self) -> impl Iterator<Item = &CredentialSpec> + '_ {
        self.specs.values()
    }

    /// How many specs.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalogue_parses_and_covers_the_presets() {
        let mut c = SpecCatalogue::new();
        c.add_toml_str(BUILTIN).expect("catalogue parses");
        assert!(c.len() >= 15, "{}", c.len());
        for id in [
            "github",
            "google",
            "microsoft",
            "slack",
            "hubspot",
            "openai",
            "anthropic",
            "brave_search",
            "google_search",
        ] {
            assert!(c.get(id).is_some(), "{id}");
        }
        let gh = c.get("github/work").unwrap();
        assert_eq!(
            gh.health_check
                .as_ref()
                .unwrap()
                .identity_pointer
                .as_deref(),
            Some("/login")
        );
    }

    #[test]
    fn user_files_add_and_replace_in_toml_and_json() {
        let mut c = SpecCatalogue::builtin();
        c.add_json_str(
            r#"{"credentials":[{"id":"brave_search","env_var":"MY_BRAVE"},{"id":"acme"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.get("brave_search").unwrap().env_var.as_deref(),
            Some("MY_BRAVE")
        );
        assert_eq!(c.get("acme").unwrap().env_var_name(), "ACME_API_KEY");
        let err = c
            .add_toml_str(
                "[[credentials]]\nid = \"x\"\n[credentials.health_check]\nurl = \"ftp://x\"\n",
            )
            .unwrap_err();
        assert_eq!(err.kind(), hive_cred_core::ErrorKind::Config);
        assert!(
            c.add_toml_str("[[credentials]]\nid = \"x\"\nbogus = 1\n")
                .is_err()
        );
    }
}
