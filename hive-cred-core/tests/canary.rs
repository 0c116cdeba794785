//! Canary: a secret pushed through every output path of core never appears.
//! Alone in its test binary so the global tracing subscriber sees every event.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use hive_cred_core::testkit::CANARY;
use hive_cred_core::{
    CredentialObject, CredentialProvider, CredentialStore, CredentialType, Error, ErrorKind,
    ManualClock, MemoryStorage, Result, codec,
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
}

/// Refreshes once into the canary, then rejects.
#[derive(Debug, Default)]
struct CanaryProvider(AtomicUsize);

#[async_trait]
impl CredentialProvider for CanaryProvider {
    fn provider_id(&self) -> &str {
        "oauth2_provider"
    }
    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut n = c.clone();
            n.set_key("access_token", CANARY, Some(t0() + Duration::hours(1)))?;
            n.set_last_refreshed(t0());
            Ok(n)
        } else {
            Err(Error::new(ErrorKind::RefreshRejected, "invalid_grant"))
        }
    }
}

#[tokio::test]
async fn canary_never_in_debug_display_serde_errors_or_tracing() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(capture.clone())
            .finish(),
    )
    .unwrap();

    let clock = Arc::new(ManualClock::new(t0()));
    let store = CredentialStore::builder()
        .storage(Arc::new(MemoryStorage::new()))
        .provider(Arc::new(CanaryProvider::default()))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut c = CredentialObject::builder("gh", CredentialType::OAuth2)
        .provider_id("oauth2_provider")
        .auto_refresh(true)
        .build()
        .unwrap();
    c.set_key("access_token", CANARY, Some(t0() - Duration::seconds(1)))
        .unwrap();
    c.set_key("refresh_token", CANARY, None).unwrap();

    let mut outputs = vec![
        format!("{c:?}"),
        c.to_string(),
        serde_json::to_string(&c).unwrap(),
        serde_json::to_string(&c.metadata()).unwrap(),
        format!("{:?}", c.key("access_token").unwrap()),
        c.key("access_token").unwrap().to_string(),
    ];
    // The codec is the audited exception: it must contain the value, and its errors not.
    let stored = codec::to_stored_bytes(&c).unwrap();
    assert!(String::from_utf8_lossy(&stored).contains(CANARY));
    let err = codec::from_stored(&stored[..stored.len() - 1]).unwrap_err();
    outputs.push(format!("{err} {err:?}"));

    store.save(c).await.unwrap();
    store.clear_cache();
    let got = store.get("gh").await.unwrap();
    outputs.push(format!("{got:?} {got} {store:?}"));
    outputs.push(format!(
        "{:?}",
        store.get_key("gh", "access_token").await.unwrap()
    ));
    outputs.push(format!(
        "{:?}",
        store.resolve("x {{gh.access_token}}").await.unwrap()
    ));
    clock.advance(Duration::hours(2));
    store.clear_cache();
    let err = store.get("gh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected);
    outputs.push(format!("{err} {err:?}"));
    let err = store.get_key("gh", "nope").await.unwrap_err();
    outputs.push(format!("{err} {err:?}"));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("refreshed credential"),
        "tracing captured: {logs}"
    );
    assert!(
        logs.contains("credential refresh failed"),
        "tracing captured: {logs}"
    );
    outputs.push(logs);
    for out in outputs {
        assert!(!out.contains(CANARY), "secret leaked: {out}");
    }
}
