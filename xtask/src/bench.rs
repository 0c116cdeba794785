//! `cargo xtask bench [--no-run] [--strict] [-- <criterion args>]`.
//!
//! Runs every criterion benchmark of the workspace (`cargo bench --workspace --bench '*'`,
//! with an OpenBao dev server up for the Vault benchmarks), then reads criterion's results
//! (`<target>/criterion/**/new/{benchmark,estimates}.json`) and prints one table:
//! operation, benchmark id, median, goal, met?.
//!
//! # The goals table
//!
//! [`GOALS`] maps the performance goals named in the issues to benchmark ids. A goal
//! matches a benchmark when the benchmark's full id (`group/function[/parameter]`,
//! compared in lower case) contains **every** entry of `all_of` and **no** entry of
//! `none_of`; an entry may list alternatives separated by `|` (`"10k|10000"`). A goal can
//! match several benchmarks (for example a parameterised save): each gets a row. A goal
//! with no matching benchmark prints `-`. Benchmarks that no goal names are listed after
//! the goals with goal `-`. To follow a renamed benchmark, edit its entry here.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cmd::{self, note};
use crate::interrupt;
use crate::openbao;
use crate::suite;

/// What a goal demands of the median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Median time at most this many nanoseconds.
    AtMostNs(f64),
    /// Median time strictly below this many nanoseconds.
    BelowNs(f64),
    /// Throughput (bytes per median iteration, from criterion's `Throughput::Bytes`) at
    /// least this many MiB/s.
    AtLeastMibPerSec(f64),
}

/// One performance goal and how to find its benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Goal {
    /// What is measured, for the table.
    pub operation: &'static str,
    /// Every entry must occur in the benchmark id (`a|b` = either).
    pub all_of: &'static [&'static str],
    /// No entry may occur in the benchmark id (`a|b` = either).
    pub none_of: &'static [&'static str],
    /// The goal.
    pub target: Target,
}

const US: f64 = 1_000.0;
const MS: f64 = 1_000_000.0;

/// The goals named in the issues (core #2, local #17, runtime #6).
pub const GOALS: &[Goal] = &[
    Goal {
        operation: "core: warm get (cache hit)",
        all_of: &["store/get_warm"],
        none_of: &[],
        target: Target::AtMostNs(100.0),
    },
    Goal {
        operation: "core: resolve one-placeholder template",
        all_of: &["store/resolve_one_placeholder"],
        none_of: &[],
        target: Target::AtMostNs(300.0),
    },
    // Local goals of issue 17: at the level users call, `CredentialStore` over a freshly
    // opened `LocalStorage` (hive-cred-local/benches/local.rs); the `baseline_*` rows of
    // the same groups are listed as figures of their own.
    Goal {
        operation: "local: cold get through CredentialStore",
        all_of: &["get_cold_", "store_over_local"],
        none_of: &["baseline"],
        target: Target::AtMostNs(10.0 * US),
    },
    Goal {
        operation: "local: cached get through CredentialStore",
        all_of: &["get_warm_", "store_over_local"],
        none_of: &["baseline"],
        target: Target::AtMostNs(100.0),
    },
    Goal {
        operation: "local: list 1,000 on a fresh handle",
        all_of: &["list_fresh_1000/store_over_local"],
        none_of: &["baseline"],
        target: Target::AtMostNs(300.0 * US),
    },
    Goal {
        operation: "local: durable save (fsync)",
        all_of: &["save_", "store_over_local_durable"],
        none_of: &["baseline"],
        target: Target::AtMostNs(1.0 * MS),
    },
    Goal {
        operation: "runtime: redactor throughput",
        all_of: &["redactor/"],
        none_of: &["build"],
        target: Target::AtLeastMibPerSec(500.0),
    },
    Goal {
        operation: "runtime: pre-step overhead, 10 credentials",
        all_of: &["prestep_10|pre_step_10"],
        none_of: &[],
        target: Target::BelowNs(10.0 * US),
    },
    // Issue 16: streaming with 1,000 secrets without the pattern layer; a refresh's
    // rebuild.
    Goal {
        operation: "runtime: stream redaction, 1,000 secrets",
        all_of: &["redact/stream_1000_secrets_plain"],
        none_of: &[],
        target: Target::AtLeastMibPerSec(500.0),
    },
    Goal {
        operation: "runtime: redactor rebuild after a refresh, 1,000 secrets",
        all_of: &["redact/refresh_"],
        none_of: &[],
        target: Target::AtMostNs(5.0 * MS),
    },
    // Issue 15 (hive-cred-runtime/benches/refresh.rs).
    Goal {
        operation: "runtime: refresh overhead, local store, durable save",
        all_of: &["refresh/overhead_local_durable"],
        none_of: &[],
        target: Target::AtMostNs(1.0 * MS),
    },
    Goal {
        operation: "runtime: pre-step, 5 warm credentials",
        all_of: &["prestep/5_warm"],
        none_of: &["baseline"],
        target: Target::AtMostNs(5.0 * US),
    },
];

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only print the table from existing results.
    pub no_run: bool,
    /// Exit non-zero if a goal with a result is not met.
    pub strict: bool,
    /// Arguments for the benchmark binaries (criterion filter and options).
    pub bench_args: Vec<String>,
}

/// One criterion result.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// `group/function[/parameter]`.
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Bytes per iteration, if the benchmark declared `Throughput::Bytes`.
    pub bytes: Option<f64>,
    /// Whether the result predates this run.
    pub stale: bool,
}

impl Goal {
    /// Whether `id` is this goal's benchmark.
    pub fn matches(&self, id: &str) -> bool {
        let id = id.to_lowercase();
        let has = |entry: &str| entry.split('|').any(|alt| id.contains(&alt.to_lowercase()));
        self.all_of.iter().all(|e| has(e)) && !self.none_of.iter().any(|e| has(e))
    }
}

/// Run the benchmarks (unless `no_run`) and print the table.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let started = SystemTime::now();
    if !opts.no_run {
        interrupt::install()?;
        let bao = openbao::locate_or_install(root)?;
        let mut bench = cmd::cargo();
        bench
            .current_dir(root)
            .args(["bench", "--workspace", "--all-features", "--bench", "*"])
            .envs(suite::bao_env(&bao)?);
        if !opts.bench_args.is_empty() {
            bench.arg("--").args(&opts.bench_args);
        }
        cmd::run("cargo bench", &mut bench)?;
    }
    let dir = criterion_dir(root);
    let since = if opts.no_run { None } else { Some(started) };
    let results = read_results(&dir, since)?;
    let (table, unmet) = render(GOALS, &results);
    let mut out = std::io::stdout().lock();
    out.write_all(table.as_bytes())
        .context("writing the table")?;
    out.flush().context("writing the table")?;
    if unmet > 0 {
        note(format_args!("{unmet} goal(s) not met"));
        if opts.strict {
            bail!("{unmet} benchmark goal(s) not met");
        }
    }
    Ok(())
}

/// `$CRITERION_HOME`, else `<target>/criterion`.
fn criterion_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CRITERION_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => cmd::target_dir(root).join("criterion"),
    }
}

/// Every `new/` result under `dir`, sorted by id. Results written before `since` are
/// marked stale.
pub fn read_results(dir: &Path, since: Option<SystemTime>) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name() == "new" {
                if let Some(m) = read_one(&path, since)? {
                    out.push(m);
                }
            } else if entry.file_name() != "base" && entry.file_name() != "report" {
                stack.push(path);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn read_one(new_dir: &Path, since: Option<SystemTime>) -> Result<Option<Measurement>> {
    let bench_path = new_dir.join("benchmark.json");
    let est_path = new_dir.join("estimates.json");
    if !bench_path.is_file() || !est_path.is_file() {
        return Ok(None);
    }
    let bench: Value = serde_json::from_str(
        &fs::read_to_string(&bench_path)
            .with_context(|| format!("reading {}", bench_path.display()))?,
    )
    .with_context(|| format!("parsing {}", bench_path.display()))?;
    let est: Value = serde_json::from_str(
        &fs::read_to_string(&est_path)
            .with_context(|| format!("reading {}", est_path.display()))?,
    )
    .with_context(|| format!("parsing {}", est_path.display()))?;
    let id = bench["full_id"]
        .as_str()
        .with_context(|| format!("{} has no full_id", bench_path.display()))?
        .to_owned();
    let median_ns = est["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{} has no median.point_estimate", est_path.display()))?;
    let throughput = &bench["throughput"];
    let bytes = throughput["Bytes"]
        .as_f64()
        .or_else(|| throughput["BytesDecimal"].as_f64());
    let stale = match since {
        None => false,
        Some(since) => fs::metadata(&est_path)
            .and_then(|m| m.modified())
            .map(|t| t < since)
            .unwrap_or(false),
    };
    Ok(Some(Measurement {
        id,
        median_ns,
        bytes,
        stale,
    }))
}

/// Outcome of one measurement against one goal.
fn judge(target: Target, m: &Measurement) -> (String, Option<bool>) {
    match target {
        Target::AtMostNs(limit) => (format!("<= {}", fmt_ns(limit)), Some(m.median_ns <= limit)),
        Target::BelowNs(limit) => (format!("< {}", fmt_ns(limit)), Some(m.median_ns < limit)),
        Target::AtLeastMibPerSec(min) => (
            format!(">= {min} MiB/s"),
            mib_per_sec(m).map(|rate| rate >= min),
        ),
    }
}

fn mib_per_sec(m: &Measurement) -> Option<f64> {
    let bytes = m.bytes?;
    if m.median_ns <= 0.0 {
        return None;
    }
    Some(bytes / (m.median_ns / 1e9) / (1024.0 * 1024.0))
}

/// The table, and how many goals with a result were not met.
pub fn render(goals: &[Goal], results: &[Measurement]) -> (String, usize) {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut unmet = 0;
    let mut used = vec![false; results.len()];
    for goal in goals {
        let mut any = false;
        for (i, m) in results.iter().enumerate() {
            if !goal.matches(&m.id) {
                continue;
            }
            any = true;
            used[i] = true;
            let (goal_text, met) = judge(goal.target, m);
            let median = match goal.target {
                Target::AtLeastMibPerSec(_) => match mib_per_sec(m) {
                    Some(rate) => format!("{rate:.0} MiB/s ({})", fmt_ns(m.median_ns)),
                    None => format!("{} (no Throughput::Bytes)", fmt_ns(m.median_ns)),
                },
                _ => fmt_ns(m.median_ns),
            };
            let met_text = match met {
                Some(true) => "yes",
                Some(false) => {
                    unmet += 1;
                    "NO"
                }
                None => "-",
            };
            rows.push([
                goal.operation.to_owned(),
                id_text(m),
                median,
                goal_text,
                met_text.to_owned(),
            ]);
        }
        if !any {
            let (goal_text, _) = judge(
                goal.target,
                &Measurement {
                    id: String::new(),
                    median_ns: 0.0,
                    bytes: None,
                    stale: false,
                },
            );
            rows.push([
                goal.operation.to_owned(),
                "-".into(),
                "-".into(),
                goal_text,
                "-".into(),
            ]);
        }
    }
    for (m, used) in results.iter().zip(&used) {
        if !used {
            rows.push([
                "(no goal)".into(),
                id_text(m),
                fmt_ns(m.median_ns),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    let header = ["operation", "benchmark", "median", "goal", "met?"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 5]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            let pad = w.saturating_sub(cell.chars().count());
            let _ = write!(text, "{sep}{cell}{}", " ".repeat(pad));
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, [&rule[0], &rule[1], &rule[2], &rule[3], &rule[4]]);
    for row in &rows {
        line(&mut out, [&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    (out, unmet)
}

fn id_text(m: &Measurement) -> String {
    if m.stale {
        format!("{} (earlier run)", m.id)
    } else {
        m.id.clone()
    }
}

/// Nanoseconds in the most readable unit.
pub fn fmt_ns(ns: f64) -> String {
    if ns < US {
        format!("{ns:.1} ns")
    } else if ns < MS {
        format!("{:.2} µs", ns / US)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / MS)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, median_ns: f64, bytes: Option<f64>) -> Measurement {
        Measurement {
            id: id.into(),
            median_ns,
            bytes,
            stale: false,
        }
    }

    fn goal(name: &str) -> &'static Goal {
        GOALS
            .iter()
            .find(|g| g.operation.contains(name))
            .expect("goal exists")
    }

    /// The ids the crates' benches use today (hive-cred-{core,local,runtime}/benches).
    #[test]
    fn goals_match_the_current_benchmark_ids_and_nothing_else() {
        let ids = [
            "store/get_warm",
            "store/resolve_one_placeholder",
            "credential/needs_refresh_5_keys",
            "open/passphrase_scrypt_17_8_1",
            "get_cold_1000/store_over_local",
            "get_cold_10000/store_over_local",
            "get_cold_1000/baseline_store_over_memory",
            "get_cold_1000/baseline_local_load",
            "get_warm_1000/store_over_local",
            "list_fresh_1000/store_over_local",
            "list_fresh_1000/baseline_read_dir",
            "list_fresh_10000/store_over_local",
            "save_100/store_over_local_durable",
            "save_10000/store_over_local_durable",
            "save_10000/baseline_write_fsync_rename_fsync_dir",
            "redactor/throughput_1000x6_1MiB",
            "redactor/stream_1000x6_1MiB_4KiB_chunks",
            "redactor/build_1000x6",
            "runtime/prestep_10_fresh",
            "redact/stream_1000_secrets_plain_64KiB_chunks",
            "redact/stream_1000_secrets_patterns_64KiB_chunks",
            "redact/refresh_rebuild_1000_secrets",
            "redact/full_build_1000_secrets",
            "refresh/overhead_local_durable",
            "refresh/baseline_local_durable_save",
            "prestep/5_warm",
            "prestep/baseline_5_warm_gets",
            "vault_1000_stored/save",
            "credential_store_warm_get",
        ];
        let matched = |name: &str| -> Vec<&str> {
            let g = goal(name);
            ids.iter().copied().filter(|id| g.matches(id)).collect()
        };
        assert_eq!(matched("warm get"), ["store/get_warm"]);
        assert_eq!(matched("resolve"), ["store/resolve_one_placeholder"]);
        assert_eq!(
            matched("cold get"),
            [
                "get_cold_1000/store_over_local",
                "get_cold_10000/store_over_local"
            ]
        );
        assert_eq!(matched("cached get"), ["get_warm_1000/store_over_local"]);
        assert_eq!(matched("list 1,000"), ["list_fresh_1000/store_over_local"]);
        assert_eq!(
            matched("durable save"),
            [
                "save_100/store_over_local_durable",
                "save_10000/store_over_local_durable"
            ]
        );
        assert_eq!(
            matched("redactor"),
            [
                "redactor/throughput_1000x6_1MiB",
                "redactor/stream_1000x6_1MiB_4KiB_chunks"
            ]
        );
        assert_eq!(matched("pre-step"), ["runtime/prestep_10_fresh"]);
        assert_eq!(
            matched("stream redaction"),
            ["redact/stream_1000_secrets_plain_64KiB_chunks"]
        );
        assert_eq!(
            matched("rebuild after a refresh"),
            ["redact/refresh_rebuild_1000_secrets"]
        );
        assert_eq!(
            matched("refresh overhead"),
            ["refresh/overhead_local_durable"]
        );
        assert_eq!(matched("5 warm"), ["prestep/5_warm"]);
    }

    #[test]
    fn table_judges_goals_and_prints_dashes_for_missing_ones() {
        let results = vec![
            m("store/get_warm", 80.0, None),
            m("store/resolve_one_placeholder", 450.0, None),
            m("redactor/scan_1mib", 1_000_000.0, Some(1024.0 * 1024.0)),
            m("credential/needs_refresh_5_keys", 40.0, None),
        ];
        let (table, unmet) = render(GOALS, &results);
        let row = |needle: &str| {
            table
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no row for {needle} in\n{table}"))
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("warm get"),
            [
                "core: warm get (cache hit)",
                "store/get_warm",
                "80.0 ns",
                "<= 100.0 ns",
                "yes"
            ]
        );
        assert_eq!(row("resolve")[4], "NO");
        // 1 MiB in 1 ms = 1000 MiB/s.
        assert_eq!(row("redactor")[2], "1000 MiB/s (1.00 ms)");
        assert_eq!(row("redactor")[4], "yes");
        assert_eq!(
            row("list 1,000"),
            [
                "local: list 1,000 on a fresh handle",
                "-",
                "-",
                "<= 300.00 µs",
                "-"
            ]
        );
        assert_eq!(row("pre-step")[3], "< 10.00 µs");
        assert_eq!(row("needs_refresh")[0], "(no goal)");
        assert_eq!(unmet, 1);
        assert!(table.starts_with("operation"), "{table}");
    }

    #[test]
    fn throughput_goal_without_bytes_is_not_judged() {
        let (table, unmet) = render(GOALS, &[m("redactor/scan_10kib", 5_000.0, None)]);
        assert_eq!(unmet, 0);
        assert!(table.contains("(no Throughput::Bytes)"), "{table}");
    }

    #[test]
    fn reads_criterion_result_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = dir.path().join("store/get_warm/new");
        fs::create_dir_all(&new).expect("mkdir");
        fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"store","function_id":"get_warm","value_str":null,
                "throughput":null,"full_id":"store/get_warm","directory_name":"store/get_warm",
                "title":"store/get_warm"}"#,
        )
        .expect("write");
        fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":70.0},"median":{"point_estimate":65.5}}"#,
        )
        .expect("write");
        let base = dir.path().join("store/get_warm/base");
        fs::create_dir_all(&base).expect("mkdir");
        fs::copy(new.join("benchmark.json"), base.join("benchmark.json")).expect("copy");
        let thr = dir.path().join("redact/1MiB/new");
        fs::create_dir_all(&thr).expect("mkdir");
        fs::write(
            thr.join("benchmark.json"),
            r#"{"full_id":"redact/1MiB","throughput":{"Bytes":1048576}}"#,
        )
        .expect("write");
        fs::write(
            thr.join("estimates.json"),
            r#"{"median":{"point_estimate":2e6}}"#,
        )
        .expect("write");

        let results = read_results(dir.path(), None).expect("read");
        assert_eq!(
            results,
            vec![
                m("redact/1MiB", 2e6, Some(1_048_576.0)),
                m("store/get_warm", 65.5, None)
            ]
        );
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(
            read_results(dir.path(), Some(later))
                .expect("read")
                .iter()
                .all(|r| r.stale)
        );
    }

    #[test]
    fn formats_units() {
        assert_eq!(fmt_ns(12.34), "12.3 ns");
        assert_eq!(fmt_ns(8_000.0), "8.00 µs");
        assert_eq!(fmt_ns(600_000.0), "600.00 µs");
        assert_eq!(fmt_ns(3_000_000.0), "3.00 ms");
        assert_eq!(fmt_ns(2.5e9), "2.50 s");
    }
}
