//! The one error type of hive-cred.
//!
//! Every failure in every crate is an [`Error`] with a matchable [`ErrorKind`], a
//! retry hint ([`Error::is_temporary`], [`Error::retry_after`]), key=value context
//! (credential id, backend, operation) and an optional source. Messages name ids,
//! key names, paths and what to do; they never carry secret values.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::action::ActionRequired;

/// `Result` with hive-cred's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a matchable class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The credential does not exist.
    NotFound,
    /// The credential exists but has no key of that name.
    KeyNotFound,
    /// The caller passed something invalid (a bad id, a bad template, ...).
    InvalidInput,
    /// The credential (or one of its keys) has expired and could not be refreshed.
    Expired,
    /// The provider rejected the refresh (for example `invalid_grant`): the grant is dead
    /// and the user must authorise again. Not retried.
    RefreshRejected,
    /// A backend or provider is temporarily unreachable or failing (5xx, timeout,
    /// connection refused, sealed Vault). Retrying later may succeed.
    Unavailable,
    /// The backend or provider asked us to slow down. See [`Error::retry_after`].
    RateLimited,
    /// The backend refused the operation (for example a Vault policy denies the path).
    PermissionDenied,
    /// Decryption failed: wrong key or passphrase, or the data was tampered with.
    Decryption,
    /// Stored data is malformed, truncated, of a foreign format or a future version.
    Corrupted,
    /// A concurrent writer changed the credential since it was read (check-and-set).
    Conflict,
    /// The backend does not support this operation (for example writes to `EnvStorage`).
    Unsupported,
    /// Configuration is missing or wrong (unset variables, unknown provider, ...).
    Config,
    /// An unexpected failure that fits no other kind (local I/O errors, bugs).
    Unexpected,
    /// A provider has several accounts and nothing chose one (see
    /// [`ActionRequired::AccountSelectionRequired`]).
    AccountSelectionRequired,
    /// The credential comes from an authorisation flow the person has not run yet (see
    /// [`ActionRequired::AuthorizationRequired`]).
    AuthorizationRequired,
}

impl ErrorKind {
    /// A short, stable, lower-case name for the kind (`"not_found"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::KeyNotFound => "key_not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Expired => "expired",
            ErrorKind::RefreshRejected => "refresh_rejected",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Decryption => "decryption",
            ErrorKind::Corrupted => "corrupted",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
            ErrorKind::Unexpected => "unexpected",
            ErrorKind::AccountSelectionRequired => "account_selection_required",
            ErrorKind::AuthorizationRequired => "authorization_required",
        }
    }

    /// Whether errors of this kind are temporary by default.
    pub fn is_temporary_by_default(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::RateLimited)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    temporary: bool,
    retry_after: Option<Duration>,
    source: Option<Source>,
    action: Option<ActionRequired>,
}

/// The error of every hive-cred operation.
///
/// `Error` is cheap to clone (one allocation shared behind an `Arc`), so one refresh
/// failure can be handed to every task that waited on it.
///
/// ```
/// use hive_cred_core::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::NotFound, "credential not found")
///     .with_context("id", "github")
///     .with_context("backend", "memory");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert!(!err.is_temporary());
/// assert_eq!(err.to_string(), "credential not found (id=github, backend=memory)");
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

impl Error {
    /// A new error of `kind`. The message must not contain secret values.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                context: Vec::new(),
                temporary: kind.is_temporary_by_default(),
                retry_after: None,
                source: None,
                action: None,
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Adds a `key=value` pair of context (an id, a backend name, an operation, a path).
    /// Never pass a secret value here.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        let value = value.to_string();
        let inner = self.inner_mut();
        if let Some(slot) = inner.context.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            inner.context.push((key, value));
        }
        self
    }

    /// Attaches the underlying cause. Only attach errors whose Display cannot contain a
    /// secret (I/O errors, HTTP status errors); never a raw response body.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner_mut().source = Some(Arc::new(source));
        self
    }

    /// Overrides whether the error is temporary (default: by kind).
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.inner_mut().temporary = temporary;
        self
    }

    /// Sets how long the caller should wait before retrying (e.g. HTTP `Retry-After`).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.inner_mut().retry_after = Some(after);
        self
    }

    /// Prefixes the message with more description, keeping kind, context and source.
    pub fn with_message_prefix(mut self, prefix: impl fmt::Display) -> Self {
        let inner = self.inner_mut();
        inner.message = format!("{prefix}: {}", inner.message);
        self
    }

    /// Attaches what a person must do for the operation to succeed. It is part of the
    /// error's [`tool_result`](Self::tool_result) and never holds a secret.
    pub fn with_action(mut self, action: ActionRequired) -> Self {
        self.inner_mut().action = Some(action);
        self
    }

    /// What a person must do for the operation to succeed, when known.
    pub fn action_required(&self) -> Option<&ActionRequired> {
        self.inner.action.as_ref()
    }

    /// The error as a serializable tool result for an agent's model: kind, message,
    /// whether retrying may help, and the [`ActionRequired`] if any. Holds no secret
    /// (messages and context never do).
    pub fn tool_result(&self) -> ToolError {
        ToolError {
            error: self.kind().as_str(),
            message: match &self.inner.action {
                Some(action) => action.message(),
                None => self.to_string(),
            },
            temporary: self.is_temporary(),
            retry_after_secs: self.inner.retry_after.map(|d| d.as_secs()),
            action: self.inner.action.clone(),
        }
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.inner.temporary
    }

    /// How long to wait before retrying, when the backend or provider said so.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The key=value context pairs, in the order they were added.
    pub fn context(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.inner.context.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// The value of one context key.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.inner
            .context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    // Shorthands used across the crates.

    /// `NotFound` for a credential id.
    pub fn not_found(id: impl fmt::Display) -> Self {
        Error::new(ErrorKind::NotFound, "credential not found").with_context("id", id)
    }

    /// `KeyNotFound` for a key of a credential.
    pub fn key_not_found(id: impl fmt::Display, key: impl fmt::Display) -> Self {
        Error::new(ErrorKind::KeyNotFound, "credential has no key of that name")
            .with_context("id", id)
            .with_context("key", key)
    }

    /// `InvalidInput` with a message.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// `Config` with a message.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// `Unsupported` with a message.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// `Conflict` for a credential id.
    pub fn conflict(id: impl fmt::Display, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, message).with_context("id", id)
    }

    /// `Corrupted` with a message.
    pub fn corrupted(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupted, message)
    }

    /// `Unavailable` with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if !self.inner.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.inner.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if !self.inner.context.is_empty() {
            d.field("context", &self.inner.context);
        }
        if self.inner.temporary {
            d.field("temporary", &true);
        }
        if let Some(after) = self.inner.retry_after {
            d.field("retry_after", &after);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", &format_args!("{source}"));
        }
        if let Some(action) = &self.inner.action {
            d.field("action", action);
        }
        d.finish()
    }
}

/// An [`Error`] in the form an agent hands its model as a tool result
/// ([`Error::tool_result`]). Serializes to
/// `{"error": "not_found", "message": "...", "temporary": false, "action": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ToolError {
    /// The error kind ([`ErrorKind::as_str`]).
    pub error: &'static str,
    /// What went wrong, or (with an action) what to do.
    pub message: String,
    /// Whether retrying later may succeed.
    pub temporary: bool,
    /// Seconds to wait before retrying, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// What a person must do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRequired>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::TimedOut | Io::Interrupted | Io::WouldBlock => ErrorKind::Unavailable,
            Io::InvalidData | Io::UnexpectedEof => ErrorKind::Corrupted,
            _ => ErrorKind::Unexpected,
        };
        Error::new(kind, "I/O error").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_default_temporariness() {
        assert!(Error::new(ErrorKind::Unavailable, "x").is_temporary());
        assert!(Error::new(ErrorKind::RateLimited, "x").is_temporary());
        assert!(!Error::new(ErrorKind::RefreshRejected, "x").is_temporary());
        assert!(
            Error::new(ErrorKind::Config, "x")
                .set_temporary(true)
                .is_temporary()
        );
    }

    #[test]
    fn context_replaces_same_key_and_displays_in_order() {
        let e = Error::not_found("a")
            .with_context("backend", "local")
            .with_context("id", "b");
        assert_eq!(e.to_string(), "credential not found (id=b, backend=local)");
        assert_eq!(e.context_value("backend"), Some("local"));
    }

    #[test]
    fn clones_share_and_diverge_on_write() {
        let a = Error::unavailable("down");
        let b = a.clone().with_retry_after(Duration::from_secs(3));
        assert_eq!(a.retry_after(), None);
        assert_eq!(b.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(b.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn io_errors_map_to_kinds_and_keep_source() {
        let e: Error = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "nope").into();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(std::error::Error::source(&e).is_some());
    }
}
