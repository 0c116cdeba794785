//! [`UsageSpec`] and [`UsageSpecs`]: how a tool uses a credential, and where it may go.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use hive_cred_core::{Error, Result, Template};
use http::HeaderName;
use serde::Deserialize;
use url::Url;

use super::destination::{Destination, Mismatch};

/// How a tool uses credentials: headers, query parameters and top-level JSON body fields
/// as `{{id.key}}` templates, and the [`Destination`]s they may be sent to.
///
/// The [`InjectingClient`](crate::InjectingClient) fills the templates when it sends a
/// request that names this spec, and only for an allowed destination; the tool never
/// holds the values.
///
/// # Behavior
/// - A spec without destinations is refused (`InvalidInput`).
/// - Templates are checked when the spec is built (`{{id.key}}`/`{{id}}` syntax, see
///   [`Template`]); header names must be valid HTTP header names.
/// - The credentials a spec's templates name may also be reached through opaque handles
///   (`{{hive:id.key}}`) for the spec's destinations.
///
/// ```
/// use hive_cred_runtime::UsageSpec;
///
/// let spec = UsageSpec::builder("github")
///     .header("Authorization", "Bearer {{github.access_token}}")
///     .destination("https://api.github.com")
///     .build()?;
/// assert_eq!(spec.credentials(), ["github"]);
/// assert!(UsageSpec::builder("nowhere").header("X-Key", "{{k.v}}").build().is_err());
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UsageSpec {
    name: String,
    headers: Vec<(HeaderName, Template)>,
    query: Vec<(String, Template)>,
    body: Vec<(String, Template)>,
    destinations: Vec<Destination>,
    credentials: Vec<String>,
}

/// Builder for [`UsageSpec`]; errors surface in [`build`](Self::build).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct UsageSpecBuilder {
    name: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    body: BTreeMap<String, String>,
    #[serde(default)]
    destinations: Vec<String>,
}

impl UsageSpecBuilder {
    /// A header whose value is a template: `("Authorization", "Bearer {{github.access_token}}")`.
    pub fn header(mut self, name: impl Into<String>, template: impl Into<String>) -> Self {
        self.headers.insert(name.into(), template.into());
        self
    }

    /// A query parameter whose value is a template.
    pub fn query(mut self, name: impl Into<String>, template: impl Into<String>) -> Self {
        self.query.insert(name.into(), template.into());
        self
    }

    /// A top-level field of the JSON request body whose (string) value is a template.
    pub fn body_field(mut self, name: impl Into<String>, template: impl Into<String>) -> Self {
        self.body.insert(name.into(), template.into());
        self
    }

    /// A destination (see [`Destination::parse`]).
    pub fn destination(mut self, destination: impl Into<String>) -> Self {
        self.destinations.push(destination.into());
        self
    }

    /// Checks everything and builds the spec.
    pub fn build(self) -> Result<UsageSpec> {
        let name = self.name;
        let in_spec = |e: Error| e.with_context("usage", &name);
        if name.is_empty() {
            return Err(Error::invalid_input("a usage spec needs a name"));
        }
        if self.destinations.is_empty() {
            return Err(in_spec(Error::invalid_input(format!(
                "usage spec `{name}` has no destinations: list where its credentials may be sent (e.g. destinations = [\"https://api.example.com\"])"
            ))));
        }
        let destinations = self
            .destinations
            .iter()
            .map(|d| Destination::parse(d))
            .collect::<Result<Vec<_>>>()
            .map_err(in_spec)?;
        let template = |t: &str| Template::parse(t).map_err(in_spec);
        let mut headers = Vec::with_capacity(self.headers.len());
        for (h, t) in &self.headers {
            let header = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                in_spec(Error::invalid_input(format!(
                    "usage spec `{name}`: `{h}` is not a valid header name"
                )))
            })?;
            headers.push((header, template(t)?));
        }
        let pairs = |m: &BTreeMap<String, String>| -> Result<Vec<(String, Template)>> {
            m.iter()
                .map(|(k, t)| Ok((k.clone(), template(t)?)))
                .collect()
        };
        let query = pairs(&self.query)?;
        let body = pairs(&self.body)?;
        let mut credentials: Vec<String> = Vec::new();
        for t in headers
            .iter()
            .map(|(_, t)| t)
            .chain(query.iter().map(|(_, t)| t))
            .chain(body.iter().map(|(_, t)| t))
        {
            for (id, _) in t.placeholders() {
                if !credentials.iter().any(|c| c == id) {
                    credentials.push(id.to_string());
                }
            }
        }
        Ok(UsageSpec {
            name,
            headers,
            query,
            body,
            destinations,
            credentials,
        })
    }
}

impl UsageSpec {
    /// A builder for the spec named `name` (what requests name with
    /// [`ToolRequest::usage`](crate::ToolRequest::usage)).
    pub fn builder(name: impl Into<String>) -> UsageSpecBuilder {
        UsageSpecBuilder {
            name: name.into(),
            ..UsageSpecBuilder::default()
        }
    }

    /// The spec's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its credentials may be sent.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// The ids of the credentials its templates name, in order of first use.
    pub fn credentials(&self) -> &[String] {
        &self.credentials
    }

    /// The header templates.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &Template)> + '_ {
        self.headers.iter().map(|(h, t)| (h, t))
    }

    /// The query parameter templates.
    pub fn query(&self) -> impl Iterator<Item = (&str, &Template)> + '_ {
        self.query.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// The JSON body field templates.
    pub fn body_fields(&self) -> impl Iterator<Item = (&str, &Template)> + '_ {
        self.body.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// Whether its credentials may be sent to `url`.
    pub fn allows(&self, url: &Url) -> bool {
        self.check(url).is_ok()
    }

    /// `Ok`, or the nearest miss over all destinations.
    pub(crate) fn check(&self, url: &Url) -> std::result::Result<(), Mismatch> {
        let mut nearest = Mismatch::Host;
        for d in &self.destinations {
            match d.check(url) {
                Ok(()) => return Ok(()),
                Err(m) => nearest = nearest.max(m),
            }
        }
        Err(nearest)
    }

    pub(crate) fn has_templates(&self) -> bool {
        !(self.headers.is_empty() && self.query.is_empty() && self.body.is_empty())
    }
}

/// A set of [`UsageSpec`]s by name, loadable from a TOML or JSON file of `[[usage]]`
/// tables.
///
/// ```
/// use hive_cred_runtime::UsageSpecs;
///
/// let specs = UsageSpecs::from_toml(r#"
///     [[usage]]
///     name = "github"
///     destinations = ["https://api.github.com"]
///     headers = { Authorization = "Bearer {{github.access_token}}" }
///
///     [[usage]]
///     name = "brave"
///     destinations = ["https://api.search.brave.com/res/v1"]
///     query = { key = "{{brave_search.api_key}}" }
/// "#)?;
/// assert_eq!(specs.len(), 2);
/// assert!(specs.get("brave").is_some());
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct UsageSpecs {
    by_name: HashMap<String, Arc<UsageSpec>>,
    /// Credential id -> the specs naming it (for opaque handles).
    by_credential: HashMap<String, Vec<Arc<UsageSpec>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    usage: Vec<UsageSpecBuilder>,
}

impl UsageSpecs {
    /// No specs.
    pub fn new() -> Self {
        UsageSpecs::default()
    }

    /// Adds a spec; `InvalidInput` when one of that name is already there.
    pub fn insert(&mut self, spec: UsageSpec) -> Result<()> {
        if self.by_name.contains_key(&spec.name) {
            return Err(Error::invalid_input(format!(
                "usage spec `{}` is declared twice",
                spec.name
            )));
        }
        let spec = Arc::new(spec);
        for id in &spec.credentials {
            self.by_credential
                .entry(id.clone())
                .or_default()
                .push(spec.clone());
        }
        self.by_name.insert(spec.name.clone(), spec);
        Ok(())
    }

    /// Adds a spec, builder style.
    pub fn with(mut self, spec: UsageSpec) -> Result<Self> {
        self.insert(spec)?;
        Ok(self)
    }

    /// Parses `[[usage]]` tables (`name`, `destinations`, and optional `headers`,
    /// `query`, `body` tables of templates).
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: SpecFile = toml::from_str(text)
            .map_err(|e| Error::invalid_input(format!("usage spec file: {}", e.message())))?;
        Self::from_builders(file.usage)
    }

    /// Parses `{"usage": [{"name": .., "destinations": [..], "headers": {..}}]}`.
    pub fn from_json(text: &str) -> Result<Self> {
        let file: SpecFile = serde_json::from_str(text)
            .map_err(|e| Error::invalid_input(format!("usage spec file: {e}")))?;
        Self::from_builders(file.usage)
    }

    /// Reads a `.json` file as JSON, anything else as TOML.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::from(e)
                .with_message_prefix("could not read the usage spec file")
                .with_context("path", path.display())
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        };
        parsed.map_err(|e| e.with_context("path", path.display()))
    }

    fn from_builders(builders: Vec<UsageSpecBuilder>) -> Result<Self> {
        let mut specs = UsageSpecs::new();
        for b in builders {
            specs.insert(b.build()?)?;
        }
        Ok(specs)
    }

    /// The spec named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<UsageSpec>> {
        self.by_name.get(name)
    }

    /// Every spec, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<UsageSpec>> + '_ {
        self.by_name.values()
    }

    /// How many specs there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether credential `id` may be sent to `url`: `Ok` when a spec naming it allows
    /// the URL, else the nearest miss (`Host` when no spec names it).
    pub(crate) fn check_credential(
        &self,
        id: &str,
        url: &Url,
    ) -> std::result::Result<(), Mismatch> {
        let mut nearest = Mismatch::Host;
        for spec in self.by_credential.get(id).into_iter().flatten() {
            match spec.check(url) {
                Ok(()) => return Ok(()),
                Err(m) => nearest = nearest.max(m),
            }
        }
        Err(nearest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::ErrorKind;

    #[test]
    fn specs_without_destinations_or_with_bad_parts_are_refused() {
        let e = UsageSpecs::from_toml("[[usage]]\nname = \"x\"\nheaders = { A = \"{{a.b}}\" }\n")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("no destinations"), "{e}");
        for b in [
            UsageSpec::builder("x")
                .destination("https://h")
                .header("bad header", "{{a.b}}"),
            UsageSpec::builder("x")
                .destination("https://h")
                .query("k", "{{a.b"),
            UsageSpec::builder("x").destination("h"),
            UsageSpec::builder("").destination("https://h"),
        ] {
            assert_eq!(b.build().unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        let twice = "[[usage]]\nname = \"x\"\ndestinations = [\"https://h\"]\n".repeat(2);
        assert!(UsageSpecs::from_toml(&twice).is_err());
        assert!(
            UsageSpecs::from_toml(
                "[[usage]]\nname = \"x\"\ndestinations = [\"https://h\"]\nheader = {}\n"
            )
            .is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn json_specs_and_credential_lookup() {
        let specs = UsageSpecs::from_json(
            r#"{"usage":[{"name":"gh","destinations":["https://api.github.com"],
                "headers":{"Authorization":"Bearer {{github.access_token}}"},
                "body":{"token":"{{other.key}}"}}]}"#,
        )
        .unwrap();
        let spec = specs.get("gh").unwrap();
        assert_eq!(spec.credentials(), ["github", "other"]);
        let url = Url::parse("https://api.github.com/user").unwrap();
        assert!(specs.check_credential("github", &url).is_ok());
        assert_eq!(specs.check_credential("nobody", &url), Err(Mismatch::Host));
        let http = Url::parse("http://api.github.com/user").unwrap();
        assert_eq!(
            specs.check_credential("github", &http),
            Err(Mismatch::Scheme)
        );
    }
}
