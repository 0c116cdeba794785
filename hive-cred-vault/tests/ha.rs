//! HA: a 3-node OpenBao Raft cluster (from the testkit) whose active node is killed
//! while writers do check-and-set increments through storages configured with every
//! node's address. Afterwards every acknowledged save is there exactly once, and the
//! storages found the new active node within the failover timeout.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialType, ErrorKind, ExposeSecret,
};
use hive_cred_vault::testkit::RaftCluster;
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};

const FAILOVER: Duration = Duration::from_secs(30);
const WRITERS: usize = 3;
const ROUNDS: u64 = 12;

fn config(cluster: &RaftCluster, order: &[usize]) -> VaultConfig {
    let addrs: Vec<String> = order.iter().map(|&i| cluster.addr(i)).collect();
    VaultConfig::new(
        &addrs.join(","),
        VaultAuth::token(cluster.root_token().to_owned()),
    )
    .unwrap()
    .with_path_prefix("hive-test/ha")
    .unwrap()
    .with_failover_timeout(FAILOVER)
    .with_timeout(Duration::from_secs(3))
}

fn counter(c: &CredentialObject) -> u64 {
    c.get_key("count")
        .unwrap()
        .expose_secret() // EXPOSE: a test counter, not a secret.
        .parse()
        .unwrap()
}

/// Load, add one, save with check-and-set; retried on conflict. Returns how long the
/// increment took.
async fn increment(storage: &VaultStorage, id: &CredentialId) -> Duration {
    let started = Instant::now();
    loop {
        let current = storage.load(id).await.expect("load").expect("stored");
        let mut next = current.clone();
        next.set_key("count", (counter(&current) + 1).to_string(), None)
            .unwrap();
        match storage.save(&next).await {
            Ok(()) => return started.elapsed(),
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => panic!("save failed instead of failing over: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_writes_survive_the_active_node_being_killed() {
    let Some(mut cluster) = RaftCluster::start(3) else {
        return;
    };
    cluster.mount_kv();
    let active = cluster.wait_active();

    // Every storage lists the nodes in another order; each starts on the active one.
    // The root token of `operator init` must be accepted too (its lookup-self lacks
    // fields of a created token).
    let mut storages = Vec::new();
    for w in 0..WRITERS {
        let order: Vec<usize> = (0..3).map(|k| (w + k) % 3).collect();
        storages.push(Arc::new(
            VaultStorage::new(config(&cluster, &order))
                .await
                .expect("connect to the cluster"),
        ));
    }
    let id = CredentialId::new("ha-counter").unwrap();
    let mut seed = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
    seed.set_key("count", "0", None).unwrap();
    storages[0].save(&seed).await.unwrap();

    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for storage in &storages {
        let (storage, id, acknowledged) = (storage.clone(), id.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..ROUNDS {
                slowest = slowest.max(increment(&storage, &id).await);
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            slowest
        }));
    }
    // Kill the active node once the writers are under way.
    while acknowledged.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(active));
    let new_active = tokio::task::block_in_place(|| cluster.wait_active());
    let elected_after = killed_at.elapsed();
    assert_ne!(new_active, active);

    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.unwrap());
    }
    let total = acknowledged.load(Ordering::SeqCst);
    assert_eq!(total, WRITERS as u64 * ROUNDS);
    // Every acknowledged increment is there, none twice (a save whose answer was lost
    // and that was read back is counted once).
    for storage in &storages {
        let stored = storage.load(&id).await.unwrap().unwrap();
        assert_eq!(counter(&stored), total, "as read through {storage:?}");
    }
    // The bound: a request waits at most the failover timeout for a new active node.
    assert!(slowest < FAILOVER, "slowest increment took {slowest:?}");
    println!(
        "HA: new active node after {elected_after:?}; slowest increment across the kill {slowest:?} (bound: failover timeout {FAILOVER:?})"
    );

    // The killed node comes back as a standby and the storages keep working.
    tokio::task::block_in_place(|| cluster.restart(active));
    let current = storages[1].load(&id).await.unwrap().unwrap();
    let mut next = current.clone();
    next.set_key("count", (counter(&current) + 1).to_string(), None)
        .unwrap();
    storages[1].save(&next).await.unwrap();
    assert_eq!(
        counter(&storages[2].load(&id).await.unwrap().unwrap()),
        total + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_no_node_left_fails_with_unavailable_within_the_bound() {
    let Some(mut cluster) = RaftCluster::start(3) else {
        return;
    };
    cluster.mount_kv();
    let storage = VaultStorage::new(
        config(&cluster, &[0, 1, 2]).with_failover_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let id = CredentialId::new("gone").unwrap();
    assert!(storage.load(&id).await.unwrap().is_none());
    tokio::task::block_in_place(|| {
        for i in 0..3 {
            cluster.kill(i);
        }
    });
    let started = Instant::now();
    let err = storage.load(&id).await.expect_err("no node answers");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
}
