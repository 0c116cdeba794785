//! Test support (feature `testkit`): the storage conformance suite and [`ManualClock`].
//!
//! Every backend runs the same suite against its own storage:
//!
//! ```ignore
//! // in a backend's tests (needs tokio with "macros" and "rt-multi-thread" as a dev-dependency)
//! hive_cred_core::storage_conformance_tests!(async { make_my_storage().await });
//! ```
//!
//! The macro expands to one `#[tokio::test]` per check. The checks are also public
//! functions taking `&dyn CredentialStorage`, and [`run_all`] runs them in order.
//! Ids are made unique per run, so a shared backend (one Vault) works, as long as it
//! holds nothing else under the prefix it was given.

use std::collections::HashSet;

use chrono::{Duration, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};

pub use crate::clock::ManualClock;
use crate::credential::{CredentialObject, CredentialType, Metadata};
use crate::error::ErrorKind;
use crate::id::CredentialId;
use crate::storage::CredentialStorage;

/// A value that must never appear in output. Tests search Debug, Display, errors and
/// logs for it.
pub const CANARY: &str = "canary-5f3b9e1c-never-print-me";

/// A unique id for a test run: `{prefix}-{random}`.
pub fn unique_id(prefix: &str) -> CredentialId {
    let n: u64 = rand::random();
    CredentialId::new(&format!("{prefix}-{n:016x}")).expect("generated ids are valid")
}

fn rich_credential(id: CredentialId, value: &str) -> CredentialObject {
    let mut c = CredentialObject::with_id(id, CredentialType::OAuth2);
    c.set_provider_id(Some("oauth2_provider".into()))
        .set_auto_refresh(true)
        .set_description(Some("conformance ✓".into()))
        .set_tags(vec!["a".into(), "b c".into()]);
    c.set_key_with_metadata(
        "access_token",
        value,
        Some(
            Utc.with_ymd_and_hms(2031, 5, 6, 7, 8, 9)
                .single()
                .expect("valid date"),
        ),
        Metadata::from([
            ("token_type".into(), "Bearer".into()),
            ("scope".into(), "repo user".into()),
        ]),
    )
    .expect("valid key");
    c.set_key("refresh_token", "rt-ünï-☃", None)
        .expect("valid key");
    c.set_last_refreshed(
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date"),
    );
    c
}

async fn must_load(s: &dyn CredentialStorage, id: &CredentialId) -> CredentialObject {
    s.load(id)
        .await
        .unwrap_or_else(|e| panic!("load {id} failed: {e}"))
        .unwrap_or_else(|| panic!("load {id}: missing after save"))
}

async fn save_new(s: &dyn CredentialStorage, c: &CredentialObject) {
    s.save(c)
        .await
        .unwrap_or_else(|e| panic!("save {} failed: {e}", c.id()));
}

/// `load` of a missing id is `Ok(None)`; `exists` is false.
pub async fn missing_load_is_none(s: &dyn CredentialStorage) {
    let id = unique_id("missing");
    assert!(
        s.load(&id)
            .await
            .expect("load of a missing id must not fail")
            .is_none()
    );
    assert!(!s.exists(&id).await.expect("exists must not fail"));
}

/// Everything saved comes back: type, provider, flags, tags, timestamps, key metadata,
/// expiries, and values byte-exact (unicode, control characters, 64 KiB).
pub async fn round_trip_is_exact(s: &dyn CredentialStorage) {
    let tricky = "ünïcødé ☃ 🦀 \"quotes\" \\ \n\t\u{1}";
    let id = unique_id("rt");
    let c = rich_credential(id.clone(), tricky);
    save_new(s, &c).await;
    let back = must_load(s, &id).await;
    assert!(back.version() >= 1, "a stored credential has version >= 1");
    let mut expect = c.metadata();
    expect.version = back.version();
    let mut got = back.metadata();
    // Backends may store timestamps at microsecond precision or better.
    for (e, g) in [
        (&mut expect.created_at, &mut got.created_at),
        (&mut expect.updated_at, &mut got.updated_at),
    ] {
        assert!(
            (*e - *g).num_milliseconds().abs() < 1,
            "timestamps must round-trip"
        );
        *g = *e;
    }
    assert_eq!(got, expect, "metadata must round-trip");
    assert_eq!(
        back.get_key("access_token")
            // EXPOSE: the conformance suite compares stored values byte for byte.
            .map(|v| v.expose_secret().to_string())
            .as_deref(),
        Some(tricky)
    );
    assert_eq!(
        back.get_key("refresh_token")
            // EXPOSE: the conformance suite compares stored values byte for byte.
            .map(|v| v.expose_secret().to_string())
            .as_deref(),
        Some("rt-ünï-☃")
    );
    assert!(s.exists(&id).await.expect("exists"));

    let big: String = (0..64 * 1024)
        .map(|i| char::from(b'!' + (i % 90) as u8))
        .collect();
    let id = unique_id("big");
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::Custom);
    c.set_key("blob", big.as_str(), None).expect("valid key");
    save_new(s, &c).await;
    let back = must_load(s, &id).await;
    assert_eq!(
        // EXPOSE: the conformance suite compares stored values byte for byte.
        back.get_key("blob").expect("blob key").expose_secret(),
        big,
        "64 KiB value must round-trip"
    );
    s.delete(&id).await.expect("cleanup");
}

/// Load, modify, save replaces the stored credential and bumps its version.
pub async fn save_replaces(s: &dyn CredentialStorage) {
    let id = unique_id("replace");
    save_new(s, &rich_credential(id.clone(), "one")).await;
    let mut c = must_load(s, &id).await;
    let v1 = c.version();
    c.set_key("access_token", "two", Some(Utc::now() + Duration::hours(1)))
        .expect("valid key");
    c.remove_key("refresh_token");
    s.save(&c)
        .await
        .expect("save of a just-loaded credential must succeed");
    let back = must_load(s, &id).await;
    assert_eq!(
        // EXPOSE: the conformance suite compares stored values byte for byte.
        back.get_key("access_token").expect("key").expose_secret(),
        "two"
    );
    assert!(
        !back.has_key("refresh_token"),
        "removed keys must stay removed"
    );
    assert_eq!(back.version(), v1 + 1, "each save bumps the version by one");
}

/// Saves based on an old version, and saves of a new object over an existing id, fail
/// with `Conflict` and leave the stored credential as it was.
pub async fn stale_save_conflicts(s: &dyn CredentialStorage) {
    let id = unique_id("cas");
    let fresh = rich_credential(id.clone(), "original");
    save_new(s, &fresh).await;
    let err = s
        .save(&fresh)
        .await
        .expect_err("saving version 0 over an existing id must conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    let mut a = must_load(s, &id).await;
    let mut b = a.clone();
    a.set_key("access_token", "from-a", None)
        .expect("valid key");
    s.save(&a).await.expect("first writer wins");
    b.set_key("access_token", "from-b", None)
        .expect("valid key");
    let err = s
        .save(&b)
        .await
        .expect_err("second writer with a stale version must conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let back = must_load(s, &id).await;
    assert_eq!(
        // EXPOSE: the conformance suite compares stored values byte for byte.
        back.get_key("access_token").expect("key").expose_secret(),
        "from-a"
    );
}

/// `delete` returns whether something was deleted; afterwards the id is gone.
pub async fn delete_semantics(s: &dyn CredentialStorage) {
    let id = unique_id("del");
    assert!(
        !s.delete(&id)
            .await
            .expect("delete of a missing id must not fail")
    );
    save_new(s, &rich_credential(id.clone(), "x")).await;
    assert!(s.delete(&id).await.expect("delete"));
    assert!(s.load(&id).await.expect("load").is_none());
    assert!(!s.exists(&id).await.expect("exists"));
    assert!(!s.list().await.expect("list").contains(&id));
    assert!(!s.delete(&id).await.expect("second delete"));
    // A deleted id can be created again from scratch (version 0).
    save_new(s, &rich_credential(id.clone(), "again")).await;
    assert_eq!(
        must_load(s, &id)
            .await
            .get_key("access_token")
            .expect("key")
            // EXPOSE: the conformance suite compares stored values byte for byte.
            .expose_secret(),
        "again"
    );
    s.delete(&id).await.expect("cleanup");
}

/// `list` shows saved ids once each and omits deleted ones.
pub async fn list_tracks_saves_and_deletes(s: &dyn CredentialStorage) {
    let ids: Vec<_> = (0..5).map(|i| unique_id(&format!("list{i}"))).collect();
    for id in &ids {
        save_new(s, &rich_credential(id.clone(), "v")).await;
    }
    let listed = s.list().await.expect("list");
    let unique: HashSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "list must not repeat ids");
    for id in &ids {
        assert!(listed.contains(id), "{id} missing from list");
    }
    s.delete(&ids[0]).await.expect("delete");
    let listed = s.list().await.expect("list");
    assert!(!listed.contains(&ids[0]));
    assert!(listed.contains(&ids[1]));
    for id in &ids[1..] {
        s.delete(id).await.expect("cleanup");
    }
}

/// The edge cases of the id grammar store and load: one character, 128 characters,
/// dots, dashes, underscores, case.
pub async fn edge_case_ids(s: &dyn CredentialStorage) {
    let long = format!("L{}", "x".repeat(127));
    let cases = [
        "a",
        "Z",
        "0",
        "_",
        "-",
        "a.b",
        "a-b_c.D",
        "UPPER",
        "upper",
        long.as_str(),
    ];
    for raw in cases {
        let id = CredentialId::new(raw).expect("valid edge id");
        // Clear leftovers of an earlier interrupted run.
        let _ = s.delete(&id).await;
        let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
        c.set_key("api_key", format!("value-of-{raw}"), None)
            .expect("valid key");
        save_new(s, &c).await;
    }
    let listed = s.list().await.expect("list");
    for raw in cases {
        let id = CredentialId::new(raw).expect("valid edge id");
        assert!(listed.contains(&id), "{raw} missing from list");
        let back = must_load(s, &id).await;
        assert_eq!(
            // EXPOSE: the conformance suite compares stored values byte for byte.
            back.get_key("api_key").expect("key").expose_secret(),
            format!("value-of-{raw}")
        );
        assert_eq!(back.id(), &id);
    }
    for raw in cases {
        assert!(
            s.delete(&CredentialId::new(raw).expect("valid"))
                .await
                .expect("delete")
        );
    }
}

/// 32 concurrent saves of different ids all land.
pub async fn concurrent_saves_of_different_ids(s: &dyn CredentialStorage) {
    let ids: Vec<_> = (0..32).map(|i| unique_id(&format!("conc{i}"))).collect();
    let saves = ids.iter().enumerate().map(|(i, id)| {
        let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
        c.set_key("api_key", format!("v{i}"), None)
            .expect("valid key");
        async move { s.save(&c).await }
    });
    for r in futures::future::join_all(saves).await {
        r.expect("concurrent save");
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            must_load(s, id)
                .await
                .get_key("api_key")
                .expect("key")
                // EXPOSE: the conformance suite compares stored values byte for byte.
                .expose_secret(),
            format!("v{i}")
        );
    }
    for id in &ids {
        s.delete(id).await.expect("cleanup");
    }
}

/// The canary value never shows in Debug of the storage, the loaded credential, or a
/// conflict error.
pub async fn canary_never_in_debug(s: &dyn CredentialStorage) {
    let id = unique_id("canary");
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::BearerToken);
    c.set_key("token", SecretString::from(CANARY), None)
        .expect("valid key");
    save_new(s, &c).await;
    let back = must_load(s, &id).await;
    let err = s.save(&c).await.expect_err("stale save conflicts");
    for out in [
        format!("{s:?}"),
        format!("{back:?}"),
        back.to_string(),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(!out.contains(CANARY), "secret leaked: {out}");
    }
    s.delete(&id).await.expect("cleanup");
}

/// The lock conformance check, for storages shared between processes. `a` and `b` are
/// two handles on one backend (two `LocalStorage::open` of one directory, two
/// `VaultStorage`s on one prefix), standing in for two processes; either may be wrapped
/// (as `AgentRuntime` wraps its storage). Checks that:
/// - both declare [`cross_process_lock`](crate::StorageCapabilities::cross_process_lock);
/// - one holder at a time: while `a` holds the lock, `b` waits and then fails with a
///   temporary `Unavailable` naming the id;
/// - a released lock is taken at once, and locks of other ids are independent;
/// - a holder dropped without a release (a crashed task) is taken over within
///   `takeover`.
pub async fn lock_conformance(
    a: &dyn CredentialStorage,
    b: &dyn CredentialStorage,
    takeover: std::time::Duration,
) {
    use crate::lock::LockOptions;
    use std::time::Duration as StdDuration;

    for s in [a, b] {
        assert!(
            s.capabilities().cross_process_lock,
            "{s:?} does not declare its cross-process lock (a wrapper that drops it?)"
        );
    }
    let id = unique_id("lock");
    let other = unique_id("lock-other");
    let short = LockOptions::new().with_wait(StdDuration::from_millis(150));
    let held = a.lock(&id, &short).await.expect("a takes a free lock");
    assert_eq!(held.id(), &id);
    let started = std::time::Instant::now();
    let busy = b
        .lock(&id, &short)
        .await
        .expect_err("b must not take a lock a holds");
    assert!(
        started.elapsed() >= StdDuration::from_millis(100),
        "b gave up before its wait ran out"
    );
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy}");
    assert!(busy.is_temporary());
    assert!(busy.to_string().contains(id.as_str()), "{busy}");
    let independent = b
        .lock(&other, &short)
        .await
        .expect("another id's lock is independent");
    independent.release().await.expect("release");
    held.release().await.expect("the holder releases");
    let again = b
        .lock(&id, &short)
        .await
        .expect("a released lock is taken at once");
    // Dropped without a release: taken over within `takeover`.
    drop(again);
    let patient = LockOptions::new().with_wait(takeover);
    let taken = a
        .lock(&id, &patient)
        .await
        .expect("a dropped holder's lock is taken over");
    taken.release().await.expect("release");
}

/// Runs every check in order.
pub async fn run_all(s: &dyn CredentialStorage) {
    missing_load_is_none(s).await;
    round_trip_is_exact(s).await;
    save_replaces(s).await;
    stale_save_conflicts(s).await;
    delete_semantics(s).await;
    list_tracks_saves_and_deletes(s).await;
    edge_case_ids(s).await;
    concurrent_saves_of_different_ids(s).await;
    canary_never_in_debug(s).await;
}

/// Expands to one `#[tokio::test]` per conformance check. `$make` is an expression whose
/// `.await` yields a storage (`async { MemoryStorage::new() }`). The calling crate needs
/// tokio (features `macros`, `rt-multi-thread`) as a dev-dependency.
///
/// The edge-case-id check uses fixed ids (`a`, `Z`, ...), so give each expansion a
/// storage of its own (a temp dir, a unique Vault prefix).
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::storage_conformance_tests!(@tests $make;
            missing_load_is_none, round_trip_is_exact, save_replaces, stale_save_conflicts,
            delete_semantics, list_tracks_saves_and_deletes, edge_case_ids,
            concurrent_saves_of_different_ids, canary_never_in_debug);
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let storage = $make.await;
                $crate::testkit::$check(&storage).await;
            }
        )*
    };
}
