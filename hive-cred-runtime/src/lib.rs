#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

mod audit;
mod backend;
mod canary;
mod config;
mod encoding;
mod fallback;
#[cfg(feature = "health")]
mod health;
#[cfg(feature = "http")]
mod inject;
#[cfg(feature = "mcp")]
pub mod mcp;
mod preflight;
mod redact;
mod runtime;
mod spec;

pub use audit::{AuditLog, AuditRecord, DEFAULT_AUDIT_CAPACITY, current_node, with_node};
pub use backend::{AUDIT_LOG_ENV, Backend, VAULT_ADDR_ENV, audit_log_path};
pub use canary::{CANARY_TAG, CanaryAlert, CanaryMonitor};
pub use config::{
    AccountsConfig, CONFIG_ENV, HealthConfig, ProviderConfig, RuntimeConfig, SecretRef,
};
pub use encoding::Encoding;
#[cfg(feature = "health")]
pub use health::{HealthChecker, HealthReport, HealthStatus};
#[cfg(feature = "http")]
pub use inject::{
    DEFAULT_MAX_REDIRECTS, Destination, DryRun, InjectingClient, InjectingClientBuilder,
    ToolRequest, ToolResponse, UsageSpec, UsageSpecBuilder, UsageSpecs, opaque_handle,
};
pub use preflight::{CredentialCheck, CredentialState, Preflight};
pub use redact::{
    DEFAULT_MIN_SECRET_LEN, OVERLAY_MAX_VALUES, RETAINED_VALUES, RedactingMakeWriter,
    RedactingWriter, Redactor, RedactorBuilder, RedactorHandle, StreamRedactor, marker,
};
pub use runtime::{
    AgentRuntime, AgentRuntimeBuilder, EnvLookup, NodeContext, NodeSpec, UnavailableCredentials,
};
pub use spec::{AuthPlacement, CredentialSpec, HealthCheckSpec, IdentityField, SpecCatalogue};

/// The crates this one wires together, re-exported so users name one version.
pub use hive_cred_core as core;
#[cfg(feature = "local")]
pub use hive_cred_local as local;
#[cfg(feature = "oauth")]
pub use hive_cred_oauth as oauth;
#[cfg(feature = "vault")]
pub use hive_cred_vault as vault;
/// The HTTP client the injecting client is built on (feature `http`).
#[cfg(feature = "http")]
pub use reqwest;
/// The MCP SDK whose OAuth stores [`mcp`] implements (feature `mcp`).
#[cfg(feature = "mcp")]
pub use rmcp;
