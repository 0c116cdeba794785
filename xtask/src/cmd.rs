//! Running child processes as named steps, and locating the project.
//!
//! Every external command runs through [`run`], which waits for the child while watching
//! for Ctrl-C / SIGTERM (see [`crate::interrupt`]) and turns a failure into an error that
//! names the step.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::interrupt;

/// How often a waiting loop polls its child and the interrupt flag.
pub const POLL: Duration = Duration::from_millis(50);

/// How long a child gets after SIGTERM before it is killed outright.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The repository root (the directory holding the workspace `Cargo.toml`).
pub fn project_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        _ => root.join("target"),
    }
}

/// The cargo executable that started us (`$CARGO`), or `cargo` from PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Print a progress line (stderr, so stdout stays for reports such as the bench table).
pub fn note(message: impl std::fmt::Display) {
    eprintln!("xtask: {message}");
}

/// Run `cmd` with inherited stdio as the step `step`; fail naming the step unless it
/// exits 0. Returns early (killing the child) if the user interrupts.
pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    note(format_args!("[{step}] $ {}", display(cmd)));
    let child = cmd
        .spawn()
        .with_context(|| format!("{step}: could not start `{}`", program(cmd)))?;
    let status = wait(step, child)?;
    if !status.success() {
        bail!("{step} failed ({})", describe(status));
    }
    Ok(())
}

/// Run `cmd` quietly and capture its output (for short queries such as `git status`).
/// Fails naming the step if it cannot start; the caller judges the exit status.
pub fn capture(step: &str, cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("{step}: could not start `{}`", program(cmd)))
}

/// Like [`capture`], but also fails (with stderr in the message) on a non-zero exit, and
/// returns stdout as text.
pub fn read(step: &str, cmd: &mut Command) -> Result<String> {
    let out = capture(step, cmd)?;
    if !out.status.success() {
        bail!(
            "{step} failed ({}): {}",
            describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{step}: output is not UTF-8"))
}

/// Wait for `child`, polling so that an interrupt is noticed. On interrupt the child gets
/// SIGTERM, then SIGKILL after a grace period, and the error says the step was interrupted.
pub fn wait(step: &str, mut child: Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("{step}: waiting for the child process"))?
        {
            // A terminal Ctrl-C reaches the child too; report that as an interrupt.
            if !status.success() && interrupt::requested() {
                bail!(interrupt::Interrupted {
                    step: step.to_owned()
                });
            }
            return Ok(status);
        }
        if interrupt::requested() {
            terminate(&mut child);
            bail!(interrupt::Interrupted {
                step: step.to_owned()
            });
        }
        thread::sleep(POLL);
    }
}

/// Ask `child` to stop (SIGTERM via the `kill` utility, no unsafe code needed), then kill
/// it if it is still running after a grace period. Always reaps it.
pub fn terminate(child: &mut Child) {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if sent {
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
    }
    // Already-exited children make kill() fail harmlessly; wait() reaps either way.
    let _ = child.kill();
    let _ = child.wait();
}

/// "exit code 101", "killed by signal 9", ...
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// The command line as one readable string (environment not included).
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![program(cmd)];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn program(cmd: &Command) -> String {
    quote(cmd.get_program())
}

fn quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_when_needed() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--all-features", "a b", "it's", ""]);
        assert_eq!(
            display(&cmd),
            r"cargo test --all-features 'a b' 'it'\''s' ''"
        );
    }

    #[test]
    fn run_names_the_failing_step() {
        let err = run("false-step", Command::new("false").stdin(Stdio::null()))
            .expect_err("`false` exits 1");
        let msg = format!("{err:#}");
        assert!(msg.contains("false-step failed (exit code 1)"), "{msg}");
    }

    #[test]
    fn run_reports_a_missing_program() {
        let err = run(
            "ghost",
            &mut Command::new("/nonexistent/xtask-no-such-program"),
        )
        .expect_err("cannot start");
        assert!(
            format!("{err:#}").contains("ghost: could not start"),
            "{err:#}"
        );
    }

    #[test]
    fn read_returns_stdout() {
        let out = read("echo", Command::new("echo").arg("hello")).expect("echo works");
        assert_eq!(out.trim(), "hello");
    }

    #[test]
    fn terminate_stops_a_long_running_child() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let start = Instant::now();
        terminate(&mut child);
        assert!(child.try_wait().expect("reaped").is_some());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn target_dir_defaults_under_root() {
        // The variable may be set by whoever runs the tests; only check the fallback shape.
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(target_dir(Path::new("/r")), Path::new("/r/target"));
        }
    }
}
