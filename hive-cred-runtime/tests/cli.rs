//! The real `hive-cred` binary, driven with assert_cmd.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const SECRET: &str = "BSA-cli-secret-7f3a9c2e51";

/// A command with a clean environment (no Vault, no config, no key).
fn cli(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("hive-cred").unwrap();
    c.env_clear()
        .env("HOME", dir)
        .env("HIVE_CRED_LOG", "warn")
        .arg("--dir")
        .arg(dir.join("store"));
    c
}

/// `init` and the key it shows once.
fn init(dir: &Path) -> String {
    let out = cli(dir).arg("init").write_stdin("").assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export HIVE_CREDENTIAL_KEY="))
        .expect("init shows the key once")
        .to_string()
}

fn keyed(dir: &Path, key: &str) -> Command {
    let mut c = cli(dir);
    c.env("HIVE_CREDENTIAL_KEY", key);
    c
}

#[test]
fn set_from_stdin_then_list_get_and_reveal() {
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    keyed(tmp.path(), &key)
        .args([
            "set",
            "brave_search",
            "--type",
            "api_key",
            "--key",
            "api_key",
        ])
        .write_stdin(format!("{SECRET}\n"))
        .assert()
        .success()
        .stdout(predicate::str::contains("saved brave_search.api_key"))
        .stdout(predicate::str::contains(SECRET).not())
        .stderr(predicate::str::contains(SECRET).not());
    keyed(tmp.path(), &key)
        .args([
            "set",
            "github",
            "--type",
            "oauth2",
            "--key",
            "access_token",
            "--expires-at",
            "2020-01-01T00:00:00Z",
            "--provider",
            "github",
        ])
        .write_stdin("gho-cli-token-123456")
        .assert()
        .success();

    let list = keyed(tmp.path(), &key).arg("list").assert().success();
    let stdout = String::from_utf8(list.get_output().stdout.clone()).unwrap();
    assert!(
        !stdout.contains(SECRET) && !stdout.contains("gho-cli-token"),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{stdout}");
    assert!(lines[0].contains("NEEDS REFRESH"), "{stdout}");
    let brave: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(brave, ["brave_search", "api_key", "api_key", "-", "no"]);
    let gh: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        gh,
        [
            "github",
            "oauth2",
            "access_token",
            "2020-01-01T00:00:00Z",
            "yes"
        ]
    );

    keyed(tmp.path(), &key)
        .args(["list", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"brave_search\""))
        .stdout(predicate::str::contains(SECRET).not());

    keyed(tmp.path(), &key)
        .args(["get", "github"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "provider:       github (auto refresh)",
        ))
        .stdout(predicate::str::contains("expired 2020-01-01T00:00:00Z"))
        .stdout(predicate::str::contains("gho-cli-token").not());

    keyed(tmp.path(), &key)
        .args(["get", "brave_search", "--reveal", "api_key"])
        .assert()
        .success()
        .stdout(format!("{SECRET}\n"))
        .stderr(predicate::str::contains(
            "warning: printing the secret value",
        ));
}

#[test]
fn values_never_come_from_argv() {
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    // There is no flag or positional for a value: clap refuses it (usage error, 2),
    // and the refusal does not echo the value.
    for extra in [vec!["--value", SECRET], vec![SECRET]] {
        let mut args = vec!["set", "x", "--type", "api_key", "--key", "k"];
        args.extend(extra);
        keyed(tmp.path(), &key)
            .args(&args)
            .write_stdin("")
            .assert()
            .code(2);
    }
    keyed(tmp.path(), &key)
        .args(["list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("x ").not());
}

#[test]
fn errors_are_one_line_with_documented_codes_and_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    // Invalid key name: rejected before the value matters; the value is not echoed.
    keyed(tmp.path(), &key)
        .args(["set", "c", "--type", "api_key", "--key", "bad key!"])
        .write_stdin(SECRET)
        .assert()
        .code(4)
        .stderr(predicate::str::contains(SECRET).not());
    // Empty value.
    keyed(tmp.path(), &key)
        .args(["set", "c", "--type", "api_key", "--key", "k"])
        .write_stdin("\n")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("empty value"));
    keyed(tmp.path(), &key)
        .args(["set", "c", "--type", "api_key", "--key", "k"])
        .write_stdin(SECRET)
        .assert()
        .success();
    // Type mismatch with the stored credential.
    keyed(tmp.path(), &key)
        .args(["set", "c", "--type", "oauth2", "--key", "k"])
        .write_stdin(SECRET)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("exists with type api_key"))
        .stderr(predicate::str::contains(SECRET).not());
    // Missing credential and key.
    let out = keyed(tmp.path(), &key)
        .args(["get", "nope"])
        .assert()
        .code(3)
        .stdout("");
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("hive-cred: error: credential not found"),
        "{stderr}"
    );
    keyed(tmp.path(), &key)
        .args(["get", "c", "--reveal", "other"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains(SECRET).not());
    // Wrong key: decryption error, exit 5, nothing about the values.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    keyed(tmp.path(), wrong)
        .arg("list")
        .assert()
        .code(5)
        .stderr(predicate::str::contains(SECRET).not());
    // No key at all (stdin not a terminal): a config error saying what to set.
    cli(tmp.path())
        .arg("list")
        .write_stdin("")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("HIVE_CREDENTIAL_KEY"));
    // Deleting twice: second is not found.
    keyed(tmp.path(), &key)
        .args(["delete", "c"])
        .assert()
        .success();
    keyed(tmp.path(), &key)
        .args(["delete", "c"])
        .assert()
        .code(3);
}

#[test]
fn init_refuses_an_existing_store_and_passphrase_stores_work() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path());
    cli(tmp.path())
        .arg("init")
        .write_stdin("")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("not empty"));

    let tmp = tempfile::tempdir().unwrap();
    cli(tmp.path())
        .args(["init", "--passphrase", "--scrypt-log-n", "10"])
        .write_stdin("correct horse battery\n")
        .assert()
        .success()
        .stdout(predicate::str::contains("HIVE_CREDENTIAL_PASSPHRASE"))
        .stdout(predicate::str::contains("correct horse").not());
    let with_pass = |p: &str| {
        let mut c = cli(tmp.path());
        c.env("HIVE_CREDENTIAL_PASSPHRASE", p);
        c
    };
    with_pass("correct horse battery")
        .args(["set", "s", "--type", "custom", "--key", "k"])
        .write_stdin(SECRET)
        .assert()
        .success();
    with_pass("wrong").arg("list").assert().code(5);
    with_pass("correct horse battery")
        .args(["change-passphrase", "--scrypt-log-n", "10"])
        .write_stdin("new passphrase here\n")
        .assert()
        .success();
    with_pass("correct horse battery")
        .arg("list")
        .assert()
        .code(5);
    with_pass("new passphrase here")
        .args(["get", "s", "--reveal", "k"])
        .assert()
        .success()
        .stdout(format!("{SECRET}\n"));
    with_pass("new passphrase here")
        .arg("rotate-key")
        .assert()
        .success()
        .stdout(predicate::str::contains("1 records re-encrypted"));
    // The header-only form: records untouched, only the newest passphrase opens.
    let records = || {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(tmp.path().join("store"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cred"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        v.sort();
        v
    };
    let before = records();
    with_pass("new passphrase here")
        .args([
            "change-passphrase",
            "--keep-data-key",
            "--scrypt-log-n",
            "10",
        ])
        .write_stdin("third passphrase\n")
        .assert()
        .success();
    assert_eq!(records(), before, "--keep-data-key rewrites no record");
    with_pass("new passphrase here")
        .arg("list")
        .assert()
        .code(5);
    with_pass("third passphrase")
        .args(["get", "s", "--reveal", "k"])
        .assert()
        .success()
        .stdout(format!("{SECRET}\n"));
}

#[test]
fn doctor_reports_health_and_problems() {
    let tmp = tempfile::tempdir().unwrap();
    cli(tmp.path())
        .arg("doctor")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL  store:"))
        .stdout(predicate::str::contains("hive-cred init"));
    let key = init(tmp.path());
    keyed(tmp.path(), &key)
        .args([
            "set",
            "old",
            "--type",
            "bearer_token",
            "--key",
            "token",
            "--expires-at",
            "2020-01-01T00:00:00Z",
        ])
        .write_stdin(SECRET)
        .assert()
        .success();
    let out = keyed(tmp.path(), &key).arg("doctor").assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.contains("ok    key: a raw key is available"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    credentials: all 1 decrypt"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warn  credential old: expired 2020-01-01T00:00:00Z"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vault: HIVE_VAULT_ADDR not set"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET));

    // A record from another store cannot be read: doctor fails and says so.
    let other = tempfile::tempdir().unwrap();
    let other_key = init(other.path());
    keyed(other.path(), &other_key)
        .args(["set", "foreign", "--type", "api_key", "--key", "k"])
        .write_stdin(SECRET)
        .assert()
        .success();
    for entry in std::fs::read_dir(other.path().join("store")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "cred") {
            std::fs::copy(&p, tmp.path().join("store").join(p.file_name().unwrap())).unwrap();
        }
    }
    keyed(tmp.path(), &key)
        .arg("doctor")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("1 record file(s)"));
}

#[test]
fn vault_address_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "vault") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Command::cargo_bin("hive-cred").unwrap();
    c.env_clear()
        .env("HOME", tmp.path())
        .env("HIVE_VAULT_ADDR", "http://127.0.0.1:1")
        .arg("list")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("`vault` feature"));
}

/// An agent's refresh whose save never landed (seen in the audit log) fails `doctor`:
/// the new tokens exist only in that agent's memory.
#[test]
fn doctor_reports_a_refreshed_credential_that_was_never_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    let log = tmp.path().join("audit.jsonl");
    let rec = |op: &str, outcome: &str| {
        let kind = if outcome == "error" {
            r#","error_kind":"unavailable""#
        } else {
            ""
        };
        format!(
            r#"{{"time":"2030-01-01T00:00:00Z","node":null,"credential_id":"github","operation":"{op}","outcome":"{outcome}"{kind},"duration_us":1}}"#
        )
    };
    std::fs::write(
        &log,
        [
            rec("refresh", "ok"),
            rec("save", "error"),
            rec("save", "error"),
        ]
        .join("\n"),
    )
    .unwrap();
    keyed(tmp.path(), &key)
        .env("HIVE_CRED_AUDIT_LOG", &log)
        .arg("doctor")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "FAIL  credential github: refreshed at",
        ))
        .stdout(predicate::str::contains(
            "failed 2 time(s) (last: unavailable)",
        ));
    // Once a save lands, doctor is content.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push('\n');
    text.push_str(&rec("save", "ok"));
    std::fs::write(&log, text).unwrap();
    keyed(tmp.path(), &key)
        .env("HIVE_CRED_AUDIT_LOG", &log)
        .arg("doctor")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "ok    audit: every refreshed credential",
        ));
}

/// `hive-cred set ID KEY`: the key as an argument; the type from the stored credential,
/// or api_key for a new one; `--type` still wins, and a mismatch is refused.
#[test]
fn set_takes_the_key_positionally_and_the_type_from_the_stored_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    keyed(tmp.path(), &key)
        .args(["set", "brave_search", "api_key"])
        .write_stdin(SECRET)
        .assert()
        .success()
        .stdout(predicate::str::contains("saved brave_search.api_key"));
    let out = keyed(tmp.path(), &key)
        .args(["get", "brave_search", "--json"])
        .assert()
        .success();
    let json = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(json.contains(r#""credential_type": "api_key""#), "{json}");
    // Adding a key to an existing OAuth2 credential needs no --type.
    keyed(tmp.path(), &key)
        .args(["set", "gh", "access_token", "--type", "oauth2"])
        .write_stdin(SECRET)
        .assert()
        .success();
    keyed(tmp.path(), &key)
        .args(["set", "gh", "refresh_token"])
        .write_stdin(SECRET)
        .assert()
        .success();
    keyed(tmp.path(), &key)
        .args(["set", "gh", "other", "--type", "api_key"])
        .write_stdin(SECRET)
        .assert()
        .code(predicate::ne(0))
        .stderr(predicate::str::contains("exists with type oauth2"));
    // No key at all is a usage error naming KEY.
    keyed(tmp.path(), &key)
        .args(["set", "gh"])
        .write_stdin(SECRET)
        .assert()
        .code(predicate::ne(0))
        .stderr(predicate::str::contains("KEY"));
}

#[test]
fn accounts_and_doctor_agent_report_without_values() {
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    for (id, value) in [
        ("github.work", SECRET),
        ("github.personal", "gh-personal-value-1"),
    ] {
        keyed(tmp.path(), &key)
            .args(["set", id, "api_key"])
            .write_stdin(format!("{value}\n"))
            .assert()
            .success();
    }
    let out = keyed(tmp.path(), &key)
        .args(["accounts", "github", "--json"])
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let accounts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(accounts[0]["alias"], "personal");
    assert_eq!(accounts[1]["id"], "github.work");
    assert!(!stdout.contains(SECRET), "{stdout}");

    let agent = tmp.path().join("agent.toml");
    std::fs::write(
        &agent,
        r#"
[[nodes]]
name = "triage"
credentials = ["github"]
accounts = { github = "work" }

[[nodes]]
name = "review"
credentials = ["github"]

[[nodes]]
name = "search"
any_of = [["brave_search", "serpapi"]]
"#,
    )
    .unwrap();
    let out = keyed(tmp.path(), &key)
        .args(["doctor", "--agent"])
        .arg(&agent)
        .arg("--json")
        .assert()
        .code(1);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(!stdout.contains(SECRET), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["dropped_tools"],
        serde_json::json!(["review", "search"])
    );
    let text = keyed(tmp.path(), &key)
        .args(["doctor", "--agent"])
        .arg(&agent)
        .assert()
        .code(1);
    let stdout = String::from_utf8(text.get_output().stdout.clone()).unwrap();
    for needle in [
        "BRAVE_SEARCH_API_KEY",
        "github/personal",
        "needs_account_choice",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
}

/// A health endpoint on 127.0.0.1 (GitHub's `/user` shape): a bearer token starting
/// `good-` gets 200 with `{"login": ...}`, anything else 401. Returns its base URL; the
/// server lives as long as the returned runtime.
fn health_server() -> (String, tokio::runtime::Runtime) {
    use axum::http::{HeaderMap, StatusCode};
    async fn user(headers: HeaderMap) -> (StatusCode, String) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match auth.strip_prefix("Bearer good-") {
            Some(_) => (StatusCode::OK, r#"{"login":"octocat","id":42}"#.to_string()),
            None => (
                StatusCode::UNAUTHORIZED,
                r#"{"message":"Bad credentials"}"#.to_string(),
            ),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/user", axum::routing::get(user));
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rt)
}

/// `hive-cred check` against a user spec whose health check points at a 127.0.0.1
/// server: the valid token is healthy with the identity read through the JSON pointer,
/// the revoked one (401) is rejected and its account marked failed, and kept; no value
/// is printed.
#[test]
fn check_probes_the_spec_endpoint_records_status_and_keeps_failed_credentials() {
    const GOOD: &str = "good-cli-health-7d1e0b";
    const REVOKED: &str = "revoked-cli-health-93ac4f";
    let (base, _server) = health_server();
    let tmp = tempfile::tempdir().unwrap();
    let key = init(tmp.path());
    let specs = tmp.path().join("specs.toml");
    std::fs::write(
        &specs,
        format!(
            r#"
[[credentials]]
id = "acme"
description = "ACME token"
required_keys = ["api_key"]
env_var = "ACME_TOKEN"
[credentials.health_check]
url = "{base}/user"
auth = "bearer"
identity_pointer = "/login"
identity_field = "username"
"#
        ),
    )
    .unwrap();
    let config = tmp.path().join("hive.toml");
    std::fs::write(
        &config,
        format!("specs = [{:?}]\n", specs.display().to_string()),
    )
    .unwrap();
    let run = || {
        let mut c = keyed(tmp.path(), &key);
        c.env("HIVE_CRED_CONFIG", &config);
        c
    };
    for (id, value) in [("acme.work", GOOD), ("acme.old", REVOKED)] {
        run()
            .args(["set", id, "api_key"])
            .write_stdin(format!("{value}\n"))
            .assert()
            .success();
    }
    let no_secret = |out: &std::process::Output| {
        for text in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(text);
            assert!(!text.contains(GOOD) && !text.contains(REVOKED), "{text}");
        }
    };

    // One credential, text output: healthy, with the identity.
    let out = run().args(["check", "acme.work"]).assert().success();
    no_secret(out.get_output());
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("healthy") && stdout.contains("octocat"),
        "{stdout}"
    );

    // Every stored credential with a health check, JSON: one fails, exit 1.
    let out = run().args(["check", "--json"]).assert().code(1);
    no_secret(out.get_output());
    let reports: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let by_id = |id: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {reports}"))
            .clone()
    };
    let good = by_id("acme.work");
    assert_eq!(good["status"], "healthy");
    assert_eq!(good["http_status"], 200);
    let bad = by_id("acme.old");
    assert_eq!(bad["status"], "rejected");
    assert_eq!(bad["http_status"], 401);
    assert!(bad.get("identity").is_none_or(|i| i.is_null()), "{bad}");

    // The checks are recorded on the accounts; the failed credential is kept.
    let out = run()
        .args(["accounts", "acme", "--json"])
        .assert()
        .success();
    no_secret(out.get_output());
    let accounts: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let account = |alias: &str| {
        accounts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["alias"] == alias)
            .unwrap_or_else(|| panic!("{alias} in {accounts}"))
            .clone()
    };
    assert_eq!(account("work")["status"], "active");
    assert_eq!(account("work")["identity"]["username"], "octocat");
    assert_eq!(account("old")["status"], "failed");
    assert!(!account("old")["last_checked"].is_null());
    let out = run().args(["list"]).assert().success();
    let listed = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        listed.contains("acme.old") && listed.contains("acme.work"),
        "{listed}"
    );
}
