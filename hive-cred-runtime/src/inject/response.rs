//! [`ToolResponse`]: a response as a tool gets it, redacted.

use std::fmt;
use std::sync::Arc;

use hive_cred_core::{Error, Result};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::client::Shared;
use crate::redact::StreamRedactor;

/// A response as a tool gets it: status, redacted headers, redacted body.
pub struct ToolResponse {
    pub(super) status: StatusCode,
    pub(super) response: Response,
    pub(super) url: Url,
    pub(super) destination: String,
    pub(super) stream: Option<StreamRedactor>,
    pub(super) alerted: Vec<String>,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for ToolResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolResponse")
            .field("status", &self.status)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl ToolResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The URL as the tool built it (handles unresolved, no injected query).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// A header's value (lossy UTF-8), redacted.
    pub fn header(&self, name: &str) -> Option<String> {
        let v = self.response.headers().get(name)?;
        let text = String::from_utf8_lossy(v.as_bytes());
        Some(self.shared.redactor.current().redact(&text).into_owned())
    }

    /// The next part of the body, redacted; `None` at the end. A secret split across
    /// network chunks is caught (the redactor holds a short tail back).
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            let out = match self.response.chunk().await {
                Ok(Some(c)) => stream.push_bytes(&c),
                Ok(None) => match self.stream.take() {
                    Some(s) => s.finish_bytes(),
                    None => Vec::new(),
                },
                Err(e) => {
                    return Err(Error::unavailable(format!(
                        "reading the response body from {} failed",
                        self.destination
                    ))
                    .with_source(e.without_url()));
                }
            };
            self.shared
                .canaries
                .scan_markers(&out, Some(&self.destination), &mut self.alerted);
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }

    /// The whole body, redacted.
    pub async fn bytes(mut self) -> Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(c) = self.chunk().await? {
            all.extend_from_slice(&c);
        }
        Ok(all)
    }

    /// The whole body as text (lossy UTF-8), redacted.
    pub async fn text(self) -> Result<String> {
        let bytes = self.bytes().await?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// The whole body, redacted, parsed as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T> {
        let destination = self.destination.clone();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid_input(format!(
                "the response from {destination} is not the expected JSON: {e}"
            ))
        })
    }
}
