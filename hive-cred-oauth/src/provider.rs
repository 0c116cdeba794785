//! [`OAuth2Provider`]: the refresh-token grant, RFC 7009 revocation and validation.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hive_cred_core::{
    Clock, CredentialObject, CredentialProvider, CredentialType, Error, ErrorKind, ExposeSecret,
    Metadata, Result, SecretString, SystemClock,
};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::http::header;
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, StandardRevocableToken, TokenResponse,
    TokenUrl,
};
use reqwest::Method;
use url::Url;

use crate::config::{AuthStyle, Grant, OAuth2Config, ValidatedUrls};
use crate::error::{Observed, RefreshContext, kind_of_code, shown_code};
use crate::response::{Lifetime, TokenAnswer};
use crate::transport::{Received, TokenHttp, Transport};

/// The key holding the access token.
pub const ACCESS_TOKEN: &str = "access_token";
/// The key holding the refresh token.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// Access-token key metadata: the `token_type` the server sent (`"Bearer"`, ...).
pub const TOKEN_TYPE_METADATA: &str = "token_type";
/// Access-token key metadata: the granted scopes, space-separated.
pub const SCOPE_METADATA: &str = "scope";

/// The longest lifetime accepted from `expires_in` (10 years); longer values are capped.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The grant of one token request.
pub(crate) enum TokenGrant<'a> {
    Refresh(&'a RefreshToken),
    ClientCredentials,
    Code {
        code: AuthorizationCode,
        verifier: PkceCodeVerifier,
        redirect: RedirectUrl,
    },
}

impl TokenGrant<'_> {
    fn name(&self) -> &'static str {
        match self {
            TokenGrant::Refresh(_) => "refresh_token",
            TokenGrant::ClientCredentials => "client_credentials",
            TokenGrant::Code { .. } => "authorization_code",
        }
    }
}

type TokenClient = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Refreshes OAuth2 credentials with the refresh-token grant (RFC 6749 section 6), or,
/// configured with [`Grant::ClientCredentials`], with a new client credentials grant
/// (RFC 6749 section 4.4) each time: same single flight, locks and error classes in the
/// store; no refresh token is needed or kept.
///
/// # Behavior
/// - `refresh` reads the credential's `refresh_token` key and returns a copy with a new
///   `access_token` whose `expires_at` is the request's start time (from the provider's
///   clock) plus `expires_in`. `expires_in` may be a number or a numeric string; when it
///   is missing or unreadable the config's default lifetime (1 hour unless configured)
///   is assumed. `token_type` and `scope` go into the access-token key's metadata
///   ([`TOKEN_TYPE_METADATA`], [`SCOPE_METADATA`]); when the server omits them the
///   previous values stay. A rotated refresh token replaces the old one (with
///   `refresh_token_expires_in` as its expiry when sent); otherwise the old one is kept
///   unchanged. `last_refreshed` is set. Other keys are untouched.
/// - Errors (never containing a token, the client secret or a response body):
///   - no `refresh_token` key, `invalid_grant`, `unauthorized_client`, revoked or
///     expired grants: `RefreshRejected` (not temporary), naming credential and provider;
///   - `invalid_client`, `invalid_scope`, `invalid_request`, a redirect (never followed),
///     HTTP 404/405: `Config`;
///   - HTTP 429: `RateLimited` with [`Error::retry_after`] from `Retry-After` (seconds
///     or HTTP date, capped at 24 h);
///   - HTTP 5xx, timeouts, connection failures, malformed or non-JSON bodies:
///     `Unavailable` (temporary).
/// - `revoke` posts each token (refresh token first, then access token) to the RFC 7009
///   revocation URL; `Unsupported` without one.
/// - `validate` asks the RFC 7662 introspection URL (`active`), else GETs the user-info
///   URL with the access token (2xx: valid, 401: invalid). Without either it answers
///   locally: an unexpired access token or a refresh token counts as valid.
///
/// HTTP redirects are never followed, every request has the configured timeout, and
/// responses larger than 256 KiB are refused.
pub struct OAuth2Provider {
    config: OAuth2Config,
    urls: ValidatedUrls,
    client: TokenClient,
    transport: Transport,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Provider")
            .field("provider_id", &self.config.provider_id)
            .field("token_url", &self.urls.token.as_str())
            .field("client_id", &self.config.client_id)
            .field("auth_style", &self.config.auth_style)
            .finish_non_exhaustive()
    }
}

impl OAuth2Provider {
    /// A provider for `config`. `Config` error when a URL is not https (plain http is
    /// allowed for loopback hosts only), carries credentials or does not parse, when
    /// `provider_id` or `client_id` is empty, the timeout is zero, or an extra parameter
    /// collides with one the request sets itself.
    pub fn new(config: OAuth2Config) -> Result<Self> {
        let urls = config.validate()?;
        let mut client = oauth2::Client::new(ClientId::new(config.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(urls.token.clone()))
            .set_auth_type(match config.auth_style {
                AuthStyle::BasicAuth => AuthType::BasicAuth,
                AuthStyle::RequestBody => AuthType::RequestBody,
            });
        if let Some(secret) = &config.client_secret {
            // EXPOSE: the oauth2 client keeps its own copy to authenticate token requests.
            client =
                client.set_client_secret(ClientSecret::new(secret.expose_secret().to_string()));
        }
        let transport = Transport::new(config.timeout)
            .map_err(|e| e.with_context("provider", config.provider_id.as_str()))?;
        Ok(OAuth2Provider {
            config,
            urls,
            client,
            transport,
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for request start times and `Retry-After` dates. Default:
    /// [`SystemClock`].
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A new OAuth2 credential `id` for this provider, with an access token from the
    /// client credentials grant (machine to machine; no person involved): `provider_id`
    /// and `auto_refresh` set, so the store replaces the token with a new grant when it
    /// expires. `Config` error when the provider's grant is not
    /// [`Grant::ClientCredentials`]; otherwise the errors of `refresh`.
    pub async fn grant_client_credentials(&self, id: &str) -> Result<CredentialObject> {
        if self.config.grant != Grant::ClientCredentials {
            return Err(Error::config(
                "this OAuth2 provider is not configured for the client_credentials grant; use with_grant(Grant::ClientCredentials)",
            )
            .with_context("provider", self.config.provider_id.as_str()));
        }
        self.refresh(&self.new_credential(id)?).await
    }

    /// An empty OAuth2 credential `id` of this provider, refreshed automatically: what a
    /// grant fills in.
    pub(crate) fn new_credential(&self, id: &str) -> Result<CredentialObject> {
        CredentialObject::builder(id, hive_cred_core::CredentialType::OAuth2)
            .provider_id(self.config.provider_id.as_str())
            .auto_refresh(true)
            .build()
    }

    /// Who the credential's access token belongs to, from the user-info endpoint: the
    /// first of `email`, `preferred_username`, `login`, `username`, `name`, `sub` that is
    /// a non-empty string. `Ok(None)` without a user-info URL or when the answer names
    /// nobody; endpoint failures are errors as in `validate`.
    pub async fn identity(&self, credential: &CredentialObject) -> Result<Option<String>> {
        let Some(url) = &self.urls.userinfo else {
            return Ok(None);
        };
        let Some(received) = self.get_userinfo(url, credential).await? else {
            return Ok(None);
        };
        if !received.status.is_success() {
            return Err(self
                .endpoint_error("user-info endpoint", &received)
                .with_context("provider", self.config.provider_id.as_str()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&received.body).unwrap_or(serde_json::Value::Null);
        Ok([
            "email",
            "preferred_username",
            "login",
            "username",
            "name",
            "sub",
        ]
        .iter()
        .find_map(|k| value.get(*k).and_then(|v| v.as_str()))
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.chars().take(200).collect()))
    }

    /// The config.
    pub fn config(&self) -> &OAuth2Config {
        &self.config
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A client-authenticated form POST to `url`.
    pub(crate) async fn send_form(
        &self,
        url: &Url,
        params: &[(&str, &str)],
        what: &str,
    ) -> Result<Received> {
        self.send(self.authed_form(url, params), what).await
    }

    pub(crate) fn endpoint_error_of(&self, what: &str, received: &Received) -> Error {
        self.endpoint_error(what, received)
    }

    pub(crate) fn urls(&self) -> &ValidatedUrls {
        &self.urls
    }

    pub(crate) fn provider_id_str(&self) -> &str {
        &self.config.provider_id
    }

    fn expiry(&self, start: DateTime<Utc>, lifetime: Option<Duration>) -> Option<DateTime<Utc>> {
        let lifetime = lifetime?.min(MAX_LIFETIME);
        let delta = chrono::Duration::from_std(lifetime).ok()?;
        start.checked_add_signed(delta)
    }

    /// Builds the refreshed credential from the token endpoint's answer.
    pub(crate) fn apply_answer(
        &self,
        credential: &CredentialObject,
        answer: &TokenAnswer,
        started: DateTime<Utc>,
    ) -> Result<(CredentialObject, bool)> {
        let id = credential.id().as_str();
        let access = answer.access_token().secret();
        if access.is_empty() {
            return Err(
                Error::unavailable("the token endpoint sent an empty access_token")
                    .with_context("id", id)
                    .with_context("provider", self.config.provider_id.as_str()),
            );
        }
        let lifetime = match answer.lifetime() {
            Lifetime::Seconds(s) => Some(Duration::from_secs(s)),
            Lifetime::Absent => self.config.default_lifetime,
            Lifetime::Invalid => {
                tracing::warn!(
                    target: "hive_cred::oauth",
                    id,
                    provider = %self.config.provider_id,
                    "token endpoint sent an unreadable expires_in; assuming the default lifetime"
                );
                self.config.default_lifetime
            }
        };
        let mut metadata: Metadata = credential
            .key(ACCESS_TOKEN)
            .map(|k| k.metadata().clone())
            .unwrap_or_default();
        if let Some(tt) = answer.token_type_str() {
            metadata.insert(TOKEN_TYPE_METADATA.into(), tt.to_string());
        }
        if let Some(scopes) = answer.scopes() {
            let joined = scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            metadata.insert(SCOPE_METADATA.into(), joined);
        }
        let mut fresh = credential.clone();
        fresh.set_key_with_metadata(
            ACCESS_TOKEN,
            // The oauth2 token type hands its value over once, into a SecretString.
            SecretString::from(access.clone()),
            self.expiry(started, lifetime),
            metadata,
        )?;
        let rotated = match answer.refresh_token() {
            Some(new) => {
                let old_meta = credential
                    .key(REFRESH_TOKEN)
                    .map(|k| k.metadata().clone())
                    .unwrap_or_default();
                let expires_at = match answer.refresh_lifetime() {
                    Lifetime::Seconds(s) => self.expiry(started, Some(Duration::from_secs(s))),
                    Lifetime::Absent | Lifetime::Invalid => None,
                };
                fresh.set_key_with_metadata(
                    REFRESH_TOKEN,
                    SecretString::from(new.secret().clone()),
                    expires_at,
                    old_meta,
                )?;
                true
            }
            None => false,
        };
        fresh.set_last_refreshed(self.clock.now());
        Ok((fresh, rotated))
    }

    /// One token request with `grant`; the answer applied to `credential`.
    pub(crate) async fn token_request(
        &self,
        credential: &CredentialObject,
        grant: TokenGrant<'_>,
    ) -> Result<CredentialObject> {
        let id = credential.id().as_str();
        let ctx = RefreshContext {
            id,
            provider: &self.config.provider_id,
        };
        let grant_name = grant.name();
        let started = self.clock.now();
        let timer = Instant::now();
        tracing::debug!(
            target: "hive_cred::oauth",
            id,
            provider = %self.config.provider_id,
            grant = grant_name,
            host = self.urls.token.host_str().unwrap_or(""),
            "refreshing credential"
        );

        let observed = Mutex::new(Observed::default());
        let result = {
            let http = TokenHttp {
                transport: &self.transport,
                now: started,
                observed: &observed,
            };
            let scopes = self.config.scopes.iter().map(|s| Scope::new(s.clone()));
            let extra = &self.config.extra_params;
            match grant {
                TokenGrant::Refresh(token) => {
                    let mut request = self.client.exchange_refresh_token(token).add_scopes(scopes);
                    for (name, value) in extra {
                        request = request.add_extra_param(name.as_str(), value.as_str());
                    }
                    request.request_async(&http).await
                }
                TokenGrant::ClientCredentials => {
                    let mut request = self.client.exchange_client_credentials().add_scopes(scopes);
                    for (name, value) in extra {
                        request = request.add_extra_param(name.as_str(), value.as_str());
                    }
                    request.request_async(&http).await
                }
                TokenGrant::Code {
                    code,
                    verifier,
                    redirect,
                } => {
                    let mut request = self
                        .client
                        .exchange_code(code)
                        .set_redirect_uri(std::borrow::Cow::Owned(redirect))
                        .set_pkce_verifier(verifier);
                    for (name, value) in extra {
                        request = request.add_extra_param(name.as_str(), value.as_str());
                    }
                    request.request_async(&http).await
                }
            }
        };
        let observed = observed.into_inner().unwrap_or_else(|p| p.into_inner());
        let elapsed_ms = timer.elapsed().as_millis() as u64;

        let answer = match result {
            Ok(answer) => answer,
            Err(err) => {
                let e = ctx.request_error(err, &observed);
                tracing::debug!(
                    target: "hive_cred::oauth",
                    id,
                    provider = %self.config.provider_id,
                    kind = %e.kind(),
                    status = observed.status,
                    elapsed_ms,
                    "token request failed"
                );
                return Err(e);
            }
        };
        let (fresh, rotated) = self.apply_answer(credential, &answer, started)?;
        tracing::debug!(
            target: "hive_cred::oauth",
            id,
            provider = %self.config.provider_id,
            rotated,
            expires_in = answer.expires_in().map(|d| d.as_secs()),
            elapsed_ms,
            "token request succeeded"
        );
        Ok(fresh)
    }

    /// A POST of `params` with the client authenticated per the auth style.
    fn authed_form(&self, url: &Url, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(params.iter().copied());
        let mut rb = self
            .transport
            .request(Method::POST, url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        match (&self.config.client_secret, self.config.auth_style) {
            (Some(secret), AuthStyle::BasicAuth) => {
                // RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
                let user: String =
                    url::form_urlencoded::byte_serialize(self.config.client_id.as_bytes())
                        .collect();
                // EXPOSE: the client secret authenticates the client (reqwest marks the
                // header sensitive).
                let pass: String =
                    url::form_urlencoded::byte_serialize(secret.expose_secret().as_bytes())
                        .collect();
                rb = rb.basic_auth(user, Some(pass));
            }
            (secret, _) => {
                form.append_pair("client_id", &self.config.client_id);
                if let Some(secret) = secret {
                    // EXPOSE: client_secret_post puts the secret in the request body.
                    form.append_pair("client_secret", secret.expose_secret());
                }
            }
        }
        rb.body(form.finish())
    }

    async fn send(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Received> {
        let request = rb.build().map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the request to the {what} could not be built"),
            )
            .with_source(e.without_url())
        })?;
        self.transport
            .execute(request, self.clock.now())
            .await
            .map_err(|t| t.into_error(what))
    }

    /// The error for a non-2xx answer of a revocation/introspection/user-info endpoint.
    fn endpoint_error(&self, what: &str, received: &Received) -> Error {
        let status = received.status.as_u16();
        let code = serde_json::from_slice::<serde_json::Value>(&received.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        let e = match code {
            Some(code) => {
                let shown = shown_code(&code).to_string();
                let kind = match kind_of_code(&code) {
                    // Outside a refresh, a "dead grant" code means the request was refused.
                    ErrorKind::RefreshRejected => ErrorKind::PermissionDenied,
                    k => k,
                };
                Error::new(kind, format!("the {what} refused the request ({shown})"))
                    .with_context("error_code", shown)
            }
            None if status == 401 || status == 403 => Error::new(
                ErrorKind::Config,
                format!("the {what} did not accept the client credentials (HTTP {status})"),
            ),
            None => Error::unavailable(format!(
                "the {what} sent an unexpected answer (HTTP {status}); the body is withheld because it may hold secrets"
            )),
        };
        e.with_context("status", status)
    }

    async fn introspect(&self, url: &Url, credential: &CredentialObject) -> Result<bool> {
        let Some(token) = credential.get_key(ACCESS_TOKEN) else {
            return Ok(false);
        };
        // EXPOSE: RFC 7662 sends the token to the introspection endpoint.
        let params = [
            ("token", token.expose_secret()),
            ("token_type_hint", "access_token"),
        ];
        let received = self
            .send(self.authed_form(url, &params), "introspection endpoint")
            .await?;
        if !received.status.is_success() {
            return Err(self.endpoint_error("introspection endpoint", &received));
        }
        let active = serde_json::from_slice::<serde_json::Value>(&received.body)
            .ok()
            .and_then(|v| v.get("active").and_then(serde_json::Value::as_bool));
        active.ok_or_else(|| {
            Error::unavailable(
                "the introspection endpoint sent no boolean `active`; the body is withheld because it may hold secrets",
            )
        })
    }

    /// `GET url` with the credential's access token as the bearer; `None` when it has none.
    async fn get_userinfo(
        &self,
        url: &Url,
        credential: &CredentialObject,
    ) -> Result<Option<Received>> {
        let Some(token) = credential.get_key(ACCESS_TOKEN) else {
            return Ok(None);
        };
        let rb = self
            .transport
            .request(Method::GET, url.clone())
            .header(header::ACCEPT, "application/json")
            // EXPOSE: the access token is the bearer credential (reqwest marks the header
            // sensitive).
            .bearer_auth(token.expose_secret());
        self.send(rb, "user-info endpoint").await.map(Some)
    }

    async fn userinfo(&self, url: &Url, credential: &CredentialObject) -> Result<bool> {
        let Some(received) = self.get_userinfo(url, credential).await? else {
            return Ok(false);
        };
        match received.status.as_u16() {
            200..=299 => Ok(true),
            401 => Ok(false),
            _ => Err(self.endpoint_error("user-info endpoint", &received)),
        }
    }
}

#[async_trait]
impl CredentialProvider for OAuth2Provider {
    fn provider_id(&self) -> &str {
        &self.config.provider_id
    }

    /// The configured request timeout: one refresh takes at most this long.
    fn request_timeout(&self) -> Option<std::time::Duration> {
        Some(self.config.timeout())
    }

    /// `oauth2` and `bearer_token`: the types OAuth2 tokens are stored as (the Python
    /// Hive's OAuth2 providers declare the same pair, so imported Hive bearer tokens
    /// with a refresh token stay refreshable).
    fn credential_types(&self) -> Vec<CredentialType> {
        vec![CredentialType::OAuth2, CredentialType::BearerToken]
    }

    /// Whether the credential is of one of [`credential_types`](Self::credential_types)
    /// and has a `refresh_token` key (with the client credentials grant, no refresh
    /// token is needed).
    fn supports(&self, credential: &CredentialObject) -> bool {
        self.credential_types()
            .contains(&credential.credential_type())
            && (self.config.grant == Grant::ClientCredentials || credential.has_key(REFRESH_TOKEN))
    }

    async fn refresh(&self, credential: &CredentialObject) -> Result<CredentialObject> {
        match self.config.grant {
            Grant::ClientCredentials => {
                self.token_request(credential, TokenGrant::ClientCredentials)
                    .await
            }
            Grant::RefreshToken => {
                let Some(stored) = credential.get_key(REFRESH_TOKEN) else {
                    return Err(RefreshContext {
                        id: credential.id().as_str(),
                        provider: &self.config.provider_id,
                    }
                    .no_refresh_token());
                };
                // EXPOSE: the refresh token is the grant's form field; oauth2's
                // RefreshToken redacts it in Debug.
                let token = RefreshToken::new(stored.expose_secret().to_string());
                self.token_request(credential, TokenGrant::Refresh(&token))
                    .await
            }
        }
    }

    async fn validate(&self, credential: &CredentialObject) -> Result<bool> {
        let tag = |e: Error| {
            e.with_context("id", credential.id())
                .with_context("provider", self.config.provider_id.as_str())
                .with_context("operation", "validate")
        };
        if let Some(url) = &self.urls.introspection {
            return self.introspect(url, credential).await.map_err(tag);
        }
        if let Some(url) = &self.urls.userinfo {
            return self.userinfo(url, credential).await.map_err(tag);
        }
        let now = self.clock.now();
        let access_ok = credential
            .key(ACCESS_TOKEN)
            .is_some_and(|k| !k.is_expired_at(now));
        Ok(access_ok || credential.has_key(REFRESH_TOKEN))
    }

    async fn revoke(&self, credential: &CredentialObject) -> Result<()> {
        let tag = |e: Error| {
            e.with_context("id", credential.id())
                .with_context("provider", self.config.provider_id.as_str())
                .with_context("operation", "revoke")
        };
        let Some(url) = &self.urls.revocation else {
            return Err(tag(Error::unsupported(
                "this OAuth2 provider has no revocation URL; set one with OAuth2Config::with_revocation_url",
            )));
        };
        let tokens: Vec<(&str, &SecretString)> = [REFRESH_TOKEN, ACCESS_TOKEN]
            .into_iter()
            .filter_map(|name| credential.get_key(name).map(|v| (name, v)))
            .collect();
        if tokens.is_empty() {
            return Err(tag(Error::invalid_input(
                "the credential has neither a refresh_token nor an access_token to revoke",
            )));
        }
        let mut revoked_any = false;
        for (hint, value) in tokens {
            // EXPOSE: RFC 7009 sends the token to the revocation endpoint.
            let params = [("token", value.expose_secret()), ("token_type_hint", hint)];
            let received = self
                .send(self.authed_form(url, &params), "revocation endpoint")
                .await
                .map_err(tag)?;
            if received.status.is_success() {
                revoked_any = true;
                continue;
            }
            let e = self.endpoint_error("revocation endpoint", &received);
            if e.context_value("error_code") == Some("unsupported_token_type") {
                if revoked_any {
                    // The refresh token is revoked; the server does not revoke access
                    // tokens on their own (they expire).
                    continue;
                }
                return Err(tag(Error::unsupported(
                    "the revocation endpoint does not support revoking this token type",
                )
                .with_context("key", hint)));
            }
            return Err(tag(e.with_context("key", hint)));
        }
        tracing::debug!(
            target: "hive_cred::oauth",
            id = %credential.id(),
            provider = %self.config.provider_id,
            "revoked credential"
        );
        Ok(())
    }
}
