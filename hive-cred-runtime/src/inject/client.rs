//! [`InjectingClient`]: the HTTP client for tools that fills credentials in at send time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hive_cred_core::{CredentialStore, Error, ErrorKind, Result};
use http::Extensions;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Request, Response, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use serde::Serialize;
use url::Url;

use super::destination::{Mismatch, shown};
use super::fill::find_handles;
use super::response::ToolResponse;
use super::spec::{UsageSpec, UsageSpecs};
use crate::audit::{AuditLog, AuditRecord};
use crate::canary::{CanaryMonitor, with_destination};
use crate::redact::RedactorHandle;
use crate::runtime::AgentRuntime;

/// How many same-origin redirects a request follows by default.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// The usage spec a request names, carried to the middleware in its extensions.
#[derive(Clone)]
struct UsageName(Arc<str>);

pub(super) struct Shared {
    pub(super) store: CredentialStore,
    pub(super) specs: UsageSpecs,
    pub(super) redactor: RedactorHandle,
    pub(super) audit: Arc<AuditLog>,
    pub(super) canaries: CanaryMonitor,
    pub(super) max_redirects: usize,
}

/// An HTTP client for tools that attaches credentials itself, so tool code never holds
/// them. Made by [`AgentRuntime::injecting_client`].
///
/// A tool builds a request without secrets, names the [`UsageSpec`] it follows with
/// [`ToolRequest::usage`], and sends it; the client, a middleware at the end of a
/// [`reqwest_middleware`] chain, then:
///
/// # Behavior
/// - **Destination binding**: fills the spec's header, query and JSON body templates
///   only when the request's URL is one of the spec's [`Destination`](crate::Destination)s
///   (exact scheme, host, port, path prefix). Otherwise it sends nothing and fails
///   with `PermissionDenied` naming the credential, the destination and why, and writes
///   an audit record (operation `inject`, outcome `error`, with the destination).
/// - **Opaque handles**: `{{hive:id.key}}` in the URL, a header value or the body (as
///   a model may write them into tool arguments) are replaced by the value, only when a
///   spec naming credential `id` allows the destination; else the request is refused
///   as above. Values are percent-encoded in URLs and JSON-escaped in JSON bodies.
/// - **Redirects**: follows same-origin redirects whose target the spec still allows
///   (at most [`DEFAULT_MAX_REDIRECTS`]), filling credentials in again. A redirect to
///   another origin is never followed: the tool gets the redirect response, and the
///   credential goes nowhere else.
/// - **401**: once per request, refreshes the credentials it attached through the
///   store ([`CredentialStore::refresh`], single flight) and, for idempotent methods
///   with a replayable body, sends the request again with the new values.
/// - **Responses** reach the tool as [`ToolResponse`]s whose headers and body are
///   redacted (streaming, chunk by chunk) with the runtime's redactor.
/// - **Audit and canaries**: each attached credential is audited (operation `inject`,
///   with the destination; its template lookups are the store's `resolve`/`get_key`
///   records). Any use of a canary credential, and any canary value in a request the
///   tool built or in a response body, raises a [`CanaryAlert`](crate::CanaryAlert).
/// - A URL with userinfo (`https://api.github.com@attacker.test/`) is refused
///   (`PermissionDenied`), credentials or not: it hides the real host.
/// - Errors name ids, spec names and `scheme://host:port/path`, never values or query
///   strings.
///
/// ```no_run
/// # async fn demo(runtime: hive_cred_runtime::AgentRuntime) -> hive_cred_core::Result<()> {
/// use hive_cred_runtime::{UsageSpec, UsageSpecs};
///
/// let specs = UsageSpecs::new().with(
///     UsageSpec::builder("github")
///         .header("Authorization", "Bearer {{github.access_token}}")
///         .destination("https://api.github.com")
///         .build()?,
/// )?;
/// let client = runtime.injecting_client(specs).build()?;
/// // Tool code: no secret in sight.
/// let repos = client
///     .get("https://api.github.com/user/repos")
///     .usage("github")
///     .send()
///     .await?
///     .text()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InjectingClient {
    client: ClientWithMiddleware,
    shared: Arc<Shared>,
}

impl fmt::Debug for InjectingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.shared.specs.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        f.debug_struct("InjectingClient")
            .field("specs", &names)
            .field("max_redirects", &self.shared.max_redirects)
            .finish_non_exhaustive()
    }
}

/// Builder for [`InjectingClient`], from [`AgentRuntime::injecting_client`].
#[must_use]
pub struct InjectingClientBuilder {
    shared: Shared,
    reqwest: Option<reqwest::ClientBuilder>,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl fmt::Debug for InjectingClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InjectingClientBuilder")
            .field("specs", &self.shared.specs.len())
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

impl AgentRuntime {
    /// A builder for an [`InjectingClient`] over this runtime's store, redactor, audit
    /// log and canary monitor, following `specs` (feature `http`).
    pub fn injecting_client(&self, specs: UsageSpecs) -> InjectingClientBuilder {
        InjectingClientBuilder {
            shared: Shared {
                store: self.credential_store.clone(),
                specs,
                redactor: self.redactor_handle().clone(),
                audit: self.audit_shared(),
                canaries: self.canaries().clone(),
                max_redirects: DEFAULT_MAX_REDIRECTS,
            },
            reqwest: None,
            middleware: Vec::new(),
        }
    }
}

impl InjectingClientBuilder {
    /// The reqwest client settings (timeouts, root certificates, resolver overrides,
    /// proxies). Its redirect policy is replaced: the injecting client follows
    /// redirects itself. Default: `reqwest::Client::builder()`.
    pub fn reqwest(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.reqwest = Some(builder);
        self
    }

    /// Adds a middleware in front of the injection (logging, retries): it sees requests
    /// as the tool built them, without credentials.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// How many same-origin redirects to follow. Default: [`DEFAULT_MAX_REDIRECTS`].
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.shared.max_redirects = max;
        self
    }

    /// Builds the client. `Config` when reqwest cannot build its client (TLS setup).
    pub fn build(self) -> Result<InjectingClient> {
        let client = self
            .reqwest
            .unwrap_or_default()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::config("could not build the HTTP client (TLS or proxy settings)")
                    .with_source(e.without_url())
            })?;
        let shared = Arc::new(self.shared);
        let mut chain = reqwest_middleware::ClientBuilder::new(client);
        for m in self.middleware {
            chain = chain.with_arc(m);
        }
        let chain = chain.with(Inject {
            shared: shared.clone(),
        });
        Ok(InjectingClient {
            client: chain.build(),
            shared,
        })
    }
}

impl InjectingClient {
    /// A request; name its usage spec with [`ToolRequest::usage`].
    pub fn request(&self, method: Method, url: &str) -> ToolRequest {
        // reqwest moves userinfo into an Authorization header; look before it does.
        let userinfo = url.contains('@')
            && Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
        ToolRequest {
            builder: self.client.request(method, url),
            shared: self.shared.clone(),
            usage: None,
            userinfo,
        }
    }

    /// A GET request.
    pub fn get(&self, url: &str) -> ToolRequest {
        self.request(Method::GET, url)
    }

    /// A POST request.
    pub fn post(&self, url: &str) -> ToolRequest {
        self.request(Method::POST, url)
    }

    /// A PUT request.
    pub fn put(&self, url: &str) -> ToolRequest {
        self.request(Method::PUT, url)
    }

    /// A DELETE request.
    pub fn delete(&self, url: &str) -> ToolRequest {
        self.request(Method::DELETE, url)
    }

    /// The usage specs.
    pub fn specs(&self) -> &UsageSpecs {
        &self.shared.specs
    }
}

/// A request being built by a tool. Holds no secrets: credentials are filled in by the
/// client's middleware when it is sent.
pub struct ToolRequest {
    builder: reqwest_middleware::RequestBuilder,
    shared: Arc<Shared>,
    usage: Option<Arc<str>>,
    userinfo: bool,
}

impl fmt::Debug for ToolRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRequest")
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl ToolRequest {
    /// Names the [`UsageSpec`] whose templates fill this request.
    pub fn usage(mut self, name: &str) -> Self {
        self.usage = Some(name.into());
        self
    }

    /// Adds a header (its value may hold opaque handles).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Adds query parameters.
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        self.builder = self.builder.query(query);
        self
    }

    /// Sets a JSON body.
    pub fn json<T: Serialize + ?Sized>(mut self, json: &T) -> Self {
        self.builder = self.builder.json(json);
        self
    }

    /// Sets a body.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.body(body);
        self
    }

    /// Sets a timeout for this request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.builder = self.builder.timeout(timeout);
        self
    }

    fn build(self) -> Result<(ClientWithMiddleware, Request, Arc<Shared>, Extensions)> {
        if self.userinfo {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "refused to send a request whose URL has userinfo (user@host): {}",
                    Mismatch::Userinfo.as_str()
                ),
            ));
        }
        let (client, request) = self.builder.build_split();
        let request = request.map_err(|e| {
            Error::invalid_input("the tool's HTTP request could not be built (check its URL)")
                .with_source(e.without_url())
        })?;
        let mut extensions = Extensions::new();
        if let Some(u) = self.usage {
            extensions.insert(UsageName(u));
        }
        Ok((client, request, self.shared, extensions))
    }

    /// Sends the request (see [`InjectingClient`] for what happens on the way).
    pub async fn send(self) -> Result<ToolResponse> {
        let (client, request, shared, mut extensions) = self.build()?;
        let url = request.url().clone();
        let destination = shown(&url);
        let response = client
            .execute_with_extensions(request, &mut extensions)
            .await
            .map_err(|e| transport_error(e, &destination))?;
        Ok(ToolResponse {
            status: response.status(),
            stream: Some(shared.redactor.stream()),
            response,
            url,
            destination,
            alerted: Vec::new(),
            shared,
        })
    }

    /// Does everything [`send`](Self::send) does before the network (spec lookup,
    /// destination checks, handle and template filling) without sending, and reports
    /// what would be attached (never the values). For tests of a tool's specs.
    /// Writes no `inject` audit record (the store's lookups are recorded).
    pub async fn dry_run(self) -> Result<DryRun> {
        let (_, request, shared, extensions) = self.build()?;
        let spec = shared.spec(&extensions)?;
        let prepared = shared.prepare(request, spec.as_deref(), false).await?;
        let mut headers: Vec<String> = prepared
            .request
            .headers()
            .iter()
            .filter(|(_, v)| v.is_sensitive())
            .map(|(k, _)| k.as_str().to_string())
            .collect();
        headers.sort_unstable();
        Ok(DryRun {
            destination: prepared.destination,
            credentials: prepared.credentials.into_iter().map(|(id, _)| id).collect(),
            headers,
            body_len: prepared
                .request
                .body()
                .and_then(|b| b.as_bytes())
                .map_or(0, <[u8]>::len),
        })
    }
}

/// What a request would carry, from [`ToolRequest::dry_run`]. No values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DryRun {
    /// `scheme://host:port/path` of the request.
    pub destination: String,
    /// The credentials that would be attached.
    pub credentials: Vec<String>,
    /// The headers that would carry credentials, sorted.
    pub headers: Vec<String>,
    /// The length of the filled body.
    pub body_len: usize,
}

/// The middleware at the end of the chain.
struct Inject {
    shared: Arc<Shared>,
}

#[async_trait]
impl Middleware for Inject {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.shared
            .send(request, extensions, next)
            .await
            .map_err(reqwest_middleware::Error::middleware)
    }
}

/// A request with its credentials filled in.
struct Prepared {
    request: Request,
    /// `(id, key)` of every attached credential (key `None` for templates).
    credentials: Vec<(String, Option<String>)>,
    destination: String,
}

impl Shared {
    /// [`shown`] through the redactor: a redirect's `Location` (and so the next hop's
    /// URL) may carry a value that was filled into the path.
    fn shown(&self, url: &Url) -> String {
        self.redactor.current().redact(&shown(url)).into_owned()
    }

    fn spec(&self, extensions: &Extensions) -> Result<Option<Arc<UsageSpec>>> {
        let Some(UsageName(name)) = extensions.get::<UsageName>() else {
            return Ok(None);
        };
        match self.specs.get(name) {
            Some(s) => Ok(Some(s.clone())),
            None => Err(Error::config(format!(
                "the request names usage spec `{name}`, which is not declared"
            ))
            .with_context("usage", name)),
        }
    }

    async fn send(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let spec = self.spec(extensions)?;
        let mut request = request;
        let mut redirects = 0;
        let mut refreshed = false;
        loop {
            let replay = request.try_clone();
            let url = request.url().clone();
            let method = request.method().clone();
            let Prepared {
                request: filled,
                credentials,
                destination,
            } = self.prepare(request, spec.as_deref(), true).await?;
            let response = next
                .clone()
                .run(filled, extensions)
                .await
                .map_err(|e| transport_error(e, &destination))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed && !credentials.is_empty() {
                refreshed = true;
                let mut renewed = false;
                let mut ids: Vec<&str> = Vec::new();
                for (id, _) in &credentials {
                    if !ids.contains(&id.as_str()) {
                        ids.push(id);
                    }
                }
                for id in ids {
                    match self.store.refresh(id).await {
                        Ok(_) => renewed = true,
                        Err(e) => {
                            tracing::warn!(target: "hive_cred::inject", id, kind = %e.kind(), destination = %destination, "401: refreshing the credential failed");
                        }
                    }
                }
                if renewed
                    && is_idempotent(&method)
                    && let Some(again) = replay
                {
                    request = again;
                    continue;
                }
                return Ok(response);
            }
            if status.is_redirection()
                && let Some(follow) =
                    self.redirect(&response, replay, &url, &credentials, &mut redirects)
            {
                request = follow;
                continue;
            }
            return Ok(response);
        }
    }

    /// The request to send for a redirect, when it may be followed.
    fn redirect(
        &self,
        response: &Response,
        replay: Option<Request>,
        from: &Url,
        credentials: &[(String, Option<String>)],
        redirects: &mut usize,
    ) -> Option<Request> {
        let location = response.headers().get(LOCATION)?.to_str().ok()?;
        let target = from.join(location).ok()?;
        if target.origin() != from.origin() {
            let to = self.shown(&target);
            tracing::warn!(target: "hive_cred::inject", from = %self.shown(from), to = %to, "redirect to another origin not followed: credentials never cross origins");
            for (id, key) in credentials {
                self.audit.append(AuditRecord::runtime_use(
                    self.store.clock().now(),
                    id,
                    key.as_deref(),
                    "redirect",
                    "error",
                    Some(ErrorKind::PermissionDenied.as_str()),
                    Some(&to),
                ));
            }
            return None;
        }
        if *redirects >= self.max_redirects {
            return None;
        }
        let mut next = replay?;
        *redirects += 1;
        *next.url_mut() = target;
        let status = response.status();
        let to_get = status == StatusCode::SEE_OTHER
            || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && next.method() == Method::POST);
        if to_get && next.method() != Method::HEAD {
            *next.method_mut() = Method::GET;
            *next.body_mut() = None;
            next.headers_mut().remove(CONTENT_TYPE);
            next.headers_mut().remove(CONTENT_LENGTH);
        }
        Some(next)
    }

    /// Checks the destination, fills handles and templates, audits.
    async fn prepare(
        &self,
        request: Request,
        spec: Option<&UsageSpec>,
        audit: bool,
    ) -> Result<Prepared> {
        let destination = self.shown(request.url());
        let handles = find_handles(&request);
        if self.canaries.is_armed() {
            self.scan_outgoing(&request, &destination);
        }
        if spec.is_none() && handles.is_empty() {
            return Ok(Prepared {
                request,
                credentials: Vec::new(),
                destination,
            });
        }
        let url = request.url();
        if let Some(spec) = spec
            && let Err(m) = spec.check(url)
        {
            let ids = spec.credentials().iter().map(|id| (id.clone(), None));
            return Err(self.refuse(ids.collect(), &destination, m, Some(spec)));
        }
        for (id, key) in &handles {
            if let Err(m) = self.specs.check_credential(id, url) {
                return Err(self.refuse(
                    vec![(id.clone(), Some(key.clone()))],
                    &destination,
                    m,
                    None,
                ));
            }
        }
        let request = with_destination(
            destination.as_str().into(),
            self.fill(request, spec, &handles),
        )
        .await?;
        let mut credentials: Vec<(String, Option<String>)> = spec
            .filter(|s| s.has_templates())
            .map(|s| s.credentials().iter().map(|c| (c.clone(), None)).collect())
            .unwrap_or_default();
        credentials.extend(handles.into_iter().map(|(id, key)| (id, Some(key))));
        if audit {
            let now = self.store.clock().now();
            for (id, key) in &credentials {
                self.audit.append(AuditRecord::runtime_use(
                    now,
                    id,
                    key.as_deref(),
                    "inject",
                    "ok",
                    None,
                    Some(&destination),
                ));
            }
        }
        Ok(Prepared {
            request,
            credentials,
            destination,
        })
    }

    /// Audits a refused injection and returns its error.
    fn refuse(
        &self,
        credentials: Vec<(String, Option<String>)>,
        destination: &str,
        why: Mismatch,
        spec: Option<&UsageSpec>,
    ) -> Error {
        let now = self.store.clock().now();
        for (id, key) in &credentials {
            self.audit.append(AuditRecord::runtime_use(
                now,
                id,
                key.as_deref(),
                "inject",
                "error",
                Some(ErrorKind::PermissionDenied.as_str()),
                Some(destination),
            ));
            if self.canaries.is_canary_id(id) {
                self.canaries
                    .alert(id, key.as_deref(), "refused_injection", Some(destination));
            }
        }
        let ids: Vec<&str> = credentials.iter().map(|(id, _)| id.as_str()).collect();
        let ids = ids.join(",");
        let mut message = format!(
            "refused to send credential `{ids}` to {destination}: {}",
            why.as_str()
        );
        if let Some(spec) = spec {
            let allowed: Vec<String> = spec.destinations().iter().map(|d| d.to_string()).collect();
            message.push_str(&format!(
                " (usage spec `{}` allows {})",
                spec.name(),
                allowed.join(", ")
            ));
        } else {
            message.push_str(" (no usage spec naming the credential allows it)");
        }
        tracing::warn!(target: "hive_cred::inject", credentials = %ids, destination, reason = why.as_str(), "credential injection refused");
        let mut err = Error::new(ErrorKind::PermissionDenied, message)
            .with_context("credentials", ids)
            .with_context("destination", destination);
        if let Some(spec) = spec {
            err = err.with_context("usage", spec.name());
        }
        err
    }

    /// Canary values in what the tool built (before anything is filled in).
    fn scan_outgoing(&self, request: &Request, destination: &str) {
        let d = Some(destination);
        self.canaries
            .scan(request.url().as_str().as_bytes(), "outgoing_request", d);
        for v in request.headers().values() {
            self.canaries.scan(v.as_bytes(), "outgoing_request", d);
        }
        if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
            self.canaries.scan(body, "outgoing_request", d);
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The error a tool gets for a failed send: ours as they are, reqwest's classified and
/// without the URL (which may hold filled-in query values).
fn transport_error(e: reqwest_middleware::Error, destination: &str) -> Error {
    match e {
        reqwest_middleware::Error::Middleware(e) => match e.downcast::<Error>() {
            Ok(ours) => ours,
            Err(_) => Error::new(
                ErrorKind::Unexpected,
                "a middleware of the HTTP client failed",
            )
            .with_context("destination", destination),
        },
        reqwest_middleware::Error::Reqwest(e) => {
            let e = e.without_url();
            let (kind, what) = if e.is_timeout() {
                (ErrorKind::Unavailable, "timed out")
            } else if e.is_connect() {
                (ErrorKind::Unavailable, "could not connect")
            } else if e.is_builder() {
                (ErrorKind::InvalidInput, "could not be built")
            } else {
                (ErrorKind::Unavailable, "failed")
            };
            Error::new(kind, format!("the HTTP request to {destination} {what}"))
                .with_context("destination", destination)
                .with_source(e)
        }
    }
}
