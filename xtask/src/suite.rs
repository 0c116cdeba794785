//! `cargo xtask test`: the whole test suite against a real OpenBao dev server.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, note};
use crate::interrupt;
use crate::openbao;

/// Absolute path of the `bao` binary the tests start their servers from
/// (`hive_cred_vault::testkit`).
pub const ENV_BAO_BIN: &str = "HIVE_TEST_BAO_BIN";

/// Find (or install) `bao`, then run `cargo test --workspace --all-features
/// --no-fail-fast <extra>` with `HIVE_TEST_BAO_BIN` set and bao's directory first on
/// `PATH`. The tests start their OpenBao servers themselves (the vault crate's testkit).
pub fn run(root: &Path, extra: &[String]) -> Result<()> {
    interrupt::install()?;
    let bao = openbao::locate_or_install(root)?;
    let oidc_modules = crate::oidc::locate_or_install(root)?;
    let mut test = cmd::cargo();
    test.current_dir(root)
        .args(cargo_test_args(extra))
        .envs(bao_env(&bao)?);
    if let Some(modules) = &oidc_modules {
        test.env(crate::oidc::ENV_MODULES, modules);
    }
    // CI (if set) is inherited unchanged, so live tests fail instead of skipping.
    note(format_args!(
        "{ENV_BAO_BIN}={}{}",
        bao.path.display(),
        match std::env::var("CI") {
            Ok(v) => format!(" CI={v}"),
            Err(_) => String::new(),
        }
    ));
    cmd::run("cargo test", &mut test)
}

/// `HIVE_TEST_BAO_BIN` and a `PATH` with bao's directory first.
pub fn bao_env(bao: &openbao::Bao) -> Result<Vec<(&'static str, OsString)>> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let new_path: OsString = std::env::join_paths(
        std::iter::once(bao.dir().to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .context("building PATH with the bao directory first")?;
    Ok(vec![
        (ENV_BAO_BIN, bao.path.clone().into_os_string()),
        ("PATH", new_path),
    ])
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
    use std::path::PathBuf;

    #[test]
    fn exported_bao_bin_runs_and_comes_first_on_path() {
        let Some(bin) = std::env::var_os(ENV_BAO_BIN) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{ENV_BAO_BIN} is not set under CI=true: run the suite with `cargo xtask test`"
            );
            eprintln!("skipping: {ENV_BAO_BIN} not set (run `cargo xtask test`)");
            return;
        };
        let bin = PathBuf::from(bin);
        assert!(bin.is_absolute() && bin.is_file(), "{}", bin.display());
        let out = std::process::Command::new(&bin)
            .arg("version")
            .output()
            .expect("run bao version");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("OpenBao"));
        let path = std::env::var_os("PATH").expect("PATH");
        let first = std::env::split_paths(&path).next().expect("PATH entry");
        assert_eq!(Some(first.as_path()), bin.parent());
    }
}
