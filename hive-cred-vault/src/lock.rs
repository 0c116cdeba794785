//! Lease locks kept in KV itself: [`VaultStorage`]'s [`CredentialStorage::lock`].
//!
//! The lock of credential `id` is the KV v2 secret `{prefix}/.locks/{id}`. Credential ids
//! never start with `.` and never contain `/`, so it cannot collide with a credential,
//! and `list` skips it like every sub-folder. Its data is
//!
//! ```json
//! {"v": 1, "state": "held", "holder": "4711-8f3a2c1d",
//!  "expires_at": "2030-01-01T00:01:00Z", "expires_at_ms": 1893456060000}
//! ```
//!
//! or, once released, `"state": "released"`. Every write is a check-and-set on the lock
//! secret's own KV version, so Vault itself is the arbiter:
//!
//! - **Create**: no lock secret yet (or its latest version was deleted by hand): write
//!   with `cas = 0` (`cas = current version` for a deleted one). Two creators: one wins,
//!   the other gets a check-and-set conflict and waits. A read that answered 404 is
//!   followed by a metadata read; if that finds a live version (someone created the
//!   lock in between), the attempt counts as busy: a version learnt from metadata is
//!   only ever used as `cas` when that version is deleted.
//! - **Take over**: the secret says `released`, or `held` with `expires_at` in the past by
//!   the taker's clock: write with `cas = the version just read`. Two takers read the same
//!   version; only one write can succeed.
//! - **Release**: the holder writes `released` with `cas = the version it wrote`. It
//!   succeeds only if nobody wrote since, i.e. only the current holder can release, and a
//!   holder whose lease expired and was taken over cannot release the new holder's lock
//!   (its release fails with `Conflict`). This is why release is a check-and-set write and
//!   not a read-check-delete: between a holder's read and its delete, a taker could take
//!   over an expired lease, and the delete would then remove the taker's lock.
//!
//! The lock secret is never deleted by this crate (its versions are pruned by the KV
//! mount's `max_versions`). Deleting it by hand while agents run can let a stale holder's
//! release (`cas = N`) hit a re-created secret at the same version: don't.
//!
//! # Clocks
//! Expiry is judged by the wall clock of the process that wants the lock, against the
//! `expires_at` the holder stamped with its own wall clock; Vault's clock is not used.
//! A holder is guaranteed exclusive use for `ttl - skew`, where `skew` is how far the
//! taker's clock runs ahead of the holder's. Hosts must keep their clocks synchronised
//! (NTP) to well within the TTL (`ttl >> skew`; the default TTL is 60 s, NTP keeps
//! skew in milliseconds), and the TTL must exceed the longest refresh.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use hive_cred_core::lock::{CredentialLock, LockOptions, LockRelease};
use hive_cred_core::{Clock, CredentialId, Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use vaultrs::api::kv2::requests::ReadSecretRequest;

use crate::session::Inner;
use crate::storage::request_error;

/// The folder below the path prefix that holds the lock secrets.
pub(crate) const LOCK_FOLDER: &str = ".locks";
/// The layout version of a lock secret.
const LOCK_LAYOUT: u32 = 1;
/// First pause between attempts; doubled up to [`MAX_PAUSE`], each jittered.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Held,
    Released,
}

/// The data of a lock secret. Not secret: holder names and times only.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    v: u32,
    state: State,
    holder: String,
    /// RFC 3339, for operators reading the secret.
    expires_at: String,
    /// What takers compare against.
    expires_at_ms: i64,
}

impl Record {
    /// A record of `state` by `holder`, expiring (or released) at `at`.
    fn new(state: State, holder: &str, at: DateTime<Utc>) -> Self {
        Record {
            v: LOCK_LAYOUT,
            state,
            holder: holder.to_owned(),
            expires_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            expires_at_ms: at.timestamp_millis(),
        }
    }
}

/// The lock secret as last read.
#[derive(Debug)]
enum Seen {
    /// No lock secret (or its latest version is deleted): create at this `cas`.
    Free { cas: u64 },
    /// Released or expired: take over at this `cas`.
    Takeable {
        cas: u64,
        expired_holder: Option<String>,
    },
    /// Written by someone else while it was being read: read again.
    Changed,
    /// Held by someone else until `expires_at`.
    Busy {
        holder: String,
        expires_at: DateTime<Utc>,
    },
}

/// The lock secret's path below the mount: `{prefix}/.locks/{id}`.
pub(crate) fn lock_secret_path(prefix: &str, id: &str) -> String {
    if prefix.is_empty() {
        format!("{LOCK_FOLDER}/{id}")
    } else {
        format!("{prefix}/{LOCK_FOLDER}/{id}")
    }
}

/// One credential's lease lock, as the code that takes and releases it sees it.
struct Lease<'a> {
    inner: &'a Arc<Inner>,
    clock: &'a Arc<dyn Clock>,
    id: &'a CredentialId,
    /// Below the mount.
    secret: String,
    /// `{mount}/data/{secret}`, for errors and logs.
    path: String,
}

impl<'a> Lease<'a> {
    fn new(inner: &'a Arc<Inner>, clock: &'a Arc<dyn Clock>, id: &'a CredentialId) -> Self {
        let secret = lock_secret_path(inner.config.path_prefix(), id.as_str());
        let path = format!("{}/data/{secret}", inner.config.mount());
        Lease {
            inner,
            clock,
            id,
            secret,
            path,
        }
    }

    fn context(&self, e: Error) -> Error {
        e.with_context("id", self.id)
            .with_context("backend", "vault")
            .with_context("path", &self.path)
    }

    /// Reads the lock secret and classifies it.
    async fn read(&self) -> Result<Seen> {
        let build = || {
            ReadSecretRequest::builder()
                .mount(self.inner.config.mount())
                .path(&self.secret)
                .build()
                .map_err(request_error)
        };
        build()?;
        let response = self
            .inner
            .kv("lock read", &self.path, || {
                build().expect("the same request was built above")
            })
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return if e.kind() == ErrorKind::NotFound {
                    // 404: no lock secret, or its latest version was deleted by hand
                    // (Vault answers that with 404 too). Metadata tells which.
                    self.after_not_found().await
                } else {
                    Err(self.context(e))
                };
            }
        };
        let version = response.metadata.version;
        if response.data.is_null()
            || response.metadata.destroyed
            || !response.metadata.deletion_time.is_empty()
        {
            return Ok(Seen::Free { cas: version });
        }
        let record = parse_record(response.data).map_err(|e| self.context(e))?;
        match record.state {
            State::Released => Ok(Seen::Takeable {
                cas: version,
                expired_holder: None,
            }),
            State::Held => {
                let now_ms = self.clock.now().timestamp_millis();
                if now_ms >= record.expires_at_ms {
                    Ok(Seen::Takeable {
                        cas: version,
                        expired_holder: Some(record.holder),
                    })
                } else {
                    let expires_at = DateTime::<Utc>::from_timestamp_millis(record.expires_at_ms)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    Ok(Seen::Busy {
                        holder: record.holder,
                        expires_at,
                    })
                }
            }
        }
    }

    /// Classifies a lock secret whose read answered 404: absent (create with `cas=0`),
    /// latest version deleted by hand (create with `cas=` that version), or created by
    /// someone else between the read and this metadata read (busy: its live version
    /// must never be overwritten on the strength of the earlier 404).
    async fn after_not_found(&self) -> Result<Seen> {
        let build = || {
            vaultrs::api::kv2::requests::ReadSecretMetadataRequest::builder()
                .mount(self.inner.config.mount())
                .path(&self.secret)
                .build()
                .map_err(request_error)
        };
        build()?;
        let meta = self
            .inner
            .kv("lock read", &self.path, || {
                build().expect("the same request was built above")
            })
            .await;
        match meta {
            Ok(meta) => {
                let live = meta
                    .versions
                    .get(&meta.current_version.to_string())
                    .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed);
                if live {
                    Ok(Seen::Changed)
                } else {
                    Ok(Seen::Free {
                        cas: meta.current_version,
                    })
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::NotFound {
                    Ok(Seen::Free { cas: 0 })
                } else {
                    Err(self.context(e))
                }
            }
        }
    }

    /// Writes `record` with check-and-set; the written version, or `None` when another
    /// writer got there first.
    async fn write(&self, record: &Record, cas: u64, op: &'static str) -> Result<Option<u64>> {
        let cas = u32::try_from(cas).map_err(|_| {
            self.context(Error::new(
                ErrorKind::Corrupted,
                format!("lock secret version {cas} is beyond what Vault's check-and-set accepts"),
            ))
        })?;
        let data = serde_json::to_value(record).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("could not encode the lock record: {e}"),
            )
        })?;
        let mount = self.inner.config.mount();
        match self
            .inner
            .write_cas(op, &self.path, (mount, &self.secret), &data, cas)
            .await
        {
            Ok(version) => Ok(Some(version)),
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(None),
            Err(e) => Err(self.context(e)),
        }
    }

    /// One attempt: the held version, or who holds it until when.
    async fn try_take(&self, options: &LockOptions) -> Result<Attempt> {
        let (cas, expired_holder) = match self.read().await? {
            Seen::Free { cas } => (cas, None),
            Seen::Takeable {
                cas,
                expired_holder,
            } => (cas, expired_holder),
            Seen::Busy { holder, expires_at } => {
                return Ok(Attempt::Busy {
                    holder: Some(holder),
                    expires_at: Some(expires_at),
                });
            }
            Seen::Changed => {
                return Ok(Attempt::Busy {
                    holder: None,
                    expires_at: None,
                });
            }
        };
        let ttl = chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = self
            .clock
            .now()
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let record = Record::new(State::Held, &options.holder, expires_at);
        match self.write(&record, cas, "lock").await? {
            Some(version) => {
                if let Some(previous) = expired_holder {
                    tracing::warn!(
                        backend = "vault",
                        id = %self.id,
                        previous_holder = %previous,
                        holder = %options.holder,
                        "took over an expired credential lock: its holder died or outlived the lock TTL"
                    );
                }
                Ok(Attempt::Held { version })
            }
            None => Ok(Attempt::Busy {
                holder: None,
                expires_at: None,
            }),
        }
    }
}

enum Attempt {
    Held {
        version: u64,
    },
    /// Someone else has it (`holder`/`expires_at` unknown after a lost write race).
    Busy {
        holder: Option<String>,
        expires_at: Option<DateTime<Utc>>,
    },
}

fn parse_record(data: Value) -> Result<Record> {
    let v = data.get("v").and_then(Value::as_u64);
    match v {
        Some(v) if v > u64::from(LOCK_LAYOUT) => Err(Error::corrupted(format!(
            "the credential lock secret has layout version {v}, newer than this hive-cred understands ({LOCK_LAYOUT}); upgrade hive-cred"
        ))),
        Some(_) => serde_json::from_value(data).map_err(|e| {
            Error::corrupted(format!(
                "the credential lock secret is malformed ({e}); delete it (`bao kv metadata delete`) while no agent refreshes the credential"
            ))
        }),
        None => Err(Error::corrupted(
            "the secret at the credential lock path is not a hive-cred lock; delete it (`bao kv metadata delete`) while no agent refreshes the credential",
        )),
    }
}

/// A pause of `base` ± 50 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// Takes the lease lock of `id` (see the module docs).
pub(crate) async fn acquire(
    inner: &Arc<Inner>,
    clock: &Arc<dyn Clock>,
    id: &CredentialId,
    options: &LockOptions,
) -> Result<CredentialLock> {
    if options.ttl.is_zero() {
        return Err(Error::invalid_input(
            "LockOptions::ttl must be longer than zero for Vault leases",
        )
        .with_context("id", id)
        .with_context("backend", "vault"));
    }
    let lease = Lease::new(inner, clock, id);
    let started = Instant::now();
    let deadline = started + options.wait;
    let mut pause = FIRST_PAUSE;
    loop {
        let (holder, expires_at) = match lease.try_take(options).await? {
            Attempt::Held { version } => {
                tracing::debug!(
                    backend = "vault",
                    id = %id,
                    version,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "took credential lock"
                );
                return Ok(CredentialLock::new(
                    id.clone(),
                    HeldLease::start(inner, clock, id, options, version),
                ));
            }
            Attempt::Busy { holder, expires_at } => (holder, expires_at),
        };
        let now = Instant::now();
        if now >= deadline {
            let mut e = Error::unavailable(format!(
                "could not take the credential's Vault lock within {:?}: another process holds it",
                options.wait
            ));
            if let Some(h) = holder {
                e = e.with_context("holder", h);
            }
            if let Some(at) = expires_at {
                e = e.with_context(
                    "lock_expires_at",
                    at.to_rfc3339_opts(SecondsFormat::Millis, true),
                );
            }
            return Err(lease.context(e));
        }
        // Sleep no longer than until the lease expires (then it can be taken over at
        // once) or the deadline.
        let mut sleep = jittered(pause);
        if let Some(at) = expires_at {
            let left = (at - lease.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .saturating_add(Duration::from_millis(1));
            sleep = sleep.min(left);
        }
        tokio::time::sleep(sleep.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The shared state of a held lease: the lock secret's version this holder last
/// wrote, and whether it still holds it. Renewals and the release take it in turn, so
/// a release never races a renewal's write.
#[derive(Debug)]
struct LeaseState {
    version: u64,
    /// `false` once released, or once a renewal found the lease taken over.
    held: bool,
}

/// A held lease. While held it is renewed every third of its TTL (`expires_at` moved a
/// TTL ahead, check-and-set on the version this holder wrote), so a refresh that runs
/// long (a slow token endpoint, a save retried while storage is down) keeps it. Releasing
/// writes `released` with check-and-set on its version.
struct HeldLease {
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
    id: CredentialId,
    holder: String,
    state: Arc<tokio::sync::Mutex<LeaseState>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLease {
    fn start(
        inner: &Arc<Inner>,
        clock: &Arc<dyn Clock>,
        id: &CredentialId,
        options: &LockOptions,
        version: u64,
    ) -> Self {
        let state = Arc::new(tokio::sync::Mutex::new(LeaseState {
            version,
            held: true,
        }));
        let renewer = tokio::runtime::Handle::try_current().ok().map(|handle| {
            handle.spawn(renew(
                Arc::clone(inner),
                Arc::clone(clock),
                id.clone(),
                options.clone(),
                Arc::clone(&state),
            ))
        });
        HeldLease {
            inner: Arc::clone(inner),
            clock: Arc::clone(clock),
            id: id.clone(),
            holder: options.holder.clone(),
            state,
            renewer,
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// Renews a held lease every third of its TTL until it is released or lost.
async fn renew(
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
    id: CredentialId,
    options: LockOptions,
    state: Arc<tokio::sync::Mutex<LeaseState>>,
) {
    // A third of the TTL, but never a busy loop for a TTL of a few nanoseconds.
    let every = (options.ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let mut st = state.lock().await;
        if !st.held {
            return;
        }
        let lease = Lease::new(&inner, &clock, &id);
        let expires_at = clock
            .now()
            .checked_add_signed(
                chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::MAX),
            )
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let record = Record::new(State::Held, &options.holder, expires_at);
        match lease.write(&record, st.version, "lock renewal").await {
            Ok(Some(version)) => {
                st.version = version;
                tracing::trace!(backend = "vault", id = %id, version, "renewed credential lock");
            }
            Ok(None) => {
                st.held = false;
                tracing::error!(
                    backend = "vault",
                    id = %id,
                    holder = %options.holder,
                    "the credential's Vault lock was taken over while held (this holder stalled past its TTL); its save will fail by check-and-set if another holder saved first"
                );
                return;
            }
            Err(e) => {
                // Vault unreachable: keep trying; the lease stays valid until its TTL.
                tracing::warn!(backend = "vault", id = %id, kind = %e.kind(), "renewing the credential's Vault lock failed; retrying");
            }
        }
    }
}

impl fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultLease")
            .field("id", &self.id)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LockRelease for HeldLease {
    async fn release(mut self: Box<Self>) -> Result<()> {
        let mut st = self.state.lock().await;
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let lost = !st.held;
        st.held = false;
        let lease = Lease::new(&self.inner, &self.clock, &self.id);
        let taken_over = || {
            lease.context(Error::conflict(
                &self.id,
                "the credential's Vault lock was taken over by another holder after its lease expired; it was not released (raise LockOptions::ttl above the longest refresh)",
            ))
            .with_context("holder", &self.holder)
        };
        if lost {
            return Err(taken_over());
        }
        let now = self.clock.now();
        let record = Record::new(State::Released, &self.holder, now);
        match lease.write(&record, st.version, "unlock").await? {
            Some(_) => {
                tracing::debug!(backend = "vault", id = %self.id, "released credential lock");
                Ok(())
            }
            None => Err(taken_over()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_paths_sit_in_a_dot_folder_below_the_prefix() {
        assert_eq!(
            lock_secret_path("hive/credentials", "github"),
            "hive/credentials/.locks/github"
        );
        assert_eq!(lock_secret_path("", "github"), ".locks/github");
        // No credential id can name the lock folder.
        assert!(CredentialId::new(LOCK_FOLDER).is_err());
    }

    #[test]
    fn records_round_trip_and_reject_foreign_data() {
        let r = Record {
            v: 1,
            state: State::Held,
            holder: "4711-abc".into(),
            expires_at: "2030-01-01T00:00:00.000Z".into(),
            expires_at_ms: 1_893_456_000_000,
        };
        let back = parse_record(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back.state, State::Held);
        assert_eq!(back.holder, "4711-abc");
        assert_eq!(back.expires_at_ms, r.expires_at_ms);

        let foreign = parse_record(serde_json::json!({"api_key": "x"})).unwrap_err();
        assert_eq!(foreign.kind(), ErrorKind::Corrupted);
        let future = parse_record(serde_json::json!({"v": 9})).unwrap_err();
        assert_eq!(future.kind(), ErrorKind::Corrupted);
        assert!(future.message().contains("newer"), "{future}");
        let broken = parse_record(serde_json::json!({"v": 1, "state": "held"})).unwrap_err();
        assert_eq!(broken.kind(), ErrorKind::Corrupted);
    }

    #[test]
    fn jitter_stays_within_half_either_side() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(150));
        }
    }
}
