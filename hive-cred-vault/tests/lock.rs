//! `VaultStorage::lock`: lease locks kept in KV, against a real OpenBao server (see
//! `support` for how the server is found or started).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use hive_cred_core::lock::LockOptions;
use hive_cred_core::testkit::unique_id;
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialProvider, CredentialStorage, CredentialStore,
    CredentialType, ErrorKind, ExposeSecret, ManualClock,
};
use hive_cred_vault::VaultStorage;
use serde_json::json;

fn options(holder: &str, ttl: Duration, wait: Duration) -> LockOptions {
    LockOptions::new()
        .with_holder(holder)
        .with_ttl(ttl)
        .with_wait(wait)
}

fn clock_at(secs: i64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc.timestamp_opt(1_900_000_000 + secs, 0).unwrap(),
    ))
}

async fn lock_now(
    s: &VaultStorage,
    id: &CredentialId,
    o: &LockOptions,
) -> hive_cred_core::Result<hive_cred_core::CredentialLock> {
    assert!(s.capabilities().lease_lock, "Vault offers lease locks");
    s.lock(id, o).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_storages_contend_and_exactly_one_wins() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-contend");
    let a = support::root_storage(&target, &prefix).await;
    let b = support::root_storage(&target, &prefix).await;
    for round in 0..10 {
        let id = unique_id(&format!("contend-{round}"));
        let oa = options("a", Duration::from_secs(60), Duration::ZERO);
        let ob = options("b", Duration::from_secs(60), Duration::ZERO);
        let (ra, rb) = tokio::join!(lock_now(&a, &id, &oa), lock_now(&b, &id, &ob));
        let (winner, loser) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (Ok(_), Ok(_)) => panic!("round {round}: both storages took the lock"),
            (Err(x), Err(y)) => panic!("round {round}: neither took the lock: {x} / {y}"),
        };
        assert_eq!(loser.kind(), ErrorKind::Unavailable, "{loser}");
        assert_eq!(winner.id(), &id);
        winner.release().await.expect("holder releases");
    }
}

/// Mutual exclusion under load: 2 storages x 8 tasks each take the same lock 3 times;
/// nobody is ever inside the critical section together with someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_lockers_take_turns_and_never_overlap() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-turns");
    let storages = [
        support::root_storage(&target, &prefix).await,
        support::root_storage(&target, &prefix).await,
    ];
    let id = unique_id("turns");
    let inside = Arc::new(AtomicBool::new(false));
    let entries = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (s, storage) in storages.iter().enumerate() {
        for t in 0..8 {
            let storage = storage.clone();
            let id = id.clone();
            let inside = Arc::clone(&inside);
            let entries = Arc::clone(&entries);
            tasks.push(tokio::spawn(async move {
                let o = options(
                    &format!("s{s}-t{t}"),
                    Duration::from_secs(60),
                    Duration::from_secs(60),
                );
                for _ in 0..3 {
                    let held = lock_now(&storage, &id, &o).await.expect("take the lock");
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inside.store(false, Ordering::SeqCst);
                    entries.fetch_add(1, Ordering::SeqCst);
                    held.release().await.expect("holder releases");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("locker task");
    }
    assert_eq!(entries.load(Ordering::SeqCst), 2 * 8 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_taken_over_and_the_old_holder_cannot_release() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-expire");
    let clock_a = clock_at(0);
    let clock_b = clock_at(0);
    let a = support::root_storage(&target, &prefix)
        .await
        .with_lock_clock(clock_a.clone());
    let b = support::root_storage(&target, &prefix)
        .await
        .with_lock_clock(clock_b.clone());
    let id = unique_id("expire");
    let ttl = Duration::from_secs(60);

    let held_a = lock_now(&a, &id, &options("host-a", ttl, Duration::ZERO))
        .await
        .expect("a takes the free lock");

    // Before expiry by b's clock: b waits, then gives up naming the holder.
    clock_b.advance(chrono::Duration::seconds(59));
    let busy = lock_now(&b, &id, &options("host-b", ttl, Duration::from_millis(200)))
        .await
        .expect_err("the lease has a second left");
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy}");
    assert_eq!(busy.context_value("holder"), Some("host-a"), "{busy}");
    assert_eq!(busy.context_value("id"), Some(id.as_str()));

    // At expiry by b's clock: taken over at once.
    clock_b.advance(chrono::Duration::seconds(1));
    let started = Instant::now();
    let held_b = lock_now(&b, &id, &options("host-b", ttl, Duration::ZERO))
        .await
        .expect("b takes over the expired lease");
    assert!(started.elapsed() < Duration::from_secs(5));

    // a's release is a check-and-set on the version it wrote: it fails and leaves b's
    // lock in place.
    let err = held_a
        .release()
        .await
        .expect_err("a is no longer the holder");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.context_value("id"), Some(id.as_str()));
    let still = lock_now(&a, &id, &options("host-a", ttl, Duration::ZERO))
        .await
        .expect_err("b still holds the lock after a's failed release");
    assert_eq!(still.context_value("holder"), Some("host-b"), "{still}");

    // b releases; a (whose clock is still at b's lease start) takes it at once.
    held_b.release().await.expect("b releases its own lock");
    let again = lock_now(&a, &id, &options("host-a", ttl, Duration::ZERO))
        .await
        .expect("a released lock is free regardless of clocks");
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_takers_of_an_expired_lease_cannot_both_win() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-takeover-race");
    let dead = support::root_storage(&target, &prefix)
        .await
        .with_lock_clock(clock_at(0));
    let later = clock_at(3600);
    let b = support::root_storage(&target, &prefix)
        .await
        .with_lock_clock(later.clone());
    let c = support::root_storage(&target, &prefix)
        .await
        .with_lock_clock(later);
    let ttl = Duration::from_secs(60);
    for round in 0..10 {
        let id = unique_id(&format!("takeover-{round}"));
        let orphan = lock_now(&dead, &id, &options("dead", ttl, Duration::ZERO))
            .await
            .expect("the soon-dead holder takes the lock");
        std::mem::forget(orphan); // dies without releasing
        let ob = options("b", ttl, Duration::ZERO);
        let oc = options("c", ttl, Duration::ZERO);
        let (rb, rc) = tokio::join!(lock_now(&b, &id, &ob), lock_now(&c, &id, &oc));
        let winners = [rb.is_ok(), rc.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(winners, 1, "round {round}: exactly one taker wins");
        for r in [rb, rc] {
            match r {
                Ok(held) => held.release().await.unwrap(),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_times_out_with_unavailable_naming_the_id() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-timeout");
    let a = support::root_storage(&target, &prefix).await;
    let b = support::root_storage(&target, &prefix).await;
    let id = unique_id("timeout");
    let held = lock_now(
        &a,
        &id,
        &options("a", Duration::from_secs(60), Duration::ZERO),
    )
    .await
    .unwrap();
    let wait = Duration::from_millis(600);
    let started = Instant::now();
    let err = lock_now(&b, &id, &options("b", Duration::from_secs(60), wait))
        .await
        .expect_err("held for 60 s");
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert_eq!(err.context_value("id"), Some(id.as_str()));
    assert_eq!(err.context_value("backend"), Some("vault"));
    assert!(err.to_string().contains(id.as_str()), "{err}");
    assert!(err.context_value("lock_expires_at").is_some(), "{err}");
    assert!(waited >= wait, "gave up after {waited:?}, before the wait");
    assert!(waited < wait + Duration::from_secs(3), "waited {waited:?}");
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_lock_soon_after_release_and_drop_releases() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-handoff");
    let a = support::root_storage(&target, &prefix).await;
    let b = support::root_storage(&target, &prefix).await;
    let id = unique_id("handoff");
    let long = Duration::from_secs(60);
    let held = lock_now(&a, &id, &options("a", long, Duration::ZERO))
        .await
        .unwrap();
    let waiter = {
        let (b, id) = (b.clone(), id.clone());
        tokio::spawn(async move {
            let o = options("b", long, Duration::from_secs(30));
            let held = lock_now(&b, &id, &o).await;
            (held, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    held.release().await.unwrap();
    let (held_b, got_at) = waiter.await.unwrap();
    let held_b = held_b.expect("the waiter takes the released lock");
    let handoff = got_at.duration_since(released_at);
    assert!(
        handoff < Duration::from_secs(2),
        "hand-off took {handoff:?}"
    );

    // Dropping a held lock inside a runtime releases it in the background.
    drop(held_b);
    let again = lock_now(&a, &id, &options("a", long, Duration::from_secs(10)))
        .await
        .expect("the dropped lock was released, long before its 60 s lease");
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_secrets_never_appear_in_list_and_sit_below_the_prefix() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-list");
    let s = support::root_storage(&target, &prefix).await;
    let ids = [unique_id("listed-a"), unique_id("listed-b")];
    for id in &ids {
        let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
        c.set_key("api_key", "value", None).unwrap();
        s.save(&c).await.unwrap();
    }
    let locked = unique_id("locked-only");
    for id in ids.iter().chain([&locked]) {
        let held = lock_now(
            &s,
            id,
            &options("me", Duration::from_secs(60), Duration::ZERO),
        )
        .await
        .unwrap();
        if id != &locked {
            held.release().await.unwrap();
        } else {
            std::mem::forget(held);
        }
    }
    let mut listed = s.list().await.unwrap();
    listed.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(listed, expected, "lock secrets must not be listed");
    assert!(s.load(&locked).await.unwrap().is_none());
    assert!(!s.exists(&locked).await.unwrap());

    // Where it lives, and what it holds (holder and expiry only).
    let json = support::root_api(
        &target,
        "GET",
        &format!("secret/data/{prefix}/.locks/{locked}"),
        None,
    )
    .await;
    let data = &json["data"]["data"];
    assert_eq!(data["holder"], "me");
    assert_eq!(data["state"], "held");
    assert_eq!(data["v"], 1);
    assert!(data["expires_at_ms"].as_i64().is_some(), "{data}");
}

/// With an empty path prefix the lock folder sits at the mount root, and is still not
/// listed. Runs on a KV v2 mount of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_folder_at_the_mount_root_is_not_listed() {
    let Some(target) = support::shared() else {
        return;
    };
    let mount = format!("kv-locks-{:x}", support::rand_u64());
    support::root_api(
        &target,
        "POST",
        &format!("sys/mounts/{mount}"),
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    let config = support::config(&target, &target.root_token, "")
        .with_mount(&mount)
        .unwrap();
    let s = VaultStorage::new(config).await.unwrap();
    let id = unique_id("root-level");
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
    c.set_key("api_key", "value", None).unwrap();
    s.save(&c).await.unwrap();
    let held = lock_now(
        &s,
        &id,
        &options("me", Duration::from_secs(60), Duration::ZERO),
    )
    .await
    .unwrap();
    assert_eq!(s.list().await.unwrap(), vec![id.clone()]);
    held.release().await.unwrap();
    assert_eq!(s.list().await.unwrap(), vec![id]);
    support::root_api(&target, "DELETE", &format!("sys/mounts/{mount}"), None).await;
}

/// A token whose policy covers `{prefix}/*` (the documented read-write policy) can lock:
/// the lock folder needs no grant of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_read_write_policy_covers_locks() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-policy");
    let policy = format!("hive-lock-{:x}", support::rand_u64());
    support::put_policy(&target, &policy, &support::rw_policy(&prefix)).await;
    let token = support::create_token(&target, json!({"policies": [policy], "ttl": "10m"})).await;
    let s = VaultStorage::new(support::config(&target, &token, &prefix))
        .await
        .unwrap();
    let id = unique_id("policy");
    let held = lock_now(
        &s,
        &id,
        &options("me", Duration::from_secs(60), Duration::ZERO),
    )
    .await
    .expect("rw policy allows the lock folder");
    held.release().await.expect("and the release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_at_the_lock_path_is_a_corrupted_error_naming_it() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-corrupt");
    let s = support::root_storage(&target, &prefix).await;
    let id = unique_id("corrupt");
    support::root_api(
        &target,
        "POST",
        &format!("secret/data/{prefix}/.locks/{id}"),
        Some(json!({"data": {"whatever": "x"}})),
    )
    .await;
    let err = lock_now(
        &s,
        &id,
        &options("me", Duration::from_secs(60), Duration::ZERO),
    )
    .await
    .expect_err("not a lock record");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert!(
        err.context_value("path")
            .is_some_and(|p| p.ends_with(&format!(".locks/{id}"))),
        "{err}"
    );

    // A lock secret whose latest version was deleted by hand is free again.
    support::root_api(
        &target,
        "DELETE",
        &format!("secret/data/{prefix}/.locks/{id}"),
        None,
    )
    .await;
    let held = lock_now(
        &s,
        &id,
        &options("me", Duration::from_secs(60), Duration::ZERO),
    )
    .await
    .expect("a deleted lock secret is free");
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_ttl_is_invalid_input() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-zero");
    let s = support::root_storage(&target, &prefix).await;
    let err = lock_now(
        &s,
        &unique_id("zero"),
        &options("me", Duration::ZERO, Duration::ZERO),
    )
    .await
    .expect_err("a zero lease is never held");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

/// A provider that counts refreshes and takes a while, like a real token endpoint.
#[derive(Debug, Default)]
struct SlowCounter {
    calls: AtomicUsize,
}

#[async_trait]
impl CredentialProvider for SlowCounter {
    fn provider_id(&self) -> &str {
        "counter"
    }
    async fn refresh(&self, c: &CredentialObject) -> hive_cred_core::Result<CredentialObject> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut fresh = c.clone();
        fresh.set_key(
            "access_token",
            format!("access-{n}"),
            Some(Utc::now() + chrono::Duration::hours(1)),
        )?;
        Ok(fresh)
    }
}

/// Two `CredentialStore`s (two "hosts") over one Vault: one refresh between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_refresh_once_through_the_vault_lock() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-store");
    let provider = Arc::new(SlowCounter::default());
    let mut stores = Vec::new();
    for _ in 0..2 {
        let s = support::root_storage(&target, &prefix).await;
        stores.push(
            CredentialStore::builder()
                .storage(Arc::new(s))
                .provider(provider.clone())
                .build()
                .unwrap(),
        );
    }
    let id = unique_id("oauth");
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::OAuth2);
    c.set_provider_id(Some("counter".into()));
    c.set_auto_refresh(true);
    c.set_key(
        "access_token",
        "expired",
        Some(Utc::now() - chrono::Duration::minutes(1)),
    )
    .unwrap();
    stores[0].save(c).await.unwrap();
    stores[0].invalidate(id.as_str());

    let mut gets = Vec::new();
    for store in &stores {
        for _ in 0..10 {
            let (store, id) = (store.clone(), id.clone());
            gets.push(tokio::spawn(async move { store.get(id.as_str()).await }));
        }
    }
    for g in gets {
        let got = g.await.unwrap().expect("get refreshes");
        assert_eq!(
            got.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            "access-1"
        );
    }
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
}

/// A held lease is renewed while held: a refresh that runs past the TTL (a slow token
/// endpoint, a save retried while storage is down) keeps the lock, so no second host
/// refreshes with the same refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_is_renewed_past_its_ttl() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("lock-renew");
    let a = support::root_storage(&target, &prefix).await;
    let b = support::root_storage(&target, &prefix).await;
    let id = unique_id("renew");
    let ttl = Duration::from_millis(1500);
    let held = lock_now(&a, &id, &options("slow-holder", ttl, Duration::ZERO))
        .await
        .expect("a takes the free lock");
    // Well past the TTL: three renewals should have happened.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let busy = lock_now(&b, &id, &options("other", ttl, Duration::ZERO))
        .await
        .expect_err("the renewed lease is still held");
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy}");
    assert_eq!(busy.context_value("holder"), Some("slow-holder"), "{busy}");
    held.release()
        .await
        .expect("the holder releases its renewed lease");
    lock_now(&b, &id, &options("other", ttl, Duration::ZERO))
        .await
        .expect("free after the release")
        .release()
        .await
        .unwrap();
}
