//! The audit trail: every credential access, by which node, with what outcome.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hive_cred_core::{AccessEvent, AccessHook, AccessOutcome, Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

tokio::task_local! {
    static CURRENT_NODE: Arc<str>;
}

/// The name of the agent node running on this task, if any.
///
/// Set by [`AgentRuntime::run_node`](crate::AgentRuntime::run_node) (and
/// [`with_node`]). Provider refreshes run on their own task (they are shared by every
/// caller waiting on them), so their records carry no node; the `get` that caused them
/// does.
pub fn current_node() -> Option<Arc<str>> {
    CURRENT_NODE.try_with(Arc::clone).ok()
}

/// Runs `fut` with `node` as the current node for audit records.
pub async fn with_node<F: Future>(node: impl Into<Arc<str>>, fut: F) -> F::Output {
    CURRENT_NODE.scope(node.into(), fut).await
}

/// One audited credential access. Holds no secret values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When (from the store's clock).
    pub time: DateTime<Utc>,
    /// The node whose task made the access.
    pub node: Option<String>,
    /// The credential.
    pub credential_id: String,
    /// The key, for key-level operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `get`, `get_key`, `resolve`, `save`, `delete` or `refresh`; `inject` (the HTTP
    /// client attached the credential, or refused to) and `canary` (a canary was used).
    pub operation: Cow<'static, str>,
    /// `ok`, `stale` (old credential served after a failed refresh), `error`, or
    /// `alert` (a canary credential was used).
    pub outcome: Cow<'static, str>,
    /// The error kind when `outcome` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<Cow<'static, str>>,
    /// How long the access took, in microseconds.
    pub duration_us: u64,
    /// Where the credential was sent (`scheme://host:port/path`, no query), for uses by
    /// the injecting HTTP client and canary alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The end user whose view of the store made the access
    /// (`CredentialStore::for_user`); absent for the unscoped store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

impl AuditRecord {
    fn from_event(event: &AccessEvent<'_>, node: Option<&str>) -> Self {
        let (outcome, error_kind) = match event.outcome {
            AccessOutcome::Ok => ("ok", None),
            AccessOutcome::Stale => ("stale", None),
            AccessOutcome::Error(kind) => ("error", Some(Cow::Borrowed(kind.as_str()))),
            _ => ("other", None),
        };
        AuditRecord {
            time: event.time,
            node: node.map(str::to_string),
            credential_id: event.credential_id.to_string(),
            key: event.key.map(str::to_string),
            operation: Cow::Borrowed(event.operation.as_str()),
            outcome: Cow::Borrowed(outcome),
            error_kind,
            duration_us: u64::try_from(event.duration.as_micros()).unwrap_or(u64::MAX),
            destination: None,
            principal: event.principal.map(str::to_string),
        }
    }

    /// A record of a runtime-level use (injection, canary alert) that has no store event.
    pub(crate) fn runtime_use(
        time: DateTime<Utc>,
        credential_id: &str,
        key: Option<&str>,
        operation: &'static str,
        outcome: &'static str,
        error_kind: Option<&'static str>,
        destination: Option<&str>,
    ) -> Self {
        AuditRecord {
            time,
            node: current_node().map(|n| n.to_string()),
            credential_id: credential_id.to_string(),
            key: key.map(str::to_string),
            operation: Cow::Borrowed(operation),
            outcome: Cow::Borrowed(outcome),
            error_kind: error_kind.map(Cow::Borrowed),
            duration_us: 0,
            destination: destination.map(str::to_string),
            principal: None,
        }
    }
}

impl fmt::Display for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} node={} {} {}",
            self.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            self.node.as_deref().unwrap_or("-"),
            self.operation,
            self.credential_id
        )?;
        if let Some(key) = &self.key {
            write!(f, ".{key}")?;
        }
        if let Some(destination) = &self.destination {
            write!(f, " to {destination}")?;
        }
        write!(f, " -> {}", self.outcome)?;
        if let Some(kind) = &self.error_kind {
            write!(f, " ({kind})")?;
        }
        write!(f, " in {}us", self.duration_us)
    }
}

/// The default number of records kept in memory.
pub const DEFAULT_AUDIT_CAPACITY: usize = 1024;

enum SinkMsg {
    Line(String),
    Flush(mpsc::SyncSender<std::io::Result<()>>),
}

/// Appends JSON lines to a file on a dedicated thread, so the hook never blocks on I/O.
struct JsonLinesSink {
    path: PathBuf,
    tx: Option<mpsc::Sender<SinkMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JsonLinesSink {
    fn open(path: &Path) -> Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            Error::from(e)
                .with_message_prefix("could not open the audit log")
                .with_context("path", path.display())
        })?;
        let (tx, rx) = mpsc::channel::<SinkMsg>();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("hive-cred-audit".into())
            .spawn(move || write_loop(file, rx, &thread_path))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    "could not start the audit log writer",
                )
                .with_source(e)
            })?;
        Ok(JsonLinesSink {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }
}

fn write_loop(file: std::fs::File, rx: mpsc::Receiver<SinkMsg>, path: &Path) {
    let mut out = std::io::BufWriter::new(file);
    let mut reported = false;
    let mut report = |e: &std::io::Error| {
        if !reported {
            tracing::error!(target: "hive_cred::audit", path = %path.display(), error = %e, "audit log write failed");
            reported = true;
        }
    };
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Write everything queued, then flush once.
        while let Some(msg) = next.take() {
            match msg {
                SinkMsg::Line(line) => {
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        report(&e);
                    }
                }
                SinkMsg::Flush(reply) => {
                    let r = out.flush().and_then(|()| out.get_ref().sync_data());
                    let _ = reply.send(r);
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            report(&e);
        }
    }
    let _ = out.flush();
}

impl Drop for JsonLinesSink {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The runtime's [`AccessHook`]: records every access (time, node, credential id, key,
/// operation, outcome, duration; never values) to `tracing` (target
/// `hive_cred::audit`, level INFO, WARN for failures), to a bounded in-memory trail and
/// optionally to a JSON-lines file.
///
/// # Default
/// - in-memory capacity: [`DEFAULT_AUDIT_CAPACITY`] records (oldest dropped first).
/// - no file.
pub struct AuditLog {
    recent: Mutex<VecDeque<AuditRecord>>,
    capacity: usize,
    sink: Option<Mutex<JsonLinesSink>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("capacity", &self.capacity)
            .field("file", &self.file())
            .finish_non_exhaustive()
    }
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog::new()
    }
}

impl AuditLog {
    /// An in-memory trail of [`DEFAULT_AUDIT_CAPACITY`] records, no file.
    pub fn new() -> Self {
        AuditLog {
            recent: Mutex::new(VecDeque::new()),
            capacity: DEFAULT_AUDIT_CAPACITY,
            sink: None,
        }
    }

    /// Keeps at most `capacity` records in memory (0: none).
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Also appends each record as one JSON line to `path` (created with mode 0600).
    pub fn with_json_lines(mut self, path: impl AsRef<Path>) -> Result<Self> {
        self.sink = Some(Mutex::new(JsonLinesSink::open(path.as_ref())?));
        Ok(self)
    }

    /// The JSON-lines file, if any.
    pub fn file(&self) -> Option<PathBuf> {
        self.sink
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).path.clone())
    }

    /// The records in memory, oldest first.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.lock_recent().iter().cloned().collect()
    }

    /// Drops the records in memory.
    pub fn clear(&self) {
        self.lock_recent().clear();
    }

    /// Waits until every record so far is written and synced to the file.
    pub fn flush(&self) -> Result<()> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        {
            let sink = sink.lock().unwrap_or_else(|p| p.into_inner());
            let Some(tx) = &sink.tx else { return Ok(()) };
            tx.send(SinkMsg::Flush(reply_tx)).map_err(|_| {
                Error::new(ErrorKind::Unexpected, "the audit log writer has stopped")
            })?;
        }
        reply_rx
            .recv()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "the audit log writer has stopped"))?
            .map_err(|e| Error::from(e).with_message_prefix("could not flush the audit log"))
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, VecDeque<AuditRecord>> {
        // A single push/pop per update: consistent after a panic.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one access (the [`AccessHook`] entry point).
    pub fn record(&self, event: &AccessEvent<'_>) {
        let node = current_node();
        self.append(AuditRecord::from_event(event, node.as_deref()));
    }

    /// Records one finished record (tracing, memory, file).
    pub(crate) fn append(&self, record: AuditRecord) {
        let failed = record.error_kind.is_some() || record.outcome == "alert";
        if failed {
            tracing::warn!(
                target: "hive_cred::audit",
                node = record.node.as_deref(),
                credential_id = record.credential_id.as_str(),
                key = record.key.as_deref(),
                operation = &*record.operation,
                outcome = &*record.outcome,
                principal = record.principal.as_deref(),
                error_kind = record.error_kind.as_deref(),
                destination = record.destination.as_deref(),
                duration_us = record.duration_us,
                "credential access"
            );
        } else {
            tracing::info!(
                target: "hive_cred::audit",
                node = record.node.as_deref(),
                credential_id = record.credential_id.as_str(),
                key = record.key.as_deref(),
                operation = &*record.operation,
                outcome = &*record.outcome,
                destination = record.destination.as_deref(),
                principal = record.principal.as_deref(),
                duration_us = record.duration_us,
                "credential access"
            );
        }
        if let Some(sink) = &self.sink {
            match serde_json::to_string(&record) {
                Ok(mut line) => {
                    line.push('\n');
                    let sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(tx) = &sink.tx {
                        let _ = tx.send(SinkMsg::Line(line));
                    }
                }
                Err(e) => {
                    tracing::error!(target: "hive_cred::audit", error = %e, "could not serialize an audit record");
                }
            }
        }
        if self.capacity > 0 {
            let mut recent = self.lock_recent();
            if recent.len() >= self.capacity {
                recent.pop_front();
            }
            recent.push_back(record);
        }
    }
}

impl AccessHook for AuditLog {
    fn on_access(&self, event: &AccessEvent<'_>) {
        self.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::AccessOperation;
    use std::time::Duration;

    fn event(op: AccessOperation, outcome: AccessOutcome) -> AccessEvent<'static> {
        AccessEvent::new(
            Utc::now(),
            "github",
            Some("access_token"),
            op,
            outcome,
            Duration::from_micros(42),
        )
    }

    #[tokio::test]
    async fn records_node_from_task_local() {
        let log = AuditLog::new();
        log.record(&event(AccessOperation::Get, AccessOutcome::Ok));
        with_node("fetch_repos", async {
            log.record(&event(
                AccessOperation::GetKey,
                AccessOutcome::Error(ErrorKind::Expired),
            ));
        })
        .await;
        let r = log.records();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].node, None);
        assert_eq!(r[1].node.as_deref(), Some("fetch_repos"));
        assert_eq!(r[1].operation, "get_key");
        assert_eq!(r[1].outcome, "error");
        assert_eq!(r[1].error_kind.as_deref(), Some("expired"));
        assert_eq!(r[1].duration_us, 42);
        assert!(
            r[1].to_string()
                .contains("node=fetch_repos get_key github.access_token -> error (expired)")
        );
    }

    #[test]
    fn capacity_bounds_memory() {
        let log = AuditLog::new().with_capacity(3);
        for _ in 0..5 {
            log.record(&event(AccessOperation::Get, AccessOutcome::Ok));
        }
        assert_eq!(log.records().len(), 3);
        let none = AuditLog::new().with_capacity(0);
        none.record(&event(AccessOperation::Get, AccessOutcome::Ok));
        assert!(none.records().is_empty());
    }

    #[test]
    fn json_lines_file_gets_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::new().with_json_lines(&path).unwrap();
        log.record(&event(AccessOperation::Refresh, AccessOutcome::Ok));
        log.record(&event(AccessOperation::Get, AccessOutcome::Stale));
        log.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<AuditRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].operation, "refresh");
        assert_eq!(lines[1].outcome, "stale");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Dropping joins the writer after the last line.
        log.record(&event(AccessOperation::Delete, AccessOutcome::Ok));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
