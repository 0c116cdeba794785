//! [`RedactorHandle`]: the live view of the values a runtime has handed out.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hive_cred_core::{ExposeSecret, SecretString};

use super::{DEFAULT_MIN_SECRET_LEN, RedactingWriter, Redactor, StreamRedactor};

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
    pub fn current(&self) -> Arc<Redactor> {
        let (version, builder) = {
            let reg = self.lock();
            if let Some((v, r)) = &reg.built {
                if *v == reg.version {
                    return r.clone();
                }
            }
            let secrets = reg.values.iter().flat_map(|((id, key), values)| {
                values
                    .iter()
                    .map(move |v| (id.clone(), key.clone(), v.clone()))
            });
            (
                reg.version,
                Redactor::builder()
                    .min_secret_len(reg.min_secret_len)
                    .detect_patterns(reg.detect_patterns)
                    .secrets(secrets),
            )
        };
        let redactor = match builder.build() {
            Ok(r) => Arc::new(r),
            Err(e) => {
                // Only reachable past the automaton's size limits: keep the last good one.
                tracing::error!(target: "hive_cred::redact", error = %e, "could not rebuild the redactor");
                return self
                    .lock()
                    .built
                    .as_ref()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
            }
        };
        let mut reg = self.lock();
        if reg.built.as_ref().is_none_or(|(v, _)| *v < version) {
            reg.built = Some((version, redactor.clone()));
        }
        redactor
    }
}
