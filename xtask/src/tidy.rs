//! Repository rules, checked by an ordinary `#[test]` (and by `cargo xtask ci` first):
//!
//! - every workspace member has a `README.md` and `[lints] workspace = true`;
//! - every publishable member takes its version from `[workspace.package]` (lockstep),
//!   and its `src/lib.rs` takes its crate docs from the README;
//! - every call of secrecy's `expose_secret` in a `*.rs` file of the repository (outside `target/`,
//!   `fuzz/target/` and `.tools/`) has a comment containing `EXPOSE:` on the same line or
//!   within the [`EXPOSE_WINDOW`] lines above.
//!
//! `unwrap()` is not checked here: clippy's `unwrap_used` (denied in the workspace lints)
//! does that.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::workspace::Workspace;

/// How many lines above a call its `EXPOSE:` comment may be.
pub const EXPOSE_WINDOW: usize = 3;

/// Directories never scanned for sources.
const SKIP_DIRS: &[&str] = &["target", ".git", ".tools", "node_modules"];

/// One broken rule, at a file and (if it applies) a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path relative to the repository root.
    pub path: PathBuf,
    /// 1-based line, if the rule is about a line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Check every rule on the repository at `root`.
pub fn check(root: &Path) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    let workspace = Workspace::load(root)?;
    for member in &workspace.members {
        let rel = member.dir.strip_prefix(root).unwrap_or(&member.dir);
        if !member.dir.join("README.md").is_file() {
            out.push(Violation {
                path: rel.join("README.md"),
                line: None,
                message: "every crate needs a README.md".into(),
            });
        }
        if !member.workspace_lints {
            out.push(Violation {
                path: rel.join("Cargo.toml"),
                line: None,
                message: "missing `[lints] workspace = true`".into(),
            });
        }
        if member.publish {
            if !member.workspace_version {
                out.push(Violation {
                    path: rel.join("Cargo.toml"),
                    line: None,
                    message: "publishable crates use `version.workspace = true` (lockstep)".into(),
                });
            }
            let lib = member.dir.join("src/lib.rs");
            if let Ok(text) = fs::read_to_string(&lib)
                && !text.contains("include_str!(\"../README.md\")")
            {
                out.push(Violation {
                    path: rel.join("src/lib.rs"),
                    line: None,
                    message: "crate docs come from the README: \
                                  `#![doc = include_str!(\"../README.md\")]`"
                        .into(),
                });
            }
        }
    }
    for file in rust_files(root)? {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(&file);
        for line in unmarked_exposes(&text) {
            out.push(Violation {
                path: rel.to_path_buf(),
                line: Some(line),
                message: format!(
                    "expose_secret() without an `// EXPOSE: why` comment on the line or \
                     the {EXPOSE_WINDOW} lines above"
                ),
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    Ok(out)
}

/// All `*.rs` files under `root`, skipping build output and tool installs.
fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let kind = entry
                .file_type()
                .with_context(|| format!("reading {}", path.display()))?;
            if kind.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    stack.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// 1-based lines of `text` that call `expose_secret(` (as a method or through a path)
/// without an `EXPOSE:` comment on that line or the [`EXPOSE_WINDOW`] lines above.
/// Plain `//` comment lines are prose, not calls; doc comments count (their examples
/// are code).
pub fn unmarked_exposes(text: &str) -> Vec<usize> {
    // Built at run time so this file does not flag itself.
    let call = format!("{}_{}(", "expose", "secret");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") && !trimmed.starts_with("///") && !trimmed.starts_with("//!") {
            continue;
        }
        let doc = trimmed.starts_with("///") || trimmed.starts_with("//!");
        let is_call = line.match_indices(&call).any(|(at, _)| {
            let before = &line[..at];
            // In doc prose, a call written inside an inline code span is a mention.
            let in_code_span = doc && before.matches('`').count() % 2 == 1;
            (before.ends_with('.') || before.ends_with("::")) && !in_code_span
        });
        if !is_call {
            continue;
        }
        let first = i.saturating_sub(EXPOSE_WINDOW);
        let marked = lines[first..=i].iter().any(|l| has_expose_comment(l));
        if !marked {
            out.push(i + 1);
        }
    }
    out
}

fn has_expose_comment(line: &str) -> bool {
    match line.find("//") {
        Some(at) => line[at..].contains("EXPOSE:"),
        None => line.contains("/*") && line.contains("EXPOSE:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository rules hold for this checkout.
    #[test]
    fn tidy() {
        let root = crate::cmd::project_root();
        let violations = check(&root).expect("tidy can read the repository");
        assert!(
            violations.is_empty(),
            "{} repository rule violation(s):\n{}",
            violations.len(),
            violations
                .iter()
                .map(|v| format!("  {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn call() -> String {
        format!(".{}_{}()", "expose", "secret")
    }

    #[test]
    fn expose_with_comment_above_or_inline_passes() {
        let c = call();
        let text = format!(
            "// EXPOSE: header value for the request\nlet v = key{c};\n\
             let w = key{c}; // EXPOSE: compared in constant time\n"
        );
        assert_eq!(unmarked_exposes(&text), Vec::<usize>::new());
    }

    #[test]
    fn expose_window_is_three_lines() {
        let c = call();
        let ok = format!("// EXPOSE: why\na\nb\nlet v = k{c};\n");
        assert!(unmarked_exposes(&ok).is_empty());
        let too_far = format!("// EXPOSE: why\na\nb\nc\nlet v = k{c};\n");
        assert_eq!(unmarked_exposes(&too_far), vec![5]);
    }

    #[test]
    fn unmarked_calls_are_reported_with_their_lines() {
        let c = call();
        let path_call = format!("{}::{}_{}(&k)", "ExposeSecret", "expose", "secret");
        let text = format!("fn f() {{\n    let v = k{c};\n    let w = {path_call};\n}}\n");
        assert_eq!(unmarked_exposes(&text), vec![2, 3]);
    }

    #[test]
    fn prose_and_definitions_are_not_calls() {
        let text = format!(
            "// call {c} only when needed\nfn {n}(&self) -> &str {{ todo }}\n",
            c = call(),
            n = format_args!("{}_{}", "expose", "secret")
        );
        assert!(unmarked_exposes(&text).is_empty());
    }

    #[test]
    fn comment_must_say_expose() {
        let text = format!("// returns the header\nlet v = k{};\n", call());
        assert_eq!(unmarked_exposes(&text), vec![2]);
    }

    #[test]
    fn doc_examples_count_as_code_but_inline_mentions_do_not() {
        let text = format!("/// let v = k{};\n", call());
        assert_eq!(unmarked_exposes(&text), vec![1]);
        let mention = format!("/// Never call `{}` in a log line.\n", call());
        assert!(unmarked_exposes(&mention).is_empty());
    }

    #[test]
    fn test_code_is_checked_too() {
        let text = format!(
            "let a = k{c};\n#[cfg(test)]\nmod tests {{ let b = k{c}; }}\n",
            c = call()
        );
        assert_eq!(unmarked_exposes(&text), vec![1, 3]);
    }

    #[test]
    fn check_reports_missing_readme_lints_and_exposes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::write(
            root.join("Cargo.toml"),
            "[workspace]\nmembers = [\"good\", \"bad\"]\n\n[workspace.package]\nversion = \"0.1.0\"\n",
        )
        .expect("write root");
        for (name, lints) in [("good", "\n[lints]\nworkspace = true\n"), ("bad", "")] {
            let dir = root.join(name);
            fs::create_dir_all(dir.join("src")).expect("mkdir");
            fs::write(
                dir.join("Cargo.toml"),
                format!("[package]\nname = \"{name}\"\nversion.workspace = true\n{lints}"),
            )
            .expect("write manifest");
        }
        fs::write(root.join("good/README.md"), "# good\n").expect("readme");
        fs::write(
            root.join("good/src/lib.rs"),
            "#![doc = include_str!(\"../README.md\")]\n",
        )
        .expect("lib");
        fs::write(
            root.join("bad/src/lib.rs"),
            format!("//! bad\nfn f() {{\n    k{};\n}}\n", call()),
        )
        .expect("lib");
        // Sources under target/ are build output and never checked.
        fs::create_dir_all(root.join("target/debug")).expect("mkdir target");
        fs::write(root.join("target/debug/gen.rs"), format!("k{};\n", call())).expect("gen");

        let found: Vec<String> = check(root)
            .expect("check")
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            found,
            vec![
                "bad/Cargo.toml: missing `[lints] workspace = true`".to_string(),
                "bad/README.md: every crate needs a README.md".to_string(),
                "bad/src/lib.rs: crate docs come from the README: \
                 `#![doc = include_str!(\"../README.md\")]`"
                    .to_string(),
                format!(
                    "bad/src/lib.rs:3: expose_secret() without an `// EXPOSE: why` comment \
                     on the line or the {EXPOSE_WINDOW} lines above"
                ),
            ]
        );
    }
}
