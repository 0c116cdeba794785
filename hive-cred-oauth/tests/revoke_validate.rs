//! RFC 7009 revocation and validation (RFC 7662 introspection, user-info) on 127.0.0.1.

mod common;

use common::*;
use hive_cred_core::{CredentialProvider, ErrorKind};
use hive_cred_oauth::AuthStyle;

#[tokio::test]
async fn revoke_posts_refresh_then_access_token_with_hints() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| {
        c.with_revocation_url(server.url("/revoke"))
            .with_auth_style(AuthStyle::RequestBody)
    });
    p.revoke(&expired_credential("c", "test_oauth", "rt-revoke"))
        .await
        .unwrap();
    let reqs = server.requests("/revoke");
    assert_eq!(reqs.len(), 2);
    let first = reqs[0].form();
    assert_eq!(first["token"], "rt-revoke");
    assert_eq!(first["token_type_hint"], "refresh_token");
    assert_eq!(first["client_id"], CLIENT_ID);
    assert_eq!(first["client_secret"], CLIENT_SECRET);
    let second = reqs[1].form();
    assert_eq!(second["token"], "at-old");
    assert_eq!(second["token_type_hint"], "access_token");
    assert_eq!(reqs[0].method, "POST");
}

#[tokio::test]
async fn revoke_with_basic_auth_sends_credentials_in_header() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| {
        c.with_revocation_url(server.url("/revoke"))
    });
    p.revoke(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();
    let r = &server.requests("/revoke")[0];
    assert!(r.authorization.as_deref().unwrap().starts_with("Basic "));
    assert!(!r.form().contains_key("client_secret"));
}

#[tokio::test]
async fn revoke_tolerates_unsupported_access_token_revocation() {
    let server = TestServer::start_with(|c| c.with_access_token_revocation(false)).await;
    let p = provider(&server, "/token/rotate", clock(), |c| {
        c.with_revocation_url(server.url("/revoke"))
    });
    p.revoke(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap();

    // With only an access token, "unsupported_token_type" is an error.
    let mut only_access = expired_credential("c", "test_oauth", "rt");
    only_access.remove_key("refresh_token");
    let err = p.revoke(&only_access).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

#[tokio::test]
async fn revoke_without_url_is_unsupported() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| c);
    let err = p
        .revoke(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[tokio::test]
async fn validate_uses_introspection() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| {
        c.with_introspection_url(server.url("/introspect"))
    });
    let mut c = expired_credential("c", "test_oauth", "rt");
    assert!(!p.validate(&c).await.unwrap());
    c.set_key("access_token", "at-active", None).unwrap();
    assert!(p.validate(&c).await.unwrap());
    let reqs = server.requests("/introspect");
    assert_eq!(reqs.len(), 2);
    let form = reqs[1].form();
    assert_eq!(form["token"], "at-active");
    assert_eq!(form["token_type_hint"], "access_token");
    assert!(
        reqs[1]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic ")
    );
}

#[tokio::test]
async fn validate_uses_userinfo_bearer() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| {
        c.with_userinfo_url(server.url("/userinfo"))
    });
    let mut c = expired_credential("c", "test_oauth", "rt");
    assert!(!p.validate(&c).await.unwrap(), "401 means invalid");
    c.set_key("access_token", "at-active", None).unwrap();
    assert!(p.validate(&c).await.unwrap());
    let reqs = server.requests("/userinfo");
    assert_eq!(reqs[1].method, "GET");
    assert_eq!(reqs[1].authorization.as_deref(), Some("Bearer at-active"));
}

#[tokio::test]
async fn validate_without_urls_answers_locally() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| c);
    let mut c = expired_credential("c", "test_oauth", "rt");
    assert!(p.validate(&c).await.unwrap(), "refreshable");
    c.remove_key("refresh_token");
    assert!(!p.validate(&c).await.unwrap(), "expired, not refreshable");
    c.set_key("access_token", "a", Some(t0() + chrono::Duration::hours(1)))
        .unwrap();
    assert!(p.validate(&c).await.unwrap());
    assert_eq!(server.hits("/token/rotate"), 0);
}

#[tokio::test]
async fn validate_endpoint_failures_are_typed() {
    let server = TestServer::start().await;
    let p = provider(&server, "/token/rotate", clock(), |c| {
        c.with_userinfo_url(server.url("/token/500"))
    });
    let err = p
        .validate(&expired_credential("c", "test_oauth", "rt"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.context_value("operation"), Some("validate"));
}
