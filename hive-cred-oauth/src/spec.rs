//! [`OAuth2ProviderSpec`]: the non-secret, deserializable shape of a provider config.

use std::collections::BTreeMap;
use std::time::Duration;

use hive_cred_core::{Error, Result, SecretString};
use serde::Deserialize;

use crate::config::{AuthStyle, Grant, OAuth2Config};
use crate::preset::Preset;

/// A provider registration as read from a TOML or JSON file. It holds no secret: the
/// client secret comes from elsewhere (an environment variable, a credential) and is
/// passed to [`into_config`](Self::into_config).
///
/// ```
/// use hive_cred_oauth::{OAuth2ProviderSpec, OAuth2Provider};
/// use hive_cred_core::SecretString;
///
/// let spec: OAuth2ProviderSpec = serde_json::from_str(r#"{
///     "provider_id": "github_oauth",
///     "preset": "github",
///     "client_id": "Iv1.abc",
///     "scopes": ["repo", "read:user"],
///     "timeout_secs": 10
/// }"#).expect("valid spec");
/// let config = spec.into_config(Some(SecretString::from("from-the-environment")))?;
/// assert_eq!(config.token_url(), "https://github.com/login/oauth/access_token");
/// let provider = OAuth2Provider::new(config)?;
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
///
/// Fields (unknown fields are rejected, so a typo is an error, not a silent default):
///
/// | field | meaning | default |
/// | --- | --- | --- |
/// | `provider_id` | id credentials name | required |
/// | `preset` | `github`, `google`, `microsoft`, `slack`, `hubspot` | none |
/// | `tenant` | Microsoft tenant | `common` |
/// | `token_url` | token endpoint; overrides the preset's | the preset's (one of `token_url`, `preset`, `issuer` is required) |
/// | `client_id` | client id | required |
/// | `auth_style` | `basic_auth` or `request_body` | the preset's, else `basic_auth` |
/// | `scopes` | list of scopes | none |
/// | `extra_params` | table of extra form parameters | none |
/// | `timeout_secs` | request timeout | 30 |
/// | `revocation_url`, `introspection_url`, `userinfo_url` | optional endpoints; override the preset's | the preset's |
/// | `default_lifetime_secs` | lifetime assumed without `expires_in`; `0` = no expiry | 3600 |
/// | `grant` | `refresh_token` or `client_credentials` (machine to machine) | `refresh_token` |
/// | `authorization_url`, `device_authorization_url` | endpoints of the code and device flows; override the preset's | the preset's |
/// | `issuer` | issuer identifier (RFC 8414); checked against `iss` in redirects; without `token_url`/`preset` the endpoints come from its metadata (`OAuth2Config::discover`) | none |
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OAuth2ProviderSpec {
    /// The id credentials name in their `provider_id`.
    pub provider_id: String,
    /// A well-known provider whose URLs and auth style fill the gaps.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// The Microsoft tenant (Microsoft preset only).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The token endpoint (overrides the preset's).
    #[serde(default)]
    pub token_url: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client authentication style (overrides the preset's).
    #[serde(default)]
    pub auth_style: Option<AuthStyle>,
    /// Scopes sent with refresh requests.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra form parameters of refresh requests.
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// Request timeout in seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// RFC 7009 revocation endpoint.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// RFC 7662 introspection endpoint.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// User-info endpoint.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// Lifetime assumed without `expires_in`, in seconds; `0` means no expiry.
    #[serde(default)]
    pub default_lifetime_secs: Option<u64>,
    /// How expired access tokens are replaced.
    #[serde(default)]
    pub grant: Option<Grant>,
    /// Authorization endpoint (overrides the preset's).
    #[serde(default)]
    pub authorization_url: Option<String>,
    /// RFC 8628 device authorization endpoint (overrides the preset's).
    #[serde(default)]
    pub device_authorization_url: Option<String>,
    /// Issuer identifier.
    #[serde(default)]
    pub issuer: Option<String>,
}

impl OAuth2ProviderSpec {
    /// A spec with only the required fields; set `preset` or `token_url` before use.
    pub fn new(provider_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        OAuth2ProviderSpec {
            provider_id: provider_id.into(),
            preset: None,
            tenant: None,
            token_url: None,
            client_id: client_id.into(),
            auth_style: None,
            scopes: Vec::new(),
            extra_params: BTreeMap::new(),
            timeout_secs: None,
            revocation_url: None,
            introspection_url: None,
            userinfo_url: None,
            default_lifetime_secs: None,
            grant: None,
            authorization_url: None,
            device_authorization_url: None,
            issuer: None,
        }
    }

    /// Builds the config, with the client secret supplied separately. `Config` error
    /// when neither `preset` nor `token_url` is given, or `tenant` is used without the
    /// Microsoft preset. URLs are checked later by `OAuth2Provider::new`.
    pub fn into_config(self, client_secret: Option<SecretString>) -> Result<OAuth2Config> {
        let pid = self.provider_id.clone();
        let with_pid = |e: Error| e.with_context("provider", pid.as_str());
        if self.tenant.is_some() && self.preset != Some(Preset::Microsoft) {
            return Err(with_pid(Error::config(
                "`tenant` applies only to preset = \"microsoft\"",
            )));
        }
        let mut config = match (self.preset, self.token_url) {
            (Some(preset), token_url) => {
                let url = match token_url {
                    Some(url) => url,
                    None => preset
                        .token_url(self.tenant.as_deref())
                        .map_err(|e| with_pid(Error::config(e.message().to_string())))?,
                };
                preset.apply(self.provider_id, self.client_id, url)
            }
            (None, Some(url)) => OAuth2Config::new(self.provider_id, url, self.client_id),
            // Endpoints come from the issuer's metadata: OAuth2Config::discover.
            (None, None) if self.issuer.is_some() => {
                OAuth2Config::new(self.provider_id, "", self.client_id)
            }
            (None, None) => {
                return Err(with_pid(Error::config(
                    "OAuth2 provider spec needs `token_url`, `preset` or `issuer`",
                )));
            }
        };
        if let Some(style) = self.auth_style {
            config = config.with_auth_style(style);
        }
        if let Some(secret) = client_secret {
            config = config.with_client_secret(secret);
        }
        config = config.with_scopes(self.scopes);
        for (k, v) in self.extra_params {
            config = config.with_extra_param(k, v);
        }
        if let Some(secs) = self.timeout_secs {
            config = config.with_timeout(Duration::from_secs(secs));
        }
        if let Some(url) = self.revocation_url {
            config = config.with_revocation_url(url);
        }
        if let Some(url) = self.introspection_url {
            config = config.with_introspection_url(url);
        }
        if let Some(url) = self.userinfo_url {
            config = config.with_userinfo_url(url);
        }
        if let Some(secs) = self.default_lifetime_secs {
            config = config.with_default_lifetime((secs > 0).then(|| Duration::from_secs(secs)));
        }
        if let Some(grant) = self.grant {
            config = config.with_grant(grant);
        }
        if let Some(url) = self.authorization_url {
            config = config.with_authorization_url(url);
        }
        if let Some(url) = self.device_authorization_url {
            config = config.with_device_authorization_url(url);
        }
        if let Some(issuer) = self.issuer {
            config = config.with_issuer(issuer);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::ErrorKind;

    #[test]
    fn toml_spec_with_preset_and_overrides() {
        let spec: OAuth2ProviderSpec = toml::from_str(
            r#"
            provider_id = "ms"
            preset = "microsoft"
            tenant = "contoso.onmicrosoft.com"
            client_id = "cid"
            auth_style = "basic_auth"
            scopes = ["offline_access", "User.Read"]
            timeout_secs = 5
            default_lifetime_secs = 0
            [extra_params]
            resource = "api://x"
            "#,
        )
        .unwrap();
        let c = spec
            .into_config(Some(SecretString::from("secret")))
            .unwrap();
        assert!(c.token_url().contains("/contoso.onmicrosoft.com/"));
        assert_eq!(c.auth_style(), AuthStyle::BasicAuth);
        assert_eq!(c.scopes(), ["offline_access", "User.Read"]);
        assert_eq!(c.timeout(), Duration::from_secs(5));
        assert_eq!(c.default_lifetime(), None);
        assert!(c.has_client_secret());
        assert_eq!(c.extra_params(), [("resource".into(), "api://x".into())]);
        assert_eq!(
            c.userinfo_url(),
            Some("https://graph.microsoft.com/oidc/userinfo")
        );
    }

    #[test]
    fn plain_token_url_spec_and_errors() {
        let spec: OAuth2ProviderSpec = serde_json::from_str(
            r#"{"provider_id":"p","token_url":"https://a.example/token","client_id":"c","revocation_url":"https://a.example/revoke"}"#,
        )
        .unwrap();
        let c = spec.into_config(None).unwrap();
        assert_eq!(c.token_url(), "https://a.example/token");
        assert_eq!(c.auth_style(), AuthStyle::BasicAuth);
        assert_eq!(c.revocation_url(), Some("https://a.example/revoke"));
        assert!(!c.has_client_secret());

        let err = OAuth2ProviderSpec::new("p", "c")
            .into_config(None)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.context_value("provider"), Some("p"));

        let mut spec = OAuth2ProviderSpec::new("p", "c");
        spec.preset = Some(Preset::GitHub);
        spec.tenant = Some("t".into());
        assert_eq!(
            spec.into_config(None).unwrap_err().kind(),
            ErrorKind::Config
        );

        let mut spec = OAuth2ProviderSpec::new("p", "c");
        spec.preset = Some(Preset::Microsoft);
        spec.tenant = Some("../x".into());
        assert_eq!(
            spec.into_config(None).unwrap_err().kind(),
            ErrorKind::Config
        );

        let typo = serde_json::from_str::<OAuth2ProviderSpec>(
            r#"{"provider_id":"p","client_id":"c","token_ur":"x"}"#,
        );
        assert!(typo.is_err());
        let secret_field = serde_json::from_str::<OAuth2ProviderSpec>(
            r#"{"provider_id":"p","client_id":"c","client_secret":"x"}"#,
        );
        assert!(secret_field.is_err(), "the spec has no place for a secret");
    }

    #[test]
    fn grant_and_flow_endpoints_from_toml() {
        let spec: OAuth2ProviderSpec = toml::from_str(
            r#"
            provider_id = "m2m"
            token_url = "https://a.example/token"
            client_id = "svc"
            grant = "client_credentials"
            authorization_url = "https://a.example/authorize"
            device_authorization_url = "https://a.example/device"
            issuer = "https://a.example"
            "#,
        )
        .unwrap();
        let c = spec
            .clone()
            .into_config(Some(SecretString::from("s")))
            .unwrap();
        assert_eq!(c.grant(), Grant::ClientCredentials);
        assert_eq!(c.authorization_url(), Some("https://a.example/authorize"));
        assert_eq!(
            c.device_authorization_url(),
            Some("https://a.example/device")
        );
        assert_eq!(c.issuer(), Some("https://a.example"));
        assert!(c.validate().is_ok());
        // Client credentials without a secret cannot work.
        let err = spec.into_config(None).unwrap().validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("client secret"), "{err}");
    }
}
