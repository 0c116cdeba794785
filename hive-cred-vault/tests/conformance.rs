//! hive-cred-core's storage conformance suite against a real OpenBao server.
//!
//! Each check runs on a storage of its own with a unique path prefix. This expands the
//! same checks as `hive_cred_core::storage_conformance_tests!`, plus the skip-or-fail
//! rule for a missing server (see `support`).

mod support;

use hive_cred_vault::VaultStorage;

async fn make_storage(check: &str) -> Option<VaultStorage> {
    let target = support::shared()?;
    let prefix = support::unique_prefix(&format!("conformance-{check}"));
    Some(support::root_storage(&target, &prefix).await)
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(storage) = make_storage(stringify!($check)).await else { return };
                hive_cred_core::testkit::$check(&storage).await;
            }
        )*
    };
}

conformance!(
    missing_load_is_none,
    round_trip_is_exact,
    save_replaces,
    stale_save_conflicts,
    delete_semantics,
    list_tracks_saves_and_deletes,
    edge_case_ids,
    concurrent_saves_of_different_ids,
    canary_never_in_debug,
);

/// The whole suite in order on one storage, as `testkit::run_all` defines it: catches
/// checks added to core after this list was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_in_order() {
    let Some(storage) = make_storage("run-all").await else {
        return;
    };
    hive_cred_core::testkit::run_all(&storage).await;
}

/// The lock conformance check on two storages sharing one prefix. A dropped lease is
/// released in the background at once (a killed holder's lease is taken over at its
/// TTL: `tests/lock.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_conformance_across_two_storages() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("conformance-lock");
    let a = support::root_storage(&target, &prefix).await;
    let b = support::root_storage(&target, &prefix).await;
    hive_cred_core::testkit::lock_conformance(&a, &b, std::time::Duration::from_secs(10)).await;
}
