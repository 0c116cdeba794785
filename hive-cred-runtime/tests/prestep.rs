//! The pre-step: declared credentials are refreshed concurrently before a node runs,
//! and a node with any missing or dead credential is not started.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use hive_cred_core::testkit::{CANARY, ManualClock};
use hive_cred_core::{
    Clock, CredentialObject, CredentialProvider, CredentialType, Error, ErrorKind, ExposeSecret,
    MemoryStorage, Result,
};
use hive_cred_runtime::{AgentRuntime, AuditRecord, NodeSpec, UnavailableCredentials};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
}

/// Refreshes by minting `fresh-<id>-<n>` valid for an hour; rejects ids in `dead`,
/// fails temporarily for ids in `flaky`. Optionally waits on a barrier so that two
/// refreshes complete only if they run at the same time.
#[derive(Debug)]
struct TestProvider {
    clock: Arc<ManualClock>,
    calls: AtomicUsize,
    dead: HashSet<&'static str>,
    flaky: HashSet<&'static str>,
    barrier: Option<Arc<tokio::sync::Barrier>>,
    refreshed: Mutex<Vec<String>>,
}

impl TestProvider {
    fn new(clock: Arc<ManualClock>) -> Self {
        TestProvider {
            clock,
            calls: AtomicUsize::new(0),
            dead: HashSet::new(),
            flaky: HashSet::new(),
            barrier: None,
            refreshed: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl CredentialProvider for TestProvider {
    fn provider_id(&self) -> &str {
        "test_oauth"
    }

    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(b) = &self.barrier {
            b.wait().await;
        }
        let id = c.id().as_str();
        if self.dead.contains(id) {
            return Err(Error::new(
                ErrorKind::RefreshRejected,
                "invalid_grant: re-authorise",
            ));
        }
        if self.flaky.contains(id) {
            return Err(Error::unavailable("token endpoint returned 503"));
        }
        self.refreshed.lock().unwrap().push(id.to_string());
        let mut fresh = c.clone();
        fresh.set_key(
            "access_token",
            format!("fresh-{id}-{n:04}-token"),
            Some(self.clock.now() + Duration::hours(1)),
        )?;
        fresh.set_last_refreshed(self.clock.now());
        Ok(fresh)
    }
}

fn oauth(id: &str, token: &str, expires_at: DateTime<Utc>) -> CredentialObject {
    let mut c = CredentialObject::builder(id, CredentialType::OAuth2)
        .provider_id("test_oauth")
        .auto_refresh(true)
        .build()
        .unwrap();
    c.set_key("access_token", token, Some(expires_at)).unwrap();
    c.set_key("refresh_token", format!("rt-{id}-0123456789"), None)
        .unwrap();
    c
}

fn api_key(id: &str, value: &str) -> CredentialObject {
    let mut c = CredentialObject::new(id, CredentialType::ApiKey).unwrap();
    c.set_key("api_key", value, None).unwrap();
    c
}

async fn setup(
    provider: TestProvider,
    clock: Arc<ManualClock>,
) -> (AgentRuntime, Arc<TestProvider>) {
    let provider = Arc::new(provider);
    let runtime = AgentRuntime::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .provider(provider.clone())
        .clock(clock)
        .build()
        .await
        .unwrap();
    let now = t0();
    for c in [
        oauth("github", "old-github-token-1", now - Duration::minutes(10)),
        oauth("slack", "old-slack-token-2", now + Duration::minutes(2)),
        oauth("gmail", "valid-gmail-token-3", now + Duration::hours(5)),
        oauth("dead", "old-dead-token-4", now - Duration::minutes(1)),
        api_key("brave_search", "BSA-brave-key-5"),
    ] {
        runtime.credential_store.save(c).await.unwrap();
    }
    (runtime, provider)
}

#[tokio::test]
async fn refreshes_what_needs_it_before_the_node_runs() {
    let clock = Arc::new(ManualClock::new(t0()));
    let (runtime, provider) = setup(TestProvider::new(clock.clone()), clock.clone()).await;
    let spec = NodeSpec::new("triage").credentials(["github", "slack", "gmail", "brave_search"]);
    let seen = runtime
        .run_node(&spec, |ctx| async move {
            // The body runs after the refreshes: fresh values are already there.
            let gh = ctx.credential_store.get("github").await?;
            let token = gh
                .get_key("access_token")
                .unwrap()
                .expose_secret() // EXPOSE: the test compares the secret value.
                .to_string();
            let key = ctx
                .credential_store
                .get("brave_search")
                .await?
                .get_key("api_key")
                .unwrap()
                .expose_secret() // EXPOSE: the test compares the secret value.
                .to_string();
            assert_eq!(ctx.credentials().len(), 4);
            Ok::<_, Error>((token, key))
        })
        .await
        .unwrap();
    assert!(seen.0.starts_with("fresh-github-"), "{}", seen.0);
    assert_eq!(seen.1, "BSA-brave-key-5");
    // github (expired) and slack (inside the 5-minute window) refreshed; gmail not.
    let mut refreshed = provider.refreshed.lock().unwrap().clone();
    refreshed.sort();
    assert_eq!(refreshed, ["github", "slack"]);
    // Running again needs no refresh.
    runtime
        .run_node(&spec, |_| async { Ok::<_, Error>(()) })
        .await
        .unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refreshes_run_concurrently() {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut p = TestProvider::new(clock.clone());
    // Each refresh waits until both have started: sequential refreshes would hang.
    p.barrier = Some(Arc::new(tokio::sync::Barrier::new(2)));
    let (runtime, _provider) = setup(p, clock).await;
    let spec = NodeSpec::new("both").credentials(["github", "slack"]);
    let run = runtime.run_node(&spec, |_| async { Ok::<_, Error>(()) });
    tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the two refreshes must run at the same time")
        .unwrap();
}

#[tokio::test]
async fn one_error_lists_every_unavailable_credential_and_the_node_never_starts() {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut p = TestProvider::new(clock.clone());
    p.dead.insert("dead");
    let (runtime, provider) = setup(p, clock).await;
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let spec =
        NodeSpec::new("report").credentials(["github", "dead", "missing_one", "brave_search"]);
    let err = runtime
        .run_node(&spec, move |_| async move {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(
        !started.load(Ordering::SeqCst),
        "the node body must not run"
    );
    let details = UnavailableCredentials::from_error(&err).expect("details attached");
    assert_eq!(details.node(), "report");
    assert_eq!(details.ids().collect::<Vec<_>>(), ["dead", "missing_one"]);
    assert_eq!(details.failures()[0].1.kind(), ErrorKind::RefreshRejected);
    assert_eq!(details.failures()[1].1.kind(), ErrorKind::NotFound);
    let text = err.to_string();
    assert!(
        text.contains("node `report` not started: 2 credentials unavailable"),
        "{text}"
    );
    assert!(text.contains("dead [refresh_rejected]"), "{text}");
    assert!(text.contains("missing_one [not_found]"), "{text}");
    assert!(
        !text.contains("github") && !text.contains("brave_search"),
        "{text}"
    );
    assert_eq!(err.context_value("credentials"), Some("dead,missing_one"));
    assert!(!err.is_temporary());
    // The healthy expired credential was still refreshed in the same concurrent pass.
    assert!(
        provider
            .refreshed
            .lock()
            .unwrap()
            .contains(&"github".to_string())
    );
}

#[tokio::test]
async fn expired_without_auto_refresh_is_dead_but_advisory_window_failure_is_not() {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut p = TestProvider::new(clock.clone());
    p.flaky.insert("slack");
    let (runtime, _) = setup(p, clock.clone()).await;
    let mut static_token = CredentialObject::new("static", CredentialType::BearerToken).unwrap();
    static_token
        .set_key(
            "token",
            "static-token-value",
            Some(t0() - Duration::seconds(1)),
        )
        .unwrap();
    runtime.credential_store.save(static_token).await.unwrap();

    let err = runtime
        .prepare_node(&NodeSpec::new("n").credential("static"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Expired);
    assert!(err.to_string().contains("no auto_refresh"), "{err}");

    // slack expires in 2 minutes; its refresh fails temporarily: the node still runs
    // with the still-valid token.
    let ctx = runtime
        .prepare_node(&NodeSpec::new("n").credential("slack"))
        .await
        .unwrap();
    let token = ctx
        .credential("slack")
        .unwrap()
        .get_key("access_token")
        .unwrap();
    assert_eq!(token.expose_secret(), "old-slack-token-2"); // EXPOSE: the test compares the secret value.

    // Past expiry the same temporary failure stops the node, as a temporary error.
    clock.advance(Duration::minutes(3));
    let err = runtime
        .prepare_node(&NodeSpec::new("n").credential("slack"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_temporary());
}

#[tokio::test]
async fn duplicate_declarations_are_fetched_once_and_empty_specs_run() {
    let clock = Arc::new(ManualClock::new(t0()));
    let (runtime, provider) = setup(TestProvider::new(clock.clone()), clock).await;
    let ctx = runtime
        .prepare_node(&NodeSpec::new("dup").credentials(["github", "github"]))
        .await
        .unwrap();
    assert_eq!(ctx.credentials().len(), 1);
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    let out = runtime
        .run_node(&NodeSpec::new("none"), |ctx| async move {
            Ok::<_, Error>(ctx.name().to_string())
        })
        .await
        .unwrap();
    assert_eq!(out, "none");
}

#[tokio::test]
async fn audit_trail_names_the_node_and_redaction_follows_refreshes() {
    let clock = Arc::new(ManualClock::new(t0()));
    let (runtime, _) = setup(TestProvider::new(clock.clone()), clock.clone()).await;
    runtime.audit().clear();
    let spec = NodeSpec::new("summarise").credential("github");
    let redacted = runtime
        .run_node(&spec, |ctx| async move {
            let token = ctx
                .credential_store
                .get_key("github", "access_token")
                .await?;
            // EXPOSE: test: a tool result that leaks the token (old and new).
            let leak = format!("new={} old=old-github-token-1", token.expose_secret());
            Ok::<_, Error>(ctx.redact(&leak))
        })
        .await
        .unwrap();
    assert_eq!(
        redacted,
        "new=[hive:github.access_token] old=[hive:github.access_token]"
    );
    let trail: Vec<AuditRecord> = runtime.audit_trail();
    let ops: Vec<(Option<&str>, &str, &str)> = trail
        .iter()
        .map(|r| (r.node.as_deref(), &*r.operation, &*r.outcome))
        .collect();
    assert!(ops.contains(&(Some("summarise"), "get", "ok")), "{ops:?}");
    assert!(
        ops.contains(&(Some("summarise"), "get_key", "ok")),
        "{ops:?}"
    );
    assert!(ops.iter().any(|(_, op, _)| *op == "refresh"), "{ops:?}");
    assert!(trail.iter().all(|r| r.credential_id == "github"));
    let json = serde_json::to_string(&trail).unwrap();
    assert!(
        !json.contains("token-1") && !json.contains("fresh-"),
        "{json}"
    );
}

#[tokio::test]
async fn canary_never_appears_in_errors_debug_audit_or_logs() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Buf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let clock = Arc::new(ManualClock::new(t0()));
    let mut p = TestProvider::new(clock.clone());
    p.dead.insert("canary_cred");
    let (runtime, _) = setup(p, clock).await;
    runtime
        .credential_store
        .save(oauth("canary_cred", CANARY, t0() - Duration::minutes(1)))
        .await
        .unwrap();
    runtime
        .credential_store
        .save(api_key("canary_key", CANARY))
        .await
        .unwrap();
    let err = runtime
        .run_node(
            &NodeSpec::new("n").credentials(["canary_cred", "canary_key"]),
            |_| async { Ok::<_, Error>(()) },
        )
        .await
        .unwrap_err();
    let ctx = runtime
        .prepare_node(&NodeSpec::new("n").credential("canary_key"))
        .await
        .unwrap();
    let outputs = [
        err.to_string(),
        format!("{err:?}"),
        format!("{:?}", UnavailableCredentials::from_error(&err)),
        format!("{runtime:?}"),
        format!("{ctx:?}"),
        format!("{:?}", runtime.redactor()),
        serde_json::to_string(&runtime.audit_trail()).unwrap(),
        ctx.redact(&format!("tool said {CANARY}")),
        String::from_utf8(logs.0.lock().unwrap().clone()).unwrap(),
    ];
    for (i, out) in outputs.iter().enumerate() {
        assert!(!out.contains(CANARY), "output {i} leaks the canary: {out}");
    }
}
