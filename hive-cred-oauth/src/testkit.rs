//! A mock OAuth2 authorisation server on 127.0.0.1 for tests (feature `testkit`).
//!
//! [`MockTokenServer`] is a real HTTP server (axum on a `127.0.0.1:0` listener) that
//! behaves like a strict provider:
//!
//! - `POST /token` with `grant_type=refresh_token` rotates the refresh token on every
//!   success (RFC 9700); a rotated-out refresh token coming back revokes the whole
//!   token family, so that request and every later one get `invalid_grant` (reuse
//!   detection). [`MockConfig::with_rotation`] turns rotation off.
//! - `POST /token` with `grant_type=client_credentials` issues an access token (no
//!   refresh token) to an authenticated client.
//! - `POST /register` (RFC 7591 dynamic client registration) registers a public client.
//! - `POST /revoke` (RFC 7009) revokes the token it is given; `POST /introspect`
//!   (RFC 7662) answers `active` for live access tokens; `GET /userinfo` answers the
//!   configured identity for a live bearer token and 401 otherwise.
//! - Any path registered with [`MockConfig::with_route`] answers a fixed [`Canned`]
//!   response, so one server can offer a token URL per failure mode.
//!
//! It counts arrivals (requests received at `/token`) and grants, records every request,
//! can delay `/token` requests before processing them (a client that dies during the
//! delay leaves nothing granted), and injects [`Fault`]s into the next token requests.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> hive_cred_core::Result<()> {
//! use hive_cred_oauth::testkit::{Fault, MockConfig, MockTokenServer};
//! use hive_cred_oauth::{OAuth2Config, OAuth2Provider};
//!
//! let server = MockTokenServer::start(MockConfig::new()).await;
//! let provider = OAuth2Provider::new(OAuth2Config::new("mock", server.token_url(), "client"))?;
//! server.fail_next(Fault::InvalidGrant);
//! # let _ = provider;
//! # Ok(()) }
//! ```
//!
//! Token values are random per server and only handed out as [`SecretString`]s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hive_cred_core::SecretString;
use serde_json::{Value, json};

/// One fixed HTTP answer, for [`MockConfig::with_route`] and [`Fault::Canned`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Canned {
    /// The status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// A delay before answering.
    pub delay: Duration,
}

impl fmt::Debug for Canned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Canned bodies may carry test tokens.
        f.debug_struct("Canned")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

impl Canned {
    /// `status` with an empty body.
    pub fn new(status: u16) -> Self {
        Canned {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with a JSON body (`application/json;charset=UTF-8`).
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Canned::new(status)
            .with_header("content-type", "application/json;charset=UTF-8")
            .with_body(body)
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits `delay` before answering.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(n, v);
            }
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, headers, self.body).into_response()
    }
}

/// A failure injected into the next token request with [`MockTokenServer::fail_next`].
/// A faulted request counts as an arrival, never as a grant, and changes no state.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Fault {
    /// HTTP 400 `{"error": "invalid_grant"}`.
    InvalidGrant,
    /// HTTP 400 (401 for `invalid_client`) with this OAuth error code.
    OAuthError(String),
    /// HTTP 429, with `Retry-After: <seconds>` when given.
    RateLimited(Option<u64>),
    /// HTTP 500 with a plain-text body.
    ServerError,
    /// HTTP 503 with `Retry-After: <seconds>`.
    Unavailable(u64),
    /// HTTP 200 with an HTML page.
    Html,
    /// HTTP 200 with a truncated JSON body.
    MalformedJson,
    /// HTTP 302 to another path (which clients must not follow).
    Redirect,
    /// Any fixed answer.
    Canned(Canned),
}

impl Fault {
    /// The answer this fault gives.
    pub fn canned(&self) -> Canned {
        match self {
            Fault::InvalidGrant => Canned::json(
                400,
                r#"{"error":"invalid_grant","error_description":"the grant is revoked or expired"}"#,
            ),
            Fault::OAuthError(code) => {
                let status = if code == "invalid_client" { 401 } else { 400 };
                Canned::json(status, json!({ "error": code }).to_string())
            }
            Fault::RateLimited(after) => {
                let c = Canned::new(429).with_body("slow down");
                match after {
                    Some(s) => c.with_header("retry-after", s.to_string()),
                    None => c,
                }
            }
            Fault::ServerError => Canned::new(500).with_body("internal error"),
            Fault::Unavailable(after) => Canned::new(503)
                .with_header("retry-after", after.to_string())
                .with_body("maintenance"),
            Fault::Html => Canned::new(200)
                .with_header("content-type", "text/html; charset=utf-8")
                .with_body("<html><body>Sign in</body></html>"),
            Fault::MalformedJson => Canned::json(200, r#"{"access_token": "#),
            Fault::Redirect => Canned::new(302).with_header("location", "/elsewhere"),
            Fault::Canned(c) => c.clone(),
        }
    }
}

/// How a [`MockTokenServer`] behaves.
///
/// # Default
/// Access tokens live 3600 s; refresh tokens rotate with reuse detection; any client is
/// accepted (no client authentication check); the client credentials grant is
/// accepted; user-info answers `{"sub": "mock-user", "email": "user@example.test"}`.
#[derive(Clone)]
#[non_exhaustive]
pub struct MockConfig {
    expires_in: Option<u64>,
    refresh_expires_in: Option<u64>,
    rotation: bool,
    client: Option<(String, String)>,
    scope: Option<String>,
    routes: BTreeMap<String, Canned>,
    active_tokens: Vec<String>,
    userinfo: Value,
    revoke_access_tokens: bool,
    send_iss: Option<String>,
    device_interval: u64,
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("expires_in", &self.expires_in)
            .field("rotation", &self.rotation)
            .field("client_id", &self.client.as_ref().map(|c| &c.0))
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig::new()
    }
}

impl MockConfig {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        MockConfig {
            expires_in: Some(3600),
            refresh_expires_in: None,
            rotation: true,
            client: None,
            scope: None,
            routes: BTreeMap::new(),
            active_tokens: Vec::new(),
            userinfo: json!({"sub": "mock-user", "email": "user@example.test"}),
            revoke_access_tokens: true,
            send_iss: None,
            device_interval: 5,
        }
    }

    /// The `expires_in` of issued access tokens; `None` leaves it out. Default: 3600.
    #[must_use]
    pub fn with_expires_in(mut self, seconds: Option<u64>) -> Self {
        self.expires_in = seconds;
        self
    }

    /// Sends `refresh_token_expires_in` with issued refresh tokens. Default: not sent.
    #[must_use]
    pub fn with_refresh_expires_in(mut self, seconds: Option<u64>) -> Self {
        self.refresh_expires_in = seconds;
        self
    }

    /// Whether refreshes rotate the refresh token. Default: `true`. Without rotation the
    /// same refresh token stays valid and none is sent back.
    #[must_use]
    pub fn with_rotation(mut self, rotation: bool) -> Self {
        self.rotation = rotation;
        self
    }

    /// Requires token, revocation and introspection requests to authenticate as this
    /// client (HTTP Basic or form fields); others get 401 `invalid_client`. Default: no
    /// check.
    #[must_use]
    pub fn with_client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client = Some((client_id.into(), secret.into()));
        self
    }

    /// The `scope` sent with issued tokens. Default: the requested scope, if any.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Answers every request to `path` with `canned` (any method).
    #[must_use]
    pub fn with_route(mut self, path: impl Into<String>, canned: Canned) -> Self {
        self.routes.insert(path.into(), canned);
        self
    }

    /// An access token the introspection and user-info endpoints treat as live, besides
    /// the ones the server issued.
    #[must_use]
    pub fn with_active_token(mut self, token: impl Into<String>) -> Self {
        self.active_tokens.push(token.into());
        self
    }

    /// Whether `/revoke` accepts access tokens. Default: `true`; with `false` a request
    /// with `token_type_hint=access_token` gets 400 `unsupported_token_type`, as from
    /// providers that only revoke refresh tokens.
    #[must_use]
    pub fn with_access_token_revocation(mut self, accepted: bool) -> Self {
        self.revoke_access_tokens = accepted;
        self
    }

    /// Sends `iss=<issuer>` in authorization redirects (RFC 9207). Default: no `iss`.
    #[must_use]
    pub fn with_iss_in_redirect(mut self, issuer: impl Into<String>) -> Self {
        self.send_iss = Some(issuer.into());
        self
    }

    /// The `interval` of device authorization answers, in seconds. Default: 5.
    #[must_use]
    pub fn with_device_interval(mut self, seconds: u64) -> Self {
        self.device_interval = seconds;
        self
    }

    /// The JSON the user-info endpoint answers for a live token.
    #[must_use]
    pub fn with_userinfo(mut self, userinfo: Value) -> Self {
        self.userinfo = userinfo;
        self
    }
}

/// One request as the server saw it.
#[derive(Clone)]
#[non_exhaustive]
pub struct MockRequest {
    /// The method (`"POST"`).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

impl fmt::Debug for MockRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies and the Authorization header carry test credentials.
        f.debug_struct("MockRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MockRequest {
    /// The form body as a map. Panics when a field appears twice (tests want to know).
    pub fn form(&self) -> BTreeMap<String, String> {
        form_map(&self.body)
    }
}

fn form_map(body: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
        let prev = map.insert(k.to_string(), v.to_string());
        assert!(prev.is_none(), "form field {k} sent twice");
    }
    map
}

/// What the server has seen, for assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MockCounts {
    /// Token requests received (including faulted ones and ones whose client died
    /// during the delay).
    pub arrivals: u64,
    /// Token requests granted (tokens issued).
    pub grants: u64,
    /// `invalid_grant` answers from the refresh logic (injected faults not counted).
    pub invalid_grants: u64,
    /// Whether reuse detection revoked the refresh-token family.
    pub revoked: bool,
}

#[derive(Debug, Default)]
struct Family {
    current_refresh: String,
    used: HashSet<String>,
    revoked: bool,
    live_access: HashSet<String>,
    latest_access: Option<String>,
}

/// An authorization code waiting to be exchanged.
struct PendingCode {
    challenge: String,
    redirect_uri: String,
}

struct Shared {
    config: MockConfig,
    addr: std::sync::OnceLock<SocketAddr>,
    codes: Mutex<HashMap<String, PendingCode>>,
    device_codes: Mutex<HashSet<String>>,
    seed: u64,
    family: Mutex<Family>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<MockRequest>>,
    arrivals: AtomicU64,
    grants: AtomicU64,
    invalid_grants: AtomicU64,
    issued: AtomicU64,
    delay_ms: AtomicU64,
    arrived: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn token(&self, kind: &str) -> String {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.seed ^ n);
        format!("{kind}-{n}-{:016x}{:016x}", self.seed, h.finish())
    }
}

/// A mock OAuth2 authorisation server on 127.0.0.1 (see the [module docs](self)).
/// Dropping it stops the server.
pub struct MockTokenServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for MockTokenServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTokenServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for MockTokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockTokenServer {
    /// Starts the server on `127.0.0.1:0` in the current tokio runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test environment problem).
    pub async fn start(config: MockConfig) -> MockTokenServer {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let shared = Arc::new(Shared {
            config,
            addr: std::sync::OnceLock::new(),
            codes: Mutex::new(HashMap::new()),
            device_codes: Mutex::new(HashSet::new()),
            seed,
            family: Mutex::new(Family::default()),
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            arrivals: AtomicU64::new(0),
            grants: AtomicU64::new(0),
            invalid_grants: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            arrived: tokio::sync::Notify::new(),
        });
        lock(&shared.family).current_refresh = shared.token("rt");
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock token server on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("local address of the listener");
        let _ = shared.addr.set(addr);
        let task = tokio::spawn(async move {
            // Serving only ends when the task is aborted.
            let _ = axum::serve(listener, app).await;
        });
        MockTokenServer { addr, shared, task }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The token endpoint, `/token`.
    pub fn token_url(&self) -> String {
        self.url("/token")
    }

    /// The revocation endpoint, `/revoke`.
    pub fn revocation_url(&self) -> String {
        self.url("/revoke")
    }

    /// The introspection endpoint, `/introspect`.
    pub fn introspection_url(&self) -> String {
        self.url("/introspect")
    }

    /// The authorization endpoint, `/authorize`: a GET with `response_type=code`, a
    /// loopback `redirect_uri` and an S256 `code_challenge` is approved at once (the
    /// user "consents") with a 302 to the redirect URI carrying `code`, `state` and,
    /// when configured, `iss`. Without PKCE it redirects with `error=invalid_request`.
    pub fn authorization_url(&self) -> String {
        self.url("/authorize")
    }

    /// The RFC 8628 device authorization endpoint, `/device`. Its device codes are
    /// approved at once: the first poll succeeds unless faults are queued (queue
    /// `Fault::OAuthError("authorization_pending")` or `"slow_down"` to simulate a user
    /// who has not finished).
    pub fn device_authorization_url(&self) -> String {
        self.url("/device")
    }

    /// The issuer identifier: the base URL, whose RFC 8414 metadata is served at
    /// `/.well-known/oauth-authorization-server`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The user-info endpoint, `/userinfo`.
    pub fn userinfo_url(&self) -> String {
        self.url("/userinfo")
    }

    /// The refresh token the family currently accepts (to seed a credential with).
    pub fn current_refresh_token(&self) -> SecretString {
        SecretString::from(lock(&self.shared.family).current_refresh.clone())
    }

    /// The latest access token issued, if any.
    pub fn latest_access_token(&self) -> Option<SecretString> {
        lock(&self.shared.family)
            .latest_access
            .clone()
            .map(SecretString::from)
    }

    /// Delays every later token request by `delay` before processing it. A client that
    /// disconnects during the delay leaves nothing granted.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Makes the next token request fail with `fault` (queued: call it `n` times for the
    /// next `n` requests).
    pub fn fail_next(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// Waits until at least `n` token requests have arrived.
    pub async fn wait_for_arrivals(&self, n: u64) {
        loop {
            let notified = self.shared.arrived.notified();
            if self.shared.arrivals.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> MockCounts {
        MockCounts {
            arrivals: self.shared.arrivals.load(Ordering::SeqCst),
            grants: self.shared.grants.load(Ordering::SeqCst),
            invalid_grants: self.shared.invalid_grants.load(Ordering::SeqCst),
            revoked: lock(&self.shared.family).revoked,
        }
    }

    /// Every request received at `path`, in order.
    pub fn requests(&self, path: &str) -> Vec<MockRequest> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.requests(path).len()
    }
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({ "error": code }))).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
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
    let rec = MockRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        authorization: h(header::AUTHORIZATION),
        content_type: h(header::CONTENT_TYPE),
        accept: h(header::ACCEPT),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    lock(&shared.requests).push(rec.clone());
    if let Some(canned) = shared.config.routes.get(uri.path()).cloned() {
        if !canned.delay.is_zero() {
            tokio::time::sleep(canned.delay).await;
        }
        return canned.into_response();
    }
    match (uri.path(), &method) {
        ("/token", &Method::POST) => token(&shared, &rec).await,
        ("/authorize", &Method::GET) => authorize(&shared, &rec),
        ("/.well-known/oauth-authorization-server", &Method::GET) => metadata(&shared),
        ("/device", &Method::POST) => device(&shared, &rec),
        ("/register", &Method::POST) => register(&shared, &rec),
        ("/revoke", &Method::POST) => revoke(&shared, &rec),
        ("/introspect", &Method::POST) => introspect(&shared, &rec),
        ("/userinfo", &Method::GET) => userinfo(&shared, &rec),
        _ => (StatusCode::NOT_FOUND, "no such endpoint").into_response(),
    }
}

/// A request that did not authenticate as the configured client.
struct InvalidClient;

impl IntoResponse for InvalidClient {
    fn into_response(self) -> Response {
        oauth_error(StatusCode::UNAUTHORIZED, "invalid_client")
    }
}

/// The client id the request authenticated as, if any.
fn client_of(
    shared: &Shared,
    rec: &MockRequest,
    form: &BTreeMap<String, String>,
) -> Result<Option<String>, InvalidClient> {
    let basic = rec
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            let (u, p) = s.split_once(':')?;
            let dec = |x: &str| {
                url::form_urlencoded::parse(format!("x={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(u)?, dec(p)?))
        });
    let presented = basic.or_else(|| {
        form.get("client_id").map(|id| {
            (
                id.clone(),
                form.get("client_secret").cloned().unwrap_or_default(),
            )
        })
    });
    match &shared.config.client {
        None => Ok(presented.map(|p| p.0)),
        Some((id, secret)) => match presented {
            Some((pid, psecret)) if &pid == id && &psecret == secret => Ok(Some(pid)),
            _ => Err(InvalidClient),
        },
    }
}

async fn token(shared: &Arc<Shared>, rec: &MockRequest) -> Response {
    // The delay is read before the arrival is announced: a test that changes it on
    // arrival does not change this request's.
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    shared.arrivals.fetch_add(1, Ordering::SeqCst);
    shared.arrived.notify_waiters();
    if delay > 0 {
        // Not processed yet: if the client goes away now, this future is dropped.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(fault) = lock(&shared.faults).pop_front() {
        return fault.canned().into_response();
    }
    let form = form_map(&rec.body);
    if let Err(refused) = client_of(shared, rec, &form) {
        return refused.into_response();
    }
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => refresh_grant(shared, &form),
        Some("client_credentials") => {
            let access = shared.token("at");
            let mut family = lock(&shared.family);
            family.live_access.insert(access.clone());
            family.latest_access = Some(access.clone());
            drop(family);
            shared.grants.fetch_add(1, Ordering::SeqCst);
            issued(shared, &form, access, None)
        }
        Some("authorization_code") => code_grant(shared, &form),
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            let known = form
                .get("device_code")
                .is_some_and(|c| lock(&shared.device_codes).remove(c));
            if !known {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            new_family(shared, &form)
        }
        Some(_) => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    }
}

fn issued(
    shared: &Shared,
    form: &BTreeMap<String, String>,
    access: String,
    refresh: Option<String>,
) -> Response {
    let mut body = json!({ "access_token": access, "token_type": "Bearer" });
    if let Some(e) = shared.config.expires_in {
        body["expires_in"] = json!(e);
    }
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
        if let Some(e) = shared.config.refresh_expires_in {
            body["refresh_token_expires_in"] = json!(e);
        }
    }
    if let Some(scope) = shared.config.scope.as_ref().or(form.get("scope")) {
        body["scope"] = json!(scope);
    }
    axum::Json(body).into_response()
}

fn refresh_grant(shared: &Shared, form: &BTreeMap<String, String>) -> Response {
    let invalid = |why: &str| {
        shared.invalid_grants.fetch_add(1, Ordering::SeqCst);
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let Some(presented) = form.get("refresh_token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let mut family = lock(&shared.family);
    if family.revoked {
        return invalid("token family revoked");
    }
    if *presented != family.current_refresh {
        if family.used.contains(presented) {
            // RFC 9700 reuse detection: a rotated-out refresh token came back.
            family.revoked = true;
            family.live_access.clear();
            return invalid("refresh token reused; family revoked");
        }
        return invalid("unknown refresh token");
    }
    let access = shared.token("at");
    let refresh = if shared.config.rotation {
        let next = shared.token("rt");
        let old = std::mem::replace(&mut family.current_refresh, next.clone());
        family.used.insert(old);
        Some(next)
    } else {
        None
    };
    family.live_access.insert(access.clone());
    family.latest_access = Some(access.clone());
    shared.grants.fetch_add(1, Ordering::SeqCst);
    drop(family);
    issued(shared, form, access, refresh)
}

fn revoke(shared: &Shared, rec: &MockRequest) -> Response {
    let form = form_map(&rec.body);
    if let Err(refused) = client_of(shared, rec, &form) {
        return refused.into_response();
    }
    if !shared.config.revoke_access_tokens
        && form.get("token_type_hint").map(String::as_str) == Some("access_token")
    {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_token_type");
    }
    if let Some(token) = form.get("token") {
        let mut family = lock(&shared.family);
        family.live_access.remove(token);
        if *token == family.current_refresh {
            family.revoked = true;
            family.live_access.clear();
        }
    }
    StatusCode::OK.into_response()
}

fn is_live(shared: &Shared, token: &str) -> bool {
    shared.config.active_tokens.iter().any(|t| t == token)
        || lock(&shared.family).live_access.contains(token)
}

fn introspect(shared: &Shared, rec: &MockRequest) -> Response {
    let form = form_map(&rec.body);
    if let Err(refused) = client_of(shared, rec, &form) {
        return refused.into_response();
    }
    let active = form.get("token").is_some_and(|t| is_live(shared, t));
    axum::Json(json!({ "active": active })).into_response()
}

fn userinfo(shared: &Shared, rec: &MockRequest) -> Response {
    let token = rec
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    match token {
        Some(t) if is_live(shared, t) => axum::Json(shared.config.userinfo.clone()).into_response(),
        _ => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token"),
    }
}

/// Starts a new refresh-token family (a person authorised again) and issues its tokens.
fn new_family(shared: &Shared, form: &BTreeMap<String, String>) -> Response {
    let access = shared.token("at");
    let refresh = shared.token("rt");
    let mut family = lock(&shared.family);
    *family = Family {
        current_refresh: refresh.clone(),
        ..Family::default()
    };
    family.live_access.insert(access.clone());
    family.latest_access = Some(access.clone());
    drop(family);
    shared.grants.fetch_add(1, Ordering::SeqCst);
    issued(shared, form, access, Some(refresh))
}

fn code_grant(shared: &Shared, form: &BTreeMap<String, String>) -> Response {
    let pending = form.get("code").and_then(|c| lock(&shared.codes).remove(c));
    let Some(pending) = pending else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if form.get("redirect_uri") != Some(&pending.redirect_uri) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let Some(verifier) = form.get("code_verifier") else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": "invalid_grant", "error_description": "PKCE verification failed"}),
            ),
        )
            .into_response();
    };
    let computed = oauth2::PkceCodeChallenge::from_code_verifier_sha256(
        &oauth2::PkceCodeVerifier::new(verifier.clone()),
    );
    if computed.as_str() != pending.challenge {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    new_family(shared, form)
}

fn authorize(shared: &Shared, rec: &MockRequest) -> Response {
    let q = form_map(rec.query.as_deref().unwrap_or(""));
    let Some(redirect) = q.get("redirect_uri").and_then(|r| url::Url::parse(r).ok()) else {
        return (StatusCode::BAD_REQUEST, "missing or invalid redirect_uri").into_response();
    };
    if redirect.host_str() != Some("127.0.0.1") || redirect.scheme() != "http" {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri must be a loopback URI",
        )
            .into_response();
    }
    let client_ok = match &shared.config.client {
        Some((id, _)) => q.get("client_id") == Some(id),
        None => q.contains_key("client_id"),
    };
    if !client_ok {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let mut target = redirect.clone();
    {
        let mut pairs = target.query_pairs_mut();
        let pkce_ok = q.get("response_type").map(String::as_str) == Some("code")
            && q.get("code_challenge_method").map(String::as_str) == Some("S256")
            && q.contains_key("code_challenge");
        if pkce_ok {
            let code = shared.token("code");
            lock(&shared.codes).insert(
                code.clone(),
                PendingCode {
                    challenge: q["code_challenge"].clone(),
                    redirect_uri: redirect.to_string(),
                },
            );
            pairs.append_pair("code", &code);
        } else {
            pairs.append_pair("error", "invalid_request");
        }
        if let Some(state) = q.get("state") {
            pairs.append_pair("state", state);
        }
        if let Some(iss) = &shared.config.send_iss {
            pairs.append_pair("iss", iss);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

fn device(shared: &Arc<Shared>, rec: &MockRequest) -> Response {
    let form = form_map(&rec.body);
    if let Err(refused) = client_of(shared, rec, &form) {
        return refused.into_response();
    }
    let device_code = shared.token("dc");
    let base = shared
        .addr
        .get()
        .map_or_else(|| "http://127.0.0.1".to_string(), |a| format!("http://{a}"));
    lock(&shared.device_codes).insert(device_code.clone());
    axum::Json(json!({
        "device_code": device_code,
        "user_code": "WDJB-MJHT",
        "verification_uri": format!("{base}/activate"),
        "verification_uri_complete": format!("{base}/activate?user_code=WDJB-MJHT"),
        "expires_in": 600,
        "interval": shared.config.device_interval,
    }))
    .into_response()
}

/// RFC 7591 dynamic client registration: a public client (no secret) with a new id
/// (`dyn-client-<n>`) and the requested redirect URIs. With [`MockConfig::with_client`]
/// the configured client is handed out instead, secret included.
fn register(shared: &Shared, rec: &MockRequest) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(&rec.body) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata");
    };
    let redirect_uris = request.get("redirect_uris").cloned().unwrap_or(json!([]));
    let mut answer = json!({
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    });
    match &shared.config.client {
        Some((id, secret)) => {
            answer["client_id"] = json!(id);
            answer["client_secret"] = json!(secret);
            answer["token_endpoint_auth_method"] = json!("client_secret_basic");
        }
        None => answer["client_id"] = json!(shared.token("dyn-client")),
    }
    if let Some(name) = request.get("client_name") {
        answer["client_name"] = name.clone();
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// RFC 8414 metadata naming this server's endpoints; its issuer is the server's base URL.
fn metadata(shared: &Shared) -> Response {
    let base = shared
        .addr
        .get()
        .map_or_else(|| "http://127.0.0.1".to_string(), |a| format!("http://{a}"));
    axum::Json(json!({
        "issuer": base,
        "token_endpoint": format!("{base}/token"),
        "authorization_endpoint": format!("{base}/authorize"),
        "device_authorization_endpoint": format!("{base}/device"),
        "revocation_endpoint": format!("{base}/revoke"),
        "introspection_endpoint": format!("{base}/introspect"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "registration_endpoint": format!("{base}/register"),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"],
    }))
    .into_response()
}
