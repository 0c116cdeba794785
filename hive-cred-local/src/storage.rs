//! [`LocalStorage`]: the encrypted file backend.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hive_cred_core::codec::{from_stored, to_stored_bytes};
use hive_cred_core::{
    CredentialId, CredentialLock, CredentialObject, CredentialStorage, Error, ErrorKind,
    LockOptions, Result, StorageCapabilities,
};
use zeroize::Zeroizing;

#[cfg(unix)]
use crate::durable::read_at_capped_fast;
use crate::durable::{
    Flush, create_private_dir, hex, io_error, push_hex, read_capped, read_file, remove_durable,
    remove_stale_temp_files, too_open, unhex, write_atomic,
};
#[cfg(unix)]
use crate::durable::{open_for_update, write_slot};
use crate::format::{
    Candidates, MAX_HEADER_LEN, MAX_RECORD_FILE_LEN, Place, TAG_LEN, new_record_file, open_record,
    record_candidates, seal_record,
};
use crate::kept::KeptRecords;
#[cfg(unix)]
use crate::kept::{Kept, LastRead};
use crate::key::{KEY_LEN, KeySource, ScryptParams};
use crate::keyring::Keyring;
use crate::lock::{FileLock, LocalCredentialLock, Wait};

pub(crate) const HEADER_FILE: &str = "store.header";
pub(crate) const LOCK_FILE: &str = "store.lock";
pub(crate) const LOCKS_DIR: &str = "locks";
pub(crate) const RECORD_SUFFIX: &str = ".cred";
/// Length of a record file's name: the hex of its tag and [`RECORD_SUFFIX`].
const RECORD_NAME_LEN: usize = TAG_LEN * 2 + RECORD_SUFFIX.len();

/// Options for [`LocalStorage::open_with`].
///
/// # Default
/// scrypt cost [`ScryptParams::default`] (`log_n = 17, r = 8, p = 1`) for stores created
/// or re-keyed with a passphrase; permissions that are too open produce a warning, not an
/// error; up to 64 record files kept open between loads.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LocalStorageOptions {
    scrypt: ScryptParams,
    strict_permissions: bool,
    kept_open: usize,
}

impl Default for LocalStorageOptions {
    fn default() -> Self {
        LocalStorageOptions {
            scrypt: ScryptParams::default(),
            strict_permissions: false,
            kept_open: DEFAULT_KEPT_OPEN,
        }
    }
}

/// Default of [`LocalStorageOptions::with_kept_open_records`].
const DEFAULT_KEPT_OPEN: usize = 64;

impl LocalStorageOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// scrypt cost used when this handle creates a store or changes its passphrase.
    /// Opening an existing store always uses the cost recorded in its header (capped, see
    /// [`ScryptParams`]). Lower it only in tests.
    pub fn with_scrypt_params(mut self, params: ScryptParams) -> Self {
        self.scrypt = params;
        self
    }

    /// When `true`, `open` refuses a store directory or header readable by group or others
    /// with `ErrorKind::PermissionDenied`, instead of logging a warning.
    pub fn with_strict_permissions(mut self, strict: bool) -> Self {
        self.strict_permissions = strict;
        self
    }

    /// How many record files a handle (with its clones) keeps open between loads of the
    /// same credentials, so that loading one again reads it without opening it, and,
    /// while its bytes are unchanged, without decrypting it (Unix; see the crate docs,
    /// "Performance"). 0 keeps none. Default 64.
    pub fn with_kept_open_records(mut self, files: usize) -> Self {
        self.kept_open = files;
        self
    }

    /// How many record files a handle keeps open between loads.
    pub fn kept_open_records(&self) -> usize {
        self.kept_open
    }

    /// The scrypt cost for new or re-keyed stores.
    pub fn scrypt_params(&self) -> ScryptParams {
        self.scrypt
    }

    /// Whether too-open permissions are refused.
    pub fn strict_permissions(&self) -> bool {
        self.strict_permissions
    }
}

/// What [`LocalStorage::rotate_data_key`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationReport {
    /// Generation number of the data key now in use.
    pub generation: u32,
    /// Records re-encrypted by this call.
    pub records_reencrypted: usize,
}

/// Encrypted, crash-safe credential storage in a local directory. See the crate docs for
/// the format and guarantees.
///
/// A cheap handle: clones share keys and caches.
#[derive(Clone)]
pub struct LocalStorage {
    pub(crate) inner: Arc<Inner>,
}

/// File tag -> id. foldhash: std's SipHash was a fifth of a new handle's `list`.
type NameMap = HashMap<[u8; TAG_LEN], CredentialId, foldhash::fast::RandomState>;

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: LocalStorageOptions,
    keys: RwLock<Arc<Keyring>>,
    /// Kept to re-derive the wrapping key if another process re-keys the store.
    source: Mutex<KeySource>,
    /// File tag -> id, for `list` without decrypting known records again.
    names: Mutex<NameMap>,
    /// Names read from the names index and not yet added to `names`: a new handle that
    /// lists from the index never needs them, so the map is built on first need.
    unlearned: Mutex<Vec<([u8; TAG_LEN], CredentialId)>>,
    /// The last complete `list` result and the directory state it was read from (see
    /// [`DirStamp`]).
    listing: Mutex<Option<Listing>>,
    temp_cleaned: AtomicBool,
    /// Whether this handle has read the names index (see [`crate::index`]).
    index_read: AtomicBool,
    /// The directory state the names index records, as last read or written here.
    pub(crate) index_stamp: Mutex<Option<DirStamp>>,
    /// Record files kept open between loads (see [`crate::kept`]).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) kept: KeptRecords,
}

impl fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStorage")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("a local storage task failed: {e}"),
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
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
    /// - `Corrupted`: the header is truncated, foreign, of a future version, or asks for a
    ///   refused scrypt cost; or record files exist without a header.
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

    /// Re-wraps the data key under `new` (a new passphrase with a fresh salt, or a raw
    /// key). Records are not touched, so this is O(1). The new header replaces the old one
    /// atomically: until it is durably in place the old passphrase keeps working, after it
    /// only the new one does. Other processes that have the store open keep working with
    /// the data key they hold.
    pub async fn change_passphrase(&self, new: KeySource) -> Result<()> {
        new.validate()?;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.change_passphrase(new)).await
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

/// Records below which a cold `list` does not split its decryption work further.
const IDENTIFY_CHUNK_MIN: usize = 64;

impl LocalStorage {
    async fn list_ids(&self) -> Result<Vec<CredentialId>> {
        let inner = Arc::clone(&self.inner);
        let Scan {
            keys,
            stamp,
            mut ids,
            unknown,
        } = match blocking(move || inner.scan()).await? {
            Listed::Cached(ids) => return Ok(ids),
            Listed::Scan(scan) => scan,
        };
        // Each unknown record costs a read, a decryption and a decode: on a fresh
        // handle of a large store that is nearly all of the time, so one chunk per core.
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let chunk = unknown.len().div_ceil(workers).max(IDENTIFY_CHUNK_MIN);
        let tasks: Vec<_> = unknown
            .chunks(chunk)
            .map(|part| {
                let inner = Arc::clone(&self.inner);
                let keys = Arc::clone(&keys);
                let part = part.to_vec();
                tokio::task::spawn_blocking(move || inner.identify_all(&keys, &part))
            })
            .collect();
        let mut complete = true;
        let mut learned = 0;
        for task in tasks {
            let (found, all) = task.await.map_err(join_error)?;
            learned += found.len();
            ids.extend(found);
            complete &= all;
        }
        self.inner.remember_listing(stamp, &ids, complete);
        // Spare the next new handle (or process) the decryptions and, when the directory
        // state is settled, the directory read: the index then records that state.
        let trusted = match stamp {
            Some((stamp, true)) if complete => Some(stamp),
            _ => None,
        };
        if learned > 0 || (trusted.is_some() && self.inner.index_stamp() != trusted) {
            let inner = Arc::clone(&self.inner);
            let all = ids.clone();
            blocking(move || {
                inner.write_names_index(&all, trusted, learned > 0);
                Ok(())
            })
            .await?;
        }
        Ok(ids)
    }
}

#[async_trait]
impl CredentialStorage for LocalStorage {
    /// Reads one small file and decrypts it on the calling task: a local `open`+`read`
    /// of a few hundred bytes costs less than handing the work to the blocking pool. It
    /// never waits on locks, fsync or key derivation (a changed header is re-read on the
    /// blocking pool).
    async fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let result = match self.inner.load_fast(id) {
            Some(done) => done,
            None => {
                // The header must be read again (another process created, rotated or
                // re-keyed the store), which may need scrypt: off the executor.
                let inner = Arc::clone(&self.inner);
                let id = id.clone();
                blocking(move || inner.load(&id)).await
            }
        };
        result.map_err(|e| with_backend(e, "load"))
    }

    async fn save(&self, credential: &CredentialObject) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let credential = credential.clone();
        blocking(move || inner.save(&credential))
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
    /// known); `load` of such an id reports the problem.
    ///
    /// Ids of records this handle has not seen yet are learnt by decrypting them, spread
    /// over the blocking pool. While the directory is unchanged the previous result is
    /// returned without reading it again (see the crate docs, "Performance").
    async fn list(&self) -> Result<Vec<CredentialId>> {
        self.list_ids().await.map_err(|e| with_backend(e, "list"))
    }

    async fn exists(&self, id: &CredentialId) -> Result<bool> {
        let inner = Arc::clone(&self.inner);
        let result = if inner.cached_keys().on_disk {
            inner.exists(id)
        } else {
            let id = id.clone();
            blocking(move || inner.exists(&id)).await
        };
        result.map_err(|e| with_backend(e, "exists"))
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

/// The data key of `generation` in `keys`.
fn dek<'k>(keys: &'k Keyring, generation: u32, path: &Path) -> Result<&'k [u8; KEY_LEN]> {
    keys.material
        .dek(generation)
        .ok_or_else(|| missing_generation(generation, path))
}

fn missing_generation(generation: u32, path: &Path) -> Error {
    Error::new(
        ErrorKind::Decryption,
        format!(
            "credential record is encrypted with data key generation {generation}, which \
             this store does not hold"
        ),
    )
    .with_context("file", path.display())
}

fn failed_authentication(path: &Path) -> Error {
    Error::new(
        ErrorKind::Decryption,
        "credential record failed authentication: it was modified, or copied from another \
         credential or store",
    )
    .with_context("file", path.display())
}

fn with_backend(e: Error, operation: &'static str) -> Error {
    e.with_context("backend", "local")
        .with_context("operation", operation)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn open(dir: PathBuf, source: KeySource, options: LocalStorageOptions) -> Result<Inner> {
        let header_path = dir.join(HEADER_FILE);
        let keys = match read_capped(&header_path, MAX_HEADER_LEN)? {
            Some(bytes) => {
                check_permissions(&dir, "directory", options.strict_permissions)?;
                check_permissions(&header_path, "header", options.strict_permissions)?;
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
                Keyring::fresh(&source, &options.scrypt)?
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
            unlearned: Mutex::new(Vec::new()),
            listing: Mutex::new(None),
            temp_cleaned: AtomicBool::new(false),
            index_read: AtomicBool::new(false),
            index_stamp: Mutex::new(None),
            kept: KeptRecords::new(options.kept_open),
            options,
        })
    }

    pub(crate) fn header_path(&self) -> PathBuf {
        self.dir.join(HEADER_FILE)
    }

    /// The file of the record whose id has the keyed hash `tag`. Sized up front: this
    /// is on every load.
    pub(crate) fn record_path(&self, tag: &[u8; TAG_LEN]) -> PathBuf {
        let mut name = String::with_capacity(RECORD_NAME_LEN);
        push_hex(&mut name, tag);
        name.push_str(RECORD_SUFFIX);
        let mut path = PathBuf::with_capacity(self.dir.as_os_str().len() + 1 + RECORD_NAME_LEN);
        path.push(&self.dir);
        path.push(name);
        path
    }

    pub(crate) fn cached_keys(&self) -> Arc<Keyring> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn install_keys(&self, keys: Keyring) -> Arc<Keyring> {
        let keys = Arc::new(keys);
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&keys);
        keys
    }

    /// Keys for reading. Until this handle knows the store is on disk, looks whether
    /// another process created it meanwhile.
    fn read_keys(&self) -> Result<Arc<Keyring>> {
        let keys = self.cached_keys();
        if keys.on_disk {
            Ok(keys)
        } else {
            self.sync_keys(false)
        }
    }

    /// Re-reads the header and adopts it if it changed (another process rotated or
    /// re-keyed the store, or created it). With `create`, a missing header is written
    /// from this handle's fresh keys (the store lock must be held).
    pub(crate) fn sync_keys(&self, create: bool) -> Result<Arc<Keyring>> {
        let keys = self.cached_keys();
        let path = self.header_path();
        match read_capped(&path, MAX_HEADER_LEN)? {
            Some(bytes) if bytes == keys.header_bytes => {
                if keys.on_disk {
                    Ok(keys)
                } else {
                    let mut adopted = Keyring::unlock(bytes, &path, &self.source(), Some(&keys))?;
                    adopted.on_disk = true;
                    Ok(self.install_keys(adopted))
                }
            }
            Some(bytes) => {
                let adopted = Keyring::unlock(bytes, &path, &self.source(), Some(&keys))?;
                if adopted.store_id != keys.store_id {
                    self.kept.clear();
                    lock(&self.names).clear();
                    lock(&self.unlearned).clear();
                    *lock(&self.listing) = None;
                    self.index_read.store(false, Ordering::Release);
                }
                Ok(self.install_keys(adopted))
            }
            None if keys.on_disk => Err(Error::corrupted(
                "the store header disappeared; restore store.header from a backup",
            )
            .with_context("file", path.display())),
            None if create => {
                write_atomic(&self.dir, &path, &keys.header_bytes, Flush::All)?;
                let mut created = Keyring::unlock(
                    keys.header_bytes.clone(),
                    &path,
                    &self.source(),
                    Some(&keys),
                )?;
                created.on_disk = true;
                Ok(self.install_keys(created))
            }
            None => Ok(keys),
        }
    }

    fn source(&self) -> KeySource {
        lock(&self.source).clone()
    }

    pub(crate) fn set_source(&self, source: KeySource) {
        *lock(&self.source) = source;
    }

    /// Creates the store if needed, takes the store lock and brings the keys up to date.
    pub(crate) fn begin_write(&self) -> Result<(FileLock, Arc<Keyring>)> {
        if !self.cached_keys().on_disk {
            create_private_dir(&self.dir)?;
        }
        let guard = FileLock::acquire(&self.dir.join(LOCK_FILE), Wait::Block)?
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "a blocking lock returned none"))?;
        if !self.temp_cleaned.swap(true, Ordering::AcqRel) {
            let removed = remove_stale_temp_files(&self.dir)?;
            if removed > 0 {
                tracing::info!(dir = %self.dir.display(), removed, "removed temporary files left by an interrupted write");
            }
        }
        let keys = self.sync_keys(true)?;
        Ok((guard, keys))
    }

    /// Authenticates and decrypts the current record of a record file (see
    /// [`record_candidates`]). Returns its stored version, plaintext and place in the
    /// file.
    pub(crate) fn decrypt(
        &self,
        keys: &Arc<Keyring>,
        bytes: &[u8],
        tag: &[u8; TAG_LEN],
        path: &Path,
    ) -> Result<(u64, Zeroizing<Vec<u8>>, Place)> {
        self.open_current(keys, candidates(bytes, path)?, tag, path)
    }

    /// [`decrypt`](Self::decrypt) of the records already found in a record file.
    pub(crate) fn open_current(
        &self,
        keys: &Arc<Keyring>,
        found: Candidates<'_>,
        tag: &[u8; TAG_LEN],
        path: &Path,
    ) -> Result<(u64, Zeroizing<Vec<u8>>, Place)> {
        let mut failure = None;
        for found in found.into_iter().flatten() {
            let generation = found.view.generation;
            let opened = self.keys_for(keys, generation).and_then(|keys| {
                let dek = dek(&keys, generation, path)?;
                open_record(&found.view, dek, &keys.store_id, tag)
                    .ok_or_else(|| failed_authentication(path))
            });
            match opened {
                Ok(plaintext) => return Ok((found.view.version, plaintext, found.place)),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        Err(failure.unwrap_or_else(|| failed_authentication(path)))
    }

    /// `keys`, or the keys re-read from the header when `keys` lacks the data key of
    /// `generation` (another process may have rotated it since the header was read).
    fn keys_for(&self, keys: &Arc<Keyring>, generation: u32) -> Result<Arc<Keyring>> {
        if keys.material.dek(generation).is_some() {
            Ok(Arc::clone(keys))
        } else {
            self.sync_keys(false)
        }
    }

    /// `load` without touching the header: `None` when the slow path is needed (the
    /// store was not known to be on disk, or the record uses a data key this handle does
    /// not hold).
    fn load_fast(&self, id: &CredentialId) -> Option<Result<Option<CredentialObject>>> {
        let keys = self.cached_keys();
        if !keys.on_disk {
            return None;
        }
        #[cfg(unix)]
        let (keep, tag) = match self.load_kept(id, &keys) {
            KeptLoad::Read(credential) => return Some(Ok(Some(credential))),
            KeptLoad::ByName { keep, tag } => (keep, tag),
        };
        #[cfg(not(unix))]
        let (keep, tag) = (false, None);
        let tag = tag.unwrap_or_else(|| keys.id_tag(id));
        let path = self.record_path(&tag);
        let mut len = 0;
        let read = read_record_file(&path, |bytes| {
            len = bytes.len();
            let Some((version, plaintext)) = self.open_with_held_key(&keys, &bytes, &tag, &path)?
            else {
                return Ok(None);
            };
            credential_from(&plaintext, version, id, &path).map(Some)
        });
        match read {
            Ok(Some((None, _))) => None,
            Ok(Some((Some(credential), file))) => {
                self.learn_name(&tag, id);
                #[cfg(unix)]
                if keep {
                    if let Some(inode) = crate::kept::inode_of(&file) {
                        let kept = Kept::new(file, path, inode, len, tag, keys);
                        self.kept.keep(id, kept);
                    }
                }
                #[cfg(not(unix))]
                let _ = (keep, file);
                Some(Ok(Some(credential)))
            }
            Ok(None) => Some(Ok(None)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The part of `load` that reads a kept record file (see [`crate::kept`]).
    #[cfg(unix)]
    fn load_kept(&self, id: &CredentialId, keys: &Arc<Keyring>) -> KeptLoad {
        let Some(kept) = self.kept.get(id, keys) else {
            return KeptLoad::ByName {
                keep: self.kept.wants_more(),
                tag: None,
            };
        };
        if crate::kept::inode_at(&kept.path) == Some(kept.inode) {
            // The name was learnt when the file was kept (and `delete` drops both).
            let read = read_at_capped_fast(&kept.file, kept.len, MAX_RECORD_FILE_LEN, &kept.path)
                .ok()
                .and_then(|bytes| self.read_kept(id, keys, &kept, bytes));
            if let Some(credential) = read {
                return KeptLoad::Read(credential);
            }
        }
        // The name leads elsewhere now, or the file was replaced between the check and
        // the read: read by name, and keep the file opened then.
        self.kept.forget(id);
        KeptLoad::ByName {
            keep: self.kept.wants_more(),
            tag: Some(kept.tag),
        }
    }

    /// The credential in `bytes`, read from `kept.file`; `None` when it must be read by
    /// name (a record under a data key not at hand means a replaced file; reaching for
    /// the key would read the header here) or cannot be read (the read by name reports
    /// why).
    #[cfg(unix)]
    fn read_kept(
        &self,
        id: &CredentialId,
        keys: &Arc<Keyring>,
        kept: &Kept,
        bytes: Vec<u8>,
    ) -> Option<CredentialObject> {
        // The lock is held for the compare only, so loads of one credential from many
        // tasks decode side by side.
        let unchanged = lock(&kept.last)
            .as_ref()
            .filter(|last| last.file == bytes)
            .map(|last| (Arc::clone(&last.plaintext), last.version));
        if let Some((plaintext, version)) = unchanged {
            return credential_from(&plaintext, version, id, &kept.path).ok();
        }
        let (version, plaintext) = self
            .open_with_held_key(keys, &bytes, &kept.tag, &kept.path)
            .ok()??;
        let credential = credential_from(&plaintext, version, id, &kept.path).ok()?;
        *lock(&kept.last) = Some(LastRead {
            file: bytes,
            plaintext: Arc::new(plaintext),
            version,
        });
        Some(credential)
    }

    fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let keys = self.read_keys()?;
        let tag = keys.id_tag(id);
        let path = self.record_path(&tag);
        let read = read_record(&path, |bytes| {
            let (version, plaintext, _) = self.decrypt(&keys, &bytes, &tag, &path)?;
            credential_from(&plaintext, version, id, &path)
        })?;
        if read.is_some() {
            self.learn_name(&tag, id);
        }
        Ok(read)
    }

    /// The version and plaintext of the current record of a record file read into
    /// `bytes`; `Ok(None)` when it is sealed under a data key `keys` lacks (another
    /// process rotated the data key since this handle read the header: the caller reads
    /// the header, off the executor).
    fn open_with_held_key(
        &self,
        keys: &Arc<Keyring>,
        bytes: &[u8],
        tag: &[u8; TAG_LEN],
        path: &Path,
    ) -> Result<Option<(u64, Zeroizing<Vec<u8>>)>> {
        let found = candidates(bytes, path)?;
        let current = found[0].as_ref().map(|c| c.view.generation);
        if current.is_some_and(|generation| keys.material.dek(generation).is_none()) {
            return Ok(None);
        }
        let (version, plaintext, _) = self.open_current(keys, found, tag, path)?;
        Ok(Some((version, plaintext)))
    }

    /// Remembers that the record file `tag` holds `id` (for `list`).
    fn learn_name(&self, tag: &[u8; TAG_LEN], id: &CredentialId) {
        lock(&self.names).entry(*tag).or_insert_with(|| id.clone());
    }

    fn exists(&self, id: &CredentialId) -> Result<bool> {
        let keys = self.read_keys()?;
        let path = self.record_path(&keys.id_tag(id));
        path.try_exists()
            .map_err(|e| io_error(e, "could not inspect", &path))
    }

    fn save(&self, credential: &CredentialObject) -> Result<()> {
        let id = credential.id();
        let (_guard, keys) = self.begin_write()?;
        let tag = keys.id_tag(id);
        let path = self.record_path(&tag);
        #[cfg(unix)]
        let current = open_for_update(&path, MAX_RECORD_FILE_LEN)?;
        #[cfg(not(unix))]
        let current = read_capped(&path, MAX_RECORD_FILE_LEN)?.map(|bytes| (bytes, None::<()>));
        let (stored, place) = match &current {
            None => (0, None),
            Some((bytes, _)) => {
                let (stored, _, place) = self.decrypt(&keys, bytes, &tag, &path)?;
                (stored, Some(place))
            }
        };
        if stored != credential.version() {
            return Err(Error::conflict(
                id,
                format!(
                    "credential was changed since it was read: stored version is {stored}, \
                     the save was based on version {}; load it again, modify and save",
                    credential.version()
                ),
            ));
        }
        let next = stored.checked_add(1).ok_or_else(|| {
            Error::corrupted("credential version counter is exhausted").with_context("id", id)
        })?;
        let mut out = credential.clone();
        out.set_version(next);
        let plaintext = to_stored_bytes(&out)?;
        let (generation, dek) = keys.material.current();
        let sealed = seal_record(dek, generation, next, &keys.store_id, &tag, &plaintext)
            .map_err(|e| e.with_context("id", id))?;
        let next_slot = place.and_then(|place| place.next_slot(sealed.len()));
        match (current, next_slot) {
            // The current record's slot stays as it is until the new one is durable: one
            // fdatasync, and no metadata (the file's size, blocks, name) changes.
            #[cfg(unix)]
            (Some((_, Some(file))), Some((slot, slot_size))) => {
                write_slot(&file, slot, slot_size, &sealed, &path)?;
            }
            // A new credential, a record that outgrew its slots, a file of an earlier
            // build, or one that cannot be written in place: a new file, renamed into
            // place.
            _ => write_atomic(&self.dir, &path, &new_record_file(&sealed), Flush::All)?,
        }
        lock(&self.names).insert(tag, id.clone());
        Ok(())
    }

    fn delete(&self, id: &CredentialId) -> Result<bool> {
        if !self.read_keys()?.on_disk {
            return Ok(false);
        }
        let (_guard, keys) = self.begin_write()?;
        let tag = keys.id_tag(id);
        // The index would keep the deleted id (encrypted) until its next rewrite.
        self.remove_names_index()?;
        self.kept.forget(id);
        let removed = remove_durable(&self.dir, &self.record_path(&tag))?;
        lock(&self.names).remove(&tag);
        Ok(removed)
    }

    /// Tags of every record file in the directory.
    pub(crate) fn record_tags(&self) -> Result<Vec<[u8; TAG_LEN]>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(e, "could not list", &self.dir)),
        };
        let mut tags = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(e, "could not list", &self.dir))?;
            let name = entry.file_name();
            if let Some(tag) = name
                .to_str()
                .and_then(|n| n.strip_suffix(RECORD_SUFFIX))
                .and_then(unhex::<TAG_LEN>)
            {
                tags.push(tag);
            }
        }
        Ok(tags)
    }

    /// The first half of `list`: the ids whose file names this handle already knows,
    /// and the tags of the records it must decrypt to learn theirs. When the directory is
    /// unchanged since the last complete listing (see [`DirStamp`]), that listing.
    fn scan(&self) -> Result<Listed> {
        let keys = self.read_keys()?;
        if !keys.on_disk {
            return Ok(Listed::Cached(Vec::new()));
        }
        let stamp = DirStamp::read(&self.dir)?;
        if let Some((stamp, _)) = &stamp {
            if let Some(listing) = lock(&self.listing).as_ref() {
                if listing.stamp == *stamp {
                    return Ok(Listed::Cached(listing.ids.clone()));
                }
            }
        }
        if !self.index_read.swap(true, Ordering::AcqRel) {
            // A new handle: learn the names from the index instead of the records, and
            // when the directory is as it was when the index was written, the listing.
            if let Some(index) = self.read_names_index(&keys) {
                if let (Some((now, _)), Some(then)) = (&stamp, index.stamp) {
                    if *now == then {
                        self.remember_listing(Some((then, true)), &index.ids, true);
                        return Ok(Listed::Cached(index.ids));
                    }
                }
            }
        }
        let tags = self.record_tags()?;
        let mut ids = Vec::with_capacity(tags.len());
        let mut unknown = Vec::new();
        self.sort_known(tags, &mut ids, &mut unknown);
        Ok(Listed::Scan(Scan {
            keys,
            stamp,
            ids,
            unknown,
        }))
    }

    /// Appends the ids of the `tags` this handle knows to `ids`, the other tags to
    /// `unknown`.
    fn sort_known(
        &self,
        tags: Vec<[u8; TAG_LEN]>,
        ids: &mut Vec<CredentialId>,
        unknown: &mut Vec<[u8; TAG_LEN]>,
    ) {
        let unlearned = std::mem::take(&mut *lock(&self.unlearned));
        let mut names = lock(&self.names);
        names.extend(unlearned);
        for tag in tags {
            match names.get(&tag) {
                Some(id) => ids.push(id.clone()),
                None => unknown.push(tag),
            }
        }
    }

    fn index_stamp(&self) -> Option<DirStamp> {
        *lock(&self.index_stamp)
    }

    /// Remembers names read from the names index (added to the map on first need).
    pub(crate) fn learn_names(&self, known: Vec<([u8; TAG_LEN], CredentialId)>) {
        lock(&self.unlearned).extend(known);
    }

    /// Learns the ids of `tags` by decrypting their records. Returns them and whether
    /// every record could be read.
    fn identify_all(
        &self,
        keys: &Arc<Keyring>,
        tags: &[[u8; TAG_LEN]],
    ) -> (Vec<CredentialId>, bool) {
        let mut ids = Vec::with_capacity(tags.len());
        let mut complete = true;
        for tag in tags {
            match self.identify(keys, tag) {
                Ok(Some(id)) => {
                    lock(&self.names).insert(*tag, id.clone());
                    ids.push(id);
                }
                // Removed since the directory was read.
                Ok(None) => complete = false,
                Err(e) => {
                    complete = false;
                    tracing::warn!(error = %e, "skipping an unreadable credential record");
                }
            }
        }
        (ids, complete)
    }

    /// Keeps a complete listing for the next `list`, if the directory state it was read
    /// from can be trusted to reveal any later change (see [`DirStamp::read`]). A listing
    /// that skipped unreadable records is not kept, so that the warning repeats and a
    /// repaired file is picked up.
    fn remember_listing(
        &self,
        stamp: Option<(DirStamp, bool)>,
        ids: &[CredentialId],
        complete: bool,
    ) {
        let mut listing = lock(&self.listing);
        *listing = match stamp {
            Some((stamp, true)) if complete => Some(Listing {
                stamp,
                ids: ids.to_vec(),
            }),
            _ => None,
        };
    }

    /// Decrypts a record found by its file name to learn its id.
    fn identify(&self, keys: &Arc<Keyring>, tag: &[u8; TAG_LEN]) -> Result<Option<CredentialId>> {
        let path = self.record_path(tag);
        read_record(&path, |bytes| {
            let (_, plaintext, _) = self.decrypt(keys, &bytes, tag, &path)?;
            let credential = decode(&plaintext, &path)?;
            if keys.id_tag(credential.id()) != *tag {
                return Err(Error::corrupted(
                    "credential record is stored under another id's file name",
                )
                .with_context("file", path.display()));
            }
            Ok(credential.id().clone())
        })
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

/// The credential `id` at `version` from the plaintext of its record in `path`.
fn credential_from(
    plaintext: &[u8],
    version: u64,
    id: &CredentialId,
    path: &Path,
) -> Result<CredentialObject> {
    let mut credential = decode(plaintext, path)?;
    if credential.id() != id {
        return Err(Error::corrupted("credential record holds a different id")
            .with_context("id", id)
            .with_context("file", path.display()));
    }
    credential.set_version(version);
    Ok(credential)
}

/// The records of the record file `path` read into `bytes` (see [`record_candidates`]).
pub(crate) fn candidates<'b>(bytes: &'b [u8], path: &Path) -> Result<Candidates<'b>> {
    record_candidates(bytes).map_err(|m| m.into_error(path))
}

/// What [`Inner::load_kept`] did.
#[cfg(unix)]
enum KeptLoad {
    /// Read the credential from the kept file.
    Read(CredentialObject),
    /// The record must be read by name. `keep`: offer the file opened to the kept
    /// files. `tag`: the id's tag, when known.
    ByName {
        keep: bool,
        tag: Option<[u8; TAG_LEN]>,
    },
}

/// How many times a record that fails to authenticate or parse is read before the
/// failure is reported. A reader can copy one slot of a record file while a save writes
/// it and the other after that save cleared it (see [`write_slot`](crate::durable)), and
/// find neither whole; reading again then finds the current record. A record that is
/// really damaged fails every time.
const READ_ATTEMPTS: usize = 5;

/// Reads the record file at `path` and hands its bytes to `open`; `Ok(None)` when the
/// file does not exist. Reads again (up to [`READ_ATTEMPTS`] in all) when `open` says
/// the bytes do not authenticate or are malformed. The first read trusts a short read
/// to be the end of the file (see [`read_file`]); later ones read to the end.
fn read_record<T>(path: &Path, open: impl FnMut(Vec<u8>) -> Result<T>) -> Result<Option<T>> {
    read_record_file(path, open).map(|read| read.map(|(t, _)| t))
}

/// [`read_record`] that also returns the file the accepted bytes were read from.
fn read_record_file<T>(
    path: &Path,
    mut open: impl FnMut(Vec<u8>) -> Result<T>,
) -> Result<Option<(T, std::fs::File)>> {
    let mut attempt = 1;
    loop {
        let Some((bytes, file)) = read_file(path, MAX_RECORD_FILE_LEN, attempt == 1)? else {
            return Ok(None);
        };
        match open(bytes) {
            Err(e)
                if attempt < READ_ATTEMPTS
                    && matches!(e.kind(), ErrorKind::Decryption | ErrorKind::Corrupted) =>
            {
                tracing::debug!(file = %path.display(), attempt, "credential record did not authenticate; reading it again");
                attempt += 1;
            }
            done => return done.map(|t| Some((t, file))),
        }
    }
}

pub(crate) fn decode(plaintext: &[u8], path: &Path) -> Result<CredentialObject> {
    from_stored(plaintext).map_err(|e| e.with_context("file", path.display()))
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

/// The result of [`Inner::scan`].
enum Listed {
    /// The listing is complete.
    Cached(Vec<CredentialId>),
    /// Some records must be decrypted to learn their ids.
    Scan(Scan),
}

struct Scan {
    keys: Arc<Keyring>,
    stamp: Option<(DirStamp, bool)>,
    ids: Vec<CredentialId>,
    unknown: Vec<[u8; TAG_LEN]>,
}

/// A complete `list` result and the directory state it was read from.
struct Listing {
    stamp: DirStamp,
    ids: Vec<CredentialId>,
}

/// Identity, size, link count and change times of the store directory: what lets `list`
/// skip reading a directory that has not changed.
///
/// Every change to the set of record files, by this process or another, is a link, an
/// unlink or a rename in the store directory (see `durable`; saves in place change no
/// name, and need not invalidate a listing), and each
/// sets the directory's mtime and ctime to the current time. A different directory at the
/// same path differs in `dev`/`ino`. So an equal stamp means an equal set of names, with
/// one exception: a change in the same file-system timestamp tick as the stamp (ticks are
/// a few milliseconds on ext4/xfs/btrfs/tmpfs, up to 2 s on FAT) gets the same times. That
/// is why a stamp only counts when its times are at least [`SETTLED`] older than the
/// moment it was taken (see [`DirStamp::read`]): any later change then gets a strictly
/// newer time. ctime cannot be set by users (mtime can, with `touch`), and a backwards
/// jump of the system clock would have to land on the exact same tick to be missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirStamp {
    dev: u64,
    ino: u64,
    size: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How old the directory's times must be for a listing to be reused.
#[cfg_attr(not(unix), allow(dead_code))]
const SETTLED: Duration = Duration::from_secs(2);

impl DirStamp {
    /// Encoded length of [`to_bytes`](Self::to_bytes).
    pub(crate) const LEN: usize = 64;

    /// Fixed-size little-endian encoding (for the names index).
    pub(crate) fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let fields = [
            self.dev.to_le_bytes(),
            self.ino.to_le_bytes(),
            self.size.to_le_bytes(),
            self.nlink.to_le_bytes(),
            self.mtime.0.to_le_bytes(),
            self.mtime.1.to_le_bytes(),
            self.ctime.0.to_le_bytes(),
            self.ctime.1.to_le_bytes(),
        ];
        for (chunk, field) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field);
        }
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes).
    pub(crate) fn from_bytes(bytes: &[u8; Self::LEN]) -> DirStamp {
        let mut words = bytes.chunks_exact(8).map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            w
        });
        let mut next = || words.next().unwrap_or_default();
        let (dev, ino, size, nlink) = (
            u64::from_le_bytes(next()),
            u64::from_le_bytes(next()),
            u64::from_le_bytes(next()),
            u64::from_le_bytes(next()),
        );
        let mtime = (i64::from_le_bytes(next()), i64::from_le_bytes(next()));
        let ctime = (i64::from_le_bytes(next()), i64::from_le_bytes(next()));
        DirStamp {
            dev,
            ino,
            size,
            nlink,
            mtime,
            ctime,
        }
    }

    /// The directory's stamp, and whether it is settled (old enough to be trusted).
    /// `None` when the directory is missing or the platform gives no such times (then
    /// every `list` reads the directory).
    #[cfg(unix)]
    fn read(dir: &Path) -> Result<Option<(DirStamp, bool)>> {
        use std::os::unix::fs::MetadataExt;
        // Taken before the stat: a change after it cannot look older than this.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok();
        let meta = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e, "could not inspect", dir)),
        };
        let stamp = DirStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            nlink: meta.nlink(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        let as_nanos =
            |(secs, nanos): (i64, i64)| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        let latest = as_nanos(stamp.mtime).max(as_nanos(stamp.ctime));
        let settled = now.is_some_and(|now| {
            let now = i128::try_from(now.as_nanos()).unwrap_or(i128::MAX);
            latest.saturating_add(i128::try_from(SETTLED.as_nanos()).unwrap_or(i128::MAX)) <= now
        });
        Ok(Some((stamp, settled)))
    }

    #[cfg(not(unix))]
    fn read(_dir: &Path) -> Result<Option<(DirStamp, bool)>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RawKey;
    use hive_cred_core::CredentialType;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_handle_on_a_settled_unchanged_directory_takes_its_listing_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        for name in ["a", "b", "c"] {
            s.save(&credential(name)).await.unwrap();
        }
        // A new handle learns the names by decrypting and writes the index; the
        // directory has just changed, so no stamp is recorded yet.
        let first = LocalStorage::open(dir.path(), key()).await.unwrap();
        assert_eq!(sorted(first.list().await.unwrap()), ["a", "b", "c"]);
        assert!(first.inner.index_stamp().is_none());
        std::thread::sleep(SETTLED + Duration::from_millis(200));

        // Once settled, the next new handle reads the directory, finds the listing
        // complete and records the state in the index, overwriting it in place.
        let before = DirStamp::read(dir.path()).unwrap().unwrap().0;
        let second = LocalStorage::open(dir.path(), key()).await.unwrap();
        assert!(matches!(second.inner.scan().unwrap(), Listed::Scan(_)));
        assert_eq!(sorted(second.list().await.unwrap()), ["a", "b", "c"]);
        assert_eq!(second.inner.index_stamp(), Some(before));
        assert_eq!(
            DirStamp::read(dir.path()).unwrap().unwrap().0,
            before,
            "rewriting the index must not change the directory"
        );

        // The next new handle does not read the directory at all.
        let third = LocalStorage::open(dir.path(), key()).await.unwrap();
        match third.inner.scan().unwrap() {
            Listed::Cached(ids) => assert_eq!(sorted(ids), ["a", "b", "c"]),
            Listed::Scan(_) => panic!("the stamped index was not used"),
        }

        // Any change to the set of records makes the stamp stale: back to the directory.
        s.save(&credential("d")).await.unwrap();
        let fourth = LocalStorage::open(dir.path(), key()).await.unwrap();
        assert!(matches!(fourth.inner.scan().unwrap(), Listed::Scan(_)));
        assert_eq!(sorted(fourth.list().await.unwrap()), ["a", "b", "c", "d"]);
        let path = s.inner.record_path(&s.inner.cached_keys().id_tag(&id("b")));
        std::fs::remove_file(path).unwrap();
        let fifth = LocalStorage::open(dir.path(), key()).await.unwrap();
        assert_eq!(sorted(fifth.list().await.unwrap()), ["a", "c", "d"]);
    }

    #[tokio::test]
    async fn records_holding_stored_json_from_earlier_builds_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        s.save(&credential("binary")).await.unwrap();
        // Write "legacy" as an earlier build did: JSON plaintext, version 1.
        let keys = s.inner.cached_keys();
        let mut legacy = credential("legacy");
        legacy.set_key("api_key", "legacy-value", None).unwrap();
        let tag = keys.id_tag(legacy.id());
        let (generation, dek) = keys.material.current();
        let json = hive_cred_core::codec::to_stored_json(&legacy).unwrap();
        let sealed = seal_record(dek, generation, 1, &keys.store_id, &tag, &json).unwrap();
        std::fs::write(s.inner.record_path(&tag), sealed).unwrap();

        let back = s.load(legacy.id()).await.unwrap().unwrap();
        assert_eq!(
            (back.metadata().keys, back.version()),
            (legacy.metadata().keys, 1)
        );
        let value = back.get_key("api_key").unwrap();
        // EXPOSE: the test compares the secret value.
        assert_eq!(secrecy::ExposeSecret::expose_secret(value), "legacy-value");
        // Saving it again writes the binary form, which reads back alike.
        s.save(&back).await.unwrap();
        let again = s.load(legacy.id()).await.unwrap().unwrap();
        assert_eq!(
            (again.metadata().keys, again.version()),
            (legacy.metadata().keys, 2)
        );
        let raw = std::fs::read(s.inner.record_path(&tag)).unwrap();
        let (_, plain, _) = s.inner.decrypt(&keys, &raw, &tag, Path::new("x")).unwrap();
        assert_eq!(plain.first(), Some(&1), "binary form");
    }

    #[test]
    fn records_that_fail_to_authenticate_are_read_again_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cred");
        std::fs::write(&path, b"bytes").unwrap();
        let failing = |kind| Error::new(kind, "no");

        // A torn read: the second attempt succeeds.
        let mut calls = 0;
        let got = read_record(&path, |bytes| {
            calls += 1;
            if calls == 1 {
                Err(failing(ErrorKind::Decryption))
            } else {
                Ok(bytes)
            }
        })
        .unwrap();
        assert_eq!((got.as_deref(), calls), (Some(&b"bytes"[..]), 2));

        // Damaged for good: reported after the last attempt.
        let mut calls = 0;
        let err = read_record(&path, |_| -> Result<()> {
            calls += 1;
            Err(failing(ErrorKind::Corrupted))
        })
        .unwrap_err();
        assert_eq!((err.kind(), calls), (ErrorKind::Corrupted, READ_ATTEMPTS));

        // Other failures are not retried.
        let mut calls = 0;
        let err = read_record(&path, |_| -> Result<()> {
            calls += 1;
            Err(failing(ErrorKind::Config))
        })
        .unwrap_err();
        assert_eq!((err.kind(), calls), (ErrorKind::Config, 1));

        assert!(
            read_record(&dir.path().join("absent"), |_| -> Result<()> {
                unreachable!()
            })
            .unwrap()
            .is_none()
        );
    }

    fn key() -> KeySource {
        KeySource::RawKey(RawKey::from_bytes([9; 32]))
    }

    fn credential(id: &str) -> CredentialObject {
        CredentialObject::builder(id, CredentialType::ApiKey)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn record_paths_are_the_directory_joined_with_the_tag_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let tag: [u8; TAG_LEN] = std::array::from_fn(|i| (i * 37) as u8);
        let name = format!("{}{RECORD_SUFFIX}", hex(&tag));
        assert_eq!(name.len(), RECORD_NAME_LEN);
        let mut with_slash = dir.path().as_os_str().to_owned();
        with_slash.push("/");
        for given in [dir.path().to_owned(), PathBuf::from(with_slash)] {
            let s = LocalStorage::open(given.clone(), key()).await.unwrap();
            let path = s.inner.record_path(&tag);
            assert_eq!(path, given.join(&name));
            assert_eq!(path.parent(), Some(dir.path()));
        }
    }

    #[cfg_attr(not(unix), allow(dead_code))] // used by Unix-only tests
    fn id(s: &str) -> CredentialId {
        CredentialId::new(s).unwrap()
    }

    fn sorted(mut ids: Vec<CredentialId>) -> Vec<String> {
        ids.sort();
        ids.iter().map(|i| i.as_str().to_owned()).collect()
    }

    /// Marks the handle's current directory state as settled, as if 2 s had passed
    /// since the last change, and stores `ids` as its listing.
    #[cfg_attr(not(unix), allow(dead_code))] // used by Unix-only tests
    fn settle(s: &LocalStorage, ids: &[CredentialId]) {
        let (stamp, _) = DirStamp::read(s.dir()).unwrap().unwrap();
        s.inner.remember_listing(Some((stamp, true)), ids, true);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_fresh_directory_state_is_not_settled_so_listings_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        s.save(&credential("a")).await.unwrap();
        let (_, settled) = DirStamp::read(dir.path()).unwrap().unwrap();
        assert!(!settled, "a directory changed just now must not be trusted");
        assert_eq!(sorted(s.list().await.unwrap()), ["a"]);
        assert!(lock(&s.inner.listing).is_none());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn an_unchanged_directory_reuses_the_listing_and_any_change_invalidates_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        s.save(&credential("a")).await.unwrap();
        s.save(&credential("b")).await.unwrap();

        // The kept listing is returned while the directory is unchanged (a sentinel
        // proves the directory was not read).
        settle(&s, &[id("sentinel")]);
        assert_eq!(sorted(s.list().await.unwrap()), ["sentinel"]);

        // Another handle (another process) adds a record: seen at once.
        let other = LocalStorage::open(dir.path(), key()).await.unwrap();
        other.save(&credential("c")).await.unwrap();
        assert_eq!(sorted(s.list().await.unwrap()), ["a", "b", "c"]);

        // ... and deletes one.
        settle(&s, &[id("sentinel")]);
        assert!(other.delete(&id("a")).await.unwrap());
        assert_eq!(sorted(s.list().await.unwrap()), ["b", "c"]);

        // A save that rewrites a record in place changes no name: the listing stays.
        settle(&s, &[id("sentinel")]);
        let mut b = other.load(&id("b")).await.unwrap().unwrap();
        other.save(&b).await.unwrap();
        assert_eq!(sorted(s.list().await.unwrap()), ["sentinel"]);
        // One that outgrows its slots renames a new file into place: seen at once.
        b = other.load(&id("b")).await.unwrap().unwrap();
        b.set_key("big", "x".repeat(5000), None).unwrap();
        other.save(&b).await.unwrap();
        assert_eq!(sorted(s.list().await.unwrap()), ["b", "c"]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_listing_with_an_unreadable_record_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        s.save(&credential("a")).await.unwrap();
        std::fs::write(
            dir.path().join(format!("{}.cred", "ab".repeat(32))),
            b"junk",
        )
        .unwrap();
        let stamp = DirStamp::read(dir.path())
            .unwrap()
            .map(|(st, _)| (st, true));
        let fresh = LocalStorage::open(dir.path(), key()).await.unwrap();
        let Listed::Scan(scan) = fresh.inner.scan().unwrap() else {
            panic!("a fresh handle has no listing");
        };
        let (ids, complete) = fresh.inner.identify_all(&scan.keys, &scan.unknown);
        assert_eq!(sorted(ids.clone()), ["a"]);
        assert!(!complete);
        fresh.inner.remember_listing(stamp, &ids, complete);
        assert!(lock(&fresh.inner.listing).is_none());
    }

    #[tokio::test]
    async fn a_cold_list_of_many_records_identifies_them_all_in_parallel_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        let n = IDENTIFY_CHUNK_MIN * 2 + 3;
        for i in 0..n {
            s.save(&credential(&format!("c{i:04}"))).await.unwrap();
        }
        let fresh = LocalStorage::open(dir.path(), key()).await.unwrap();
        let ids = sorted(fresh.list().await.unwrap());
        let expected: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
        assert_eq!(ids, expected);
    }
}
