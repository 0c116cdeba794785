//! Accounts, per-user views and actionable errors of [`CredentialStore`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use super::{CredentialStore, FastMap, Inner};
use crate::account::{
    AccountInfo, AccountStatus, CredentialAccount, CredentialIdentity, account_id, split_account_id,
};
use crate::action::{AccountChoice, ActionRequired};
use crate::credential::CredentialObject;
use crate::error::{Error, ErrorKind, Result};
use crate::id::CredentialId;
use crate::scope::{ScopedStorage, validate_principal};

/// The Python Hive's environment variable for a credential: `{ID}_API_KEY`, the id
/// upper-cased with `.` and `-` as `_`.
pub fn hive_env_var(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| {
            if c == '.' || c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    name.push_str("_API_KEY");
    name
}

/// The account a stored credential is: its metadata, else (provider, alias) read off
/// its id by the `provider.alias` rule.
fn account_of(credential: &CredentialObject) -> Option<CredentialAccount> {
    if let Some(a) = credential.account() {
        return Some(a.clone());
    }
    let (provider, alias) = split_account_id(credential.id().as_str());
    CredentialAccount::new(provider, Some(alias)).ok()
}

impl CredentialStore {
    /// The end user this view is scoped to, `None` for an unscoped store.
    pub fn principal(&self) -> Option<&str> {
        self.inner.principal.as_deref()
    }

    /// A view of the store that sees only `principal`'s credentials, for agents that
    /// serve many people: one person's tools never see another's credentials.
    ///
    /// The view shares providers, policy, clock and access hooks (every audit record
    /// names the principal), and has its own cache. Its storage is the backend's native
    /// scoped view when it has one ([`CredentialStorage::scoped`](crate::CredentialStorage::scoped),
    /// Vault: a path prefix per principal), else a namespace inside the same storage
    /// ([`ScopedStorage`]).
    ///
    /// `InvalidInput` for a principal that is not 1 to 64 characters of
    /// `A-Z a-z 0-9 _ -`, or when this store is already a user's view.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
    /// use std::sync::Arc;
    /// use hive_cred_core::{CredentialObject, CredentialStore, CredentialType, ErrorKind, MemoryStorage};
    ///
    /// let store = CredentialStore::builder().storage(Arc::new(MemoryStorage::new())).build()?;
    /// let alice = store.for_user("alice")?;
    /// let bob = store.for_user("bob")?;
    /// let mut gh = CredentialObject::new("github", CredentialType::ApiKey)?;
    /// gh.set_key("api_key", "alice-token", None)?;
    /// alice.save(gh).await?;
    /// assert!(alice.get("github").await.is_ok());
    /// assert_eq!(bob.get("github").await.unwrap_err().kind(), ErrorKind::NotFound);
    /// # Ok(()) }
    /// ```
    pub fn for_user(&self, principal: &str) -> Result<CredentialStore> {
        validate_principal(principal)?;
        if let Some(current) = &self.inner.principal {
            return Err(Error::invalid_input(
                "this store is already scoped to a user; call for_user on the unscoped store",
            )
            .with_context("principal", current));
        }
        let storage = match self.inner.storage.scoped(principal) {
            Some(native) => native,
            None => Arc::new(ScopedStorage::new(self.inner.storage.clone(), principal)?),
        };
        let inner = &self.inner;
        Ok(CredentialStore {
            inner: Arc::new(Inner {
                storage,
                providers: inner.providers.clone(),
                policy: inner.policy.clone(),
                cache_ttl: inner.cache_ttl,
                clock: inner.clock.clone(),
                hooks: inner.hooks.clone(),
                lock_options: inner.lock_options.clone(),
                cache: RwLock::new(FastMap::default()),
                flights: Mutex::new(HashMap::new()),
                flight_seq: AtomicU64::new(0),
                failures: Mutex::new(HashMap::new()),
                unsaved: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                principal: Some(Arc::from(principal)),
            }),
        })
    }

    /// The accounts of `provider`: aliases, identities and status, never values,
    /// ordered by alias. A credential is an account of `provider` when its account
    /// metadata says so, or, without metadata, when its id is `provider` or
    /// `provider.alias`.
    pub async fn list_accounts(&self, provider: &str) -> Result<Vec<AccountInfo>> {
        let mut out = Vec::new();
        for id in self.inner.storage.list().await? {
            let Some(credential) = self.inner.storage.load(&id).await? else {
                continue;
            };
            if let Some(account) = account_of(&credential).filter(|a| a.provider == provider) {
                out.push(AccountInfo::new(id, account));
            }
        }
        out.sort_by(|a, b| a.alias().cmp(b.alias()));
        Ok(out)
    }

    /// The credential id of `provider`'s account: `alias` when given (`provider/alias`
    /// accepted too), else its only account, else its `default` account (the bare
    /// `provider` id or an account stored with alias `default`).
    ///
    /// # Errors
    /// - `NotFound` with [`ActionRequired::CredentialMissing`] when it has none;
    /// - `AccountSelectionRequired` with [`ActionRequired::AccountSelectionRequired`]
    ///   listing alias and identity label when it has several and no alias was given.
    pub async fn select_account(
        &self,
        provider: &str,
        alias: Option<&str>,
    ) -> Result<CredentialId> {
        if let Some(alias) = alias {
            let alias = match alias.split_once('/') {
                Some((p, a)) if p == provider => a,
                Some(_) => {
                    return Err(Error::invalid_input("the account names another provider")
                        .with_context("provider", provider));
                }
                None => alias,
            };
            return account_id(provider, alias);
        }
        let accounts = self.list_accounts(provider).await?;
        match accounts.len() {
            0 => Err(self.actionable(provider, Error::not_found(provider))),
            1 => Ok(accounts[0].id().clone()),
            _ => match accounts.iter().find(|a| a.alias() == crate::DEFAULT_ALIAS) {
                Some(default) => Ok(default.id().clone()),
                None => Err(account_selection_required(provider, &accounts)),
            },
        }
    }

    /// Records the result of a check (health check, validation) on a credential's
    /// account: status, time (the store's clock) and, when found, the identity. The
    /// credential is kept whatever the status. Account metadata is created from the id
    /// (`provider.alias`) when the credential has none.
    ///
    /// A credential that is not stored (version 0: read from a read-only layer such as
    /// the environment under a [`CompositeStorage`](crate::CompositeStorage)) is not
    /// copied into the writable storage: the check is returned on it, not saved.
    pub async fn record_check(
        &self,
        id: &str,
        status: AccountStatus,
        identity: Option<CredentialIdentity>,
    ) -> Result<Arc<CredentialObject>> {
        let id = crate::account::canonical_id(id)?;
        let cid = CredentialId::new(&id)?;
        for _ in 0..8 {
            let Some(mut credential) = self.inner.storage.load(&cid).await? else {
                return Err(self.actionable(&id, Error::not_found(&cid)));
            };
            let mut account = account_of(&credential).ok_or_else(|| {
                Error::invalid_input("the credential id is not an account id")
                    .with_context("id", &cid)
            })?;
            account.record_check(status, self.inner.clock.now());
            if let Some(who) = identity.clone().filter(|w| !w.is_empty()) {
                account.identity = who;
            }
            let updated = credential.updated_at();
            credential.set_account(Some(account));
            credential.set_timestamps(credential.created_at(), updated);
            if credential.version() == 0 {
                // Saving would persist a value the person only put in a variable.
                return Ok(Arc::new(credential));
            }
            match self.save(credential).await {
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                other => return other,
            }
        }
        Err(Error::conflict(
            &cid,
            "the credential kept changing while its check was recorded",
        ))
    }

    /// Attaches what a person must do to errors that a person can fix.
    pub(crate) fn actionable(&self, id: &str, e: Error) -> Error {
        if e.action_required().is_some() {
            return e;
        }
        let (provider, alias) = split_account_id(id);
        match e.kind() {
            ErrorKind::NotFound if e.context_value("id").is_none_or(|v| v == id) => {
                e.with_action(ActionRequired::CredentialMissing {
                    id: id.to_owned(),
                    env_var: Some(hive_env_var(id)),
                    help_url: None,
                })
            }
            ErrorKind::Expired | ErrorKind::RefreshRejected => {
                e.with_action(ActionRequired::CredentialExpired {
                    id: id.to_owned(),
                    provider: Some(provider.to_owned()),
                    alias: Some(alias.to_owned()),
                    help_url: None,
                })
            }
            _ => e,
        }
    }
}

/// The `AccountSelectionRequired` error for `provider`'s `accounts`.
pub(crate) fn account_selection_required(provider: &str, accounts: &[AccountInfo]) -> Error {
    let choices: Vec<AccountChoice> = accounts
        .iter()
        .map(|a| AccountChoice::new(a.alias(), a.identity().label().map(str::to_owned)))
        .collect();
    let action = ActionRequired::AccountSelectionRequired {
        provider: provider.to_owned(),
        accounts: choices,
    };
    Error::new(ErrorKind::AccountSelectionRequired, action.message())
        .with_context("provider", provider)
        .with_action(action)
}
