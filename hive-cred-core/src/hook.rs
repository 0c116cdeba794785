//! [`AccessHook`]: observe every credential access (for audit trails).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::ErrorKind;

/// What was done to a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessOperation {
    /// `CredentialStore::get`.
    Get,
    /// `CredentialStore::get_key` (the key is in [`AccessEvent::key`]).
    GetKey,
    /// A template placeholder was filled.
    Resolve,
    /// `CredentialStore::save`.
    Save,
    /// `CredentialStore::delete`.
    Delete,
    /// A provider refresh.
    Refresh,
}

impl AccessOperation {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessOperation::Get => "get",
            AccessOperation::GetKey => "get_key",
            AccessOperation::Resolve => "resolve",
            AccessOperation::Save => "save",
            AccessOperation::Delete => "delete",
            AccessOperation::Refresh => "refresh",
        }
    }
}

/// How an access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessOutcome {
    /// Succeeded.
    Ok,
    /// Succeeded with the still-valid old credential because a refresh inside the
    /// advisory window failed.
    Stale,
    /// Failed with this kind.
    Error(ErrorKind),
}

/// One credential access. Never holds values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccessEvent<'a> {
    /// When it happened (from the store's clock).
    pub time: DateTime<Utc>,
    /// The credential.
    pub credential_id: &'a str,
    /// The key, for key-level operations.
    pub key: Option<&'a str>,
    /// What was done.
    pub operation: AccessOperation,
    /// How it ended.
    pub outcome: AccessOutcome,
    /// How long it took.
    pub duration: Duration,
    /// The end user whose view of the store was used ([`CredentialStore::for_user`](crate::CredentialStore::for_user)),
    /// `None` for the unscoped store.
    pub principal: Option<&'a str>,
}

impl<'a> AccessEvent<'a> {
    /// An event.
    pub fn new(
        time: DateTime<Utc>,
        credential_id: &'a str,
        key: Option<&'a str>,
        operation: AccessOperation,
        outcome: AccessOutcome,
        duration: Duration,
    ) -> Self {
        AccessEvent {
            time,
            credential_id,
            key,
            operation,
            outcome,
            duration,
            principal: None,
        }
    }

    /// Sets the principal.
    #[must_use]
    pub fn with_principal(mut self, principal: Option<&'a str>) -> Self {
        self.principal = principal;
        self
    }
}

/// Receives every [`AccessEvent`] of a [`CredentialStore`](crate::CredentialStore).
/// Called inline on the accessing task: keep it fast and non-blocking.
pub trait AccessHook: Send + Sync + std::fmt::Debug {
    /// Records one access.
    fn on_access(&self, event: &AccessEvent<'_>);
}
