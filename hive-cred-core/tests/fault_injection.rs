//! A deterministic fault-injection suite for refresh: `SCENARIOS` seeded scenarios, each
//! `M` store handles (standing in for processes: each has its own cache, single flight
//! and kept saves) sharing one locking storage, `N` tasks per handle and round, over
//! many expiries on a manual clock, against a simulated provider that rotates refresh
//! tokens, accepts each once and revokes the whole family when a used one comes back.
//!
//! Faults, drawn from the scenario's seed: the provider fails temporarily or panics;
//! storage saves fail (Vault 503, disk full), loads fail, saves are slow (the task
//! yields, so other tasks interleave), and another writer edits the credential between
//! a refresh's load and its save. Interleavings come from the seed too (yields in
//! storage operations, how tasks are spread over handles), on a current-thread Tokio
//! runtime with paused time, so a seed replays exactly.
//!
//! After the faulty rounds, faults stop, a few clean rounds run and kept saves settle.
//! Then, for every scenario:
//! - the provider never saw a refresh token twice and never revoked the family;
//! - storage holds the last refresh token the provider issued;
//! - token requests <= refreshes needed (one per expiry) + injected provider failures;
//! - no caller received an expired access token.
//!
//! A failure names its seed; `HIVE_FI_SEED=<seed>` replays that one scenario and
//! `HIVE_FI_SCENARIOS=<n>` runs more.
#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use hive_cred_core::lock::{CredentialLock, LockOptions, LockRelease};
use hive_cred_core::{
    Clock, CredentialId, CredentialObject, CredentialProvider, CredentialStorage, CredentialStore,
    CredentialType, Error, ErrorKind, ExposeSecret, ManualClock, MemoryStorage, RefreshPolicy,
    Result, StorageCapabilities, StorageLayer,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SCENARIOS: u64 = 1000;
const ID: &str = "shared";
/// Tokens live an hour; the store refreshes them inside the last 5 minutes.
const LIFETIME_SECS: i64 = 3600;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// Fault switches shared by the provider and the storage; `on` turns all off at once.
#[derive(Debug)]
struct Faults {
    on: AtomicBool,
    rng: Mutex<StdRng>,
    provider_fail: f64,
    provider_panic: f64,
    save_fail: f64,
    load_fail: f64,
    conflicting_edit: f64,
    max_yields: u32,
}

impl Faults {
    fn roll(&self, p: f64) -> bool {
        self.on.load(Ordering::SeqCst) && self.rng.lock().unwrap().gen_bool(p)
    }
    fn yields(&self) -> u32 {
        self.rng.lock().unwrap().gen_range(0..=self.max_yields)
    }
    async fn interleave(&self) {
        for _ in 0..self.yields() {
            tokio::task::yield_now().await;
        }
    }
}

/// The token endpoint: rotates the refresh token on every grant, accepts each once,
/// revokes the family when a used one comes back.
#[derive(Debug)]
struct RotatingProvider {
    faults: Arc<Faults>,
    clock: Arc<ManualClock>,
    state: Mutex<Family>,
}

#[derive(Debug, Default)]
struct Family {
    current: String,
    used: HashSet<String>,
    issued: u64,
    requests: u64,
    injected_failures: u64,
    reuses: u64,
    revoked: bool,
}

#[async_trait]
impl CredentialProvider for RotatingProvider {
    fn provider_id(&self) -> &str {
        "rotating"
    }

    async fn refresh(&self, c: &CredentialObject) -> Result<CredentialObject> {
        self.faults.interleave().await;
        let presented = c.get_key("refresh_token").unwrap();
        // EXPOSE: the simulated endpoint compares the presented token.
        let presented = presented.expose_secret().to_owned();
        {
            let mut f = self.state.lock().unwrap();
            f.requests += 1;
            if self.faults.roll(self.faults.provider_fail) {
                f.injected_failures += 1;
                return Err(Error::unavailable("injected: token endpoint 503"));
            }
            if self.faults.roll(self.faults.provider_panic) {
                f.injected_failures += 1;
                drop(f);
                panic!("injected provider panic");
            }
            if f.revoked {
                return Err(Error::new(ErrorKind::RefreshRejected, "family revoked"));
            }
            if presented != f.current {
                if f.used.contains(&presented) {
                    f.reuses += 1;
                }
                f.revoked = true;
                return Err(Error::new(
                    ErrorKind::RefreshRejected,
                    "invalid_grant: refresh token reused; family revoked",
                ));
            }
            f.used.insert(presented);
            f.issued += 1;
            f.current = format!("rt-{}", f.issued);
        }
        self.faults.interleave().await;
        let f = self.state.lock().unwrap();
        let now = self.clock.now();
        let mut fresh = c.clone();
        fresh
            .set_key(
                "access_token",
                format!("at-{}", f.issued),
                Some(now + chrono::Duration::seconds(LIFETIME_SECS)),
            )
            .unwrap();
        fresh
            .set_key("refresh_token", f.current.clone(), None)
            .unwrap();
        fresh.set_last_refreshed(now);
        Ok(fresh)
    }
}

/// A storage shared by all handles: MemoryStorage with one lock per credential (a
/// stand-in for the local store's file locks), plus the injected faults.
#[derive(Debug)]
struct FaultyStorage {
    mem: MemoryStorage,
    faults: Arc<Faults>,
    locks: Mutex<HashMap<CredentialId, Arc<tokio::sync::Mutex<()>>>>,
    edits: AtomicU64,
}

#[derive(Debug)]
struct Held(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

#[async_trait]
impl LockRelease for Held {
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl StorageLayer for FaultyStorage {
    fn inner(&self) -> &dyn CredentialStorage {
        &self.mem
    }

    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        self.faults.interleave().await;
        if self.faults.roll(self.faults.load_fail) {
            return Err(Error::unavailable("injected: load failed"));
        }
        self.mem.load(id).await
    }

    async fn save(&self, c: &CredentialObject) -> Result<()> {
        if self.faults.roll(self.faults.conflicting_edit) {
            // Another writer changes a field (not the secrets) first.
            if let Some(mut other) = self.mem.load(c.id()).await? {
                let n = self.edits.fetch_add(1, Ordering::SeqCst);
                other.set_description(Some(format!("edited {n}")));
                self.mem.save(&other).await?;
            }
        }
        self.faults.interleave().await;
        if self.faults.roll(self.faults.save_fail) {
            return Err(Error::unavailable("injected: save failed"));
        }
        self.mem.save(c).await
    }

    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::process_lock()
    }

    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        let m = self
            .locks
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default()
            .clone();
        match tokio::time::timeout(options.wait, m.lock_owned()).await {
            Ok(g) => Ok(CredentialLock::new(id.clone(), Held(g))),
            Err(_) => {
                Err(Error::unavailable("the credential's lock is held").with_context("id", id))
            }
        }
    }
}

struct Outcome {
    expiries: u64,
    family: Family,
    stored_refresh: String,
    expired_results: u64,
}

async fn scenario(seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = Arc::new(Faults {
        on: AtomicBool::new(true),
        rng: Mutex::new(StdRng::seed_from_u64(rng.r#gen())),
        provider_fail: rng.gen_range(0.0..0.3),
        provider_panic: rng.gen_range(0.0..0.05),
        save_fail: rng.gen_range(0.0..0.5),
        load_fail: rng.gen_range(0.0..0.1),
        conflicting_edit: rng.gen_range(0.0..0.3),
        max_yields: rng.gen_range(0..4),
    });
    let clock = Arc::new(ManualClock::new(t0()));
    let provider = Arc::new(RotatingProvider {
        faults: faults.clone(),
        clock: clock.clone(),
        state: Mutex::new(Family {
            current: "rt-0".into(),
            ..Family::default()
        }),
    });
    let storage = Arc::new(FaultyStorage {
        mem: MemoryStorage::new(),
        faults: faults.clone(),
        locks: Mutex::new(HashMap::new()),
        edits: AtomicU64::new(0),
    });
    let mut seed_cred = CredentialObject::builder(ID, CredentialType::OAuth2)
        .provider_id("rotating")
        .auto_refresh(true)
        .build()
        .unwrap();
    seed_cred
        .set_key(
            "access_token",
            "at-0",
            Some(t0() - chrono::Duration::seconds(1)),
        )
        .unwrap();
    seed_cred.set_key("refresh_token", "rt-0", None).unwrap();
    storage.mem.save(&seed_cred).await.unwrap();

    let handles: Vec<CredentialStore> = (0..rng.gen_range(1..=4))
        .map(|_| {
            CredentialStore::builder()
                .storage(storage.clone())
                .provider(provider.clone())
                .clock(clock.clone())
                .refresh_policy(
                    RefreshPolicy::new()
                        .with_backoff(Duration::from_secs(1), Duration::from_secs(8)),
                )
                .build()
                .unwrap()
        })
        .collect();
    let faulty_rounds = rng.gen_range(3..12u64);
    let clean_rounds = 3u64;
    let mut expired_results = 0;
    for round in 0..faulty_rounds + clean_rounds {
        if round == faulty_rounds {
            faults.on.store(false, Ordering::SeqCst);
            // Let kept saves settle and backoffs pass.
            tokio::time::sleep(Duration::from_secs(600)).await;
            clock.advance(chrono::Duration::seconds(600));
        }
        let tasks: Vec<_> = (0..rng.gen_range(1..=12))
            .map(|_| {
                let store = handles[rng.gen_range(0..handles.len())].clone();
                let clock = clock.clone();
                tokio::spawn(async move {
                    match store.get(ID).await {
                        Ok(c) => u64::from(c.is_expired_at(clock.now())),
                        Err(_) => 0,
                    }
                })
            })
            .collect();
        for t in tasks {
            expired_results += t.await.unwrap();
        }
        // To the next expiry: past the token's life.
        clock.advance(chrono::Duration::seconds(LIFETIME_SECS + 1));
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    for h in &handles {
        assert!(
            h.unsaved().is_empty(),
            "seed {seed}: a refreshed credential was never saved"
        );
    }
    let stored = storage
        .mem
        .load(&ID.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let stored_refresh = stored.get_key("refresh_token").unwrap();
    // EXPOSE: compared with the provider's last issued token.
    let stored_refresh = stored_refresh.expose_secret().to_owned();
    let family = std::mem::take(&mut *provider.state.lock().unwrap());
    Outcome {
        expiries: faulty_rounds + clean_rounds,
        family,
        stored_refresh,
        expired_results,
    }
}

fn run(seed: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let o = rt.block_on(scenario(seed));
    let f = &o.family;
    let replay = format!("seed {seed} (replay: HIVE_FI_SEED={seed})");
    assert_eq!(f.reuses, 0, "{replay}: a refresh token was presented twice");
    assert!(!f.revoked, "{replay}: the token family was revoked");
    assert_eq!(
        o.stored_refresh, f.current,
        "{replay}: storage does not hold the last refresh token issued"
    );
    assert!(
        f.requests <= o.expiries + f.injected_failures,
        "{replay}: {} token requests for {} expiries and {} injected failures",
        f.requests,
        o.expiries,
        f.injected_failures
    );
    assert!(f.issued >= 1, "{replay}: never refreshed");
    assert_eq!(
        o.expired_results, 0,
        "{replay}: a caller received an expired token"
    );
}

#[test]
fn seeded_scenarios_never_lose_a_grant() {
    // Injected panics are expected; keep their reports out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.starts_with("injected"));
        if !injected {
            default_hook(info);
        }
    }));
    if let Some(seed) = std::env::var("HIVE_FI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed);
        return;
    }
    let n: u64 = std::env::var("HIVE_FI_SCENARIOS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SCENARIOS);
    for seed in 0..n {
        run(seed);
    }
}
