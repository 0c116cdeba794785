//! The HTTP layer: one reqwest client that follows no redirects, with a timeout, a body
//! size cap and status classification before any body is parsed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use oauth2::http::{self, HeaderMap, HeaderValue, StatusCode, header};
use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse};
use reqwest::redirect::Policy;

use hive_cred_core::{Error, Result};

use crate::error::Observed;

/// The largest response body read (token responses are a few hundred bytes).
pub(crate) const MAX_BODY: usize = 256 * 1024;

/// The longest `Retry-After` honoured; longer values are capped.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Why an HTTP exchange failed before its body could be interpreted. Its Display
/// never contains a URL, a header value or a body.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// The request could not be built (never carries the request).
    Build,
    /// Sending or receiving failed.
    Send {
        timeout: bool,
        connect: bool,
        source: reqwest::Error,
    },
    /// The server answered with a redirect, which is not followed.
    Redirect { status: u16 },
    /// HTTP 429.
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 5xx.
    Server {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// HTTP 404 or 405: the URL points at no endpoint.
    NoEndpoint { status: u16 },
    /// The body exceeded [`MAX_BODY`].
    BodyTooLarge,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Build => f.write_str("the HTTP request could not be built"),
            TransportError::Send { timeout: true, .. } => f.write_str("the request timed out"),
            TransportError::Send { connect: true, .. } => {
                f.write_str("could not connect to the endpoint")
            }
            TransportError::Send { .. } => f.write_str("the HTTP exchange failed"),
            TransportError::Redirect { status } => write!(
                f,
                "the endpoint answered with a redirect (HTTP {status}), which is not followed"
            ),
            TransportError::RateLimited { .. } => f.write_str("rate limited (HTTP 429)"),
            TransportError::Server { status, .. } => write!(f, "server error (HTTP {status})"),
            TransportError::NoEndpoint { status } => {
                write!(f, "no endpoint at the URL (HTTP {status})")
            }
            TransportError::BodyTooLarge => write!(f, "response body larger than {MAX_BODY} bytes"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Send { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl TransportError {
    /// The hive-cred error for this failure, for an endpoint described by `what`
    /// (`"token endpoint"`, ...).
    pub(crate) fn into_error(self, what: &str) -> Error {
        match self {
            TransportError::Build => Error::new(
                hive_cred_core::ErrorKind::Unexpected,
                format!("the request to the {what} could not be built"),
            ),
            TransportError::Send {
                timeout, connect, ..
            } => {
                let msg = if timeout {
                    format!("the {what} did not answer within the configured timeout")
                } else if connect {
                    format!("could not connect to the {what}")
                } else {
                    format!("the HTTP exchange with the {what} failed")
                };
                Error::unavailable(msg).with_source(self)
            }
            TransportError::Redirect { status } => Error::config(format!(
                "the {what} answered with a redirect (HTTP {status}); redirects are refused and not followed: configure the final URL"
            ))
            .with_context("status", status),
            TransportError::RateLimited { retry_after } => {
                let e = Error::new(
                    hive_cred_core::ErrorKind::RateLimited,
                    format!("the {what} is rate limiting requests (HTTP 429)"),
                )
                .with_context("status", 429);
                match retry_after {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                }
            }
            TransportError::Server {
                status,
                retry_after,
            } => {
                let e = Error::unavailable(format!(
                    "the {what} failed with a server error (HTTP {status})"
                ))
                .with_context("status", status);
                match retry_after {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                }
            }
            TransportError::NoEndpoint { status } => Error::config(format!(
                "the {what} URL answered HTTP {status}: no such endpoint; check the configured URL"
            ))
            .with_context("status", status),
            TransportError::BodyTooLarge => Error::unavailable(format!(
                "the {what} sent a response larger than {MAX_BODY} bytes"
            )),
        }
    }
}

/// A received response: status, headers and the (capped) body.
pub(crate) struct Received {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// The reqwest client with hive-cred's safety settings.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
}

impl Transport {
    pub(crate) fn new(timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("hive-cred-oauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::config("the HTTP client could not be created").with_source(e.without_url())
            })?;
        Ok(Transport { client })
    }

    /// A request builder on the shared client.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request`, failing on redirects, 404/405, 429 and 5xx before reading a body;
    /// `now` resolves `Retry-After` dates.
    pub(crate) async fn execute(
        &self,
        request: reqwest::Request,
        now: DateTime<Utc>,
    ) -> Result<Received, TransportError> {
        let send_err = |e: reqwest::Error| TransportError::Send {
            timeout: e.is_timeout(),
            connect: e.is_connect(),
            source: e.without_url(),
        };
        let mut response = self.client.execute(request).await.map_err(send_err)?;
        let status = response.status();
        let retry_after = || {
            response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, now))
        };
        if status.is_redirection() {
            return Err(TransportError::Redirect {
                status: status.as_u16(),
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(TransportError::RateLimited {
                retry_after: retry_after(),
            });
        }
        if status.is_server_error() {
            return Err(TransportError::Server {
                status: status.as_u16(),
                retry_after: retry_after(),
            });
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(TransportError::NoEndpoint {
                status: status.as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(TransportError::BodyTooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(send_err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(TransportError::BodyTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Received {
            status,
            headers: std::mem::take(response.headers_mut()),
            body,
        })
    }

    /// The oauth2 crate's HTTP client for token requests. Answers that carry an OAuth
    /// error in a success status or a vendor shape are normalised to RFC 6749 error
    /// responses, so the oauth2 crate classifies them.
    pub(crate) async fn token_exchange(
        &self,
        request: HttpRequest,
        now: DateTime<Utc>,
        observed: &Mutex<Observed>,
    ) -> Result<HttpResponse, TransportError> {
        let request = reqwest::Request::try_from(request).map_err(|_| TransportError::Build)?;
        let received = self.execute(request, now).await?;
        {
            let mut seen = observed.lock().unwrap_or_else(|p| p.into_inner());
            seen.status = Some(received.status.as_u16());
            seen.content_type = received
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .filter(|ct| {
                    ct.len() <= 100 && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                })
                .map(str::to_string);
        }
        let (status, body) = normalize_token_answer(received.status, received.body);
        let mut builder = http::Response::builder().status(status);
        if let Some(ct) = received.headers.get(header::CONTENT_TYPE) {
            builder = builder.header(header::CONTENT_TYPE, ct.clone());
        }
        builder.body(body).map_err(|_| TransportError::Build)
    }
}

/// The oauth2 crate's HTTP client for one token request: the transport, the request's
/// start time (for `Retry-After` dates) and where to record what was seen.
pub(crate) struct TokenHttp<'a> {
    pub(crate) transport: &'a Transport,
    pub(crate) now: DateTime<Utc>,
    pub(crate) observed: &'a Mutex<Observed>,
}

impl<'c> AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(
            self.transport
                .token_exchange(request, self.now, self.observed),
        )
    }
}

/// Rewrites vendor-shaped errors into RFC 6749 section 5.2 errors:
/// - a 2xx JSON object with an `error` string (GitHub) or `"ok": false` (Slack) and no
///   `access_token` becomes HTTP 400;
/// - any other 2xx becomes 200 (the oauth2 crate accepts exactly 200);
/// - a 4xx JSON object without an `error` string but with a `status` string (HubSpot's
///   `BAD_REFRESH_TOKEN`) gets `error` set to that status, lower-cased.
pub(crate) fn normalize_token_answer(status: StatusCode, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let Some(serde_json::Value::Object(map)) = parsed else {
        let status = if status.is_success() {
            StatusCode::OK
        } else {
            status
        };
        return (status, body);
    };
    let error_str = map.get("error").and_then(|v| v.as_str()).is_some();
    if status.is_success() {
        let has_token = map.contains_key("access_token");
        let slack_not_ok = map.get("ok") == Some(&serde_json::Value::Bool(false));
        if !has_token && (error_str || slack_not_ok) {
            if error_str {
                return (StatusCode::BAD_REQUEST, body);
            }
            let rewritten = serde_json::json!({ "error": "request_failed" });
            return (StatusCode::BAD_REQUEST, rewritten.to_string().into_bytes());
        }
        return (StatusCode::OK, body);
    }
    if status.is_client_error()
        && !error_str
        && let Some(code) = map.get("status").and_then(|v| v.as_str())
    {
        let rewritten = serde_json::json!({ "error": code.to_ascii_lowercase() });
        return (status, rewritten.to_string().into_bytes());
    }
    (status, body)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime),
/// relative to `now`. Dates in the past give zero; values are capped at
/// [`MAX_RETRY_AFTER`].
pub(crate) fn parse_retry_after(value: &HeaderValue, now: DateTime<Utc>) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = DateTime::parse_from_rfc2822(text)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
                .map(|n| n.and_utc())
        })?;
    let delay = (at - now).to_std().unwrap_or(Duration::ZERO);
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap()
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let p = |s: &'static str| parse_retry_after(&HeaderValue::from_static(s), now());
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            p("Wed, 21 Oct 2015 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            p("Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p("Wed Oct 21 07:28:30 2015"), Some(Duration::from_secs(30)));
        assert_eq!(
            p("Wed, 21 Oct 2015 07:00:00 GMT"),
            Some(Duration::ZERO),
            "past"
        );
        assert_eq!(p("99999999999"), Some(MAX_RETRY_AFTER), "capped");
        assert_eq!(p("soon"), None);
        assert_eq!(p("-5"), None);
    }

    #[test]
    fn normalizes_vendor_errors() {
        let n = |s: u16, b: &str| {
            let (st, body) = normalize_token_answer(StatusCode::from_u16(s).unwrap(), b.into());
            (st.as_u16(), String::from_utf8(body).unwrap())
        };
        // GitHub: error in a 200.
        assert_eq!(n(200, r#"{"error":"bad_refresh_token"}"#).0, 400);
        // Slack: ok=false.
        assert_eq!(
            n(200, r#"{"ok":false,"error":"invalid_refresh_token"}"#).0,
            400
        );
        let (st, body) = n(200, r#"{"ok":false}"#);
        assert_eq!((st, body.as_str()), (400, r#"{"error":"request_failed"}"#));
        // Success stays success; 201 becomes 200.
        assert_eq!(n(200, r#"{"access_token":"a","ok":true}"#).0, 200);
        assert_eq!(n(201, r#"{"access_token":"a"}"#).0, 200);
        assert_eq!(n(200, "<html>").0, 200);
        // HubSpot: status string in a 400.
        let (st, body) = n(400, r#"{"status":"BAD_REFRESH_TOKEN","message":"m"}"#);
        assert_eq!(
            (st, body.as_str()),
            (400, r#"{"error":"bad_refresh_token"}"#)
        );
        // Standard errors untouched.
        let (st, body) = n(400, r#"{"error":"invalid_grant"}"#);
        assert_eq!((st, body.as_str()), (400, r#"{"error":"invalid_grant"}"#));
    }
}
