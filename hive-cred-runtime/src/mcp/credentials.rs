//! [`McpCredentialStore`]: rmcp's `CredentialStore` over hive-cred storage.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hive_cred_core::{
    AccountStatus, ActionRequired, CredentialAccount, CredentialId, CredentialObject,
    CredentialStore, Error, ErrorKind, Result, split_account_id,
};
use rmcp::transport::auth::{AuthError, CredentialRefreshGuard, StoredCredentials};

use super::convert::{self, REFRESH_TOKEN};
use super::lock::{Guard, Held};
use super::store_error;

/// How often a save retries a check-and-set conflict before giving up.
const MERGE_ATTEMPTS: u32 = 5;
/// Backoff of the background retries of a failed save: first delay and cap.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// The tokens of one remote MCP server, kept in hive-cred storage for the official
/// Rust MCP SDK (`rmcp`): an implementation of
/// [`rmcp::transport::auth::CredentialStore`] to hand to
/// `AuthorizationManager::set_credential_store`.
///
/// The tokens (access, refresh, expiry, scopes, client id) live as one OAuth2
/// [`CredentialObject`] under the id given to [`new`](Self::new), in whatever storage
/// the [`CredentialStore`] uses: the encrypted local store, Vault, or memory. They are
/// never written to a file of their own. Key layout: `client_id`, `access_token`
/// (with its expiry), `refresh_token`, `token_extra`; the credential also carries an
/// account (provider and alias from the id, as `provider.alias`) whose status says
/// whether the grant still works.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use hive_cred_runtime::AgentRuntime;
/// use hive_cred_runtime::mcp::{McpCredentialStore, McpStateStore};
/// use hive_cred_runtime::rmcp::transport::auth::AuthorizationManager;
///
/// let runtime = AgentRuntime::from_env().await?;
/// let tokens = McpCredentialStore::new(&runtime.credential_store, "mcp-linear")?;
/// let mut manager = AuthorizationManager::new("https://mcp.linear.app/mcp").await?;
/// manager.set_credential_store(tokens.clone());
/// manager.set_state_store(McpStateStore::new(&runtime.credential_store, "mcp-linear")?);
/// if manager.initialize_from_store().await? {
///     let _bearer = manager.get_access_token().await?; // refreshed under the lock when due
/// } else {
///     // run rmcp's `AuthorizationSession` once; its tokens are saved here.
/// }
/// tokens.settle(std::time::Duration::from_secs(10)).await; // before exiting
/// # Ok(()) }
/// ```
///
/// # Behavior
/// - `load` returns the stored tokens, `Ok(None)` when the credential is absent. While
///   a refreshed credential waits to be saved (see below) it returns that one.
/// - `save` writes with check-and-set on the version last loaded. When another writer
///   changed only non-secret fields meanwhile, the tokens go on top of its copy; when it
///   stored other tokens (a re-authorisation elsewhere), its tokens are kept. When the
///   save fails otherwise (storage unreachable), the credentials are **kept in memory**
///   and served by `load`, and the save is retried in the background (with the
///   credential's lock held, so no other process refreshes with the spent refresh
///   token) until it lands: a rotated refresh token is never lost to a failed save.
///   [`settle`](Self::settle) waits for that before a process exits.
/// - `acquire_refresh_guard` takes the credential's cross-process lock, the same lock
///   [`CredentialStore`] holds around its own refreshes ([`CredentialStorage::lock`](hive_cred_core::CredentialStorage::lock):
///   an OS file lock for the local store, a check-and-set lease for Vault), with the
///   store's [`LockOptions`](hive_cred_core::LockOptions), plus an in-process mutex.
/// - One refresh per expiry across processes: when `load` finds the access token due
///   for refresh (by rmcp's own rule), it takes that lock and reads again. If another
///   process refreshed meanwhile, it returns the fresh tokens and rmcp makes no token
///   request; otherwise it keeps the lock for the refresh rmcp starts next. (rmcp
///   itself refreshes unconditionally once it holds the guard.)
/// - `on_refresh_token_rejected` (the authorisation server answered `invalid_grant`)
///   marks the credential as needing re-authorisation, unless it has been replaced
///   since: the dead refresh token is removed and the account's status becomes
///   [`AccountStatus::Failed`]. rmcp then answers `AuthorizationRequired` without a
///   token request, and [`ensure_authorized`](Self::ensure_authorized) fails with
///   [`ErrorKind::AuthorizationRequired`]. A new authorisation saves `Active` again.
/// - `clear` deletes the credential.
/// - Errors are `AuthError::CredentialStoreError` carrying hive-cred's error message
///   (ids and kinds, never a token); `Debug` shows the id only.
#[derive(Clone)]
pub struct McpCredentialStore {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: CredentialStore,
    pub(super) id: CredentialId,
    pub(super) state: Mutex<State>,
    /// One guard at a time in this process (the storage lock excludes processes).
    pub(super) local: Arc<tokio::sync::Mutex<()>>,
    /// Stops the background save retry when the last handle goes.
    retrying: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
pub(super) struct State {
    /// The stored copy last read or written (its version is the check-and-set base).
    /// `None`: not read yet; `Some(None)`: absent.
    base: Option<Option<CredentialObject>>,
    /// A lock taken by `load` for the refresh rmcp starts next, not yet claimed.
    pub(super) pending: Option<(Held, u64)>,
    /// The lock of the guard handed out, while it is out.
    pub(super) guard: Option<Held>,
    /// Counts pending locks, so an expiry timer releases only its own.
    pub(super) generation: u64,
    pub(super) unsaved: Option<Unsaved>,
}

/// Credentials whose save failed, served from memory until the save lands.
pub(super) struct Unsaved {
    creds: StoredCredentials,
    /// The stored copy they go on top of.
    base: Option<CredentialObject>,
    /// The refresh lock, held until the save lands (when the failed save happened
    /// under a guard).
    pub(super) held: Option<Held>,
    attempts: u32,
    error: Error,
}

impl fmt::Debug for McpCredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpCredentialStore")
            .field("id", &self.inner.id.as_str())
            .field("backend", &self.inner.store.storage().backend_name())
            .finish_non_exhaustive()
    }
}

pub(super) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The system clock, not the store's: it predicts rmcp's refresh decision, which rmcp
/// makes on the system clock.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What became of one save attempt.
enum Landed {
    /// Saved; the stored copy.
    Saved(CredentialObject),
    /// Another writer stored other tokens; its copy stays.
    Adopted(CredentialObject),
}

impl McpCredentialStore {
    /// The MCP tokens stored under `id` in `store`'s storage. `InvalidInput` for a
    /// malformed id. Use one id per MCP server (and per end user: a
    /// [`CredentialStore::for_user`] view keeps users apart). Create one per id in a
    /// process and clone it (clones share the kept-save and lock state).
    pub fn new(store: &CredentialStore, id: &str) -> Result<Self> {
        let id = CredentialId::new(id)?;
        Ok(McpCredentialStore {
            inner: Arc::new(Inner {
                store: store.clone(),
                id,
                state: Mutex::new(State::default()),
                local: Arc::new(tokio::sync::Mutex::new(())),
                retrying: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The credential id.
    pub fn id(&self) -> &CredentialId {
        &self.inner.id
    }

    /// `Ok(())` when stored tokens can be used or refreshed; otherwise
    /// [`ErrorKind::AuthorizationRequired`] with an [`ActionRequired`] naming the
    /// credential: nothing stored, no access token, an expired access token without a
    /// refresh token, or a grant the server rejected (account status `failed`).
    pub async fn ensure_authorized(&self) -> Result<()> {
        let id = &self.inner.id;
        let stored = self.inner.store.storage().load(id).await?;
        let now = self.inner.store.clock().now();
        let usable = stored.as_ref().is_some_and(|c| {
            let failed = c
                .account()
                .is_some_and(|a| a.status == AccountStatus::Failed);
            let access = c.key(convert::ACCESS_TOKEN);
            let live = access.is_some_and(|k| !k.is_expired_at(now));
            !failed && access.is_some() && (live || c.has_key(REFRESH_TOKEN))
        });
        if usable || self.kept().is_some() {
            return Ok(());
        }
        let (provider, _) = split_account_id(id.as_str());
        let action = ActionRequired::AuthorizationRequired {
            id: id.to_string(),
            provider: provider.to_owned(),
            how_to_connect: "run the MCP client's OAuth authorisation flow again".into(),
        };
        Err(
            Error::new(ErrorKind::AuthorizationRequired, action.message())
                .with_context("id", id)
                .with_action(action),
        )
    }

    /// The error of the last failed save of refreshed credentials that are kept in
    /// memory, `None` when everything is saved.
    pub fn unsaved_error(&self) -> Option<Error> {
        lock(&self.inner.state)
            .unsaved
            .as_ref()
            .map(|u| u.error.clone())
    }

    /// Tries the save of kept credentials again until it lands or `timeout` passes;
    /// `true` when nothing is left unsaved. Call it before the process exits.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let all = async {
            let mut pause = RETRY_FIRST;
            while !self.retry_unsaved().await {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
        self.unsaved_error().is_none()
    }

    fn kept(&self) -> Option<StoredCredentials> {
        lock(&self.inner.state)
            .unsaved
            .as_ref()
            .map(|u| u.creds.clone())
    }

    async fn read(&self) -> Result<Option<CredentialObject>> {
        let id = &self.inner.id;
        let stored = self
            .inner
            .store
            .storage()
            .load(id)
            .await
            .map_err(|e| e.with_context("id", id).with_context("operation", "load"))?;
        lock(&self.inner.state).base = Some(stored.clone());
        Ok(stored)
    }

    /// One check-and-set save of `creds` over `base`, merging non-secret changes of
    /// other writers.
    async fn write(
        &self,
        creds: &StoredCredentials,
        base: Option<CredentialObject>,
    ) -> Result<Landed> {
        let id = &self.inner.id;
        let storage = self.inner.store.storage();
        let mut base = base;
        for _ in 0..MERGE_ATTEMPTS {
            let mut obj = convert::to_object(id, creds, base.as_ref())?;
            let status = creds
                .token_response
                .is_some()
                .then_some(AccountStatus::Active);
            mark(&mut obj, status, self.inner.store.clock().now());
            // Through the store: its cache and access hooks (audit) see the save.
            match self.inner.store.save(obj).await {
                Ok(stored) => return Ok(Landed::Saved(Arc::unwrap_or_clone(stored))),
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    let current = storage.load(id).await?;
                    match (&base, current) {
                        (Some(_), None) => {
                            return Err(Error::not_found(id).with_message_prefix(
                                "the MCP token credential was deleted while new tokens were saved",
                            ));
                        }
                        (_, None) => base = None,
                        (Some(b), Some(c)) if convert::same_secrets(b, &c) => base = Some(c),
                        (_, Some(c)) => {
                            tracing::info!(target: "hive_cred::mcp", id = %id, version = c.version(), "another writer stored other MCP tokens meanwhile; keeping them");
                            self.inner.store.invalidate(id.as_str());
                            return Ok(Landed::Adopted(c));
                        }
                    }
                }
                Err(e) => return Err(e.with_context("id", id).with_context("operation", "save")),
            }
        }
        Err(Error::conflict(
            id,
            "the MCP token credential kept changing while it was saved",
        ))
    }

    /// One retry of the kept credentials' save; `true` when nothing is left unsaved.
    async fn retry_unsaved(&self) -> bool {
        let Some((creds, base)) = lock(&self.inner.state)
            .unsaved
            .as_ref()
            .map(|u| (u.creds.clone(), u.base.clone()))
        else {
            return true;
        };
        let outcome = self.write(&creds, base).await;
        let mut st = lock(&self.inner.state);
        match outcome {
            Ok(Landed::Saved(stored)) | Ok(Landed::Adopted(stored)) => {
                tracing::info!(target: "hive_cred::mcp", id = %self.inner.id, "the kept MCP tokens are saved");
                // Dropping the entry releases its lock (if it held one).
                st.unsaved = None;
                st.base = Some(Some(stored));
                true
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(target: "hive_cred::mcp", id = %self.inner.id, "the MCP token credential was deleted; dropping the kept tokens");
                st.unsaved = None;
                true
            }
            Err(e) => {
                if let Some(u) = st.unsaved.as_mut() {
                    u.attempts += 1;
                    u.error = e;
                }
                false
            }
        }
    }

    fn spawn_retry(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.inner.retrying.store(false, Ordering::SeqCst);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            let mut pause = RETRY_FIRST;
            loop {
                tokio::time::sleep(pause).await;
                let Some(inner) = weak.upgrade() else { return };
                let this = McpCredentialStore { inner };
                if this.retry_unsaved().await {
                    this.inner.retrying.store(false, Ordering::SeqCst);
                    return;
                }
                pause = (pause * 2).min(RETRY_CAP);
            }
        });
    }

    /// Marks the stored credential holding `creds`'s refresh token as needing
    /// re-authorisation.
    async fn mark_rejected(&self, creds: &StoredCredentials) -> Result<()> {
        let id = &self.inner.id;
        // When the rejected tokens are the kept (unsaved) ones, the stored refresh
        // token is the one their refresh spent: dead as well.
        let kept_base = {
            let mut st = lock(&self.inner.state);
            if st
                .unsaved
                .as_ref()
                .is_some_and(|u| same_stored_refresh(&u.creds, creds))
            {
                st.unsaved.take().map(|u| u.base.map_or(0, |b| b.version()))
            } else {
                None
            }
        };
        let storage = self.inner.store.storage();
        for _ in 0..MERGE_ATTEMPTS {
            let Some(mut current) = storage.load(id).await? else {
                return Ok(());
            };
            let rejected = convert::holds_refresh_token_of(&current, creds)
                || kept_base == Some(current.version());
            if !rejected || !current.has_key(REFRESH_TOKEN) {
                tracing::info!(target: "hive_cred::mcp", id = %id, "the rejected refresh token is no longer stored; not marking the credential");
                return Ok(());
            }
            current.remove_key(REFRESH_TOKEN);
            mark(
                &mut current,
                Some(AccountStatus::Failed),
                self.inner.store.clock().now(),
            );
            match self.inner.store.save(current).await {
                Ok(_) => {
                    lock(&self.inner.state).base = None;
                    tracing::warn!(target: "hive_cred::mcp", id = %id, "the authorisation server rejected the refresh token; the MCP server must be authorised again");
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e.with_context("id", id).with_context("operation", "save")),
            }
        }
        Err(Error::conflict(
            id,
            "the MCP token credential kept changing while it was marked for re-authorisation",
        ))
    }
}

/// Sets the account status (creating the account from the id, `provider.alias`, when
/// the credential has none and the id splits into valid parts).
fn mark(obj: &mut CredentialObject, status: Option<AccountStatus>, now: DateTime<Utc>) {
    let Some(status) = status else { return };
    if obj.account().is_none() {
        let (provider, alias) = split_account_id(obj.id().as_str());
        let (provider, alias) = (provider.to_owned(), alias.to_owned());
        if let Ok(account) = CredentialAccount::new(&provider, Some(&alias)) {
            obj.set_account(Some(account));
        }
    }
    if let Some(account) = obj.account_mut() {
        account.record_check(status, now);
    }
}

fn same_stored_refresh(a: &StoredCredentials, b: &StoredCredentials) -> bool {
    let rt = |c: &StoredCredentials| {
        c.token_response
            .as_ref()
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.get("refresh_token").cloned())
    };
    matches!((rt(a), rt(b)), (Some(x), Some(y)) if x == y)
}

#[async_trait]
impl rmcp::transport::auth::CredentialStore for McpCredentialStore {
    async fn load(&self) -> std::result::Result<Option<StoredCredentials>, AuthError> {
        if let Some(kept) = self.kept()
            && !self.retry_unsaved().await
        {
            return Ok(Some(kept));
        }
        let stored = self.read().await.map_err(store_error)?;
        let busy = {
            let st = lock(&self.inner.state);
            st.guard.is_some() || st.pending.is_some()
        };
        let stored = match stored {
            Some(c) if !busy && convert::refresh_due(&c, now_secs()) => {
                // rmcp is about to refresh: take the lock first and read again, so that
                // a refresh another process finished meanwhile is used instead.
                let held = self.take_lock().await.map_err(store_error)?;
                let again = self.read().await.map_err(store_error)?;
                if again
                    .as_ref()
                    .is_some_and(|c| convert::refresh_due(c, now_secs()))
                {
                    self.park(held);
                } else {
                    tracing::debug!(target: "hive_cred::mcp", id = %self.inner.id, "another process refreshed the MCP tokens; no token request");
                }
                again
            }
            other => other,
        };
        stored
            .map(|c| convert::to_stored(&c))
            .transpose()
            .map_err(store_error)
    }

    async fn save(&self, credentials: StoredCredentials) -> std::result::Result<(), AuthError> {
        let base = {
            let st = lock(&self.inner.state);
            match &st.unsaved {
                Some(u) => Some(u.base.clone()),
                None => st.base.clone(),
            }
        };
        let base = match base {
            Some(b) => b,
            None => self.read().await.map_err(store_error)?,
        };
        match self.write(&credentials, base.clone()).await {
            Ok(Landed::Saved(stored)) | Ok(Landed::Adopted(stored)) => {
                let mut st = lock(&self.inner.state);
                st.unsaved = None;
                st.base = Some(Some(stored));
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::InvalidInput
                ) =>
            {
                Err(store_error(e))
            }
            Err(e) => {
                tracing::warn!(target: "hive_cred::mcp", id = %self.inner.id, kind = %e.kind(), "saving MCP tokens failed; keeping them in memory and retrying the save");
                {
                    let mut st = lock(&self.inner.state);
                    let (held, attempts) = match st.unsaved.take() {
                        Some(u) => (u.held, u.attempts + 1),
                        None => (None, 1),
                    };
                    st.unsaved = Some(Unsaved {
                        creds: credentials,
                        base,
                        held,
                        attempts,
                        error: e,
                    });
                }
                self.spawn_retry();
                Ok(())
            }
        }
    }

    async fn clear(&self) -> std::result::Result<(), AuthError> {
        {
            let mut st = lock(&self.inner.state);
            st.unsaved = None;
            st.base = Some(None);
        }
        self.inner
            .store
            .delete(self.inner.id.as_str())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn on_refresh_token_rejected(
        &self,
        credentials: &StoredCredentials,
    ) -> std::result::Result<(), AuthError> {
        self.mark_rejected(credentials).await.map_err(store_error)
    }

    async fn acquire_refresh_guard(
        &self,
    ) -> std::result::Result<Option<CredentialRefreshGuard>, AuthError> {
        let claimed = {
            let mut st = lock(&self.inner.state);
            st.pending
                .take()
                .map(|(held, _)| held)
                .or_else(|| st.unsaved.as_mut().and_then(|u| u.held.take()))
        };
        let held = match claimed {
            Some(held) => held,
            None => self.take_lock().await.map_err(store_error)?,
        };
        lock(&self.inner.state).guard = Some(held);
        Ok(Some(CredentialRefreshGuard::new(Guard {
            inner: self.inner.clone(),
        })))
    }
}
