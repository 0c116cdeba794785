//! Record files kept open between loads.
//!
//! Opening and closing a record file is the larger part of a `load` of a record already
//! in the page cache (a path walk, a file object, a descriptor, its release). A handle
//! therefore keeps the files of records it loaded open (a bounded number) and reads a
//! kept file again with `pread`, as long as the name still leads to the same file.
//!
//! The name leads to the same file while the store directory's [`DirStamp`] is the one
//! taken before the file was opened, provided that stamp was *settled* (its times at
//! least 2 s old when taken): every save, delete, rotation or header change renames,
//! exchanges or unlinks a name in the directory, which gives it strictly newer times (see
//! [`DirStamp`]), and a directory put in place of the store's (a restored backup, a
//! renamed parent) has another device or inode. The check is one `stat` of the directory
//! per load, about a third of an `open` + `close`.
//!
//! A store that was changed in the last 2 s keeps no file: its stamp cannot yet be
//! trusted, and loads open the record as usual (after one `stat`, and no more `stat`s
//! until the stamp could have settled). A load that reads a kept file whose record then
//! fails to authenticate (a save changed it between the `stat` and the read) drops it
//! and reads the record by name.
//!
//! Unix only: elsewhere the directory gives no [`DirStamp`] and nothing is kept.
#![cfg_attr(not(unix), allow(dead_code))]

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hive_cred_core::CredentialId;

use crate::format::TAG_LEN;
use crate::keyring::Keyring;
use crate::storage::{DirStamp, lock};

/// The kept files of one handle (shared by its clones).
pub(crate) struct KeptRecords {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    files: HashMap<CredentialId, Arc<Kept>, foldhash::fast::RandomState>,
    /// No file is kept before this time (nanoseconds since the Unix epoch): the last
    /// stamp seen was not settled, and no stamp taken before then can be.
    unsettled_until: i128,
    /// The last attempt to keep a file found no room: loads stop looking for files to
    /// keep until one is dropped (so that loading more credentials than there is room
    /// for costs no `stat` per load).
    full: bool,
}

/// An open record file, the stamp its name was checked against, and what decrypting it
/// takes.
pub(crate) struct Kept {
    pub(crate) file: File,
    /// The record's file name (for errors).
    pub(crate) path: PathBuf,
    pub(crate) stamp: DirStamp,
    pub(crate) tag: [u8; TAG_LEN],
    pub(crate) keys: Arc<Keyring>,
}

impl KeptRecords {
    /// Keeps at most `capacity` files open; 0 keeps none.
    pub(crate) fn new(capacity: usize) -> KeptRecords {
        KeptRecords {
            capacity,
            state: Mutex::new(State {
                files: HashMap::default(),
                unsettled_until: i128::MIN,
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

    /// Whether a load that finds no kept file should take the directory's stamp to keep
    /// the file it opens: the last attempt found room, and the stamp could have settled
    /// since it was last seen unsettled. `now` is in nanoseconds since the Unix epoch.
    pub(crate) fn wants_more(&self, now: i128) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let state = lock(&self.state);
        !state.full && now >= state.unsettled_until
    }

    /// Records that the directory's stamp cannot be settled before `until`.
    pub(crate) fn unsettled_until(&self, until: i128) {
        let mut state = lock(&self.state);
        state.unsettled_until = state.unsettled_until.max(until);
    }

    /// Keeps `kept` as the file of `id`, whose name was checked against the settled
    /// `kept.stamp` before the file was opened. When full, first drops the files kept
    /// under other stamps (useless now); if none, keeps nothing, and
    /// [`wants_more`](Self::wants_more) says no until a file is dropped.
    pub(crate) fn keep(&self, id: &CredentialId, kept: Kept) {
        let mut state = lock(&self.state);
        if state.files.len() >= self.capacity && !state.files.contains_key(id) {
            let stamp = kept.stamp;
            state.files.retain(|_, old| old.stamp == stamp);
            if state.files.len() >= self.capacity {
                state.full = true;
                return;
            }
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

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

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

    /// Keeps `file` as the record file of `name`, checked against the directory's
    /// current stamp, as a load on a settled directory would (without waiting 2 s).
    fn keep_as(s: &LocalStorage, name: &str, file: File) {
        let keys = s.inner.cached_keys();
        let (stamp, _) = DirStamp::read(s.dir()).unwrap().unwrap();
        let kept = Kept {
            file,
            path: record_file(s, name),
            stamp,
            tag: keys.id_tag(&id(name)),
            keys,
        };
        s.inner.kept.keep(&id(name), kept);
    }

    fn record_file(s: &LocalStorage, name: &str) -> std::path::PathBuf {
        s.inner
            .record_path(&s.inner.cached_keys().id_tag(&id(name)))
    }

    /// A store where `a` is at version 2, and a copy of its version 1 record opened from
    /// outside the store: kept as `a`'s file, it tells a read of the kept file (version
    /// 1) from a read by name (version 2).
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
    async fn a_kept_file_is_read_until_the_directory_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, old, _scratch) = store_with_old_copy(dir.path()).await;
        keep_as(&s, "a", old);
        assert_eq!(
            version(&s, "a").await,
            Some(1),
            "the kept file was not read"
        );
        assert_eq!(version(&s, "a").await, Some(1));

        // Another process saves anything: the name is read again.
        let other = open(dir.path(), 0).await;
        save(&other, "b").await;
        assert_eq!(version(&s, "a").await, Some(2));
        // The directory just changed, so the file opened now is not kept.
        assert_eq!(s.inner.kept.len(), 0);
    }

    #[tokio::test]
    async fn a_save_or_delete_by_another_process_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 8).await;
        save(&s, "a").await;
        keep_as(&s, "a", File::open(record_file(&s, "a")).unwrap());
        assert_eq!(version(&s, "a").await, Some(1));

        let other = open(dir.path(), 0).await;
        save(&other, "a").await;
        assert_eq!(version(&s, "a").await, Some(2));

        keep_as(&s, "a", File::open(record_file(&s, "a")).unwrap());
        assert!(other.delete(&id("a")).await.unwrap());
        assert_eq!(version(&s, "a").await, None);
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
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&junk, bytes).unwrap();
        keep_as(&s, "a", File::open(&junk).unwrap());
        assert_eq!(s.inner.kept.len(), 1);
        assert_eq!(version(&s, "a").await, Some(2));
        assert_eq!(s.inner.kept.len(), 0);
    }

    #[tokio::test]
    async fn loads_keep_files_only_once_the_directory_settled_and_up_to_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 2).await;
        for name in ["a", "b", "c"] {
            save(&s, name).await;
        }
        assert_eq!(version(&s, "a").await, Some(1));
        assert_eq!(s.inner.kept.len(), 0, "a directory changed just now");

        std::thread::sleep(Duration::from_millis(2200));
        for name in ["a", "b", "c", "a"] {
            assert_eq!(version(&s, name).await, Some(1));
        }
        assert_eq!(s.inner.kept.len(), 2);
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
        std::thread::sleep(Duration::from_millis(2200));
        assert_eq!(version(&s, "a").await, Some(1));
        assert_eq!(
            s.inner.kept.len(),
            1,
            "the settled store's record file is kept"
        );

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
    fn when_full_files_kept_under_an_older_stamp_make_room() {
        let keys = Arc::new(Keyring::fresh(&key(), &ScryptParams::default()).unwrap());
        let file = tempfile::tempfile().unwrap();
        let kept = |n: u8| Kept {
            file: file.try_clone().unwrap(),
            path: PathBuf::from("f"),
            stamp: DirStamp::from_bytes(&[n; DirStamp::LEN]),
            tag: [0; TAG_LEN],
            keys: Arc::clone(&keys),
        };
        let cache = KeptRecords::new(2);
        cache.keep(&id("a"), kept(1));
        cache.keep(&id("b"), kept(1));
        assert!(cache.wants_more(0));
        cache.keep(&id("c"), kept(1));
        assert_eq!(cache.len(), 2, "full: nothing more under the same stamp");
        assert!(cache.get(&id("c"), &keys).is_none());
        assert!(!cache.wants_more(0), "no more stats once full");
        cache.keep(&id("a"), kept(1));
        assert_eq!(cache.len(), 2, "replacing a kept file needs no room");
        cache.forget(&id("zzz"));
        assert!(!cache.wants_more(0), "forgetting nothing makes no room");
        cache.forget(&id("b"));
        assert!(cache.wants_more(0), "room again");
        cache.keep(&id("b"), kept(1));
        cache.keep(&id("c"), kept(2));
        assert_eq!(cache.len(), 1, "the older stamp's files were dropped");
        assert!(cache.get(&id("c"), &keys).is_some());
        let other_keys = Arc::new(Keyring::fresh(&key(), &ScryptParams::default()).unwrap());
        assert!(
            cache.get(&id("c"), &other_keys).is_none(),
            "kept under other keys"
        );
    }

    #[test]
    fn an_unsettled_stamp_stops_the_search_for_files_to_keep_until_it_could_settle() {
        let cache = KeptRecords::new(4);
        assert!(cache.wants_more(0));
        cache.unsettled_until(100);
        assert!(!cache.wants_more(99));
        assert!(cache.wants_more(100));
        cache.unsettled_until(50);
        assert!(!cache.wants_more(99), "a later bound is not moved back");
        assert!(!KeptRecords::new(0).wants_more(i128::MAX));
    }
}
