//! MCP clients' OAuth tokens in hive-cred storage (feature `mcp`).
//!
//! The official Rust MCP SDK (`rmcp`, feature `auth`) keeps a remote MCP server's
//! tokens in a `CredentialStore` and an authorisation in progress in a `StateStore`,
//! both in memory unless the application plugs in its own. [`McpCredentialStore`] and
//! [`McpStateStore`] are those two stores over a hive-cred [`CredentialStore`]'s
//! storage: the tokens live encrypted in the local store or in Vault, refreshes are
//! coordinated across processes with hive-cred's credential lock, and a rejected
//! refresh token marks the credential as needing re-authorisation.
//!
//! [`CredentialStore`]: hive_cred_core::CredentialStore

mod convert;
mod credentials;
mod lock;
mod state;

/// A hive-cred error as rmcp's store error (the message names ids and kinds, never a
/// value).
fn store_error(e: hive_cred_core::Error) -> rmcp::transport::auth::AuthError {
    rmcp::transport::auth::AuthError::CredentialStoreError(e.to_string())
}

pub use convert::{ACCESS_TOKEN, CLIENT_ID, REFRESH_TOKEN, TOKEN_EXTRA};
pub use credentials::McpCredentialStore;
pub use state::{DEFAULT_STATE_TTL, McpStateStore};
