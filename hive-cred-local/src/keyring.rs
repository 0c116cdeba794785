//! Keys: the unlocked key material of an open store ([`Keyring`]), and how a handle keeps
//! it in step with the header on disk, which other processes may create, re-key or
//! rotate. Everything here may read the header and run scrypt: callers are on the
//! blocking pool.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use hive_cred_core::{CredentialId, Error, ErrorKind, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::format::MAX_HEADER_LEN;
use crate::format::{
    Header, Key32, KeyMaterial, SALT_LEN, STORE_ID_LEN, TAG_LEN, parse_header, seal_header,
};
use crate::fs::{
    Flush, Role, create_private_dir, read_regular, remove_stale_temp_files, write_atomic,
};
use crate::key::{KEY_LEN, KdfKind, KeySource, ScryptParams, derive_kek, fill_random};
use crate::lock::{FileLock, Wait};
use crate::storage::{Inner, LOCK_FILE, lock};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the HMAC that names record files.
const ID_TAG_DOMAIN: &[u8] = b"hive-cred/local/record-name/v1\0";

/// Keys of an open store, with the header bytes they came from.
pub(crate) struct Keyring {
    /// The header as on disk (or as it will be written when the store is created).
    pub(crate) header_bytes: Vec<u8>,
    /// Whether `header_bytes` is known to be on disk.
    pub(crate) on_disk: bool,
    pub(crate) store_id: [u8; STORE_ID_LEN],
    pub(crate) scrypt: Option<ScryptParams>,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) kek: Key32,
    pub(crate) material: KeyMaterial,
    name_mac: HmacSha256,
}

impl Keyring {
    /// A new store's keys (not yet on disk). Runs scrypt for passphrases: blocking.
    pub(crate) fn fresh(source: &KeySource, params: &ScryptParams) -> Result<Keyring> {
        let mut store_id = [0u8; STORE_ID_LEN];
        fill_random(&mut store_id)?;
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        let mut name_key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(name_key.as_mut_slice())?;
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(dek.as_mut_slice())?;
        let material = KeyMaterial {
            name_key,
            deks: vec![(1, dek)],
        };
        let scrypt = (source.kind() == KdfKind::Scrypt).then_some(*params);
        let kek = derive_kek(source, params, &salt)?;
        let header_bytes = seal_header(&store_id, scrypt.as_ref(), &salt, &kek, &material)?;
        Keyring::assemble(header_bytes, false, store_id, scrypt, salt, kek, material)
    }

    /// Unlocks an existing header. Runs scrypt for passphrase stores unless `known`
    /// (the keyring currently in use) has the same derivation inputs: blocking.
    pub(crate) fn unlock(
        bytes: Vec<u8>,
        path: &Path,
        source: &KeySource,
        known: Option<&Keyring>,
    ) -> Result<Keyring> {
        let header = parse_header(&bytes).map_err(|m| m.into_error(path))?;
        check_kind(&header, source, path)?;
        let reusable = known.filter(|k| {
            k.scrypt == header.scrypt && k.salt == header.salt && k.kind() == header.kdf
        });
        let kek = match reusable {
            Some(k) => Zeroizing::new(*k.kek),
            None => derive_kek(source, &header.scrypt.unwrap_or_default(), &header.salt)?,
        };
        let material = header
            .unwrap_keys(&kek)
            .map_err(|m| m.into_error(path))?
            .ok_or_else(|| wrong_key(path, known.is_some()))?;
        let Header {
            store_id,
            scrypt,
            salt,
            ..
        } = header;
        Keyring::assemble(bytes, true, store_id, scrypt, salt, kek, material)
    }

    /// The same store with `material` wrapped under a new key-encryption key.
    pub(crate) fn rewrap(
        &self,
        scrypt: Option<ScryptParams>,
        salt: [u8; SALT_LEN],
        kek: Key32,
        material: KeyMaterial,
    ) -> Result<Keyring> {
        let header_bytes = seal_header(&self.store_id, scrypt.as_ref(), &salt, &kek, &material)?;
        Keyring::assemble(
            header_bytes,
            false,
            self.store_id,
            scrypt,
            salt,
            kek,
            material,
        )
    }

    /// The same store and wrapping key with different data keys.
    pub(crate) fn with_material(&self, material: KeyMaterial) -> Result<Keyring> {
        self.rewrap(self.scrypt, self.salt, Zeroizing::new(*self.kek), material)
    }

    pub(crate) fn material_clone(&self) -> KeyMaterial {
        KeyMaterial {
            name_key: Zeroizing::new(*self.material.name_key),
            deks: self
                .material
                .deks
                .iter()
                .map(|(g, k)| (*g, Zeroizing::new(**k)))
                .collect(),
        }
    }

    fn assemble(
        header_bytes: Vec<u8>,
        on_disk: bool,
        store_id: [u8; STORE_ID_LEN],
        scrypt: Option<ScryptParams>,
        salt: [u8; SALT_LEN],
        kek: Key32,
        material: KeyMaterial,
    ) -> Result<Keyring> {
        let mut name_mac = HmacSha256::new_from_slice(&*material.name_key)
            .map_err(|_| Error::new(ErrorKind::Unexpected, "HMAC rejected a 32-byte key"))?;
        name_mac.update(ID_TAG_DOMAIN);
        Ok(Keyring {
            header_bytes,
            on_disk,
            store_id,
            scrypt,
            salt,
            kek,
            material,
            name_mac,
        })
    }

    fn kind(&self) -> KdfKind {
        if self.scrypt.is_some() {
            KdfKind::Scrypt
        } else {
            KdfKind::Raw
        }
    }

    /// The keyed hash naming a credential's record file.
    pub(crate) fn id_tag(&self, id: &CredentialId) -> [u8; TAG_LEN] {
        self.tag_of(id.as_str().as_bytes())
    }

    /// The tag the names index is sealed with, as records are with their id's tag. No id
    /// starts with a NUL byte, so it is no credential's tag.
    pub(crate) fn index_tag(&self) -> [u8; TAG_LEN] {
        self.tag_of(b"\0names-index")
    }

    fn tag_of(&self, name: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.name_mac.clone();
        mac.update(name);
        mac.finalize().into_bytes().into()
    }
}

fn check_kind(header: &Header, source: &KeySource, path: &Path) -> Result<()> {
    match (header.kdf, source.kind()) {
        (KdfKind::Scrypt, KdfKind::Raw) => Err(Error::config(
            "this credential store is protected by a passphrase, but a raw key was given; \
             set HIVE_CREDENTIAL_PASSPHRASE instead of HIVE_CREDENTIAL_KEY",
        )
        .with_context("file", path.display())),
        (KdfKind::Raw, KdfKind::Scrypt) => Err(Error::config(
            "this credential store is protected by a raw key, but a passphrase was given; \
             set HIVE_CREDENTIAL_KEY instead of HIVE_CREDENTIAL_PASSPHRASE",
        )
        .with_context("file", path.display())),
        _ => Ok(()),
    }
}

fn wrong_key(path: &Path, changed_elsewhere: bool) -> Error {
    let message = if changed_elsewhere {
        "could not unlock the credential store: its passphrase or key was changed by another \
         process; reopen the store with the new one"
    } else {
        "could not unlock the credential store: the passphrase or key is wrong \
         (or the store header was modified)"
    };
    Error::new(ErrorKind::Decryption, message).with_context("file", path.display())
}

impl Inner {
    /// The keys this handle holds now.
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
    pub(crate) fn read_keys(&self) -> Result<Arc<Keyring>> {
        let keys = self.cached_keys();
        if keys.on_disk {
            Ok(keys)
        } else {
            self.sync_keys(false)
        }
    }

    /// `keys`, or the keys re-read from the header when `keys` lacks the data key of
    /// `generation` (another process may have rotated it since the header was read).
    pub(crate) fn keys_for(&self, keys: &Arc<Keyring>, generation: u32) -> Result<Arc<Keyring>> {
        if keys.material.dek(generation).is_some() {
            Ok(Arc::clone(keys))
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
        match read_regular(&path, Role::Header, MAX_HEADER_LEN)? {
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
                    // Another store was put in this one's place: forget its names.
                    lock(&self.names).clear();
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
}
