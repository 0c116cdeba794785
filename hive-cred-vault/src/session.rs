//! The authenticated Vault client: login, token lookup, background renewal.
//!
//! A [`Session`] holds the current client (with its token) and the token's lease. A
//! background task, holding only a `Weak` reference, renews a renewable token at about
//! two thirds of its TTL, redoes the AppRole login when renewal is no longer possible,
//! and ends when the storage is dropped (the task is also aborted then).

use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::config::{VaultAuth, VaultConfig};
use crate::error::{Op, map_error};
use crate::transport;

/// The path of the renew-self endpoint, for errors.
const RENEW_PATH: &str = "auth/token/renew-self";
/// The path of the lookup-self endpoint, for errors.
const LOOKUP_PATH: &str = "auth/token/lookup-self";
/// Requests are made with a fresh token when the current one has less than this left.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
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
    client: Arc<VaultClient>,
    lease: Option<Lease>,
    next: Option<Planned>,
    generation: u64,
    failures: u32,
}

/// Shared state of a `VaultStorage` and its renewal task.
pub(crate) struct Inner {
    pub(crate) config: VaultConfig,
    /// A client without a token: the template for every session client (one shared
    /// connection pool) and the client of AppRole logins.
    base: VaultClient,
    session: RwLock<Session>,
    login_lock: Mutex<()>,
    /// Wakes the renewal task when the session changes outside it (on-demand login).
    changed: Arc<Notify>,
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

/// A client sharing `base`'s HTTP connection pool, sending `token`.
fn derive_client(base: &VaultClient, token: Option<&SecretString>) -> VaultClient {
    let token = match token {
        // vaultrs keeps the token as a plain String in its settings (never printed here).
        // EXPOSE: vaultrs sends the token to Vault in the X-Vault-Token header.
        Some(t) => t.expose_secret().to_owned(),
        None => String::new(),
    };
    let mut settings = base.settings.clone();
    settings.token.clone_from(&token);
    let mut middle = base.middle.clone();
    middle.token = token;
    VaultClient {
        http: rustify::clients::reqwest::Client::new(&base.http.base, base.http.http.clone()),
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

/// When to act on a lease: renew at two thirds of what is left, or log in again.
fn plan(lease: Option<Lease>, auth: &VaultAuth, renew: bool, now: Instant) -> Option<Planned> {
    let lease = lease?;
    let left = lease.expires_at.saturating_duration_since(now);
    let at = now + left * 2 / 3;
    let approle = matches!(auth, VaultAuth::AppRole { .. });
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
            VaultAuth::AppRole { .. } => None,
        };
        let client = Arc::new(derive_client(&base, token));
        let inner = Arc::new(Inner {
            config,
            base,
            session: RwLock::new(Session {
                client,
                lease: None,
                next: None,
                generation: 0,
                failures: 0,
            }),
            login_lock: Mutex::new(()),
            changed: Arc::new(Notify::new()),
        });
        match &inner.config.auth {
            VaultAuth::Token(_) => inner.lookup_token().await?,
            VaultAuth::AppRole { .. } => inner.login().await?,
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
            address: self.config.address.as_str(),
        }
    }

    /// The client to send a request with. An AppRole token that has expired (the
    /// process slept through its renewal, say) is replaced by a new login first.
    pub(crate) async fn client(&self) -> Result<Arc<VaultClient>> {
        let (client, stale, generation) = {
            let s = self.read();
            let stale = s
                .lease
                .is_some_and(|l| l.expires_at <= Instant::now() + EXPIRY_MARGIN);
            (Arc::clone(&s.client), stale, s.generation)
        };
        if !(stale && matches!(self.config.auth, VaultAuth::AppRole { .. })) {
            return Ok(client);
        }
        let _one_login = self.login_lock.lock().await;
        if self.read().generation == generation {
            tracing::info!(
                backend = "vault",
                "Vault token expired; logging in again with AppRole"
            );
            self.login_locked().await?;
        }
        Ok(Arc::clone(&self.read().client))
    }

    /// Looks up the configured token and plans its renewal.
    async fn lookup_token(&self) -> Result<()> {
        let client = Arc::clone(&self.read().client);
        let info = vaultrs::token::lookup_self(&*client).await.map_err(|e| {
            let e = map_error(e, self.op("token lookup", LOOKUP_PATH));
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
        let VaultAuth::AppRole { role_id, secret_id } = &self.config.auth else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "AppRole login requested without AppRole credentials",
            ));
        };
        let path = format!("auth/{}/login", self.config.approle_mount);
        let auth = vaultrs::auth::approle::login(
            &self.base,
            &self.config.approle_mount,
            // EXPOSE: the role id is sent to Vault's AppRole login endpoint.
            role_id.expose_secret(),
            // EXPOSE: the secret id is sent to Vault's AppRole login endpoint.
            secret_id.expose_secret(),
        )
        .await
        .map_err(|e| {
            let e = map_error(e, self.op("AppRole login", &path));
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
        })?;
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
            ttl_secs = auth.lease_duration,
            renewable = auth.renewable,
            "logged in to Vault with AppRole"
        );
        let client = Arc::new(derive_client(&self.base, Some(&token)));
        {
            let mut s = self.write();
            s.client = client;
            s.lease = lease;
            s.next = next;
            s.generation += 1;
            s.failures = 0;
        }
        self.changed.notify_waiters();
        Ok(())
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
            (Arc::clone(&s.client), s.lease, s.failures)
        };
        let Some(lease) = lease else { return };
        let increment = format!("{}s", lease.increment.as_secs().max(1));
        let approle = matches!(self.config.auth, VaultAuth::AppRole { .. });
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
