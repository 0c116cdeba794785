//! One refresh per expiry across OS processes: several processes (this test binary
//! re-executed) share one expiring OAuth2 credential in a `LocalStorage` directory or on
//! one OpenBao server, and refresh it through a strict token endpoint that rotates the
//! refresh token on every refresh and revokes the whole family when a used one comes
//! back (see `coordinated_refresh/`).
//!
//! Timings: every burst prints how long the processes took from the common start to
//! having the token. `HIVE_CR_SCALING=1,8,32` (process counts) makes the 8-process tests
//! also run bursts of those sizes (3 each, all assertions on) and print a latency table;
//! `HIVE_CR_SCALING_REPS` sets the repetitions.
#![cfg(all(feature = "local", feature = "vault", feature = "oauth"))]
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

#[path = "coordinated_refresh/mod.rs"]
mod coordinated_refresh;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use coordinated_refresh::Backend;
use coordinated_refresh::endpoint::{Counts, StrictEndpoint};
use coordinated_refresh::{
    FileClock, Params, Proc, RoundResult, Shared, fingerprint, go, local_shared, median_max_ms,
    seed_credential, unix_nanos, vault_shared, vault_shared_at,
};
use hive_cred_core::{CredentialId, ExposeSecret};

/// The child entry point (returns at once unless run as a child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    coordinated_refresh::run_child().await;
}

const CHILD: &str = "child_process";
const TASKS: usize = 50;

/// The multi-process tests run one at a time: each spawns many processes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn params(shared: &Shared, endpoint: &StrictEndpoint, id: &str, coord: &std::path::Path) -> Params {
    Params {
        backend: shared.backend.clone(),
        token_url: endpoint.token_url(),
        id: id.to_owned(),
        coord_dir: coord.to_owned(),
        tasks: TASKS,
        rounds: (0, 1),
        lock_ttl_secs: 60,
        window_secs: 300,
        min_interval_secs: None,
        provider_timeout_secs: 30,
        vault_timeout_ms: 10_000,
        file_clock: false,
    }
}

fn spawn_ready(n: usize, p: &Params, shared: &Shared) -> Vec<Proc> {
    let procs: Vec<Proc> = (0..n)
        .map(|_| Proc::spawn(CHILD, p, shared.key_b64.as_deref()))
        .collect();
    for proc in &procs {
        proc.wait_ready();
    }
    procs
}

/// Every task of every result got the endpoint's one valid access token.
fn assert_all_have_the_latest(results: &[RoundResult], endpoint: &StrictEndpoint, what: &str) {
    let latest = endpoint
        .latest_access_fingerprint()
        .expect("the endpoint issued a token");
    for r in results {
        assert!(r.errors.is_empty(), "{what}: errors {:?}", r.errors);
        assert_eq!(r.ok, TASKS, "{what}");
        assert!(r.same, "{what}: tasks of one process saw different tokens");
        assert!(r.unexpired, "{what}: an expired access token was returned");
        assert_eq!(
            r.fingerprint.as_deref(),
            Some(latest.as_str()),
            "{what}: not the latest (only valid) access token"
        );
    }
}

/// What storage holds afterwards: the newest refresh token was persisted.
async fn assert_persisted(shared: &Shared, id: &str, endpoint: &StrictEndpoint) {
    let stored = shared
        .storage
        .load(&CredentialId::new(id).unwrap())
        .await
        .unwrap()
        .expect("credential still stored");
    let rt = stored.get_key("refresh_token").unwrap();
    // EXPOSE: hashed into a fingerprint for comparison.
    let rt_print = fingerprint(rt.expose_secret());
    assert_eq!(rt_print, endpoint.current_refresh_fingerprint());
    let at = stored.get_key("access_token").unwrap();
    // EXPOSE: hashed into a fingerprint for comparison.
    let at_print = fingerprint(at.expose_secret());
    assert_eq!(Some(at_print), endpoint.latest_access_fingerprint());
}

/// `processes` x 50 tasks `get` one expired credential at the same moment. Asserts one
/// token request, no `invalid_grant`, one valid token everywhere; returns each process's
/// time from the common start to having the token.
async fn burst(shared: &Shared, processes: usize, delay: Duration) -> Vec<Duration> {
    let endpoint = StrictEndpoint::start(3600).await;
    endpoint.set_delay(delay);
    let id = format!("burst-{:016x}", rand::random::<u64>());
    shared
        .storage
        .save(&seed_credential(
            &id,
            endpoint.current_refresh_token(),
            Utc::now(),
        ))
        .await
        .unwrap();
    let coord = tempfile::tempdir().unwrap();
    let p = params(shared, &endpoint, &id, coord.path());
    let procs = spawn_ready(processes, &p, shared);
    let started = go(coord.path(), 0);
    let results: Vec<RoundResult> = procs.iter().map(Proc::result).collect();
    for proc in procs {
        proc.finish();
    }
    let what = format!("{processes} processes");
    assert_eq!(
        endpoint.counts(),
        Counts {
            arrivals: 1,
            commits: 1,
            invalid_grants: 0,
            revoked: false
        },
        "{what}: exactly one token request"
    );
    assert_all_have_the_latest(&results, &endpoint, &what);
    assert_persisted(shared, &id, &endpoint).await;
    results
        .iter()
        .map(|r| Duration::from_nanos((r.done_unix_nanos - started) as u64))
        .collect()
}

fn report(backend: &str, processes: usize, latencies: Vec<Duration>) {
    let (median, max) = median_max_ms(latencies);
    println!(
        "coordinated refresh backend={backend} processes={processes} tasks_each={TASKS}: \
         median {median:.1} ms, max {max:.1} ms (start -> process has the token)"
    );
}

/// With `HIVE_CR_SCALING=1,8,32`: bursts of those sizes against a loopback endpoint
/// without delay, reported as the median over repetitions of the slowest process.
async fn scaling(backend: &str, shared: &Shared) {
    let Ok(sizes) = std::env::var("HIVE_CR_SCALING") else {
        return;
    };
    let reps: usize = std::env::var("HIVE_CR_SCALING_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for n in sizes.split(',').map(|s| s.trim().parse::<usize>().unwrap()) {
        let mut slowest = Vec::new();
        let mut medians = Vec::new();
        for _ in 0..reps {
            let l = burst(shared, n, Duration::ZERO).await;
            let (median, max) = median_max_ms(l);
            medians.push(Duration::from_secs_f64(median / 1000.0));
            slowest.push(Duration::from_secs_f64(max / 1000.0));
        }
        let (max_med, _) = median_max_ms(slowest);
        let (med_med, _) = median_max_ms(medians);
        println!(
            "SCALING backend={backend} processes={n} reps={reps}: median process {med_med:.1} ms, \
             slowest process {max_med:.1} ms (medians over reps)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_8_processes_x_50_tasks_make_one_token_request() {
    let _serial = SERIAL.lock().await;
    let shared = local_shared().await;
    // The endpoint takes 100 ms, so every process piles up while the refresh is in flight.
    let latencies = burst(&shared, 8, Duration::from_millis(100)).await;
    report("local", 8, latencies);
    scaling("local", &shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_8_processes_x_50_tasks_make_one_token_request() {
    let Some(shared) = vault_shared().await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let latencies = burst(&shared, 8, Duration::from_millis(100)).await;
    report("vault", 8, latencies);
    scaling("vault", &shared).await;
}

/// A process is SIGKILLed while it holds the lock and its token request is in flight
/// (the endpoint delays before processing, so the request dies with the process). The
/// other processes, already waiting for the lock, proceed (local: at once, the OS lock
/// dies with its holder; Vault: once the 3 s lease has expired), make exactly one more
/// token request, and the family is not revoked.
async fn killed_holder(shared: Shared, backend: &str) {
    // The lease must outlast the provider's timeout (2 s) + Vault's load and save
    // (2 x 1 s) + the 5 s margin, or the runtime refuses to build.
    let ttl = Duration::from_secs(10);
    let endpoint = StrictEndpoint::start(3600).await;
    endpoint.set_delay(Duration::from_secs(120));
    let id = format!("killed-{:016x}", rand::random::<u64>());
    shared
        .storage
        .save(&seed_credential(
            &id,
            endpoint.current_refresh_token(),
            Utc::now(),
        ))
        .await
        .unwrap();
    let coord = tempfile::tempdir().unwrap();
    let mut p = params(&shared, &endpoint, &id, coord.path());
    p.lock_ttl_secs = ttl.as_secs();
    p.provider_timeout_secs = 2;
    p.vault_timeout_ms = 1_000;
    let mut victim_params = p.clone();
    victim_params.tasks = 1;
    let mut victim = Proc::spawn(CHILD, &victim_params, shared.key_b64.as_deref());
    victim.wait_ready();
    p.rounds = (1, 2);
    let survivors = spawn_ready(4, &p, &shared);

    go(coord.path(), 0);
    tokio::time::timeout(Duration::from_secs(60), endpoint.wait_for_arrivals(1))
        .await
        .expect("the victim's token request arrives");
    let arrived = unix_nanos();
    endpoint.set_delay(Duration::ZERO);
    go(coord.path(), 1);
    // The survivors are now waiting for the lock, not calling the endpoint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        endpoint.counts().arrivals,
        1,
        "survivors waited for the lock"
    );
    victim.kill();
    let killed = unix_nanos();

    let results: Vec<RoundResult> = survivors.iter().map(Proc::result).collect();
    for proc in survivors {
        proc.finish();
    }
    assert_eq!(
        endpoint.counts(),
        Counts {
            arrivals: 2,
            commits: 1,
            invalid_grants: 0,
            revoked: false
        },
        "{backend}: the killed request was never processed; one refresh after it"
    );
    assert_all_have_the_latest(&results, &endpoint, backend);
    assert_persisted(&shared, &id, &endpoint).await;
    let first_done = results.iter().map(|r| r.done_unix_nanos).min().unwrap();
    let last_done = results.iter().map(|r| r.done_unix_nanos).max().unwrap();
    let after_kill = Duration::from_nanos((last_done - killed) as u64);
    let after_arrival = Duration::from_nanos((first_done - arrived) as u64);
    println!(
        "{backend}: survivors done {after_kill:?} after the kill, {after_arrival:?} after the victim's request"
    );
    if backend == "vault" {
        // The lease was stamped before the victim's request arrived; nobody took it
        // before it expired, and nobody waited much longer.
        assert!(
            after_arrival >= ttl - Duration::from_secs(1),
            "the lease was taken over before its TTL: {after_arrival:?}"
        );
        assert!(after_kill < ttl + Duration::from_secs(15), "{after_kill:?}");
    } else {
        assert!(
            after_kill < Duration::from_secs(5),
            "the OS lock dies with its holder: {after_kill:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_holder_killed_mid_refresh_does_not_revoke_the_family() {
    let _serial = SERIAL.lock().await;
    killed_holder(local_shared().await, "local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_holder_killed_mid_refresh_others_proceed_after_the_ttl() {
    let Some(shared) = vault_shared().await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    killed_holder(shared, "vault").await;
}

/// After round `round` (counted from 0): every process reported it, the endpoint has
/// seen exactly one token request per round so far, no reuse, and every task holds the
/// newest token.
fn assert_one_request_per_expiry(
    results: &[RoundResult],
    endpoint: &StrictEndpoint,
    round: u32,
    backend: &str,
) {
    assert!(results.iter().all(|r| r.round == round));
    let counts = endpoint.counts();
    assert_eq!(
        (
            counts.commits,
            counts.arrivals,
            counts.invalid_grants,
            counts.revoked
        ),
        (u64::from(round) + 1, u64::from(round) + 1, 0, false),
        "{backend}: round {round} with {} processes: one token request per expiry \
         (errors the processes saw: {:?})",
        results.len(),
        results.iter().flat_map(|r| &r.errors).collect::<Vec<_>>()
    );
    assert_all_have_the_latest(results, endpoint, &format!("{backend} round {round}"));
}

/// 20 expiries in a row on a shared file clock: tokens live 120 s, the refresh window
/// is 30 s, and each round moves the clock 100 s. Each round one process joins and one
/// (after three rounds) leaves; three run 50 tasks each. Exactly one token request per
/// round, never a reuse, everyone on the newest token.
async fn rotations(shared: Shared, backend: &str) {
    const ROUNDS: u32 = 20;
    const SPAN: u32 = 3;
    let endpoint = StrictEndpoint::start(120).await;
    let id = format!("rotate-{:016x}", rand::random::<u64>());
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let coord = tempfile::tempdir().unwrap();
    FileClock::set(coord.path(), t0);
    shared
        .storage
        .save(&seed_credential(&id, endpoint.current_refresh_token(), t0))
        .await
        .unwrap();
    let mut p = params(&shared, &endpoint, &id, coord.path());
    p.file_clock = true;
    p.window_secs = 30;
    let mut active: Vec<(u32, Proc)> = Vec::new();
    for round in 0..ROUNDS {
        let mut joining = p.clone();
        joining.rounds = (round, (round + SPAN).min(ROUNDS));
        let proc = Proc::spawn(CHILD, &joining, shared.key_b64.as_deref());
        proc.wait_ready();
        active.push((joining.rounds.1, proc));
        FileClock::set(
            coord.path(),
            t0 + chrono::Duration::seconds(100 * i64::from(round)),
        );
        go(coord.path(), round);
        let results: Vec<RoundResult> = active.iter().map(|(_, proc)| proc.result()).collect();
        assert_one_request_per_expiry(&results, &endpoint, round, backend);
        let (leaving, staying): (Vec<_>, Vec<_>) =
            active.into_iter().partition(|(end, _)| *end == round + 1);
        for (_, proc) in leaving {
            proc.finish();
        }
        active = staying;
    }
    assert!(active.is_empty());
    assert_persisted(&shared, &id, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_twenty_expiries_one_request_each_with_processes_coming_and_going() {
    let _serial = SERIAL.lock().await;
    rotations(local_shared().await, "local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_twenty_expiries_one_request_each_with_processes_coming_and_going() {
    let Some(shared) = vault_shared().await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    rotations(shared, "vault").await;
}

/// 8 processes x 50 tasks, each process an agent built with `AgentRuntime::from_env()`,
/// over 20 real expiries: tokens live 6 s, so the effective window is 3 s (half the
/// lifetime) and each round starts 3.3 s after the previous round ended, inside the
/// window and (with 2.7 s to spare for a slow round) before expiry. Exactly one token request per expiry, never a reuse, everyone on
/// the newest token, and storage holds the last refresh token issued.
async fn expiries_through_from_env(shared: Shared, backend: &str) {
    const ROUNDS: u32 = 20;
    const PROCESSES: usize = 8;
    let endpoint = StrictEndpoint::start(6).await;
    let id = format!("from-env-{:016x}", rand::random::<u64>());
    shared
        .storage
        .save(&seed_credential(
            &id,
            endpoint.current_refresh_token(),
            Utc::now(),
        ))
        .await
        .unwrap();
    let coord = tempfile::tempdir().unwrap();
    let mut p = params(&shared, &endpoint, &id, coord.path());
    p.rounds = (0, ROUNDS);
    p.min_interval_secs = Some(0);
    let procs = spawn_ready(PROCESSES, &p, &shared);
    for round in 0..ROUNDS {
        go(coord.path(), round);
        let results: Vec<RoundResult> = procs.iter().map(Proc::result).collect();
        assert_one_request_per_expiry(&results, &endpoint, round, backend);
        // Into the next token's window (it refreshes at 3 s of its 6 s life).
        tokio::time::sleep(Duration::from_millis(3300)).await;
    }
    for proc in procs {
        proc.finish();
    }
    assert_persisted(&shared, &id, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_agents_from_env_20_expiries_one_token_request_each() {
    let _serial = SERIAL.lock().await;
    expiries_through_from_env(local_shared().await, "local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_agents_from_env_20_expiries_one_token_request_each() {
    let Some(shared) = vault_shared().await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    expiries_through_from_env(shared, "vault").await;
}

/// Agents built with `AgentRuntime::from_env()` in 3 processes (50 tasks each) share one
/// credential on a 3-node OpenBao Raft cluster with `HIVE_VAULT_ADDR = addr`. Tokens live
/// 6 s; every round is one expiry and must make exactly one token request, reuse no
/// refresh token and give everyone the newest token; afterwards storage holds the last
/// refresh token issued (no acknowledged save lost). `after_round` runs after each
/// round's results (to kill a node, say); the returned durations are the rounds' times.
async fn raft_agents_from_env(
    cluster: &mut hive_cred_vault::testkit::RaftCluster,
    addr: String,
    rounds: u32,
    mut after_round: impl FnMut(&mut hive_cred_vault::testkit::RaftCluster, u32),
) -> Vec<Duration> {
    use hive_cred_vault::testkit::Target;
    const PROCESSES: usize = 3;
    let _serial = SERIAL.lock().await;
    let shared = vault_shared_at(Target {
        addr,
        root_token: cluster.root_token().to_owned(),
    })
    .await;
    let endpoint = StrictEndpoint::start(6).await;
    let id = format!("raft-{:016x}", rand::random::<u64>());
    shared
        .storage
        .save(&seed_credential(
            &id,
            endpoint.current_refresh_token(),
            Utc::now(),
        ))
        .await
        .unwrap();
    // Agents on other hosts see a new credential once their node has applied it: a
    // standby answers reads from its own copy, a few milliseconds behind the active node.
    let Backend::Vault { prefix, .. } = &shared.backend else {
        unreachable!("a Vault backend")
    };
    tokio::task::block_in_place(|| cluster.wait_replicated(&format!("secret/data/{prefix}/{id}")));
    let coord = tempfile::tempdir().unwrap();
    let mut p = params(&shared, &endpoint, &id, coord.path());
    p.rounds = (0, rounds);
    p.min_interval_secs = Some(0);
    let procs = spawn_ready(PROCESSES, &p, &shared);
    let mut took = Vec::new();
    for round in 0..rounds {
        let started = std::time::Instant::now();
        go(coord.path(), round);
        let results: Vec<RoundResult> = procs.iter().map(Proc::result).collect();
        assert_one_request_per_expiry(&results, &endpoint, round, "vault raft");
        took.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(3300)).await;
        tokio::task::block_in_place(|| after_round(cluster, round));
    }
    for proc in procs {
        proc.finish();
    }
    assert_persisted(&shared, &id, &endpoint).await;
    took
}

/// A 3-node Raft cluster with a KV v2 mount, or `None` after a skip (a panic under
/// `CI=true`).
fn raft_cluster() -> Option<hive_cred_vault::testkit::RaftCluster> {
    tokio::task::block_in_place(|| {
        let cluster = hive_cred_vault::testkit::RaftCluster::start(3)?;
        cluster.mount_kv();
        Some(cluster)
    })
}

/// `HIVE_VAULT_ADDR` lists every node; after round 2 the active node is killed (SIGKILL)
/// while the next round starts. Prints how long the round across the kill took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_raft_agents_from_env_survive_the_active_node_being_killed() {
    const KILL_AFTER: u32 = 2;
    let Some(mut cluster) = raft_cluster() else {
        return;
    };
    let addr = cluster.addrs().join(",");
    let took = raft_agents_from_env(&mut cluster, addr, 6, |cluster, round| {
        if round == KILL_AFTER {
            let active = cluster.wait_active();
            cluster.kill(active);
        }
    })
    .await;
    println!(
        "vault raft: the round started while the cluster elected a new leader took {:?}",
        took[KILL_AFTER as usize + 1]
    );
}

/// `HIVE_VAULT_ADDR` is one standby's address (a client whose node was demoted, or a
/// balancer that picked a standby). OpenBao standbys answer reads from their own copy, a
/// few milliseconds behind the active node, and forward writes: the agent that takes the
/// refresh lock right after another saved a rotated refresh token must still read that
/// token, or it would send the spent one (the strict endpoint then revokes the family).
/// Reads spread over several nodes are covered by hive-cred-vault's `tests/consistency.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_raft_agents_from_env_behind_a_standby_never_reuse_a_refresh_token() {
    let Some(mut cluster) = raft_cluster() else {
        return;
    };
    let active = tokio::task::block_in_place(|| cluster.wait_active());
    let standby = cluster.addr((active + 1) % cluster.len());
    raft_agents_from_env(&mut cluster, standby, 4, |_, _| {}).await;
}
