//! Record files kept open between loads.
//!
//! Opening and closing a record file is the larger part of a `load` of a record already
//! in the page cache (a path walk, a file object, a descriptor, its release). A handle
//! therefore keeps the files of records it loaded open (a bounded number) and reads a
//! kept file again with `pread`, after a `stat` of the record's name shows that the name
//! still leads to that file (same device and inode). A `stat` costs about a third of an
//! `open` + `close`.
//!
//! The check cannot be fooled by a reused inode number: the kept descriptor holds the
//! inode, so no other file can have its number while it is kept. A save by any process
//! that rewrites the record in place (see `durable::write_slot`) writes to that very
//! inode, so the kept file shows it like the name would. Anything that makes the name
//! lead elsewhere (a save that writes a new file, a delete, a rotation, a directory put
//! in place of the store's or of one of its parents) is seen by the next load, which
//! then opens the name again. A save that lands between the `stat` and the read finished
//! after the load began: the read then finds the version before it (returned, as a load
//! that started a moment earlier would) or the new one.
//!
//! A kept file also remembers its bytes as last read and the plaintext they decrypted to
//! (see [`LastRead`]): a load that reads exactly those bytes again decodes that plaintext
//! instead of decrypting.
//!
//! Unix only (the check needs inode numbers).
#![cfg_attr(not(unix), allow(dead_code))]

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hive_cred_core::CredentialId;
use zeroize::Zeroizing;

use crate::format::TAG_LEN;
use crate::keyring::Keyring;
use crate::storage::lock;

/// The kept files of one handle (shared by its clones).
pub(crate) struct KeptRecords {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    files: HashMap<CredentialId, Arc<Kept>, foldhash::fast::RandomState>,
    /// The last attempt to keep a file found no room: loads stop keeping files until
    /// one is dropped (so that loading more credentials than there is room for costs
    /// nothing extra).
    full: bool,
}

/// An open record file, the device and inode its name led to, and what decrypting it
/// takes.
pub(crate) struct Kept {
    pub(crate) file: File,
    /// The record's file name: checked before each read, and named in errors.
    pub(crate) path: PathBuf,
    /// Device and inode of `file`.
    pub(crate) inode: (u64, u64),
    /// Length of `file` when it was read (the size of the next read's buffer).
    pub(crate) len: usize,
    pub(crate) tag: [u8; TAG_LEN],
    pub(crate) keys: Arc<Keyring>,
    /// What the last read of `file` found, while the file still holds those very bytes
    /// (see [`LastRead`]).
    pub(crate) last: Mutex<Option<LastRead>>,
}

impl Kept {
    pub(crate) fn new(
        file: File,
        path: PathBuf,
        inode: (u64, u64),
        len: usize,
        tag: [u8; TAG_LEN],
        keys: Arc<Keyring>,
    ) -> Kept {
        Kept {
            file,
            path,
            inode,
            len,
            tag,
            keys,
            last: Mutex::new(None),
        }
    }
}

/// A kept file's bytes as last read, and the record they authenticated to.
///
/// Decrypting and authenticating a record depends on nothing but the file's bytes, the
/// keys and the record's tag, and the last two are fixed for a kept file. A read that
/// finds exactly the bytes of the last one (compared in full) would therefore decrypt
/// to exactly this plaintext, at this version: it is decoded from here instead. Any
/// change to the file, a save in place included, changes its bytes (every record has a
/// fresh nonce), and the next read decrypts and authenticates it again.
///
/// The plaintext is zeroed when it is replaced or the file is dropped. It holds nothing
/// the handle could not decrypt at any moment with the data key it holds.
pub(crate) struct LastRead {
    pub(crate) file: Vec<u8>,
    /// Shared with the loads decoding it (zeroed when the last one drops it).
    pub(crate) plaintext: Arc<Zeroizing<Vec<u8>>>,
    pub(crate) version: u64,
}

impl KeptRecords {
    /// Keeps at most `capacity` files open; 0 keeps none.
    pub(crate) fn new(capacity: usize) -> KeptRecords {
        KeptRecords {
            capacity,
            state: Mutex::new(State {
                files: HashMap::default(),
                full: false,
            }),
        }
    }

    /// The kept file of `id`, if it was opened under `keys` (other keys mean the header
    /// changed since; the record is read by name).
    pub(crate) fn get(&self, id: &CredentialId, keys: &Arc<Keyring>) -> Option<Arc<Kept>> {
        let state = lock(&self.state);
        state
            .files
            .get(id)
            .filter(|kept| Arc::ptr_eq(&kept.keys, keys))
            .cloned()
    }

    /// Whether a load that opens a record file should offer it to [`keep`](Self::keep):
    /// the last attempt found room.
    pub(crate) fn wants_more(&self) -> bool {
        self.capacity > 0 && !lock(&self.state).full
    }

    /// Keeps `kept` as the file of `id`. When full, keeps nothing, and
    /// [`wants_more`](Self::wants_more) says no until a file is dropped.
    pub(crate) fn keep(&self, id: &CredentialId, kept: Kept) {
        let mut state = lock(&self.state);
        if state.files.len() >= self.capacity && !state.files.contains_key(id) {
            state.full = true;
            return;
        }
        state.files.insert(id.clone(), Arc::new(kept));
    }

    /// Drops the kept file of `id`.
    pub(crate) fn forget(&self, id: &CredentialId) {
        let mut state = lock(&self.state);
        if state.files.remove(id).is_some() {
            state.full = false;
        }
    }

    /// Drops every kept file.
    pub(crate) fn clear(&self) {
        let mut state = lock(&self.state);
        state.files.clear();
        state.full = false;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).files.len()
    }
}

/// Device and inode of an open file, `None` if it cannot be inspected.
#[cfg(unix)]
pub(crate) fn inode_of(file: &File) -> Option<(u64, u64)> {
    rustix::fs::fstat(file)
        .ok()
        .and_then(|st| device_and_inode(&st))
}

/// Device and inode of the file at `path` (links followed, as `open` does), `None`
/// when there is none or it cannot be inspected.
#[cfg(unix)]
pub(crate) fn inode_at(path: &std::path::Path) -> Option<(u64, u64)> {
    // rustix's stat, not std's metadata: this is on every load of a kept file, and
    // std's statx-based one costs a third more. Both sides of the comparison come from
    // the same call family, so the device numbers are encoded alike.
    rustix::fs::stat(path)
        .ok()
        .and_then(|st| device_and_inode(&st))
}

#[cfg(unix)]
fn device_and_inode(st: &rustix::fs::Stat) -> Option<(u64, u64)> {
    // The field types differ between platforms; every value fits.
    #[allow(clippy::useless_conversion)]
    Some((
        u64::try_from(st.st_dev).ok()?,
        u64::try_from(st.st_ino).ok()?,
    ))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::path::Path;

    use hive_cred_core::{CredentialObject, CredentialStorage, CredentialType};

    use super::*;
    use crate::LocalStorage;
    use crate::key::{KeySource, RawKey, ScryptParams};
    use crate::storage::LocalStorageOptions;

    fn key() -> KeySource {
        KeySource::RawKey(RawKey::from_bytes([9; 32]))
    }

    fn id(s: &str) -> CredentialId {
        CredentialId::new(s).unwrap()
    }

    async fn open(dir: &Path, kept: usize) -> LocalStorage {
        let options = LocalStorageOptions::new().with_kept_open_records(kept);
        LocalStorage::open_with(dir, key(), options).await.unwrap()
    }

    /// Saves `name` (new, or as the next version) and returns the version stored.
    async fn save(s: &LocalStorage, name: &str) -> u64 {
        let next = match s.load(&id(name)).await.unwrap() {
            Some(current) => current,
            None => CredentialObject::builder(name, CredentialType::ApiKey)
                .build()
                .unwrap(),
        };
        s.save(&next).await.unwrap();
        next.version() + 1
    }

    async fn version(s: &LocalStorage, name: &str) -> Option<u64> {
        s.load(&id(name)).await.unwrap().map(|c| c.version())
    }

    fn record_file(s: &LocalStorage, name: &str) -> std::path::PathBuf {
        s.inner
            .record_path(&s.inner.cached_keys().id_tag(&id(name)))
    }

    /// Keeps `file` as the record file of `name`, as if the name had led to it (it
    /// records the inode the name leads to now).
    fn keep_as(s: &LocalStorage, name: &str, file: File) {
        let keys = s.inner.cached_keys();
        let path = record_file(s, name);
        let inode = inode_at(&path).unwrap();
        let kept = Kept::new(file, path, inode, 0, keys.id_tag(&id(name)), keys);
        s.inner.kept.forget(&id(name));
        s.inner.kept.keep(&id(name), kept);
    }

    /// A store where `a` is at version 2, and a copy of its version 1 record opened from
    /// outside the store: kept as `a`'s file (with the inode its name leads to), it
    /// tells a read of the kept file (version 1) from a read by name (version 2).
    async fn store_with_old_copy(dir: &Path) -> (LocalStorage, File, tempfile::TempDir) {
        let s = open(dir, 8).await;
        assert_eq!(save(&s, "a").await, 1);
        let scratch = tempfile::tempdir().unwrap();
        let old = scratch.path().join("old");
        std::fs::copy(record_file(&s, "a"), &old).unwrap();
        assert_eq!(save(&s, "a").await, 2);
        (s, File::open(&old).unwrap(), scratch)
    }

    #[tokio::test]
    async fn a_kept_file_is_read_while_its_name_leads_to_the_same_inode() {
        let dir = tempfile::tempdir().unwrap();
        let (s, old, _scratch) = store_with_old_copy(dir.path()).await;
        keep_as(&s, "a", old);
        assert_eq!(
            version(&s, "a").await,
            Some(1),
            "the kept file was not read"
        );
        assert_eq!(version(&s, "a").await, Some(1));

        // Other records changing does not matter.
        let other = open(dir.path(), 0).await;
        save(&other, "b").await;
        assert_eq!(version(&s, "a").await, Some(1));

        // Another process saves `a` as a new file (a record that outgrew its slots;
        // a rotation or a restored backup does the same): its name leads to another
        // inode, read by name...
        let mut a = other.load(&id("a")).await.unwrap().unwrap();
        a.set_key("big", "x".repeat(5000), None).unwrap();
        other.save(&a).await.unwrap();
        assert_eq!(version(&s, "a").await, Some(3));
        // ... and the file opened then is kept and read from now on.
        let kept = s.inner.kept.get(&id("a"), &s.inner.cached_keys()).unwrap();
        assert_eq!(Some(kept.inode), inode_at(&record_file(&s, "a")));
        assert_eq!(version(&s, "a").await, Some(3));
    }

    #[tokio::test]
    async fn a_save_in_place_by_another_process_is_read_through_the_kept_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        assert_eq!(save(&s, "a").await, 1);
        assert_eq!(version(&s, "a").await, Some(1));
        let inode = s
            .inner
            .kept
            .get(&id("a"), &s.inner.cached_keys())
            .unwrap()
            .inode;

        let other = open(dir.path(), 0).await;
        for next in 2..5 {
            assert_eq!(save(&other, "a").await, next);
            assert_eq!(version(&s, "a").await, Some(next));
        }
        let kept = s.inner.kept.get(&id("a"), &s.inner.cached_keys()).unwrap();
        assert_eq!(kept.inode, inode, "still the first file kept");
        assert_eq!(inode_at(&record_file(&s, "a")), Some(inode));
    }

    #[tokio::test]
    async fn a_delete_by_another_process_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        save(&s, "a").await;
        assert_eq!(version(&s, "a").await, Some(1));
        assert_eq!(s.inner.kept.len(), 1);

        let other = open(dir.path(), 0).await;
        assert!(other.delete(&id("a")).await.unwrap());
        assert_eq!(version(&s, "a").await, None);
        assert_eq!(s.inner.kept.len(), 0);
    }

    #[tokio::test]
    async fn a_directory_put_in_place_of_the_store_is_read_by_name() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("credentials");
        let (s, old, _scratch) = store_with_old_copy(&dir).await;
        keep_as(&s, "a", old);
        assert_eq!(version(&s, "a").await, Some(1));

        // A copy of the store (version 2) replaces it, as a restored backup would.
        let copy = parent.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
        }
        std::fs::rename(&dir, parent.path().join("moved")).unwrap();
        std::fs::rename(&copy, &dir).unwrap();
        assert_eq!(version(&s, "a").await, Some(2));
    }

    #[tokio::test]
    async fn a_kept_file_that_does_not_authenticate_is_dropped_and_the_name_read() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, scratch) = store_with_old_copy(dir.path()).await;
        let junk = scratch.path().join("junk");
        let mut bytes = std::fs::read(record_file(&s, "a")).unwrap();
        let [current, _] = crate::format::record_candidates(&bytes).unwrap();
        let last = current.unwrap().range.end - 1;
        bytes[last] ^= 1;
        std::fs::write(&junk, bytes).unwrap();
        keep_as(&s, "a", File::open(&junk).unwrap());
        assert_eq!(version(&s, "a").await, Some(2));
        // The junk was replaced by the record file opened by name.
        let kept = s.inner.kept.get(&id("a"), &s.inner.cached_keys()).unwrap();
        assert_eq!(inode_of(&kept.file), inode_at(&record_file(&s, "a")));
    }

    /// The version and plaintext `s` holds from its last read of `name`'s kept file.
    fn last_read(s: &LocalStorage, name: &str) -> Option<(u64, Vec<u8>)> {
        let kept = s.inner.kept.get(&id(name), &s.inner.cached_keys())?;
        let last = lock(&kept.last);
        last.as_ref()
            .map(|last| (last.version, last.plaintext.to_vec()))
    }

    #[tokio::test]
    async fn a_kept_file_read_again_unchanged_is_decoded_from_the_last_read() {
        use hive_cred_core::codec::to_stored_bytes;
        use secrecy::ExposeSecret;

        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        assert_eq!(save(&s, "a").await, 1);
        assert_eq!(version(&s, "a").await, Some(1), "opened by name, kept");
        assert_eq!(last_read(&s, "a"), None);
        assert_eq!(version(&s, "a").await, Some(1), "read from the kept file");
        let (at, _) = last_read(&s, "a").unwrap();
        assert_eq!(at, 1);

        // Stand-in plaintext with the file's bytes unchanged: a read that decrypted the
        // file would not find it.
        let mut marked = CredentialObject::builder("a", CredentialType::ApiKey)
            .build()
            .unwrap();
        marked
            .set_key("marker", "from the last read", None)
            .unwrap();
        let kept = s.inner.kept.get(&id("a"), &s.inner.cached_keys()).unwrap();
        lock(&kept.last).as_mut().unwrap().plaintext = Arc::new(to_stored_bytes(&marked).unwrap());
        let got = s.load(&id("a")).await.unwrap().unwrap();
        // EXPOSE: test: the value read names where it came from.
        let marker = got.get_key("marker").map(|k| k.expose_secret().to_owned());
        assert_eq!(marker.as_deref(), Some("from the last read"));
        assert_eq!(got.version(), 1);

        // Changed bytes (a save in place by another handle) are decrypted again.
        let other = open(dir.path(), 0).await;
        assert_eq!(save(&other, "a").await, 2);
        let got = s.load(&id("a")).await.unwrap().unwrap();
        assert!(got.get_key("marker").is_none());
        assert_eq!(got.version(), 2);
        assert_eq!(last_read(&s, "a").map(|(v, _)| v), Some(2));
    }

    #[tokio::test]
    async fn a_kept_file_altered_in_place_after_a_read_is_authenticated_again() {
        use std::os::unix::fs::FileExt;

        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        save(&s, "a").await;
        for _ in 0..2 {
            assert_eq!(version(&s, "a").await, Some(1));
        }
        assert!(last_read(&s, "a").is_some());

        let path = record_file(&s, "a");
        let bytes = std::fs::read(&path).unwrap();
        let [current, _] = crate::format::record_candidates(&bytes).unwrap();
        let last = current.unwrap().range.end - 1;
        let flip = |byte: u8| {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&[byte], u64::try_from(last).unwrap())
                .unwrap();
        };
        flip(bytes[last] ^ 1);
        let err = s.load(&id("a")).await.unwrap_err();
        assert_eq!(err.kind(), hive_cred_core::ErrorKind::Decryption);
        flip(bytes[last]);
        assert_eq!(version(&s, "a").await, Some(1));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn loads_leave_the_access_time_of_record_files_alone() {
        use std::time::{Duration, SystemTime};

        fn accessed(path: &Path) -> SystemTime {
            std::fs::metadata(path).unwrap().accessed().unwrap()
        }
        // An access time older than the file's mtime: `relatime` updates it on a read.
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let age = |path: &Path| {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.set_times(std::fs::FileTimes::new().set_accessed(long_ago))
                .unwrap();
            assert_eq!(accessed(path), long_ago);
        };

        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        save(&s, "a").await;
        let path = record_file(&s, "a");
        // The control: a plain read of a copy, elsewhere on the same file system.
        let scratch = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
        let control = scratch.path().join("control");
        std::fs::copy(&path, &control).unwrap();
        age(&control);
        std::fs::read(&control).unwrap();
        assert_ne!(
            accessed(&control),
            long_ago,
            "this file system does not record access times on reads (noatime?): the test \
             cannot tell anything here"
        );

        age(&path);
        // Opened by name, then read through the kept file, and by a handle that keeps
        // none.
        for _ in 0..3 {
            assert_eq!(version(&s, "a").await, Some(1));
        }
        assert_eq!(version(&open(dir.path(), 0).await, "a").await, Some(1));
        assert_eq!(accessed(&path), long_ago);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_loads_while_another_handle_saves_return_whole_versions() {
        use secrecy::ExposeSecret;

        /// Saves `a` with key `v` holding the version the save stores.
        async fn save_numbered(s: &LocalStorage) {
            let mut next = match s.load(&id("a")).await.unwrap() {
                Some(current) => current,
                None => CredentialObject::builder("a", CredentialType::ApiKey)
                    .build()
                    .unwrap(),
            };
            let stored = next.version() + 1;
            next.set_key("v", stored.to_string(), None).unwrap();
            s.save(&next).await.unwrap();
        }

        /// `a` as loaded by `s`, checked to hold the value its version was saved with.
        async fn load_whole(s: &LocalStorage) -> u64 {
            let got = s.load(&id("a")).await.unwrap().unwrap();
            // EXPOSE: test: the value numbers the version that stored it.
            let v = got.get_key("v").unwrap().expose_secret().to_owned();
            assert_eq!(v, got.version().to_string(), "a record of another version");
            got.version()
        }

        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        save_numbered(&s).await;
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (s, finished) = (s.clone(), Arc::clone(&finished));
                tokio::spawn(async move {
                    let (mut loads, mut last) = (0, 0);
                    while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                        let got = load_whole(&s).await;
                        assert!(got >= last, "went back from {last} to {got}");
                        (loads, last) = (loads + 1, got);
                        // A load does not wait: let the other tasks run.
                        tokio::task::yield_now().await;
                    }
                    loads
                })
            })
            .collect();
        let w = open(dir.path(), 0).await;
        for _ in 0..100 {
            save_numbered(&w).await;
        }
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        for reader in readers {
            assert!(reader.await.unwrap() > 0);
        }
        assert_eq!(load_whole(&s).await, 101);
    }

    #[tokio::test]
    async fn loads_keep_files_up_to_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 2).await;
        for name in ["a", "b", "c"] {
            save(&s, name).await;
        }
        for name in ["a", "b", "c", "a"] {
            assert_eq!(version(&s, name).await, Some(1));
        }
        assert_eq!(s.inner.kept.len(), 2);
        assert!(!s.inner.kept.wants_more(), "full");
        let none = open(dir.path(), 0).await;
        assert_eq!(version(&none, "a").await, Some(1));
        assert_eq!(none.inner.kept.len(), 0);

        // A delete by this handle drops the file at once.
        assert!(s.delete(&id("a")).await.unwrap());
        assert!(s.inner.kept.get(&id("a"), &s.inner.cached_keys()).is_none());
        assert_eq!(version(&s, "a").await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_with_a_kept_file_never_sees_a_version_older_than_the_last_save() {
        use std::sync::atomic::{AtomicU64, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        save(&s, "a").await;
        assert_eq!(version(&s, "a").await, Some(1));
        assert_eq!(s.inner.kept.len(), 1, "the record file is kept");

        // Another handle (as another process would) saves while this one loads: a load
        // that starts after a save returned must see that save or a later one.
        let saved = Arc::new(AtomicU64::new(1));
        let writer = {
            let (dir, saved) = (dir.path().to_owned(), Arc::clone(&saved));
            tokio::spawn(async move {
                let w = open(&dir, 0).await;
                for _ in 0..200 {
                    saved.store(save(&w, "a").await, Ordering::SeqCst);
                }
            })
        };
        let mut loads = 0;
        while !writer.is_finished() {
            let floor = saved.load(Ordering::SeqCst);
            let got = version(&s, "a").await.unwrap();
            assert!(
                got >= floor,
                "loaded version {got} after version {floor} was saved"
            );
            loads += 1;
        }
        writer.await.unwrap();
        assert_eq!(version(&s, "a").await, Some(201));
        assert!(loads > 0);
    }

    #[test]
    fn once_full_nothing_more_is_kept_until_a_file_is_dropped() {
        let keys = Arc::new(Keyring::fresh(&key(), &ScryptParams::default()).unwrap());
        let file = tempfile::tempfile().unwrap();
        let kept = || {
            let file = file.try_clone().unwrap();
            Kept::new(
                file,
                PathBuf::from("f"),
                (1, 2),
                0,
                [0; TAG_LEN],
                Arc::clone(&keys),
            )
        };
        let cache = KeptRecords::new(2);
        cache.keep(&id("a"), kept());
        cache.keep(&id("b"), kept());
        assert!(cache.wants_more());
        cache.keep(&id("c"), kept());
        assert_eq!(cache.len(), 2, "full");
        assert!(cache.get(&id("c"), &keys).is_none());
        assert!(!cache.wants_more(), "no more offers once full");
        cache.keep(&id("a"), kept());
        assert_eq!(cache.len(), 2, "replacing a kept file needs no room");
        cache.forget(&id("zzz"));
        assert!(!cache.wants_more(), "forgetting nothing makes no room");
        cache.forget(&id("b"));
        assert!(cache.wants_more(), "room again");
        cache.keep(&id("c"), kept());
        assert!(cache.get(&id("c"), &keys).is_some());
        let other_keys = Arc::new(Keyring::fresh(&key(), &ScryptParams::default()).unwrap());
        assert!(
            cache.get(&id("c"), &other_keys).is_none(),
            "kept under other keys"
        );
        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(cache.wants_more());
        assert!(!KeptRecords::new(0).wants_more());
    }
}
