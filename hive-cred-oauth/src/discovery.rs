//! Endpoint discovery from an issuer: RFC 8414 authorisation server metadata, else
//! OpenID Connect discovery.

use hive_cred_core::{Error, Result};
use reqwest::Method;
use serde::Deserialize;
use url::Url;

use crate::config::{OAuth2Config, endpoint_url};
use crate::transport::Transport;

#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

/// The metadata URLs of `issuer`, in the order tried: RFC 8414 (the well-known path
/// inserted before the issuer's path), then OpenID Connect Discovery (appended).
fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut out = Vec::new();
    for (well_known, appended) in [
        ("oauth-authorization-server", false),
        ("openid-configuration", true),
    ] {
        let mut url = issuer.clone();
        if appended {
            url.set_path(&format!("{path}/.well-known/{well_known}"));
        } else {
            url.set_path(&format!("/.well-known/{well_known}{path}"));
        }
        url.set_query(None);
        out.push(url);
    }
    out
}

impl OAuth2Config {
    /// Whether the config names an issuer but no token URL, so
    /// [`discover`](Self::discover) must run before the provider can be built.
    pub fn needs_discovery(&self) -> bool {
        self.issuer.is_some() && self.token_url.trim().is_empty()
    }

    /// Fills the endpoints this config leaves unset (token, authorization, device
    /// authorization, revocation, introspection, user-info) from the issuer's metadata
    /// (RFC 8414 `/.well-known/oauth-authorization-server`, else OpenID
    /// `/.well-known/openid-configuration`). Endpoints set explicitly are kept.
    ///
    /// `Config` error without an issuer, when the metadata's `issuer` differs from the
    /// configured one (RFC 8414 section 3.3), or without a token endpoint;
    /// `Unavailable` when neither document can be fetched.
    pub async fn discover(mut self) -> Result<OAuth2Config> {
        let pid = self.provider_id.clone();
        let tag = |e: Error| {
            e.with_context("provider", pid.as_str())
                .with_context("operation", "discovery")
        };
        let Some(issuer_text) = self.issuer.clone() else {
            return Err(tag(Error::config(
                "discovery needs an issuer; set issuer or the endpoint URLs",
            )));
        };
        let issuer = endpoint_url("issuer", &issuer_text).map_err(tag)?;
        let transport = Transport::new(self.timeout).map_err(tag)?;
        let mut last_error = None;
        let mut found = None;
        for url in metadata_urls(&issuer) {
            let request = match transport
                .request(Method::GET, url)
                .header("accept", "application/json")
                .build()
            {
                Ok(r) => r,
                Err(_) => continue,
            };
            match transport.execute(request, chrono::Utc::now()).await {
                Ok(received) if received.status.is_success() => {
                    match serde_json::from_slice::<Metadata>(&received.body) {
                        Ok(m) => {
                            found = Some(m);
                            break;
                        }
                        Err(_) => {
                            last_error = Some(Error::unavailable(
                                "the issuer's metadata document is not valid JSON metadata",
                            ));
                        }
                    }
                }
                Ok(received) => {
                    last_error = Some(Error::unavailable(format!(
                        "the issuer's metadata endpoint answered HTTP {}",
                        received.status.as_u16()
                    )));
                }
                Err(e) => last_error = Some(e.into_error("metadata endpoint")),
            }
        }
        let Some(meta) = found else {
            return Err(tag(last_error
                .unwrap_or_else(|| Error::unavailable("no metadata document could be fetched"))
                .with_message_prefix("discovery from the issuer failed")));
        };
        if meta.issuer.trim_end_matches('/') != issuer_text.trim().trim_end_matches('/') {
            return Err(tag(Error::config(
                "the metadata's issuer differs from the configured issuer (RFC 8414 section 3.3); refusing it",
            )));
        }
        if self.token_url.trim().is_empty() {
            match meta.token_endpoint {
                Some(t) => self.token_url = t,
                None => {
                    return Err(tag(Error::config(
                        "the issuer's metadata names no token_endpoint",
                    )));
                }
            }
        }
        fn fill(slot: &mut Option<String>, value: Option<String>) {
            if slot.is_none() {
                *slot = value;
            }
        }
        fill(&mut self.authorization_url, meta.authorization_endpoint);
        fill(
            &mut self.device_authorization_url,
            meta.device_authorization_endpoint,
        );
        fill(&mut self.revocation_url, meta.revocation_endpoint);
        fill(&mut self.introspection_url, meta.introspection_endpoint);
        fill(&mut self.userinfo_url, meta.userinfo_endpoint);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_rfc_8414_then_openid() {
        let u = |s: &str| {
            metadata_urls(&Url::parse(s).unwrap())
                .into_iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            u("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            u("https://as.example/tenant1/"),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant1",
                "https://as.example/tenant1/.well-known/openid-configuration"
            ]
        );
    }
}
