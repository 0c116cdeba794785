//! [`OAuth2Config`], [`AuthStyle`] and endpoint URL rules.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hive_cred_core::{Error, Result, SecretString};
use serde::Deserialize;
use url::{Host, Url};

use crate::preset::Preset;

/// The default request timeout: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The lifetime assumed for an access token when the token endpoint sends no
/// `expires_in` (or an unreadable one): 1 hour.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Form parameters the refresh request sets itself; extra parameters may not use them.
const RESERVED_PARAMS: [&str; 5] = [
    "grant_type",
    "refresh_token",
    "client_id",
    "client_secret",
    "scope",
];

/// How a provider obtains a new access token when the old one expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Grant {
    /// The refresh-token grant (RFC 6749 section 6): the credential holds a refresh
    /// token obtained once by a person (`connect`). Serde name `"refresh_token"`.
    #[default]
    RefreshToken,
    /// The client credentials grant (RFC 6749 section 4.4), machine to machine: each
    /// "refresh" is a new grant authenticated by the client id and secret alone; the
    /// credential needs no refresh token. Serde name `"client_credentials"`.
    ClientCredentials,
}

impl Grant {
    /// The serde name, which is also the `grant_type` sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::RefreshToken => "refresh_token",
            Grant::ClientCredentials => "client_credentials",
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client authenticates to the token endpoint (RFC 6749 section 2.3.1).
///
/// Without a client secret (a public client) both styles send `client_id` in the
/// request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthStyle {
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))`
    /// (`client_secret_basic`). Serde name `"basic_auth"` (alias `"basic"`). The RFC's
    /// default, which every compliant server supports.
    #[default]
    #[serde(alias = "basic")]
    BasicAuth,
    /// `client_id` and `client_secret` as form fields of the request body
    /// (`client_secret_post`). Serde name `"request_body"` (alias `"body"`).
    #[serde(alias = "body")]
    RequestBody,
}

impl AuthStyle {
    /// The serde name (`"basic_auth"` or `"request_body"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStyle::BasicAuth => "basic_auth",
            AuthStyle::RequestBody => "request_body",
        }
    }
}

impl fmt::Display for AuthStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything an [`OAuth2Provider`](crate::OAuth2Provider) needs to refresh tokens at one
/// authorisation server.
///
/// ```
/// use std::time::Duration;
/// use hive_cred_oauth::{AuthStyle, OAuth2Config, OAuth2Provider};
/// use hive_cred_core::SecretString;
///
/// let config = OAuth2Config::new("oauth2_provider", "https://auth.example.com/token", "my-client")
///     .with_client_secret(SecretString::from("s3cret"))
///     .with_auth_style(AuthStyle::RequestBody)
///     .with_scopes(["read", "write"])
///     .with_timeout(Duration::from_secs(10));
/// let provider = OAuth2Provider::new(config)?;
/// assert!(!format!("{provider:?}").contains("s3cret"));
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
///
/// # Default
/// - `client_secret`: none (a public client).
/// - `auth_style`: [`AuthStyle::BasicAuth`].
/// - `scopes`: none; the refresh request sends no `scope`, so the server keeps the
///   originally granted scope.
/// - `extra_params`: none.
/// - `timeout`: [`DEFAULT_TIMEOUT`] (30 s) for the whole request, body included.
/// - `revocation_url`, `introspection_url`, `userinfo_url`: none.
/// - `default_lifetime`: `Some(`[`DEFAULT_LIFETIME`]`)` (1 hour), assumed when a token
///   response has no usable `expires_in`. `None` stores such access tokens without expiry.
///
/// URLs are checked by [`OAuth2Provider::new`](crate::OAuth2Provider::new): they must be
/// `https`, except for loopback hosts (`127.0.0.1`, `::1`, `localhost`), and must not
/// carry credentials.
#[derive(Clone)]
#[non_exhaustive]
pub struct OAuth2Config {
    pub(crate) provider_id: String,
    pub(crate) token_url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) auth_style: AuthStyle,
    pub(crate) scopes: Vec<String>,
    pub(crate) extra_params: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) revocation_url: Option<String>,
    pub(crate) introspection_url: Option<String>,
    pub(crate) userinfo_url: Option<String>,
    pub(crate) default_lifetime: Option<Duration>,
    pub(crate) grant: Grant,
    pub(crate) authorization_url: Option<String>,
    pub(crate) device_authorization_url: Option<String>,
    pub(crate) issuer: Option<String>,
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: Vec<&str> = self.extra_params.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OAuth2Config")
            .field("provider_id", &self.provider_id)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("auth_style", &self.auth_style)
            .field("scopes", &self.scopes)
            .field("extra_params", &extra)
            .field("timeout", &self.timeout)
            .field("grant", &self.grant)
            .field("authorization_url", &self.authorization_url)
            .field("device_authorization_url", &self.device_authorization_url)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl OAuth2Config {
    /// A config for the token endpoint `token_url`, refreshing credentials whose
    /// `provider_id` is `provider_id`, as client `client_id`.
    pub fn new(
        provider_id: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        OAuth2Config {
            provider_id: provider_id.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            auth_style: AuthStyle::default(),
            scopes: Vec::new(),
            extra_params: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            revocation_url: None,
            introspection_url: None,
            userinfo_url: None,
            default_lifetime: Some(DEFAULT_LIFETIME),
            grant: Grant::RefreshToken,
            authorization_url: None,
            device_authorization_url: None,
            issuer: None,
        }
    }

    /// A config with the token URL, auth style and (where the provider has standard
    /// ones) revocation and user-info URLs of `preset`. Microsoft uses the `common`
    /// tenant; see [`OAuth2Config::microsoft`] for another.
    pub fn from_preset(
        preset: Preset,
        provider_id: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        preset.apply(
            provider_id.into(),
            client_id.into(),
            preset.default_token_url(),
        )
    }

    /// GitHub (`https://github.com/login/oauth/access_token`, request body; user-info
    /// `https://api.github.com/user`). GitHub has no RFC 7009 revocation endpoint.
    pub fn github(provider_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::from_preset(Preset::GitHub, provider_id, client_id)
    }

    /// Google (`https://oauth2.googleapis.com/token`, request body; revocation
    /// `https://oauth2.googleapis.com/revoke`; OpenID user-info).
    pub fn google(provider_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::from_preset(Preset::Google, provider_id, client_id)
    }

    /// Microsoft identity platform v2.0 for `tenant` (a tenant id, a domain, or
    /// `common` / `organizations` / `consumers`): request body; OpenID user-info on Graph.
    /// Microsoft expects the scopes in refresh requests: add them with
    /// [`with_scopes`](Self::with_scopes). `InvalidInput` for a malformed tenant.
    pub fn microsoft(
        provider_id: impl Into<String>,
        tenant: &str,
        client_id: impl Into<String>,
    ) -> Result<Self> {
        let url = Preset::Microsoft.token_url(Some(tenant))?;
        Ok(Preset::Microsoft.apply(provider_id.into(), client_id.into(), url))
    }

    /// Slack (`https://slack.com/api/oauth.v2.access`, request body). Slack's
    /// `{"ok": false, "error": ...}` answers are read as OAuth errors.
    pub fn slack(provider_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::from_preset(Preset::Slack, provider_id, client_id)
    }

    /// HubSpot (`https://api.hubapi.com/oauth/v1/token`, request body). HubSpot's
    /// `{"status": "BAD_REFRESH_TOKEN"}` answers are read as OAuth errors.
    pub fn hubspot(provider_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::from_preset(Preset::HubSpot, provider_id, client_id)
    }

    /// The client secret (confidential clients).
    #[must_use]
    pub fn with_client_secret(mut self, client_secret: SecretString) -> Self {
        self.client_secret = Some(client_secret);
        self
    }

    /// How the client authenticates. Default: [`AuthStyle::BasicAuth`].
    #[must_use]
    pub fn with_auth_style(mut self, auth_style: AuthStyle) -> Self {
        self.auth_style = auth_style;
        self
    }

    /// Scopes sent with each refresh request (space-joined). Default: none.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// An extra form parameter for each refresh request (for example `resource` or
    /// `audience`). Names the request sets itself (`grant_type`, `refresh_token`,
    /// `client_id`, `client_secret`, `scope`) are rejected by `OAuth2Provider::new`.
    #[must_use]
    pub fn with_extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }

    /// The timeout of each HTTP request, body included. Default: 30 s.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// An RFC 7009 revocation endpoint, used by `revoke`. Default: none (`revoke` is
    /// `Unsupported`).
    #[must_use]
    pub fn with_revocation_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_url = Some(url.into());
        self
    }

    /// An RFC 7662 introspection endpoint, used by `validate`. Default: none.
    #[must_use]
    pub fn with_introspection_url(mut self, url: impl Into<String>) -> Self {
        self.introspection_url = Some(url.into());
        self
    }

    /// A user-info (or any "who am I") endpoint that answers a GET with
    /// `Authorization: Bearer <access_token>`; used by `validate` when no introspection
    /// URL is set. Default: none.
    #[must_use]
    pub fn with_userinfo_url(mut self, url: impl Into<String>) -> Self {
        self.userinfo_url = Some(url.into());
        self
    }

    /// The lifetime assumed when a token response has no usable `expires_in`.
    /// Default: `Some(1 hour)`; `None` stores such access tokens without expiry.
    #[must_use]
    pub fn with_default_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// How expired access tokens are replaced. Default: [`Grant::RefreshToken`]. With
    /// [`Grant::ClientCredentials`] a client secret is required.
    #[must_use]
    pub fn with_grant(mut self, grant: Grant) -> Self {
        self.grant = grant;
        self
    }

    /// The authorization endpoint (RFC 6749 section 3.1), used by the authorization
    /// code flow. Default: the preset's, else none.
    #[must_use]
    pub fn with_authorization_url(mut self, url: impl Into<String>) -> Self {
        self.authorization_url = Some(url.into());
        self
    }

    /// The device authorization endpoint (RFC 8628 section 3.1), used by the device
    /// flow. Default: the preset's, else none.
    #[must_use]
    pub fn with_device_authorization_url(mut self, url: impl Into<String>) -> Self {
        self.device_authorization_url = Some(url.into());
        self
    }

    /// The authorisation server's issuer identifier (RFC 8414). When set, the
    /// authorization code flow requires a matching `iss` in the redirect whenever the
    /// server sends one (RFC 9207). Default: none.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The grant used to replace expired access tokens.
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// The authorization endpoint.
    pub fn authorization_url(&self) -> Option<&str> {
        self.authorization_url.as_deref()
    }

    /// The device authorization endpoint.
    pub fn device_authorization_url(&self) -> Option<&str> {
        self.device_authorization_url.as_deref()
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The provider id credentials name.
    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether a client secret is set.
    pub fn has_client_secret(&self) -> bool {
        self.client_secret.is_some()
    }

    /// The client authentication style.
    pub fn auth_style(&self) -> AuthStyle {
        self.auth_style
    }

    /// The scopes sent with refresh requests.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The extra form parameters.
    pub fn extra_params(&self) -> &[(String, String)] {
        &self.extra_params
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The revocation endpoint.
    pub fn revocation_url(&self) -> Option<&str> {
        self.revocation_url.as_deref()
    }

    /// The introspection endpoint.
    pub fn introspection_url(&self) -> Option<&str> {
        self.introspection_url.as_deref()
    }

    /// The user-info endpoint.
    pub fn userinfo_url(&self) -> Option<&str> {
        self.userinfo_url.as_deref()
    }

    /// The lifetime assumed without `expires_in`.
    pub fn default_lifetime(&self) -> Option<Duration> {
        self.default_lifetime
    }

    /// Checks everything that can be checked without a network call. `Config` errors
    /// name the field and what to do.
    pub(crate) fn validate(&self) -> Result<ValidatedUrls> {
        let cfg_err =
            |msg: String| Error::config(msg).with_context("provider", self.provider_id.as_str());
        if self.provider_id.trim().is_empty() {
            return Err(Error::config("OAuth2 config needs a non-empty provider_id"));
        }
        if self.client_id.trim().is_empty() {
            return Err(cfg_err("OAuth2 config needs a non-empty client_id".into()));
        }
        if self.timeout.is_zero() {
            return Err(cfg_err(
                "OAuth2 request timeout must be greater than zero".into(),
            ));
        }
        for (name, _) in &self.extra_params {
            if name.is_empty() {
                return Err(cfg_err("OAuth2 extra parameter with an empty name".into()));
            }
            if RESERVED_PARAMS.contains(&name.as_str()) {
                return Err(cfg_err(format!(
                    "OAuth2 extra parameter {name:?} is set by the refresh request itself; remove it (use with_scopes for scopes and with_client_secret for the secret)"
                )));
            }
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(cfg_err(
                "OAuth2 scopes must be non-empty and contain no spaces (pass one scope per item)"
                    .into(),
            ));
        }
        if self.grant == Grant::ClientCredentials && self.client_secret.is_none() {
            return Err(cfg_err(
                "the client_credentials grant needs a client secret; set it with with_client_secret"
                    .into(),
            ));
        }
        let map = |what: &'static str, url: &Option<String>| {
            url.as_deref()
                .map(|u| endpoint_url(what, u))
                .transpose()
                .map_err(|e| e.with_context("provider", self.provider_id.as_str()))
        };
        Ok(ValidatedUrls {
            token: endpoint_url("token", &self.token_url)
                .map_err(|e| e.with_context("provider", self.provider_id.as_str()))?,
            revocation: map("revocation", &self.revocation_url)?,
            introspection: map("introspection", &self.introspection_url)?,
            userinfo: map("user-info", &self.userinfo_url)?,
            authorization: map("authorization", &self.authorization_url)?,
            device_authorization: map("device authorization", &self.device_authorization_url)?,
        })
    }
}

/// The endpoint URLs of a validated config.
#[derive(Debug, Clone)]
pub(crate) struct ValidatedUrls {
    pub(crate) token: Url,
    pub(crate) revocation: Option<Url>,
    pub(crate) introspection: Option<Url>,
    pub(crate) userinfo: Option<Url>,
    pub(crate) authorization: Option<Url>,
    pub(crate) device_authorization: Option<Url>,
}

/// Whether `host` is a loopback host (`localhost`, `127.0.0.0/8`, `::1`).
pub(crate) fn is_loopback(host: Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    }
}

/// Parses and checks an endpoint URL: https (http only for loopback hosts), a host, no
/// embedded credentials, no fragment. Messages never echo a URL that may hold a
/// credential.
pub(crate) fn endpoint_url(what: &'static str, raw: &str) -> Result<Url> {
    let url = Url::parse(raw.trim())
        .map_err(|e| Error::config(format!("the {what} URL is not a valid absolute URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(format!(
            "the {what} URL must not contain credentials; set the client secret with with_client_secret"
        )));
    }
    let Some(host) = url.host() else {
        return Err(Error::config(format!("the {what} URL has no host")).with_context("url", &url));
    };
    if url.fragment().is_some() {
        return Err(
            Error::config(format!("the {what} URL must not have a #fragment"))
                .with_context("url", &url),
        );
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(host) => Ok(url),
        _ => Err(Error::config(format!(
            "the {what} URL must use https (plain http is allowed only for the loopback hosts 127.0.0.1, ::1 and localhost)"
        ))
        .with_context("url", &url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::ErrorKind;

    #[test]
    fn https_or_loopback_only() {
        for ok in [
            "https://auth.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://[::1]:9000/token",
            "http://localhost/token",
            "http://LOCALHOST:1/token",
        ] {
            assert!(endpoint_url("token", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://auth.example.com/token",
            "http://10.0.0.1/token",
            "http://localhost.evil.com/token",
            "http://[::2]/token",
            "ftp://127.0.0.1/token",
            "file:///etc/passwd",
            "not a url",
            "/relative/token",
            "https://auth.example.com/token#frag",
        ] {
            let err = endpoint_url("token", bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn url_credentials_rejected_without_echoing_them() {
        let err = endpoint_url("token", "https://user:hunter2@auth.example.com/token").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn validate_checks_fields() {
        let base = || OAuth2Config::new("p", "https://a.example/token", "c");
        assert!(base().validate().is_ok());
        let cases = [
            OAuth2Config::new("", "https://a.example/token", "c"),
            OAuth2Config::new("p", "https://a.example/token", " "),
            base().with_timeout(Duration::ZERO),
            base().with_extra_param("grant_type", "x"),
            base().with_extra_param("client_secret", "x"),
            base().with_extra_param("", "x"),
            base().with_scopes(["a b"]),
            base().with_revocation_url("http://example.com/revoke"),
            base().with_introspection_url("nope"),
            base().with_userinfo_url("http://example.com/me"),
        ];
        for c in cases {
            let err = c.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{c:?}");
        }
        let ok = base()
            .with_extra_param("audience", "api")
            .with_scopes(["a", "b"])
            .with_revocation_url("https://a.example/revoke");
        let urls = ok.validate().unwrap();
        assert_eq!(urls.revocation.unwrap().path(), "/revoke");
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = OAuth2Config::new("p", "https://a.example/token", "c");
        assert_eq!(c.timeout(), Duration::from_secs(30));
        assert_eq!(c.auth_style(), AuthStyle::BasicAuth);
        assert_eq!(c.default_lifetime(), Some(Duration::from_secs(3600)));
        assert!(c.scopes().is_empty() && c.extra_params().is_empty());
        assert!(!c.has_client_secret());
        assert!(c.revocation_url().is_none() && c.introspection_url().is_none());
    }

    #[test]
    fn debug_redacts_secret_and_extra_param_values() {
        let c = OAuth2Config::new("p", "https://a.example/token", "c")
            .with_client_secret(SecretString::from(hive_cred_core::testkit::CANARY))
            .with_extra_param("audience", "canary-5f3b-extra");
        let d = format!("{c:?}");
        assert!(!d.contains(hive_cred_core::testkit::CANARY), "{d}");
        assert!(!d.contains("canary-5f3b-extra"), "{d}");
        assert!(d.contains("[REDACTED]") && d.contains("audience"));
    }

    #[test]
    fn auth_style_serde_names() {
        #[derive(Deserialize)]
        struct W {
            s: AuthStyle,
        }
        for (text, style) in [
            ("basic_auth", AuthStyle::BasicAuth),
            ("basic", AuthStyle::BasicAuth),
            ("request_body", AuthStyle::RequestBody),
            ("body", AuthStyle::RequestBody),
        ] {
            let w: W = serde_json::from_str(&format!("{{\"s\":\"{text}\"}}")).unwrap();
            assert_eq!(w.s, style);
        }
        assert_eq!(AuthStyle::RequestBody.to_string(), "request_body");
    }
}
