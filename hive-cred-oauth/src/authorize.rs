//! The authorization code grant with PKCE (RFC 6749 section 4.1, RFC 7636 S256) and a
//! loopback redirect listener (RFC 8252 section 7.3): [`AuthorizationSession`].

use std::fmt;
use std::time::Duration;

use hive_cred_core::{CredentialObject, Error, ErrorKind, Result};
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::provider::{OAuth2Provider, TokenGrant};

/// The path of the loopback redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// The longest request head the loopback listener reads.
const MAX_REQUEST: usize = 16 * 1024;

/// One authorization code flow in progress: the URL to open in a browser, and the
/// loopback listener (`http://127.0.0.1:<random port>/callback`) the browser is
/// redirected to. Created by [`OAuth2Provider::start_authorization`].
///
/// # Behavior
/// - The URL carries `response_type=code`, `client_id`, `redirect_uri`, the configured
///   scopes, a random `state` and an S256 `code_challenge` (PKCE, RFC 7636).
/// - [`finish`](Self::finish) waits for the redirect, at most `timeout`
///   (`Unavailable` after it). Requests to other paths get 404 and are ignored. A
///   redirect whose `state` differs is refused (`PermissionDenied`; the code is never
///   exchanged); an `iss` parameter (RFC 9207) must equal the configured issuer
///   (`PermissionDenied` otherwise); an `error` parameter is reported with its code
///   (`access_denied`: `PermissionDenied`). The code is then exchanged with the PKCE
///   verifier; token endpoint errors are classified as in `refresh`.
/// - The result is a new `OAuth2` credential with `provider_id` and `auto_refresh`
///   set, holding `access_token` and, when sent, `refresh_token`.
pub struct AuthorizationSession<'p> {
    provider: &'p OAuth2Provider,
    url: Url,
    redirect_uri: String,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
    listener: TcpListener,
}

impl fmt::Debug for AuthorizationSession<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationSession")
            .field("provider", &self.provider.provider_id_str())
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// What the redirect carried. The code is an `AuthorizationCode`, whose `Debug` hides it.
enum Callback {
    Code {
        code: AuthorizationCode,
        state: Option<String>,
        iss: Option<String>,
    },
    Error {
        error: String,
        state: Option<String>,
    },
}

impl OAuth2Provider {
    /// Starts an authorization code flow with PKCE: binds the loopback listener on
    /// `127.0.0.1` (random port) and builds the authorization URL. `Config` error
    /// without an authorization URL (set one, use a preset, or discover it from the
    /// issuer); `Unavailable` when no loopback port can be bound.
    pub async fn start_authorization(&self) -> Result<AuthorizationSession<'_>> {
        let Some(auth_url) = self.urls().authorization.clone() else {
            return Err(Error::config(
                "this OAuth2 provider has no authorization URL; set authorization_url, use a preset or an issuer with discovery",
            )
            .with_context("provider", self.provider_id_str()));
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
            Error::unavailable("could not listen on 127.0.0.1 for the redirect").with_source(e)
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::unavailable("the redirect listener has no address").with_source(e))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random();
        let mut url = auth_url;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config().client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", challenge.method().as_str());
            if !self.config().scopes.is_empty() {
                q.append_pair("scope", &self.config().scopes.join(" "));
            }
            // EXPOSE: the state is a public nonce sent in the URL by design.
            q.append_pair("state", state.secret());
        }
        Ok(AuthorizationSession {
            provider: self,
            url,
            redirect_uri,
            state,
            verifier,
            listener,
        })
    }
}

impl AuthorizationSession<'_> {
    /// The URL to open in the user's browser.
    pub fn authorize_url(&self) -> &Url {
        &self.url
    }

    /// The redirect URI (`http://127.0.0.1:<port>/callback`).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the redirect (at most `timeout`), checks it, exchanges the code and
    /// returns the new credential `id` (see the type's `# Behavior`).
    pub async fn finish(self, id: &str, timeout: Duration) -> Result<CredentialObject> {
        let provider = self.provider;
        let tag = |e: Error| {
            e.with_context("id", id)
                .with_context("provider", provider.provider_id_str())
                .with_context("operation", "authorize")
        };
        // Validate the id before the user's code is spent.
        let blank = provider.new_credential(id)?;
        let callback = tokio::time::timeout(timeout, wait_for_callback(&self.listener))
            .await
            .map_err(|_| {
                tag(Error::unavailable(format!(
                    "no redirect arrived at {} within {} s; run the flow again",
                    self.redirect_uri,
                    timeout.as_secs()
                )))
            })?
            .map_err(tag)?;
        // EXPOSE: the expected state is compared with the one the redirect carried.
        let expected_state = self.state.secret();
        let (code, state, iss) = match callback {
            Callback::Error { error, state } => {
                if state.as_deref() != Some(expected_state.as_str()) {
                    return Err(tag(state_mismatch()));
                }
                let shown = crate::error::shown_code(&error).to_string();
                let kind = if error == "access_denied" {
                    ErrorKind::PermissionDenied
                } else {
                    crate::error::kind_of_code(&error)
                };
                return Err(tag(Error::new(
                    kind,
                    format!("the authorisation server refused the authorization request ({shown})"),
                )
                .with_context("error_code", shown)));
            }
            Callback::Code { code, state, iss } => (code, state, iss),
        };
        if state.as_deref() != Some(expected_state.as_str()) {
            return Err(tag(state_mismatch()));
        }
        if let (Some(iss), Some(expected)) = (iss.as_deref(), provider.config().issuer())
            && iss.trim_end_matches('/') != expected.trim_end_matches('/')
        {
            return Err(tag(Error::new(
                ErrorKind::PermissionDenied,
                "the redirect's `iss` is not the configured issuer (RFC 9207): the response may come from another authorisation server (mix-up attack); the code was not used",
            )));
        }
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|_| tag(Error::config("the redirect URI is not a valid URL")))?;
        provider
            .token_request(
                &blank,
                TokenGrant::Code {
                    code,
                    verifier: self.verifier,
                    redirect,
                },
            )
            .await
    }
}

fn state_mismatch() -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        "the redirect's `state` does not match this authorization request (a forged or stale redirect); the code was not used",
    )
}

/// Accepts connections until one is a GET of [`CALLBACK_PATH`], answers it with a
/// short page and returns its parameters.
async fn wait_for_callback(listener: &TcpListener) -> Result<Callback> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| Error::unavailable("the redirect listener failed").with_source(e))?;
        let Some(target) = read_request_target(&mut stream).await else {
            continue;
        };
        let Ok(url) = Url::parse("http://127.0.0.1").and_then(|b| b.join(&target)) else {
            respond(&mut stream, "400 Bad Request", "Bad request.").await;
            continue;
        };
        if url.path() != CALLBACK_PATH {
            respond(&mut stream, "404 Not Found", "Not found.").await;
            continue;
        }
        let mut code = None;
        let mut state = None;
        let mut iss = None;
        let mut error = None;
        for (k, v) in url.query_pairs() {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "iss" => iss = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        let (page, callback) = match (error, code) {
            (Some(error), _) => (
                "Authorisation failed. You can close this window and check the terminal.",
                Callback::Error { error, state },
            ),
            (None, Some(code)) => (
                "Authorisation complete. You can close this window.",
                Callback::Code {
                    code: AuthorizationCode::new(code),
                    state,
                    iss,
                },
            ),
            (None, None) => {
                respond(&mut stream, "400 Bad Request", "No code in the redirect.").await;
                continue;
            }
        };
        respond(&mut stream, "200 OK", page).await;
        return Ok(callback);
    }
}

/// The request target of an HTTP/1 GET, or `None` for anything else.
async fn read_request_target(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = std::str::from_utf8(&buf).ok()?;
    let mut parts = head.lines().next()?.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (method == "GET" && target.starts_with('/')).then(|| target.to_string())
}

async fn respond(stream: &mut TcpStream, status: &str, text: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>hive-cred</title></head><body><p>{text}</p></body></html>"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser may already be gone; the flow's outcome does not depend on it.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
