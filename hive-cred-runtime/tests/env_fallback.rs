//! The environment fallback of `AgentRuntime::from_env`, as an agent gets it: the agent
//! is a separate OS process (this test binary re-executed) whose environment holds the
//! local store's location and key, spec variables (`BRAVE_SEARCH_API_KEY`, a user
//! spec's `ACME_TOKEN`), a variable shadowed by a stored credential (`OPENAI_API_KEY`)
//! and the `HIVE_CRED_{ID}__{KEY}` convention. Stored credentials win; the environment
//! fills the gaps; writes, deletes and the cross-process lock still reach the store.
#![cfg(feature = "local")]
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialType, ErrorKind, ExposeSecret,
    testkit,
};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_runtime::{AgentRuntime, CredentialState, NodeSpec};

const CHILD_ENV: &str = "HIVE_FB_CHILD";
const LINE: &str = "HIVE_FB ";
const BRAVE_ENV: &str = "brave-from-env-0123456789";
const OPENAI_ENV: &str = "openai-from-env-0123456789";
const OPENAI_STORED: &str = "openai-stored-0123456789";
const ACME_ENV: &str = "acme-from-env-0123456789";
const NOTION_ENV: &str = "notion-from-env-0123456789";
const BRAVE_SAVED: &str = "brave-saved-by-agent-0123456789";

fn value(c: &CredentialObject, key: &str) -> String {
    // EXPOSE: compared with the test's constants, never printed.
    c.get_key(key).unwrap().expose_secret().to_owned()
}

fn report(what: &str, ok: bool) {
    println!("{LINE}{what} {ok}");
}

/// The agent side. Returns at once unless run as a child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_agent() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let runtime = AgentRuntime::from_env()
        .await
        .expect("from_env in the child");
    let store = &runtime.credential_store;
    report("backend", runtime.backend_name() == "local");

    // A spec's env_var, a user spec's env_var, the HIVE_CRED_ convention.
    let brave = store.get("brave_search").await.unwrap();
    report("brave_from_env", value(&brave, "api_key") == BRAVE_ENV);
    let acme = store.get("acme").await.unwrap();
    report("acme_from_user_spec", value(&acme, "token") == ACME_ENV);
    let notion = store.get("notion").await.unwrap();
    report(
        "notion_from_convention",
        value(&notion, "api_key") == NOTION_ENV,
    );
    // A stored credential wins over its variable.
    let openai = store.get_key("openai", "api_key").await.unwrap();
    // EXPOSE: compared with the test's constant, never printed.
    report(
        "openai_stored_wins",
        openai.expose_secret() == OPENAI_STORED,
    );
    let ids = store.list().await.unwrap();
    report(
        "listed",
        ["brave_search", "acme", "openai"]
            .iter()
            .all(|id| ids.iter().any(|i| i.as_str() == *id)),
    );
    // Values read from the environment are redacted like stored ones.
    report(
        "redacted",
        runtime.redact(&format!("key={BRAVE_ENV}")) == "key=[hive:brave_search.api_key]",
    );
    // A node that declares them starts; preflight (no health check on acme) agrees.
    let started = runtime
        .run_node(
            &NodeSpec::new("search")
                .credential("brave_search")
                .credential("acme"),
            |ctx| async move { Ok::<_, hive_cred_core::Error>(ctx.credentials().len()) },
        )
        .await;
    report("node_started", matches!(started, Ok(2)));
    let pf = runtime
        .preflight(&[NodeSpec::new("crm").credential("acme")])
        .await
        .unwrap();
    report(
        "preflight",
        pf.credential("acme").map(|c| c.state) == Some(CredentialState::Available),
    );
    // A user's view does not see the deployment's environment.
    let alice = store.for_user("alice").unwrap();
    report(
        "user_view_without_env",
        alice.get("brave_search").await.unwrap_err().kind() == ErrorKind::NotFound,
    );

    // The storage under the runtime keeps the backend's lock and conforms, env layer
    // and all, across two agents of this process.
    let other = AgentRuntime::from_env().await.unwrap();
    let (sa, sb) = (store.storage(), other.credential_store.storage());
    report("lock_declared", sa.capabilities().cross_process_lock);
    testkit::lock_conformance(&**sa, &**sb, Duration::from_secs(5)).await;
    testkit::run_all(&**sa).await;
    report("conformance", true);

    // Writes go to the store: replacing the env credential stores it (then it wins),
    // deleting it lets the variable show through again.
    let mut mine = CredentialObject::new("brave_search", CredentialType::ApiKey).unwrap();
    mine.set_key("api_key", BRAVE_SAVED, None).unwrap();
    store.upsert(mine).await.unwrap();
    store.clear_cache();
    let again = store.get("brave_search").await.unwrap();
    report("saved_wins", value(&again, "api_key") == BRAVE_SAVED);
    let mut temp = CredentialObject::new("notion", CredentialType::ApiKey).unwrap();
    temp.set_key("api_key", "notion-stored-0123456789", None)
        .unwrap();
    store.upsert(temp).await.unwrap();
    report("deleted", store.delete("notion").await.unwrap());
    let back = store.get("notion").await.unwrap();
    report("env_shows_through", value(&back, "api_key") == NOTION_ENV);
    println!("{LINE}done true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_reads_spec_variables_under_the_stored_credentials() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };
    let dir = home.path().join("credentials");
    let open = || {
        let key = key.clone();
        let dir = dir.clone();
        async move {
            LocalStorage::open(
                &dir,
                KeySource::from_lookup(|n| (n == "HIVE_CREDENTIAL_KEY").then(|| key.clone()))
                    .unwrap(),
            )
            .await
            .unwrap()
        }
    };
    let local = open().await;
    let mut openai = CredentialObject::new("openai", CredentialType::ApiKey).unwrap();
    openai.set_key("api_key", OPENAI_STORED, None).unwrap();
    local.save(&openai).await.unwrap();
    drop(local);

    let specs = home.path().join("specs.toml");
    std::fs::write(
        &specs,
        r#"
[[credentials]]
id = "acme"
description = "ACME CRM token"
credential_type = "bearer_token"
required_keys = ["token"]
env_var = "ACME_TOKEN"
"#,
    )
    .unwrap();
    let config = home.path().join("hive.toml");
    std::fs::write(
        &config,
        format!("specs = [{:?}]\n", specs.display().to_string()),
    )
    .unwrap();

    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_agent", "--nocapture", "--test-threads=1"]);
    // The child sees only what this test sets (plus PATH for nothing in particular).
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(CHILD_ENV, "1")
        .env("HIVE_HOME", home.path())
        .env("HIVE_CREDENTIAL_KEY", &key)
        .env("HIVE_CRED_CONFIG", &config)
        .env("BRAVE_SEARCH_API_KEY", BRAVE_ENV)
        .env("OPENAI_API_KEY", OPENAI_ENV)
        .env("ACME_TOKEN", ACME_ENV)
        .env("HIVE_CRED_NOTION__API_KEY", NOTION_ENV);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find(LINE).map(|at| &l[at + LINE.len()..]))
        .collect();
    for what in [
        "backend",
        "brave_from_env",
        "acme_from_user_spec",
        "notion_from_convention",
        "openai_stored_wins",
        "listed",
        "redacted",
        "node_started",
        "preflight",
        "user_view_without_env",
        "lock_declared",
        "conformance",
        "saved_wins",
        "deleted",
        "env_shows_through",
        "done",
    ] {
        assert!(
            lines.contains(&format!("{what} true").as_str()),
            "{what}: {lines:?}\n{stderr}"
        );
    }
    // No value from the environment reached the child's output.
    for secret in [BRAVE_ENV, OPENAI_ENV, ACME_ENV, NOTION_ENV, BRAVE_SAVED] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }

    // The store holds what the agent saved, and nothing it only read from variables.
    let local = Arc::new(open().await);
    let brave = local
        .load(&CredentialId::new("brave_search").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value(&brave, "api_key"), BRAVE_SAVED);
    for id in ["acme", "notion"] {
        assert!(
            local
                .load(&CredentialId::new(id).unwrap())
                .await
                .unwrap()
                .is_none(),
            "{id} copied into the store"
        );
    }
}
