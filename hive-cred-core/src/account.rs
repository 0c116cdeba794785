//! Accounts: several credentials of one provider told apart by an alias.
//!
//! A credential may carry a [`CredentialAccount`]: the provider it is an account of
//! (`github`), its alias (`work`, `personal`; [`DEFAULT_ALIAS`] when none), who it is
//! ([`CredentialIdentity`]) and whether it last worked ([`AccountStatus`]).
//!
//! # Addressing
//! Wherever an id is accepted (`get`, `get_key`, `{{..}}` templates), `provider/alias`
//! names an account. It maps to a credential id by one rule ([`account_id`]):
//! `provider/default` is the bare `provider`, any other alias is `provider.alias`. So a
//! store holding `github` and `github.work` answers `github/default` and `github/work`,
//! and a model that writes `github/work` gets the same credential as `github.work`.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{self, CredentialId};

/// The alias of an account that was given none.
pub const DEFAULT_ALIAS: &str = "default";

/// Who an account is. Every field is optional; [`label`](Self::label) is the first
/// present of email, username, workspace, account id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CredentialIdentity {
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A user name or login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A workspace, team or organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The provider's id of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

impl CredentialIdentity {
    /// An identity with no field set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the email.
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Sets the user name.
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the workspace.
    #[must_use]
    pub fn with_workspace(mut self, workspace: impl Into<String>) -> Self {
        self.workspace = Some(workspace.into());
        self
    }

    /// Sets the account id.
    #[must_use]
    pub fn with_account_id(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = Some(account_id.into());
        self
    }

    /// The first present of email, username, workspace, account id.
    ///
    /// ```
    /// use hive_cred_core::CredentialIdentity;
    /// let who = CredentialIdentity::new().with_workspace("acme").with_username("octo");
    /// assert_eq!(who.label(), Some("octo"));
    /// assert_eq!(CredentialIdentity::new().label(), None);
    /// ```
    pub fn label(&self) -> Option<&str> {
        [
            &self.email,
            &self.username,
            &self.workspace,
            &self.account_id,
        ]
        .into_iter()
        .find_map(|f| f.as_deref())
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.label().is_none()
    }
}

/// Whether an account worked when it was last checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AccountStatus {
    /// Its last check (health check, refresh) succeeded.
    Active,
    /// Its last check failed; the credential is kept, a person should look at it.
    Failed,
    /// Never checked.
    #[default]
    Unknown,
}

impl AccountStatus {
    /// `"active"`, `"failed"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Failed => "failed",
            AccountStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The account a credential belongs to: provider, alias, identity, status. Not secret;
/// persisted with the credential by every backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CredentialAccount {
    /// The provider (service) name, e.g. `github`.
    pub provider: String,
    /// The alias, e.g. `work`; [`DEFAULT_ALIAS`] when none was given.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// Who the account is.
    #[serde(default, skip_serializing_if = "CredentialIdentity::is_empty")]
    pub identity: CredentialIdentity,
    /// Whether it worked when last checked.
    #[serde(default)]
    pub status: AccountStatus,
    /// When it was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked: Option<DateTime<Utc>>,
}

fn default_alias() -> String {
    DEFAULT_ALIAS.to_owned()
}

impl CredentialAccount {
    /// An account of `provider` under `alias` (`None` or empty: [`DEFAULT_ALIAS`]).
    /// Both must be valid id parts: `[A-Za-z0-9_-]`, 1 to 64 characters.
    pub fn new(provider: &str, alias: Option<&str>) -> Result<Self> {
        let alias = alias.filter(|a| !a.is_empty()).unwrap_or(DEFAULT_ALIAS);
        validate_part("provider", provider)?;
        validate_part("alias", alias)?;
        Ok(CredentialAccount {
            provider: provider.to_owned(),
            alias: alias.to_owned(),
            identity: CredentialIdentity::default(),
            status: AccountStatus::Unknown,
            last_checked: None,
        })
    }

    /// Sets the identity.
    #[must_use]
    pub fn with_identity(mut self, identity: CredentialIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// Records a check at `at` with its result.
    pub fn record_check(&mut self, status: AccountStatus, at: DateTime<Utc>) {
        self.status = status;
        self.last_checked = Some(at);
    }

    /// `provider/alias`.
    pub fn address(&self) -> String {
        format!("{}/{}", self.provider, self.alias)
    }
}

/// One account as [`CredentialStore::list_accounts`](crate::CredentialStore::list_accounts)
/// shows it: never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AccountInfo {
    /// The credential id holding the account.
    pub id: CredentialId,
    /// The account metadata.
    #[serde(flatten)]
    pub account: CredentialAccount,
}

impl AccountInfo {
    /// Account info for a credential id.
    pub fn new(id: CredentialId, account: CredentialAccount) -> Self {
        AccountInfo { id, account }
    }

    /// The credential id.
    pub fn id(&self) -> &CredentialId {
        &self.id
    }

    /// The provider.
    pub fn provider(&self) -> &str {
        &self.account.provider
    }

    /// The alias.
    pub fn alias(&self) -> &str {
        &self.account.alias
    }

    /// Who the account is.
    pub fn identity(&self) -> &CredentialIdentity {
        &self.account.identity
    }

    /// Whether it worked when last checked.
    pub fn status(&self) -> AccountStatus {
        self.account.status
    }

    /// When it was last checked.
    pub fn last_checked(&self) -> Option<DateTime<Utc>> {
        self.account.last_checked
    }
}

/// Whether `s` is a valid provider or alias: 1 to 64 of `A-Z a-z 0-9 _ -`.
fn part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `reference` is a valid `provider/alias` address, without building its id.
pub(crate) fn is_account_address(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((provider, alias)) => {
            part_ok(provider)
                && part_ok(alias)
                && (alias == DEFAULT_ALIAS || provider.len() + 1 + alias.len() <= id::MAX_ID_LEN)
        }
        None => false,
    }
}

fn validate_part(what: &str, s: &str) -> Result<()> {
    let ok = part_ok(s);
    if ok {
        Ok(())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(Error::invalid_input(format!(
            "invalid account {what} {shown:?}: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// The credential id of account `alias` of `provider`: `provider` for
/// [`DEFAULT_ALIAS`], else `provider.alias`.
///
/// ```
/// use hive_cred_core::account_id;
/// assert_eq!(account_id("github", "default")?.as_str(), "github");
/// assert_eq!(account_id("github", "work")?.as_str(), "github.work");
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
pub fn account_id(provider: &str, alias: &str) -> Result<CredentialId> {
    validate_part("provider", provider)?;
    validate_part("alias", alias)?;
    if alias == DEFAULT_ALIAS {
        CredentialId::new(provider)
    } else {
        CredentialId::new(&format!("{provider}.{alias}"))
    }
}

/// The credential id `reference` names: itself, or for `provider/alias` the id of
/// [`account_id`]. Invalid input is `InvalidInput`.
pub(crate) fn canonical_id(reference: &str) -> Result<Cow<'_, str>> {
    match reference.split_once('/') {
        None => Ok(Cow::Borrowed(reference)),
        // Fast path (every call of get/get_key/resolve by `provider/alias`): valid parts
        // make a valid id, so build it once; only a failure pays for the message.
        Some((provider, DEFAULT_ALIAS)) if part_ok(provider) => Ok(Cow::Borrowed(provider)),
        Some((provider, alias))
            if part_ok(provider)
                && part_ok(alias)
                && provider.len() + 1 + alias.len() <= id::MAX_ID_LEN =>
        {
            let mut id = String::with_capacity(provider.len() + 1 + alias.len());
            id.push_str(provider);
            id.push('.');
            id.push_str(alias);
            Ok(Cow::Owned(id))
        }
        Some((provider, alias)) => {
            let id = account_id(provider, alias).map_err(|e| {
                Error::invalid_input(format!(
                    "{}; an account is written provider/alias",
                    e.message()
                ))
            })?;
            Ok(Cow::Owned(id.as_str().to_owned()))
        }
    }
}

/// Splits an id into (provider, alias) the way [`account_id`] builds it, for
/// credentials stored without account metadata: `github.work` is (`github`, `work`),
/// `github` is (`github`, `default`).
pub fn split_account_id(id: &str) -> (&str, &str) {
    match id.split_once('.') {
        Some((p, a)) if !a.contains('.') && id::validate(id).is_ok() => (p, a),
        _ => (id, DEFAULT_ALIAS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation-light paths agree with `account_id` on every shape, including the
    /// id length limit (64 + 1 + 63 fits in 128, 64 + 1 + 64 does not).
    #[test]
    fn fast_paths_agree_with_account_id() {
        let (p64, a63, a64) = ("p".repeat(64), "a".repeat(63), "a".repeat(64));
        let long_ok = format!("{p64}/{a63}");
        let too_long = format!("{p64}/{a64}");
        let default_long = format!("{p64}/default");
        for reference in [
            "github/work",
            "github/default",
            "git-hub_2/Work-1",
            long_ok.as_str(),
            too_long.as_str(),
            default_long.as_str(),
            "github/",
            "/work",
            "a/b/c",
            "git.hub/work",
            "github/wo rk",
            "github/w.k",
        ] {
            let (provider, alias) = reference.split_once('/').unwrap();
            let slow = account_id(provider, alias);
            let fast = canonical_id(reference);
            assert_eq!(fast.is_ok(), slow.is_ok(), "{reference}");
            assert_eq!(is_account_address(reference), slow.is_ok(), "{reference}");
            if let (Ok(fast), Ok(slow)) = (fast, slow) {
                assert_eq!(fast, slow.as_str(), "{reference}");
            }
        }
        assert!(!is_account_address("github"));
    }

    #[test]
    fn addresses_map_to_ids() {
        assert_eq!(canonical_id("github/work").unwrap(), "github.work");
        assert_eq!(canonical_id("github/default").unwrap(), "github");
        assert_eq!(canonical_id("github").unwrap(), "github");
        for bad in ["github/", "/work", "a/b/c", "gh/wo.rk", "../x/y"] {
            assert!(canonical_id(bad).is_err(), "{bad}");
        }
        assert_eq!(split_account_id("github.work"), ("github", "work"));
        assert_eq!(split_account_id("github"), ("github", "default"));
        assert_eq!(split_account_id("a.b.c"), ("a.b.c", "default"));
    }

    #[test]
    fn account_serde_defaults_and_status() {
        let a: CredentialAccount = serde_json::from_str(r#"{"provider":"slack"}"#).unwrap();
        assert_eq!(a.alias, DEFAULT_ALIAS);
        assert_eq!(a.status, AccountStatus::Unknown);
        let mut b = CredentialAccount::new("slack", Some("work"))
            .unwrap()
            .with_identity(CredentialIdentity::new().with_email("a@b.c"));
        b.record_check(AccountStatus::Failed, Utc::now());
        let back: CredentialAccount =
            serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.address(), "slack/work");
        assert!(CredentialAccount::new("sl ack", None).is_err());
    }
}
