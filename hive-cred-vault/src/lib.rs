#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod consistency;
mod error;
mod lock;
mod record;
mod session;
mod storage;
mod transport;

pub use config::{
    DEFAULT_APPROLE_MOUNT, DEFAULT_FAILOVER_TIMEOUT, DEFAULT_JWT_MOUNT, DEFAULT_MOUNT,
    DEFAULT_PATH_PREFIX, DEFAULT_TIMEOUT, VaultAuth, VaultConfig,
};
pub use record::{LAYOUT_VERSION, META_FIELD};
pub use storage::VaultStorage;

#[cfg(feature = "testkit")]
pub mod testkit;
