//! [`Preset`]: token URLs and auth styles of common providers.

use std::fmt;

use hive_cred_core::{Error, Result};
use serde::Deserialize;

use crate::config::{AuthStyle, OAuth2Config};

/// A well-known OAuth2 provider whose endpoints and client authentication style are
/// filled in for you. Serde names: `"github"`, `"google"`, `"microsoft"`, `"slack"`,
/// `"hubspot"`.
///
/// | preset | token URL | auth style | revocation | user-info |
/// | --- | --- | --- | --- | --- |
/// | GitHub | `https://github.com/login/oauth/access_token` | request body | — | `https://api.github.com/user` |
/// | Google | `https://oauth2.googleapis.com/token` | request body | `https://oauth2.googleapis.com/revoke` | `https://openidconnect.googleapis.com/v1/userinfo` |
/// | Microsoft | `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` | request body | — | `https://graph.microsoft.com/oidc/userinfo` |
/// | Slack | `https://slack.com/api/oauth.v2.access` | request body | — | — |
/// | HubSpot | `https://api.hubapi.com/oauth/v1/token` | request body | — | — |
///
/// | preset | authorization | device authorization (RFC 8628) |
/// | --- | --- | --- |
/// | GitHub | `https://github.com/login/oauth/authorize` | `https://github.com/login/device/code` |
/// | Google | `https://accounts.google.com/o/oauth2/v2/auth` | `https://oauth2.googleapis.com/device/code` |
/// | Microsoft | `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize` | `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode` |
/// | Slack | `https://slack.com/oauth/v2/authorize` | — |
/// | HubSpot | `https://app.hubspot.com/oauth/authorize` | — |
///
/// "—": the provider has no standard (RFC 7009 / bearer GET) endpoint for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[non_exhaustive]
pub enum Preset {
    /// GitHub (OAuth apps and GitHub apps with expiring user tokens).
    #[serde(rename = "github")]
    GitHub,
    /// Google.
    #[serde(rename = "google")]
    Google,
    /// Microsoft identity platform v2.0 (Entra ID); takes a tenant.
    #[serde(rename = "microsoft")]
    Microsoft,
    /// Slack (token rotation).
    #[serde(rename = "slack")]
    Slack,
    /// HubSpot.
    #[serde(rename = "hubspot")]
    HubSpot,
}

/// The Microsoft tenant used when none is given.
pub const MICROSOFT_DEFAULT_TENANT: &str = "common";

impl Preset {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::GitHub => "github",
            Preset::Google => "google",
            Preset::Microsoft => "microsoft",
            Preset::Slack => "slack",
            Preset::HubSpot => "hubspot",
        }
    }

    /// The token URL. `tenant` is used by Microsoft only (default `common`); it must be
    /// 1 to 64 characters of `A-Z a-z 0-9 . -` (a tenant id, a domain or
    /// `common`/`organizations`/`consumers`), else `InvalidInput`.
    pub fn token_url(self, tenant: Option<&str>) -> Result<String> {
        Ok(match self {
            Preset::GitHub => "https://github.com/login/oauth/access_token".into(),
            Preset::Google => "https://oauth2.googleapis.com/token".into(),
            Preset::Microsoft => {
                let tenant = tenant.unwrap_or(MICROSOFT_DEFAULT_TENANT);
                let ok = !tenant.is_empty()
                    && tenant.len() <= 64
                    && !tenant.starts_with('.')
                    && tenant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                if !ok {
                    return Err(Error::invalid_input(
                        "invalid Microsoft tenant: use a tenant id (GUID), a domain, or common/organizations/consumers",
                    ));
                }
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
            Preset::Slack => "https://slack.com/api/oauth.v2.access".into(),
            Preset::HubSpot => "https://api.hubapi.com/oauth/v1/token".into(),
        })
    }

    pub(crate) fn default_token_url(self) -> String {
        match self.token_url(None) {
            Ok(url) => url,
            // The default tenant is valid; keep a well-formed URL either way.
            Err(_) => format!(
                "https://login.microsoftonline.com/{MICROSOFT_DEFAULT_TENANT}/oauth2/v2.0/token"
            ),
        }
    }

    /// How the provider expects the client to authenticate.
    pub fn auth_style(self) -> AuthStyle {
        // All five document client_id/client_secret as form fields; Basic is not
        // accepted everywhere (HubSpot, Slack).
        AuthStyle::RequestBody
    }

    /// The RFC 7009 revocation endpoint, when the provider has one.
    pub fn revocation_url(self) -> Option<&'static str> {
        match self {
            Preset::Google => Some("https://oauth2.googleapis.com/revoke"),
            _ => None,
        }
    }

    /// A user-info endpoint that accepts the access token as a bearer token.
    pub fn userinfo_url(self) -> Option<&'static str> {
        match self {
            Preset::GitHub => Some("https://api.github.com/user"),
            Preset::Google => Some("https://openidconnect.googleapis.com/v1/userinfo"),
            Preset::Microsoft => Some("https://graph.microsoft.com/oidc/userinfo"),
            Preset::Slack | Preset::HubSpot => None,
        }
    }

    /// The authorization endpoint (authorization code flow). `tenant` as for
    /// [`token_url`](Self::token_url).
    pub fn authorization_url(self, tenant: Option<&str>) -> Result<String> {
        Ok(match self {
            Preset::GitHub => "https://github.com/login/oauth/authorize".into(),
            Preset::Google => "https://accounts.google.com/o/oauth2/v2/auth".into(),
            Preset::Microsoft => self
                .token_url(tenant)?
                .replace("/oauth2/v2.0/token", "/oauth2/v2.0/authorize"),
            Preset::Slack => "https://slack.com/oauth/v2/authorize".into(),
            Preset::HubSpot => "https://app.hubspot.com/oauth/authorize".into(),
        })
    }

    /// The RFC 8628 device authorization endpoint, when the provider has one. `tenant`
    /// as for [`token_url`](Self::token_url).
    pub fn device_authorization_url(self, tenant: Option<&str>) -> Result<Option<String>> {
        Ok(match self {
            Preset::GitHub => Some("https://github.com/login/device/code".into()),
            Preset::Google => Some("https://oauth2.googleapis.com/device/code".into()),
            Preset::Microsoft => Some(
                self.token_url(tenant)?
                    .replace("/oauth2/v2.0/token", "/oauth2/v2.0/devicecode"),
            ),
            Preset::Slack | Preset::HubSpot => None,
        })
    }

    pub(crate) fn apply(
        self,
        provider_id: String,
        client_id: String,
        token_url: String,
    ) -> OAuth2Config {
        let mut config =
            OAuth2Config::new(provider_id, token_url, client_id).with_auth_style(self.auth_style());
        config.revocation_url = self.revocation_url().map(str::to_string);
        config.userinfo_url = self.userinfo_url().map(str::to_string);
        // The tenant is the one already placed in the token URL.
        let tenant = (self == Preset::Microsoft)
            .then(|| {
                config
                    .token_url
                    .strip_prefix("https://login.microsoftonline.com/")
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_string)
            })
            .flatten();
        config.authorization_url = self.authorization_url(tenant.as_deref()).ok();
        config.device_authorization_url = self
            .device_authorization_url(tenant.as_deref())
            .ok()
            .flatten();
        config
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "github" => Preset::GitHub,
            "google" => Preset::Google,
            "microsoft" | "azure" | "entra" => Preset::Microsoft,
            "slack" => Preset::Slack,
            "hubspot" => Preset::HubSpot,
            _ => {
                return Err(Error::invalid_input(format!(
                    "unknown OAuth2 preset {:?}: expected one of github, google, microsoft, slack, hubspot",
                    s.chars().take(40).collect::<String>()
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fill_https_urls_and_style() {
        for p in [
            Preset::GitHub,
            Preset::Google,
            Preset::Microsoft,
            Preset::Slack,
            Preset::HubSpot,
        ] {
            let c = OAuth2Config::from_preset(p, "pid", "cid");
            assert!(c.token_url().starts_with("https://"), "{p}");
            assert_eq!(c.auth_style(), AuthStyle::RequestBody);
            assert!(c.validate().is_ok(), "{p}");
            assert_eq!(p.as_str().parse::<Preset>().unwrap(), p);
            let json: Preset = serde_json::from_str(&format!("\"{p}\"")).unwrap();
            assert_eq!(json, p);
        }
        assert_eq!(
            OAuth2Config::github("g", "c").token_url(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(
            OAuth2Config::google("g", "c").revocation_url(),
            Some("https://oauth2.googleapis.com/revoke")
        );
        assert!("nope".parse::<Preset>().is_err());
    }

    #[test]
    fn presets_have_authorization_and_device_endpoints() {
        let gh = OAuth2Config::github("g", "c");
        assert_eq!(
            gh.authorization_url(),
            Some("https://github.com/login/oauth/authorize")
        );
        assert_eq!(
            gh.device_authorization_url(),
            Some("https://github.com/login/device/code")
        );
        let ms = OAuth2Config::microsoft("m", "contoso.onmicrosoft.com", "c").unwrap();
        assert_eq!(
            ms.authorization_url(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize")
        );
        assert_eq!(
            ms.device_authorization_url(),
            Some(
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"
            )
        );
        assert!(
            OAuth2Config::slack("s", "c")
                .device_authorization_url()
                .is_none()
        );
        assert!(
            OAuth2Config::hubspot("h", "c")
                .authorization_url()
                .is_some()
        );
        for p in [
            Preset::GitHub,
            Preset::Google,
            Preset::Microsoft,
            Preset::Slack,
            Preset::HubSpot,
        ] {
            let c = OAuth2Config::from_preset(p, "pid", "cid");
            let urls = c.validate().unwrap();
            assert!(urls.authorization.is_some(), "{p}");
        }
    }

    #[test]
    fn microsoft_tenant_is_validated_and_placed() {
        let c = OAuth2Config::microsoft("m", "contoso.onmicrosoft.com", "cid").unwrap();
        assert_eq!(
            c.token_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(
            OAuth2Config::from_preset(Preset::Microsoft, "m", "c")
                .token_url()
                .contains("/common/")
        );
        for bad in ["", "../x", "a/b", "evil.com?x=", ".hidden", "a b"] {
            assert!(OAuth2Config::microsoft("m", bad, "cid").is_err(), "{bad:?}");
        }
    }
}
