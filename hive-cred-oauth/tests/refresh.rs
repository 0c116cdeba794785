//! `OAuth2Provider::refresh` against a real token endpoint on 127.0.0.1.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::TimeZone;
use common::*;
use hive_cred_core::{CredentialProvider, ErrorKind};
use hive_cred_oauth::{AuthStyle, OAuth2Config, OAuth2Provider};

/// The error of refreshing the standard expired test credential through `p`.
#[allow(clippy::unwrap_used)] // test helper: a panic is the failure report
async fn refresh_err(p: &OAuth2Provider) -> hive_cred_core::Error {
    p.refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap_err()
}

/// [`refresh_err`] through the default test provider for `path`.
async fn error_from(server: &TestServer, path: &str) -> hive_cred_core::Error {
    refresh_err(&provider(server, path, clock(), |c| c)).await
}

#[tokio::test]
async fn refresh_with_rotation_replaces_both_tokens() {
    let server = TestServer::start().await;
    let clock = clock();
    let p = provider(&server, "/token/rotate", clock.clone(), |c| c);
    let old = expired_credential("gh", "test_oauth", "rt-original");

    let fresh = p.refresh(&old).await.unwrap();

    assert_eq!(fresh.id(), old.id());
    assert_eq!(value(&fresh, "access_token"), "at-rotated");
    assert_eq!(value(&fresh, "refresh_token"), "rt-rotated");
    let at = fresh.key("access_token").unwrap();
    assert_eq!(
        at.expires_at(),
        Some(t0() + chrono::Duration::seconds(3600))
    );
    assert_eq!(at.metadata().get("token_type").unwrap(), "Bearer");
    assert_eq!(at.metadata().get("scope").unwrap(), "repo user");
    assert_eq!(fresh.last_refreshed(), Some(t0()));
    assert!(!fresh.needs_refresh_at(t0(), chrono::Duration::minutes(5)));
    // The input is untouched.
    assert_eq!(value(&old, "refresh_token"), "rt-original");
    assert_eq!(server.hits("/token/rotate"), 1);
    let form = server.requests("/token/rotate")[0].form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt-original");
}

#[tokio::test]
async fn refresh_without_rotation_keeps_old_refresh_token_and_metadata() {
    let server = TestServer::start().await;
    let clock = clock();
    let p = provider(&server, "/token/keep", clock.clone(), |c| c);
    let mut old = expired_credential("gh", "test_oauth", "rt-keep-me");
    // Previous scope metadata survives a response without `scope`.
    old.set_key_with_metadata(
        "access_token",
        "at-old",
        Some(t0()),
        [("scope".to_string(), "repo".to_string())].into(),
    )
    .unwrap();
    old.set_key("other_key", "untouched", None).unwrap();

    let fresh = p.refresh(&old).await.unwrap();
    assert_eq!(value(&fresh, "access_token"), "at-kept");
    assert_eq!(value(&fresh, "refresh_token"), "rt-keep-me");
    assert_eq!(value(&fresh, "other_key"), "untouched");
    let at = fresh.key("access_token").unwrap();
    assert_eq!(
        at.expires_at(),
        Some(t0() + chrono::Duration::seconds(1800))
    );
    assert_eq!(at.metadata().get("token_type").unwrap(), "bearer");
    assert_eq!(at.metadata().get("scope").unwrap(), "repo");
}

#[tokio::test]
async fn expiry_counts_from_request_start_on_the_injected_clock() {
    let server = TestServer::start().await;
    let clock = clock();
    let later = chrono::Utc.with_ymd_and_hms(2031, 6, 1, 12, 0, 0).unwrap();
    clock.set(later);
    let p = provider(&server, "/token/rotate", clock.clone(), |c| c);
    let fresh = p
        .refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    assert_eq!(
        fresh.key("access_token").unwrap().expires_at(),
        Some(later + chrono::Duration::hours(1))
    );
}

#[tokio::test]
async fn string_expires_in_is_read() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/string-expires", clock(), |c| c);
    let fresh = p
        .refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    assert_eq!(value(&fresh, "access_token"), "at-str");
    assert_eq!(
        fresh.key("access_token").unwrap().expires_at(),
        Some(t0() + chrono::Duration::seconds(7200))
    );
}

#[tokio::test]
async fn missing_expires_in_assumes_the_configured_default_lifetime() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/no-expires", clock(), |c| c);
    let fresh = p
        .refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    assert_eq!(
        fresh.key("access_token").unwrap().expires_at(),
        Some(t0() + chrono::Duration::hours(1)),
        "documented default: 1 hour"
    );

    let p = provider(&server, "/token/no-expires", clock(), |c| {
        c.with_default_lifetime(Some(Duration::from_secs(600)))
    });
    let fresh = p
        .refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    assert_eq!(
        fresh.key("access_token").unwrap().expires_at(),
        Some(t0() + chrono::Duration::minutes(10))
    );

    let p = provider(&server, "/token/no-expires", clock(), |c| {
        c.with_default_lifetime(None)
    });
    let fresh = p
        .refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    assert_eq!(fresh.key("access_token").unwrap().expires_at(), None);
}

#[tokio::test]
async fn dead_grants_are_refresh_rejected_naming_credential_and_provider() {
    let server = TestServer::start().await;
    for path in [
        "/token/invalid-grant",
        "/token/unauthorized-client",
        "/token/github-error",
    ] {
        let p = provider(&server, path, clock(), |c| c);
        let err = p
            .refresh(&expired_credential("github_production", "test_oauth", "rt"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RefreshRejected, "{path}: {err}");
        assert!(!err.is_temporary(), "{path}");
        let msg = err.to_string();
        assert!(msg.contains("github_production"), "{msg}");
        assert!(msg.contains("test_oauth"), "{msg}");
        assert!(
            !msg.contains("canary"),
            "no error_description echoed: {msg}"
        );
    }
    let err = error_from(&server, "/token/invalid-grant").await;
    assert_eq!(err.context_value("error_code"), Some("invalid_grant"));
    assert_eq!(err.context_value("status"), Some("400"));
}

#[tokio::test]
async fn invalid_client_is_a_config_error() {
    let server = TestServer::start().await;
    let err = error_from(&server, "/token/invalid-client").await;
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn no_refresh_token_is_rejected_without_a_request() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| c);
    let mut c = expired_credential("c", "test_oauth", "rt");
    c.remove_key("refresh_token");
    let err = p.refresh(&c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected);
    assert!(err.to_string().contains("no refresh_token"), "{err}");
    assert!(!p.supports(&c));
    assert_eq!(server.hits("/token/rotate"), 0);
}

#[tokio::test]
async fn http_429_is_rate_limited_with_retry_after() {
    let server = TestServer::start().await;
    let err = error_from(&server, "/token/429").await;
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert!(err.is_temporary());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));

    // An HTTP-date, resolved against the injected clock (t0 = 2030-01-01 00:00:00).
    let err = error_from(&server, "/token/429-date").await;
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(90)));
}

#[tokio::test]
async fn server_errors_are_unavailable_without_the_body() {
    let server = TestServer::start().await;
    let err = error_from(&server, "/token/500").await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert_eq!(err.context_value("status"), Some("500"));
    assert!(!format!("{err} {err:?}").contains("canary"));

    let err = error_from(&server, "/token/503-retry").await;
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_slow_endpoint_times_out_as_unavailable() {
    let server = TestServer::start().await;
    // The server waits 5 s; the client gives up after 200 ms.
    let p = provider(&server, "/token/slow", clock(), |c| {
        c.with_timeout(Duration::from_millis(200))
    });
    let err = refresh_err(&p).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    // A port that was just free: bind, read the port, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = OAuth2Config::new("test_oauth", format!("http://{addr}/token"), CLIENT_ID);
    let p = OAuth2Provider::new(config).unwrap();
    let err = refresh_err(&p).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
}

#[tokio::test]
async fn html_and_malformed_bodies_are_unavailable_without_body_text() {
    let server = TestServer::start().await;
    for path in [
        "/token/html",
        "/token/html-400",
        "/token/bad-json",
        "/token/wrong-type",
    ] {
        let err = error_from(&server, path).await;
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{path}: {err}");
        let all = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
        assert!(!all.contains("canary"), "{path}: body leaked: {all}");
        assert!(!all.contains("Sign in") && !all.contains("<html"), "{all}");
    }
    let err = error_from(&server, "/token/html").await;
    assert_eq!(err.context_value("status"), Some("200"));
    assert!(
        err.context_value("content_type")
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn redirects_are_refused_and_not_followed() {
    let server = TestServer::start().await;
    let err = error_from(&server, "/token/redirect").await;
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert_eq!(server.hits("/token/redirect"), 1);
    assert_eq!(
        server.hits("/token/redirect-target"),
        0,
        "redirect followed"
    );
}

#[tokio::test]
async fn unknown_path_is_a_config_error() {
    let server = TestServer::start().await;
    let err = error_from(&server, "/nope").await;
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn basic_auth_request_is_well_formed() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/echo", clock(), |c| {
        c.with_auth_style(AuthStyle::BasicAuth)
            .with_scopes(["repo", "read:user"])
            .with_extra_param("audience", "https://api.example.com")
    });
    p.refresh(&expired_credential("c", "test_oauth", "rt-α+/="))
        .await
        .unwrap();
    let reqs = server.requests("/token/echo");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.accept.as_deref(), Some("application/json"));

    // Authorization: Basic base64(urlencode(id) ":" urlencode(secret)) (RFC 6749 2.3.1).
    let auth = r.authorization.as_deref().expect("Authorization header");
    let b64 = auth.strip_prefix("Basic ").expect("Basic scheme");
    let decoded = String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap();
    let (user, pass) = decoded.split_once(':').expect("user:pass");
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned()
    };
    assert_eq!(unescape(user), CLIENT_ID);
    assert_eq!(unescape(pass), CLIENT_SECRET);
    assert!(!pass.contains(':'), "the secret's ':' must be escaped");

    let form = r.form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt-α+/=");
    assert_eq!(form["scope"], "repo read:user");
    assert_eq!(form["audience"], "https://api.example.com");
    assert!(!form.contains_key("client_id"), "{form:?}");
    assert!(!form.contains_key("client_secret"), "{form:?}");
    assert_eq!(form.len(), 4, "{form:?}");
}

#[tokio::test]
async fn request_body_auth_request_is_well_formed() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/echo", clock(), |c| {
        c.with_auth_style(AuthStyle::RequestBody)
    });
    p.refresh(&expired_credential("c", "test_oauth", "rt-body"))
        .await
        .unwrap();
    let r = &server.requests("/token/echo")[0];
    assert_eq!(r.authorization, None);
    let form = r.form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt-body");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert!(
        !form.contains_key("scope"),
        "no scopes configured: {form:?}"
    );
    assert_eq!(form.len(), 4, "{form:?}");
}

#[tokio::test]
async fn public_client_sends_client_id_in_body() {
    let server = TestServer::start().await;
    let config = OAuth2Config::new("test_oauth", server.url("/token/echo"), "public-client");
    let p = OAuth2Provider::new(config).unwrap();
    p.refresh(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    let r = &server.requests("/token/echo")[0];
    assert_eq!(r.authorization, None);
    let form = r.form();
    assert_eq!(form["client_id"], "public-client");
    assert!(!form.contains_key("client_secret"));
}

#[test]
fn non_loopback_http_token_url_is_rejected_at_new() {
    for url in [
        "http://auth.example.com/token",
        "http://192.168.1.10/token",
        "https://user:pw@auth.example.com/token",
    ] {
        let err = OAuth2Provider::new(OAuth2Config::new("p", url, "c")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
    for url in [
        "https://auth.example.com/token",
        "http://127.0.0.1:1/token",
        "http://[::1]:1/token",
        "http://localhost:1/token",
    ] {
        assert!(
            OAuth2Provider::new(OAuth2Config::new("p", url, "c")).is_ok(),
            "{url}"
        );
    }
}

#[tokio::test]
async fn declares_the_oauth2_and_bearer_token_types_it_refreshes() {
    use hive_cred_core::CredentialType;
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| c);
    let types = p.credential_types();
    assert!(types.contains(&CredentialType::OAuth2), "{types:?}");
    assert!(types.contains(&CredentialType::BearerToken), "{types:?}");
    assert!(!types.contains(&CredentialType::ApiKey), "{types:?}");
    // supports() follows the declared types (as the trait's default does), then needs
    // a refresh token.
    let oauth = expired_credential("o", "test_oauth", "rt");
    assert!(p.supports(&oauth));
    for (t, expected) in [
        (CredentialType::BearerToken, true),
        (CredentialType::ApiKey, false),
        (CredentialType::BasicAuth, false),
    ] {
        let mut c = hive_cred_core::CredentialObject::builder("c", t)
            .provider_id("test_oauth")
            .build()
            .unwrap();
        c.set_key("refresh_token", "rt", None).unwrap();
        assert_eq!(p.supports(&c), expected, "{t:?}");
    }
    // A client-credentials provider declares the same types and needs no refresh token.
    let cc = provider(&server, "/token/rotate", clock(), |c| {
        c.with_grant(hive_cred_oauth::Grant::ClientCredentials)
    });
    assert_eq!(cc.credential_types(), types);
    let mut bare = hive_cred_core::CredentialObject::builder("b", CredentialType::OAuth2)
        .provider_id("test_oauth")
        .build()
        .unwrap();
    bare.set_key("access_token", "at", None).unwrap();
    assert!(cc.supports(&bare));
    assert!(!p.supports(&bare));
}
