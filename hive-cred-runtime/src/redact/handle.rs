//! [`RedactorHandle`]: the live view of the values a runtime has handed out.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hive_cred_core::{ExposeSecret, SecretString};

use super::{
    DEFAULT_MIN_SECRET_LEN, Layer, RedactingWriter, Redactor, StreamRedactor, build_layer, detector,
};

/// A live view of the secrets a runtime has handed out. [`current`](Self::current)
/// returns a [`Redactor`] over all of them, rebuilt only when they changed.
///
/// Remembers, per credential key, the current value and the last
/// [`RETAINED_VALUES`]` - 1` replaced ones (a refreshed-away token may still be valid and
/// may still be in a transcript).
///
/// Its redactors have the pattern layer ([`RedactorBuilder::detect_patterns`]) on by
/// default: the handle is what redacts tool output going to the model.
///
/// [`RedactorBuilder::detect_patterns`]: super::RedactorBuilder::detect_patterns
#[derive(Clone)]
pub struct RedactorHandle {
    inner: Arc<std::sync::Mutex<Registry>>,
}

/// How many values per credential key the handle redacts (current + replaced ones).
pub const RETAINED_VALUES: usize = 4;

struct Registry {
    values: HashMap<(String, String), Vec<SecretString>>,
    version: u64,
    built: Option<(u64, Arc<Redactor>)>,
    base: Option<Base>,
    /// The full build running in the background, if any.
    rebuilding: Option<std::thread::JoinHandle<()>>,
    min_secret_len: usize,
    detect_patterns: bool,
}

impl fmt::Debug for RedactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.lock();
        f.debug_struct("RedactorHandle")
            .field("keys", &reg.values.len())
            .field("version", &reg.version)
            .field("detect_patterns", &reg.detect_patterns)
            .finish_non_exhaustive()
    }
}

impl Default for RedactorHandle {
    fn default() -> Self {
        RedactorHandle::new(DEFAULT_MIN_SECRET_LEN)
    }
}

impl RedactorHandle {
    /// An empty handle redacting values of at least `min_secret_len` bytes.
    pub fn new(min_secret_len: usize) -> Self {
        RedactorHandle {
            inner: Arc::new(std::sync::Mutex::new(Registry {
                values: HashMap::new(),
                version: 0,
                built: None,
                base: None,
                rebuilding: None,
                min_secret_len,
                detect_patterns: true,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every update is a single insert; the map stays consistent after a panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records every key value of a credential (called for each credential the store
    /// loads or saves).
    pub fn observe(&self, credential: &hive_cred_core::CredentialObject) {
        let mut reg = self.lock();
        let mut changed = false;
        for key in credential.keys() {
            let slot = reg
                .values
                .entry((credential.id().to_string(), key.name().to_string()))
                .or_default();
            // EXPOSE: compare with the known values to detect a new (refreshed) value.
            let new = key.value().expose_secret();
            // EXPOSE: same comparison, on the stored side.
            if slot.first().is_some_and(|v| v.expose_secret() == new) {
                continue;
            }
            // EXPOSE: a value seen before moves back to the front instead of duplicating.
            slot.retain(|v| v.expose_secret() != new);
            slot.insert(0, key.value().clone());
            slot.truncate(RETAINED_VALUES);
            changed = true;
        }
        if changed {
            reg.version += 1;
        }
    }

    /// Adds one value by hand (a secret the runtime did not hand out, e.g. a client
    /// secret read from elsewhere).
    pub fn add(&self, id: &str, key: &str, value: SecretString) {
        let mut reg = self.lock();
        let slot = reg
            .values
            .entry((id.to_string(), key.to_string()))
            .or_default();
        slot.insert(0, value);
        slot.truncate(RETAINED_VALUES);
        reg.version += 1;
    }

    /// Turns the pattern layer on or off for every redactor built from now on.
    /// Default: on.
    pub fn set_detect_patterns(&self, on: bool) {
        let mut reg = self.lock();
        if reg.detect_patterns != on {
            reg.detect_patterns = on;
            reg.version += 1;
        }
    }

    /// A stream that redacts each chunk with the then-current redactor, so a value
    /// refreshed while it is open is redacted from the next chunk on.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor::with_handle(self.clone())
    }

    /// Wraps `inner` in a [`RedactingWriter`] that follows this handle.
    pub fn writer<W: std::io::Write>(&self, inner: W) -> RedactingWriter<W> {
        RedactingWriter::with_handle(inner, self.clone())
    }

    /// The redactor over every value seen so far.
    ///
    /// Built lazily on the first call after a change. The first build covers every
    /// value. After that, values added by refreshes go into a small overlay beside the
    /// shared full build, so a refresh costs a build over a handful of values, not all
    /// of them. Once more than [`OVERLAY_MAX_VALUES`] have piled up, a full build starts
    /// on a background thread; until it lands, the overlay keeps covering every value
    /// added since the last one, so the redactor returned is always complete. Values
    /// that fell out of the [`RETAINED_VALUES`] window stay redacted until the next full
    /// build.
    pub fn current(&self) -> Arc<Redactor> {
        let (version, plan) = {
            let mut reg = self.lock();
            if let Some((v, r)) = &reg.built
                && *v == reg.version
            {
                return r.clone();
            }
            let plan = reg.plan();
            (reg.version, plan)
        };
        let built = match plan {
            Plan::Full { secrets, snapshot } => build_full(secrets, snapshot, self, version),
            Plan::Overlay {
                base,
                secrets,
                min_secret_len,
                detect,
                full,
            } => {
                if let Some((secrets, snapshot)) = full {
                    self.rebuild_in_background(secrets, snapshot, version);
                }
                detector(detect)
                    .and_then(|d| Redactor::with_overlay(base, secrets, min_secret_len, d))
            }
        };
        match built {
            Ok(r) => self.install(version, Arc::new(r)),
            Err(e) => {
                // Only reachable past the automaton's size limits: keep the last good one,
                // and remember it for this version, so the next change (not every call,
                // such as every chunk of a stream) tries again.
                tracing::error!(target: "hive_cred::redact", error = %e, "could not rebuild the redactor");
                let last = self.lock().built.as_ref().map(|(_, r)| r.clone());
                self.install(version, last.unwrap_or_default())
            }
        }
    }

    /// Waits for a full build running in the background (see [`current`](Self::current))
    /// to land. Returns at once when none runs.
    pub fn wait_for_rebuild(&self) {
        let running = self.lock().rebuilding.take();
        if let Some(thread) = running {
            // A panic in the build is already reported by the thread; the overlay
            // stays in use.
            let _ = thread.join();
        }
    }

    /// Remembers `redactor` as the build of `version` unless a newer one is known.
    fn install(&self, version: u64, redactor: Arc<Redactor>) -> Arc<Redactor> {
        let mut reg = self.lock();
        if reg.built.as_ref().is_none_or(|(v, _)| *v < version) {
            reg.built = Some((version, redactor.clone()));
        }
        redactor
    }

    fn rebuild_in_background(&self, secrets: Secrets, snapshot: Snapshot, version: u64) {
        let handle = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hive-cred-redact-rebuild".into())
            .spawn(move || match build_full(secrets, snapshot, &handle, version) {
                Ok(r) => {
                    // Replaces the overlay built for the same version: both are complete,
                    // the full build scans faster.
                    let mut reg = handle.lock();
                    if reg.built.as_ref().is_none_or(|(v, _)| *v <= version) {
                        reg.built = Some((version, Arc::new(r)));
                    }
                }
                Err(e) => {
                    tracing::error!(target: "hive_cred::redact", error = %e, "could not rebuild the redactor");
                }
            });
        match spawned {
            Ok(thread) => self.lock().rebuilding = Some(thread),
            Err(e) => {
                // No thread to be had: the overlay stays complete, try at the next change.
                tracing::warn!(target: "hive_cred::redact", error = %e, "could not start the redactor rebuild");
            }
        }
    }
}

/// How many values added since the last full build a refresh's overlay holds before a
/// full build starts in the background.
pub const OVERLAY_MAX_VALUES: usize = 16;

type Secrets = Vec<(String, String, SecretString)>;
type Snapshot = HashMap<(String, String), Vec<SecretString>>;

/// The last full build: its layer and the values it covers.
struct Base {
    version: u64,
    layer: Option<Arc<Layer>>,
    values: Snapshot,
    min_secret_len: usize,
    detect_patterns: bool,
}

enum Plan {
    Full {
        secrets: Secrets,
        snapshot: Snapshot,
    },
    Overlay {
        base: Arc<Layer>,
        secrets: Secrets,
        min_secret_len: usize,
        detect: bool,
        /// A full build to start in the background.
        full: Option<(Secrets, Snapshot)>,
    },
}

fn build_full(
    secrets: Secrets,
    snapshot: Snapshot,
    handle: &RedactorHandle,
    version: u64,
) -> hive_cred_core::Result<Redactor> {
    let (min_secret_len, detect) = {
        let reg = handle.lock();
        (reg.min_secret_len, reg.detect_patterns)
    };
    let layer = build_layer(secrets, min_secret_len)?;
    let redactor = Redactor::from_parts(layer.iter().cloned().collect(), detector(detect)?);
    let mut reg = handle.lock();
    if reg.base.as_ref().is_none_or(|b| b.version < version) {
        reg.base = Some(Base {
            version,
            layer,
            values: snapshot,
            min_secret_len,
            detect_patterns: detect,
        });
    }
    Ok(redactor)
}

impl Registry {
    fn all_secrets(&self) -> Secrets {
        self.values
            .iter()
            .flat_map(|((id, key), values)| {
                values
                    .iter()
                    .map(move |v| (id.clone(), key.clone(), v.clone()))
            })
            .collect()
    }

    /// What [`RedactorHandle::current`] builds; marks a background full build as
    /// started when it asks for one.
    fn plan(&mut self) -> Plan {
        let full = || Plan::Full {
            secrets: self.all_secrets(),
            snapshot: self.values.clone(),
        };
        let Some(base) = &self.base else {
            return full();
        };
        if base.min_secret_len != self.min_secret_len
            || base.detect_patterns != self.detect_patterns
        {
            return full();
        }
        let Some(layer) = &base.layer else {
            return full();
        };
        let mut added: Secrets = Vec::new();
        for (label, values) in &self.values {
            let (id, key) = label;
            let known = base.values.get(label);
            for v in values {
                // EXPOSE: compare with the values the full build covers.
                let new = v.expose_secret();
                // EXPOSE: same comparison, on the base side.
                if !known.is_some_and(|k| k.iter().any(|b| b.expose_secret() == new)) {
                    added.push((id.clone(), key.clone(), v.clone()));
                }
            }
        }
        let base = layer.clone();
        let rebuild = added.len() > OVERLAY_MAX_VALUES
            && self.rebuilding.as_ref().is_none_or(|t| t.is_finished());
        let full = rebuild.then(|| {
            // Stops `wait_for_rebuild` from joining a finished thread's successor early.
            self.rebuilding = None;
            (self.all_secrets(), self.values.clone())
        });
        Plan::Overlay {
            base,
            secrets: added,
            min_secret_len: self.min_secret_len,
            detect: self.detect_patterns,
            full,
        }
    }
}
