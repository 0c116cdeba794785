//! Canary credentials (honeytokens): credentials no legitimate step ever uses, whose
//! every use raises an alert.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use hive_cred_core::{
    AccessEvent, AccessHook, AccessOperation, AccessOutcome, Clock, CredentialObject, ExposeSecret,
    SecretString, SystemClock,
};
use serde::Serialize;

use crate::audit::{AuditLog, AuditRecord, current_node};

/// The tag that marks a credential as a canary.
pub const CANARY_TAG: &str = "hive:canary";

/// How many alerts a [`CanaryMonitor`] keeps in memory.
const KEPT_ALERTS: usize = 256;

tokio::task_local! {
    static DESTINATION: Arc<str>;
}

/// The destination the injecting HTTP client is filling a request for on this task.
pub(crate) fn current_destination() -> Option<Arc<str>> {
    DESTINATION.try_with(Arc::clone).ok()
}

/// Runs `fut` with `destination` as the destination of canary alerts raised on it.
#[cfg_attr(
    not(feature = "http"),
    allow(dead_code, reason = "only the injecting client names destinations")
)]
pub(crate) async fn with_destination<F: Future>(destination: Arc<str>, fut: F) -> F::Output {
    DESTINATION.scope(destination, fut).await
}

/// One use of a canary credential. Holds no secret values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CanaryAlert {
    /// When (from the runtime's clock).
    pub time: DateTime<Utc>,
    /// The canary credential.
    pub credential_id: String,
    /// The key, when known.
    pub key: Option<String>,
    /// The node whose task used it.
    pub node: Option<String>,
    /// Where it was being sent (`scheme://host:port/path`), for uses by the injecting
    /// HTTP client.
    pub destination: Option<String>,
    /// How it was used: `get`, `get_key`, `resolve` (through the store, including
    /// injections and opaque handles), `refused_injection`, `outgoing_request` (its value
    /// was in a request a tool built) or `tool_output` (its value was in a response body).
    pub via: Cow<'static, str>,
}

impl fmt::Display for CanaryAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "canary `{}` used via {} by node {}",
            self.credential_id,
            self.via,
            self.node.as_deref().unwrap_or("-")
        )?;
        if let Some(d) = &self.destination {
            write!(f, " towards {d}")?;
        }
        Ok(())
    }
}

type AlertHandler = Arc<dyn Fn(&CanaryAlert) + Send + Sync>;

/// Watches canary credentials (tagged [`CANARY_TAG`]) and raises a [`CanaryAlert`] on
/// every use: a `get`, `get_key` or `resolve` through the store (it is an
/// [`AccessHook`]), an injection by the HTTP client (with the destination), or the
/// canary's value seen in an outgoing request or in tool output.
///
/// Each alert goes to `tracing` (target `hive_cred::canary`, level ERROR), to the
/// runtime's audit log (operation `canary`, outcome `alert`, with node and
/// destination), to the in-memory list [`alerts`](Self::alerts) and to every handler
/// registered with [`on_alert`](Self::on_alert).
///
/// The runtime's monitor learns canaries from every credential its storage loads or
/// saves; [`AgentRuntime::arm_canaries`](crate::AgentRuntime::arm_canaries) loads them
/// all up front, so a canary value is recognised before anything reads it.
///
/// Cloning is cheap; clones share state.
#[derive(Clone)]
pub struct CanaryMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Canary id -> its keys and values.
    canaries: RwLock<HashMap<String, Vec<(String, SecretString)>>>,
    alerts: Mutex<VecDeque<CanaryAlert>>,
    handlers: Mutex<Vec<AlertHandler>>,
    audit: Option<Arc<AuditLog>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CanaryMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CanaryMonitor")
            .field("canaries", &self.canary_ids())
            .field("alerts", &self.lock_alerts().len())
            .finish_non_exhaustive()
    }
}

impl Default for CanaryMonitor {
    fn default() -> Self {
        CanaryMonitor::new()
    }
}

impl CanaryMonitor {
    /// A monitor without an audit log, on the system clock.
    pub fn new() -> Self {
        Self::build(None, Arc::new(SystemClock))
    }

    pub(crate) fn build(audit: Option<Arc<AuditLog>>, clock: Arc<dyn Clock>) -> Self {
        CanaryMonitor {
            inner: Arc::new(Inner {
                canaries: RwLock::new(HashMap::new()),
                alerts: Mutex::new(VecDeque::new()),
                handlers: Mutex::new(Vec::new()),
                audit,
                clock,
            }),
        }
    }

    /// Whether `credential` is tagged [`CANARY_TAG`].
    pub fn is_canary(credential: &CredentialObject) -> bool {
        credential.tags().iter().any(|t| t == CANARY_TAG)
    }

    /// Learns (or forgets) `credential` as a canary, by its tag.
    pub fn observe(&self, credential: &CredentialObject) {
        let id = credential.id().as_str();
        if Self::is_canary(credential) {
            let values = credential
                .keys()
                .map(|k| (k.name().to_string(), k.value().clone()))
                .collect();
            self.write().insert(id.to_string(), values);
        } else if self.read().contains_key(id) {
            self.write().remove(id);
        }
    }

    /// Whether the credential `id` is a known canary.
    pub fn is_canary_id(&self, id: &str) -> bool {
        let map = self.read();
        !map.is_empty() && map.contains_key(id)
    }

    /// Whether any canary is known.
    pub fn is_armed(&self) -> bool {
        !self.read().is_empty()
    }

    /// The ids of the known canaries, sorted.
    pub fn canary_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.read().keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// Calls `handler` on every alert from now on (inline: keep it fast).
    pub fn on_alert(&self, handler: impl Fn(&CanaryAlert) + Send + Sync + 'static) {
        self.inner
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(handler));
    }

    /// The most recent alerts (at most 256), oldest first.
    pub fn alerts(&self) -> Vec<CanaryAlert> {
        self.lock_alerts().iter().cloned().collect()
    }

    /// Raises an alert for a use of canary `id`.
    pub fn alert(&self, id: &str, key: Option<&str>, via: &'static str, destination: Option<&str>) {
        let destination = destination
            .map(str::to_string)
            .or_else(|| current_destination().map(|d| d.to_string()));
        let alert = CanaryAlert {
            time: self.inner.clock.now(),
            credential_id: id.to_string(),
            key: key.map(str::to_string),
            node: current_node().map(|n| n.to_string()),
            destination,
            via: Cow::Borrowed(via),
        };
        tracing::error!(
            target: "hive_cred::canary",
            credential_id = id,
            key,
            node = alert.node.as_deref(),
            destination = alert.destination.as_deref(),
            via,
            "canary credential used: a prompt injection may be trying to exfiltrate credentials"
        );
        if let Some(audit) = &self.inner.audit {
            audit.append(AuditRecord::runtime_use(
                alert.time,
                id,
                key,
                "canary",
                "alert",
                None,
                alert.destination.as_deref(),
            ));
        }
        let handlers: Vec<AlertHandler> = self
            .inner
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for h in handlers {
            h(&alert);
        }
        let mut alerts = self.lock_alerts();
        if alerts.len() >= KEPT_ALERTS {
            alerts.pop_front();
        }
        alerts.push_back(alert);
    }

    /// Looks for canary values in `bytes` (an outgoing request, tool output) and raises
    /// one alert per canary key found. Returns how many were found.
    pub fn scan(&self, bytes: &[u8], via: &'static str, destination: Option<&str>) -> usize {
        let found: Vec<(String, String)> = {
            let map = self.read();
            if map.is_empty() {
                return 0;
            }
            map.iter()
                .flat_map(|(id, keys)| keys.iter().map(move |(k, v)| (id, k, v)))
                .filter(|(_, _, v)| {
                    // EXPOSE: searched for in the bytes; only whether it is there is kept.
                    let v = v.expose_secret().as_bytes();
                    !v.is_empty() && memchr::memmem::find(bytes, v).is_some()
                })
                .map(|(id, k, _)| (id.clone(), k.clone()))
                .collect()
        };
        for (id, key) in &found {
            self.alert(id, Some(key), via, destination);
        }
        found.len()
    }

    /// Raises an alert for every canary whose redaction marker (`[hive:<id>.`) is in
    /// `redacted` (redacted tool output), except those in `already`, which it extends.
    /// For streams: the redactor catches values split across chunks, and a marker is
    /// never split.
    #[cfg_attr(
        not(feature = "http"),
        allow(dead_code, reason = "only the injecting client redacts responses")
    )]
    pub(crate) fn scan_markers(
        &self,
        redacted: &[u8],
        destination: Option<&str>,
        already: &mut Vec<String>,
    ) {
        if memchr::memmem::find(redacted, b"[hive:").is_none() {
            return;
        }
        let hits: Vec<(String, String)> = {
            let map = self.read();
            map.iter()
                .flat_map(|(id, keys)| keys.iter().map(move |(k, _)| (id, k)))
                .filter(|(id, k)| {
                    !already.iter().any(|a| a == *id)
                        && memchr::memmem::find(redacted, crate::marker(id, k).as_bytes()).is_some()
                })
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect()
        };
        for (id, key) in hits {
            self.alert(&id, Some(&key), "tool_output", destination);
            already.push(id);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<(String, SecretString)>>> {
        // Every update is one insert or remove: consistent after a panic.
        self.inner
            .canaries
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<(String, SecretString)>>> {
        self.inner
            .canaries
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock_alerts(&self) -> std::sync::MutexGuard<'_, VecDeque<CanaryAlert>> {
        self.inner.alerts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AccessHook for CanaryMonitor {
    fn on_access(&self, event: &AccessEvent<'_>) {
        let used = matches!(
            event.operation,
            AccessOperation::Get | AccessOperation::GetKey | AccessOperation::Resolve
        ) && !matches!(event.outcome, AccessOutcome::Error(_));
        if used && self.is_canary_id(event.credential_id) {
            self.alert(
                event.credential_id,
                event.key,
                event.operation.as_str(),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::CredentialType;
    use std::time::Duration;

    fn canary(id: &str, value: &str) -> CredentialObject {
        CredentialObject::builder(id, CredentialType::ApiKey)
            .tag(CANARY_TAG)
            .key("api_key", value, None)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn store_uses_of_a_canary_alert_with_node_and_audit() {
        let audit = Arc::new(AuditLog::new());
        let m = CanaryMonitor::build(Some(audit.clone()), Arc::new(SystemClock));
        m.observe(&canary("decoy", "decoy-value-123456"));
        let ev = |op| {
            AccessEvent::new(
                Utc::now(),
                "decoy",
                None,
                op,
                AccessOutcome::Ok,
                Duration::ZERO,
            )
        };
        crate::with_node("n1", async {
            m.on_access(&ev(AccessOperation::Save));
            m.on_access(&ev(AccessOperation::Get));
        })
        .await;
        let alerts = m.alerts();
        assert_eq!(alerts.len(), 1, "save is not a use, get is");
        assert_eq!(alerts[0].node.as_deref(), Some("n1"));
        assert_eq!(alerts[0].via, "get");
        let rec = audit.records();
        assert_eq!(rec.len(), 1);
        assert_eq!((&*rec[0].operation, &*rec[0].outcome), ("canary", "alert"));
    }

    #[tokio::test]
    async fn scan_finds_values_and_markers_and_untagging_forgets() {
        let m = CanaryMonitor::new();
        let seen = Arc::new(Mutex::new(0));
        let s = seen.clone();
        m.on_alert(move |_| *s.lock().unwrap() += 1);
        m.observe(&canary("decoy", "decoy-value-123456"));
        assert_eq!(
            m.scan(
                b"x decoy-value-123456 y",
                "outgoing_request",
                Some("https://a:443")
            ),
            1
        );
        assert_eq!(m.scan(b"nothing here", "outgoing_request", None), 0);
        let mut already = Vec::new();
        with_destination("https://b:443".into(), async {
            m.scan_markers(
                b"got [hive:decoy.api_key] twice [hive:decoy.api_key]",
                None,
                &mut already,
            );
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), 2);
        assert_eq!(m.alerts()[1].destination.as_deref(), Some("https://b:443"));
        let mut plain = canary("decoy", "decoy-value-123456");
        plain.set_tags(Vec::new());
        m.observe(&plain);
        assert!(!m.is_armed());
        assert!(!format!("{m:?}").contains("decoy-value"));
    }
}
