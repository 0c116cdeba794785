//! The canary secret never shows in Debug, Display, errors or captured tracing output,
//! across every operation that logs or fails.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use hive_cred_core::testkit::CANARY;
use hive_cred_core::{CredentialObject, CredentialStorage, CredentialType};
use hive_cred_local::{KeySource, LocalStorage, RawKey};
use secrecy::SecretString;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_never_leaks() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let pass = || KeySource::Passphrase(SecretString::from(CANARY));
    let s = LocalStorage::open_with(tmp.path(), pass(), fast_options())
        .await
        .unwrap();
    let mut c = CredentialObject::new("canary", CredentialType::BearerToken).unwrap();
    c.set_key("token", SecretString::from(CANARY), None)
        .unwrap();
    s.save(&c).await.unwrap();
    s.save(&api_key("other", CANARY)).await.unwrap();
    let loaded = s.load(c.id()).await.unwrap().unwrap();

    let mut outputs = vec![
        format!("{s:?}"),
        format!("{loaded:?}"),
        loaded.to_string(),
        format!("{:?}", pass()),
        format!("{:?}", KeySource::RawKey(RawKey::from_bytes([b'c'; 32]))),
    ];
    let mut record = |e: hive_cred_core::Error| outputs.push(format!("{e} {e:?}"));
    record(s.save(&c).await.unwrap_err()); // conflict
    // Damage the other record: load errors and list warnings.
    let files = record_files(tmp.path());
    for f in &files {
        let mut bytes = std::fs::read(f).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(f, bytes).unwrap();
    }
    record(s.load(c.id()).await.unwrap_err());
    let fresh = LocalStorage::open_with(tmp.path(), pass(), fast_options())
        .await
        .unwrap();
    assert!(fresh.list().await.unwrap().is_empty());
    record(
        LocalStorage::open_with(
            tmp.path(),
            KeySource::Passphrase("x".into()),
            fast_options(),
        )
        .await
        .unwrap_err(),
    );
    // Damaged records stop the rotation a passphrase change includes, and a later one.
    let err = s
        .change_passphrase(KeySource::Passphrase(format!("{CANARY}-2").into()))
        .await
        .unwrap_err();
    assert!(err.message().contains("only the new one opens"), "{err}");
    assert!(err.message().contains("rotate again"), "{err}");
    record(err);
    record(s.rotate_data_key().await.unwrap_err());
    record(KeySource::from_lookup(|_| Some(format!("!{CANARY}"))).unwrap_err());

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("skipping an unreadable credential record"),
        "{logs}"
    );
    outputs.push(logs);
    for out in outputs {
        assert!(!out.contains(CANARY), "secret leaked: {out}");
    }
    for (_, bytes) in snapshot(tmp.path()) {
        assert!(!String::from_utf8_lossy(&bytes).contains(CANARY));
    }
}
