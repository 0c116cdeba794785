#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

mod authorize;
mod config;
mod device;
mod discovery;
mod error;
mod preset;
mod provider;
mod response;
mod spec;
mod transport;

pub use authorize::{AuthorizationSession, CALLBACK_PATH};
pub use config::{AuthStyle, DEFAULT_LIFETIME, DEFAULT_TIMEOUT, Grant, OAuth2Config};
pub use device::DeviceAuthorization;
pub use preset::{MICROSOFT_DEFAULT_TENANT, Preset};
pub use provider::{
    ACCESS_TOKEN, OAuth2Provider, REFRESH_TOKEN, SCOPE_METADATA, TOKEN_TYPE_METADATA,
};
pub use spec::OAuth2ProviderSpec;

#[cfg(feature = "testkit")]
pub mod testkit;
