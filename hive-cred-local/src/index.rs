//! The names index (`names.index`): the ids of a store's records, encrypted, so that a new
//! handle's first `list` need not decrypt every record to learn them.
//!
//! It is a cache and nothing depends on it being current. It is sealed like a record
//! (XChaCha20-Poly1305 under the current data key, bound to the store id and a tag no id
//! can have) and holds ids separated by newlines. An id read from it is only used for a
//! record file whose name is that id's keyed hash, and that mapping is a pure function of
//! the id: an index that is old, from another store, damaged or missing can make `list`
//! slower, never wrong. It is written without fsync by a `list` that had to decrypt
//! records, removed by `delete` (so a deleted id does not linger in it) and by a data-key
//! rotation (it would stay sealed under the retired key).

use std::sync::Arc;

use hive_cred_core::{CredentialId, Result};
use zeroize::Zeroizing;

use crate::durable::{Flush, read_capped, write_atomic};
use crate::format::{MAX_RECORD_LEN, seal_record};
use crate::keyring::Keyring;
use crate::lock::{FileLock, Wait};
use crate::storage::{Inner, LOCK_FILE};

/// File name of the names index.
pub(crate) const INDEX_FILE: &str = "names.index";

impl Inner {
    /// Adds the ids in the names index to this handle's names; how many it held. An
    /// absent or unusable index counts as empty (logged at debug level).
    pub(crate) fn read_names_index(&self, keys: &Arc<Keyring>) -> usize {
        match self.try_read_names_index(keys) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring the credential store's names index");
                0
            }
        }
    }

    fn try_read_names_index(&self, keys: &Arc<Keyring>) -> Result<usize> {
        let path = self.dir.join(INDEX_FILE);
        let Some(bytes) = read_capped(&path, MAX_RECORD_LEN)? else {
            return Ok(0);
        };
        let (_, plaintext) = self.decrypt(keys, &bytes, &keys.index_tag(), &path)?;
        let mut known = Vec::new();
        for line in plaintext.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // Sealed by us, so every line is an id; a line that is not is skipped.
            if let Some(id) = std::str::from_utf8(line)
                .ok()
                .and_then(|s| CredentialId::new(s).ok())
            {
                known.push((keys.id_tag(&id), id));
            }
        }
        let n = known.len();
        self.learn_names(known);
        Ok(n)
    }

    /// Replaces the names index with `ids`. Best effort: skipped when another writer
    /// holds the store lock, and any failure is only logged.
    pub(crate) fn write_names_index(&self, ids: &[CredentialId]) {
        if let Err(e) = self.try_write_names_index(ids) {
            tracing::debug!(error = %e, "could not write the credential store's names index");
        }
    }

    fn try_write_names_index(&self, ids: &[CredentialId]) -> Result<()> {
        // The lock keeps a rotation (which removes the index) and temp-file cleanup out.
        let Some(_guard) = FileLock::acquire(&self.dir.join(LOCK_FILE), Wait::Try)? else {
            return Ok(());
        };
        let keys = self.sync_keys(false)?;
        if !keys.on_disk {
            return Ok(());
        }
        let mut text = Zeroizing::new(Vec::with_capacity(ids.len() * 16));
        for id in ids {
            text.extend_from_slice(id.as_str().as_bytes());
            text.push(b'\n');
        }
        let (generation, dek) = keys.material.current();
        let sealed = seal_record(dek, generation, 0, &keys.store_id, &keys.index_tag(), &text)?;
        write_atomic(
            &self.dir,
            &self.dir.join(INDEX_FILE),
            &sealed,
            Flush::Nothing,
        )
    }

    /// Removes the names index (store lock held). Not fsynced: the caller's own
    /// directory fsync makes it durable.
    pub(crate) fn remove_names_index(&self) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::durable::io_error(e, "could not remove", &path)),
        }
    }
}
