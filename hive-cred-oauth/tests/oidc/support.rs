//! The real authorisation server of the tests: `oidc-provider` started on 127.0.0.1 by
//! `tests/oidc/server.mjs`, and a browser that follows redirects keeping cookies. Used
//! by this crate's `oidc_provider` tests and by hive-cred-runtime's `connect` tests.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test support: a panic is the failure report

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The test client registered in `server.mjs`.
pub const CLIENT_ID: &str = "hive-test";
/// Its secret.
pub const CLIENT_SECRET: &str = "hive-test-secret";

/// The running node server; killed on drop.
pub struct Oidc {
    child: Child,
    pub issuer: String,
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
pub fn start() -> Option<Oidc> {
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
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hive-cred-oauth/tests/oidc/server.mjs");
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
pub struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn client() -> reqwest::Client {
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

    pub async fn send(&mut self, rb: reqwest::RequestBuilder) -> reqwest::Response {
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
    pub async fn follow(&mut self, url: &str, stop: &str) -> Result<reqwest::Url, String> {
        let mut current = reqwest::Url::parse(url).expect("url");
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
