//! `cargo xtask release <version> [--execute [--no-publish]] [--allow-dirty]`.
//!
//! Dry run (default): checks, then bumps a temporary copy of the tree and runs
//! `cargo package` (with verification) and `cargo publish --dry-run` on it; the real tree
//! is never written. `--execute`: the same checks and packaging on the real tree, then
//! commits the bump, creates the annotated tag `v<version>` and publishes every crate in
//! dependency order. Every step fails fast, naming the crate and the step.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use anyhow::{Context, Result, bail};
use semver::Version;
use toml_edit::{DocumentMut, Item, Value};

use crate::cmd::{self, note};
use crate::workspace::Workspace;

/// What `cargo xtask release` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The new version, as typed.
    pub version: String,
    /// Really commit, tag and publish.
    pub execute: bool,
    /// Dry run only: tolerate uncommitted changes (to try the flow during development).
    pub allow_dirty: bool,
    /// With `execute`: commit and tag, but leave `cargo publish` to the human.
    pub no_publish: bool,
}

/// Run the release flow at `root`.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    if opts.execute && opts.allow_dirty {
        bail!("--allow-dirty is for dry runs only; commit or stash your changes first");
    }
    let new = parse_version(&opts.version)?;

    // Step: clean tree.
    let dirty = dirty_files(root)?;
    if !dirty.is_empty() {
        if opts.allow_dirty {
            note(format_args!(
                "dry run on a dirty tree ({} changed files), as asked",
                dirty.len()
            ));
        } else {
            bail!(
                "check clean tree: the git tree has uncommitted changes:\n  {}",
                dirty.join("\n  ")
            );
        }
    }

    // Step: version and manifests.
    let manifest_path = root.join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let current = current_version(&manifest)?;
    if new <= current {
        bail!("check version: {new} is not newer than the current version {current}");
    }
    let ws = Workspace::load(root)?;
    for m in ws.publishable() {
        if !m.workspace_version {
            bail!(
                "check manifests: {} does not use `version.workspace = true`; \
                 all crates are released in lockstep",
                m.name
            );
        }
    }
    let internal: BTreeSet<String> = ws.members.iter().map(|m| m.name.clone()).collect();
    let bumped = bump_manifest(&manifest, &new, &internal)?;

    // Step: changelog.
    let changelog =
        fs::read_to_string(root.join("CHANGELOG.md")).context("reading CHANGELOG.md")?;
    if !changelog_has_section(&changelog, &new) {
        bail!(
            "check changelog: CHANGELOG.md has no `## [{new}]` section; move the \
             [Unreleased] entries under `## [{new}] - <date>` first"
        );
    }

    // Step: order.
    let order = ws.publish_order()?;
    note(format_args!(
        "releasing {current} -> {new}; publish order: {}",
        order.join(", ")
    ));

    if opts.no_publish && !opts.execute {
        bail!("--no-publish only makes sense with --execute");
    }
    if opts.execute {
        execute(root, &new, &manifest, &bumped, &order, !opts.no_publish)
    } else {
        dry_run(root, &new, &bumped, &order)
    }
}

fn dry_run(root: &Path, new: &Version, bumped: &str, order: &[String]) -> Result<()> {
    let copy = tempfile::Builder::new()
        .prefix("hive-cred-release-")
        .tempdir()
        .context("creating a temporary directory for the dry run")?;
    copy_tree(root, copy.path())?;
    fs::write(copy.path().join("Cargo.toml"), bumped).context("writing the bumped copy")?;
    note(format_args!(
        "dry run in a temporary copy: {} (the real tree is not touched)",
        copy.path().display()
    ));
    let target = cmd::target_dir(root).join("xtask").join("release");
    package_all(copy.path(), &target, order, false)?;
    note(format_args!(
        "dry run OK. `--execute` would commit \"Release {new}\" (Cargo.toml, Cargo.lock), \
         tag v{new}, and publish {}",
        order.join(", ")
    ));
    Ok(())
}

fn execute(
    root: &Path,
    new: &Version,
    original: &str,
    bumped: &str,
    order: &[String],
    publish: bool,
) -> Result<()> {
    let tag = format!("v{new}");
    let existing = cmd::capture(
        "check tag",
        Command::new("git").current_dir(root).args([
            "rev-parse",
            "-q",
            "--verify",
            &format!("refs/tags/{tag}"),
        ]),
    )?;
    if existing.status.success() {
        bail!("check tag: tag {tag} already exists");
    }
    let manifest_path = root.join("Cargo.toml");
    let lock_path = root.join("Cargo.lock");
    let original_lock = fs::read(&lock_path).ok();
    let restore = || {
        let _ = fs::write(&manifest_path, original);
        if let Some(lock) = &original_lock {
            let _ = fs::write(&lock_path, lock);
        }
    };
    fs::write(&manifest_path, bumped).context("writing the bumped Cargo.toml")?;
    let prepared = cmd::run(
        "update Cargo.lock",
        cmd::cargo()
            .current_dir(root)
            .args(["update", "--workspace"]),
    )
    .and_then(|()| package_all(root, &cmd::target_dir(root), order, true));
    if let Err(e) = prepared {
        restore();
        return Err(e.context("release aborted; Cargo.toml and Cargo.lock restored"));
    }
    cmd::run(
        "git commit",
        Command::new("git").current_dir(root).args([
            "commit",
            "-m",
            &format!("Release {new}"),
            "--",
            "Cargo.toml",
            "Cargo.lock",
        ]),
    )?;
    cmd::run(
        "git tag",
        Command::new("git").current_dir(root).args([
            "tag",
            "-a",
            &tag,
            "-m",
            &format!("hive-cred {new}"),
        ]),
    )?;
    if !publish {
        note(format_args!(
            "committed and tagged {tag}; not published (--no-publish). Publish in this \
             order: {}",
            order
                .iter()
                .map(|c| format!("`cargo publish -p {c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return Ok(());
    }
    let mut published: Vec<&str> = Vec::new();
    for name in order {
        let step = format!("publish {name}");
        if let Err(e) = cmd::run(
            &step,
            cmd::cargo().current_dir(root).args(["publish", "-p", name]),
        ) {
            let done = if published.is_empty() {
                "none".to_owned()
            } else {
                published.join(", ")
            };
            return Err(e.context(format!(
                "release stopped at {name}; already published: {done}. Fix the cause and \
                 publish the remaining crates in order with `cargo publish -p <crate>`"
            )));
        }
        published.push(name);
    }
    note(format_args!(
        "released {new}. Now push: `git push origin HEAD && git push origin {tag}`"
    ));
    Ok(())
}

/// `cargo package` (with verification) then `cargo publish --dry-run --no-verify` for all
/// crates of `order` at once (so each verifies against the others' fresh packages), naming
/// the crate cargo was working on if a step fails.
fn package_all(dir: &Path, target: &Path, order: &[String], allow_dirty: bool) -> Result<()> {
    let mut packages = Vec::new();
    for name in order {
        packages.push("-p".to_owned());
        packages.push(name.clone());
    }
    let dirty: &[&str] = if allow_dirty { &["--allow-dirty"] } else { &[] };
    let mut package = cmd::cargo();
    package
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .arg("package")
        .args(dirty)
        .args(&packages);
    run_tracking_crate("cargo package", &mut package, order)?;
    let mut publish = cmd::cargo();
    publish
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["publish", "--dry-run", "--no-verify"])
        .args(dirty)
        .args(&packages);
    run_tracking_crate("cargo publish --dry-run", &mut publish, order)
}

/// Run a cargo command, echoing its stderr, and on failure name the last of `crates` that
/// its progress lines (Packaging / Verifying / Compiling / Uploading) mentioned.
fn run_tracking_crate(step: &str, command: &mut Command, crates: &[String]) -> Result<()> {
    note(format_args!("[{step}] $ {}", cmd::display(command)));
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{step}: could not start cargo"))?;
    let stderr = child.stderr.take().context("cargo stderr was not piped")?;
    let current: Arc<Mutex<Option<String>>> = Arc::default();
    let reader = {
        let current = Arc::clone(&current);
        let crates = crates.to_vec();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Some(name) = crate_in_progress_line(&line, &crates) {
                    *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(name);
                }
            }
        })
    };
    let status = cmd::wait(step, child);
    let _ = reader.join();
    let status = status?;
    if !status.success() {
        let at = current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "(before the first crate)".to_owned());
        bail!("{step} failed for crate {at} ({})", cmd::describe(status));
    }
    Ok(())
}

/// `Some(crate)` if `line` is a cargo progress line about one of `crates`.
fn crate_in_progress_line(line: &str, crates: &[String]) -> Option<String> {
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    if !matches!(
        verb,
        "Packaging" | "Verifying" | "Compiling" | "Uploading" | "Archiving"
    ) {
        return None;
    }
    let name = words.next()?;
    crates.iter().find(|c| *c == name).cloned()
}

/// Parse and validate a semantic version (a leading `v` is accepted).
pub fn parse_version(text: &str) -> Result<Version> {
    let trimmed = text.strip_prefix('v').unwrap_or(text);
    Version::parse(trimmed).with_context(|| {
        format!(
            "check version: `{text}` is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD])"
        )
    })
}

/// `[workspace.package] version` of a root manifest.
pub fn current_version(manifest: &str) -> Result<Version> {
    let doc: DocumentMut = manifest.parse().context("parsing the root Cargo.toml")?;
    let text = doc
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(Item::as_str)
        .context("the root Cargo.toml has no [workspace.package] version")?;
    Version::parse(text)
        .with_context(|| format!("[workspace.package] version `{text}` is not semver"))
}

/// Set `[workspace.package] version` to `new` and every internal pin in
/// `[workspace.dependencies]` (entries naming a crate in `internal`) to `=new`. Internal
/// entries must carry an exact (`=`) version. Formatting and comments are preserved.
pub fn bump_manifest(manifest: &str, new: &Version, internal: &BTreeSet<String>) -> Result<String> {
    let mut doc: DocumentMut = manifest.parse().context("parsing the root Cargo.toml")?;
    let version = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("package"))
        .and_then(|p| p.get_mut("version"))
        .and_then(Item::as_value_mut)
        .context("the root Cargo.toml has no [workspace.package] version")?;
    replace_keeping_decor(version, new.to_string());

    let mut pinned = 0;
    if let Some(deps) = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("dependencies"))
        .and_then(Item::as_table_like_mut)
    {
        for (key, item) in deps.iter_mut() {
            let Some(table) = item.as_table_like_mut() else {
                continue;
            };
            let name = table
                .get("package")
                .and_then(Item::as_str)
                .unwrap_or(key.get())
                .to_owned();
            if !internal.contains(&name) {
                continue;
            }
            let Some(pin) = table.get_mut("version").and_then(Item::as_value_mut) else {
                bail!(
                    "[workspace.dependencies] {name} has no version; internal crates need `version = \"=X.Y.Z\"`"
                );
            };
            if !pin.as_str().is_some_and(|v| v.starts_with('=')) {
                bail!("[workspace.dependencies] {name} must pin an exact version (`=X.Y.Z`)");
            }
            replace_keeping_decor(pin, format!("={new}"));
            pinned += 1;
        }
    }
    if pinned == 0 {
        bail!("[workspace.dependencies] has no internal crate pins to bump");
    }
    Ok(doc.to_string())
}

fn replace_keeping_decor(slot: &mut Value, text: String) {
    let decor = slot.decor().clone();
    let mut value = Value::from(text);
    *value.decor_mut() = decor;
    *slot = value;
}

/// Whether CHANGELOG.md has a `## [<version>]` heading.
pub fn changelog_has_section(changelog: &str, version: &Version) -> bool {
    let heading = format!("## [{version}]");
    changelog
        .lines()
        .any(|l| l.trim_end().starts_with(&heading))
}

/// Uncommitted changes (`git status --porcelain`, untracked files included).
fn dirty_files(root: &Path) -> Result<Vec<String>> {
    let out = cmd::read(
        "check clean tree",
        Command::new("git")
            .current_dir(root)
            .args(["status", "--porcelain"]),
    )?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Copy the files git would see (tracked and untracked-but-not-ignored) to `dest`.
fn copy_tree(root: &Path, dest: &Path) -> Result<()> {
    let list = cmd::read(
        "list files",
        Command::new("git").current_dir(root).args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]),
    )?;
    for rel in list.split('\0').filter(|s| !s.is_empty()) {
        let from = root.join(rel);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to: PathBuf = dest.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::copy(&from, &to).with_context(|| format!("copying {rel}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal() -> BTreeSet<String> {
        [
            "hive-cred-core",
            "hive-cred-local",
            "hive-cred-vault",
            "hive-cred-oauth",
            "hive-cred-runtime",
            "xtask",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn bump_on_a_copy_of_the_real_manifest_changes_only_version_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("Cargo.toml");
        fs::copy(crate::cmd::project_root().join("Cargo.toml"), &copy).expect("copy manifest");
        let before = fs::read_to_string(&copy).expect("read");
        let old = current_version(&before).expect("current version");
        let new = Version::new(old.major, old.minor + 1, 0);

        let after = bump_manifest(&before, &new, &internal()).expect("bump");
        fs::write(&copy, &after).expect("write copy");

        assert_eq!(current_version(&after).expect("parse"), new);
        let doc: DocumentMut = after.parse().expect("valid toml");
        let deps = doc["workspace"]["dependencies"].as_table().expect("deps");
        let mut pins = 0;
        for (key, item) in deps.iter() {
            if key.starts_with("hive-cred-") {
                assert_eq!(
                    item["version"].as_str(),
                    Some(format!("={new}").as_str()),
                    "{key}"
                );
                pins += 1;
            }
        }
        assert!(pins >= 4, "expected the internal pins, found {pins}");
        // Every other line is byte-for-byte the same.
        let (b, a): (Vec<_>, Vec<_>) = (before.lines().collect(), after.lines().collect());
        assert_eq!(b.len(), a.len());
        for (x, y) in b.iter().zip(&a) {
            if x != y {
                assert_eq!(
                    x.replace(&old.to_string(), &new.to_string()),
                    *y,
                    "only the version may change"
                );
            }
        }
    }

    #[test]
    fn bump_keeps_layout_and_ignores_external_exact_pins() {
        let manifest = "\
[workspace.package]
version = \"0.1.0\" # lockstep

[workspace.dependencies]
hive-cred-core = { path = \"hive-cred-core\", version = \"=0.1.0\" }
renamed = { package = \"hive-cred-local\", path = \"hive-cred-local\", version = \"=0.1.0\" }
serde = { version = \"=1.0.200\" }
";
        let out = bump_manifest(
            manifest,
            &Version::parse("0.2.0-rc.1").expect("v"),
            &internal(),
        )
        .expect("bump");
        assert_eq!(
            out,
            "\
[workspace.package]
version = \"0.2.0-rc.1\" # lockstep

[workspace.dependencies]
hive-cred-core = { path = \"hive-cred-core\", version = \"=0.2.0-rc.1\" }
renamed = { package = \"hive-cred-local\", path = \"hive-cred-local\", version = \"=0.2.0-rc.1\" }
serde = { version = \"=1.0.200\" }
"
        );
    }

    #[test]
    fn bump_refuses_loose_internal_pins() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\n\n[workspace.dependencies]\n\
                        hive-cred-core = { path = \"hive-cred-core\", version = \"0.1\" }\n";
        let err = bump_manifest(manifest, &Version::new(0, 2, 0), &internal()).expect_err("loose");
        assert!(
            err.to_string()
                .contains("hive-cred-core must pin an exact version"),
            "{err}"
        );
    }

    #[test]
    fn bump_requires_the_workspace_version() {
        let err = bump_manifest("[workspace]\n", &Version::new(0, 2, 0), &internal())
            .expect_err("no version");
        assert!(
            err.to_string().contains("[workspace.package] version"),
            "{err}"
        );
    }

    #[test]
    fn versions_are_validated() {
        assert_eq!(parse_version("1.2.3").expect("ok"), Version::new(1, 2, 3));
        assert_eq!(parse_version("v0.2.0").expect("ok"), Version::new(0, 2, 0));
        assert!(parse_version("0.2.0-beta.1+build.5").is_ok());
        for bad in ["1.2", "01.2.3", "1.2.3.4", "latest", ""] {
            let err = parse_version(bad).expect_err(bad);
            assert!(
                err.to_string().contains("is not a semantic version"),
                "{err}"
            );
        }
    }

    #[test]
    fn changelog_section_is_required() {
        let log = "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-01\n### Added\n";
        assert!(changelog_has_section(log, &Version::new(0, 2, 0)));
        assert!(!changelog_has_section(log, &Version::new(0, 2, 1)));
        assert!(!changelog_has_section(
            "## [0.2.0-rc.1]\n",
            &Version::new(0, 2, 0)
        ));
    }

    #[test]
    fn progress_lines_name_the_crate() {
        let crates = vec!["hive-cred-core".to_owned(), "hive-cred-local".to_owned()];
        assert_eq!(
            crate_in_progress_line("   Verifying hive-cred-local v0.2.0 (/x)", &crates),
            Some("hive-cred-local".to_owned())
        );
        assert_eq!(
            crate_in_progress_line("   Compiling serde v1.0.0", &crates),
            None
        );
        assert_eq!(crate_in_progress_line("error: failed", &crates), None);
    }

    #[test]
    fn a_failing_step_names_the_crate() {
        let crates = vec!["hive-cred-core".to_owned(), "hive-cred-vault".to_owned()];
        let mut fake = Command::new("sh");
        fake.args([
            "-c",
            "echo '   Packaging hive-cred-core v0.2.0' >&2; \
             echo '   Packaging hive-cred-vault v0.2.0' >&2; echo 'error: boom' >&2; exit 101",
        ]);
        let err = run_tracking_crate("cargo package", &mut fake, &crates).expect_err("fails");
        assert_eq!(
            err.to_string(),
            "cargo package failed for crate hive-cred-vault (exit code 101)"
        );
    }

    #[test]
    fn copy_tree_copies_tracked_and_new_files_only() {
        let src = tempfile::tempdir().expect("src");
        let dst = tempfile::tempdir().expect("dst");
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .current_dir(src.path())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("git runs")
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        fs::write(src.path().join(".gitignore"), "/target\n").expect("ignore");
        fs::create_dir_all(src.path().join("a/target")).expect("mkdir");
        fs::create_dir_all(src.path().join("target")).expect("mkdir");
        fs::write(src.path().join("a/lib.rs"), "x").expect("write");
        fs::write(src.path().join("target/out"), "build output").expect("write");
        copy_tree(src.path(), dst.path()).expect("copy");
        assert!(dst.path().join("a/lib.rs").is_file());
        assert!(dst.path().join(".gitignore").is_file());
        assert!(!dst.path().join("target/out").exists());
        // The dirty check sees the new files.
        assert_eq!(dirty_files(src.path()).expect("status").len(), 2);
    }
}
