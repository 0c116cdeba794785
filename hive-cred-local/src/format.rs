//! The on-disk format: the store header and credential records.
//!
//! Every file starts with the 8 magic bytes `HIVECRED`, a little-endian `u16` format
//! version and a kind byte (`H` header, `R` record).
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
//! Record:
//!
//! ```text
//! magic[8] version:u16 'R' generation:u32 record_version:u64 nonce[24]
//! XChaCha20-Poly1305(dek[generation], nonce,
//!                    aad = bytes before the nonce || store_id || HMAC(name_key, id),
//!                    hive_cred_core::codec stored form: binary, or JSON in records
//!                    written by earlier builds)
//! ```
//!
//! Record file (`<hex HMAC-SHA256(name_key, id)>.cred`): two slots, so that a save can
//! write the new record into the slot not holding the current one, in place, with one
//! `fdatasync` and no change to any metadata (see `storage`'s save):
//!
//! ```text
//! magic[8] version:u16 'S' slot_size:u32 reserved:u8 = 0
//! slot 0, slot 1: each slot_size bytes: len:u32 record[len] zero padding
//! ```
//!
//! `slot_size` is a multiple of 256 with room for the record to grow by half (an
//! ordinary credential's file is about 1 KiB, one page). A slot with `len` 0 is empty.
//! Of the slots that hold a record, the one with the highest record version (then
//! data-key generation) is the current one; a reader that cannot
//! authenticate it (a save was writing it when the reader or the system stopped) takes
//! the other. After each save the other slot is cleared, so the previous version does
//! not stay on disk. A file that is a single record (kind `'R'`, written by earlier
//! builds) is read as such and turned into a two-slot file by its next save.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hive_cred_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

use crate::key::{KEY_LEN, KdfKind, ScryptParams, fill_random};

/// Magic bytes at the start of every file of a store.
pub(crate) const MAGIC: &[u8; 8] = b"HIVECRED";
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 1;
const KIND_HEADER: u8 = b'H';
const KIND_RECORD: u8 = b'R';
const KIND_RECORD_FILE: u8 = b'S';
/// Largest record accepted (on read and write).
pub(crate) const MAX_RECORD_LEN: usize = 1 << 20;
/// Length of a two-slot record file's own header.
const FILE_HEADER_LEN: usize = 16;
/// Length of a slot's length field.
const SLOT_LEN_FIELD: usize = 4;
/// Slot sizes are multiples of this.
const SLOT_ALIGN: usize = 256;
/// Largest record file accepted (two slots for the largest record).
pub(crate) const MAX_RECORD_FILE_LEN: usize = FILE_HEADER_LEN + 2 * slot_size_for(MAX_RECORD_LEN);
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
            "{what} has unsupported format version {version}"
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
// Record files

/// The slot size of a new record file for a record of `record_len` bytes: room for the
/// record to grow by half before a save has to write a new file.
pub(crate) const fn slot_size_for(record_len: usize) -> usize {
    (SLOT_LEN_FIELD + record_len + record_len / 2).div_ceil(SLOT_ALIGN) * SLOT_ALIGN
}

/// Where a record sits in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The whole file is the record (files written by earlier builds, and the names
    /// index).
    Whole,
    /// Slot `index` (0 or 1) of a two-slot file with slots of `slot_size` bytes.
    Slot { index: usize, slot_size: usize },
}

impl Place {
    /// The slot a save writes next: the other slot of the same file. `None` for a whole-
    /// file record, or when `record_len` bytes do not fit a slot: the file is then
    /// written anew (see [`new_record_file`]).
    pub(crate) fn next_slot(self, record_len: usize) -> Option<(usize, usize)> {
        match self {
            Place::Slot { index, slot_size } if SLOT_LEN_FIELD + record_len <= slot_size => {
                Some((1 - index, slot_size))
            }
            _ => None,
        }
    }
}

/// A record found in a record file: parsed, not yet authenticated.
#[derive(Debug)]
pub(crate) struct Candidate<'a> {
    pub(crate) view: RecordView<'a>,
    /// The record's bytes within the file.
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) place: Place,
}

/// The records a record file holds (see [`record_candidates`]).
pub(crate) type Candidates<'a> = [Option<Candidate<'a>>; 2];

/// The records a record file holds, the current one (highest version, then data-key
/// generation) first: one or two. The caller authenticates them in this order and takes
/// the first that passes. Never panics.
pub(crate) fn record_candidates(file: &[u8]) -> std::result::Result<Candidates<'_>, Malformed> {
    if file.len() > PREAMBLE_LEN && file[10] == KIND_RECORD {
        let whole = Candidate {
            view: parse_record(file)?,
            range: 0..file.len(),
            place: Place::Whole,
        };
        return Ok([Some(whole), None]);
    }
    check_preamble(file, KIND_RECORD_FILE, FILE_HEADER_LEN)?;
    // The caller has checked that `file` holds the 4 bytes at `at`.
    let u32_at = |at: usize| {
        let mut field = [0u8; 4];
        field.copy_from_slice(&file[at..at + 4]);
        usize::try_from(u32::from_le_bytes(field)).unwrap_or(usize::MAX)
    };
    let slot_size = u32_at(PREAMBLE_LEN);
    let laid_out = file[PREAMBLE_LEN + 4] == 0
        && slot_size >= SLOT_LEN_FIELD + RECORD_MIN_LEN
        && slot_size % SLOT_ALIGN == 0
        && slot_size.checked_mul(2).map(|n| n + FILE_HEADER_LEN) == Some(file.len());
    if !laid_out {
        return Err(Malformed(if file.len() > MAX_RECORD_FILE_LEN {
            format!(
                "credential record file is {} bytes, over the limit of {MAX_RECORD_FILE_LEN}",
                file.len()
            )
        } else {
            "credential record file is truncated or its layout is damaged".to_owned()
        }));
    }
    let mut found = [None, None];
    for (index, found) in found.iter_mut().enumerate() {
        let start = FILE_HEADER_LEN + index * slot_size;
        let len = u32_at(start);
        if len == 0 || len > slot_size - SLOT_LEN_FIELD {
            continue;
        }
        let range = start + SLOT_LEN_FIELD..start + SLOT_LEN_FIELD + len;
        // A slot that does not parse is one a save was writing when it was read or when
        // the system stopped (or damage): the other slot is read.
        if let Ok(view) = parse_record(&file[range.clone()]) {
            *found = Some(Candidate {
                view,
                range,
                place: Place::Slot { index, slot_size },
            });
        }
    }
    let newest =
        |c: &Option<Candidate<'_>>| c.as_ref().map(|c| (c.view.version, c.view.generation));
    if newest(&found[1]) > newest(&found[0]) {
        found.swap(0, 1);
    }
    if found[0].is_none() {
        return Err(Malformed(
            "credential record file holds no complete record".to_owned(),
        ));
    }
    Ok(found)
}

/// A new two-slot record file holding `record` in slot 0.
pub(crate) fn new_record_file(record: &[u8]) -> Vec<u8> {
    let slot_size = slot_size_for(record.len());
    let mut file = vec![0u8; FILE_HEADER_LEN + 2 * slot_size];
    file[..MAGIC.len()].copy_from_slice(MAGIC);
    file[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    file[10] = KIND_RECORD_FILE;
    // The slot size is below 4 GiB: records are at most MAX_RECORD_LEN.
    file[PREAMBLE_LEN..PREAMBLE_LEN + 4].copy_from_slice(&(slot_size as u32).to_le_bytes());
    fill_slot(
        &mut file[FILE_HEADER_LEN..FILE_HEADER_LEN + slot_size],
        record,
    );
    file
}

/// The offset and contents of slot `index` of a file with `slot_size`-byte slots holding
/// `record` (or nothing, when `record` is empty). The record must fit (see
/// [`Place::next_slot`]).
#[cfg_attr(not(unix), allow(dead_code))] // saves in place on Unix only
pub(crate) fn slot_write(index: usize, slot_size: usize, record: &[u8]) -> (u64, Vec<u8>) {
    let mut slot = vec![0u8; slot_size];
    fill_slot(&mut slot, record);
    ((FILE_HEADER_LEN + index * slot_size) as u64, slot)
}

fn fill_slot(slot: &mut [u8], record: &[u8]) {
    slot[..SLOT_LEN_FIELD].copy_from_slice(&(record.len() as u32).to_le_bytes());
    slot[SLOT_LEN_FIELD..SLOT_LEN_FIELD + record.len()].copy_from_slice(record);
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
        future[8] = 2;
        assert!(reason(&future).contains("newer hive-cred"));
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

    #[test]
    fn slot_sizes_leave_room_to_grow_and_the_current_record_is_found() {
        assert_eq!(slot_size_for(0), 256);
        assert_eq!(slot_size_for(168), 256, "4 + 168 + 84 = 256");
        assert_eq!(slot_size_for(170), 512);
        assert_eq!(
            MAX_RECORD_FILE_LEN,
            16 + 2 * (4 + MAX_RECORD_LEN + MAX_RECORD_LEN / 2).div_ceil(256) * 256
        );
        let record = seal_record(&DEK, 1, 1, &SID, &TAG, &[0; 300]).unwrap();
        assert_eq!(record.len(), 363);
        let file = new_record_file(&record);
        assert_eq!(file.len(), 16 + 2 * 768);
        let [first, second] = record_candidates(&file).unwrap();
        let first = first.unwrap();
        assert_eq!(&file[first.range.clone()], &record[..]);
        assert_eq!(
            first.place,
            Place::Slot {
                index: 0,
                slot_size: 768
            }
        );
        assert!(second.is_none());
        assert_eq!(first.place.next_slot(764), Some((1, 768)));
        assert_eq!(first.place.next_slot(765), None, "does not fit");
        assert_eq!(Place::Whole.next_slot(10), None);
    }

    #[test]
    fn the_higher_version_then_generation_is_current() {
        let file_of = |a: (u32, u64), b: (u32, u64)| {
            let first = seal_record(&DEK, a.0, a.1, &SID, &TAG, b"a").unwrap();
            let second = seal_record(&DEK, b.0, b.1, &SID, &TAG, b"b").unwrap();
            let mut file = new_record_file(&first);
            let (at, slot) = slot_write(1, slot_size_for(first.len()), &second);
            file[at as usize..at as usize + slot.len()].copy_from_slice(&slot);
            file
        };
        let current = |file: &[u8]| {
            let [c, other] = record_candidates(file).unwrap();
            let (c, other) = (c.unwrap(), other.unwrap());
            assert_ne!(c.place, other.place);
            (c.view.generation, c.view.version)
        };
        assert_eq!(current(&file_of((1, 5), (1, 6))), (1, 6));
        assert_eq!(current(&file_of((1, 6), (1, 5))), (1, 6));
        assert_eq!(
            current(&file_of((2, 5), (1, 5))),
            (2, 5),
            "a rotation's rewrite"
        );
        assert_eq!(current(&file_of((1, 5), (2, 5))), (2, 5));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        #[test]
        fn record_files_with_damaged_slots_never_panic(
            len0 in 0u32..9000,
            len1 in proptest::prelude::any::<u32>(),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            at in 0usize..528,
        ) {
            let record = seal_record(&DEK, 1, 1, &SID, &TAG, b"x").unwrap();
            let mut file = new_record_file(&record);
            assert_eq!(file.len(), 528, "two 256-byte slots");
            let (at1, slot) = slot_write(1, 256, &record);
            file[at1 as usize..at1 as usize + slot.len()].copy_from_slice(&slot);
            file[16..20].copy_from_slice(&len0.to_le_bytes());
            file[272..276].copy_from_slice(&len1.to_le_bytes());
            let end = (at + noise.len()).min(file.len());
            file[at..end].copy_from_slice(&noise[..end - at]);
            crate::fuzzing::decode_record(&file);
            crate::fuzzing::decode_record(&file[..at]);
        }

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
