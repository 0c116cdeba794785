//! Canary test: a secret value and the Vault tokens never show in Debug, Display,
//! errors or captured tracing output (every level, every crate, every thread).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_cred_core::testkit::{CANARY, unique_id};
use hive_cred_core::{CredentialObject, CredentialStorage, CredentialType, ExposeSecret};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
use serde_json::json;

/// The canary value and the tokens never show in Debug,
/// Display, errors or captured tracing output (all levels, all crates).
#[test]
fn canary_never_in_errors_or_tracing() {
    let Some(target) = support::shared() else {
        return;
    };
    let buf = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let buf = buf.clone();
        move || CaptureWriter(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    // The global default, not a thread-local one: events on every thread (runtime
    // workers, the renewal task) are captured, with no callsite-interest races against
    // other threads. This binary holds only this test.
    tracing::subscriber::set_global_default(subscriber).expect("first global subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (token, outputs) = rt.block_on(async {
        let prefix = support::unique_prefix("canary");
        let policy = format!("hive-rw-{:x}", support::rand_u64());
        support::put_policy(&target, &policy, &support::rw_policy(&prefix)).await;
        let token = support::create_token(
            &target,
            json!({"policies": [policy], "ttl": "3s", "renewable": true}),
        )
        .await;
        let config = support::config(&target, &token, &prefix);
        let storage = VaultStorage::new(config.clone()).await.unwrap();
        let id = unique_id("canary");
        let mut c = CredentialObject::with_id(id.clone(), CredentialType::BearerToken);
        c.set_key("token", CANARY, None).unwrap();
        storage.save(&c).await.unwrap();
        let back = storage.load(&id).await.unwrap().unwrap();
        assert_eq!(back.get_key("token").unwrap().expose_secret(), CANARY); // EXPOSE: the test compares the secret value.
        let conflict = storage.save(&c).await.unwrap_err();
        let denied = {
            let ro =
                support::create_token(&target, json!({"policies": ["default"], "ttl": "1m"})).await;
            let s = VaultStorage::new(support::config(&target, &ro, &prefix))
                .await
                .unwrap();
            s.save(&c).await.unwrap_err()
        };
        let refused = VaultStorage::new(
            VaultConfig::new(
                &format!("http://127.0.0.1:{}", support::free_port()),
                VaultAuth::token(token.clone()),
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
        // Wait (bounded) for a background renewal so its logs are captured too.
        let start = Instant::now();
        while !String::from_utf8_lossy(&buf.lock().unwrap()).contains("renewed Vault token") {
            if start.elapsed() > Duration::from_secs(10) {
                let logs = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
                let vault_lines: Vec<_> = logs
                    .lines()
                    .filter(|l| l.contains("hive_cred_vault"))
                    .collect();
                panic!("no renewal logged within 10 s: {vault_lines:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        storage.load(&id).await.unwrap();
        storage.delete(&id).await.unwrap();
        let mut outputs = vec![
            format!("{storage:?}"),
            format!("{config:?}"),
            format!("{:?}", config.auth()),
            format!("{back:?}"),
            back.to_string(),
        ];
        for err in [conflict, denied, refused] {
            outputs.push(err.to_string());
            outputs.push(format!("{err:?}"));
        }
        (token, outputs)
    });
    drop(rt);
    let logs = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("saved credential to Vault"), "capture works");
    for out in outputs.iter().chain(std::iter::once(&logs)) {
        assert!(!out.contains(CANARY), "secret leaked: {out}");
        assert!(!out.contains(&token), "token leaked: {out}");
        assert!(!out.contains(&target.root_token), "root token leaked");
    }
}

struct CaptureWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("capture buffer lock")
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
