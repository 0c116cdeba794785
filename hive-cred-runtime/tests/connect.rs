//! `hive-cred connect`: the real binary against the testkit's mock authorisation server
//! on 127.0.0.1; the test plays the browser.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use hive_cred_core::{CredentialId, CredentialStorage, ExposeSecret, SecretString};
use hive_cred_local::{KeySource, LocalStorage};
use hive_cred_oauth::testkit::{MockConfig, MockTokenServer};

#[path = "../../hive-cred-oauth/tests/oidc/support.rs"]
mod oidc_support;

const CLIENT_ID: &str = "cli-client";
const CLIENT_SECRET: &str = "cli-secret-5f3b";

fn bin(dir: &Path, config: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("hive-cred"));
    c.env_clear()
        .env("HOME", dir)
        .env("HIVE_CRED_LOG", "warn")
        .env("HIVE_CRED_CONFIG", config)
        .env("MOCK_CLIENT_SECRET", CLIENT_SECRET)
        .arg("--dir")
        .arg(dir.join("store"));
    c
}

fn init(dir: &Path, config: &Path) -> String {
    let out = bin(dir, config).arg("init").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("export HIVE_CREDENTIAL_KEY=")
                .map(str::to_string)
        })
        .unwrap()
}

fn write_config(dir: &Path, server: &MockTokenServer, discovery: bool) -> std::path::PathBuf {
    let endpoints = if discovery {
        format!("issuer = \"{}\"\n", server.issuer())
    } else {
        format!(
            "token_url = \"{}\"\nauthorization_url = \"{}\"\ndevice_authorization_url = \"{}\"\nuserinfo_url = \"{}\"\n",
            server.token_url(),
            server.authorization_url(),
            server.device_authorization_url(),
            server.userinfo_url()
        )
    };
    let text = format!(
        "[[providers]]\nprovider_id = \"mock\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = {{ env = \"MOCK_CLIENT_SECRET\" }}\nscopes = [\"openid\"]\n{endpoints}"
    );
    let path = dir.join("hive.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn stored(dir: &Path, key: &str, id: &str) -> hive_cred_core::CredentialObject {
    let storage = LocalStorage::open(
        dir.join("store"),
        KeySource::from_lookup(|n| (n == "HIVE_CREDENTIAL_KEY").then(|| key.to_string())).unwrap(),
    )
    .await
    .unwrap();
    storage
        .load(&CredentialId::new(id).unwrap())
        .await
        .unwrap()
        .expect("connect stored the credential")
}

fn reveal(s: &SecretString) -> String {
    // EXPOSE: the test compares token values the mock server issued.
    s.expose_secret().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_code_and_pkce_stores_tokens_and_identity() {
    let server =
        MockTokenServer::start(MockConfig::new().with_client(CLIENT_ID, CLIENT_SECRET)).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &server, true);
    let key = init(tmp.path(), &config);
    let mut child = bin(tmp.path(), &config)
        .env("HIVE_CREDENTIAL_KEY", &key)
        .args([
            "connect",
            "mock",
            "--alias",
            "work",
            "--no-browser",
            "--timeout-secs",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read the printed URL on a blocking thread, then be the browser.
    let (url, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .by_ref()
            .map(Result::unwrap)
            .find_map(|l| {
                l.trim()
                    .starts_with("http://")
                    .then(|| l.trim().to_string())
            })
            .expect("connect prints the authorization URL");
        (url, lines)
    })
    .await
    .unwrap();
    assert!(url.starts_with(&server.authorization_url()));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser.get(&url).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://127.0.0.1:"));
    let page = browser.get(&location).send().await.unwrap();
    assert_eq!(page.status(), 200);

    let out: Vec<String> = tokio::task::spawn_blocking(move || rest.map(Result::unwrap).collect())
        .await
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.contains("as user@example.test") && l.contains("mock.work (mock/work)")),
        "{out:?}"
    );
    let all = out.join("\n");
    let access = reveal(&server.latest_access_token().unwrap());
    assert!(!all.contains(&access), "no token on stdout");

    let cred = stored(tmp.path(), &key, "mock.work").await;
    assert_eq!(cred.provider_id(), Some("mock"));
    let account = cred.account().expect("connect stores the account");
    assert_eq!(account.address(), "mock/work");
    assert_eq!(account.identity.label(), Some("user@example.test"));
    assert_eq!(account.status, hive_cred_core::AccountStatus::Active);
    assert!(cred.auto_refresh());
    assert_eq!(reveal(cred.get_key("access_token").unwrap()), access);
    assert_eq!(
        reveal(cred.get_key("refresh_token").unwrap()),
        reveal(&server.current_refresh_token())
    );
    assert_eq!(cred.description(), Some("mock account user@example.test"));

    // A later refresh through the normal store path (`hive-cred refresh`) rotates it.
    let out = bin(tmp.path(), &config)
        .env("HIVE_CREDENTIAL_KEY", &key)
        .args(["refresh", "mock/work"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stored(tmp.path(), &key, "mock.work").await;
    assert_eq!(
        reveal(after.get_key("refresh_token").unwrap()),
        reveal(&server.current_refresh_token())
    );
    assert_eq!(server.counts().grants, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_the_device_flow() {
    let server = MockTokenServer::start(
        MockConfig::new()
            .with_client(CLIENT_ID, CLIENT_SECRET)
            .with_device_interval(0),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &server, false);
    let key = init(tmp.path(), &config);
    let out = tokio::task::spawn_blocking({
        let (dir, config, key) = (tmp.path().to_path_buf(), config.clone(), key.clone());
        move || {
            bin(&dir, &config)
                .env("HIVE_CREDENTIAL_KEY", &key)
                .args(["connect", "mock", "--device"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("WDJB-MJHT") && stdout.contains("/activate"),
        "{stdout}"
    );
    let cred = stored(tmp.path(), &key, "mock").await;
    assert_eq!(
        reveal(cred.get_key("refresh_token").unwrap()),
        reveal(&server.current_refresh_token())
    );
}

#[test]
fn connect_to_an_unregistered_provider_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("hive.toml");
    std::fs::write(&config, "").unwrap();
    let key = init(tmp.path(), &config);
    let out = bin(tmp.path(), &config)
        .env("HIVE_CREDENTIAL_KEY", &key)
        .args(["connect", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
}

/// `connect` against a real authorisation server (oidc-provider; skipped without node
/// outside CI): discovery from the issuer, code + PKCE with the test as the browser,
/// identity from user-info, then `hive-cred refresh` through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_against_a_real_authorisation_server() {
    let Some(oidc) = oidc_support::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("hive.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nprovider_id = \"oidc\"\nclient_id = \"{}\"\nclient_secret = {{ env = \"OIDC_SECRET\" }}\nissuer = \"{}\"\nscopes = [\"openid\", \"email\"]\n",
            oidc_support::CLIENT_ID,
            oidc.issuer
        ),
    )
    .unwrap();
    let key = init(tmp.path(), &config);
    let mut child = bin(tmp.path(), &config)
        .env("HIVE_CREDENTIAL_KEY", &key)
        .env("OIDC_SECRET", oidc_support::CLIENT_SECRET)
        .args(["connect", "oidc", "--no-browser", "--timeout-secs", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .by_ref()
            .map(Result::unwrap)
            .find_map(|l| {
                l.trim()
                    .starts_with("http://")
                    .then(|| l.trim().to_string())
            })
            .expect("connect prints the authorization URL");
        (url, lines)
    })
    .await
    .unwrap();
    let redirect_uri = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let mut browser = oidc_support::Browser::default();
    let redirect = browser
        .follow(&url, &redirect_uri)
        .await
        .expect("redirected back");
    let page = browser
        .send(oidc_support::Browser::client().get(redirect))
        .await;
    assert_eq!(page.status(), 200);
    let out: Vec<String> = tokio::task::spawn_blocking(move || rest.map(Result::unwrap).collect())
        .await
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{out:?}");
    assert!(
        out.iter().any(|l| l.contains("as test-user@example.test")),
        "{out:?}"
    );
    let cred = stored(tmp.path(), &key, "oidc").await;
    let first_refresh = reveal(cred.get_key("refresh_token").unwrap());

    let out = bin(tmp.path(), &config)
        .env("HIVE_CREDENTIAL_KEY", &key)
        .env("OIDC_SECRET", oidc_support::CLIENT_SECRET)
        .args(["refresh", "oidc"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stored(tmp.path(), &key, "oidc").await;
    assert_ne!(
        reveal(after.get_key("refresh_token").unwrap()),
        first_refresh,
        "rotated by the server and saved"
    );
}
