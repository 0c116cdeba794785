//! The on-disk format: the store header and credential records.
//!
//! Every file starts with the 8 magic bytes `HIVECRED`, a little-endian `u16` format
//! version and a kind byte (`H` header, `R` record). This build writes and reads format
//! version 2 only. Version 1 was written by development builds that were never released
//! (two-slot record files and JSON plaintexts); such files are refused with an error
//! saying so, never misread.
//!
//! Header (`store.header`):
//!
//! ```text
//! magic[8] version:u16 'H' store_id[16] kdf:u8 log_n:u8 r:u32 p:u32 salt[32]
//! nonce[24] XChaCha20-Poly1305(kek, nonce, aad = all bytes before the nonce,
//!                              name_key[32] count:u8 (generation:u32 dek[32]){count})
//! ```
//!
//! The first data key in the wrapped list is the current one; a second one is present
//! only while a data-key rotation is in progress.
//!
//! Record file (`<hex HMAC-SHA256(name_key, id)>.cred`), and the names index, which is
//! sealed the same way under a tag no id can have:
//!
//! ```text
//! magic[8] version:u16 'R' generation:u32 record_version:u64 nonce[24]
//! XChaCha20-Poly1305(dek[generation], nonce,
//!                    aad = bytes before the nonce || store_id || HMAC(name_key, id),
//!                    hive_cred_core::codec binary stored form)
//! ```
//!
//! A record file is replaced whole by every save (see `fs::write_atomic`).

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hive_cred_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

use crate::key::{KEY_LEN, KdfKind, ScryptParams, fill_random};

/// Magic bytes at the start of every file of a store.
pub(crate) const MAGIC: &[u8; 8] = b"HIVECRED";
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 2;
const KIND_HEADER: u8 = b'H';
const KIND_RECORD: u8 = b'R';
/// Largest record file accepted (on read and write).
pub(crate) const MAX_RECORD_LEN: usize = 1 << 20;
/// Largest header accepted.
pub(crate) const MAX_HEADER_LEN: usize = 4096;

pub(crate) const STORE_ID_LEN: usize = 16;
pub(crate) const SALT_LEN: usize = 32;
pub(crate) const TAG_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const AEAD_TAG_LEN: usize = 16;
const PREAMBLE_LEN: usize = 11;

const RECORD_PREFIX_LEN: usize = PREAMBLE_LEN + 4 + 8;
const RECORD_MIN_LEN: usize = RECORD_PREFIX_LEN + NONCE_LEN + AEAD_TAG_LEN;

const HEADER_AAD_LEN: usize = PREAMBLE_LEN + STORE_ID_LEN + 1 + 1 + 4 + 4 + SALT_LEN;
const MAX_WRAPPED_KEYS: usize = 4;

/// A 256-bit key that zeroizes itself.
pub(crate) type Key32 = Zeroizing<[u8; KEY_LEN]>;

/// Why bytes are not a valid file of this format. Turned into `ErrorKind::Corrupted`
/// naming the file by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl Malformed {
    pub(crate) fn into_error(self, file: &std::path::Path) -> Error {
        Error::corrupted(self.0).with_context("file", file.display())
    }
}

fn check_preamble(bytes: &[u8], kind: u8, min_len: usize) -> std::result::Result<(), Malformed> {
    let what = if kind == KIND_HEADER {
        "store header"
    } else {
        "credential record"
    };
    if bytes.is_empty() {
        return Err(Malformed(format!("{what} file is empty")));
    }
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(Malformed(format!(
            "not a hive-cred {what}: unknown file format"
        )));
    }
    if bytes.len() < PREAMBLE_LEN {
        return Err(Malformed(format!("{what} is truncated")));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > FORMAT_VERSION {
        return Err(Malformed(format!(
            "{what} has format version {version}, written by a newer hive-cred; this build \
             reads version {FORMAT_VERSION}: upgrade hive-cred"
        )));
    }
    if version != FORMAT_VERSION {
        return Err(Malformed(format!(
            "{what} has format version {version}, written by an unreleased development \
             build of hive-cred; this build reads version {FORMAT_VERSION} only: move the \
             store directory aside and save the credentials again into a new store"
        )));
    }
    if bytes[10] != kind {
        return Err(Malformed(format!(
            "not a hive-cred {what}: wrong file kind"
        )));
    }
    if bytes.len() < min_len {
        return Err(Malformed(format!("{what} is truncated")));
    }
    Ok(())
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

fn encryption_failed() -> Error {
    Error::new(ErrorKind::Unexpected, "encryption failed")
}

// ---------------------------------------------------------------------------------------
// Records

/// A parsed, not yet authenticated record.
#[derive(Debug)]
pub(crate) struct RecordView<'a> {
    /// Generation of the data key that encrypted it.
    pub(crate) generation: u32,
    /// Stored version (check-and-set counter).
    pub(crate) version: u64,
    prefix: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// Parses a record's framing. Never panics; authenticity is checked by [`open_record`].
pub(crate) fn parse_record(bytes: &[u8]) -> std::result::Result<RecordView<'_>, Malformed> {
    check_preamble(bytes, KIND_RECORD, RECORD_MIN_LEN)?;
    if bytes.len() > MAX_RECORD_LEN {
        return Err(Malformed(format!(
            "credential record is {} bytes, over the limit of {MAX_RECORD_LEN}",
            bytes.len()
        )));
    }
    let (prefix, rest) = bytes.split_at(RECORD_PREFIX_LEN);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let mut generation = [0u8; 4];
    generation.copy_from_slice(&prefix[PREAMBLE_LEN..PREAMBLE_LEN + 4]);
    let mut version = [0u8; 8];
    version.copy_from_slice(&prefix[PREAMBLE_LEN + 4..]);
    Ok(RecordView {
        generation: u32::from_le_bytes(generation),
        version: u64::from_le_bytes(version),
        prefix,
        nonce,
        ciphertext,
    })
}

fn record_aad(
    prefix: &[u8],
    store_id: &[u8; STORE_ID_LEN],
    id_tag: &[u8; TAG_LEN],
) -> [u8; RECORD_PREFIX_LEN + STORE_ID_LEN + TAG_LEN] {
    let mut aad = [0u8; RECORD_PREFIX_LEN + STORE_ID_LEN + TAG_LEN];
    aad[..RECORD_PREFIX_LEN].copy_from_slice(prefix);
    aad[RECORD_PREFIX_LEN..RECORD_PREFIX_LEN + STORE_ID_LEN].copy_from_slice(store_id);
    aad[RECORD_PREFIX_LEN + STORE_ID_LEN..].copy_from_slice(id_tag);
    aad
}

/// Encrypts a record under `dek` with a fresh random nonce.
pub(crate) fn seal_record(
    dek: &[u8; KEY_LEN],
    generation: u32,
    version: u64,
    store_id: &[u8; STORE_ID_LEN],
    id_tag: &[u8; TAG_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let total = RECORD_MIN_LEN + plaintext.len();
    if total > MAX_RECORD_LEN {
        return Err(Error::invalid_input(format!(
            "credential is too large to store: {total} bytes encrypted, the limit is {MAX_RECORD_LEN}"
        )));
    }
    let nonce = random_nonce()?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(KIND_RECORD);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    let aad = record_aad(&out, store_id, id_tag);
    // Encrypt in a zeroized scratch buffer, then append the ciphertext.
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + AEAD_TAG_LEN));
    buf.extend_from_slice(plaintext);
    cipher(dek)
        .encrypt_in_place(XNonce::from_slice(&nonce), &aad, &mut *buf)
        .map_err(|_| encryption_failed())?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Authenticates and decrypts a record. `None` when authentication fails (wrong key,
/// wrong id, wrong store, or any modified byte).
pub(crate) fn open_record(
    view: &RecordView<'_>,
    dek: &[u8; KEY_LEN],
    store_id: &[u8; STORE_ID_LEN],
    id_tag: &[u8; TAG_LEN],
) -> Option<Zeroizing<Vec<u8>>> {
    let aad = record_aad(view.prefix, store_id, id_tag);
    let mut buf = Zeroizing::new(view.ciphertext.to_vec());
    cipher(dek)
        .decrypt_in_place(XNonce::from_slice(view.nonce), &aad, &mut *buf)
        .ok()?;
    Some(buf)
}

// ---------------------------------------------------------------------------------------
// Header

/// Key material wrapped in the header.
pub(crate) struct KeyMaterial {
    /// Key of the HMAC that names record files. Never rotated.
    pub(crate) name_key: Key32,
    /// Data keys by generation; the first is current (used for writes).
    pub(crate) deks: Vec<(u32, Key32)>,
}

impl KeyMaterial {
    pub(crate) fn current(&self) -> (u32, &[u8; KEY_LEN]) {
        let (generation, key) = &self.deks[0];
        (*generation, key)
    }

    pub(crate) fn dek(&self, generation: u32) -> Option<&[u8; KEY_LEN]> {
        self.deks
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, k)| &**k)
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1 + self.deks.len() * 36));
        out.extend_from_slice(&*self.name_key);
        out.push(self.deks.len() as u8);
        for (generation, key) in &self.deks {
            out.extend_from_slice(&generation.to_le_bytes());
            out.extend_from_slice(&**key);
        }
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, Malformed> {
        let bad = || Malformed("store header holds malformed key material".into());
        if bytes.len() < KEY_LEN + 1 {
            return Err(bad());
        }
        let mut name_key = Zeroizing::new([0u8; KEY_LEN]);
        name_key.copy_from_slice(&bytes[..KEY_LEN]);
        let count = usize::from(bytes[KEY_LEN]);
        let rest = &bytes[KEY_LEN + 1..];
        if count == 0 || count > MAX_WRAPPED_KEYS || rest.len() != count * (4 + KEY_LEN) {
            return Err(bad());
        }
        let deks = rest
            .chunks_exact(4 + KEY_LEN)
            .map(|chunk| {
                let mut generation = [0u8; 4];
                generation.copy_from_slice(&chunk[..4]);
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                key.copy_from_slice(&chunk[4..]);
                (u32::from_le_bytes(generation), key)
            })
            .collect();
        Ok(KeyMaterial { name_key, deks })
    }
}

/// A parsed, not yet authenticated store header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) store_id: [u8; STORE_ID_LEN],
    pub(crate) kdf: KdfKind,
    /// `Some` for passphrase stores.
    pub(crate) scrypt: Option<ScryptParams>,
    pub(crate) salt: [u8; SALT_LEN],
    aad: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    wrapped: Vec<u8>,
}

/// Parses a header. Rejects scrypt parameters over the caps of [`ScryptParams`].
pub(crate) fn parse_header(bytes: &[u8]) -> std::result::Result<Header, Malformed> {
    check_preamble(
        bytes,
        KIND_HEADER,
        HEADER_AAD_LEN + NONCE_LEN + AEAD_TAG_LEN,
    )?;
    if bytes.len() > MAX_HEADER_LEN {
        return Err(Malformed("store header is too large".into()));
    }
    let mut at = PREAMBLE_LEN;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let mut store_id = [0u8; STORE_ID_LEN];
    store_id.copy_from_slice(take(STORE_ID_LEN));
    let kdf_byte = take(1)[0];
    let log_n = take(1)[0];
    let mut r = [0u8; 4];
    r.copy_from_slice(take(4));
    let mut p = [0u8; 4];
    p.copy_from_slice(take(4));
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(take(SALT_LEN));
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(take(NONCE_LEN));
    let (kdf, scrypt) = match kdf_byte {
        0 => (KdfKind::Raw, None),
        1 => {
            let params =
                ScryptParams::from_header(log_n, u32::from_le_bytes(r), u32::from_le_bytes(p))
                    .map_err(|why| {
                        Malformed(format!(
                            "store header asks for scrypt cost that is refused ({why})"
                        ))
                    })?;
            (KdfKind::Scrypt, Some(params))
        }
        other => {
            return Err(Malformed(format!(
                "store header names unknown key derivation {other}"
            )));
        }
    };
    Ok(Header {
        store_id,
        kdf,
        scrypt,
        salt,
        aad: bytes[..HEADER_AAD_LEN].to_vec(),
        nonce,
        wrapped: bytes[HEADER_AAD_LEN + NONCE_LEN..].to_vec(),
    })
}

impl Header {
    /// Unwraps the key material. `Ok(None)` when the key-encryption key is wrong (or the
    /// header was modified).
    pub(crate) fn unwrap_keys(
        &self,
        kek: &[u8; KEY_LEN],
    ) -> std::result::Result<Option<KeyMaterial>, Malformed> {
        let mut buf = Zeroizing::new(self.wrapped.clone());
        if cipher(kek)
            .decrypt_in_place(XNonce::from_slice(&self.nonce), &self.aad, &mut *buf)
            .is_err()
        {
            return Ok(None);
        }
        KeyMaterial::decode(&buf).map(Some)
    }
}

/// Builds a header wrapping `material` under `kek`.
pub(crate) fn seal_header(
    store_id: &[u8; STORE_ID_LEN],
    scrypt: Option<&ScryptParams>,
    salt: &[u8; SALT_LEN],
    kek: &[u8; KEY_LEN],
    material: &KeyMaterial,
) -> Result<Vec<u8>> {
    if material.deks.is_empty() || material.deks.len() > MAX_WRAPPED_KEYS {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "store header must wrap between 1 and 4 data keys",
        ));
    }
    let mut out = Vec::with_capacity(HEADER_AAD_LEN + NONCE_LEN + 256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(KIND_HEADER);
    out.extend_from_slice(store_id);
    match scrypt {
        None => {
            out.push(KdfKind::Raw as u8);
            out.push(0);
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        Some(params) => {
            out.push(KdfKind::Scrypt as u8);
            out.push(params.log_n());
            out.extend_from_slice(&params.r().to_le_bytes());
            out.extend_from_slice(&params.p().to_le_bytes());
        }
    }
    out.extend_from_slice(salt);
    let nonce = random_nonce()?;
    let mut buf = material.encode();
    cipher(kek)
        .encrypt_in_place(XNonce::from_slice(&nonce), &out, &mut *buf)
        .map_err(|_| encryption_failed())?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: [u8; STORE_ID_LEN] = [3; STORE_ID_LEN];
    const TAG: [u8; TAG_LEN] = [9; TAG_LEN];
    const DEK: [u8; KEY_LEN] = [5; KEY_LEN];

    #[test]
    fn record_round_trip_and_binding() {
        let sealed = seal_record(&DEK, 7, 42, &SID, &TAG, b"hello").unwrap();
        let view = parse_record(&sealed).unwrap();
        assert_eq!((view.generation, view.version), (7, 42));
        assert_eq!(&**open_record(&view, &DEK, &SID, &TAG).unwrap(), b"hello");
        assert!(
            open_record(&view, &[6; KEY_LEN], &SID, &TAG).is_none(),
            "key"
        );
        assert!(
            open_record(&view, &DEK, &[4; STORE_ID_LEN], &TAG).is_none(),
            "store"
        );
        assert!(
            open_record(&view, &DEK, &SID, &[8; TAG_LEN]).is_none(),
            "id"
        );
        // Nonces are fresh per write.
        let again = seal_record(&DEK, 7, 42, &SID, &TAG, b"hello").unwrap();
        assert_ne!(sealed, again);
    }

    #[test]
    fn changing_the_version_field_breaks_authentication() {
        let mut sealed = seal_record(&DEK, 1, 1, &SID, &TAG, b"x").unwrap();
        sealed[PREAMBLE_LEN + 4] = 2;
        let view = parse_record(&sealed).unwrap();
        assert_eq!(view.version, 2);
        assert!(open_record(&view, &DEK, &SID, &TAG).is_none());
    }

    #[test]
    fn malformed_records_are_named() {
        let sealed = seal_record(&DEK, 1, 1, &SID, &TAG, b"x").unwrap();
        let reason = |b: &[u8]| parse_record(b).unwrap_err().0;
        assert!(reason(b"").contains("empty"));
        assert!(reason(&sealed[..20]).contains("truncated"));
        assert!(reason(&sealed[..5]).contains("truncated"));
        assert!(reason(b"{\"json\": true}").contains("unknown file format"));
        let mut future = sealed.clone();
        future[8] = 3;
        assert!(reason(&future).contains("newer hive-cred"));
        // Version 1 (two-slot files of unreleased builds) is refused, not misread.
        let mut old = sealed.clone();
        old[8] = 1;
        assert!(reason(&old).contains("unreleased development build"));
        let mut kind = sealed.clone();
        kind[10] = b'H';
        assert!(reason(&kind).contains("wrong file kind"));
    }

    #[test]
    fn header_round_trip_wrong_kek_and_caps() {
        let material = KeyMaterial {
            name_key: Zeroizing::new([1; KEY_LEN]),
            deks: vec![
                (2, Zeroizing::new([2; KEY_LEN])),
                (1, Zeroizing::new([3; KEY_LEN])),
            ],
        };
        let params = ScryptParams::new(10, 8, 1).unwrap();
        let kek = [7; KEY_LEN];
        let bytes = seal_header(&SID, Some(&params), &[4; SALT_LEN], &kek, &material).unwrap();
        let header = parse_header(&bytes).unwrap();
        assert_eq!(header.kdf, KdfKind::Scrypt);
        assert_eq!(header.scrypt, Some(params));
        let back = header.unwrap_keys(&kek).unwrap().unwrap();
        assert_eq!(*back.name_key, [1; KEY_LEN]);
        assert_eq!(back.current().0, 2);
        assert_eq!(back.dek(1), Some(&[3; KEY_LEN]));
        assert!(back.dek(3).is_none());
        assert!(header.unwrap_keys(&[8; KEY_LEN]).unwrap().is_none());

        // A header asking for 2^30 iterations is refused before any derivation.
        let mut absurd = bytes.clone();
        absurd[PREAMBLE_LEN + STORE_ID_LEN + 1] = 30;
        let err = parse_header(&absurd).unwrap_err();
        assert!(err.0.contains("refused"), "{err:?}");
        // Lowering the cost is caught by authentication (params are associated data).
        let mut cheaper = bytes;
        cheaper[PREAMBLE_LEN + STORE_ID_LEN + 1] = 9;
        let header = parse_header(&cheaper).unwrap();
        assert!(header.unwrap_keys(&kek).unwrap().is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        #[test]
        fn seal_open_round_trips(
            plaintext in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            generation in proptest::prelude::any::<u32>(),
            version in proptest::prelude::any::<u64>(),
        ) {
            let sealed = seal_record(&DEK, generation, version, &SID, &TAG, &plaintext).unwrap();
            let view = parse_record(&sealed).unwrap();
            proptest::prop_assert_eq!((view.generation, view.version), (generation, version));
            let opened = open_record(&view, &DEK, &SID, &TAG).unwrap();
            proptest::prop_assert_eq!(&opened[..], &plaintext[..]);
        }

        #[test]
        fn every_single_bit_flip_is_detected(
            plaintext in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let sealed = seal_record(&DEK, 1, 5, &SID, &TAG, &plaintext).unwrap();
            for bit in 0..sealed.len() * 8 {
                let mut flipped = sealed.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let opened = parse_record(&flipped)
                    .ok()
                    .and_then(|view| open_record(&view, &DEK, &SID, &TAG));
                proptest::prop_assert!(opened.is_none(), "bit {} went undetected", bit);
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            crate::fuzzing::decode_record(&bytes);
            crate::fuzzing::decode_header(&bytes);
            for kind in [KIND_RECORD, KIND_HEADER] {
                let mut framed = MAGIC.to_vec();
                framed.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
                framed.push(kind);
                framed.extend_from_slice(&bytes);
                crate::fuzzing::decode_record(&framed);
                crate::fuzzing::decode_header(&framed);
            }
        }
    }
}
