//! Against a real authorisation server: `oidc-provider` (npm, version pinned by
//! `cargo xtask`, installed into `.tools/oidc-provider`) started on 127.0.0.1 by
//! `tests/oidc/server.mjs`. The test plays the browser (following redirects, keeping
//! cookies). Without node or the installed module the tests are skipped, except under
//! `CI=true`, where that is a failure.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::value;
use hive_cred_core::{CredentialStorage, CredentialStore, ErrorKind, MemoryStorage, SecretString};
use hive_cred_oauth::{AuthStyle, Grant, OAuth2Config, OAuth2Provider};

const CLIENT_ID: &str = "hive-test";
const CLIENT_SECRET: &str = "hive-test-secret";

/// The running node server; killed on drop.
struct Oidc {
    child: Child,
    issuer: String,
}

impl Drop for Oidc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn modules_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HIVE_TEST_OIDC_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/oidc-provider/node_modules")
        });
    dir.join("oidc-provider/package.json")
        .is_file()
        .then_some(dir)
}

/// Starts the server, or `None` (skip) when node or the module is missing outside CI.
fn start() -> Option<Oidc> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let node = std::env::var("HIVE_TEST_NODE_BIN").unwrap_or_else(|_| "node".into());
    let Some(modules) = modules_dir() else {
        assert!(
            !ci,
            "CI=true: oidc-provider is not installed; run `cargo xtask test` (it installs it with npm into .tools/oidc-provider) or set HIVE_TEST_OIDC_MODULES"
        );
        eprintln!("skipping: oidc-provider not installed (cargo xtask test installs it)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/server.mjs");
    let spawned = Command::new(&node)
        .arg(script)
        .arg(&modules)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            assert!(!ci, "CI=true: node could not be started ({e})");
            eprintln!("skipping: node could not be started ({e})");
            return None;
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let issuer = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(i) = l.strip_prefix("OIDC_READY ") {
                    break i.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("the oidc-provider server exited before it was ready");
            }
        }
    };
    // Keep draining stdout: node dies of EPIPE when its notices hit a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Some(Oidc { child, issuer })
}

/// A browser: follows redirects by hand, keeping cookies.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or("");
            if let Some((k, val)) = pair.split_once('=') {
                self.cookies
                    .insert(k.trim().to_string(), val.trim().to_string());
            }
        }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> reqwest::Response {
        let resp = rb
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("browser request");
        self.keep(&resp);
        resp
    }

    /// Follows redirects from `url` until one points at `stop` (returned), or a page
    /// is shown (`None`, with its body).
    async fn follow(&mut self, url: &str, stop: &str) -> Result<url::Url, String> {
        let mut current = url::Url::parse(url).expect("url");
        for _ in 0..20 {
            let resp = self.send(Self::client().get(current.clone())).await;
            if !resp.status().is_redirection() {
                return Err(resp.text().await.unwrap_or_default());
            }
            let location = resp.headers()["location"]
                .to_str()
                .expect("location")
                .to_string();
            let next = current.join(&location).expect("location url");
            if next.as_str().starts_with(stop) {
                return Ok(next);
            }
            current = next;
        }
        panic!("too many redirects");
    }
}

async fn provider(oidc: &Oidc, grant: Grant) -> OAuth2Provider {
    let config = OAuth2Config::new("oidc", "", CLIENT_ID)
        .with_issuer(oidc.issuer.clone())
        .with_client_secret(SecretString::from(CLIENT_SECRET))
        .with_auth_style(AuthStyle::BasicAuth)
        .with_grant(grant)
        .with_scopes(match grant {
            Grant::ClientCredentials => vec!["api:read"],
            // The server issues refresh tokens to this client without offline_access.
            _ => vec!["openid", "email"],
        })
        .discover()
        .await
        .expect("discovery from the real server");
    OAuth2Provider::new(config).expect("provider")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_with_pkce_then_refresh_through_the_store() {
    let Some(oidc) = start() else { return };
    let p = Arc::new(provider(&oidc, Grant::RefreshToken).await);
    let session = p.start_authorization().await.unwrap();
    let url = session.authorize_url().to_string();
    let stop = session.redirect_uri().to_string();
    let browser = tokio::spawn(async move {
        let mut b = Browser::default();
        let redirect = b
            .follow(&url, &stop)
            .await
            .expect("redirected to the loopback URI");
        assert!(
            redirect.query_pairs().any(|(k, _)| k == "iss"),
            "RFC 9207 iss sent"
        );
        let resp = b.send(Browser::client().get(redirect)).await;
        resp.status().as_u16()
    });
    let cred = session
        .finish("oidc_user", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(browser.await.unwrap(), 200);
    assert!(cred.has_key("refresh_token"), "offline access granted");
    assert_eq!(
        p.identity(&cred).await.unwrap().as_deref(),
        Some("test-user@example.test")
    );

    // A later refresh through the normal store path rotates the refresh token.
    let storage = Arc::new(MemoryStorage::new());
    storage.save(&cred).await.unwrap();
    let store = CredentialStore::builder()
        .storage(storage)
        .provider(p.clone())
        .build()
        .unwrap();
    let refreshed = store.refresh("oidc_user").await.unwrap();
    assert_ne!(
        value(&refreshed, "access_token"),
        value(&cred, "access_token")
    );
    assert_ne!(
        value(&refreshed, "refresh_token"),
        value(&cred, "refresh_token"),
        "rotation is on"
    );
    // The rotated-out refresh token is dead.
    let err = hive_cred_core::CredentialProvider::refresh(&*p, &cred)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_state_is_refused() {
    let Some(oidc) = start() else { return };
    let p = provider(&oidc, Grant::RefreshToken).await;
    let session = p.start_authorization().await.unwrap();
    let url = session.authorize_url().to_string();
    let stop = session.redirect_uri().to_string();
    let browser = tokio::spawn(async move {
        let mut b = Browser::default();
        let mut redirect = b.follow(&url, &stop).await.expect("redirected");
        let pairs: Vec<(String, String)> = redirect
            .query_pairs()
            .into_owned()
            .map(|(k, v)| {
                if k == "state" {
                    (k, "forged".into())
                } else {
                    (k, v)
                }
            })
            .collect();
        redirect.query_pairs_mut().clear().extend_pairs(pairs);
        b.send(Browser::client().get(redirect))
            .await
            .status()
            .as_u16()
    });
    let err = session
        .finish("x", Duration::from_secs(60))
        .await
        .unwrap_err();
    browser.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pkce_is_refused_by_the_server_with_a_clear_error() {
    let Some(oidc) = start() else { return };
    let p = provider(&oidc, Grant::RefreshToken).await;
    let session = p.start_authorization().await.unwrap();
    // A request without the PKCE challenge (as a client without PKCE would send).
    let mut url = session.authorize_url().clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let stop = session.redirect_uri().to_string();
    let browser = tokio::spawn(async move {
        let mut b = Browser::default();
        let redirect = b.follow(url.as_str(), &stop).await.expect("error redirect");
        b.send(Browser::client().get(redirect))
            .await
            .status()
            .as_u16()
    });
    let err = session
        .finish("x", Duration::from_secs(60))
        .await
        .unwrap_err();
    browser.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains("invalid_request"), "{err}");
    assert!(
        err.message().contains("refused the authorization request"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_grant() {
    let Some(oidc) = start() else { return };
    let p = provider(&oidc, Grant::ClientCredentials).await;
    let first = p.grant_client_credentials("svc").await.unwrap();
    assert!(!first.has_key("refresh_token"));
    let again = hive_cred_core::CredentialProvider::refresh(&p, &first)
        .await
        .unwrap();
    assert_ne!(value(&again, "access_token"), value(&first, "access_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_with_slow_down() {
    let Some(oidc) = start() else { return };
    let p = Arc::new(provider(&oidc, Grant::RefreshToken).await);
    let auth = p.start_device_authorization().await.unwrap();
    let complete = auth
        .verification_uri_complete()
        .expect("oidc-provider sends verification_uri_complete")
        .to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let polls = Arc::new(Mutex::new(0u32));
    // The user approves on another device after a few polls.
    let approve = {
        let polls = polls.clone();
        let stop = format!("{}/device/", oidc.issuer);
        tokio::spawn(async move {
            while *polls.lock().unwrap() < 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut b = Browser::default();
            let page = b
                .follow(&complete, &stop)
                .await
                .expect_err("a confirm form");
            let xsrf = page
                .split("name=\"xsrf\" value=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("xsrf field")
                .to_string();
            let user_code = page
                .split("name=\"user_code\" value=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string();
            let form = [
                ("xsrf", xsrf),
                ("user_code", user_code),
                ("confirm", "yes".into()),
            ];
            let device_url = stop.trim_end_matches('/').to_string();
            let resp = b
                .send(Browser::client().post(&device_url).form(&form))
                .await;
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            let next = url::Url::parse(&device_url)
                .unwrap()
                .join(&location)
                .unwrap();
            let _ = b.follow(next.as_str(), "http://never.invalid").await;
        })
    };
    let cred = p
        .poll_device_authorization_with("dev", &auth, {
            let log = log.clone();
            let polls = polls.clone();
            move |d| {
                log.lock().unwrap().push(d);
                *polls.lock().unwrap() += 1;
                // Polling faster than the interval makes the server answer slow_down;
                // the loop must widen its interval by 5 s each time.
                tokio::time::sleep(Duration::from_millis(300))
            }
        })
        .await
        .unwrap();
    approve.await.unwrap();
    assert!(cred.has_key("access_token"));
    let log = log.lock().unwrap();
    assert!(
        log.windows(2)
            .any(|w| w[1] == w[0] + Duration::from_secs(5)),
        "slow_down widened the interval: {log:?}"
    );
}
