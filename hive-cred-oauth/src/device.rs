//! The device authorization grant (RFC 8628) for hosts without a browser:
//! [`DeviceAuthorization`].
//!
//! The polling loop is written here rather than taken from the oauth2 crate, whose
//! loop retries on every error: a dead client or a denied request must stop at once.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use hive_cred_core::{
    ActionRequired, CredentialObject, Error, ErrorKind, ExposeSecret, Result, SecretString,
};
use serde::Deserialize;

use crate::error::{kind_of_code, shown_code};
use crate::provider::OAuth2Provider;
use crate::response::TokenAnswer;
use crate::transport::normalize_token_answer;

/// The grant type of device token requests.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How much `slow_down` adds to the polling interval (RFC 8628 section 3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The polling interval when the server names none (RFC 8628 section 3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// A started device authorization: what to show the user, and the device code to poll
/// with. Created by [`OAuth2Provider::start_device_authorization`].
pub struct DeviceAuthorization {
    device_code: SecretString,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: Duration,
    interval: Duration,
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct DeviceAnswer {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    interval: Option<serde_json::Value>,
}

impl DeviceAuthorization {
    /// The code the user types at the verification URL.
    pub fn user_code(&self) -> &str {
        &self.user_code
    }

    /// Where the user goes to enter the code.
    pub fn verification_uri(&self) -> &str {
        &self.verification_uri
    }

    /// A URL with the code already filled in, when the server offers one.
    pub fn verification_uri_complete(&self) -> Option<&str> {
        self.verification_uri_complete.as_deref()
    }

    /// How long the device code is valid.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// The polling interval the server asked for.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

fn seconds(v: Option<&serde_json::Value>) -> Option<Duration> {
    match crate::response::lifetime_from(v.cloned()) {
        crate::response::Lifetime::Seconds(s) => Some(Duration::from_secs(s)),
        _ => None,
    }
}

impl OAuth2Provider {
    /// Starts a device authorization (RFC 8628 section 3.1): posts the client id and
    /// scopes to the device authorization URL. Show the user
    /// [`user_code`](DeviceAuthorization::user_code) and
    /// [`verification_uri`](DeviceAuthorization::verification_uri), then call
    /// [`poll_device_authorization`](Self::poll_device_authorization). `Config` error
    /// without a device authorization URL; endpoint errors classified as elsewhere.
    pub async fn start_device_authorization(&self) -> Result<DeviceAuthorization> {
        let tag = |e: Error| {
            e.with_context("provider", self.provider_id_str())
                .with_context("operation", "device_authorization")
        };
        let Some(url) = self.urls().device_authorization.clone() else {
            return Err(tag(Error::config(
                "this OAuth2 provider has no device authorization URL; set device_authorization_url or use a preset that has one",
            )));
        };
        let scope = self.config().scopes.join(" ");
        let mut params: Vec<(&str, &str)> = Vec::new();
        if !scope.is_empty() {
            params.push(("scope", &scope));
        }
        let received = self
            .send_form(&url, &params, "device authorization endpoint")
            .await
            .map_err(tag)?;
        if !received.status.is_success() {
            return Err(tag(
                self.endpoint_error_of("device authorization endpoint", &received)
            ));
        }
        let answer: DeviceAnswer = serde_json::from_slice(&received.body).map_err(|_| {
            tag(Error::unavailable(
                "the device authorization endpoint sent an unreadable answer; the body is withheld because it may hold secrets",
            ))
        })?;
        Ok(DeviceAuthorization {
            device_code: SecretString::from(answer.device_code),
            user_code: answer.user_code,
            verification_uri: answer.verification_uri,
            verification_uri_complete: answer.verification_uri_complete,
            expires_in: seconds(answer.expires_in.as_ref()).unwrap_or(Duration::from_secs(600)),
            interval: seconds(answer.interval.as_ref()).unwrap_or(DEFAULT_INTERVAL),
        })
    }

    /// Polls the token endpoint until the user approves, then returns the new
    /// credential `id` (`provider_id` and `auto_refresh` set).
    ///
    /// # Behavior
    /// - Waits the server's interval before each poll; `authorization_pending` polls
    ///   again; `slow_down` adds 5 s to the interval for all later polls.
    /// - Stops with `AuthorizationRequired` when the device code expires
    ///   (`expired_token`, or the polls have waited `expires_in`): the person must start
    ///   the flow again (the error's [`ActionRequired`] says so); with
    ///   `PermissionDenied` on `access_denied`, and with the usual classification on any
    ///   other error (never retried).
    pub async fn poll_device_authorization(
        &self,
        id: &str,
        authorization: &DeviceAuthorization,
    ) -> Result<CredentialObject> {
        self.poll_device_authorization_with(id, authorization, tokio::time::sleep)
            .await
    }

    /// [`poll_device_authorization`](Self::poll_device_authorization) with the waiting
    /// done by `sleep` (tests pass one that records the intervals).
    pub async fn poll_device_authorization_with<S, F>(
        &self,
        id: &str,
        authorization: &DeviceAuthorization,
        mut sleep: S,
    ) -> Result<CredentialObject>
    where
        S: FnMut(Duration) -> F,
        F: Future<Output = ()>,
    {
        let tag = |e: Error| {
            e.with_context("id", id)
                .with_context("provider", self.provider_id_str())
                .with_context("operation", "device_authorization")
        };
        let blank = self.new_credential(id)?;
        let token_url = self.urls().token.clone();
        let mut interval = authorization.interval;
        let mut waited = Duration::ZERO;
        loop {
            if waited >= authorization.expires_in {
                return Err(tag(self.expired(id)));
            }
            sleep(interval).await;
            waited += interval;
            let started = self.now();
            // EXPOSE: the device code is the grant's form field.
            let device_code = authorization.device_code.expose_secret();
            let params = [("grant_type", DEVICE_GRANT), ("device_code", device_code)];
            let received = self
                .send_form(&token_url, &params, "token endpoint")
                .await
                .map_err(tag)?;
            let (status, body) = normalize_token_answer(received.status, received.body);
            if status.is_success() {
                let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
                    tag(Error::unavailable(
                        "the token endpoint sent a response that is not a valid OAuth2 token response; the body is withheld because it may hold secrets",
                    ))
                })?;
                let (fresh, _) = self.apply_answer(&blank, &answer, started)?;
                return Ok(fresh);
            }
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
            match code.as_deref() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += SLOW_DOWN_STEP,
                Some("expired_token") => return Err(tag(self.expired(id))),
                Some("access_denied") => {
                    return Err(tag(Error::new(
                        ErrorKind::PermissionDenied,
                        "the user denied the device authorization request",
                    )));
                }
                Some(other) => {
                    let shown = shown_code(other).to_string();
                    return Err(tag(Error::new(
                        kind_of_code(other),
                        format!("the token endpoint refused the device authorization ({shown})"),
                    )
                    .with_context("error_code", shown)
                    .with_context("status", status.as_u16())));
                }
                None => {
                    return Err(tag(Error::unavailable(format!(
                        "the token endpoint sent an unexpected answer (HTTP {}); the body is withheld because it may hold secrets",
                        status.as_u16()
                    ))));
                }
            }
        }
    }
}

impl OAuth2Provider {
    /// The error of an expired device code: the person must authorise again.
    fn expired(&self, id: &str) -> Error {
        let provider = self.provider_id_str();
        let action = ActionRequired::AuthorizationRequired {
            id: id.to_owned(),
            provider: provider.to_owned(),
            how_to_connect: format!(
                "start the device flow again (`hive-cred connect {provider} --device`)"
            ),
        };
        Error::new(
            ErrorKind::AuthorizationRequired,
            "the device code expired before the user approved the request; start the device flow again",
        )
        .with_action(action)
    }
}
