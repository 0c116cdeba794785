//! A real OAuth2 token endpoint on 127.0.0.1 for the tests and benchmarks, with one
//! behaviour per path, recording every request it receives.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use hive_cred_core::{CredentialObject, CredentialType, ExposeSecret, ManualClock, SecretString};
use hive_cred_oauth::{OAuth2Config, OAuth2Provider};

pub const CLIENT_ID: &str = "client id:1";
pub const CLIENT_SECRET: &str = "s3cr:et/+&=";
/// Token values the canary test searches for.
pub const CANARY_ACCESS: &str = "canary-5f3b-access-token-value";
pub const CANARY_ROTATED: &str = "canary-5f3b-rotated-refresh-value";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: String,
}

impl Recorded {
    /// The form body as a map (each name must appear once).
    pub fn form(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(self.body.as_bytes()) {
            let prev = map.insert(k.to_string(), v.to_string());
            assert!(prev.is_none(), "form field {k} sent twice");
        }
        map
    }
}

#[derive(Default)]
struct ServerState {
    requests: Mutex<Vec<Recorded>>,
    counter: AtomicUsize,
}

/// The running server. Dropping it does not stop the task; the test runtime does.
pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let state = Arc::new(ServerState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("test server");
        });
        TestServer { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .expect("test fixture")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.requests(path).len()
    }
}

fn json(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: h(header::AUTHORIZATION),
        content_type: h(header::CONTENT_TYPE),
        accept: h(header::ACCEPT),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let form = rec.form();
    state
        .requests
        .lock()
        .expect("test fixture")
        .push(rec.clone());
    let ok = StatusCode::OK;
    match uri.path() {
        "/token/rotate" | "/token/echo" | "/token/redirect-target" => json(
            ok,
            r#"{"access_token":"at-rotated","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-rotated","scope":"repo user"}"#,
        ),
        "/token/canary" => json(
            ok,
            &format!(
                r#"{{"access_token":"{CANARY_ACCESS}","token_type":"Bearer","expires_in":3600,"refresh_token":"{CANARY_ROTATED}"}}"#
            ),
        ),
        "/token/keep" => json(
            ok,
            r#"{"access_token":"at-kept","token_type":"bearer","expires_in":1800}"#,
        ),
        "/token/string-expires" => json(
            ok,
            r#"{"access_token":"at-str","token_type":"Bearer","expires_in":"7200"}"#,
        ),
        "/token/no-expires" => json(ok, r#"{"access_token":"at-noexp","token_type":"Bearer"}"#),
        "/token/invalid-grant" => json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked: canary-5f3b-description"}"#,
        ),
        "/token/unauthorized-client" => json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized_client"}"#,
        ),
        "/token/invalid-client" => json(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#),
        "/token/github-error" => json(
            ok,
            r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#,
        ),
        "/token/429" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "120")],
            "slow down",
        )
            .into_response(),
        "/token/429-date" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "Tue, 01 Jan 2030 00:01:30 GMT")],
            "slow down",
        )
            .into_response(),
        "/token/500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error canary-5f3b-server-body",
        )
            .into_response(),
        "/token/503-retry" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "maintenance",
        )
            .into_response(),
        "/token/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(ok, r#"{"access_token":"at-slow","expires_in":60}"#)
        }
        "/token/html" => (
            ok,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><body>Sign in canary-5f3b-html-body</body></html>",
        )
            .into_response(),
        "/token/html-400" => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Bad canary-5f3b-html-body</body></html>",
        )
            .into_response(),
        "/token/bad-json" => json(ok, r#"{"access_token": canary-5f3b-json-body"#),
        "/token/wrong-type" => json(ok, r#"{"access_token": ["canary-5f3b-json-body"]}"#),
        "/token/redirect" => (
            StatusCode::FOUND,
            [(header::LOCATION, "/token/redirect-target")],
        )
            .into_response(),
        "/token/count" => {
            let n = state.counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            json(
                ok,
                &format!(
                    r#"{{"access_token":"at-count-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-count-{n}"}}"#
                ),
            )
        }
        "/token/instant-expiry" => json(
            ok,
            r#"{"access_token":"at-bench","token_type":"Bearer","expires_in":0}"#,
        ),
        "/revoke" => (ok, "").into_response(),
        "/revoke-refresh-only" => {
            if form.get("token_type_hint").map(String::as_str) == Some("access_token") {
                json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"unsupported_token_type"}"#,
                )
            } else {
                (ok, "").into_response()
            }
        }
        "/introspect" => {
            let active = form.get("token").map(String::as_str) == Some("at-active");
            json(ok, &format!(r#"{{"active":{active},"scope":"x"}}"#))
        }
        "/userinfo" => {
            if rec.authorization.as_deref() == Some("Bearer at-active") {
                json(ok, r#"{"login":"octocat"}"#)
            } else {
                json(StatusCode::UNAUTHORIZED, r#"{"message":"Bad credentials"}"#)
            }
        }
        _ => (StatusCode::NOT_FOUND, "no such path").into_response(),
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
