//! Obtaining the first token: authorization code + PKCE through the loopback listener
//! (the test plays the browser) and the device flow, against the testkit's server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hive_cred_core::{ActionRequired, CredentialProvider, ErrorKind};
use hive_cred_oauth::testkit::{Fault, MockConfig, MockTokenServer};
use hive_cred_oauth::{OAuth2Config, OAuth2Provider};

fn provider_for(
    server: &MockTokenServer,
    tweak: impl FnOnce(OAuth2Config) -> OAuth2Config,
) -> OAuth2Provider {
    OAuth2Provider::new(tweak(
        OAuth2Config::new("mock", server.token_url(), CLIENT_ID)
            .with_client_secret(CLIENT_SECRET.into())
            .with_authorization_url(server.authorization_url())
            .with_device_authorization_url(server.device_authorization_url())
            .with_scopes(["openid", "offline_access"]),
    ))
    .expect("test fixture")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("test browser")
}

/// The browser: opens the authorization URL and returns where the server redirects.
async fn consent(url: &str) -> url::Url {
    let resp = no_redirects().get(url).send().await.expect("test browser");
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().expect("test browser");
    url::Url::parse(location).expect("test browser")
}

/// The browser follows a redirect to the loopback listener.
async fn deliver(redirect: url::Url) -> u16 {
    no_redirects()
        .get(redirect)
        .send()
        .await
        .expect("test browser")
        .status()
        .as_u16()
}

#[tokio::test]
async fn code_with_pkce_through_the_loopback_listener() {
    let server = MockTokenServer::start(
        MockConfig::new()
            .with_client(CLIENT_ID, CLIENT_SECRET)
            .with_iss_in_redirect("http://issuer.test"),
    )
    .await;
    let p = provider_for(&server, |c| c.with_issuer("http://issuer.test/"));
    let session = p.start_authorization().await.unwrap();
    let url = session.authorize_url().clone();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], session.redirect_uri());
    assert!(session.redirect_uri().starts_with("http://127.0.0.1:"));
    assert_eq!(q["scope"], "openid offline_access");
    assert!(q["state"].len() >= 16);

    let browser = tokio::spawn(async move {
        let redirect = consent(url.as_str()).await;
        // A stray request first (favicon): ignored with 404.
        let mut stray = redirect.clone();
        stray.set_path("/favicon.ico");
        assert_eq!(deliver(stray).await, 404);
        deliver(redirect).await
    });
    let cred = session
        .finish("mock_user", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(browser.await.unwrap(), 200);
    assert_eq!(cred.provider_id(), Some("mock"));
    assert!(cred.auto_refresh());
    assert_eq!(
        value(&cred, "access_token"),
        reveal(&server.latest_access_token().unwrap())
    );
    assert_eq!(
        value(&cred, "refresh_token"),
        reveal(&server.current_refresh_token())
    );
    let form = server.requests("/token")[0].form();
    assert_eq!(form["grant_type"], "authorization_code");
    assert!(form.contains_key("code_verifier"));

    // The refresh token obtained works with the normal refresh path.
    let refreshed = p.refresh(&cred).await.unwrap();
    assert_ne!(
        value(&refreshed, "refresh_token"),
        value(&cred, "refresh_token")
    );
    assert_eq!(server.counts().grants, 2);
}

#[tokio::test]
async fn wrong_state_is_refused_and_the_code_is_not_used() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let p = provider_for(&server, |c| c);
    let session = p.start_authorization().await.unwrap();
    let url = session.authorize_url().clone();
    let browser = tokio::spawn(async move {
        let mut redirect = consent(url.as_str()).await;
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
        deliver(redirect).await
    });
    let err = session
        .finish("x", Duration::from_secs(30))
        .await
        .unwrap_err();
    browser.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.message().contains("state"), "{err}");
    assert_eq!(server.hits("/token"), 0, "the code was never exchanged");
}

#[tokio::test]
async fn mismatched_iss_is_refused() {
    let server =
        MockTokenServer::start(MockConfig::new().with_iss_in_redirect("http://evil.test")).await;
    let p = provider_for(&server, |c| c.with_issuer("http://issuer.test"));
    let session = p.start_authorization().await.unwrap();
    let url = session.authorize_url().clone();
    let browser = tokio::spawn(async move { deliver(consent(url.as_str()).await).await });
    let err = session
        .finish("x", Duration::from_secs(30))
        .await
        .unwrap_err();
    browser.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.message().contains("iss"), "{err}");
    assert_eq!(server.hits("/token"), 0);
}

#[tokio::test]
async fn no_redirect_within_the_timeout_is_unavailable() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let p = provider_for(&server, |c| c);
    let session = p.start_authorization().await.unwrap();
    let err = session
        .finish("x", Duration::from_millis(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn without_authorization_url_is_config() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let p = OAuth2Provider::new(OAuth2Config::new("p", server.token_url(), "c")).unwrap();
    assert_eq!(
        p.start_authorization().await.unwrap_err().kind(),
        ErrorKind::Config
    );
    assert_eq!(
        p.start_device_authorization().await.unwrap_err().kind(),
        ErrorKind::Config
    );
}

fn recording_sleep(
    log: Arc<Mutex<Vec<Duration>>>,
) -> impl FnMut(Duration) -> std::future::Ready<()> {
    move |d| {
        log.lock().expect("sleep log").push(d);
        std::future::ready(())
    }
}

#[tokio::test]
async fn device_flow_polls_at_the_interval_and_honours_slow_down() {
    let server = MockTokenServer::start(
        MockConfig::new()
            .with_client(CLIENT_ID, CLIENT_SECRET)
            .with_device_interval(2),
    )
    .await;
    let p = provider_for(&server, |c| c);
    let auth = p.start_device_authorization().await.unwrap();
    assert_eq!(auth.user_code(), "WDJB-MJHT");
    assert!(auth.verification_uri().ends_with("/activate"));
    assert_eq!(auth.interval(), Duration::from_secs(2));
    assert!(!format!("{auth:?}").contains("dc-"), "device code redacted");

    server.fail_next(Fault::OAuthError("authorization_pending".into()));
    server.fail_next(Fault::OAuthError("slow_down".into()));
    server.fail_next(Fault::OAuthError("authorization_pending".into()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let cred = p
        .poll_device_authorization_with("dev", &auth, recording_sleep(log.clone()))
        .await
        .unwrap();
    let s = Duration::from_secs;
    assert_eq!(*log.lock().unwrap(), [s(2), s(2), s(7), s(7)]);
    assert_eq!(
        value(&cred, "refresh_token"),
        reveal(&server.current_refresh_token())
    );
    let form = server.requests("/token")[3].form();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:device_code"
    );
}

#[tokio::test]
async fn device_flow_stops_at_expiry_denial_and_other_errors() {
    let server = MockTokenServer::start(MockConfig::new().with_device_interval(1)).await;
    let p = provider_for(&server, |c| c);

    let auth = p.start_device_authorization().await.unwrap();
    server.fail_next(Fault::OAuthError("expired_token".into()));
    let err = p
        .poll_device_authorization_with("d", &auth, |_| std::future::ready(()))
        .await
        .unwrap_err();
    // An expired device code is not an expired credential: the person must start over.
    assert_eq!(err.kind(), ErrorKind::AuthorizationRequired);
    match err.action_required() {
        Some(ActionRequired::AuthorizationRequired {
            id,
            provider,
            how_to_connect,
        }) => {
            assert_eq!(id, "d");
            assert_eq!(provider, p.provider_id());
            assert!(how_to_connect.contains("--device"), "{how_to_connect}");
        }
        other => panic!("expected an AuthorizationRequired action, got {other:?}"),
    }

    server.fail_next(Fault::OAuthError("access_denied".into()));
    let err = p
        .poll_device_authorization_with("d", &auth, |_| std::future::ready(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);

    // A server error is not retried.
    server.fail_next(Fault::ServerError);
    let before = server.counts().arrivals;
    let err = p
        .poll_device_authorization_with("d", &auth, |_| std::future::ready(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(server.counts().arrivals, before + 1);

    // Pending for longer than the code lives (600 s at 1 s): expired, without waiting.
    for _ in 0..700 {
        server.fail_next(Fault::OAuthError("authorization_pending".into()));
    }
    let err = p
        .poll_device_authorization_with("d", &auth, |_| std::future::ready(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthorizationRequired);
    assert!(err.action_required().is_some());
}

#[tokio::test]
async fn discovery_from_the_issuer_then_identity_from_userinfo() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let spec: hive_cred_oauth::OAuth2ProviderSpec = serde_json::from_value(serde_json::json!({
        "provider_id": "disc", "client_id": "c", "issuer": server.issuer()
    }))
    .unwrap();
    let config = spec.into_config(None).unwrap();
    assert!(config.needs_discovery());
    assert!(
        OAuth2Provider::new(config.clone()).is_err(),
        "no token URL yet"
    );
    let config = config.discover().await.unwrap();
    assert!(!config.needs_discovery());
    assert_eq!(config.token_url(), server.token_url());
    assert_eq!(
        config.authorization_url(),
        Some(server.authorization_url().as_str())
    );
    assert_eq!(
        config.device_authorization_url(),
        Some(server.device_authorization_url().as_str())
    );
    let p = OAuth2Provider::new(config).unwrap();
    let auth = p.start_device_authorization().await.unwrap();
    let cred = p
        .poll_device_authorization_with("d", &auth, |_| std::future::ready(()))
        .await
        .unwrap();
    assert_eq!(
        p.identity(&cred).await.unwrap().as_deref(),
        Some("user@example.test")
    );

    // Metadata whose issuer differs is refused (RFC 8414 section 3.3).
    let other = MockTokenServer::start(MockConfig::new().with_route(
        "/.well-known/oauth-authorization-server/tenant",
        hive_cred_oauth::testkit::Canned::json(
            200,
            r#"{"issuer":"http://evil.test","token_endpoint":"http://127.0.0.1:1/token"}"#,
        ),
    ))
    .await;
    let wrong = OAuth2Config::new("x", "", "c").with_issuer(other.url("/tenant"));
    let err = wrong.discover().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("issuer"), "{err}");
}
