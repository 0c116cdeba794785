//! The authenticated Vault client: login, token lookup, background renewal.
//!
//! A [`Session`] holds the current client (with its token) and the token's lease. A
//! background task, holding only a `Weak` reference, renews a renewable token at about
//! two thirds of its TTL, redoes the AppRole login when renewal is no longer possible,
//! and ends when the storage is dropped (the task is also aborted then).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use url::Url;
use vaultrs::api::EndpointMiddleware;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequest, SetSecretRequestOptions};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::config::{VaultAuth, VaultConfig};
use crate::consistency::{self, StorageIndex};
use crate::error::{Op, map_error};
use crate::transport;

/// The path of the renew-self endpoint, for errors.
const RENEW_PATH: &str = "auth/token/renew-self";
/// The path of the revoke-self endpoint, for errors.
const REVOKE_PATH: &str = "auth/token/revoke-self";
/// The path of the lookup-self endpoint, for errors.
const LOOKUP_PATH: &str = "auth/token/lookup-self";
/// Requests are made with a fresh token when the current one has less than this left.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// First wait between failover rounds; it doubles up to [`FAILOVER_MAX_DELAY`].
const FAILOVER_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest wait between failover rounds.
const FAILOVER_MAX_DELAY: Duration = Duration::from_secs(1);
/// Timeout of one `sys/health` probe.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the wait between failed renewal or login attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Lease {
    expires_at: Instant,
    /// The TTL asked for on renewal (the token's creation TTL).
    increment: Duration,
    renewable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Renew,
    Login,
}

#[derive(Debug, Clone, Copy)]
struct Planned {
    at: Instant,
    action: Action,
}

struct Session {
    /// One client per configured address, all with the current token.
    clients: Vec<Arc<VaultClient>>,
    lease: Option<Lease>,
    next: Option<Planned>,
    generation: u64,
    failures: u32,
    /// The JWT file as it was at the last JWT login (modification time, length).
    jwt_stamp: Option<FileStamp>,
}

type FileStamp = (Option<std::time::SystemTime>, u64);

fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// Shared state of a `VaultStorage` and its renewal task.
pub(crate) struct Inner {
    pub(crate) config: VaultConfig,
    /// A client without a token: the template for every session client (one shared
    /// connection pool) and the client of AppRole logins.
    base: VaultClient,
    session: RwLock<Session>,
    /// The index of the address requests go to (the active node, as last seen).
    current: AtomicUsize,
    login_lock: Mutex<()>,
    /// Wakes the renewal task when the session changes outside it (on-demand login).
    changed: Arc<Notify>,
    /// The highest storage index seen, sent with every KV request (read-your-writes
    /// on standbys that answer reads).
    pub(crate) index: StorageIndex,
}

/// Aborts the renewal task when the last storage handle is dropped.
pub(crate) struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn internal(message: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("could not build a Vault request: {message}"),
    )
}

/// One client per configured address, sharing `base`'s connection pool, sending `token`.
fn derive_clients(
    base: &VaultClient,
    token: Option<&SecretString>,
    addresses: &[Url],
) -> Vec<Arc<VaultClient>> {
    addresses
        .iter()
        .map(|a| Arc::new(derive_client(base, token, a)))
        .collect()
}

/// A client sharing `base`'s HTTP connection pool, sending `token` to `address`.
fn derive_client(base: &VaultClient, token: Option<&SecretString>, address: &Url) -> VaultClient {
    let token = match token {
        // vaultrs keeps the token as a plain String in its settings (never printed here).
        // EXPOSE: vaultrs sends the token to Vault in the X-Vault-Token header.
        Some(t) => t.expose_secret().to_owned(),
        None => String::new(),
    };
    let mut settings = base.settings.clone();
    settings.token.clone_from(&token);
    settings.address = address.clone();
    let mut middle = base.middle.clone();
    middle.token = token;
    VaultClient {
        http: rustify::clients::reqwest::Client::new(address.as_str(), base.http.http.clone()),
        middle,
        settings,
    }
}

/// The token-less client every session client derives from. Its HTTP client is ours
/// ([`transport::http_client`]: TLS settings, redirects only within the configured
/// origin), not the one `VaultClient::new` would build.
fn build_base(config: &VaultConfig) -> Result<VaultClient> {
    let http = transport::http_client(config)?;
    let mut builder = VaultClientSettingsBuilder::default();
    // Every setting is given explicitly so vaultrs never reads VAULT_* variables itself.
    // The TLS settings here are unused: TLS lives in `http`.
    builder
        .address(config.address.as_str())
        .token(String::new())
        .ca_certs(Vec::new())
        .identity(None)
        .verify(true)
        .timeout(Some(config.timeout))
        .namespace(config.namespace.clone());
    let settings = builder.build().map_err(internal)?;
    let middle = EndpointMiddleware {
        token: String::new(),
        version: format!("v{}", settings.version),
        wrap: None,
        namespace: settings.namespace.clone(),
    };
    Ok(VaultClient {
        http: rustify::clients::reqwest::Client::new(settings.address.as_str(), http),
        middle,
        settings,
    })
}

/// The JWT of a file without surrounding whitespace; a `Config` error naming the file
/// (never the content) when it is empty or holds control characters.
fn clean_jwt(raw: String, file: &std::path::Path) -> Result<SecretString> {
    let raw = SecretString::from(raw);
    // EXPOSE: checked and trimmed; only a new SecretString leaves.
    let trimmed = raw.expose_secret().trim();
    if trimmed.is_empty() || trimmed.chars().any(char::is_control) {
        return Err(Error::config(format!(
            "the JWT file {} is empty or holds more than one line: check HIVE_VAULT_JWT_FILE",
            file.display()
        ))
        .with_context("backend", "vault"));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Whether an error means "this node cannot serve, another may": a failed connection,
/// a broken-off response, a standby, sealed or leaderless node (429, 503), or a
/// redirect / forwarding failure towards the active node.
fn fails_over(err: &ClientError) -> bool {
    use rustify::errors::ClientError as HttpError;
    match err {
        ClientError::RestClientError { source } => match source {
            HttpError::RequestError { source, .. } => {
                transport::find_tls_error(source.as_ref()).is_none()
            }
            HttpError::ResponseError { .. } => true,
            HttpError::ServerResponseError { code, .. } => matches!(code, 307 | 429 | 502 | 503),
            _ => false,
        },
        ClientError::APIError { code, errors } => {
            let text = errors.join(" ").to_ascii_lowercase();
            matches!(code, 307 | 429 | 502 | 503)
                || (*code == 500
                    && ["standby", "active", "leader", "forward", "sealed"]
                        .iter()
                        .any(|w| text.contains(w)))
        }
        _ => false,
    }
}

/// Whether the request certainly never reached a server (the connection failed).
fn never_sent(err: &ClientError) -> bool {
    use rustify::errors::ClientError as HttpError;
    match err {
        ClientError::RestClientError {
            source: HttpError::RequestError { source, .. },
        } => source
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect),
        _ => false,
    }
}

/// `auth/token/lookup-self`, read into only the fields used here: the root token
/// of `operator init` lacks fields vaultrs' response type requires.
#[derive(Debug)]
struct LookupSelf;

#[derive(Debug, serde::Deserialize)]
struct TokenInfo {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default)]
    renewable: bool,
}

impl rustify::Endpoint for LookupSelf {
    type Response = TokenInfo;
    const REQUEST_BODY_TYPE: rustify::enums::RequestType = rustify::enums::RequestType::JSON;
    const RESPONSE_BODY_TYPE: rustify::enums::ResponseType = rustify::enums::ResponseType::JSON;

    fn path(&self) -> String {
        LOOKUP_PATH.to_owned()
    }

    fn method(&self) -> rustify::enums::RequestMethod {
        rustify::enums::RequestMethod::GET
    }
}

/// When to act on a lease: renew at two thirds of what is left, or log in again.
fn plan(lease: Option<Lease>, auth: &VaultAuth, renew: bool, now: Instant) -> Option<Planned> {
    let lease = lease?;
    let left = lease.expires_at.saturating_duration_since(now);
    let at = now + left * 2 / 3;
    let approle = auth.logs_in();
    if lease.renewable && renew {
        Some(Planned {
            at,
            action: Action::Renew,
        })
    } else if approle {
        Some(Planned {
            at,
            action: Action::Login,
        })
    } else {
        None
    }
}

fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_RETRY)
}

impl Inner {
    /// Builds the client and authenticates (token lookup or AppRole login).
    pub(crate) async fn connect(config: VaultConfig) -> Result<(Arc<Inner>, Option<TaskGuard>)> {
        // Refuses plain HTTP to other hosts and unusable tokens before any connection.
        let config = config.validated()?;
        let base = build_base(&config)?;
        let token = match &config.auth {
            VaultAuth::Token(t) => Some(t),
            VaultAuth::AppRole { .. } | VaultAuth::Jwt { .. } => None,
        };
        let clients = derive_clients(&base, token, &config.addresses);
        let inner = Arc::new(Inner {
            config,
            base,
            session: RwLock::new(Session {
                clients,
                lease: None,
                next: None,
                generation: 0,
                failures: 0,
                jwt_stamp: None,
            }),
            current: AtomicUsize::new(0),
            login_lock: Mutex::new(()),
            changed: Arc::new(Notify::new()),
            index: StorageIndex::default(),
        });
        if inner.config.addresses.len() > 1 {
            // Start at the active node; without one, the first request fails over.
            if let Some(active) = inner.find_active().await {
                inner.current.store(active, Ordering::SeqCst);
            }
        }
        match &inner.config.auth {
            VaultAuth::Token(_) => inner.lookup_token().await?,
            VaultAuth::AppRole { .. } | VaultAuth::Jwt { .. } => inner.login().await?,
        }
        let guard = if inner.read().next.is_some() {
            let weak = Arc::downgrade(&inner);
            let changed = Arc::clone(&inner.changed);
            Some(TaskGuard(tokio::spawn(maintain(weak, changed))))
        } else {
            None
        };
        Ok((inner, guard))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Session> {
        self.session.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Session> {
        self.session.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn op<'a>(&'a self, name: &'static str, path: &'a str) -> Op<'a> {
        Op {
            name,
            path,
            address: self.address(),
        }
    }

    /// The address requests go to now.
    pub(crate) fn address(&self) -> &str {
        let i = self.current.load(Ordering::SeqCst);
        self.config.addresses[i.min(self.config.addresses.len() - 1)].as_str()
    }

    /// Runs a KV request (`build` makes it anew for each attempt) with failover and
    /// the storage index (see [`consistency`]).
    pub(crate) async fn kv<E: rustify::endpoint::Endpoint>(
        &self,
        name: &'static str,
        path: &str,
        build: impl Fn() -> E,
    ) -> Result<E::Response> {
        self.exec(name, path, |client| {
            let request = build();
            async move { consistency::exec_with_result(&client, &self.index, request).await }
        })
        .await
    }

    /// Runs a request with failover; see [`exec_tracked`](Self::exec_tracked).
    pub(crate) async fn exec<T, F, Fut>(&self, name: &'static str, path: &str, f: F) -> Result<T>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        self.exec_tracked(name, path, f).await.0
    }

    /// Runs `f` with the client of the current address. With several addresses, a
    /// connection failure or an answer that the node is not (or no longer) the active
    /// one sends the request again to the active node, found by probing every
    /// address's `sys/health`, until the failover timeout has passed; then the last
    /// error is returned, mapped as usual. The flag says whether a failed attempt may
    /// have reached a server (the request was sent, the answer lost): a write that
    /// then fails its check-and-set must read back to learn whether it was applied.
    pub(crate) async fn exec_tracked<T, F, Fut>(
        &self,
        name: &'static str,
        path: &str,
        f: F,
    ) -> (Result<T>, bool)
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        self.run(|_| self.client(), name, path, f).await
    }

    /// Writes `data` to the KV v2 secret `secret` under `mount` with check-and-set on `cas` and
    /// returns the written version. When an attempt's answer was lost (the node failed
    /// mid-request) and the retry then fails its check-and-set, the version after `cas`
    /// is read back: the write counts as done when it holds exactly `data`; otherwise
    /// the `Conflict` stands. The one check-and-set write of credentials and locks.
    pub(crate) async fn write_cas(
        &self,
        name: &'static str,
        path: &str,
        (mount, secret): (&str, &str),
        data: &serde_json::Value,
        cas: u32,
    ) -> Result<u64> {
        let build = || {
            SetSecretRequest::builder()
                .mount(mount)
                .path(secret)
                .data(data.clone())
                .options(SetSecretRequestOptions { cas })
                .build()
                .map_err(crate::storage::request_error)
        };
        build()?;
        let (written, ambiguous) = self
            .exec_tracked(name, path, |client| {
                let request = build().expect("the same request was built above");
                async move { consistency::exec_with_result(&client, &self.index, request).await }
            })
            .await;
        match written {
            Ok(written) => Ok(written.version),
            Err(e) if e.kind() == ErrorKind::Conflict && ambiguous => {
                let version = u64::from(cas) + 1;
                let read = self
                    .kv("check-and-set read-back", path, || {
                        ReadSecretRequest::builder()
                            .mount(mount)
                            .path(secret)
                            .version(version)
                            .build()
                            .expect("a read request with a mount and a path builds")
                    })
                    .await;
                match read {
                    Ok(read) if read.data == *data => Ok(version),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// [`exec`](Self::exec) without a token (logins).
    async fn exec_tokenless<T, F, Fut>(&self, name: &'static str, path: &str, f: F) -> Result<T>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let tokenless = |i: usize| {
            std::future::ready(Ok(Arc::new(derive_client(
                &self.base,
                None,
                &self.config.addresses[i],
            ))))
        };
        self.run(tokenless, name, path, f).await.0
    }

    async fn run<T, C, CF, F, Fut>(
        &self,
        get_client: C,
        name: &'static str,
        path: &str,
        f: F,
    ) -> (Result<T>, bool)
    where
        C: Fn(usize) -> CF,
        CF: Future<Output = Result<Arc<VaultClient>>>,
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let cluster = self.config.addresses.len() > 1;
        let deadline = Instant::now() + self.config.failover_timeout;
        let mut ambiguous = false;
        let mut delay = FAILOVER_FIRST_DELAY;
        loop {
            let index = self.current_index();
            let client = match get_client(index).await {
                Ok(c) => c,
                Err(e) => return (Err(e), ambiguous),
            };
            let err = match f(client).await {
                Ok(v) => return (Ok(v), ambiguous),
                Err(e) => e,
            };
            let failover = cluster && fails_over(&err);
            let sent = !never_sent(&err);
            let mapped = map_error(err, self.op(name, path));
            if !failover {
                return (Err(mapped), ambiguous);
            }
            ambiguous |= sent;
            loop {
                if Instant::now() + delay > deadline {
                    return (Err(mapped), ambiguous);
                }
                match self.find_active().await {
                    Some(active) if active != index => {
                        tracing::warn!(
                            backend = "vault",
                            from = self.config.addresses[index].as_str(),
                            to = self.config.addresses[active].as_str(),
                            error = %mapped,
                            "Vault node failed; moving to the active node"
                        );
                        self.current.store(active, Ordering::SeqCst);
                        break;
                    }
                    found => {
                        // No active node yet (an election), or the same node says it
                        // is active again: wait, then look again.
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(FAILOVER_MAX_DELAY);
                        if found.is_some() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The first address (starting after the current one) whose `sys/health` says
    /// it is the active, unsealed node.
    pub(crate) async fn find_active(&self) -> Option<usize> {
        let n = self.config.addresses.len();
        let start = self.current.load(Ordering::SeqCst);
        for k in 1..=n {
            let i = (start + k) % n;
            let url = format!(
                "{}/v1/sys/health",
                self.config.addresses[i].as_str().trim_end_matches('/')
            );
            let probe = self
                .base
                .http
                .http
                .get(url)
                .timeout(HEALTH_TIMEOUT.min(self.config.timeout))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().as_u16() == 200) {
                return Some(i);
            }
        }
        None
    }

    /// The client to send a request with. An AppRole token that has expired (the
    /// process slept through its renewal, say) is replaced by a new login first.
    pub(crate) async fn client(&self) -> Result<Arc<VaultClient>> {
        let (client, stale, generation, stamp) = {
            let s = self.read();
            let stale = s
                .lease
                .is_some_and(|l| l.expires_at <= Instant::now() + EXPIRY_MARGIN);
            (
                Arc::clone(&s.clients[self.current_index()]),
                stale,
                s.generation,
                s.jwt_stamp,
            )
        };
        // A new JWT in the file (a rotated service-account token) means a new login.
        let jwt_changed = match &self.config.auth {
            VaultAuth::Jwt { token_file, .. } => file_stamp(token_file) != stamp,
            _ => false,
        };
        if !((stale && self.config.auth.logs_in()) || jwt_changed) {
            return Ok(client);
        }
        let _one_login = self.login_lock.lock().await;
        if self.read().generation == generation {
            tracing::info!(
                backend = "vault",
                method = self.config.auth.method(),
                token_expired = stale,
                jwt_file_changed = jwt_changed,
                "logging in to Vault again"
            );
            self.login_locked().await?;
        }
        Ok(Arc::clone(&self.read().clients[self.current_index()]))
    }

    fn current_index(&self) -> usize {
        self.current
            .load(Ordering::SeqCst)
            .min(self.config.addresses.len() - 1)
    }

    /// Looks up the configured token and plans its renewal.
    async fn lookup_token(&self) -> Result<()> {
        let info = self
            .exec("token lookup", LOOKUP_PATH, |client| async move {
                vaultrs::api::exec_with_result(&*client, LookupSelf).await
            })
            .await;
        let info = info.map_err(|e| {
            if e.kind() == ErrorKind::PermissionDenied {
                Error::new(
                    ErrorKind::PermissionDenied,
                    "Vault rejected the token: it is invalid, expired or revoked, or its policy does not allow auth/token/lookup-self (the `default` policy does)",
                )
                .with_context("backend", "vault")
                .with_context("path", LOOKUP_PATH)
            } else {
                e
            }
        })?;
        let now = Instant::now();
        let lease = (info.ttl > 0).then(|| Lease {
            expires_at: now + Duration::from_secs(info.ttl),
            increment: Duration::from_secs(if info.creation_ttl > 0 {
                info.creation_ttl
            } else {
                info.ttl
            }),
            renewable: info.renewable,
        });
        let next = plan(lease, &self.config.auth, self.config.renew, now);
        match lease {
            None => tracing::debug!(backend = "vault", "Vault token does not expire"),
            Some(l) if next.is_none() => tracing::warn!(
                backend = "vault",
                ttl_secs = info.ttl,
                renewable = l.renewable,
                "Vault token expires and will not be renewed; requests fail once it has"
            ),
            Some(_) => tracing::debug!(
                backend = "vault",
                ttl_secs = info.ttl,
                "Vault token will be renewed in the background"
            ),
        }
        let mut s = self.write();
        s.lease = lease;
        s.next = next;
        s.generation += 1;
        Ok(())
    }

    /// AppRole login, one at a time.
    async fn login(&self) -> Result<()> {
        let _one_login = self.login_lock.lock().await;
        self.login_locked().await
    }

    async fn login_locked(&self) -> Result<()> {
        let (auth, jwt_stamp) = match &self.config.auth {
            VaultAuth::AppRole { role_id, secret_id } => {
                (self.approle_login(role_id, secret_id).await?, None)
            }
            VaultAuth::Jwt { role, token_file } => {
                let stamp = file_stamp(token_file);
                (self.jwt_login(role, token_file).await?, stamp)
            }
            VaultAuth::Token(_) => {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    "a login was requested for a configured token",
                ));
            }
        };
        let token = SecretString::from(auth.client_token);
        let now = Instant::now();
        let lease = (auth.lease_duration > 0).then(|| Lease {
            expires_at: now + Duration::from_secs(auth.lease_duration),
            increment: Duration::from_secs(auth.lease_duration),
            renewable: auth.renewable,
        });
        let next = plan(lease, &self.config.auth, self.config.renew, now);
        tracing::info!(
            backend = "vault",
            method = self.config.auth.method(),
            ttl_secs = auth.lease_duration,
            renewable = auth.renewable,
            "logged in to Vault"
        );
        let clients = derive_clients(&self.base, Some(&token), &self.config.addresses);
        let (old, old_lease) = {
            let mut s = self.write();
            let old = std::mem::replace(&mut s.clients, clients);
            let old_lease = s.lease;
            s.lease = lease;
            s.next = next;
            s.generation += 1;
            s.failures = 0;
            s.jwt_stamp = jwt_stamp;
            (old, old_lease)
        };
        self.changed.notify_waiters();
        // The token of the previous login is no longer needed: revoke it while it is
        // still valid, so it is worth nothing if it leaked.
        let still_valid = old_lease.is_some_and(|l| l.expires_at > Instant::now());
        let had_token = old.first().is_some_and(|c| !c.settings.token.is_empty());
        if still_valid && had_token {
            let old = Arc::clone(&old[self.current_index()]);
            match vaultrs::token::revoke_self(&*old).await {
                Ok(()) => tracing::debug!(backend = "vault", "revoked the previous Vault token"),
                Err(e) => {
                    let err = map_error(e, self.op("token revocation", REVOKE_PATH));
                    tracing::warn!(backend = "vault", error = %err, "could not revoke the previous Vault token");
                }
            }
        }
        Ok(())
    }

    async fn approle_login(
        &self,
        role_id: &SecretString,
        secret_id: &SecretString,
    ) -> Result<vaultrs::api::AuthInfo> {
        let path = format!("auth/{}/login", self.config.approle_mount);
        self.exec_tokenless("AppRole login", &path, |client| async move {
            vaultrs::auth::approle::login(
                &*client,
                &self.config.approle_mount,
                // EXPOSE: the role id is sent to Vault's AppRole login endpoint.
                role_id.expose_secret(),
                // EXPOSE: the secret id is sent to Vault's AppRole login endpoint.
                secret_id.expose_secret(),
            )
            .await
        })
        .await
        .map_err(|e| {
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::InvalidInput
            ) {
                Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "Vault rejected the AppRole login at {path}: the role id or secret id is invalid or expired (check HIVE_VAULT_ROLE_ID / HIVE_VAULT_SECRET_ID)"
                    ),
                )
                .with_context("backend", "vault")
                .with_context("path", path.as_str())
            } else {
                e
            }
        })
    }

    async fn jwt_login(
        &self,
        role: &str,
        token_file: &std::path::Path,
    ) -> Result<vaultrs::api::AuthInfo> {
        let path = format!("auth/{}/login", self.config.jwt_mount);
        let raw = std::fs::read_to_string(token_file).map_err(|e| {
            Error::config(format!(
                "cannot read the JWT file {} ({e}): check HIVE_VAULT_JWT_FILE",
                token_file.display()
            ))
            .with_context("backend", "vault")
        })?;
        let jwt = clean_jwt(raw, token_file)?;
        self.exec_tokenless("JWT login", &path, |client| {
            let jwt = &jwt;
            async move {
                vaultrs::auth::oidc::login(
                    &*client,
                    &self.config.jwt_mount,
                    // EXPOSE: the JWT is sent to Vault's JWT login endpoint.
                    jwt.expose_secret(),
                    Some(role.to_owned()),
                )
                .await
            }
        })
        .await
        .map_err(|e| {
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::InvalidInput
            ) {
                Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "Vault rejected the JWT login at {path} for role {role:?}: the JWT in {} is expired, not signed by a trusted key, or its claims (audience, bound claims) do not match the role",
                        token_file.display()
                    ),
                )
                .with_context("backend", "vault")
                .with_context("path", path.as_str())
            } else {
                e
            }
        })
    }

    /// Applies `f` to the session if it is still at `generation`.
    fn update(&self, generation: u64, f: impl FnOnce(&mut Session)) {
        let mut s = self.write();
        if s.generation == generation {
            f(&mut s);
            s.generation += 1;
        }
    }

    async fn renew(&self, generation: u64) {
        let (client, lease, failures) = {
            let s = self.read();
            (
                Arc::clone(&s.clients[self.current_index()]),
                s.lease,
                s.failures,
            )
        };
        let Some(lease) = lease else { return };
        let increment = format!("{}s", lease.increment.as_secs().max(1));
        let approle = self.config.auth.logs_in();
        match vaultrs::token::renew_self(&*client, Some(&increment)).await {
            Ok(auth) => {
                let now = Instant::now();
                let ttl = Duration::from_secs(auth.lease_duration);
                // Vault caps renewals at the token's max TTL. A renewal that no longer
                // pushes the expiry out means renewal is exhausted; AppRole logs in
                // again as soon as a renewal comes back capped, while the new token
                // can still be fetched in good time.
                let capped = ttl + EXPIRY_MARGIN < lease.increment;
                let extended = now + ttl > lease.expires_at + EXPIRY_MARGIN / 2;
                let exhausted = !extended || (approle && capped);
                let new_lease = Lease {
                    expires_at: now + ttl,
                    increment: lease.increment,
                    renewable: auth.renewable && !exhausted,
                };
                let next = if ttl.is_zero() {
                    None
                } else {
                    plan(Some(new_lease), &self.config.auth, self.config.renew, now)
                };
                if next.is_none() && !ttl.is_zero() {
                    tracing::warn!(
                        backend = "vault",
                        ttl_secs = ttl.as_secs(),
                        "Vault token reached its maximum TTL and cannot be renewed further; requests fail once it expires"
                    );
                } else {
                    tracing::info!(
                        backend = "vault",
                        ttl_secs = ttl.as_secs(),
                        capped,
                        "renewed Vault token"
                    );
                }
                self.update(generation, |s| {
                    s.lease = Some(new_lease);
                    s.next = next;
                    s.failures = 0;
                });
            }
            Err(e) => {
                let err = map_error(e, self.op("token renewal", RENEW_PATH));
                let now = Instant::now();
                let next = if err.is_temporary() && lease.expires_at > now {
                    let left = lease.expires_at - now;
                    let wait = retry_delay(failures).min(left / 2);
                    tracing::warn!(backend = "vault", error = %err, retry_in_ms = wait.as_millis() as u64, "Vault token renewal failed; retrying");
                    Some(Planned {
                        at: now + wait,
                        action: Action::Renew,
                    })
                } else if approle {
                    tracing::warn!(backend = "vault", error = %err, "Vault token renewal failed; logging in again with AppRole");
                    Some(Planned {
                        at: now,
                        action: Action::Login,
                    })
                } else {
                    tracing::error!(backend = "vault", error = %err, "Vault token renewal failed; requests fail once the token expires");
                    None
                };
                self.update(generation, |s| {
                    s.next = next;
                    s.failures = s.failures.saturating_add(1);
                });
            }
        }
    }

    async fn relogin(&self, generation: u64) {
        let _one_login = self.login_lock.lock().await;
        if self.read().generation != generation {
            return;
        }
        if let Err(err) = self.login_locked().await {
            let failures = self.read().failures;
            let wait = retry_delay(failures);
            tracing::error!(backend = "vault", error = %err, retry_in_ms = wait.as_millis() as u64, "Vault AppRole login failed; retrying");
            self.update(generation, |s| {
                s.next = Some(Planned {
                    at: Instant::now() + wait,
                    action: Action::Login,
                });
                s.failures = s.failures.saturating_add(1);
            });
        }
    }

    /// The auth method and when the token expires, for Debug.
    pub(crate) fn token_expires_in(&self) -> Option<Duration> {
        self.read()
            .lease
            .map(|l| l.expires_at.saturating_duration_since(Instant::now()))
    }
}

/// The renewal loop. Holds only a `Weak`, so it never keeps the storage alive.
async fn maintain(weak: Weak<Inner>, changed: Arc<Notify>) {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        // Register before reading the plan, so a change in between is not missed.
        notified.as_mut().enable();
        let (generation, next) = {
            let Some(inner) = weak.upgrade() else { return };
            let s = inner.read();
            (s.generation, s.next)
        };
        let Some(planned) = next else { return };
        tokio::select! {
            () = tokio::time::sleep_until(planned.at) => {}
            () = &mut notified => continue,
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.read().generation != generation {
            continue;
        }
        match planned.action {
            Action::Renew => inner.renew(generation).await,
            Action::Login => inner.relogin(generation).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(secs: u64, renewable: bool, now: Instant) -> Lease {
        Lease {
            expires_at: now + Duration::from_secs(secs),
            increment: Duration::from_secs(secs),
            renewable,
        }
    }

    #[test]
    fn plans_renewal_at_two_thirds_of_the_ttl() {
        let now = Instant::now();
        let token = VaultAuth::token("t");
        let approle = VaultAuth::approle("r", "s");
        let p = plan(Some(lease(30, true, now)), &token, true, now).unwrap();
        assert_eq!(p.action, Action::Renew);
        assert_eq!(p.at - now, Duration::from_secs(20));

        // Renewal turned off or impossible: tokens are left to expire, AppRole logs in.
        assert!(plan(Some(lease(30, true, now)), &token, false, now).is_none());
        assert!(plan(Some(lease(30, false, now)), &token, true, now).is_none());
        let p = plan(Some(lease(30, false, now)), &approle, true, now).unwrap();
        assert_eq!(p.action, Action::Login);
        assert_eq!(p.at - now, Duration::from_secs(20));

        // Non-expiring tokens need nothing.
        assert!(plan(None, &approle, true, now).is_none());
    }

    #[test]
    fn retry_delay_grows_and_is_bounded() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(60), MAX_RETRY);
    }
}
