//! The names index (`names.index`): the ids of a store's records, encrypted, so that a new
//! handle's first `list` need not decrypt every record, nor (when the directory has not
//! changed) read the directory.
//!
//! It is a cache and nothing depends on it being current. It is sealed like a record
//! (XChaCha20-Poly1305 under the current data key, bound to the store id and a tag no id
//! can have), so only a holder of the data key can write one that is accepted. It holds
//! each record's file tag with its id, and optionally the [`DirStamp`] of the directory
//! state the list was read from:
//!
//! ```text
//! version:u8 (1) has_stamp:u8 [stamp:64] count:u32 (tag[32] id_len:u8 id)*
//! ```
//!
//! - The tag -> id pairs only teach a handle names; a listing still comes from the
//!   directory, so an old, damaged or foreign index costs decryptions, never a wrong list.
//! - The stamp is recorded only for a complete listing whose directory state was settled
//!   (see [`DirStamp`]): while a `stat` of the directory still shows that stamp, no file
//!   has been created, removed or renamed in it since, so the recorded ids are the
//!   listing and the directory is not read. This is the reasoning a handle already
//!   applies to its own last listing, extended to new handles and processes.
//!
//! Creating the index changes the directory (one new name); rewriting it does not,
//! because an existing index is overwritten in place (no rename). A reader that catches a
//! rewrite half done sees bytes that fail authentication and ignores the index. It is
//! written without fsync, removed by `delete` (a deleted id must not linger in it) and by
//! a data-key rotation (it would stay sealed under the retired key).

use std::sync::Arc;

use hive_cred_core::{CredentialId, Error, Result};
use zeroize::Zeroizing;

use crate::durable::{Flush, overwrite_in_place, read_capped, write_atomic};
use crate::format::{MAX_RECORD_LEN, TAG_LEN, seal_record};
use crate::keyring::Keyring;
use crate::lock::{FileLock, Wait};
use crate::storage::{DirStamp, Inner, LOCK_FILE, lock};

/// File name of the names index.
pub(crate) const INDEX_FILE: &str = "names.index";

const INDEX_VERSION: u8 = 1;

/// What a names index held.
pub(crate) struct Index {
    /// The directory state `ids` were listed from, when it was settled.
    pub(crate) stamp: Option<DirStamp>,
    pub(crate) ids: Vec<CredentialId>,
}

fn malformed() -> Error {
    Error::corrupted("the names index is malformed")
}

fn encode(ids: &[(&[u8; TAG_LEN], &CredentialId)], stamp: Option<DirStamp>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        2 + DirStamp::LEN + 4 + ids.len() * (TAG_LEN + 1 + 16),
    ));
    out.push(INDEX_VERSION);
    match stamp {
        Some(stamp) => {
            out.push(1);
            out.extend_from_slice(&stamp.to_bytes());
        }
        None => out.push(0),
    }
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

/// A record file's tag and the id it names.
type Name = ([u8; TAG_LEN], CredentialId);

fn decode(bytes: &[u8]) -> Result<(Option<DirStamp>, Vec<Name>)> {
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
    let stamp = match take(1)? {
        [0] => None,
        [1] => {
            let raw: &[u8; DirStamp::LEN] =
                take(DirStamp::LEN)?.try_into().map_err(|_| malformed())?;
            Some(DirStamp::from_bytes(raw))
        }
        _ => return Err(malformed()),
    };
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
    Ok((stamp, entries))
}

impl Inner {
    /// Reads the names index: teaches this handle its names and returns what it held.
    /// `None` when it is absent or unusable (logged at debug level).
    pub(crate) fn read_names_index(&self, keys: &Arc<Keyring>) -> Option<Index> {
        match self.try_read_names_index(keys) {
            Ok(index) => index,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring the credential store's names index");
                None
            }
        }
    }

    fn try_read_names_index(&self, keys: &Arc<Keyring>) -> Result<Option<Index>> {
        let path = self.dir.join(INDEX_FILE);
        let Some(bytes) = read_capped(&path, MAX_RECORD_LEN)? else {
            return Ok(None);
        };
        let (_, plaintext, _) = self.decrypt(keys, &bytes, &keys.index_tag(), &path)?;
        let (stamp, entries) = decode(&plaintext)?;
        let ids = entries.iter().map(|(_, id)| id.clone()).collect();
        // Sealed under the data key: the tags are ones a key holder computed.
        self.learn_names(entries);
        *lock(&self.index_stamp) = stamp;
        Ok(Some(Index { stamp, ids }))
    }

    /// Replaces the names index with `ids` (whose names this handle knows) and `stamp`.
    /// Creates it only with `create`: creating a file changes the directory, which would
    /// invalidate every handle's cached listing (this one's included), so that is done
    /// only by a `list` that had to decrypt records anyway. Best effort: skipped when
    /// another writer holds the store lock, and any failure is only logged.
    pub(crate) fn write_names_index(
        &self,
        ids: &[CredentialId],
        stamp: Option<DirStamp>,
        create: bool,
    ) {
        if let Err(e) = self.try_write_names_index(ids, stamp, create) {
            tracing::debug!(error = %e, "could not write the credential store's names index");
        }
    }

    fn try_write_names_index(
        &self,
        ids: &[CredentialId],
        stamp: Option<DirStamp>,
        create: bool,
    ) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        if !create && !path.exists() {
            return Ok(());
        }
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
        let text = encode(&entries, stamp);
        let (generation, dek) = keys.material.current();
        let sealed = seal_record(dek, generation, 0, &keys.store_id, &keys.index_tag(), &text)?;
        if !overwrite_in_place(&path, &sealed)? {
            if !create {
                return Ok(());
            }
            write_atomic(&self.dir, &path, &sealed, Flush::Nothing)?;
        }
        *lock(&self.index_stamp) = stamp;
        Ok(())
    }

    /// Removes the names index (store lock held). Not fsynced: the caller's own
    /// directory fsync makes it durable.
    pub(crate) fn remove_names_index(&self) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        *lock(&self.index_stamp) = None;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::durable::io_error(e, "could not remove", &path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_refused() {
        let a = CredentialId::new("alpha").unwrap();
        let b = CredentialId::new("b.2").unwrap();
        let stamp = DirStamp::from_bytes(&[7; DirStamp::LEN]);
        for stamp in [None, Some(stamp)] {
            let bytes = encode(&[(&[1; TAG_LEN], &a), (&[2; TAG_LEN], &b)], stamp);
            let (back, entries) = decode(&bytes).unwrap();
            assert_eq!(back, stamp);
            assert_eq!(
                entries,
                vec![([1; TAG_LEN], a.clone()), ([2; TAG_LEN], b.clone())]
            );
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "length {len}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
        assert_eq!(stamp, DirStamp::from_bytes(&stamp.to_bytes()));
    }
}
