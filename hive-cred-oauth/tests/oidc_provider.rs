//! Against a real authorisation server: `oidc-provider` (npm, version pinned by
//! `cargo xtask`, installed into `.tools/oidc-provider`) started on 127.0.0.1 by
//! `tests/oidc/server.mjs`. The test plays the browser (following redirects, keeping
//! cookies). Without node or the installed module the tests are skipped, except under
//! `CI=true`, where that is a failure.

mod common;
#[path = "oidc/support.rs"]
mod oidc_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::value;
use hive_cred_core::{CredentialStorage, CredentialStore, ErrorKind, MemoryStorage, SecretString};
use hive_cred_oauth::{AuthStyle, Grant, OAuth2Config, OAuth2Provider};

use oidc_support::{Browser, CLIENT_ID, CLIENT_SECRET, Oidc, start};

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
