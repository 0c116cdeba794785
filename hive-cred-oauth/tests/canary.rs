//! Canary: the client secret, refresh tokens and access tokens never appear in Debug,
//! Display, errors or captured tracing output (TRACE level, every target, `log`
//! records of the HTTP stack included). Its own binary: it installs a global subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use hive_cred_core::testkit::CANARY;
use hive_cred_core::{
    CredentialProvider, CredentialStorage, CredentialStore, Error, MemoryStorage, SecretString,
};
use hive_cred_oauth::{AuthStyle, OAuth2Config, OAuth2Provider};

const REFRESH: &str = "canary-5f3b-refresh-token-value";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn error_text(e: &Error) -> String {
    let mut out = format!("{e}\n{e:?}\n");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    out
}

fn provider_for(server: &TestServer, path: &str, style: AuthStyle) -> OAuth2Provider {
    let config = OAuth2Config::new("canary_oauth", server.url(path), CLIENT_ID)
        .with_client_secret(SecretString::from(CANARY))
        .with_auth_style(style)
        .with_revocation_url(server.url("/revoke"))
        .with_introspection_url(server.url("/introspect"));
    OAuth2Provider::new(config)
        .expect("valid config")
        .with_clock(clock())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_errors_debug_or_logs() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let server = TestServer::start().await;
    let mut texts: Vec<String> = Vec::new();

    // A successful refresh through the store, with rotation to canary tokens.
    for style in [AuthStyle::BasicAuth, AuthStyle::RequestBody] {
        let provider = provider_for(&server, "/token/canary", style);
        texts.push(format!("{provider:?}"));
        texts.push(format!("{:?}", provider.config()));
        let storage = Arc::new(MemoryStorage::new());
        let store = CredentialStore::builder()
            .storage(storage.clone())
            .provider(Arc::new(provider))
            .clock(clock())
            .build()
            .unwrap();
        storage
            .save(&expired_credential("canary_cred", "canary_oauth", REFRESH))
            .await
            .unwrap();
        let got = store.get("canary_cred").await.unwrap();
        texts.push(format!("{got:?}"));
        texts.push(got.to_string());
        texts.push(serde_json::to_string(&*got).unwrap());
    }
    assert_eq!(server.hits("/token/canary"), 2);

    // Failures of every class.
    for path in [
        "/token/invalid-grant",
        "/token/github-error",
        "/token/429",
        "/token/500",
        "/token/html",
        "/token/bad-json",
        "/token/wrong-type",
        "/token/redirect",
        "/nope",
    ] {
        let provider = provider_for(&server, path, AuthStyle::BasicAuth);
        let err = provider
            .refresh(&expired_credential("canary_cred", "canary_oauth", REFRESH))
            .await
            .unwrap_err();
        texts.push(error_text(&err));
    }
    let slow = OAuth2Provider::new(
        OAuth2Config::new("canary_oauth", server.url("/token/slow"), CLIENT_ID)
            .with_client_secret(SecretString::from(CANARY))
            .with_timeout(std::time::Duration::from_millis(100)),
    )
    .unwrap();
    let err = slow
        .refresh(&expired_credential("canary_cred", "canary_oauth", REFRESH))
        .await
        .unwrap_err();
    texts.push(error_text(&err));

    // Revocation and introspection send the tokens too.
    let provider = provider_for(&server, "/token/canary", AuthStyle::BasicAuth);
    let mut cred = expired_credential("canary_cred", "canary_oauth", REFRESH);
    cred.set_key("access_token", CANARY_ACCESS, None).unwrap();
    provider.revoke(&cred).await.unwrap();
    assert!(!provider.validate(&cred).await.unwrap());

    // The secrets did travel (so the search below is meaningful).
    let revoke = server.requests("/revoke");
    assert_eq!(revoke[0].form()["token"], REFRESH);
    let basic = STANDARD.encode(format!(
        "{}:{}",
        url::form_urlencoded::byte_serialize(CLIENT_ID.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(CANARY.as_bytes()).collect::<String>()
    ));
    assert_eq!(
        revoke[0].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("refreshing credential") && logs.contains("canary_cred"),
        "the subscriber captured the provider's events:\n{logs}"
    );
    assert!(logs.contains("hive_cred::store"), "store events captured");

    let needles = [
        CANARY,
        REFRESH,
        CANARY_ACCESS,
        CANARY_ROTATED,
        basic.as_str(),
        "canary-5f3b",
    ];
    for text in texts.iter().chain(std::iter::once(&logs)) {
        for needle in needles {
            assert!(!text.contains(needle), "{needle:?} leaked into:\n{text}");
        }
    }
}
