//! A real OAuth2 token endpoint on 127.0.0.1 for the tests and benchmarks (the
//! testkit's `MockTokenServer`), with one behaviour per path.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hive_cred_core::{CredentialObject, CredentialType, ExposeSecret, ManualClock, SecretString};
use hive_cred_oauth::testkit::{Canned, Fault, MockConfig, MockRequest, MockTokenServer};
use hive_cred_oauth::{OAuth2Config, OAuth2Provider};

pub const CLIENT_ID: &str = "client id:1";
pub const CLIENT_SECRET: &str = "s3cr:et/+&=";
/// Token values the canary test searches for.
pub const CANARY_ACCESS: &str = "canary-5f3b-access-token-value";
pub const CANARY_ROTATED: &str = "canary-5f3b-rotated-refresh-value";

/// The tests' server: the workspace's mock token server (`hive_cred_oauth::testkit`)
/// with one fixed answer per path under `/token/...`, so each test picks its failure
/// mode by token URL. `/token` itself is the testkit's rotating endpoint.
pub struct TestServer {
    pub mock: MockTokenServer,
}

const ROTATED: &str = r#"{"access_token":"at-rotated","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-rotated","scope":"repo user"}"#;

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|c| c).await
    }

    pub async fn start_with(tweak: impl FnOnce(MockConfig) -> MockConfig) -> TestServer {
        let ok = |body: &str| Canned::json(200, body);
        let config = MockConfig::new()
            .with_active_token("at-active")
            .with_userinfo(serde_json::json!({"login": "octocat"}))
            .with_route("/token/rotate", ok(ROTATED))
            .with_route("/token/echo", ok(ROTATED))
            .with_route("/token/redirect-target", ok(ROTATED))
            .with_route(
                "/token/canary",
                ok(&format!(
                    r#"{{"access_token":"{CANARY_ACCESS}","token_type":"Bearer","expires_in":3600,"refresh_token":"{CANARY_ROTATED}"}}"#
                )),
            )
            .with_route(
                "/token/keep",
                ok(r#"{"access_token":"at-kept","token_type":"bearer","expires_in":1800}"#),
            )
            .with_route(
                "/token/string-expires",
                ok(r#"{"access_token":"at-str","token_type":"Bearer","expires_in":"7200"}"#),
            )
            .with_route(
                "/token/no-expires",
                ok(r#"{"access_token":"at-noexp","token_type":"Bearer"}"#),
            )
            .with_route(
                "/token/invalid-grant",
                Canned::json(
                    400,
                    r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked: canary-5f3b-description"}"#,
                ),
            )
            .with_route(
                "/token/unauthorized-client",
                Canned::json(401, r#"{"error":"unauthorized_client"}"#),
            )
            .with_route(
                "/token/invalid-client",
                Fault::OAuthError("invalid_client".into()).canned(),
            )
            .with_route(
                "/token/github-error",
                ok(r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#),
            )
            .with_route("/token/429", Fault::RateLimited(Some(120)).canned())
            .with_route(
                "/token/429-date",
                Canned::new(429)
                    .with_header("retry-after", "Tue, 01 Jan 2030 00:01:30 GMT")
                    .with_body("slow down"),
            )
            .with_route(
                "/token/500",
                Canned::new(500).with_body("internal error canary-5f3b-server-body"),
            )
            .with_route("/token/503-retry", Fault::Unavailable(30).canned())
            .with_route(
                "/token/slow",
                ok(r#"{"access_token":"at-slow","expires_in":60}"#)
                    .with_delay(Duration::from_secs(5)),
            )
            .with_route(
                "/token/html",
                Fault::Html
                    .canned()
                    .with_body("<html><body>Sign in canary-5f3b-html-body</body></html>"),
            )
            .with_route(
                "/token/html-400",
                Canned::new(400)
                    .with_header("content-type", "text/html")
                    .with_body("<html><body>Bad canary-5f3b-html-body</body></html>"),
            )
            .with_route(
                "/token/bad-json",
                ok(r#"{"access_token": canary-5f3b-json-body"#),
            )
            .with_route(
                "/token/wrong-type",
                ok(r#"{"access_token": ["canary-5f3b-json-body"]}"#),
            )
            .with_route(
                "/token/redirect",
                Canned::new(302).with_header("location", "/token/redirect-target"),
            )
            .with_route(
                "/token/instant-expiry",
                ok(r#"{"access_token":"at-bench","token_type":"Bearer","expires_in":0}"#),
            );
        TestServer {
            mock: MockTokenServer::start(tweak(config)).await,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.mock.url(path)
    }

    pub fn requests(&self, path: &str) -> Vec<MockRequest> {
        self.mock.requests(path)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.mock.hits(path)
    }
}

/// The plain value of a secret, for assertions.
pub fn reveal(secret: &SecretString) -> &str {
    // EXPOSE: tests compare token values the fake server issued.
    secret.expose_secret()
}

/// The plain value of key `key` of `c`, for assertions.
pub fn value(c: &CredentialObject, key: &str) -> String {
    reveal(c.get_key(key).expect("key present")).to_string()
}

/// The tests' fixed "now".
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(t0()))
}

/// An OAuth2 credential for `provider_id` whose access token expired a minute before
/// [`t0`].
pub fn expired_credential(id: &str, provider_id: &str, refresh_token: &str) -> CredentialObject {
    let mut c = CredentialObject::builder(id, CredentialType::OAuth2)
        .provider_id(provider_id)
        .auto_refresh(true)
        .build()
        .expect("test fixture");
    c.set_key(
        "access_token",
        "at-old",
        Some(t0() - chrono::Duration::minutes(1)),
    )
    .expect("test fixture");
    c.set_key("refresh_token", refresh_token, None)
        .expect("test fixture");
    c
}

/// A provider for `path` on `server` with the test client, the manual clock and a
/// config tweak.
pub fn provider(
    server: &TestServer,
    path: &str,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(OAuth2Config) -> OAuth2Config,
) -> OAuth2Provider {
    let config = OAuth2Config::new("test_oauth", server.url(path), CLIENT_ID)
        .with_client_secret(CLIENT_SECRET.into());
    OAuth2Provider::new(tweak(config))
        .expect("test fixture")
        .with_clock(clock)
}
