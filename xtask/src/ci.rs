//! `cargo xtask ci`: everything CI checks, in order, failing fast on the first error.
//!
//! 1. `cargo fmt --all -- --check`
//! 2. tidy (repository rules, see [`crate::tidy`])
//! 3. clippy `-D warnings` for each publishable crate with default features,
//!    `--no-default-features` and `--all-features`, then
//!    `cargo clippy --workspace --all-targets --all-features`
//! 4. docs: `cargo doc --workspace --no-deps --all-features` with warnings and broken
//!    intra-doc links denied
//! 5. `cargo xtask test` (the whole suite against a real OpenBao)

use std::path::Path;

use anyhow::{Result, bail};

use crate::cmd::{self, note};
use crate::suite;
use crate::tidy;
use crate::workspace::Workspace;

/// The feature sets each publishable crate must pass clippy with.
pub const FEATURE_SETS: &[(&str, &[&str])] = &[
    ("default features", &[]),
    ("no default features", &["--no-default-features"]),
    ("all features", &["--all-features"]),
];

/// `RUSTDOCFLAGS` for the docs step.
pub const RUSTDOCFLAGS: &str = "-D warnings -D rustdoc::broken_intra_doc_links";

/// Run every CI step; `test_args` go to `cargo test` as in `cargo xtask test`.
pub fn run(root: &Path, test_args: &[String]) -> Result<()> {
    cmd::run(
        "fmt",
        cmd::cargo()
            .current_dir(root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;

    note("[tidy] checking repository rules");
    let violations = tidy::check(root)?;
    if !violations.is_empty() {
        for v in &violations {
            eprintln!("  {v}");
        }
        bail!(
            "tidy failed: {} repository rule violation(s)",
            violations.len()
        );
    }

    let ws = Workspace::load(root)?;
    for name in ws.publish_order()? {
        for (label, flags) in FEATURE_SETS {
            cmd::run(
                &format!("clippy {name} ({label})"),
                cmd::cargo()
                    .current_dir(root)
                    .args(["clippy", "-p", &name])
                    .args(*flags)
                    .args(["--", "-D", "warnings"]),
            )?;
        }
    }
    cmd::run(
        "clippy workspace (all targets, all features)",
        cmd::cargo().current_dir(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    cmd::run(
        "docs",
        cmd::cargo()
            .current_dir(root)
            .env("RUSTDOCFLAGS", RUSTDOCFLAGS)
            .args(["doc", "--workspace", "--no-deps", "--all-features"]),
    )?;

    suite::run(root, test_args)?;
    note("ci: all steps passed");
    Ok(())
}
