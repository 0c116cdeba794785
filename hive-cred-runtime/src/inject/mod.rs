//! Secrets that tool code never sees: usage specs, the injecting HTTP client with
//! destination binding, and opaque handles (feature `http`).
//!
//! - [`destination`]: [`Destination`], where a credential may be sent;
//! - [`spec`]: [`UsageSpec`] and [`UsageSpecs`], how tools use credentials;
//! - [`handle`]: opaque `{{hive:id.key}}` handles in model-written arguments;
//! - [`client`]: [`InjectingClient`], the reqwest-middleware client, its checks,
//!   redirects and 401 retry; [`fill`]: filling handles and templates in;
//!   [`response`]: [`ToolResponse`], redacted.

mod client;
mod destination;
mod fill;
mod handle;
mod response;
mod spec;

pub use client::{
    DEFAULT_MAX_REDIRECTS, DryRun, InjectingClient, InjectingClientBuilder, ToolRequest,
};
pub use destination::Destination;
pub use handle::opaque_handle;
pub use response::ToolResponse;
pub use spec::{UsageSpec, UsageSpecBuilder, UsageSpecs};
