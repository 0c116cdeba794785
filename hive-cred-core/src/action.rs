//! [`ActionRequired`]: what a person must do for a failed credential lookup to succeed.
//!
//! Attached to an [`Error`](crate::Error) (see [`Error::action_required`](crate::Error::action_required)),
//! it tells an agent, in a form it can hand to its model as a tool result, what to ask
//! the person for instead of failing later with a 401. It serializes (serde) to a JSON
//! object tagged by `"action"`; it holds ids, names and URLs, never a secret.
//!
//! ```
//! use hive_cred_core::{ActionRequired, Error, ErrorKind};
//!
//! let err = Error::not_found("brave_search").with_action(ActionRequired::CredentialMissing {
//!     id: "brave_search".into(),
//!     env_var: Some("BRAVE_SEARCH_API_KEY".into()),
//!     help_url: Some("https://brave.com/search/api/".into()),
//! });
//! let action = err.action_required().expect("attached above");
//! assert!(action.message().contains("BRAVE_SEARCH_API_KEY"));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// One account offered by [`ActionRequired::AccountSelectionRequired`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AccountChoice {
    /// The alias to answer with (`provider/alias`).
    pub alias: String,
    /// Who the account is (its identity label), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl AccountChoice {
    /// A choice.
    pub fn new(alias: impl Into<String>, identity: Option<String>) -> Self {
        AccountChoice {
            alias: alias.into(),
            identity,
        }
    }
}

/// What a person must do before a credential can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionRequired {
    /// No credential is stored or set in the environment.
    CredentialMissing {
        /// The credential id.
        id: String,
        /// The environment variable that would provide it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env_var: Option<String>,
        /// Where to obtain it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        help_url: Option<String>,
    },
    /// The credential expired and could not be refreshed: it must be obtained or
    /// authorised again.
    CredentialExpired {
        /// The credential id.
        id: String,
        /// The provider (service) of the account, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        /// The account alias, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
        /// Where to obtain a new one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        help_url: Option<String>,
    },
    /// The credential comes from an authorisation flow (OAuth) the person has not run.
    AuthorizationRequired {
        /// The credential id.
        id: String,
        /// The provider to connect.
        provider: String,
        /// How to connect it (a command or a URL).
        how_to_connect: String,
    },
    /// The provider has several accounts and nothing chose one.
    AccountSelectionRequired {
        /// The provider.
        provider: String,
        /// The accounts to choose from.
        accounts: Vec<AccountChoice>,
    },
}

impl ActionRequired {
    /// The stable tag (`"credential_missing"`, ...), as serialized in `"action"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActionRequired::CredentialMissing { .. } => "credential_missing",
            ActionRequired::CredentialExpired { .. } => "credential_expired",
            ActionRequired::AuthorizationRequired { .. } => "authorization_required",
            ActionRequired::AccountSelectionRequired { .. } => "account_selection_required",
        }
    }

    /// A sentence for a person (or a model to relay) saying what to do.
    pub fn message(&self) -> String {
        let help = |url: &Option<String>| {
            url.as_deref()
                .map(|u| format!(" (get one at {u})"))
                .unwrap_or_default()
        };
        match self {
            ActionRequired::CredentialMissing {
                id,
                env_var,
                help_url,
            } => {
                let how = match env_var {
                    Some(var) => format!("set {var} or run `hive-cred set {id} api_key`"),
                    None => format!("run `hive-cred set {id} api_key`"),
                };
                format!("credential `{id}` is missing: {how}{}", help(help_url))
            }
            ActionRequired::CredentialExpired {
                id,
                provider,
                alias,
                help_url,
            } => {
                let account = match (provider, alias) {
                    (Some(p), Some(a)) => format!(" (account {p}/{a})"),
                    _ => String::new(),
                };
                format!(
                    "credential `{id}`{account} has expired and could not be refreshed: authorise again or store a new value{}",
                    help(help_url)
                )
            }
            ActionRequired::AuthorizationRequired {
                id,
                provider,
                how_to_connect,
            } => format!("credential `{id}` needs authorisation with {provider}: {how_to_connect}"),
            ActionRequired::AccountSelectionRequired { provider, accounts } => {
                let list: Vec<String> = accounts
                    .iter()
                    .map(|a| match &a.identity {
                        Some(who) => format!("{provider}/{} ({who})", a.alias),
                        None => format!("{provider}/{}", a.alias),
                    })
                    .collect();
                format!(
                    "{provider} has several accounts; choose one of: {}",
                    list.join(", ")
                )
            }
        }
    }
}

impl fmt::Display for ActionRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_tagged_without_empty_fields() {
        let a = ActionRequired::AccountSelectionRequired {
            provider: "github".into(),
            accounts: vec![
                AccountChoice::new("work", Some("octo@work.example".into())),
                AccountChoice::new("personal", None),
            ],
        };
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["action"], "account_selection_required");
        assert_eq!(
            json["accounts"][1],
            serde_json::json!({"alias": "personal"})
        );
        assert!(a.message().contains("github/work (octo@work.example)"));
        let back: ActionRequired = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }
}
