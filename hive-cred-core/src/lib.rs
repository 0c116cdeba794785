#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

mod account;
mod action;
mod clock;
pub mod codec;
mod composite;
mod credential;
mod env;
mod error;
mod hook;
mod id;
pub mod lock;
mod memory;
mod provider;
mod scope;
mod storage;
mod store;
mod template;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use account::{
    AccountInfo, AccountStatus, CredentialAccount, CredentialIdentity, DEFAULT_ALIAS, account_id,
    split_account_id,
};
pub use action::{AccountChoice, ActionRequired};
pub use clock::{Clock, ManualClock, SystemClock};
pub use composite::CompositeStorage;
pub use credential::{
    CredentialKey, CredentialMetadata, CredentialObject, CredentialObjectBuilder, CredentialType,
    DEFAULT_REFRESH_WINDOW, KeyMetadata, MAX_KEY_NAME_LEN, Metadata, validate_key_name,
};
pub use env::{EnvMapping, EnvStorage};
pub use error::{Error, ErrorKind, Result, ToolError};
pub use hook::{AccessEvent, AccessHook, AccessOperation, AccessOutcome};
pub use id::{CredentialId, MAX_ID_LEN};
pub use lock::{CredentialLock, LockOptions, LockRelease};
pub use memory::MemoryStorage;
pub use provider::{CredentialProvider, StaticProvider};
pub use scope::{MAX_PRINCIPAL_LEN, ScopedStorage, scoped_id, validate_principal};
pub use storage::{CredentialStorage, StorageCapabilities, StorageLayer};
pub use store::{
    CredentialStore, CredentialStoreBuilder, LEASE_MARGIN, RefreshPolicy, UnsavedRefresh,
    hive_env_var,
};
pub use template::Template;

#[cfg(any(test, feature = "mock"))]
pub use provider::MockCredentialProvider;
#[cfg(any(test, feature = "mock"))]
pub use storage::MockCredentialStorage;

/// Re-exported so users name one version of the secret wrapper.
pub use secrecy::{self, ExposeSecret, SecretString};
