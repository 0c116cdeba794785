//! [`LocalStorage`]: the handle, opening a store, and the [`CredentialStorage`] impl.
//!
//! Every operation runs on tokio's blocking pool: each one opens, reads or writes files,
//! and may need the header re-read (another process created, re-keyed or rotated the
//! store), which can mean a scrypt derivation. The async executor never waits on the
//! disk or on key derivation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hive_cred_core::{
    CredentialId, CredentialLock, CredentialObject, CredentialStorage, Error, ErrorKind,
    LockOptions, Result, StorageCapabilities,
};

use crate::format::{MAX_HEADER_LEN, TAG_LEN};
use crate::fs::{Role, create_private_dir, hex, io_error, read_regular, too_open};
use crate::key::KeySource;
use crate::keyring::Keyring;
use crate::lock::{LocalCredentialLock, Wait};
use crate::options::LocalStorageOptions;
use crate::rotate::RotationReport;

pub(crate) const HEADER_FILE: &str = "store.header";
pub(crate) const LOCK_FILE: &str = "store.lock";
pub(crate) const LOCKS_DIR: &str = "locks";
pub(crate) const RECORD_SUFFIX: &str = ".cred";

/// Encrypted, crash-safe credential storage in a local directory. See the crate docs for
/// the format and guarantees.
///
/// A cheap handle: clones share keys and the names learnt so far.
#[derive(Clone)]
pub struct LocalStorage {
    pub(crate) inner: Arc<Inner>,
}

/// Record file tag -> id. foldhash: std's SipHash was a fifth of a new handle's `list`.
pub(crate) type NameMap = HashMap<[u8; TAG_LEN], CredentialId, foldhash::fast::RandomState>;

/// The state shared by the clones of a handle.
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: LocalStorageOptions,
    /// The unlocked header (see `keyring`).
    pub(crate) keys: RwLock<Arc<Keyring>>,
    /// Kept to re-derive the wrapping key if another process re-keys the store.
    pub(crate) source: Mutex<KeySource>,
    /// File tag -> id, so that `list` need not decrypt records it has seen (see `list`).
    pub(crate) names: Mutex<NameMap>,
    /// Whether this handle's first writer removed stale temporary files.
    pub(crate) temp_cleaned: AtomicBool,
    /// Whether this handle has read the names index.
    pub(crate) index_read: AtomicBool,
}

impl fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStorage")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("a local storage task failed: {e}"),
    )
}

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)?
}

impl LocalStorage {
    /// Opens (or prepares to create) the store in `dir` with default options.
    ///
    /// An existing store is unlocked with `key` (one scrypt derivation for passphrase
    /// stores, run on tokio's blocking pool). A missing directory is not an error: it is
    /// created, mode 0700, by the first save.
    ///
    /// # Errors
    /// - `Decryption`: the passphrase or key is wrong (nothing is modified).
    /// - `Config`: an empty passphrase, or a passphrase given for a raw-key store (or the
    ///   reverse).
    /// - `Corrupted`: the header is truncated, foreign, of another format version, not a
    ///   regular file, or asks for a refused scrypt cost; or record files exist without a
    ///   header.
    /// - `PermissionDenied`: too-open permissions with
    ///   [`with_strict_permissions`](LocalStorageOptions::with_strict_permissions).
    pub async fn open(dir: impl Into<PathBuf>, key: KeySource) -> Result<LocalStorage> {
        Self::open_with(dir, key, LocalStorageOptions::default()).await
    }

    /// [`open`](Self::open) with options (a lower scrypt cost for tests, strict
    /// permissions).
    pub async fn open_with(
        dir: impl Into<PathBuf>,
        key: KeySource,
        options: LocalStorageOptions,
    ) -> Result<LocalStorage> {
        key.validate()?;
        let dir = dir.into();
        blocking(move || Inner::open(dir, key, options))
            .await
            .map(|inner| LocalStorage {
                inner: Arc::new(inner),
            })
    }

    /// `$HIVE_HOME/credentials`, with `HIVE_HOME` defaulting to `~/.hive`.
    ///
    /// # Errors
    /// `Config` when neither `HIVE_HOME` nor the home directory (`HOME`, or `USERPROFILE`
    /// on Windows) is set.
    pub fn default_dir() -> Result<PathBuf> {
        Self::default_dir_from_lookup(|name| std::env::var_os(name).map(PathBuf::from))
    }

    /// [`default_dir`](Self::default_dir) with a custom variable lookup.
    pub fn default_dir_from_lookup(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf> {
        let set = |name: &str| lookup(name).filter(|p| !p.as_os_str().is_empty());
        if let Some(home) = set("HIVE_HOME") {
            return Ok(home.join("credentials"));
        }
        let home = set("HOME").or_else(|| set("USERPROFILE")).ok_or_else(|| {
            Error::config("cannot find the default credential directory: set HIVE_HOME (or HOME)")
        })?;
        Ok(home.join(".hive").join("credentials"))
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Changes what protects the store to `new` (a passphrase, with a fresh salt, or a raw
    /// key) and, in the same step, rotates the data key: every record is re-encrypted
    /// under a fresh data key that only the new header wraps (see
    /// [`rotate_data_key`](Self::rotate_data_key) for how this is crash-safe). So the old
    /// passphrase, even with a saved copy of the old header, opens no record as it is
    /// after the change, nor any written later. It costs one re-encryption per record.
    ///
    /// From the moment the new header is durably in place only `new` opens the store.
    /// Other handles keep reading records they have already read; for anything else they
    /// are told to reopen the store with the new passphrase or key.
    pub async fn change_passphrase(&self, new: KeySource) -> Result<()> {
        new.validate()?;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.change_passphrase(new))
            .await
            .map(|_| ())
    }

    /// Changes what protects the store to `new` **without** rotating the data key: only
    /// the header is rewritten (one durable write, whatever the number of records).
    ///
    /// What it protects against: from then on the old passphrase with the store as it
    /// is opens nothing. What it does not: the data key is unchanged, so anyone holding
    /// a copy of the old header (a backup) and the old passphrase can still unwrap it
    /// and read every record, including those written after the change. When that
    /// matters (the old passphrase leaked), use [`change_passphrase`](Self::change_passphrase),
    /// which also rotates the data key.
    pub async fn rewrap_passphrase(&self, new: KeySource) -> Result<()> {
        new.validate()?;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.rewrap_passphrase(new)).await
    }

    /// Re-encrypts every record under a fresh data key, then drops the old key.
    ///
    /// Crash-safe and resumable: the header first wraps both keys, each record is
    /// rewritten atomically, and the old key is dropped only after every record is durably
    /// re-encrypted. If interrupted, calling it again finishes the same rotation. Writers
    /// in every process wait while it runs.
    ///
    /// # Errors
    /// A record that cannot be decrypted aborts the rotation with its file named, keeping
    /// both keys; remove or restore that file and call again.
    pub async fn rotate_data_key(&self) -> Result<RotationReport> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.rotate_data_key()).await
    }

    /// Takes the cross-process lock of one credential, waiting for other holders. See
    /// [`LocalCredentialLock`]. Creates the store if needed (the lock file name depends on the
    /// store's keys).
    pub async fn lock_credential(&self, id: &CredentialId) -> Result<LocalCredentialLock> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking(move || {
            inner
                .lock_credential(&id, Wait::Block)?
                .ok_or_else(|| Error::new(ErrorKind::Unexpected, "a blocking lock returned none"))
        })
        .await
    }

    /// Like [`lock_credential`](Self::lock_credential) but `Ok(None)` if another holder
    /// has the lock.
    pub async fn try_lock_credential(
        &self,
        id: &CredentialId,
    ) -> Result<Option<LocalCredentialLock>> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking(move || inner.lock_credential(&id, Wait::Try)).await
    }
}

#[async_trait]
impl CredentialStorage for LocalStorage {
    /// Reads and decrypts one record file, on the blocking pool.
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking(move || inner.load(&id))
            .await
            .map_err(|e| with_backend(e, "load"))
    }

    /// Check-and-set on `credential.version()` under the store lock; durable when it
    /// returns (see the crate docs, "Durability").
    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let credential = credential.clone();
        blocking(move || inner.save(credential))
            .await
            .map_err(|e| with_backend(e, "save"))
    }

    async fn delete(&self, id: &CredentialId) -> Result<bool> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking(move || inner.delete(&id))
            .await
            .map_err(|e| with_backend(e, "delete"))
    }

    /// Record files that cannot be read are skipped with a warning (their ids cannot be
    /// known); `load` of such an id reports the problem. Ids of records this handle has not
    /// seen yet come from the names index or, failing that, from decrypting the records.
    async fn list(&self) -> Result<Vec<CredentialId>> {
        self.list_ids().await.map_err(|e| with_backend(e, "list"))
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        blocking(move || inner.exists(&id))
            .await
            .map_err(|e| with_backend(e, "exists"))
    }

    fn backend_name(&self) -> &'static str {
        "local"
    }

    /// Per-credential OS file locks, shared by every process on the host.
    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::process_lock()
    }

    /// An OS file lock per credential (see [`LocalCredentialLock`]), polled until
    /// `options.wait` has passed, then `ErrorKind::Unavailable`. A holder that dies
    /// releases it at once, so `options.ttl` is not needed.
    async fn lock(&self, id: &CredentialId, options: &LockOptions) -> Result<CredentialLock> {
        let deadline = Instant::now() + options.wait;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(held) = self.try_lock_credential(id).await? {
                return Ok(CredentialLock::new(id.clone(), held));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::unavailable(format!(
                    "another process has held the credential's lock for over {:?}",
                    options.wait
                ))
                .with_context("id", id)
                .with_context("backend", "local"));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

fn with_backend(e: Error, operation: &'static str) -> Error {
    e.with_context("backend", "local")
        .with_context("operation", operation)
}

/// Locks `m`, ignoring poisoning (every critical section leaves its data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn open(dir: PathBuf, source: KeySource, options: LocalStorageOptions) -> Result<Inner> {
        let header_path = dir.join(HEADER_FILE);
        let keys = match read_regular(&header_path, Role::Header, MAX_HEADER_LEN)? {
            Some(bytes) => {
                check_permissions(&dir, "directory", options.strict_permissions())?;
                check_permissions(&header_path, "header", options.strict_permissions())?;
                Keyring::unlock(bytes, &header_path, &source, None)?
            }
            None => {
                if has_records(&dir)? {
                    return Err(Error::corrupted(
                        "the store header is missing but credential records exist; restore \
                         store.header from a backup",
                    )
                    .with_context("file", header_path.display()));
                }
                Keyring::fresh(&source, &options.scrypt_params())?
            }
        };
        if keys.material.deks.len() > 1 {
            tracing::warn!(
                dir = %dir.display(),
                "a data-key rotation of this credential store was interrupted; \
                 call rotate_data_key to finish it"
            );
        }
        Ok(Inner {
            dir,
            keys: RwLock::new(Arc::new(keys)),
            source: Mutex::new(source),
            names: Mutex::new(NameMap::default()),
            temp_cleaned: AtomicBool::new(false),
            index_read: AtomicBool::new(false),
            options,
        })
    }

    pub(crate) fn header_path(&self) -> PathBuf {
        self.dir.join(HEADER_FILE)
    }

    fn lock_credential(
        &self,
        id: &CredentialId,
        wait: Wait,
    ) -> Result<Option<LocalCredentialLock>> {
        let keys = {
            let (_guard, keys) = self.begin_write()?;
            keys
        };
        let locks = self.dir.join(LOCKS_DIR);
        create_private_dir(&locks)?;
        LocalCredentialLock::acquire(&locks.join(format!("{}.lock", hex(&keys.id_tag(id)))), wait)
    }
}

fn has_records(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(RECORD_SUFFIX))
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(e, "could not list", dir)),
    }
}

fn check_permissions(path: &Path, what: &str, strict: bool) -> Result<()> {
    let Some(mode) = too_open(path)? else {
        return Ok(());
    };
    let fix = if what == "directory" { "700" } else { "600" };
    if strict {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "the credential store {what} is accessible to other users (mode {mode:o}); \
                 run `chmod {fix}` on it"
            ),
        )
        .with_context("file", path.display()));
    }
    tracing::warn!(
        file = %path.display(),
        mode = %format_args!("{mode:o}"),
        "the credential store {what} is accessible to other users; run `chmod {fix}` on it"
    );
    Ok(())
}
