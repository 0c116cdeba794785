//! Property tests through the public API: random credentials round trip, every bit flip
//! of a stored record is detected, arbitrary record files never panic the decoder.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use common::*;
use hive_cred_core::{CredentialObject, CredentialStorage, CredentialType, ErrorKind};
use proptest::prelude::*;
use secrecy::ExposeSecret;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn credential_strategy() -> impl Strategy<Value = CredentialObject> {
    (
        "[A-Za-z0-9_-][A-Za-z0-9_-]{0,40}(\\.[A-Za-z0-9_-]{1,10})?",
        prop::sample::select(vec![
            CredentialType::ApiKey,
            CredentialType::OAuth2,
            CredentialType::BasicAuth,
            CredentialType::BearerToken,
            CredentialType::Custom,
        ]),
        prop::collection::btree_map(
            "[a-z_][a-z0-9_-]{0,20}",
            ("\\PC{0,120}", prop::option::of(0i64..4_000_000_000)),
            0..5,
        ),
        prop::option::of("[a-z0-9_]{1,20}"),
        any::<bool>(),
    )
        .prop_map(|(id, t, keys, provider, auto)| {
            let mut c = CredentialObject::new(&id, t).unwrap();
            c.set_provider_id(provider).set_auto_refresh(auto);
            for (name, (value, expiry)) in keys {
                let at = expiry.map(|s| Utc.timestamp_opt(s, 0).unwrap());
                c.set_key(name, value, at).unwrap();
            }
            c
        })
}

fn values(c: &CredentialObject) -> BTreeMap<String, String> {
    c.keys()
        .map(|k| (k.name().to_string(), k.value().expose_secret().to_string())) // EXPOSE: the test compares the secret value.
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_credentials_round_trip(c in credential_strategy()) {
        let rt = runtime();
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let s = open(tmp.path(), raw_key(3)).await;
            s.save(&c).await.unwrap();
            let back = open(tmp.path(), raw_key(3)).await.load(c.id()).await.unwrap().unwrap();
            assert_eq!(back.version(), 1);
            let mut expected = c.metadata();
            expected.version = 1;
            assert_eq!(back.metadata(), expected);
            assert_eq!(values(&back), values(&c));
        });
    }

    #[test]
    fn arbitrary_record_files_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let rt = runtime();
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let s = open(tmp.path(), raw_key(3)).await;
            s.save(&api_key("target", "v")).await.unwrap();
            let file = record_files(tmp.path()).remove(0);
            std::fs::write(&file, &bytes).unwrap();
            let err = s.load(&id("target")).await.unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Corrupted | ErrorKind::Decryption), "{err}");
            // A handle that never decoded the record cannot know its id: it is skipped.
            let fresh = open(tmp.path(), raw_key(3)).await;
            assert!(fresh.list().await.unwrap().is_empty());
        });
    }
}

/// Exhaustive: every single-bit flip of a real record file fails to load with
/// `Corrupted` or `Decryption`: never a wrong credential.
#[test]
fn every_bit_flip_of_a_stored_record_is_detected() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let s = open(tmp.path(), raw_key(3)).await;
        let mut c = CredentialObject::new("flip", CredentialType::OAuth2).unwrap();
        c.set_key("access_token", "at-value", Some(Utc::now()))
            .unwrap();
        c.set_key("refresh_token", "rt-value", None).unwrap();
        s.save(&c).await.unwrap();
        let c = s.load(c.id()).await.unwrap().unwrap();
        s.save(&c).await.unwrap();
        assert_eq!(s.load(c.id()).await.unwrap().unwrap().version(), 2);
        let file = record_files(tmp.path()).remove(0);
        let original = std::fs::read(&file).unwrap();
        for bit in 0..original.len() * 8 {
            let mut flipped = original.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&file, &flipped).unwrap();
            let e = s.load(c.id()).await.unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::Decryption),
                "bit {bit}: {e}"
            );
        }
        std::fs::write(&file, &original).unwrap();
        assert!(s.load(c.id()).await.unwrap().is_some());
    });
}
