//! Read-your-writes on clusters whose standbys answer reads.
//!
//! OpenBao standbys serve reads from their own copy of the Raft log (the default since
//! 2.5, `disable_standby_reads = false`), and that copy trails the active node by a few
//! milliseconds. A client that reaches a standby (one standby's address, a load balancer
//! over every node, a node demoted while the client still talks to it) reads its own
//! writes back stale: measured on a 3-node cluster, every one of 21 reads sent to a
//! standby right after a write through it returned the previous version. An agent that
//! takes the refresh lock just after another saved a rotated refresh token would read
//! the used one and send it again, and the provider would revoke the token family.
//!
//! OpenBao's remedy is the storage index. Its responses carry `X-Vault-Index`, the Raft
//! index of the state they reflect. This client keeps the highest index it has seen and
//! sends it with every request, together with `X-Vault-Inconsistent:
//! forward-active-node`: a standby that has not applied that index yet forwards the
//! request to the active node instead of answering from its copy. Taking a lock is a
//! write that the Raft log orders after the previous holder's save, so the read that
//! follows it sees that save.
//!
//! Servers that send no index (a dev server, HashiCorp Vault without the Enterprise
//! feature) never get the headers, and an older OpenBao ignores them.

use std::sync::{Mutex, PoisonError};

use base64::Engine;
use http::HeaderValue;
use rustify::endpoint::{Endpoint, MiddleWare};
use rustify::errors::ClientError as RestError;
use serde::Deserialize;
use vaultrs::api::{EndpointError, EndpointMiddleware, EndpointResult};
use vaultrs::client::{Client, VaultClient};
use vaultrs::error::ClientError;

const INDEX_HEADER: &str = "x-vault-index";
const INCONSISTENT_HEADER: &str = "x-vault-inconsistent";
const FORWARD: HeaderValue = HeaderValue::from_static("forward-active-node");

/// The highest storage index this client has seen (one per storage handle and its
/// scoped views).
#[derive(Debug, Default)]
pub(crate) struct StorageIndex(Mutex<Option<Seen>>);

#[derive(Debug)]
struct Seen {
    /// The cluster and the Raft index, when the header could be decoded.
    position: Option<(String, u64)>,
    header: HeaderValue,
}

/// The decoded header: base64 of `{"cluster": "<uuid>", "value": "<raft index>"}`.
#[derive(Deserialize)]
struct Decoded {
    cluster: String,
    value: String,
}

fn decode(header: &HeaderValue) -> Option<(String, u64)> {
    let json = base64::engine::general_purpose::STANDARD
        .decode(header.as_bytes())
        .ok()?;
    let decoded: Decoded = serde_json::from_slice(&json).ok()?;
    Some((decoded.cluster, decoded.value.parse().ok()?))
}

impl StorageIndex {
    /// Records an index from a response. A lower index of the same cluster (a response
    /// that overtook a later one) is ignored; an index of another cluster, or one that
    /// does not decode, replaces what was kept.
    fn observe(&self, header: &HeaderValue) {
        let position = decode(header);
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let older = match (&*kept, &position) {
            (
                Some(Seen {
                    position: Some((cluster, seen)),
                    ..
                }),
                Some((c, index)),
            ) => cluster == c && index <= seen,
            _ => false,
        };
        if !older {
            *kept = Some(Seen {
                position,
                header: header.clone(),
            });
        }
    }

    fn latest(&self) -> Option<HeaderValue> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref().map(|seen| seen.header.clone())
    }
}

/// vaultrs's middleware (address prefix, token) plus the index headers.
struct Tracking<'a> {
    vault: &'a EndpointMiddleware,
    index: &'a StorageIndex,
}

impl MiddleWare for Tracking<'_> {
    fn request<E: Endpoint>(
        &self,
        endpoint: &E,
        req: &mut http::Request<Vec<u8>>,
    ) -> Result<(), RestError> {
        self.vault.request(endpoint, req)?;
        if let Some(index) = self.index.latest() {
            req.headers_mut().insert(INDEX_HEADER, index);
            req.headers_mut().insert(INCONSISTENT_HEADER, FORWARD);
        }
        Ok(())
    }

    fn response<E: Endpoint>(
        &self,
        endpoint: &E,
        resp: &mut http::Response<Vec<u8>>,
    ) -> Result<(), RestError> {
        self.vault.response(endpoint, resp)?;
        if let Some(index) = resp.headers().get(INDEX_HEADER) {
            self.index.observe(index);
        }
        Ok(())
    }
}

/// An error answer as vaultrs reports it: `APIError` with the server's messages.
fn api_error(e: RestError) -> ClientError {
    if let RestError::ServerResponseError {
        code,
        content: Some(content),
    } = &e
        && let Ok(body) = serde_json::from_str::<EndpointError>(content)
    {
        return ClientError::APIError {
            code: *code,
            errors: body.errors,
        };
    }
    ClientError::from(e)
}

/// Sends `endpoint` through vaultrs's middleware plus the index headers.
async fn send<E: Endpoint>(
    client: &VaultClient,
    index: &StorageIndex,
    endpoint: E,
) -> Result<rustify::endpoint::EndpointResult<E::Response>, ClientError> {
    let tracking = Tracking {
        vault: client.middle(),
        index,
    };
    endpoint
        .with_middleware(&tracking)
        .exec(client.http())
        .await
        .map_err(api_error)
}

/// `vaultrs::api::exec_with_result` with the index headers.
pub(crate) async fn exec_with_result<E: Endpoint>(
    client: &VaultClient,
    index: &StorageIndex,
    endpoint: E,
) -> Result<E::Response, ClientError> {
    send(client, index, endpoint)
        .await?
        .wrap::<EndpointResult<_>>()
        .map_err(ClientError::from)?
        .data
        .ok_or(ClientError::ResponseDataEmptyError)
}

/// `vaultrs::api::exec_with_empty` with the index headers.
pub(crate) async fn exec_with_empty<E: Endpoint>(
    client: &VaultClient,
    index: &StorageIndex,
    endpoint: E,
) -> Result<(), ClientError> {
    send(client, index, endpoint).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cluster: &str, value: u64) -> HeaderValue {
        let json = format!(r#"{{"cluster":"{cluster}","value":"{value}"}}"#);
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        HeaderValue::from_str(&encoded).unwrap()
    }

    #[test]
    fn decodes_openbaos_index_header() {
        // As sent by OpenBao 2.7.2.
        let sent = HeaderValue::from_static(
            "eyJjbHVzdGVyIjoiNDQ1MGEwOTAtMTBhYy0wYzI2LTIyMGUtYTVkM2U3ZDNjYmMzIiwidmFsdWUiOiI5MyJ9",
        );
        assert_eq!(
            decode(&sent),
            Some(("4450a090-10ac-0c26-220e-a5d3e7d3cbc3".to_owned(), 93))
        );
        assert_eq!(decode(&HeaderValue::from_static("not-base64!")), None);
    }

    #[test]
    fn keeps_the_highest_index_of_a_cluster() {
        let index = StorageIndex::default();
        assert_eq!(index.latest(), None);
        index.observe(&header("a", 40));
        index.observe(&header("a", 41));
        index.observe(&header("a", 39));
        assert_eq!(index.latest(), Some(header("a", 41)));
        // Another cluster (a restore, a new address list) starts over.
        index.observe(&header("b", 7));
        assert_eq!(index.latest(), Some(header("b", 7)));
        // An index that does not decode replaces, and is replaced by, anything.
        let opaque = HeaderValue::from_static("opaque");
        index.observe(&opaque);
        assert_eq!(index.latest(), Some(opaque));
        index.observe(&header("b", 1));
        assert_eq!(index.latest(), Some(header("b", 1)));
    }
}
