//! `list`, and the names index (`names.index`) that spares a new handle decrypting every
//! record to learn its id.
//!
//! A listing always comes from the directory: the record files there, each named by its
//! id's keyed hash (tag). A handle remembers the tag -> id of every record it loaded,
//! saved or listed; the ids of the others are learnt from the names index, and what it
//! does not know either is learnt by decrypting the record (spread over the blocking
//! pool).
//!
//! The index is a cache and nothing depends on it being current. It is sealed like a
//! record (XChaCha20-Poly1305 under the current data key, bound to the store id and a tag
//! no id can have), so only a holder of the data key can write one that is accepted. Its
//! plaintext holds each record's tag with its id:
//!
//! ```text
//! version:u8 (2) count:u32 (tag[32] id_len:u8 id)*
//! ```
//!
//! Its pairs only teach a handle names, so an old, damaged or foreign index costs
//! decryptions, never a wrong list. A `list` that had to decrypt records rewrites it (the
//! durable write of `fs`, when no writer holds the store lock). `delete` removes it (a
//! deleted id must not linger in it), and so does a data-key rotation (it would stay
//! sealed under the retired key).

use std::sync::Arc;

use hive_cred_core::{CredentialId, Error, Result};
use zeroize::Zeroizing;

use crate::format::{TAG_LEN, seal_record};
use crate::fs::{Flush, Role, io_error, unhex, write_atomic};
use crate::keyring::Keyring;
use crate::lock::{FileLock, Wait};
use crate::record::decode;
use crate::storage::{Inner, LOCK_FILE, LocalStorage, RECORD_SUFFIX, blocking, join_error, lock};

/// File name of the names index.
pub(crate) const INDEX_FILE: &str = "names.index";

const INDEX_VERSION: u8 = 2;

/// Records below which a cold `list` does not split its decryption work further.
const IDENTIFY_CHUNK_MIN: usize = 64;

impl LocalStorage {
    pub(crate) async fn list_ids(&self) -> Result<Vec<CredentialId>> {
        let inner = Arc::clone(&self.inner);
        let Some((keys, mut ids, unknown)) = blocking(move || inner.scan()).await? else {
            return Ok(Vec::new());
        };
        if unknown.is_empty() {
            return Ok(ids);
        }
        // Each unknown record costs a read, a decryption and a decode: on a fresh handle
        // without an index that is nearly all of the time, so one chunk per core.
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
        let mut learned = 0;
        for task in tasks {
            let found = task.await.map_err(join_error)?;
            learned += found.len();
            ids.extend(found);
        }
        if learned > 0 {
            // Spare the next new handle (or process) the decryptions.
            let inner = Arc::clone(&self.inner);
            let all = ids.clone();
            blocking(move || {
                inner.write_names_index(&all);
                Ok(())
            })
            .await?;
        }
        Ok(ids)
    }
}

/// The first half of `list`: the keys, the ids this handle knows the record files of,
/// and the tags of the records it must decrypt to learn theirs.
type Scan = (Arc<Keyring>, Vec<CredentialId>, Vec<[u8; TAG_LEN]>);

impl Inner {
    /// `None` when the store does not exist yet.
    fn scan(&self) -> Result<Option<Scan>> {
        let keys = self.read_keys()?;
        if !keys.on_disk {
            return Ok(None);
        }
        if !self
            .index_read
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.read_names_index(&keys);
        }
        let tags = self.record_tags()?;
        let mut ids = Vec::with_capacity(tags.len());
        let mut unknown = Vec::new();
        let names = lock(&self.names);
        for tag in tags {
            match names.get(&tag) {
                Some(id) => ids.push(id.clone()),
                None => unknown.push(tag),
            }
        }
        drop(names);
        Ok(Some((keys, ids, unknown)))
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

    /// Learns the ids of `tags` by decrypting their records; skips (with a warning) those
    /// that cannot be read.
    fn identify_all(&self, keys: &Arc<Keyring>, tags: &[[u8; TAG_LEN]]) -> Vec<CredentialId> {
        let mut ids = Vec::with_capacity(tags.len());
        for tag in tags {
            match self.identify(keys, tag) {
                Ok(Some(id)) => {
                    lock(&self.names).insert(*tag, id.clone());
                    ids.push(id);
                }
                // Removed since the directory was read.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable credential record");
                }
            }
        }
        ids
    }

    /// Decrypts a record found by its file name to learn its id.
    fn identify(&self, keys: &Arc<Keyring>, tag: &[u8; TAG_LEN]) -> Result<Option<CredentialId>> {
        let path = self.record_path(tag);
        let Some((_, plaintext)) = self.read_record(keys, tag, &path, Role::Record)? else {
            return Ok(None);
        };
        let credential = decode(&plaintext, &path)?;
        if keys.id_tag(credential.id()) != *tag {
            return Err(Error::corrupted(
                "credential record is stored under another id's file name",
            )
            .with_context("file", path.display()));
        }
        Ok(Some(credential.id().clone()))
    }

    /// Reads the names index and teaches this handle its names. An absent index is
    /// nothing; an unusable one is logged and ignored.
    fn read_names_index(&self, keys: &Arc<Keyring>) {
        let path = self.dir.join(INDEX_FILE);
        let read = self
            .read_record(keys, &keys.index_tag(), &path, Role::Index)
            .and_then(|found| {
                found
                    .map(|(_, plaintext)| decode_index(&plaintext))
                    .transpose()
            });
        match read {
            Ok(Some(entries)) => lock(&self.names).extend(entries),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the credential store's names index"),
        }
    }

    /// Replaces the names index with `ids` (whose names this handle knows). Best effort:
    /// skipped when another writer holds the store lock, and a failure is only logged.
    fn write_names_index(&self, ids: &[CredentialId]) {
        if let Err(e) = self.try_write_names_index(ids) {
            tracing::debug!(error = %e, "could not write the credential store's names index");
        }
    }

    fn try_write_names_index(&self, ids: &[CredentialId]) -> Result<()> {
        // The lock keeps a rotation (which removes the index), temp-file cleanup and
        // other index writers out.
        let Some(_guard) = FileLock::acquire(&self.dir.join(LOCK_FILE), Wait::Try)? else {
            return Ok(());
        };
        let keys = self.sync_keys(false)?;
        if !keys.on_disk {
            return Ok(());
        }
        let tags: Vec<_> = ids.iter().map(|id| keys.id_tag(id)).collect();
        let entries: Vec<_> = tags.iter().zip(ids).collect();
        let text = encode_index(&entries);
        let (generation, dek) = keys.material.current();
        let sealed = seal_record(dek, generation, 0, &keys.store_id, &keys.index_tag(), &text)?;
        write_atomic(&self.dir, &self.dir.join(INDEX_FILE), &sealed, Flush::All)
    }

    /// Removes the names index (store lock held). Not fsynced: the caller's own
    /// directory fsync makes it durable.
    pub(crate) fn remove_names_index(&self) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(e, "could not remove", &path)),
        }
    }
}

fn malformed() -> Error {
    Error::corrupted("the names index is malformed")
}

fn encode_index(ids: &[(&[u8; TAG_LEN], &CredentialId)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(5 + ids.len() * (TAG_LEN + 1 + 16)));
    out.push(INDEX_VERSION);
    out.extend_from_slice(&u32::try_from(ids.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (tag, id) in ids {
        let id = id.as_str().as_bytes();
        out.extend_from_slice(*tag);
        // Ids are at most 128 bytes (hive_cred_core::MAX_ID_LEN).
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(id);
    }
    out
}

fn decode_index(bytes: &[u8]) -> Result<Vec<([u8; TAG_LEN], CredentialId)>> {
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8]> {
        if n > rest.len() {
            return Err(malformed());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    if take(1)? != [INDEX_VERSION] {
        return Err(malformed());
    }
    let count: [u8; 4] = take(4)?.try_into().map_err(|_| malformed())?;
    let count = usize::try_from(u32::from_le_bytes(count)).map_err(|_| malformed())?;
    let mut entries = Vec::with_capacity(count.min(bytes.len() / (TAG_LEN + 2)));
    for _ in 0..count {
        let tag: [u8; TAG_LEN] = take(TAG_LEN)?.try_into().map_err(|_| malformed())?;
        let len = usize::from(take(1)?[0]);
        let id = std::str::from_utf8(take(len)?).map_err(|_| malformed())?;
        entries.push((tag, CredentialId::new(id).map_err(|_| malformed())?));
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeySource, RawKey};
    use hive_cred_core::{CredentialObject, CredentialStorage, CredentialType};

    #[test]
    fn index_round_trips_and_every_truncation_is_refused() {
        let a = CredentialId::new("alpha").unwrap();
        let b = CredentialId::new("b.2").unwrap();
        let bytes = encode_index(&[(&[1; TAG_LEN], &a), (&[2; TAG_LEN], &b)]);
        let entries = decode_index(&bytes).unwrap();
        assert_eq!(entries, vec![([1; TAG_LEN], a), ([2; TAG_LEN], b)]);
        for len in 0..bytes.len() {
            assert!(decode_index(&bytes[..len]).is_err(), "length {len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_index(&longer).is_err());
    }

    #[tokio::test]
    async fn a_cold_list_of_many_records_identifies_them_all_in_parallel_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let key = || KeySource::RawKey(RawKey::from_bytes([9; 32]));
        let s = LocalStorage::open(dir.path(), key()).await.unwrap();
        let n = IDENTIFY_CHUNK_MIN * 2 + 3;
        for i in 0..n {
            let c = CredentialObject::new(&format!("c{i:04}"), CredentialType::ApiKey).unwrap();
            s.save(&c).await.unwrap();
        }
        let fresh = LocalStorage::open(dir.path(), key()).await.unwrap();
        let mut ids: Vec<String> = fresh
            .list()
            .await
            .unwrap()
            .iter()
            .map(|i| i.as_str().to_owned())
            .collect();
        ids.sort();
        let expected: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
        assert_eq!(ids, expected);
    }
}
