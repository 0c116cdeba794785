//! Support for the multi-process refresh tests: the strict token endpoint, the shared
//! OpenBao server, and both sides of the parent/child protocol.
//!
//! Children are this test binary re-executed with `--exact <child test> --nocapture
//! --test-threads=1` and [`PARAMS_ENV`] holding their [`Params`] as JSON; the child tests
//! return at once when it is absent. A child builds its `AgentRuntime` the way an agent
//! does, with `AgentRuntime::from_env()` (backend, key and config file from the
//! environment [`Proc::spawn`] sets; only the shared-file-clock variant assembles the
//! same runtime with `AgentRuntime::builder()` to inject the clock), prints
//! `HIVE_CR_READY`, waits for the start file of a round to appear (all children start at
//! the same moment), runs its tasks' `get`s concurrently and prints one
//! `HIVE_CR_RESULT {json}` line per round. Token values are never printed: only
//! fingerprints (a 64-bit hash, see [`fingerprint`]) and whether all tasks agreed.

pub mod endpoint;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use hive_cred_core::{
    Clock, CredentialObject, CredentialStorage, CredentialStore, CredentialType, ExposeSecret,
    SystemClock,
};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_runtime::{AgentRuntime, Backend as RuntimeBackend, RuntimeConfig};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
use serde::{Deserialize, Serialize};

/// The environment variable carrying a child's parameters.
pub const PARAMS_ENV: &str = "HIVE_CR_CHILD_PARAMS";
/// The provider id of the strict endpoint.
pub const PROVIDER: &str = "strict";
const READY: &str = "HIVE_CR_READY";
const RESULT: &str = "HIVE_CR_RESULT ";

/// A 64-bit fingerprint of a token, to compare tokens across processes without printing
/// them. Parent and children are the same binary, so `DefaultHasher::new()` agrees.
pub fn fingerprint(token: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    format!("{:016x}", h.finish())
}

pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// Where the children's credential lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Backend {
    /// `LocalStorage` in `dir` (`$HIVE_HOME/credentials`); the raw key comes in
    /// `HIVE_CREDENTIAL_KEY`.
    Local { dir: PathBuf },
    /// `VaultStorage` at `addr` under `prefix`.
    Vault {
        addr: String,
        token: String,
        prefix: String,
    },
}

/// One child's instructions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub backend: Backend,
    pub token_url: String,
    pub id: String,
    /// Holds the `go-{round}` start files and the `clock` file.
    pub coord_dir: PathBuf,
    /// Concurrent `get`s per round.
    pub tasks: usize,
    /// The rounds this child takes part in, `first..end`.
    pub rounds: (u32, u32),
    pub lock_ttl_secs: u64,
    pub window_secs: i64,
    /// `[refresh] min_interval_secs` (the default when `None`).
    pub min_interval_secs: Option<u64>,
    /// The OAuth2 provider's request timeout (`timeout_secs`).
    pub provider_timeout_secs: u64,
    /// The Vault request timeout (`HIVE_VAULT_TIMEOUT`), in milliseconds.
    pub vault_timeout_ms: u64,
    /// Read the time from `coord_dir/clock` (Unix millis) instead of the system clock.
    pub file_clock: bool,
}

/// What a child reports for one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundResult {
    pub round: u32,
    pub ok: usize,
    /// Error kind -> count.
    pub errors: BTreeMap<String, usize>,
    /// Every successful task got the same access token.
    pub same: bool,
    /// Fingerprint of that access token.
    pub fingerprint: Option<String>,
    /// Every returned access token was unexpired by the store's clock.
    pub unexpired: bool,
    /// Wall time (Unix nanos) when the round's start file appeared for this child.
    pub started_unix_nanos: u128,
    /// Wall time when all tasks had finished.
    pub done_unix_nanos: u128,
}

/// A clock shared by processes: the Unix millis in a file the parent rewrites.
#[derive(Debug)]
pub struct FileClock {
    path: PathBuf,
}

impl FileClock {
    pub fn new(coord_dir: &Path) -> Self {
        FileClock {
            path: coord_dir.join("clock"),
        }
    }

    /// Sets the shared time (atomically: write, then rename).
    pub fn set(coord_dir: &Path, t: DateTime<Utc>) {
        let tmp = coord_dir.join(format!("clock.tmp-{}", std::process::id()));
        std::fs::write(&tmp, t.timestamp_millis().to_string()).expect("write clock");
        std::fs::rename(&tmp, coord_dir.join("clock")).expect("publish clock");
    }
}

impl Clock for FileClock {
    fn now(&self) -> DateTime<Utc> {
        let text = std::fs::read_to_string(&self.path).expect("read the shared clock file");
        let ms: i64 = text.trim().parse().expect("clock file holds Unix millis");
        DateTime::from_timestamp_millis(ms).expect("clock in range")
    }
}

// ---------------------------------------------------------------- child side

/// The child's runtime: `AgentRuntime::from_env()`, or with the shared file clock the
/// same pieces (`Backend::select`/`open`, the config file) assembled with the clock.
async fn child_runtime(p: &Params) -> (CredentialStore, Arc<dyn Clock>) {
    if !p.file_clock {
        let runtime = AgentRuntime::from_env()
            .await
            .expect("AgentRuntime::from_env in the child");
        return (runtime.credential_store.clone(), Arc::new(SystemClock));
    }
    let clock: Arc<dyn Clock> = Arc::new(FileClock::new(&p.coord_dir));
    let env = |name: &str| std::env::var(name).ok();
    let backend = RuntimeBackend::select(&env, None).expect("backend from the environment");
    let storage = backend.open(&env).await.expect("open the backend");
    let config = RuntimeConfig::load(std::env::var("HIVE_CRED_CONFIG").expect("config path"))
        .expect("the child's config file");
    let runtime = AgentRuntime::builder()
        .storage(storage)
        .config(config)
        .clock(clock.clone())
        .build()
        .await
        .expect("build the runtime");
    (runtime.credential_store.clone(), clock)
}

/// The runtime config file a child reads (`HIVE_CRED_CONFIG`).
fn config_toml(p: &Params) -> String {
    let mut refresh = format!(
        "window_secs = {}\nlock_ttl_secs = {}\nlock_wait_secs = 70\n",
        p.window_secs, p.lock_ttl_secs
    );
    if let Some(m) = p.min_interval_secs {
        refresh.push_str(&format!("min_interval_secs = {m}\n"));
    }
    format!(
        "[refresh]\n{refresh}\n[[providers]]\nprovider_id = \"{PROVIDER}\"\ntoken_url = \"{}\"\nclient_id = \"hive-coordinated-refresh\"\ntimeout_secs = {}\n",
        p.token_url, p.provider_timeout_secs
    )
}

fn go_file(coord_dir: &Path, round: u32) -> PathBuf {
    coord_dir.join(format!("go-{round}"))
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !path.exists() {
        assert!(Instant::now() < deadline, "start file never appeared");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The body of the child tests: runs when [`PARAMS_ENV`] is set.
pub async fn run_child() {
    let Ok(raw) = std::env::var(PARAMS_ENV) else {
        return;
    };
    let p: Params = serde_json::from_str(&raw).expect("child params");
    let (store, clock) = child_runtime(&p).await;
    println!("{READY}");
    for round in p.rounds.0..p.rounds.1 {
        wait_for_file(&go_file(&p.coord_dir, round)).await;
        let started_unix_nanos = unix_nanos();
        let mut tasks = Vec::with_capacity(p.tasks);
        for _ in 0..p.tasks {
            let (store, id) = (store.clone(), p.id.clone());
            tasks.push(tokio::spawn(async move { store.get(&id).await }));
        }
        let mut errors = BTreeMap::new();
        let mut prints = Vec::new();
        let mut unexpired = true;
        for t in tasks {
            match t.await.expect("get task") {
                Ok(c) => {
                    let key = c.key("access_token").expect("an access token");
                    unexpired &= !key.is_expired_at(clock.now());
                    // EXPOSE: hashed into a fingerprint, never printed.
                    prints.push(fingerprint(key.value().expose_secret()));
                }
                Err(e) => *errors.entry(e.kind().as_str().to_owned()).or_insert(0) += 1,
            }
        }
        let done_unix_nanos = unix_nanos();
        let result = RoundResult {
            round,
            ok: prints.len(),
            errors,
            same: prints.windows(2).all(|w| w[0] == w[1]),
            fingerprint: prints.first().cloned(),
            unexpired,
            started_unix_nanos,
            done_unix_nanos,
        };
        println!(
            "{RESULT}{}",
            serde_json::to_string(&result).expect("encode result")
        );
    }
}

// ---------------------------------------------------------------- parent side

/// A running child process and its stdout lines.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts the child test `test` with `params`.
    pub fn spawn(test: &str, params: &Params, key_b64: Option<&str>) -> Proc {
        let config = params
            .coord_dir
            .join(format!("config-{:016x}.toml", rand::random::<u64>()));
        std::fs::write(&config, config_toml(params)).expect("write the child's config file");
        let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(PARAMS_ENV, serde_json::to_string(params).expect("params"))
            .env("HIVE_CRED_CONFIG", &config)
            .env_remove("HIVE_CREDENTIAL_PASSPHRASE")
            .env_remove("HIVE_CRED_AUDIT_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(k) = key_b64 {
            cmd.env("HIVE_CREDENTIAL_KEY", k);
        }
        match &params.backend {
            Backend::Local { dir } => {
                cmd.env(
                    "HIVE_HOME",
                    dir.parent()
                        .expect("the store sits in $HIVE_HOME/credentials"),
                )
                .env_remove("HIVE_VAULT_ADDR");
            }
            Backend::Vault {
                addr,
                token,
                prefix,
            } => {
                cmd.env("HIVE_VAULT_ADDR", addr)
                    .env("HIVE_VAULT_TOKEN", token)
                    .env("HIVE_VAULT_PATH", prefix)
                    .env(
                        "HIVE_VAULT_TIMEOUT",
                        format!("{}ms", params.vault_timeout_ms),
                    );
            }
        }
        let mut child = cmd.spawn().expect("spawn a child test process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
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

    fn next_line_with(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest may print "test child_process ... " on the same line first.
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_owned();
                    }
                }
                Err(e) => panic!("child gave no {prefix:?} line: {e:?}"),
            }
        }
    }

    /// Blocks until the child has built its store.
    pub fn wait_ready(&self) {
        self.next_line_with(READY, Duration::from_secs(120));
    }

    /// Blocks until the child reports a round.
    pub fn result(&self) -> RoundResult {
        let line = self.next_line_with(RESULT, Duration::from_secs(180));
        serde_json::from_str(&line[RESULT.len()..]).expect("child result JSON")
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the child");
        let _ = self.child.wait();
    }

    /// Waits for a normal exit and checks it succeeded.
    pub fn finish(mut self) {
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "child failed: {status}");
    }
}

/// Starts round `round`: every child waiting for it starts now.
pub fn go(coord_dir: &Path, round: u32) -> u128 {
    let at = unix_nanos();
    let tmp = coord_dir.join(format!("go-{round}.tmp"));
    std::fs::write(&tmp, at.to_string()).expect("write start file");
    std::fs::rename(&tmp, go_file(coord_dir, round)).expect("publish start file");
    at
}

/// The seeded credential: an expired access token and the family's refresh token.
pub fn seed_credential(id: &str, refresh_token: String, now: DateTime<Utc>) -> CredentialObject {
    let mut c = CredentialObject::builder(id, CredentialType::OAuth2)
        .provider_id(PROVIDER)
        .auto_refresh(true)
        .build()
        .expect("valid id");
    c.set_key(
        "access_token",
        "seed-access-token",
        Some(now - chrono::Duration::minutes(1)),
    )
    .expect("key");
    c.set_key("refresh_token", refresh_token, None)
        .expect("key");
    c
}

/// The parent's view of the shared storage, plus what children need to open it.
pub struct Shared {
    pub storage: Arc<dyn CredentialStorage>,
    pub backend: Backend,
    pub key_b64: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh local store in a temp dir with a random raw key.
pub async fn local_shared() -> Shared {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("credentials");
    let (key, b64) = KeySource::generate().expect("generate a key");
    let storage = LocalStorage::open(&store_dir, key)
        .await
        .expect("open local store");
    Shared {
        storage: Arc::new(storage),
        backend: Backend::Local { dir: store_dir },
        // EXPOSE: handed to the child processes in HIVE_CREDENTIAL_KEY, as an operator would.
        key_b64: Some(b64.expose_secret().to_owned()),
        _dir: Some(dir),
    }
}

/// A fresh prefix on the shared OpenBao server; `None` when skipped.
pub async fn vault_shared() -> Option<Shared> {
    let vault = hive_cred_vault::testkit::shared()?;
    Some(vault_shared_at(vault).await)
}

/// A fresh prefix on the server(s) of `vault` (`addr` may list a cluster's nodes).
pub async fn vault_shared_at(vault: hive_cred_vault::testkit::Target) -> Shared {
    let prefix = format!("hive-test/coordinated-{:016x}", rand::random::<u64>());
    let config = VaultConfig::new(&vault.addr, VaultAuth::token(vault.root_token.clone()))
        .expect("address")
        .with_path_prefix(&prefix)
        .expect("prefix");
    let storage = VaultStorage::new(config).await.expect("connect to Vault");
    Shared {
        storage: Arc::new(storage),
        backend: Backend::Vault {
            addr: vault.addr,
            token: vault.root_token,
            prefix,
        },
        key_b64: None,
        _dir: None,
    }
}

/// Median and max of some durations, in milliseconds.
pub fn median_max_ms(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(*v.last().expect("non-empty")))
}
