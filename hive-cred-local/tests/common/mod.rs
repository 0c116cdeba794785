//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hive_cred_core::{CredentialId, CredentialObject, CredentialStorage, CredentialType, Result};
use hive_cred_local::{KeySource, LocalStorage, LocalStorageOptions, RawKey, ScryptParams};
use secrecy::SecretString;

/// Cheap scrypt (1 MiB, 2^10 iterations) so tests stay fast; production default is 17/8/1.
pub fn fast_options() -> LocalStorageOptions {
    LocalStorageOptions::new().with_scrypt_params(ScryptParams::new(10, 8, 1).unwrap())
}

pub fn passphrase(p: &str) -> KeySource {
    KeySource::Passphrase(SecretString::from(p))
}

pub fn raw_key(byte: u8) -> KeySource {
    KeySource::RawKey(RawKey::from_bytes([byte; 32]))
}

pub async fn open(dir: &Path, key: KeySource) -> LocalStorage {
    LocalStorage::open_with(dir, key, fast_options())
        .await
        .unwrap()
}

pub fn api_key(id: &str, value: &str) -> CredentialObject {
    let mut c = CredentialObject::new(id, CredentialType::ApiKey).unwrap();
    c.set_key("api_key", value.to_string(), None).unwrap();
    c
}

pub fn id(s: &str) -> CredentialId {
    CredentialId::new(s).unwrap()
}

pub async fn value_of(s: &LocalStorage, id_: &str) -> String {
    use secrecy::ExposeSecret;
    s.load(&id(id_))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id_} missing"))
        .get_key("api_key")
        .unwrap()
        .expose_secret() // EXPOSE: the test compares the secret value.
        .to_string()
}

/// The bytes of every record file, in `record_files` order.
pub fn record_bytes(dir: &Path) -> Vec<Vec<u8>> {
    record_files(dir)
        .iter()
        .map(|f| std::fs::read(f).expect("read a record file"))
        .collect()
}

/// Record files (`*.cred`) of a store directory, sorted.
pub fn record_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cred"))
        .collect();
    files.sort();
    files
}

/// Every file under `dir` with its bytes, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// A store in a temporary directory that lives as long as the storage.
#[derive(Debug)]
pub struct TempStore {
    pub storage: LocalStorage,
    pub dir: tempfile::TempDir,
}

impl TempStore {
    pub async fn new() -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir.path().join("credentials"), raw_key(1)).await;
        TempStore { storage, dir }
    }
}

#[async_trait]
impl CredentialStorage for TempStore {
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        self.storage.load(id).await
    }
    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        self.storage.save(credential).await
    }
    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        self.storage.delete(id).await
    }
    async fn list(&self) -> Result<Vec<CredentialId>> {
        self.storage.list().await
    }
    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        self.storage.exists(id).await
    }
    fn backend_name(&self) -> &'static str {
        self.storage.backend_name()
    }
}
