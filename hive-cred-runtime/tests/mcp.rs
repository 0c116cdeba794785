//! MCP clients' tokens in hive-cred storage, driven by the official Rust MCP SDK's own
//! authorisation manager (`rmcp::transport::auth::AuthorizationManager`) against the
//! workspace's mock authorisation server on 127.0.0.1 (RFC 8414 metadata, RFC 7591
//! registration, code + PKCE, rotating refresh tokens with reuse detection).
//!
//! The test plays the browser: it GETs the authorisation URL rmcp built and hands the
//! redirect back to rmcp. The two-process test re-executes this binary (the
//! `mcp_child_process` test is the child's entry point).
#![cfg(all(feature = "mcp", feature = "local"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hive_cred_core::{
    AccountStatus, CredentialId, CredentialLock, CredentialObject, CredentialStorage,
    CredentialStore, CredentialType, Error, ErrorKind, ExposeSecret, LockOptions, LockRelease,
    ManualClock, MemoryStorage, Result, StorageLayer,
};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_oauth::testkit::{Fault, MockConfig, MockTokenServer};
use hive_cred_runtime::mcp::{McpCredentialStore, McpStateStore};
use hive_cred_runtime::rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession,
    CredentialStore as _, StateStore as _, StoredAuthorizationState,
};

const ID: &str = "mcp-demo";
const CLIENT: &str = "mcp-client";
/// Never listened on: the test plays the browser and reads the redirect itself.
const REDIRECT: &str = "http://127.0.0.1:9/callback";

// ------------------------------------------------------------------ helpers

/// A storage layer that records lock, release and save events with the token
/// endpoint's arrival count at that moment, and fails saves on demand.
struct Recording {
    inner: Arc<dyn CredentialStorage>,
    events: Arc<Mutex<Vec<(String, u64)>>>,
    arrivals: Arc<dyn Fn() -> u64 + Send + Sync>,
    fail_saves: AtomicBool,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

struct ObservedRelease {
    inner: CredentialLock,
    events: Arc<Mutex<Vec<(String, u64)>>>,
    arrivals: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for ObservedRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObservedRelease")
    }
}

#[async_trait]
impl LockRelease for ObservedRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let this = *self;
        let r = this.inner.release().await;
        this.events
            .lock()
            .unwrap()
            .push(("release".into(), (this.arrivals)()));
        r
    }
}

impl Recording {
    fn push(&self, what: &str) {
        self.events
            .lock()
            .unwrap()
            .push((what.into(), (self.arrivals)()));
    }

    fn events(&self) -> Vec<(String, u64)> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl StorageLayer for Recording {
    fn inner(&self) -> &dyn CredentialStorage {
        &*self.inner
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        if self.fail_saves.load(Ordering::SeqCst) && credential.id().as_str() == ID {
            self.push("save-failed");
            return Err(Error::unavailable("injected: storage unreachable"));
        }
        let r = self.inner.save(credential).await;
        if r.is_ok() && credential.id().as_str() == ID {
            self.push("save");
        }
        r
    }

    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        let held = self.inner.lock(id, options).await?;
        self.push("lock");
        Ok(CredentialLock::new(
            id.clone(),
            ObservedRelease {
                inner: held,
                events: self.events.clone(),
                arrivals: self.arrivals.clone(),
            },
        ))
    }
}

/// A local store in a temp dir (raw key), wrapped in [`Recording`].
struct Fixture {
    server: Arc<MockTokenServer>,
    dir: tempfile::TempDir,
    key_b64: String,
    recording: Arc<Recording>,
    store: CredentialStore,
}

impl Fixture {
    /// A local store in a temp dir with a random raw key.
    async fn new(config: MockConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (key, b64) = KeySource::generate().unwrap();
        let local = LocalStorage::open(dir.path().join("credentials"), key)
            .await
            .unwrap();
        // EXPOSE: handed to child processes in HIVE_CREDENTIAL_KEY, as an operator would.
        let key_b64 = b64.expose_secret().to_owned();
        Fixture::over(config, Arc::new(local), dir, key_b64).await
    }

    async fn over(
        config: MockConfig,
        storage: Arc<dyn CredentialStorage>,
        dir: tempfile::TempDir,
        key_b64: String,
    ) -> Fixture {
        let server = Arc::new(MockTokenServer::start(config).await);
        let s = server.clone();
        let recording = Arc::new(Recording {
            inner: storage,
            events: Arc::default(),
            arrivals: Arc::new(move || s.counts().arrivals),
            fail_saves: AtomicBool::new(false),
        });
        let store = CredentialStore::builder()
            .storage(recording.clone())
            .build()
            .unwrap();
        Fixture {
            server,
            dir,
            key_b64,
            recording,
            store,
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    fn mcp(&self) -> McpCredentialStore {
        McpCredentialStore::new(&self.store, ID).unwrap()
    }

    /// An rmcp manager for the mock server, with metadata discovered and this store.
    async fn manager(&self, mcp: &McpCredentialStore) -> AuthorizationManager {
        manager_for(&self.server.url("/"), mcp).await
    }

    /// rmcp's whole authorisation flow (dynamic registration when `client` is `None`):
    /// returns the manager holding the tokens.
    async fn authorize(
        &self,
        mcp: &McpCredentialStore,
        client: Option<&str>,
    ) -> AuthorizationManager {
        let mut manager = self.manager(mcp).await;
        manager.set_state_store(McpStateStore::new(&self.store, ID).unwrap());
        let mut request = AuthorizationRequest::new(REDIRECT).with_scopes(["mcp:tools"]);
        if let Some(c) = client {
            request = request.with_preregistered_client(c);
        }
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, e)| e)
            .expect("rmcp starts the authorisation");
        // While the person is at the browser, the PKCE state is in hive-cred storage.
        assert_eq!(self.state_ids().await.len(), 1, "one pending state");
        let redirect = play_browser(session.get_authorization_url()).await;
        session
            .handle_callback_url(&redirect)
            .await
            .expect("rmcp exchanges the code");
        // ... and gone once the callback was accepted.
        assert!(self.state_ids().await.is_empty(), "the state was deleted");
        session.auth_manager
    }

    async fn state_ids(&self) -> Vec<CredentialId> {
        self.store
            .storage()
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|id| id.as_str().starts_with(&format!("{ID}-state-")))
            .collect()
    }

    async fn stored(&self) -> CredentialObject {
        self.store
            .storage()
            .load(&CredentialId::new(ID).unwrap())
            .await
            .unwrap()
            .expect("the MCP credential is stored")
    }

    /// Makes the stored access token look two hours old (through rmcp's own store
    /// API), so that rmcp's next `get_access_token` refreshes it.
    async fn backdate(&self, mcp: &McpCredentialStore) {
        let mut creds = mcp.load().await.unwrap().expect("stored");
        creds.token_received_at = creds.token_received_at.map(|t| t - 7200);
        mcp.save(creds).await.unwrap();
        self.recording.events.lock().unwrap().clear();
    }
}

async fn manager_for(base: &str, mcp: &McpCredentialStore) -> AuthorizationManager {
    let mut manager = AuthorizationManager::new(base).await.unwrap();
    let resolution = manager.resolve_metadata().await.expect("RFC 8414 metadata");
    manager.set_metadata(resolution.metadata);
    manager.set_credential_store(mcp.clone());
    manager
}

/// GETs the authorisation URL like a browser whose user consents, and returns the
/// redirect it is sent to.
async fn play_browser(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(url).send().await.unwrap();
    assert_eq!(
        response.status(),
        302,
        "the authorisation endpoint redirects"
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

fn secret(s: &hive_cred_core::SecretString) -> String {
    // EXPOSE: test assertion on the token value.
    s.expose_secret().to_owned()
}

/// Every file under `dir`, as bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Waits (bounded) until the recorded events hold a `release`.
async fn released(recording: &Recording) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recording.events().iter().any(|(e, _)| e == "release") {
        assert!(
            Instant::now() < deadline,
            "the refresh lock was never released"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_obtained_through_rmcp_are_stored_encrypted_in_the_local_store() {
    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    // No client id given: rmcp registers one (RFC 7591) with the mock server.
    let manager = f.authorize(&mcp, None).await;
    let access = secret(&f.server.latest_access_token().unwrap());
    let refresh = secret(&f.server.current_refresh_token());
    assert_eq!(manager.get_access_token().await.unwrap(), access);
    assert_eq!(f.server.counts().grants, 1);

    // Reopen the store from disk with the same key: the tokens are there.
    let key =
        KeySource::from_lookup(|name| (name == "HIVE_CREDENTIAL_KEY").then(|| f.key_b64.clone()))
            .unwrap();
    let reopened = LocalStorage::open(f.store_dir(), key).await.unwrap();
    let c = reopened
        .load(&CredentialId::new(ID).unwrap())
        .await
        .unwrap()
        .expect("stored on disk");
    assert_eq!(c.credential_type(), CredentialType::OAuth2);
    assert_eq!(secret(c.get_key("access_token").unwrap()), access);
    assert_eq!(secret(c.get_key("refresh_token").unwrap()), refresh);
    let client_id = secret(c.get_key("client_id").unwrap());
    assert!(
        client_id.starts_with("dyn-client-"),
        "the registered client id"
    );
    let expires_at = c.key("access_token").unwrap().expires_at().expect("expiry");
    let left = expires_at - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(55) && left <= chrono::Duration::hours(1));
    assert_eq!(c.account().unwrap().status, AccountStatus::Active);

    // Encrypted at rest: no token appears in any file of the store.
    let files = all_files(&f.store_dir());
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        for token in [&access, &refresh] {
            assert!(!contains(bytes, token), "a token in plain text in {path:?}");
        }
    }

    // A new process (a new manager over the reopened store) starts from the store.
    let store2 = CredentialStore::builder()
        .storage(Arc::new(reopened))
        .build()
        .unwrap();
    let mut manager2 = manager_for(
        &f.server.url("/"),
        &McpCredentialStore::new(&store2, ID).unwrap(),
    )
    .await;
    assert!(manager2.initialize_from_store().await.unwrap());
    assert_eq!(manager2.get_access_token().await.unwrap(), access);
    assert_eq!(
        f.server.counts().arrivals,
        1,
        "no token request from the stored tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_through_rmcp_holds_the_lock_and_stores_the_rotated_refresh_token() {
    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    let manager = f.authorize(&mcp, Some(CLIENT)).await;
    let old_refresh = secret(&f.server.current_refresh_token());
    f.backdate(&mcp).await;
    let before = f.server.counts().arrivals;

    let token = manager.get_access_token().await.unwrap();

    assert_eq!(f.server.counts().arrivals, before + 1, "one token request");
    assert_eq!(token, secret(&f.server.latest_access_token().unwrap()));
    let stored = f.stored().await;
    let rotated = secret(stored.get_key("refresh_token").unwrap());
    assert_ne!(rotated, old_refresh);
    assert_eq!(rotated, secret(&f.server.current_refresh_token()));
    assert_eq!(secret(stored.get_key("access_token").unwrap()), token);
    // The lock was taken before the token request and released after the save.
    released(&f.recording).await;
    let events = f.recording.events();
    assert_eq!(
        events,
        vec![
            ("lock".to_string(), before),
            ("save".to_string(), before + 1),
            ("release".to_string(), before + 1),
        ],
        "lock -> token request -> save -> release"
    );
    assert!(!f.server.counts().revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_refresh_marks_the_credential_as_needing_reauthorisation() {
    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    let manager = f.authorize(&mcp, Some(CLIENT)).await;
    mcp.ensure_authorized().await.unwrap();
    f.backdate(&mcp).await;
    f.server.fail_next(Fault::InvalidGrant);

    let e = manager.get_access_token().await.unwrap_err();
    assert!(matches!(e, AuthError::AuthorizationRequired), "{e:?}");

    let stored = f.stored().await;
    assert!(
        !stored.has_key("refresh_token"),
        "the dead refresh token is gone"
    );
    assert_eq!(stored.account().unwrap().status, AccountStatus::Failed);
    let e = mcp.ensure_authorized().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthorizationRequired);
    assert!(e.action_required().is_some());
    // rmcp now asks for re-authorisation without another token request.
    let arrivals = f.server.counts().arrivals;
    assert!(matches!(
        manager.get_access_token().await,
        Err(AuthError::AuthorizationRequired)
    ));
    assert_eq!(f.server.counts().arrivals, arrivals);

    // Authorising again makes it usable.
    let manager = f.authorize(&mcp, Some(CLIENT)).await;
    mcp.ensure_authorized().await.unwrap();
    assert_eq!(
        f.stored().await.account().unwrap().status,
        AccountStatus::Active
    );
    assert_eq!(
        manager.get_access_token().await.unwrap(),
        secret(&f.server.latest_access_token().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_of_a_replaced_refresh_token_does_not_mark_the_new_one() {
    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    let _manager = f.authorize(&mcp, Some(CLIENT)).await;
    let old = mcp.load().await.unwrap().unwrap();
    // Another process authorised again meanwhile.
    let _again = f.authorize(&f.mcp(), Some(CLIENT)).await;
    mcp.on_refresh_token_rejected(&old).await.unwrap();
    let stored = f.stored().await;
    assert_eq!(
        secret(stored.get_key("refresh_token").unwrap()),
        secret(&f.server.current_refresh_token())
    );
    assert_eq!(stored.account().unwrap().status, AccountStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_keeps_the_rotated_refresh_token_until_it_lands() {
    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    let manager = f.authorize(&mcp, Some(CLIENT)).await;
    let old_refresh = secret(&f.server.current_refresh_token());
    f.backdate(&mcp).await;
    f.recording.fail_saves.store(true, Ordering::SeqCst);

    // The refresh succeeds; its save fails; the new tokens are served from memory.
    let token = manager.get_access_token().await.unwrap();
    assert_eq!(token, secret(&f.server.latest_access_token().unwrap()));
    assert_eq!(
        mcp.unsaved_error().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );
    assert_eq!(
        secret(f.stored().await.get_key("refresh_token").unwrap()),
        old_refresh,
        "storage still holds the spent refresh token"
    );
    assert_eq!(manager.get_access_token().await.unwrap(), token);
    assert_eq!(f.server.counts().grants, 2, "no second refresh");
    // The lock stays held while the rotated token is unsaved.
    assert!(!f.recording.events().iter().any(|(e, _)| e == "release"));

    f.recording.fail_saves.store(false, Ordering::SeqCst);
    assert!(mcp.settle(Duration::from_secs(20)).await, "the save lands");
    assert_eq!(
        secret(f.stored().await.get_key("refresh_token").unwrap()),
        secret(&f.server.current_refresh_token())
    );
    released(&f.recording).await;
    assert!(!f.server.counts().revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_state_expires_and_never_names_the_csrf_token() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let store = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .clock(clock.clone())
        .build()
        .unwrap();
    let states = McpStateStore::new(&store, ID).unwrap();
    let verifier = oauth2_verifier();
    let state: StoredAuthorizationState = serde_json::from_value(serde_json::json!({
        "pkce_verifier": verifier,
        "csrf_token": "csrf-canary-5f3b9c",
        "created_at": 1,
    }))
    .unwrap();
    states.save("csrf-canary-5f3b9c", state).await.unwrap();
    let ids = store.list().await.unwrap();
    assert_eq!(ids.len(), 1);
    assert!(!ids[0].as_str().contains("csrf-canary"));
    let loaded = states.load("csrf-canary-5f3b9c").await.unwrap().unwrap();
    assert_eq!(loaded.pkce_verifier, verifier);
    assert!(states.load("another-state").await.unwrap().is_none());
    assert!(!format!("{states:?} {loaded:?}").contains(&verifier));

    clock.advance(chrono::Duration::minutes(11));
    assert!(states.load("csrf-canary-5f3b9c").await.unwrap().is_none());
    assert!(
        store.list().await.unwrap().is_empty(),
        "expired state deleted"
    );
}

fn oauth2_verifier() -> String {
    format!("verifier-canary-{:032x}", rand::random::<u128>())
}

/// Built on an `AgentRuntime` (the assembled product), the tokens rmcp obtains show in
/// the runtime's audit trail as saves of the credential, and in its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runtime_audits_the_mcp_token_saves() {
    let runtime = hive_cred_runtime::AgentRuntime::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .build()
        .await
        .unwrap();
    let server = MockTokenServer::start(MockConfig::new()).await;
    let mcp = McpCredentialStore::new(&runtime.credential_store, ID).unwrap();
    let mut manager = manager_for(&server.url("/"), &mcp).await;
    manager.set_state_store(McpStateStore::new(&runtime.credential_store, ID).unwrap());
    let session = AuthorizationSession::new(
        manager,
        AuthorizationRequest::new(REDIRECT).with_preregistered_client(CLIENT),
    )
    .await
    .map_err(|(_, e)| e)
    .unwrap();
    let redirect = play_browser(session.get_authorization_url()).await;
    session.handle_callback_url(&redirect).await.unwrap();

    let got = runtime.credential_store.get(ID).await.unwrap();
    assert_eq!(
        secret(got.get_key("access_token").unwrap()),
        secret(&server.latest_access_token().unwrap())
    );
    let saves: Vec<_> = runtime
        .audit_trail()
        .into_iter()
        .filter(|r| r.credential_id == ID && r.operation == "save" && r.outcome == "ok")
        .collect();
    assert_eq!(saves.len(), 1, "one audited save of the tokens");
    let trail = serde_json::to_string(&runtime.audit_trail()).unwrap();
    assert!(!trail.contains(&secret(&server.latest_access_token().unwrap())));
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

/// No token in Debug output, errors, or the TRACE-level log of a whole flow (rmcp's
/// own events included): authorise, refresh, a failed save, a rejected refresh.
/// Current-thread runtime, so every event of the flow reaches the captured subscriber.
#[tokio::test(flavor = "current_thread")]
async fn debug_errors_and_logs_carry_no_token() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    let manager = f.authorize(&mcp, Some(CLIENT)).await;
    let mut tokens = vec![
        secret(&f.server.latest_access_token().unwrap()),
        secret(&f.server.current_refresh_token()),
    ];
    f.backdate(&mcp).await;
    f.recording.fail_saves.store(true, Ordering::SeqCst);
    manager.get_access_token().await.unwrap();
    f.recording.fail_saves.store(false, Ordering::SeqCst);
    assert!(mcp.settle(Duration::from_secs(20)).await);
    tokens.push(secret(&f.server.latest_access_token().unwrap()));
    tokens.push(secret(&f.server.current_refresh_token()));
    f.backdate(&mcp).await;
    f.server.fail_next(Fault::InvalidGrant);
    let rejected = manager.get_access_token().await.unwrap_err();

    let creds = mcp.load().await.unwrap().unwrap();
    // A malformed credential under another id: the error names the id, no value.
    let mut other = CredentialObject::new("mcp-other", CredentialType::OAuth2).unwrap();
    other
        .set_key("access_token", tokens[0].clone(), None)
        .unwrap();
    f.store.save(other).await.unwrap();
    let broken = McpCredentialStore::new(&f.store, "mcp-other").unwrap();
    let e = broken.load().await.unwrap_err();
    let unauthorized = mcp.ensure_authorized().await.unwrap_err();
    let shown = format!(
        "{mcp:?} {creds:?} {e} {e:?} {rejected} {rejected:?} {unauthorized} {unauthorized:?} {:?}",
        McpStateStore::new(&f.store, ID).unwrap()
    );
    assert!(shown.contains(ID) && shown.contains("mcp-other"), "{shown}");
    let log = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("hive_cred::mcp"), "the flow was logged");
    for token in &tokens {
        assert!(!shown.contains(token.as_str()), "{shown}");
        assert!(!log.contains(token.as_str()), "a token in the log");
    }
}

/// The same flow with the tokens in Vault (an OpenBao dev server, started by the
/// workspace's test kit; under `CI=true` a missing `bao` fails the test): obtained,
/// refreshed under Vault's lease lock, rotated refresh token stored.
#[cfg(feature = "vault")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_obtained_through_rmcp_live_in_vault_and_refresh_under_its_lease_lock() {
    use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
    let Some(vault) = hive_cred_vault::testkit::shared() else {
        return;
    };
    let prefix = format!("hive-test/mcp-{:016x}", rand::random::<u64>());
    let config = VaultConfig::new(&vault.addr, VaultAuth::token(vault.root_token.clone()))
        .unwrap()
        .with_path_prefix(&prefix)
        .unwrap();
    let storage = VaultStorage::new(config).await.unwrap();
    assert!(storage.capabilities().lease_lock);
    let f = Fixture::over(
        MockConfig::new(),
        Arc::new(storage),
        tempfile::tempdir().unwrap(),
        String::new(),
    )
    .await;
    let mcp = f.mcp();
    let manager = f.authorize(&mcp, Some(CLIENT)).await;
    let stored = f.stored().await;
    assert_eq!(f.recording.inner.backend_name(), "vault");
    assert_eq!(
        secret(stored.get_key("refresh_token").unwrap()),
        secret(&f.server.current_refresh_token())
    );
    assert_eq!(secret(stored.get_key("client_id").unwrap()), CLIENT);

    let old_refresh = secret(&f.server.current_refresh_token());
    f.backdate(&mcp).await;
    let before = f.server.counts().arrivals;
    let token = manager.get_access_token().await.unwrap();
    assert_eq!(token, secret(&f.server.latest_access_token().unwrap()));
    let rotated = secret(f.stored().await.get_key("refresh_token").unwrap());
    assert_ne!(rotated, old_refresh);
    assert_eq!(rotated, secret(&f.server.current_refresh_token()));
    released(&f.recording).await;
    assert_eq!(
        f.recording.events(),
        vec![
            ("lock".to_string(), before),
            ("save".to_string(), before + 1),
            ("release".to_string(), before + 1),
        ]
    );
}

// ------------------------------------------------------------- two processes

const CHILD_ENV: &str = "HIVE_MCP_CHILD";
const READY: &str = "HIVE_MCP_READY";
const RESULT: &str = "HIVE_MCP_RESULT ";

fn fingerprint(token: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The child's entry point: returns at once unless run as a child. Builds its
/// `AgentRuntime` from the environment, rmcp's manager on its store, waits for the start file, asks rmcp for the
/// access token once and prints its fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_child_process() {
    let Ok(raw) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p: serde_json::Value = serde_json::from_str(&raw).unwrap();
    // The assembled product, as an agent builds it: local store from HIVE_HOME and
    // HIVE_CREDENTIAL_KEY.
    let runtime = hive_cred_runtime::AgentRuntime::from_env().await.unwrap();
    let mcp = McpCredentialStore::new(&runtime.credential_store, ID).unwrap();
    let mut manager = manager_for(p["base"].as_str().unwrap(), &mcp).await;
    assert!(manager.initialize_from_store().await.unwrap());
    println!("{READY}");
    let go = PathBuf::from(p["go"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !go.exists() {
        assert!(Instant::now() < deadline, "start file never appeared");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let token = manager.get_access_token().await.expect("an access token");
    println!("{RESULT}{}", fingerprint(&token));
}

struct Proc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(params: &serde_json::Value, key_b64: &str) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "mcp_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, params.to_string())
            .env("HIVE_HOME", params["home"].as_str().unwrap())
            .env("HIVE_CREDENTIAL_KEY", key_b64)
            .env_remove("HIVE_VAULT_ADDR")
            .env_remove("HIVE_CRED_CONFIG")
            .env_remove("HIVE_CRED_AUDIT_LOG")
            .env_remove("HIVE_CREDENTIAL_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    fn line_with(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("child gave no {prefix:?} line: {e:?}"));
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_owned();
            }
        }
    }

    fn finish(mut self) {
        assert!(self.child.wait().unwrap().success(), "child failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_through_rmcp_make_one_token_request() {
    let f = Fixture::new(MockConfig::new()).await;
    let mcp = f.mcp();
    let _manager = f.authorize(&mcp, Some(CLIENT)).await;
    f.backdate(&mcp).await;
    // The token endpoint takes 200 ms, so the second process arrives mid-refresh.
    f.server.set_delay(Duration::from_millis(200));
    let before = f.server.counts();
    let coord = tempfile::tempdir().unwrap();
    let go = coord.path().join("go");
    let params = serde_json::json!({
        "home": f.dir.path(),
        "base": f.server.url("/"),
        "go": go,
    });
    let procs: Vec<Proc> = (0..2).map(|_| Proc::spawn(&params, &f.key_b64)).collect();
    for p in &procs {
        p.line_with(READY);
    }
    std::fs::write(coord.path().join("go.tmp"), b"go").unwrap();
    std::fs::rename(coord.path().join("go.tmp"), &go).unwrap();
    let prints: Vec<String> = procs.iter().map(|p| p.line_with(RESULT)).collect();
    for p in procs {
        p.finish();
    }

    let after = f.server.counts();
    assert_eq!(after.arrivals - before.arrivals, 1, "one token request");
    assert_eq!(after.grants - before.grants, 1);
    assert_eq!(after.invalid_grants, 0);
    assert!(!after.revoked);
    let latest = fingerprint(&secret(&f.server.latest_access_token().unwrap()));
    assert_eq!(
        prints,
        vec![latest.clone(), latest],
        "both have the new token"
    );
    assert_eq!(
        secret(f.stored().await.get_key("refresh_token").unwrap()),
        secret(&f.server.current_refresh_token()),
        "the rotated refresh token is stored"
    );
}
