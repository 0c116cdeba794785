//! The unlocked key material of an open store.

use std::path::Path;

use hive_cred_core::{CredentialId, Error, ErrorKind, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::format::{
    Header, Key32, KeyMaterial, SALT_LEN, STORE_ID_LEN, TAG_LEN, parse_header, seal_header,
};
use crate::key::{KEY_LEN, KdfKind, KeySource, ScryptParams, derive_kek, fill_random};

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

    /// The same store and data keys wrapped under a new key-encryption key.
    pub(crate) fn rewrap(
        &self,
        scrypt: Option<ScryptParams>,
        salt: [u8; SALT_LEN],
        kek: Key32,
    ) -> Result<Keyring> {
        let material = self.material_clone();
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
        let header_bytes = seal_header(
            &self.store_id,
            self.scrypt.as_ref(),
            &self.salt,
            &self.kek,
            &material,
        )?;
        Keyring::assemble(
            header_bytes,
            false,
            self.store_id,
            self.scrypt,
            self.salt,
            Zeroizing::new(*self.kek),
            material,
        )
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
