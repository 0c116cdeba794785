//! Crash safety and multi-process writers, with real child processes.
//!
//! The children are this test binary re-executed with `--ignored --exact child_process`
//! and the mode in `HIVE_LOCAL_CHILD_MODE`. Writers are killed with SIGKILL at random
//! points; after every kill the store is reopened and every credential must decrypt to
//! its old or its new value.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use hive_cred_core::{CredentialStorage, ErrorKind};
use rand::Rng;

const IDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const MODE: &str = "HIVE_LOCAL_CHILD_MODE";
const DIR: &str = "HIVE_LOCAL_CHILD_DIR";
const WORKER: &str = "HIVE_LOCAL_CHILD_WORKER";
const INCREMENTS: u64 = 25;

fn spawn(mode: &str, dir: &Path, worker: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_process", "--nocapture"])
        .env(MODE, mode)
        .env(DIR, dir)
        .env(WORKER, worker.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACK {line}").unwrap();
    out.flush().unwrap();
}

/// Not a test: the body of the child processes.
#[tokio::test(flavor = "current_thread")]
#[ignore = "child process of the crash and concurrency tests"]
async fn child_process() {
    let (Ok(mode), Ok(dir)) = (std::env::var(MODE), std::env::var(DIR)) else {
        return;
    };
    let dir = Path::new(&dir);
    match mode.as_str() {
        "write" => {
            let s = open(dir, raw_key(1)).await;
            loop {
                for name in IDS {
                    let mut c = s.load(&id(name)).await.unwrap().unwrap();
                    let n: u64 = value_of(&s, name).await.parse().unwrap();
                    c.set_key("api_key", (n + 1).to_string(), None).unwrap();
                    s.save(&c).await.unwrap();
                    ack(&format!("{name} {}", n + 1));
                }
            }
        }
        "rotate" => {
            let s = open(dir, raw_key(1)).await;
            loop {
                let report = s.rotate_data_key().await.unwrap();
                ack(&format!("rotated {}", report.generation));
            }
        }
        "passphrase" => {
            let (mut s, mut current) = match hive_cred_local::LocalStorage::open_with(
                dir,
                passphrase("A"),
                fast_options(),
            )
            .await
            {
                Ok(s) => (s, "A"),
                Err(_) => (open(dir, passphrase("B")).await, "B"),
            };
            loop {
                let next = if current == "A" { "B" } else { "A" };
                s.change_passphrase(passphrase(next)).await.unwrap();
                current = next;
                ack(&format!("passphrase {current}"));
                s = open(dir, passphrase(current)).await;
            }
        }
        "increment" => {
            let worker: usize = std::env::var(WORKER).unwrap().parse().unwrap();
            let s = open(dir, raw_key(1)).await;
            for i in 0..INCREMENTS {
                loop {
                    let mut c = s.load(&id("counter")).await.unwrap().unwrap();
                    let n: u64 = value_of(&s, "counter").await.parse().unwrap();
                    c.set_key("api_key", (n + 1).to_string(), None).unwrap();
                    match s.save(&c).await {
                        Ok(()) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict => continue,
                        Err(e) => panic!("save failed: {e}"),
                    }
                }
                s.save(&api_key(&format!("w{worker}-{i}"), "x"))
                    .await
                    .unwrap();
            }
            ack("done");
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Lets the child get `min..max` acknowledgements in, kills it (SIGKILL), and returns
/// every acknowledgement it printed.
fn run_and_kill(mut child: Child, min: usize, max: usize) -> Vec<String> {
    let target = rand::thread_rng().gen_range(min..max);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Vec::new();
    while acks.len() < target {
        match lines.next() {
            Some(line) => {
                let line = line.unwrap();
                if let Some(a) = line.strip_prefix("ACK ") {
                    acks.push(a.to_string());
                }
            }
            None => panic!("child exited early after {} acks", acks.len()),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines {
        if let Some(a) = line.unwrap().strip_prefix("ACK ") {
            acks.push(a.to_string());
        }
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_writers_leave_every_credential_at_its_old_or_new_value() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = open(tmp.path(), raw_key(1)).await;
    for name in IDS {
        setup.save(&api_key(name, "0")).await.unwrap();
    }
    let mut durable: HashMap<&str, u64> = IDS.iter().map(|n| (*n, 0)).collect();
    let mut total_acks = 0;
    for round in 0..12 {
        let acks = run_and_kill(spawn("write", tmp.path(), 0), 1, 40);
        total_acks += acks.len();
        for a in &acks {
            let (name, n) = a.split_once(' ').unwrap();
            let n: u64 = n.parse().unwrap();
            let slot = durable
                .get_mut(IDS.iter().find(|i| **i == name).unwrap())
                .unwrap();
            assert!(n > *slot, "acknowledged values only grow");
            *slot = n;
        }
        // A fresh handle, as after a crash.
        let s = open(tmp.path(), raw_key(1)).await;
        for name in IDS {
            let stored: u64 = value_of(&s, name).await.parse().unwrap();
            let acked = durable[name];
            assert!(
                stored == acked || stored == acked + 1,
                "round {round}: {name} is {stored}, last acknowledged {acked}"
            );
            // The unacknowledged write that landed is the new baseline.
            durable.insert(name, stored);
        }
        let mut listed = s.list().await.unwrap();
        listed.sort();
        assert_eq!(listed.len(), IDS.len());
    }
    assert!(total_acks >= 12, "the children made progress");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    // A later writer removes temp files of killed writers.
    let s = open(tmp.path(), raw_key(1)).await;
    let c = s.load(&id("alpha")).await.unwrap().unwrap();
    s.save(&c).await.unwrap();
    for name in leftovers {
        assert!(!tmp.path().join(name).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_rotations_never_leave_a_record_unreadable_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = open(tmp.path(), raw_key(1)).await;
    for i in 0..40 {
        setup
            .save(&api_key(&format!("r{i}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    for _ in 0..8 {
        run_and_kill(spawn("rotate", tmp.path(), 0), 1, 4);
        let s = open(tmp.path(), raw_key(1)).await;
        for i in 0..40 {
            assert_eq!(value_of(&s, &format!("r{i}")).await, format!("v{i}"));
        }
    }
    let s = open(tmp.path(), raw_key(1)).await;
    let report = s.rotate_data_key().await.unwrap();
    let s2 = open(tmp.path(), raw_key(1)).await;
    assert_eq!(s2.list().await.unwrap().len(), 40);
    assert!(report.generation > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_passphrase_changes_leave_one_working_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = open(tmp.path(), passphrase("A")).await;
    for i in 0..5 {
        setup.save(&api_key(&format!("p{i}"), "v")).await.unwrap();
    }
    for _ in 0..6 {
        run_and_kill(spawn("passphrase", tmp.path(), 0), 1, 6);
        let with_a =
            hive_cred_local::LocalStorage::open_with(tmp.path(), passphrase("A"), fast_options())
                .await;
        let with_b =
            hive_cred_local::LocalStorage::open_with(tmp.path(), passphrase("B"), fast_options())
                .await;
        let s = match (with_a, with_b) {
            (Ok(s), Err(_)) | (Err(_), Ok(s)) => s,
            (a, b) => panic!(
                "exactly one passphrase must work: {:?} {:?}",
                a.err(),
                b.err()
            ),
        };
        for i in 0..5 {
            assert_eq!(value_of(&s, &format!("p{i}")).await, "v");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writer_processes_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = open(tmp.path(), raw_key(1)).await;
    setup.save(&api_key("counter", "0")).await.unwrap();
    const WORKERS: usize = 4;
    let children: Vec<_> = (0..WORKERS)
        .map(|w| spawn("increment", tmp.path(), w))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("ACK done"));
    }
    assert_eq!(
        value_of(&setup, "counter").await,
        (WORKERS as u64 * INCREMENTS).to_string()
    );
    let listed = setup.list().await.unwrap();
    assert_eq!(listed.len(), 1 + WORKERS * INCREMENTS as usize);
}
