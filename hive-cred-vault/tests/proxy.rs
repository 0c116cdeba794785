//! A proxy set in the environment never sees a plain-HTTP Vault request (it would read
//! the token). The request is made by a child process (this test binary again) whose
//! environment names a loopback "proxy" that counts the bytes it receives.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hive_cred_core::CredentialStorage;

const CHILD_ENV: &str = "HIVE_PROXY_TEST_CHILD";

/// The child: lists through a storage whose environment names the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_lists_with_proxies_in_the_environment() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let target = support::shared().expect("the parent found a server");
    let storage = support::root_storage(&target, &support::unique_prefix("proxy")).await;
    storage.list().await.expect("list without the proxy");
}

#[test]
fn plain_http_to_vault_bypasses_environment_proxies() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let Some(target) = support::shared() else {
        return;
    };
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let proxy_addr = proxy.local_addr().expect("proxy address");
    proxy.set_nonblocking(true).expect("nonblocking");
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    let listening = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && seen.load(Ordering::SeqCst) != usize::MAX {
            if let Ok((mut conn, _)) = proxy.accept() {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                if let Ok(n) = conn.read(&mut buf) {
                    seen.fetch_add(n.max(1), Ordering::SeqCst);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let url = format!("http://{proxy_addr}");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_lists_with_proxies_in_the_environment",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env("HIVE_TEST_VAULT_ADDR", &target.addr)
        .env("HIVE_TEST_VAULT_TOKEN", &target.root_token)
        .env("HTTP_PROXY", &url)
        .env("http_proxy", &url)
        .env("ALL_PROXY", &url)
        .env("all_proxy", &url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .status()
        .expect("run the child");
    let bytes = received.swap(usize::MAX, Ordering::SeqCst);
    let _ = listening.join();
    assert!(status.success(), "the child failed: {status}");
    assert_eq!(bytes, 0, "the proxy received a plain-HTTP Vault request");
}
