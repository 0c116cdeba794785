//! [`AgentRuntime::preflight`]: at agent load, what every declared tool needs and
//! whether it has it (the Python Hive's `validate_agent_credentials` and
//! `compute_unavailable_tools`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hive_cred_core::{ActionRequired, Error, ErrorKind, Result};
use serde::Serialize;

use crate::runtime::{AgentRuntime, NodeSpec};
use crate::spec::CredentialSpec;

/// Where one required credential stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CredentialState {
    /// Stored (or in the environment), not expired, and healthy when checked.
    Available,
    /// Not stored and not in the environment.
    Missing,
    /// Expired, and no refresh renewed it: a person must authorise again or store a
    /// new value.
    ExpiredNotRefreshable,
    /// Its health check was rejected by the service.
    FailingHealthCheck,
    /// Its provider has several accounts and nothing chose one.
    NeedsAccountChoice,
    /// It could not be checked now (backend or service temporarily down).
    Unavailable,
}

impl CredentialState {
    /// `available`, `missing`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialState::Available => "available",
            CredentialState::Missing => "missing",
            CredentialState::ExpiredNotRefreshable => "expired_not_refreshable",
            CredentialState::FailingHealthCheck => "failing_health_check",
            CredentialState::NeedsAccountChoice => "needs_account_choice",
            CredentialState::Unavailable => "unavailable",
        }
    }
}

/// One required credential as preflight found it. Holds no value.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CredentialCheck {
    /// The credential as the nodes name it (`github`, `github/work`).
    pub id: String,
    /// The stored credential id it resolved to, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_id: Option<String>,
    /// Where it stands.
    pub state: CredentialState,
    /// The nodes (tools) that need it.
    pub needed_by: Vec<String>,
    /// What a person must do, when something must be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRequired>,
    /// The health check, when one ran.
    #[cfg(feature = "health")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthReport>,
    /// The error kind behind a non-available state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// The result of [`AgentRuntime::preflight`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Preflight {
    /// Every required credential, by id.
    pub credentials: Vec<CredentialCheck>,
    /// Nodes (tools) to drop: some requirement of theirs has no available credential.
    pub dropped_tools: Vec<String>,
    /// For a person: what to set and where. Empty when everything is available.
    pub message: String,
}

impl Preflight {
    /// Whether every required credential is available.
    pub fn is_ok(&self) -> bool {
        self.dropped_tools.is_empty()
            && self
                .credentials
                .iter()
                .all(|c| c.state == CredentialState::Available)
    }

    /// The check of credential `id`.
    pub fn credential(&self, id: &str) -> Option<&CredentialCheck> {
        self.credentials.iter().find(|c| c.id == id)
    }
}

/// A node's requirements: groups of credential references, any one of a group enough.
fn requirements(runtime: &AgentRuntime, node: &NodeSpec) -> Vec<Vec<String>> {
    let specs = runtime.specs();
    let mut groups: Vec<Vec<String>> = Vec::new();
    fn push(groups: &mut Vec<Vec<String>>, mut group: Vec<String>) {
        group.dedup();
        if !groups.iter().any(|g| g == &group) {
            groups.push(group);
        }
    }
    let with_alternatives = |id: &str| {
        let mut g = vec![id.to_owned()];
        if let Some(spec) = specs.get(id) {
            g.extend(spec.alternatives.iter().cloned());
        }
        g
    };
    for id in &node.credentials {
        push(&mut groups, with_alternatives(id));
    }
    for group in &node.alternatives {
        push(&mut groups, group.clone());
    }
    let by_tool = specs.for_tool(&node.name);
    let by_kind = node
        .kind
        .as_deref()
        .into_iter()
        .flat_map(|k| specs.for_kind(k));
    for spec in by_tool.chain(by_kind) {
        // A spec already covered through an explicit group is not added again.
        if !groups.iter().any(|g| g.contains(&spec.id)) {
            push(&mut groups, with_alternatives(&spec.id));
        }
    }
    groups
}

impl AgentRuntime {
    /// Checks, at agent load, every credential the given nodes need: declared on the
    /// node ([`NodeSpec::credential`], [`NodeSpec::any_of`]), or named by a credential
    /// spec for the node's name (`tools`) or kind (`node_kinds`), with the spec's
    /// alternatives. Each credential is checked once however many nodes need it:
    /// account choice (node pin, config pin, config default, the `default` account, the
    /// only account), presence, expiry after refresh, and (feature `health`, when a
    /// checker is set) its health check, cached.
    ///
    /// Returns per credential its [`CredentialState`] and [`ActionRequired`], the nodes
    /// to drop (one of their requirement groups has no available member), and a
    /// message for a person. Errors only when storage cannot be listed.
    pub async fn preflight(&self, nodes: &[NodeSpec]) -> Result<Preflight> {
        // (reference as the node resolves it) -> check
        let mut checks: BTreeMap<String, CredentialCheck> = BTreeMap::new();
        let mut dropped = Vec::new();
        for node in nodes {
            let mut node_ok = true;
            for group in requirements(self, node) {
                let mut any = false;
                for id in &group {
                    let reference = self.pinned_reference(node, id);
                    if !checks.contains_key(&reference) {
                        let check = self.check_credential(&reference).await;
                        checks.insert(reference.clone(), check);
                    }
                    let check = checks.get_mut(&reference).expect("inserted above");
                    if !check.needed_by.contains(&node.name) {
                        check.needed_by.push(node.name.clone());
                    }
                    any |= check.state == CredentialState::Available;
                }
                node_ok &= any;
            }
            if !node_ok && !dropped.contains(&node.name) {
                dropped.push(node.name.clone());
            }
        }
        let credentials: Vec<CredentialCheck> = checks.into_values().collect();
        let message = message(&credentials, &dropped);
        Ok(Preflight {
            credentials,
            dropped_tools: dropped,
            message,
        })
    }

    /// `id`, or `id/alias` when the node or the config pins an account of provider `id`.
    pub(crate) fn pinned_reference(&self, node: &NodeSpec, id: &str) -> String {
        if id.contains('/') || id.contains('.') {
            return id.to_owned();
        }
        let alias = node
            .accounts
            .get(id)
            .map(String::as_str)
            .or_else(|| self.accounts_config().alias_for(&node.name, id));
        match alias {
            Some(alias) => format!("{id}/{}", alias.rsplit('/').next().unwrap_or(alias)),
            None => id.to_owned(),
        }
    }

    async fn check_credential(&self, reference: &str) -> CredentialCheck {
        let spec = self.specs().get(reference).cloned();
        let mut check = CredentialCheck {
            id: reference.to_owned(),
            resolved_id: None,
            state: CredentialState::Available,
            needed_by: Vec::new(),
            action: None,
            #[cfg(feature = "health")]
            health: None,
            error: None,
        };
        let store = &self.credential_store;
        let resolved = match self.resolve_reference(reference).await {
            Ok(id) => id,
            Err(e) => return self.failed(check, &e, spec.as_ref()),
        };
        check.resolved_id = Some(resolved.clone());
        let credential = match store.get(&resolved).await {
            Ok(c) => c,
            Err(e) => return self.failed(check, &e, spec.as_ref()),
        };
        if let Some(spec) = &spec {
            let missing: Vec<&str> = spec
                .required_keys
                .iter()
                .map(String::as_str)
                .filter(|k| !credential.has_key(k))
                .collect();
            if !missing.is_empty() {
                let e = Error::key_not_found(&resolved, missing.join(","));
                return self.failed(check, &e, Some(spec));
            }
        }
        if credential.is_expired_at(store.clock().now()) {
            let e = Error::new(
                ErrorKind::Expired,
                "a key has expired and refresh did not renew it",
            )
            .with_context("id", &resolved);
            return self.failed(check, &e, spec.as_ref());
        }
        #[cfg(feature = "health")]
        if let (Some(checker), Some(spec)) = (self.health_checker(), &spec) {
            match checker.check_loaded(store, &credential, spec).await {
                Ok(Some(report)) => {
                    match report.status {
                        crate::health::HealthStatus::Rejected => {
                            check.state = CredentialState::FailingHealthCheck;
                            check.action =
                                Some(expired_action(&resolved, credential.account(), spec));
                        }
                        crate::health::HealthStatus::Healthy => {}
                        _ => check.state = CredentialState::Unavailable,
                    }
                    check.health = Some(report);
                }
                Ok(None) => {}
                Err(e) => return self.failed(check, &e, Some(spec)),
            }
        }
        check
    }

    /// The stored id a reference resolves to: explicit ids and addresses as they are;
    /// a bare provider through [`select_account`](hive_cred_core::CredentialStore::select_account)
    /// when no credential has its id.
    pub(crate) async fn resolve_reference(&self, reference: &str) -> Result<String> {
        let store = &self.credential_store;
        if reference.contains('/') || reference.contains('.') {
            return Ok(reference.to_owned());
        }
        if store
            .storage()
            .exists(&hive_cred_core::CredentialId::new(reference)?)
            .await?
        {
            return Ok(reference.to_owned());
        }
        match store.select_account(reference, None).await {
            Ok(id) => Ok(id.to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(reference.to_owned()),
            Err(e) => Err(e),
        }
    }

    fn failed(
        &self,
        mut check: CredentialCheck,
        e: &Error,
        spec: Option<&CredentialSpec>,
    ) -> CredentialCheck {
        let e = self.with_spec_action(&check.id, e.clone(), spec);
        check.state = match e.kind() {
            ErrorKind::NotFound | ErrorKind::KeyNotFound | ErrorKind::AuthorizationRequired => {
                CredentialState::Missing
            }
            ErrorKind::Expired | ErrorKind::RefreshRejected => {
                CredentialState::ExpiredNotRefreshable
            }
            ErrorKind::AccountSelectionRequired => CredentialState::NeedsAccountChoice,
            _ => CredentialState::Unavailable,
        };
        check.error = Some(e.kind().as_str());
        check.action = e.action_required().cloned();
        check
    }

    /// Completes an error's [`ActionRequired`] with the spec: env var and help URL,
    /// and `AuthorizationRequired` for a missing credential connected through OAuth.
    pub(crate) fn with_spec_action(
        &self,
        id: &str,
        e: Error,
        spec: Option<&CredentialSpec>,
    ) -> Error {
        let spec = match spec.or_else(|| self.specs().get(id)) {
            Some(s) => s,
            None => return e,
        };
        let (provider, alias) = hive_cred_core::split_account_id(id);
        let (provider, alias) = match id.split_once('/') {
            Some((p, a)) => (p, a),
            None => (provider, alias),
        };
        let action = match (e.kind(), e.action_required()) {
            (ErrorKind::NotFound | ErrorKind::KeyNotFound, _)
                if spec.credential_type == hive_cred_core::CredentialType::OAuth2 =>
            {
                let connect = spec.oauth_provider.as_deref().unwrap_or(provider);
                ActionRequired::AuthorizationRequired {
                    id: id.to_owned(),
                    provider: connect.to_owned(),
                    how_to_connect: format!("run `hive-cred connect {connect}`"),
                }
            }
            (ErrorKind::NotFound | ErrorKind::KeyNotFound, _) => {
                ActionRequired::CredentialMissing {
                    id: id.to_owned(),
                    env_var: Some(spec.env_var_name()),
                    help_url: spec.help_url.clone(),
                }
            }
            (ErrorKind::Expired | ErrorKind::RefreshRejected, _) => {
                ActionRequired::CredentialExpired {
                    id: id.to_owned(),
                    provider: Some(provider.to_owned()),
                    alias: Some(alias.to_owned()),
                    help_url: spec.help_url.clone(),
                }
            }
            (_, Some(a)) => a.clone(),
            _ => return e,
        };
        e.with_action(action)
    }
}

#[cfg(feature = "health")]
fn expired_action(
    id: &str,
    account: Option<&hive_cred_core::CredentialAccount>,
    spec: &CredentialSpec,
) -> ActionRequired {
    let (p, a) = hive_cred_core::split_account_id(id);
    ActionRequired::CredentialExpired {
        id: id.to_owned(),
        provider: Some(account.map_or(p, |x| x.provider.as_str()).to_owned()),
        alias: Some(account.map_or(a, |x| x.alias.as_str()).to_owned()),
        help_url: spec.help_url.clone(),
    }
}

fn message(credentials: &[CredentialCheck], dropped: &[String]) -> String {
    let mut out = String::new();
    for c in credentials {
        if c.state == CredentialState::Available {
            continue;
        }
        let what = match &c.action {
            Some(a) => a.message(),
            None => format!(
                "credential `{}` is {}",
                c.id,
                c.state.as_str().replace('_', " ")
            ),
        };
        let _ = writeln!(out, "- {what} [needed by: {}]", c.needed_by.join(", "));
    }
    if !dropped.is_empty() {
        let _ = writeln!(
            out,
            "Tools that will be unavailable: {}",
            dropped.join(", ")
        );
    }
    out
}
