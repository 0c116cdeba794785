//! The testkit's mock token server behaves as documented: rotation with reuse
//! detection, client authentication, fault injection and counters.

mod common;

use common::*;
use hive_cred_core::{CredentialProvider, ErrorKind};
use hive_cred_oauth::testkit::{Fault, MockConfig, MockTokenServer};
use hive_cred_oauth::{AuthStyle, OAuth2Config, OAuth2Provider};

fn provider_for(server: &MockTokenServer, secret: &str) -> OAuth2Provider {
    OAuth2Provider::new(
        OAuth2Config::new("mock", server.token_url(), CLIENT_ID)
            .with_client_secret(secret.into())
            .with_auth_style(AuthStyle::BasicAuth),
    )
    .expect("test fixture")
    .with_clock(clock())
}

#[tokio::test]
async fn rotation_then_reuse_revokes_the_family() {
    let server =
        MockTokenServer::start(MockConfig::new().with_client(CLIENT_ID, CLIENT_SECRET)).await;
    let p = provider_for(&server, CLIENT_SECRET);
    let seed = reveal(&server.current_refresh_token()).to_string();
    let fresh = p
        .refresh(&expired_credential("c", "mock", &seed))
        .await
        .unwrap();
    let rotated = value(&fresh, "refresh_token");
    assert_ne!(rotated, seed, "rotated");
    assert_eq!(rotated, reveal(&server.current_refresh_token()));
    assert_eq!(
        value(&fresh, "access_token"),
        reveal(&server.latest_access_token().unwrap())
    );
    // The old refresh token again: reuse detection revokes the family.
    let err = p
        .refresh(&expired_credential("c", "mock", &seed))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected);
    let err = p.refresh(&fresh).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected, "family revoked");
    let c = server.counts();
    assert_eq!((c.arrivals, c.grants, c.invalid_grants), (3, 1, 2));
    assert!(c.revoked);
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client() {
    let server =
        MockTokenServer::start(MockConfig::new().with_client(CLIENT_ID, CLIENT_SECRET)).await;
    let p = provider_for(&server, "wrong");
    let seed = reveal(&server.current_refresh_token()).to_string();
    let err = p
        .refresh(&expired_credential("c", "mock", &seed))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(server.counts().grants, 0);
}

#[tokio::test]
async fn injected_faults_come_in_order_then_the_endpoint_recovers() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let p = provider_for(&server, CLIENT_SECRET);
    let seed = reveal(&server.current_refresh_token()).to_string();
    let cred = expired_credential("c", "mock", &seed);
    server.fail_next(Fault::RateLimited(Some(7)));
    server.fail_next(Fault::ServerError);
    server.fail_next(Fault::Html);
    let e = p.refresh(&cred).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(7)));
    assert_eq!(
        p.refresh(&cred).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        p.refresh(&cred).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert!(
        p.refresh(&cred).await.is_ok(),
        "faults do not consume the grant"
    );
    let c = server.counts();
    assert_eq!((c.arrivals, c.grants), (4, 1));
}

#[tokio::test]
async fn issued_tokens_are_live_for_introspection_and_userinfo_until_revoked() {
    let server = MockTokenServer::start(MockConfig::new()).await;
    let p = OAuth2Provider::new(
        OAuth2Config::new("mock", server.token_url(), CLIENT_ID)
            .with_revocation_url(server.revocation_url())
            .with_introspection_url(server.introspection_url()),
    )
    .unwrap();
    let seed = reveal(&server.current_refresh_token()).to_string();
    let fresh = p
        .refresh(&expired_credential("c", "mock", &seed))
        .await
        .unwrap();
    assert!(p.validate(&fresh).await.unwrap());
    p.revoke(&fresh).await.unwrap();
    assert!(!p.validate(&fresh).await.unwrap());
    assert!(
        server.counts().revoked,
        "revoking the refresh token ends the family"
    );
}
