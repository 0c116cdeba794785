//! `cargo xtask test`: the whole test suite against a real OpenBao dev server.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, note};
use crate::interrupt;
use crate::openbao::{self, DevServer};

/// Environment variables the Vault tests read.
pub const ENV_ADDR: &str = "HIVE_TEST_VAULT_ADDR";
/// Root token of the dev server.
pub const ENV_TOKEN: &str = "HIVE_TEST_VAULT_TOKEN";
/// Absolute path of the `bao` binary.
pub const ENV_BAO_BIN: &str = "HIVE_TEST_BAO_BIN";

/// Start OpenBao, run `cargo test --workspace --all-features --no-fail-fast <extra>`,
/// stop OpenBao.
pub fn run(root: &Path, extra: &[String]) -> Result<()> {
    interrupt::install()?;
    let bao = openbao::locate_or_install(root)?;
    let oidc_modules = crate::oidc::locate_or_install(root)?;
    let server = DevServer::start(&bao, &cmd::target_dir(root).join("xtask"))?;

    let path = std::env::var_os("PATH").unwrap_or_default();
    let new_path: OsString = std::env::join_paths(
        std::iter::once(bao.dir().to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .context("building PATH with the bao directory first")?;

    let mut test = cmd::cargo();
    test.current_dir(root)
        .args(cargo_test_args(extra))
        .env(ENV_ADDR, server.url())
        .env(ENV_TOKEN, server.token())
        .env(ENV_BAO_BIN, &bao.path)
        .env("PATH", new_path);
    if let Some(modules) = &oidc_modules {
        test.env(crate::oidc::ENV_MODULES, modules);
    }
    // CI (if set) is inherited unchanged, so live tests fail instead of skipping.
    note(format_args!(
        "{ENV_ADDR}={} {ENV_BAO_BIN}={} {ENV_TOKEN}=<root token>{}",
        server.url(),
        bao.path.display(),
        match std::env::var("CI") {
            Ok(v) => format!(" CI={v}"),
            Err(_) => String::new(),
        }
    ));
    let result = cmd::run("cargo test", &mut test);
    if result.is_err() && !interrupt::requested() {
        note(format_args!(
            "OpenBao log (last lines, pid {}):\n{}",
            server.pid(),
            server.log_tail(15)
        ));
    }
    server.stop();
    result
}

/// `test [--workspace] --all-features --no-fail-fast <extra>`: `--workspace` unless the
/// caller selected packages (`-p`/`--package`) or said `--workspace` already.
pub fn cargo_test_args(extra: &[String]) -> Vec<String> {
    let ours = extra
        .iter()
        .take_while(|a| a.as_str() != "--")
        .collect::<Vec<_>>();
    let selects = ours.iter().any(|a| {
        *a == "-p"
            || *a == "--package"
            || *a == "--workspace"
            || a.starts_with("--package=")
            || (a.starts_with("-p") && a.len() > 2)
    });
    let mut args = vec!["test".to_owned()];
    if !selects {
        args.push("--workspace".to_owned());
    }
    if !ours.iter().any(|a| *a == "--all-features") {
        args.push("--all-features".to_owned());
    }
    // Report every failing test binary, not just the first; the exit code is the same.
    if !ours.iter().any(|a| *a == "--no-fail-fast") {
        args.push("--no-fail-fast".to_owned());
    }
    args.extend(extra.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn whole_workspace_by_default() {
        assert_eq!(
            cargo_test_args(&[]),
            s(&["test", "--workspace", "--all-features", "--no-fail-fast"])
        );
    }

    #[test]
    fn package_selection_drops_workspace() {
        assert_eq!(
            cargo_test_args(&s(&["-p", "hive-cred-core", "--", "--nocapture"])),
            s(&[
                "test",
                "--all-features",
                "--no-fail-fast",
                "-p",
                "hive-cred-core",
                "--",
                "--nocapture"
            ])
        );
        assert_eq!(
            cargo_test_args(&s(&["--package=hive-cred-vault"])),
            s(&[
                "test",
                "--all-features",
                "--no-fail-fast",
                "--package=hive-cred-vault"
            ])
        );
    }

    #[test]
    fn test_binary_args_do_not_count_as_selection() {
        // `-p` after `--` belongs to the test binaries, not to cargo.
        assert_eq!(
            cargo_test_args(&s(&["--", "-p"])),
            s(&[
                "test",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
                "--",
                "-p"
            ])
        );
    }
}

/// Live checks of what `cargo xtask test` exports; they run inside the suite it starts.
#[cfg(test)]
mod live {
    use super::*;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    /// The exported server address, or `None` (skip) outside `cargo xtask test`; under
    /// `CI=true` a missing server is a failure, never a skip.
    fn exported_addr() -> Option<SocketAddr> {
        let Ok(url) = std::env::var(ENV_ADDR) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{ENV_ADDR} is not set under CI=true: run the suite with `cargo xtask test`"
            );
            eprintln!("skipping: {ENV_ADDR} not set (run `cargo xtask test`)");
            return None;
        };
        let hostport = url.strip_prefix("http://").expect("http:// URL");
        Some(hostport.parse().expect("loopback socket address"))
    }

    #[test]
    fn exported_server_is_healthy_on_loopback_with_token_and_bin() {
        let Some(addr) = exported_addr() else { return };
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(openbao::health_status(addr).expect("health answers"), 200);
        let token = std::env::var(ENV_TOKEN).expect("token exported");
        assert!(token.len() >= 16);
        let bin = PathBuf::from(std::env::var_os(ENV_BAO_BIN).expect("bin exported"));
        assert!(bin.is_absolute() && bin.is_file(), "{}", bin.display());
        // bao's directory comes first on PATH.
        let path = std::env::var_os("PATH").expect("PATH");
        let first = std::env::split_paths(&path).next().expect("PATH entry");
        assert_eq!(Some(first.as_path()), bin.parent());
    }

    #[test]
    fn root_token_is_accepted_and_a_wrong_one_is_not() {
        let Some(addr) = exported_addr() else { return };
        let token = std::env::var(ENV_TOKEN).expect("token exported");
        assert_eq!(lookup_self(addr, &token), 200);
        assert_eq!(lookup_self(addr, "hive-xtask-not-the-token"), 403);
    }

    /// `GET /v1/auth/token/lookup-self` status with `token`.
    fn lookup_self(addr: SocketAddr, token: &str) -> u16 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let request = format!(
            "GET /v1/auth/token/lookup-self HTTP/1.1\r\nHost: {addr}\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code")
    }

    /// A second dev server started and dropped here really goes away (Drop guard).
    #[test]
    fn dev_server_is_killed_on_drop() {
        if exported_addr().is_none() {
            return;
        }
        let bin = PathBuf::from(std::env::var_os(ENV_BAO_BIN).expect("bin exported"));
        let dir = tempfile::tempdir().expect("tempdir");
        let bao = openbao::Bao { path: bin };
        let server = DevServer::start(&bao, dir.path()).expect("second server starts");
        let pid = server.pid();
        let addr: SocketAddr = server
            .url()
            .trim_start_matches("http://")
            .parse()
            .expect("addr");
        assert_eq!(openbao::health_status(addr).expect("healthy"), 200);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(server);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still there"
        );
        assert!(openbao::health_status(addr).is_err(), "port still answers");
    }

    /// A panic while the server runs still stops it (the guard drops during unwinding).
    #[test]
    fn dev_server_is_killed_when_its_owner_panics() {
        if exported_addr().is_none() {
            return;
        }
        let bin = PathBuf::from(std::env::var_os(ENV_BAO_BIN).expect("bin exported"));
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::sync::atomic::AtomicU32::new(0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let bao = openbao::Bao { path: bin };
            let server = DevServer::start(&bao, dir.path()).expect("server starts");
            pid.store(server.pid(), std::sync::atomic::Ordering::SeqCst);
            panic!("a test step failed while the server ran");
        }));
        assert!(outcome.is_err());
        let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
        assert_ne!(pid, 0);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
}
