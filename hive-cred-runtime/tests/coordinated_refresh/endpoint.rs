//! A strict OAuth2 token endpoint on 127.0.0.1, as providers with RFC 9700 refresh-token
//! rotation and reuse detection behave:
//!
//! - every successful refresh rotates the refresh token (the old one becomes "used");
//! - a used refresh token coming back revokes the whole token family: that request and
//!   every later one get `invalid_grant`;
//! - it counts arrivals (requests received) and commits (refreshes granted);
//! - it can delay each request *before* processing it: a client that dies during the
//!   delay closes its connection, hyper drops the handler, and nothing is committed
//!   (the request was never processed, as with a server that had not yet read it).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::fingerprint;

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    refresh_token: Option<String>,
}

#[derive(Debug)]
struct Family {
    current_refresh: String,
    latest_access: Option<String>,
    used: HashSet<String>,
    revoked: bool,
}

/// What the endpoint has seen, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Requests received (including ones whose client died during the delay).
    pub arrivals: u64,
    /// Refreshes granted (token requests that rotated the family).
    pub commits: u64,
    /// `invalid_grant` answers.
    pub invalid_grants: u64,
    /// Whether reuse detection revoked the family.
    pub revoked: bool,
}

struct Shared {
    family: Mutex<Family>,
    arrivals: AtomicU64,
    commits: AtomicU64,
    invalid_grants: AtomicU64,
    delay_ms: AtomicU64,
    expires_in: u64,
    arrived: tokio::sync::Notify,
}

/// The running endpoint. Dropping it stops the server.
pub struct StrictEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StrictEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_token(kind: &str) -> String {
    format!("{kind}-{:032x}", rand::random::<u128>())
}

impl StrictEndpoint {
    /// Starts on 127.0.0.1:0. Access tokens live `expires_in` seconds.
    pub async fn start(expires_in: u64) -> StrictEndpoint {
        let shared = Arc::new(Shared {
            family: Mutex::new(Family {
                current_refresh: random_token("rt"),
                latest_access: None,
                used: HashSet::new(),
                revoked: false,
            }),
            arrivals: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            invalid_grants: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            expires_in,
            arrived: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the token endpoint on loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the token endpoint");
        });
        StrictEndpoint { addr, shared, task }
    }

    /// The token URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The refresh token the family currently accepts (to seed the credential with).
    pub fn current_refresh_token(&self) -> String {
        self.lock().current_refresh.clone()
    }

    /// Fingerprint of the refresh token the family currently accepts.
    pub fn current_refresh_fingerprint(&self) -> String {
        fingerprint(&self.lock().current_refresh)
    }

    /// Fingerprint of the latest access token issued (the only valid one), if any.
    pub fn latest_access_fingerprint(&self) -> Option<String> {
        self.lock().latest_access.as_deref().map(fingerprint)
    }

    /// Delays every later request by `delay` before processing it.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until at least `n` requests have arrived.
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
    pub fn counts(&self) -> Counts {
        Counts {
            arrivals: self.shared.arrivals.load(Ordering::SeqCst),
            commits: self.shared.commits.load(Ordering::SeqCst),
            invalid_grants: self.shared.invalid_grants.load(Ordering::SeqCst),
            revoked: self.lock().revoked,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Family> {
        self.shared.family.lock().expect("endpoint state")
    }
}

fn invalid_grant(shared: &Shared, why: &str) -> Response {
    shared.invalid_grants.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_grant", "error_description": why})),
    )
        .into_response()
}

async fn token(State(shared): State<Arc<Shared>>, Form(form): Form<TokenForm>) -> Response {
    // The delay is read before the arrival is announced: a test that changes it on
    // arrival does not change this request's.
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    shared.arrivals.fetch_add(1, Ordering::SeqCst);
    shared.arrived.notify_waiters();
    if delay > 0 {
        // Not processed yet: if the client dies now, this future is dropped.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if form.grant_type != "refresh_token" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let Some(presented) = form.refresh_token else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    };
    let mut family = shared.family.lock().expect("endpoint state");
    if family.revoked {
        drop(family);
        return invalid_grant(&shared, "token family revoked");
    }
    if presented != family.current_refresh {
        if family.used.contains(&presented) {
            // RFC 9700 reuse detection: a rotated-out refresh token came back.
            family.revoked = true;
            drop(family);
            return invalid_grant(&shared, "refresh token reused; family revoked");
        }
        drop(family);
        return invalid_grant(&shared, "unknown refresh token");
    }
    let next_refresh = random_token("rt");
    let access = random_token("at");
    let old = std::mem::replace(&mut family.current_refresh, next_refresh.clone());
    family.used.insert(old);
    family.latest_access = Some(access.clone());
    shared.commits.fetch_add(1, Ordering::SeqCst);
    drop(family);
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": shared.expires_in,
        "refresh_token": next_refresh,
    }))
    .into_response()
}
