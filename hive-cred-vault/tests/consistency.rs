//! Read-your-writes through a load balancer. An L7 balancer on 127.0.0.1 sends each
//! request to the next node of a 3-node OpenBao Raft cluster (round robin), as
//! HAProxy or Envoy do when pointed at every node. OpenBao standbys answer reads from
//! their own copy, a few milliseconds behind the active node, so without the storage
//! index a read right after a write usually reaches a node that has not applied it.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use hive_cred_core::lock::LockOptions;
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialType, ExposeSecret,
};
use hive_cred_vault::testkit::RaftCluster;
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};

const ROUNDS: u64 = 20;

/// Round robin over `nodes`, one request at a time.
struct Balancer {
    nodes: Vec<String>,
    next: AtomicUsize,
    http: reqwest::Client,
}

async fn forward(State(lb): State<Arc<Balancer>>, request: Request) -> Response {
    let node = &lb.nodes[lb.next.fetch_add(1, Ordering::SeqCst) % lb.nodes.len()];
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut headers = parts.headers;
    headers.remove(http::header::HOST);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = lb
        .http
        .request(parts.method, format!("{node}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

/// Starts the balancer; its address.
async fn balancer(nodes: Vec<String>) -> String {
    let lb = Arc::new(Balancer {
        nodes,
        next: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(forward).with_state(lb);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn storage(addr: &str, token: &str) -> VaultStorage {
    let config = VaultConfig::new(addr, VaultAuth::token(token.to_owned()))
        .unwrap()
        .with_path_prefix("hive-test/consistency")
        .unwrap();
    VaultStorage::new(config).await.unwrap()
}

fn count(c: &CredentialObject) -> u64 {
    c.get_key("count")
        .unwrap()
        .expose_secret() // EXPOSE: a test counter, not a secret.
        .parse()
        .unwrap()
}

/// Loads, adds one, saves.
async fn increment(storage: &VaultStorage, id: &CredentialId) -> u64 {
    let mut c = storage.load(id).await.unwrap().expect("stored");
    let next = count(&c) + 1;
    c.set_key("count", next.to_string(), None).unwrap();
    storage.save(&c).await.unwrap();
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_a_round_robin_balancer_reads_its_own_writes() {
    let Some(cluster) = tokio::task::block_in_place(|| RaftCluster::start(3)) else {
        return;
    };
    tokio::task::block_in_place(|| cluster.mount_kv());
    let lb = balancer(cluster.addrs()).await;

    // One host: every save is followed by a load that lands on the next node.
    let host = storage(&lb, cluster.root_token()).await;
    let id = CredentialId::new("own-writes").unwrap();
    let mut c = CredentialObject::builder("own-writes", CredentialType::Custom)
        .build()
        .unwrap();
    c.set_key("count", "0", None).unwrap();
    host.save(&c).await.unwrap();
    for _ in 0..ROUNDS {
        let saved = increment(&host, &id).await;
        let loaded = host.load(&id).await.unwrap().expect("stored");
        assert_eq!(
            count(&loaded),
            saved,
            "a load right after a save read an older version"
        );
    }
}

/// The refresh pattern across hosts: each host takes the credential's lock, reads,
/// writes the next value and releases; the other host then takes the lock and must read
/// that value (were it a rotated refresh token, an older read would reuse a spent one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_behind_a_round_robin_balancer_read_the_previous_lock_holders_write() {
    let Some(cluster) = tokio::task::block_in_place(|| RaftCluster::start(3)) else {
        return;
    };
    tokio::task::block_in_place(|| cluster.mount_kv());
    let lb = balancer(cluster.addrs()).await;
    let hosts = [
        storage(&lb, cluster.root_token()).await,
        storage(&lb, cluster.root_token()).await,
    ];
    let id = CredentialId::new("locked-writes").unwrap();
    let mut c = CredentialObject::builder("locked-writes", CredentialType::Custom)
        .build()
        .unwrap();
    c.set_key("count", "0", None).unwrap();
    hosts[0].save(&c).await.unwrap();
    tokio::task::block_in_place(|| {
        cluster.wait_replicated("secret/data/hive-test/consistency/locked-writes")
    });
    for round in 0..ROUNDS {
        let host = &hosts[(round % 2) as usize];
        let lock = host.lock(&id, &LockOptions::default()).await.unwrap();
        let seen = count(&host.load(&id).await.unwrap().expect("stored"));
        assert_eq!(
            seen, round,
            "the lock holder read an older version than the last holder wrote"
        );
        increment(host, &id).await;
        lock.release().await.unwrap();
    }
}
