//! Agent-side credentials against real parts: health checks against a 127.0.0.1 HTTP
//! server (valid, revoked, slow, 429, 500, identity in the body), account selection,
//! actionable errors and preflight of an agent with 10 nodes and 3 alternative groups.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use hive_cred_core::testkit::CANARY;
use hive_cred_core::{
    AccountStatus, ActionRequired, CredentialObject, CredentialType, ErrorKind, MemoryStorage,
};
use hive_cred_runtime::{
    AgentRuntime, CredentialSpec, CredentialState, HealthCheckSpec, HealthChecker, HealthStatus,
    IdentityField, NodeSpec, SpecCatalogue, UnavailableCredentials,
};

#[derive(Default)]
struct Hits {
    user: AtomicUsize,
    other: AtomicUsize,
}

async fn user(State(hits): State<Arc<Hits>>, headers: HeaderMap) -> (StatusCode, String) {
    hits.user.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match auth.strip_prefix("Bearer ") {
        Some(t) if t.starts_with("good-") => (
            StatusCode::OK,
            format!(r#"{{"login":"{}","id":42}}"#, &t[5..]),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Bad credentials"}"#.into(),
        ),
    }
}

async fn header_key(State(hits): State<Arc<Hits>>, headers: HeaderMap) -> StatusCode {
    hits.other.fetch_add(1, Ordering::SeqCst);
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(v) if v.starts_with("good-") => StatusCode::OK,
        _ => StatusCode::FORBIDDEN,
    }
}

async fn server() -> (String, Arc<Hits>) {
    let hits = Arc::new(Hits::default());
    let app = Router::new()
        .route("/user", get(user))
        .route("/header", get(header_key))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::OK
            }),
        )
        .route("/limited", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route(
            "/broken",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

fn key(id: &str, value: &str) -> CredentialObject {
    let mut c = CredentialObject::new(id, CredentialType::ApiKey).unwrap();
    c.set_key("api_key", value, None).unwrap();
    c
}

fn spec(id: &str, base: &str, path: &str) -> CredentialSpec {
    CredentialSpec::new(id).with_health_check(
        HealthCheckSpec::new(format!("{base}{path}"))
            .with_identity("/login", IdentityField::Username),
    )
}

async fn runtime(specs: SpecCatalogue, checker: HealthChecker) -> AgentRuntime {
    AgentRuntime::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .specs(specs)
        .health_checker(checker)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_record_status_identity_and_never_values() {
    let (base, hits) = server().await;
    let mut specs = SpecCatalogue::new();
    for (id, path) in [
        ("valid", "/user"),
        ("revoked", "/user"),
        ("slow", "/slow"),
        ("limited", "/limited"),
        ("broken", "/broken"),
    ] {
        specs.insert(spec(id, &base, path)).unwrap();
    }
    let mut header = CredentialSpec::new("header");
    header.health_check =
        Some(HealthCheckSpec::new(format!("{base}/header")).with_header("x-api-key"));
    specs.insert(header).unwrap();
    let checker = HealthChecker::new().with_timeout(Duration::from_millis(300));
    let rt = runtime(specs.clone(), checker.clone()).await;
    let store = &rt.credential_store;
    store.save(key("valid", "good-octocat")).await.unwrap();
    store.save(key("revoked", CANARY)).await.unwrap();
    store.save(key("header", "good-h")).await.unwrap();
    for id in ["slow", "limited", "broken"] {
        store.save(key(id, "good-x")).await.unwrap();
    }

    let check = |id: &'static str| {
        let (checker, store, spec) = (
            checker.clone(),
            store.clone(),
            specs.get(id).unwrap().clone(),
        );
        async move { checker.check(&store, id, &spec).await.unwrap().unwrap() }
    };
    let valid = check("valid").await;
    assert_eq!(valid.status, HealthStatus::Healthy);
    assert_eq!(valid.http_status, Some(200));
    assert_eq!(valid.identity.as_ref().unwrap().label(), Some("octocat"));
    let stored = store.get("valid").await.unwrap();
    let account = stored.account().unwrap();
    assert_eq!(account.status, AccountStatus::Active);
    assert_eq!(account.identity.username.as_deref(), Some("octocat"));
    assert!(account.last_checked.is_some());

    let revoked = check("revoked").await;
    assert_eq!(revoked.status, HealthStatus::Rejected);
    assert_eq!(revoked.http_status, Some(401));
    let kept = store.get("revoked").await.unwrap();
    assert!(
        kept.has_key("api_key"),
        "a failing check keeps the credential"
    );
    assert_eq!(kept.account().unwrap().status, AccountStatus::Failed);

    assert_eq!(check("header").await.status, HealthStatus::Healthy);
    let slow = check("slow").await;
    assert_eq!(slow.status, HealthStatus::Unavailable);
    assert_eq!(slow.http_status, None);
    assert_eq!(check("limited").await.status, HealthStatus::RateLimited);
    let broken = check("broken").await;
    assert_eq!(
        (broken.status, broken.http_status),
        (HealthStatus::Unavailable, Some(500))
    );
    // Inconclusive checks leave the status as it was.
    assert_eq!(
        store
            .get("broken")
            .await
            .unwrap()
            .account()
            .map(|a| a.status),
        None
    );

    // Cached: the same credential version is not probed again.
    let before = hits.user.load(Ordering::SeqCst);
    check("valid").await;
    check("revoked").await;
    assert_eq!(hits.user.load(Ordering::SeqCst), before);

    for r in [&valid, &revoked, &slow, &broken] {
        let out = format!("{r:?} {}", serde_json::to_string(r).unwrap());
        assert!(!out.contains(CANARY) && !out.contains("good-"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_of_ten_nodes_with_three_alternative_groups() {
    let (base, hits) = server().await;
    let mut specs = SpecCatalogue::new();
    // Group 1 (by spec alternatives): web search by brave_search or serpapi.
    specs
        .insert(
            spec("brave_search", &base, "/user")
                .with_tools(["web_search", "news_search", "image_search"])
                .with_alternatives(["serpapi"])
                .with_help_url("https://brave.example/api"),
        )
        .unwrap();
    specs
        .insert(spec("serpapi", &base, "/user").with_alternatives(["brave_search"]))
        .unwrap();
    // Group 2: the model, openai or anthropic (openai's key is revoked).
    specs
        .insert(spec("openai", &base, "/user").with_alternatives(["anthropic"]))
        .unwrap();
    specs
        .insert(spec("anthropic", &base, "/user").with_alternatives(["openai"]))
        .unwrap();
    // Group 3 (declared with any_of on the nodes): mail by gmail (OAuth) or outlook.
    let mut gmail = CredentialSpec::new("gmail");
    gmail.credential_type = CredentialType::OAuth2;
    gmail.required_keys = vec!["access_token".into()];
    gmail.oauth_provider = Some("google".into());
    specs.insert(gmail).unwrap();
    specs
        .insert(CredentialSpec::new("outlook").with_help_url("https://outlook.example"))
        .unwrap();
    specs.insert(spec("github", &base, "/user")).unwrap();

    let checker = HealthChecker::new().with_concurrency(2);
    let rt = runtime(specs, checker.clone()).await;
    let store = &rt.credential_store;
    store.save(key("brave_search", "good-brave")).await.unwrap();
    store.save(key("openai", CANARY)).await.unwrap();
    store.save(key("anthropic", "good-claude")).await.unwrap();
    store.save(key("github.work", "good-work")).await.unwrap();
    store.save(key("github.personal", "good-me")).await.unwrap();
    let mut expired = key("weather", "w");
    expired
        .set_key(
            "api_key",
            "w",
            Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .unwrap();
    store.save(expired).await.unwrap();

    let nodes = vec![
        NodeSpec::new("web_search"),
        NodeSpec::new("news_search"),
        NodeSpec::new("image_search"),
        NodeSpec::new("chat").credential("openai"),
        NodeSpec::new("summarise").credential("openai"),
        NodeSpec::new("send_mail").any_of(["gmail", "outlook"]),
        NodeSpec::new("read_mail").any_of(["gmail", "outlook"]),
        NodeSpec::new("triage")
            .credential("github")
            .account("github", "work"),
        NodeSpec::new("review").credential("github"),
        NodeSpec::new("forecast").credential("weather"),
    ];
    let report = rt.preflight(&nodes).await.unwrap();
    let state = |id: &str| {
        report
            .credential(id)
            .unwrap_or_else(|| panic!("{id}: {report:#?}"))
            .state
    };
    assert_eq!(state("brave_search"), CredentialState::Available);
    assert_eq!(state("serpapi"), CredentialState::Missing);
    assert_eq!(state("openai"), CredentialState::FailingHealthCheck);
    assert_eq!(state("anthropic"), CredentialState::Available);
    assert_eq!(state("gmail"), CredentialState::Missing);
    assert_eq!(state("outlook"), CredentialState::Missing);
    assert_eq!(state("github/work"), CredentialState::Available);
    assert_eq!(state("github"), CredentialState::NeedsAccountChoice);
    assert_eq!(state("weather"), CredentialState::ExpiredNotRefreshable);
    assert_eq!(
        report.dropped_tools,
        ["send_mail", "read_mail", "review", "forecast"]
    );
    assert!(matches!(
        &report.credential("gmail").unwrap().action,
        Some(ActionRequired::AuthorizationRequired { provider, .. }) if provider == "google"
    ));
    assert!(matches!(
        &report.credential("serpapi").unwrap().action,
        Some(ActionRequired::CredentialMissing { env_var: Some(v), .. }) if v == "SERPAPI_API_KEY"
    ));
    assert_eq!(
        report.credential("brave_search").unwrap().needed_by.len(),
        3
    );
    for line in [
        "SERPAPI_API_KEY",
        "hive-cred connect google",
        "github/personal",
        "send_mail",
    ] {
        assert!(report.message.contains(line), "{line}: {}", report.message);
    }
    // One probe per credential with a health check that is stored: brave, openai,
    // anthropic, github.work.
    assert_eq!(checker.probes_made(), 4);
    assert_eq!(hits.user.load(Ordering::SeqCst), 4);
    // Again: all cached.
    rt.preflight(&nodes).await.unwrap();
    assert_eq!(hits.user.load(Ordering::SeqCst), 4);
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains(CANARY) && !json.contains("good-"), "{json}");
}

#[tokio::test]
async fn a_node_on_a_provider_with_several_accounts_needs_a_choice() {
    let rt = runtime(SpecCatalogue::builtin(), HealthChecker::new()).await;
    let store = &rt.credential_store;
    store.save(key("github.work", "w")).await.unwrap();
    store.save(key("github.personal", "p")).await.unwrap();
    let err = rt
        .prepare_node(&NodeSpec::new("review").credential("github"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccountSelectionRequired);
    let (_, first) = &UnavailableCredentials::from_error(&err).unwrap().failures()[0];
    let tool = serde_json::to_value(first.tool_result()).unwrap();
    assert_eq!(tool["action"]["action"], "account_selection_required");
    let ctx = rt
        .prepare_node(
            &NodeSpec::new("review")
                .credential("github")
                .account("github", "work"),
        )
        .await
        .unwrap();
    assert_eq!(ctx.credentials()[0].id().as_str(), "github.work");
    // A model writing provider/alias is understood.
    let ctx = rt
        .prepare_node(&NodeSpec::new("review").credential("github/personal"))
        .await
        .unwrap();
    assert_eq!(ctx.credentials()[0].id().as_str(), "github.personal");
    // A missing credential gets the catalogue's env var and help URL.
    let err = rt
        .prepare_node(&NodeSpec::new("search").credential("brave_search"))
        .await
        .unwrap_err();
    let (_, first) = &UnavailableCredentials::from_error(&err).unwrap().failures()[0];
    assert!(matches!(
        first.action_required(),
        Some(ActionRequired::CredentialMissing { env_var: Some(v), help_url: Some(_), .. }) if v == "BRAVE_SEARCH_API_KEY"
    ));
}

#[tokio::test]
async fn audit_records_name_the_principal() {
    let rt = runtime(SpecCatalogue::new(), HealthChecker::new()).await;
    let alice = rt.credential_store.for_user("alice").unwrap();
    alice.save(key("notion", "n")).await.unwrap();
    alice.get("notion").await.unwrap();
    rt.credential_store.get("notion").await.unwrap_err();
    let trail = rt.audit_trail();
    assert!(
        trail
            .iter()
            .any(|r| r.principal.as_deref() == Some("alice") && r.operation == "get")
    );
    assert!(
        trail
            .iter()
            .any(|r| r.principal.is_none() && r.operation == "get")
    );
    let json = serde_json::to_string(&trail).unwrap();
    assert!(json.contains("\"principal\":\"alice\""));
}

#[tokio::test]
async fn the_local_store_keeps_accounts_and_user_namespaces() {
    use hive_cred_runtime::local::{KeySource, LocalStorage, RawKey};
    let tmp = tempfile::tempdir().unwrap();
    let open = || async {
        let storage =
            LocalStorage::open(tmp.path(), KeySource::RawKey(RawKey::from_bytes([7; 32])))
                .await
                .unwrap();
        AgentRuntime::builder()
            .storage(Arc::new(storage))
            .specs(SpecCatalogue::new())
            .build()
            .await
            .unwrap()
    };
    let rt = open().await;
    let s = &rt.credential_store;
    let mut c = CredentialObject::builder("slack.work", CredentialType::ApiKey)
        .account("slack", Some("work"))
        .key("api_key", CANARY, None)
        .build()
        .unwrap();
    c.account_mut().unwrap().identity =
        hive_cred_core::CredentialIdentity::new().with_workspace("acme");
    s.save(c).await.unwrap();
    s.record_check("slack/work", AccountStatus::Failed, None)
        .await
        .unwrap();
    let alice = s.for_user("alice").unwrap();
    alice.save(key("slack", "alice-slack")).await.unwrap();
    drop(rt);

    let rt = open().await;
    let s = &rt.credential_store;
    let accounts = s.list_accounts("slack").await.unwrap();
    assert_eq!(
        accounts.len(),
        1,
        "alice's credential is not one of the shared store's accounts: {accounts:?}"
    );
    assert_eq!(accounts[0].identity().label(), Some("acme"));
    assert_eq!(accounts[0].status(), AccountStatus::Failed);
    assert!(s.get("slack").await.is_err());
    let alice = s.for_user("alice").unwrap();
    assert_eq!(alice.list().await.unwrap().len(), 1);
    assert!(alice.get("slack/default").await.unwrap().has_key("api_key"));
    assert!(s.for_user("bob").unwrap().get("slack").await.is_err());
}
