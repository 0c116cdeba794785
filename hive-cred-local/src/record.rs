//! Reading and writing credential records: `load`, `save`, `delete`, `exists`.
//!
//! One read path: open the record file (hardened, see `fs`), read it whole, authenticate
//! and decrypt it under the data key of its generation, decode the stored form. One
//! write path: under the store lock, read the current record for the check-and-set, seal
//! the new one and replace the file with `fs::write_atomic`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hive_cred_core::codec::{from_stored, to_stored_bytes};
use hive_cred_core::{CredentialId, CredentialObject, Error, ErrorKind, Result};
use zeroize::Zeroizing;

use crate::format::{MAX_RECORD_LEN, TAG_LEN, open_record, parse_record, seal_record};
use crate::fs::{Flush, Role, open_regular, push_hex, read_regular, remove_durable, write_atomic};
use crate::keyring::Keyring;
use crate::storage::{Inner, RECORD_SUFFIX, lock};

/// Length of a record file's name: the hex of its tag and [`RECORD_SUFFIX`].
pub(crate) const RECORD_NAME_LEN: usize = TAG_LEN * 2 + RECORD_SUFFIX.len();

impl Inner {
    /// The file of the record whose id has the keyed hash `tag`.
    pub(crate) fn record_path(&self, tag: &[u8; TAG_LEN]) -> PathBuf {
        let mut name = String::with_capacity(RECORD_NAME_LEN);
        push_hex(&mut name, tag);
        name.push_str(RECORD_SUFFIX);
        self.dir.join(name)
    }

    /// Reads and decrypts the record file at `path` (sealed with `tag`): its stored
    /// version and plaintext. `Ok(None)` when there is no such file.
    pub(crate) fn read_record(
        &self,
        keys: &Arc<Keyring>,
        tag: &[u8; TAG_LEN],
        path: &Path,
        role: Role,
    ) -> Result<Option<(u64, Zeroizing<Vec<u8>>)>> {
        let Some(bytes) = read_regular(path, role, MAX_RECORD_LEN)? else {
            return Ok(None);
        };
        self.decrypt(keys, &bytes, tag, path).map(Some)
    }

    /// Authenticates and decrypts the record in `bytes`: its stored version and plaintext.
    pub(crate) fn decrypt(
        &self,
        keys: &Arc<Keyring>,
        bytes: &[u8],
        tag: &[u8; TAG_LEN],
        path: &Path,
    ) -> Result<(u64, Zeroizing<Vec<u8>>)> {
        let view = parse_record(bytes).map_err(|m| m.into_error(path))?;
        let keys = self.keys_for(keys, view.generation)?;
        let dek = keys
            .material
            .dek(view.generation)
            .ok_or_else(|| missing_generation(view.generation, path))?;
        let plaintext = open_record(&view, dek, &keys.store_id, tag)
            .ok_or_else(|| failed_authentication(path))?;
        Ok((view.version, plaintext))
    }

    pub(crate) fn load(&self, id: &CredentialId) -> Result<Option<CredentialObject>> {
        let keys = self.read_keys()?;
        let tag = keys.id_tag(id);
        let path = self.record_path(&tag);
        let Some((version, plaintext)) = self.read_record(&keys, &tag, &path, Role::Record)? else {
            return Ok(None);
        };
        let credential = credential_from(&plaintext, version, id, &path)?;
        lock(&self.names).entry(tag).or_insert_with(|| id.clone());
        Ok(Some(credential))
    }

    pub(crate) fn exists(&self, id: &CredentialId) -> Result<bool> {
        let keys = self.read_keys()?;
        let path = self.record_path(&keys.id_tag(id));
        Ok(open_regular(&path, Role::Record)?.is_some())
    }

    pub(crate) fn save(&self, mut credential: CredentialObject) -> Result<()> {
        let id = credential.id().clone();
        let id = &id;
        let (_guard, keys) = self.begin_write()?;
        let tag = keys.id_tag(id);
        let path = self.record_path(&tag);
        let stored = match self.read_record(&keys, &tag, &path, Role::Record)? {
            Some((stored, _)) => stored,
            None => 0,
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
        credential.set_version(next);
        let plaintext = to_stored_bytes(&credential)?;
        let (generation, dek) = keys.material.current();
        let sealed = seal_record(dek, generation, next, &keys.store_id, &tag, &plaintext)
            .map_err(|e| e.with_context("id", id))?;
        write_atomic(&self.dir, &path, &sealed, Flush::All)?;
        lock(&self.names).insert(tag, id.clone());
        Ok(())
    }

    pub(crate) fn delete(&self, id: &CredentialId) -> Result<bool> {
        if !self.read_keys()?.on_disk {
            return Ok(false);
        }
        let (_guard, keys) = self.begin_write()?;
        let tag = keys.id_tag(id);
        // The index would keep the deleted id (encrypted) until its next rewrite.
        self.remove_names_index()?;
        let removed = remove_durable(&self.dir, &self.record_path(&tag))?;
        lock(&self.names).remove(&tag);
        Ok(removed)
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

pub(crate) fn decode(plaintext: &[u8], path: &Path) -> Result<CredentialObject> {
    from_stored(plaintext).map_err(|e| e.with_context("file", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::hex;
    use crate::{KeySource, LocalStorage, RawKey};

    #[tokio::test]
    async fn record_paths_are_the_directory_joined_with_the_tag_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let tag: [u8; TAG_LEN] = std::array::from_fn(|i| (i * 37) as u8);
        let name = format!("{}{RECORD_SUFFIX}", hex(&tag));
        assert_eq!(name.len(), RECORD_NAME_LEN);
        let key = KeySource::RawKey(RawKey::from_bytes([9; 32]));
        let s = LocalStorage::open(dir.path(), key).await.unwrap();
        let path = s.inner.record_path(&tag);
        assert_eq!(path, dir.path().join(&name));
    }
}
