//! The real authorisation server of hive-cred-oauth's `oidc_provider` tests: the npm
//! package `oidc-provider` at a pinned version, installed with npm into
//! `<repo>/.tools/oidc-provider` (gitignored). The tests start it themselves with
//! `node hive-cred-oauth/tests/oidc/server.mjs <node_modules> <port>`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, note};
use crate::openbao::find_on_path;

/// The pinned package.
pub const PACKAGE: &str = "oidc-provider";
/// Its pinned version.
pub const VERSION: &str = "9.13.3";
/// Where it is installed, relative to the repository root.
pub const LOCAL_INSTALL: &str = ".tools/oidc-provider";
/// The `node_modules` directory the tests read.
pub const ENV_MODULES: &str = "HIVE_TEST_OIDC_MODULES";

/// Whether `modules` holds the pinned version.
fn installed(modules: &Path) -> bool {
    fs::read_to_string(modules.join(PACKAGE).join("package.json"))
        .ok()
        .and_then(|text| {
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v.get("version")?.as_str().map(|s| s == VERSION)
        })
        .unwrap_or(false)
}

/// The `node_modules` directory holding the pinned `oidc-provider`, installing it with
/// npm when needed. Without node or npm: an error under `CI=true`, else `None` (the
/// tests then skip with a note).
pub fn locate_or_install(root: &Path) -> Result<Option<PathBuf>> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dir = root.join(LOCAL_INSTALL);
    let modules = dir.join("node_modules");
    if installed(&modules) {
        return Ok(Some(modules));
    }
    let (Some(_node), Some(npm)) = (find_on_path("node"), find_on_path("npm")) else {
        if ci {
            bail!(
                "CI=true: node and npm are required for the oidc-provider tests (install Node.js 20 or later)"
            );
        }
        note("node or npm not found: the oidc-provider tests will be skipped");
        return Ok(None);
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    note(format_args!(
        "installing {PACKAGE}@{VERSION} into {}",
        dir.display()
    ));
    cmd::run(
        "install oidc-provider",
        Command::new(npm)
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args(["--no-audit", "--no-fund", "--no-save", "--loglevel=error"])
            .arg(format!("{PACKAGE}@{VERSION}"))
            .stdin(Stdio::null()),
    )
    .context("could not install oidc-provider with npm")?;
    if !installed(&modules) {
        bail!(
            "npm finished but {} does not hold {PACKAGE}@{VERSION}",
            modules.display()
        );
    }
    Ok(Some(modules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_checks_the_pinned_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path();
        let pkg = tmp.join(PACKAGE);
        fs::create_dir_all(&pkg).expect("temp dir");
        assert!(!installed(tmp));
        fs::write(pkg.join("package.json"), r#"{"version":"1.0.0"}"#).expect("write");
        assert!(!installed(tmp));
        fs::write(
            pkg.join("package.json"),
            format!(r#"{{"version":"{VERSION}"}}"#),
        )
        .expect("write");
        assert!(installed(tmp));
    }
}
