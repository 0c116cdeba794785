//! Health checks (feature `health`): probe a credential with its spec's request.
//!
//! The request goes over reqwest with rustls, the HTTP stack of the OAuth crate, with
//! a timeout. The credential is placed where the spec says; the response status, the
//! time taken and the identity read through the spec's JSON pointer are recorded, and
//! the account's status is saved (`active` on an expected status, `failed` on a
//! rejection; the credential is always kept). Values never appear in a report, a log
//! or an error: transport errors are reduced to their class, because reqwest's own
//! messages include the URL, which may carry a query-string key.
//!
//! Probes are limited to [`HealthChecker::with_concurrency`] at once and cached per
//! credential version for [`HealthChecker::with_cache_ttl`]: concurrent checks of one
//! credential wait for one probe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hive_cred_core::{
    AccountStatus, CredentialIdentity, CredentialObject, CredentialStore, Error, ExposeSecret,
    Result,
};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::spec::{AuthPlacement, CredentialSpec, HealthCheckSpec, IdentityField};

/// The outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthStatus {
    /// An expected status: the credential works.
    Healthy,
    /// The service rejected the credential (401, 403, other unexpected 4xx).
    Rejected,
    /// The service asked to slow down (429): nothing is known about the credential.
    RateLimited,
    /// The service failed (5xx), timed out or could not be reached: inconclusive.
    Unavailable,
}

impl HealthStatus {
    /// `healthy`, `rejected`, `rate_limited` or `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Rejected => "rejected",
            HealthStatus::RateLimited => "rate_limited",
            HealthStatus::Unavailable => "unavailable",
        }
    }
}

/// What one health check found. Holds no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The credential id.
    pub id: String,
    /// The outcome.
    pub status: HealthStatus,
    /// The HTTP status, when a response came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How long the request took, in milliseconds.
    pub elapsed_ms: u64,
    /// When it was checked (the store's clock).
    pub checked_at: DateTime<Utc>,
    /// The identity read from the response, if the spec says where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<CredentialIdentity>,
    /// Why, for anything but `healthy` (no value, no response body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HealthReport {
    /// Whether the credential works.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<(u64, DateTime<Utc>, HealthReport)>>>;

/// Runs health checks, limited and cached.
///
/// # Default
/// Timeout 10 s, 4 probes at once, cached 300 s.
#[derive(Debug, Clone)]
pub struct HealthChecker {
    client: reqwest::Client,
    timeout: Duration,
    cache_ttl: Duration,
    limit: Arc<Semaphore>,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    probes: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self::new()
    }
}

/// The most of a response body read for the identity.
const MAX_BODY: usize = 256 * 1024;

impl HealthChecker {
    /// A checker with the defaults.
    pub fn new() -> Self {
        HealthChecker {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            timeout: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(300),
            limit: Arc::new(Semaphore::new(4)),
            slots: Arc::default(),
            probes: Arc::default(),
        }
    }

    /// How long one probe may take.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a result is reused for the same credential version.
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How many probes may run at once (at least 1).
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.limit = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// How many HTTP probes this checker (and its clones) has made.
    pub fn probes_made(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks `id` with `spec`'s health check and records the result on the account
    /// (status, time, identity). `Ok(None)` when the spec has no health check. Errors
    /// are those of loading the credential; a failing probe is a report, not an error.
    pub async fn check(
        &self,
        store: &CredentialStore,
        id: &str,
        spec: &CredentialSpec,
    ) -> Result<Option<HealthReport>> {
        if spec.health_check.is_none() {
            return Ok(None);
        }
        let credential = store.get(id).await?;
        self.check_loaded(store, &credential, spec).await
    }

    /// [`check`](Self::check) of a credential the caller has already loaded from `store`.
    pub async fn check_loaded(
        &self,
        store: &CredentialStore,
        credential: &CredentialObject,
        spec: &CredentialSpec,
    ) -> Result<Option<HealthReport>> {
        let Some(check) = &spec.health_check else {
            return Ok(None);
        };
        let id = credential.id().as_str();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry(credential.id().to_string())
                .or_default()
                .clone()
        };
        let mut cached = slot.lock().await;
        let now = store.clock().now();
        let ttl = chrono::Duration::from_std(self.cache_ttl).unwrap_or(chrono::Duration::MAX);
        if let Some((version, at, report)) = &*cached
            && *version == credential.version()
            && now < *at + ttl
        {
            return Ok(Some(report.clone()));
        }
        let report = {
            let _permit = self.limit.acquire().await.map_err(|_| {
                Error::unavailable("the health checker was shut down").with_context("id", id)
            })?;
            self.probe(credential, spec.probe_key(), check, now).await
        };
        let status = match report.status {
            HealthStatus::Healthy => Some(AccountStatus::Active),
            HealthStatus::Rejected => Some(AccountStatus::Failed),
            _ => None,
        };
        let mut version = credential.version();
        if let Some(status) = status {
            match store
                .record_check(credential.id().as_str(), status, report.identity.clone())
                .await
            {
                Ok(saved) => version = saved.version(),
                Err(e) => {
                    tracing::warn!(target: "hive_cred::health", id, kind = %e.kind(), "could not record the health check on the credential");
                }
            }
        }
        *cached = Some((version, now, report.clone()));
        Ok(Some(report))
    }

    async fn probe(
        &self,
        credential: &CredentialObject,
        key: &str,
        check: &HealthCheckSpec,
        now: DateTime<Utc>,
    ) -> HealthReport {
        let id = credential.id().to_string();
        let mut report = HealthReport {
            id: id.clone(),
            status: HealthStatus::Unavailable,
            http_status: None,
            elapsed_ms: 0,
            checked_at: now,
            identity: None,
            detail: None,
        };
        let request = match self.request(credential, key, check) {
            Ok(r) => r,
            Err(detail) => {
                report.status = HealthStatus::Rejected;
                report.detail = Some(detail);
                return report;
            }
        };
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let sent = tokio::time::timeout(self.timeout, async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = if check.identity_pointer.is_some() && check.expect_status.contains(&status)
            {
                read_limited(response).await
            } else {
                None
            };
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match sent {
            Err(_) => report.detail = Some(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => {
                // Only the class: reqwest's message holds the URL.
                let class = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                report.detail = Some(class.to_owned());
            }
            Ok(Ok((status, body))) => {
                report.http_status = Some(status);
                if check.expect_status.contains(&status) {
                    report.status = HealthStatus::Healthy;
                    report.identity = body.as_deref().and_then(|b| identity_from(b, check));
                } else if status == 429 {
                    report.status = HealthStatus::RateLimited;
                    report.detail = Some("rate limited (429)".to_owned());
                } else if (500..600).contains(&status) {
                    report.detail = Some(format!("service error ({status})"));
                } else {
                    report.status = HealthStatus::Rejected;
                    report.detail = Some(format!("unexpected status {status}"));
                }
            }
        }
        tracing::debug!(target: "hive_cred::health", id = %id, status = report.status.as_str(), http_status = report.http_status, elapsed_ms = report.elapsed_ms, "health check");
        report
    }

    fn request(
        &self,
        credential: &CredentialObject,
        key: &str,
        check: &HealthCheckSpec,
    ) -> std::result::Result<reqwest::RequestBuilder, String> {
        let method = reqwest::Method::from_bytes(check.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method {:?}", check.method))?;
        // The whole exchange runs under `tokio::time::timeout(self.timeout)`.
        let mut req = self.client.request(method, &check.url);
        for (k, v) in &check.headers {
            req = req.header(k, v);
        }
        let value = |name: &str| {
            credential
                .get_key(name)
                .ok_or_else(|| format!("the credential has no key `{name}`"))
        };
        req = match check.auth {
            // EXPOSE: the value is sent to the service the spec names, to check it.
            AuthPlacement::Bearer => req.bearer_auth(value(key)?.expose_secret()),
            AuthPlacement::Header => {
                let name = check.header.as_deref().unwrap_or("Authorization");
                let prefix = check.prefix.as_deref().unwrap_or("");
                // EXPOSE: the value is sent to the service the spec names, to check it.
                let mut v = reqwest::header::HeaderValue::from_str(&format!(
                    "{prefix}{}",
                    value(key)?.expose_secret()
                ))
                .map_err(|_| "the value cannot be sent in a header".to_owned())?;
                v.set_sensitive(true);
                req.header(name, v)
            }
            AuthPlacement::Query => {
                let param = check.param.as_deref().unwrap_or("key");
                // EXPOSE: the value is sent to the service the spec names, to check it.
                req.query(&[(param, value(key)?.expose_secret())])
            }
            AuthPlacement::Basic => {
                // EXPOSE: the values are sent to the service the spec names, to check them.
                let user = value("username")?.expose_secret().to_owned();
                // EXPOSE: as above.
                req.basic_auth(user, Some(value("password")?.expose_secret()))
            }
        };
        Ok(req)
    }
}

async fn read_limited(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn identity_from(body: &[u8], check: &HealthCheckSpec) -> Option<CredentialIdentity> {
    let pointer = check.identity_pointer.as_deref()?;
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let found = match json.pointer(pointer)? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let who = CredentialIdentity::new();
    Some(match check.identity_field {
        IdentityField::Email => who.with_email(found),
        IdentityField::Username => who.with_username(found),
        IdentityField::Workspace => who.with_workspace(found),
        IdentityField::AccountId => who.with_account_id(found),
    })
}
