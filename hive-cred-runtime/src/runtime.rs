//! [`AgentRuntime`]: the credential store of an agent, with pre-step refresh,
//! redaction and an audit trail.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hive_cred_core::lock::LockOptions;
use hive_cred_core::{
    AccessHook, Clock, CredentialId, CredentialObject, CredentialProvider, CredentialStorage,
    CredentialStore, CredentialStoreBuilder, Error, ErrorKind, RefreshPolicy, Result, StorageLayer,
};
use tracing::Instrument as _;

use crate::audit::{AuditLog, AuditRecord, with_node};
use crate::canary::CanaryMonitor;
use crate::config::{AccountsConfig, RuntimeConfig};
use crate::redact::{DEFAULT_MIN_SECRET_LEN, RedactingMakeWriter, Redactor, RedactorHandle};
use crate::spec::SpecCatalogue;

/// The environment lookup the builder uses for `{ env = ".." }` secret references.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a node needs before it runs.
///
/// ```
/// use hive_cred_runtime::NodeSpec;
///
/// let spec = NodeSpec::new("search").credential("brave_search").credential("github");
/// assert_eq!(spec.credentials, ["brave_search", "github"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSpec {
    /// The node's name (recorded in the audit trail).
    pub name: String,
    /// The ids of the credentials it needs.
    pub credentials: Vec<String>,
    /// Groups of credentials of which any one is enough (a tool served by either of
    /// two providers).
    pub alternatives: Vec<Vec<String>>,
    /// The node's kind, matched against credential specs' `node_kinds`.
    pub kind: Option<String>,
    /// Pinned account alias per provider.
    pub accounts: std::collections::BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node without credentials.
    pub fn new(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            ..NodeSpec::default()
        }
    }

    /// Pins the account `alias` of `provider` for this node: where the node needs
    /// `provider`, it gets `provider/alias`.
    #[must_use]
    pub fn account(mut self, provider: impl Into<String>, alias: impl Into<String>) -> Self {
        self.accounts.insert(provider.into(), alias.into());
        self
    }

    /// Declares a group of credentials of which any one is enough.
    #[must_use]
    pub fn any_of<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.alternatives
            .push(ids.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the node's kind.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Declares one more credential.
    #[must_use]
    pub fn credential(mut self, id: impl Into<String>) -> Self {
        self.credentials.push(id.into());
        self
    }

    /// Declares several credentials.
    #[must_use]
    pub fn credentials<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.credentials.extend(ids.into_iter().map(Into::into));
        self
    }
}

/// The error attached (as [`std::error::Error::source`]) to the `Error` a node fails
/// with when declared credentials are unavailable: one entry per credential.
#[derive(Debug, Clone)]
pub struct UnavailableCredentials {
    node: String,
    failures: Vec<(String, Error)>,
}

impl UnavailableCredentials {
    /// The node that was not started.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Each unavailable credential id with why, in declared order.
    pub fn failures(&self) -> &[(String, Error)] {
        &self.failures
    }

    /// The ids of the unavailable credentials, in declared order.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.failures.iter().map(|(id, _)| id.as_str())
    }

    /// Finds the details in an error returned by [`AgentRuntime::run_node`] or
    /// [`AgentRuntime::prepare_node`].
    pub fn from_error(error: &Error) -> Option<&UnavailableCredentials> {
        std::error::Error::source(error)?.downcast_ref::<UnavailableCredentials>()
    }

    fn into_error(self) -> Error {
        let all_temporary = self.failures.iter().all(|(_, e)| e.is_temporary());
        let kind = match self.failures.first() {
            Some((_, first)) if self.failures.iter().all(|(_, e)| e.kind() == first.kind()) => {
                first.kind()
            }
            _ if all_temporary => ErrorKind::Unavailable,
            _ => self
                .failures
                .iter()
                .find(|(_, e)| !e.is_temporary())
                .map_or(ErrorKind::Unavailable, |(_, e)| e.kind()),
        };
        let ids: Vec<&str> = self.ids().collect();
        let ids = ids.join(",");
        Error::new(kind, self.to_string())
            .set_temporary(all_temporary)
            .with_context("node", &self.node)
            .with_context("credentials", ids)
            .with_source(self)
    }
}

impl fmt::Display for UnavailableCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node `{}` not started: {} credential{} unavailable",
            self.node,
            self.failures.len(),
            if self.failures.len() == 1 { "" } else { "s" }
        )?;
        for (i, (id, e)) in self.failures.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{id} [{}] {}", e.kind(), e.message())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnavailableCredentials {}

/// What a running node gets: the credential store, the credentials it declared (already
/// refreshed), and the redactor for what goes back to the model.
#[derive(Clone)]
pub struct NodeContext {
    /// The runtime's store (tools fetch by id).
    pub credential_store: hive_cred_core::CredentialStore,
    node: Arc<str>,
    credentials: Vec<Arc<CredentialObject>>,
    redactor: RedactorHandle,
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.credentials.iter().map(|c| c.id().as_str()).collect();
        f.debug_struct("NodeContext")
            .field("node", &self.node)
            .field("credentials", &ids)
            .finish_non_exhaustive()
    }
}

impl NodeContext {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.node
    }

    /// A declared credential, as fetched (and refreshed) by the pre-step.
    pub fn credential(&self, id: &str) -> Option<&Arc<CredentialObject>> {
        self.credentials.iter().find(|c| c.id().as_str() == id)
    }

    /// Every declared credential, in declared order.
    pub fn credentials(&self) -> &[Arc<CredentialObject>] {
        &self.credentials
    }

    /// The current redactor.
    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.current()
    }

    /// Replaces every secret the runtime has handed out with its marker.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.current().redact(text).into_owned()
    }
}

/// Storage wrapper that shows every credential the store reads or writes to the
/// redactor, so it knows each value handed out, including refreshed ones. Built on
/// [`StorageLayer`]: every other operation (locks and capabilities included) reaches
/// the backend unchanged.
struct ObservedStorage {
    inner: Arc<dyn CredentialStorage>,
    redactor: RedactorHandle,
    canaries: CanaryMonitor,
}

impl fmt::Debug for ObservedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Transparent: show the backend itself.
        fmt::Debug::fmt(&self.inner, f)
    }
}

#[async_trait]
impl StorageLayer for ObservedStorage {
    fn inner(&self) -> &dyn CredentialStorage {
        &*self.inner
    }
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let loaded = self.inner.load(id).await?;
        if let Some(c) = &loaded {
            self.redactor.observe(c);
            self.canaries.observe(c);
        }
        Ok(loaded)
    }
    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        // Observe first: a value must be redactable before anyone can read it back.
        self.redactor.observe(credential);
        self.canaries.observe(credential);
        self.inner.save(credential).await
    }
    fn scoped(&self, principal: &str) -> Option<Arc<dyn CredentialStorage>> {
        // The backend's native per-user view (Vault's per-principal prefix), observed
        // like the rest; without one the store namespaces ids through this layer.
        let view = self.inner.scoped(principal)?;
        Some(Arc::new(ObservedStorage {
            inner: view,
            redactor: self.redactor.clone(),
            canaries: self.canaries.clone(),
        }))
    }
}

/// The credential side of an agent runtime.
///
/// - `credential_store`: tools fetch credentials by id
///   (`runtime.credential_store.get("brave_search").await?.get_key("api_key")`).
/// - [`run_node`](Self::run_node): before a node runs, every credential it declares is
///   fetched concurrently, refreshing those with `auto_refresh` that need it; if any is
///   missing or dead the node is not started and one error lists them all.
/// - [`redactor`](Self::redactor): replaces every secret value the runtime has handed
///   out (current and recently refreshed-away ones), in common encodings, with
///   `[hive:<id>.<key>]` markers, for tool output going to the model and for logs.
/// - [`audit`](Self::audit): every access (time, node, id, key, operation, outcome).
///
/// Cloning is cheap; clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
/// use std::sync::Arc;
/// use hive_cred_core::{CredentialObject, CredentialType, ExposeSecret, MemoryStorage};
/// use hive_cred_runtime::{AgentRuntime, NodeSpec};
///
/// let runtime = AgentRuntime::builder().storage(Arc::new(MemoryStorage::new())).build().await?;
/// let mut brave = CredentialObject::new("brave_search", CredentialType::ApiKey)?;
/// brave.set_key("api_key", "BSA-0123456789", None)?;
/// runtime.credential_store.save(brave).await?;
///
/// let spec = NodeSpec::new("search").credential("brave_search");
/// let for_llm = runtime
///     .run_node(&spec, |ctx| async move {
///         let creds = ctx.credential_store.get("brave_search").await?;
///         let key = creds.get_key("api_key").expect("saved above");
///         // EXPOSE: doc example; a tool would put the key in a request header.
///         let tool_output = format!("called with key {}", key.expose_secret());
///         Ok::<_, hive_cred_core::Error>(ctx.redact(&tool_output))
///     })
///     .await?;
/// assert_eq!(for_llm, "called with key [hive:brave_search.api_key]");
/// assert!(runtime.audit().records().iter().any(|r| r.node.as_deref() == Some("search")));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AgentRuntime {
    /// The cached, auto-refreshing credential store.
    pub credential_store: CredentialStore,
    redactor: RedactorHandle,
    audit: Arc<AuditLog>,
    canaries: CanaryMonitor,
    prestep_timeout: Option<Duration>,
    specs: Arc<SpecCatalogue>,
    accounts: Arc<AccountsConfig>,
    #[cfg(feature = "health")]
    health: Option<crate::health::HealthChecker>,
}

impl fmt::Debug for AgentRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRuntime")
            .field("credential_store", &self.credential_store)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// Builder for [`AgentRuntime`].
#[must_use]
pub struct AgentRuntimeBuilder {
    storage: Option<Arc<dyn CredentialStorage>>,
    /// Providers, policy, TTL, clock and extra hooks go straight to the store's builder;
    /// `build` adds the observed storage, the audit hook and the config's providers.
    store: CredentialStoreBuilder,
    audit: Option<AuditLog>,
    config: Option<RuntimeConfig>,
    env_lookup: Option<EnvLookup>,
    min_secret_len: usize,
    prestep_timeout: Option<Duration>,
    policy: RefreshPolicy,
    lock_options: LockOptions,
    clock: Option<Arc<dyn Clock>>,
    specs: Option<SpecCatalogue>,
    env_fallback: Option<hive_cred_core::EnvStorage>,
    #[cfg(feature = "health")]
    health: Option<crate::health::HealthChecker>,
    #[cfg(feature = "health")]
    no_health: bool,
}

impl Default for AgentRuntimeBuilder {
    fn default() -> Self {
        AgentRuntimeBuilder {
            storage: None,
            store: CredentialStore::builder(),
            audit: None,
            config: None,
            env_lookup: None,
            min_secret_len: DEFAULT_MIN_SECRET_LEN,
            prestep_timeout: None,
            policy: RefreshPolicy::default(),
            lock_options: LockOptions::default(),
            clock: None,
            specs: None,
            env_fallback: None,
            #[cfg(feature = "health")]
            health: None,
            #[cfg(feature = "health")]
            no_health: false,
        }
    }
}

impl fmt::Debug for AgentRuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRuntimeBuilder")
            .field("storage", &self.storage)
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AgentRuntimeBuilder {
    /// The storage (required).
    pub fn storage(mut self, storage: Arc<dyn CredentialStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Registers a refresh provider.
    pub fn provider(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.store = self.store.provider(provider);
        self
    }

    /// The store's refresh policy. Default: [`RefreshPolicy::default`]. The config
    /// file's `[refresh]` values and per-provider windows are put on top of it.
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The cross-process refresh lock's TTL and wait. Default: [`LockOptions::default`].
    /// The config file's `lock_ttl_secs` and `lock_wait_secs` are put on top of it.
    pub fn lock_options(mut self, options: LockOptions) -> Self {
        self.lock_options = options;
        self
    }

    /// The store's cache TTL. Default: 300 s.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.store = self.store.cache_ttl(ttl);
        self
    }

    /// The clock of the store and of the config's providers (token expiries are
    /// computed on it). Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.store = self.store.clock(clock.clone());
        self.clock = Some(clock);
        self
    }

    /// Adds an access hook besides the runtime's own audit log.
    pub fn access_hook(mut self, hook: Arc<dyn AccessHook>) -> Self {
        self.store = self.store.access_hook(hook);
        self
    }

    /// The audit log. Default: [`AuditLog::new`] (in memory and `tracing`), plus the
    /// config's `audit_log` file when one is set.
    pub fn audit_log(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Registers the config's providers (needs the `oauth` feature) and audit file.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// How `{ env = "VAR" }` references in the config are read. Default: the process
    /// environment.
    pub fn env_lookup(mut self, lookup: EnvLookup) -> Self {
        self.env_lookup = Some(lookup);
        self
    }

    /// The shortest value redacted. Default: [`DEFAULT_MIN_SECRET_LEN`].
    pub fn min_secret_len(mut self, len: usize) -> Self {
        self.min_secret_len = len.max(1);
        self
    }

    /// Bounds how long the pre-step may take; credentials not fetched in time count as
    /// unavailable. Default: no bound (providers and backends have their own
    /// timeouts). Needs a Tokio runtime with the time driver.
    pub fn prestep_timeout(mut self, timeout: Duration) -> Self {
        self.prestep_timeout = Some(timeout);
        self
    }

    /// The credential specs preflight and error messages use. Default: the starter
    /// catalogue ([`SpecCatalogue::builtin`]) plus the config's `specs` files.
    pub fn specs(mut self, specs: SpecCatalogue) -> Self {
        self.specs = Some(specs);
        self
    }

    /// Environment variables under the storage: ids the storage does not hold are read
    /// from `env`, with a mapping added for each spec's `env_var` (so
    /// `BRAVE_SEARCH_API_KEY` is `brave_search`'s `api_key`), besides `env`'s own
    /// conventions (`HIVE_CRED_{ID}__{KEY}`, Hive's `{ID}_API_KEY`).
    ///
    /// Stored credentials win: a saved key or a refreshed token is never shadowed by a
    /// variable (delete the stored credential to use the variable). Writes, deletes
    /// and locks go to the storage alone, `list` names both, and per-user views
    /// ([`CredentialStore::for_user`]) do not see the environment. Default: none;
    /// [`AgentRuntime::from_env`] sets it.
    pub fn env_fallback(mut self, env: hive_cred_core::EnvStorage) -> Self {
        self.env_fallback = Some(env);
        self
    }

    /// The health checker preflight uses (feature `health`). Default: one built from
    /// the config's `[health]` table when a config is given, else none.
    #[cfg(feature = "health")]
    pub fn health_checker(mut self, checker: crate::health::HealthChecker) -> Self {
        self.health = Some(checker);
        self
    }

    /// No health checks, even with a config (offline preflight).
    #[cfg(feature = "health")]
    pub fn without_health_checks(mut self) -> Self {
        self.no_health = true;
        self
    }

    /// Builds the runtime: resolves config client secrets (from the storage or the
    /// environment) and builds the providers. `Config` errors name what is wrong.
    pub async fn build(self) -> Result<AgentRuntime> {
        let storage = self.storage.ok_or_else(|| {
            Error::config("AgentRuntime needs a storage: call .storage(...) on the builder")
        })?;
        let redactor = RedactorHandle::new(self.min_secret_len);
        let mut specs = self.specs.unwrap_or_else(SpecCatalogue::builtin);
        let accounts = self
            .config
            .as_ref()
            .map(|c| c.accounts.clone())
            .unwrap_or_default();
        if let Some(config) = &self.config {
            for path in &config.specs {
                specs.add_file(path)?;
            }
        }
        #[cfg(feature = "health")]
        let health = if self.no_health {
            None
        } else {
            self.health.or_else(|| {
                self.config.as_ref().map(|c| {
                    let mut h = crate::health::HealthChecker::new();
                    if let Some(t) = c.health.timeout_secs {
                        h = h.with_timeout(Duration::from_secs(t));
                    }
                    if let Some(t) = c.health.cache_secs {
                        h = h.with_cache_ttl(Duration::from_secs(t));
                    }
                    if let Some(n) = c.health.concurrency {
                        h = h.with_concurrency(n);
                    }
                    h
                })
            })
        };
        let storage: Arc<dyn CredentialStorage> = match self.env_fallback {
            Some(env) => Arc::new(crate::fallback::EnvFallback::new(
                storage,
                specs.env_storage(env)?,
            )),
            None => storage,
        };
        let mut audit = self.audit.unwrap_or_default();
        let mut builder = self.store;
        let (mut policy, mut lock_options) = (self.policy, self.lock_options);
        if let Some(config) = &self.config {
            policy = config.apply_refresh_policy(policy);
            lock_options = config.apply_lock_options(lock_options);
            config.validate()?;
            if let (Some(path), None) = (&config.audit_log, audit.file()) {
                audit = audit.with_json_lines(path)?;
            }
            let lookup: EnvLookup = self
                .env_lookup
                .unwrap_or_else(|| Arc::new(|name: &str| std::env::var(name).ok()));
            for p in
                config_providers(config, &*storage, &lookup, &redactor, self.clock.as_ref()).await?
            {
                builder = builder.provider(p);
            }
        }
        let audit = Arc::new(audit);
        let clock: Arc<dyn Clock> = self
            .clock
            .unwrap_or_else(|| Arc::new(hive_cred_core::SystemClock));
        let canaries = CanaryMonitor::build(Some(audit.clone()), clock);
        let observed: Arc<dyn CredentialStorage> = Arc::new(ObservedStorage {
            inner: storage,
            redactor: redactor.clone(),
            canaries: canaries.clone(),
        });
        let builder = builder
            .storage(observed)
            .refresh_policy(policy)
            .lock_options(lock_options)
            .access_hook(audit.clone())
            .access_hook(Arc::new(canaries.clone()));
        Ok(AgentRuntime {
            credential_store: builder.build()?,
            redactor,
            audit,
            canaries,
            prestep_timeout: self.prestep_timeout,
            specs: Arc::new(specs),
            accounts: Arc::new(accounts),
            #[cfg(feature = "health")]
            health,
        })
    }
}

#[cfg(feature = "oauth")]
async fn config_providers(
    config: &RuntimeConfig,
    storage: &dyn CredentialStorage,
    lookup: &EnvLookup,
    redactor: &RedactorHandle,
    clock: Option<&Arc<dyn Clock>>,
) -> Result<Vec<Arc<dyn CredentialProvider>>> {
    let mut out: Vec<Arc<dyn CredentialProvider>> = Vec::new();
    for p in &config.providers {
        let spec = p.spec()?;
        let secret = match &p.client_secret {
            Some(r) => {
                let s = r
                    .resolve(storage, lookup.as_ref())
                    .await
                    .map_err(|e| e.with_context("provider", &p.provider_id))?;
                redactor.add(&p.provider_id, "client_secret", s.clone());
                Some(s)
            }
            None => None,
        };
        let mut config = spec.into_config(secret)?;
        if config.needs_discovery() {
            // Only an issuer is configured: its metadata names the endpoints.
            config = config.discover().await?;
        }
        let mut provider = hive_cred_oauth::OAuth2Provider::new(config)
            .map_err(|e| e.with_context("provider", &p.provider_id))?;
        if let Some(clock) = clock {
            provider = provider.with_clock(clock.clone());
        }
        out.push(Arc::new(provider));
    }
    Ok(out)
}

#[cfg(not(feature = "oauth"))]
async fn config_providers(
    config: &RuntimeConfig,
    _storage: &dyn CredentialStorage,
    _lookup: &EnvLookup,
    _redactor: &RedactorHandle,
    _clock: Option<&Arc<dyn Clock>>,
) -> Result<Vec<Arc<dyn CredentialProvider>>> {
    match config.providers.first() {
        None => Ok(Vec::new()),
        Some(p) => Err(Error::config(
            "the config registers OAuth2 providers but hive-cred-runtime was built without the `oauth` feature; enable it (features = [\"oauth\"])",
        )
        .with_context("provider", &p.provider_id)),
    }
}

impl AgentRuntime {
    /// A builder.
    pub fn builder() -> AgentRuntimeBuilder {
        AgentRuntimeBuilder::default()
    }

    /// The name of the storage backend (`"local"`, `"vault"`, `"memory"`, ...).
    pub fn backend_name(&self) -> &'static str {
        self.credential_store.storage().backend_name()
    }

    /// The redactor over every secret handed out so far.
    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.current()
    }

    /// The live redactor handle (for writers that must follow refreshes).
    pub fn redactor_handle(&self) -> &RedactorHandle {
        &self.redactor
    }

    /// Replaces every secret handed out so far with its marker.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.current().redact(text).into_owned()
    }

    /// Wraps a `tracing_subscriber` writer so log output is redacted.
    pub fn redacting_make_writer<M>(&self, make: M) -> RedactingMakeWriter<M> {
        RedactingMakeWriter::new(make, self.redactor.clone())
    }

    /// The credential specs (starter catalogue plus the user's files).
    pub fn specs(&self) -> &SpecCatalogue {
        &self.specs
    }

    /// The account defaults and pins of the config file.
    pub fn accounts_config(&self) -> &AccountsConfig {
        &self.accounts
    }

    /// The health checker, when one is set (feature `health`).
    #[cfg(feature = "health")]
    pub fn health_checker(&self) -> Option<&crate::health::HealthChecker> {
        self.health.as_ref()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The audit records in memory, oldest first.
    pub fn audit_trail(&self) -> Vec<AuditRecord> {
        self.audit.records()
    }

    /// The shared audit log (for the injecting HTTP client).
    #[cfg_attr(
        not(feature = "http"),
        allow(dead_code, reason = "only the injecting client shares the log")
    )]
    pub(crate) fn audit_shared(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    /// The canary monitor: alerts on every use of a credential tagged
    /// [`CANARY_TAG`](crate::CANARY_TAG).
    pub fn canaries(&self) -> &CanaryMonitor {
        &self.canaries
    }

    /// Loads every stored credential once (without refreshing, and without counting as
    /// a use), so that the canary monitor and the redactor know every canary and its
    /// value before anything reads it. Returns the number of canaries. Call it at start
    /// when canaries are seeded; on a large Vault it costs one read per credential.
    pub async fn arm_canaries(&self) -> Result<usize> {
        let storage = self.credential_store.storage();
        for id in storage.list().await? {
            // The observed storage teaches the monitor and the redactor.
            storage.load(&id).await?;
        }
        Ok(self.canaries.canary_ids().len())
    }

    /// Call before the agent process exits: saves the refreshed credentials that are
    /// still only in memory because storage failed after their refresh (waiting at most
    /// `timeout`, see [`CredentialStore::settle`]), then flushes the audit log.
    ///
    /// # Errors
    /// `Unavailable` naming the credentials whose refreshed tokens could not be saved
    /// in time (their grants may need re-authorisation if the process exits now), or
    /// the audit log's write error.
    pub async fn shutdown(&self, timeout: Duration) -> Result<()> {
        let left = self.credential_store.settle(timeout).await;
        let audit = self.audit.clone();
        let flushed = tokio::task::spawn_blocking(move || audit.flush())
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, format!("audit flush task: {e}")))?;
        if let Some(first) = left.first() {
            let ids: Vec<&str> = left.iter().map(|u| u.id.as_str()).collect();
            return Err(Error::unavailable(
                "refreshed credentials could not be saved before shutdown; their new tokens are lost when the process exits",
            )
            .with_context("ids", ids.join(","))
            .with_context("last_error", first.error.kind()));
        }
        flushed
    }

    /// Runs the pre-step for `spec` and, if every declared credential is available,
    /// the node body, with `spec.name` as the current node of audit records.
    ///
    /// The pre-step fetches the declared credentials concurrently through
    /// [`CredentialStore::get`], which refreshes those with `auto_refresh` that are
    /// expired or inside the refresh window. A credential that is missing, whose
    /// refresh failed past expiry, or that has an expired key and cannot be refreshed
    /// makes the node fail **before it starts** with one `Error` listing each of them
    /// (details: [`UnavailableCredentials::from_error`]). A failed refresh inside the
    /// advisory window is not a failure: the still-valid credential is used.
    pub async fn run_node<F, Fut, T, E>(
        &self,
        spec: &NodeSpec,
        body: F,
    ) -> std::result::Result<T, E>
    where
        F: FnOnce(NodeContext) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: From<Error>,
    {
        let node: Arc<str> = spec.name.as_str().into();
        let span = tracing::info_span!("hive_cred.node", node = %spec.name);
        with_node(node.clone(), async move {
            let ctx = self.prestep(spec, node).await?;
            body(ctx).await
        })
        .instrument(span)
        .await
    }

    /// The pre-step alone, for frameworks that run node bodies themselves: returns the
    /// node's context, or the error [`run_node`](Self::run_node) would fail with. Audit
    /// records of the pre-step carry the node's name.
    pub async fn prepare_node(&self, spec: &NodeSpec) -> Result<NodeContext> {
        let node: Arc<str> = spec.name.as_str().into();
        with_node(node.clone(), self.prestep(spec, node)).await
    }

    async fn prestep(&self, spec: &NodeSpec, node: Arc<str>) -> Result<NodeContext> {
        let pinned: Vec<String>;
        let mut ids: Vec<&str> = Vec::with_capacity(spec.credentials.len());
        let refs: &[String] = if spec.accounts.is_empty()
            && self.accounts.default.is_empty()
            && self.accounts.pins.is_empty()
        {
            &spec.credentials
        } else {
            pinned = spec
                .credentials
                .iter()
                .map(|id| self.pinned_reference(spec, id))
                .collect();
            &pinned
        };
        for id in refs {
            if !ids.contains(&id.as_str()) {
                ids.push(id.as_str());
            }
        }
        let store = &self.credential_store;
        let results: Vec<Option<Result<Arc<CredentialObject>>>> = match self.prestep_timeout {
            None => {
                futures::future::join_all(
                    ids.iter()
                        .map(|id| async move { Some(store.get(id).await) }),
                )
                .await
            }
            Some(limit) => {
                let mut results = vec![None; ids.len()];
                let mut pending: FuturesUnordered<_> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| async move { (i, store.get(id).await) })
                    .collect();
                let deadline = tokio::time::Instant::now() + limit;
                while let Ok(Some((i, r))) = tokio::time::timeout_at(deadline, pending.next()).await
                {
                    results[i] = Some(r);
                }
                results
            }
        };
        let now = self.credential_store.clock().now();
        let mut credentials = Vec::with_capacity(ids.len());
        let mut failures = Vec::new();
        for (id, result) in ids.iter().zip(results) {
            match result {
                Some(Ok(c)) if c.is_expired_at(now) => failures.push((
                    id.to_string(),
                    Error::new(
                        ErrorKind::Expired,
                        if c.auto_refresh() {
                            "a key has expired and refresh did not renew it"
                        } else {
                            "a key has expired and the credential has no auto_refresh; store a new value"
                        },
                    )
                    .with_context("id", id),
                )),
                Some(Ok(c)) => credentials.push(c),
                Some(Err(e)) if e.kind() == ErrorKind::NotFound && !id.contains(['/', '.']) => {
                    // A provider without a bare credential: its only account, or the
                    // choice a person must make.
                    match self.credential_store.select_account(id, None).await {
                        Ok(account) => match store.get(account.as_str()).await {
                            Ok(c) => credentials.push(c),
                            Err(e) => failures.push((id.to_string(), self.with_spec_action(id, e, None))),
                        },
                        Err(e) => failures.push((id.to_string(), self.with_spec_action(id, e, None))),
                    }
                }
                Some(Err(e)) => failures.push((id.to_string(), self.with_spec_action(id, e, None))),
                None => failures.push((
                    id.to_string(),
                    Error::unavailable("fetching the credential did not finish within the pre-step timeout")
                        .with_context("id", id),
                )),
            }
        }
        if !failures.is_empty() {
            let err = UnavailableCredentials {
                node: spec.name.clone(),
                failures,
            }
            .into_error();
            tracing::warn!(target: "hive_cred::runtime", node = %spec.name, kind = %err.kind(), credentials = err.context_value("credentials"), "node not started: credentials unavailable");
            return Err(err);
        }
        Ok(NodeContext {
            credential_store: self.credential_store.clone(),
            node,
            credentials,
            redactor: self.redactor.clone(),
        })
    }
}
