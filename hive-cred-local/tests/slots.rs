//! Record files with two slots: saves in place, what a reader makes of a file a save was
//! writing, files of earlier builds, records that outgrow their slots.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use hive_cred_core::{CredentialStorage, ErrorKind};
use hive_cred_local::LocalStorage;

/// The only record file of the store in `dir`.
fn only_record_file(dir: &Path) -> PathBuf {
    let mut files = record_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

/// A store holding the credential `k` with the value `value`, and its record file.
async fn store_with_k(value: &str) -> (tempfile::TempDir, LocalStorage, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), raw_key(1)).await;
    s.save(&api_key("k", value)).await.unwrap();
    let file = only_record_file(tmp.path());
    (tmp, s, file)
}

/// Saves `k` with the value `value` as the next version.
async fn save_k(s: &LocalStorage, value: &str) {
    let mut c = s.load(&id("k")).await.unwrap().unwrap();
    c.set_key("api_key", value.to_string(), None).unwrap();
    s.save(&c).await.unwrap();
}

/// The bytes of the current record of a record file holding one.
fn the_record(file: &[u8]) -> Vec<u8> {
    let records = record_ranges(file);
    assert_eq!(records.len(), 1);
    file[records[0].clone()].to_vec()
}

/// The slot size of a record file (bytes 11..15 of its header).
fn slot_size(file: &[u8]) -> usize {
    u32::from_le_bytes(file[11..15].try_into().unwrap()) as usize
}

/// `file` with slot `slot` holding `record` (nothing when empty).
fn with_slot(file: &[u8], slot: usize, record: &[u8]) -> Vec<u8> {
    let size = slot_size(file);
    let start = 16 + slot * size;
    let mut out = file.to_vec();
    out[start..start + size].fill(0);
    out[start..start + 4].copy_from_slice(&(record.len() as u32).to_le_bytes());
    out[start + 4..start + 4 + record.len()].copy_from_slice(record);
    out
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

#[tokio::test]
async fn saves_alternate_slots_in_place_and_clear_the_previous_version() {
    let (_tmp, s, file) = store_with_k("value-1").await;
    let first = fs::read(&file).unwrap();
    let size = slot_size(&first);
    let record_len = record_ranges(&first)[0].len();
    assert!(
        size % 256 == 0 && size >= 4 + record_len + record_len / 2,
        "slot size {size} for a record of {record_len} bytes"
    );
    assert_eq!(
        first.len(),
        16 + 2 * size,
        "two slots after a 16-byte header"
    );
    assert_eq!(&first[..8], b"HIVECRED");
    assert_eq!(first[10], b'S');
    #[cfg(unix)]
    let ino = inode(&file);

    for round in 2..6u64 {
        save_k(&s, &format!("value-{round}")).await;
        let bytes = fs::read(&file).unwrap();
        assert_eq!(bytes.len(), first.len());
        let records = record_ranges(&bytes);
        assert_eq!(records.len(), 1, "round {round}: the other slot is cleared");
        // Slot 0 starts at 16, slot 1 after it: saves alternate.
        let expected_start = if round % 2 == 0 {
            16 + size + 4
        } else {
            16 + 4
        };
        assert_eq!(records[0].start, expected_start, "round {round}");
        // Everything outside the header and the current record is zero: no older
        // ciphertext is left in the file.
        let stray = bytes
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                **b != 0 && *i >= 16 && !(records[0].start - 4..records[0].end).contains(i)
            })
            .count();
        assert_eq!(stray, 0, "round {round}");
        assert_eq!(value_of(&s, "k").await, format!("value-{round}"));
        #[cfg(unix)]
        assert_eq!(inode(&file), ino, "round {round}: rewritten in place");
    }
    assert_eq!(s.load(&id("k")).await.unwrap().unwrap().version(), 5);
}

#[tokio::test]
async fn a_slot_a_save_was_writing_is_passed_over_for_the_other() {
    let (tmp, _s, file) = store_with_k("old").await;
    let bytes = fs::read(&file).unwrap();
    let current = record_ranges(&bytes).remove(0);
    let record = bytes[current.clone()].to_vec();

    // The other slot as a save interrupted halfway left it: the new record's first half
    // (its version field already says 2), then zeros.
    let mut newer = record.clone();
    newer[11 + 4] = 2; // the record version (little-endian u64 at 15..23)
    let half = newer.len() / 2;
    let mut torn = newer.clone();
    torn[half..].fill(0);
    let mut torn_file = with_slot(&bytes, 1, &torn);
    // The length field was written with the first half.
    let slot_one = 16 + slot_size(&bytes);
    torn_file[slot_one..slot_one + 4].copy_from_slice(&(newer.len() as u32).to_le_bytes());
    fs::write(&file, &torn_file).unwrap();
    let fresh = open(tmp.path(), raw_key(1)).await;
    assert_eq!(value_of(&fresh, "k").await, "old");
    assert_eq!(fresh.load(&id("k")).await.unwrap().unwrap().version(), 1);

    // Whole but not authentic (the version field of a copy raised): passed over too.
    fs::write(&file, with_slot(&bytes, 1, &newer)).unwrap();
    assert_eq!(value_of(&fresh, "k").await, "old");

    // The next save goes into the slot that is not current, and succeeds.
    let c = fresh.load(&id("k")).await.unwrap().unwrap();
    fresh.save(&c).await.unwrap();
    assert_eq!(fresh.load(&id("k")).await.unwrap().unwrap().version(), 2);
    assert_eq!(record_ranges(&fs::read(&file).unwrap()).len(), 1);
}

#[tokio::test]
async fn with_both_slots_whole_the_higher_version_is_current() {
    let (tmp, s, file) = store_with_k("v1").await;
    let v1 = fs::read(&file).unwrap();
    let v1_record = the_record(&v1);
    save_k(&s, "v2").await;
    let v2 = fs::read(&file).unwrap();
    let v2_record = the_record(&v2);

    // A crash after the new slot was flushed but before the old one was cleared on
    // disk leaves both; either order of slots reads version 2.
    for (zero, one) in [(&v1_record, &v2_record), (&v2_record, &v1_record)] {
        let both = with_slot(&with_slot(&v2, 0, zero), 1, one);
        assert_eq!(record_ranges(&both).len(), 2);
        fs::write(&file, &both).unwrap();
        let fresh = open(tmp.path(), raw_key(1)).await;
        assert_eq!(value_of(&fresh, "k").await, "v2");
        let current = fresh.load(&id("k")).await.unwrap().unwrap();
        assert_eq!(current.version(), 2);
        // The next save overwrites the older slot and clears the other one.
        fresh.save(&current).await.unwrap();
        assert_eq!(fresh.load(&id("k")).await.unwrap().unwrap().version(), 3);
        assert_eq!(record_ranges(&fs::read(&file).unwrap()).len(), 1);
        fs::write(&file, &v2).unwrap();
    }
}

#[tokio::test]
async fn with_no_slot_authentic_the_load_fails_and_names_the_file() {
    let (_tmp, s, file) = store_with_k("v").await;
    let bytes = fs::read(&file).unwrap();
    let current = record_ranges(&bytes).remove(0);
    let mut damaged = bytes.clone();
    damaged[current.end - 1] ^= 1;
    fs::write(&file, &damaged).unwrap();
    let err = s.load(&id("k")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err}");
    assert_eq!(
        err.context_value("file"),
        Some(file.display().to_string().as_str())
    );
    // A save cannot check the stored version: it fails too, and changes nothing.
    let err = s.save(&api_key("k", "new")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decryption, "{err}");
    assert_eq!(fs::read(&file).unwrap(), damaged);

    // Both slots empty: nothing to read.
    fs::write(&file, with_slot(&bytes, 0, &[])).unwrap();
    let err = s.load(&id("k")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert!(err.message().contains("no complete record"), "{err}");

    // The header's layout fields are checked.
    for (at, value) in [(11, 0x11u8), (15, 1)] {
        let mut bad = bytes.clone();
        bad[at] ^= value;
        fs::write(&file, &bad).unwrap();
        let err = s.load(&id("k")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "byte {at}: {err}");
    }
}

#[tokio::test]
async fn a_single_record_file_of_an_earlier_build_is_read_and_converted_by_the_next_save() {
    let (tmp, _s, file) = store_with_k("from-before").await;
    let bytes = fs::read(&file).unwrap();
    // Earlier builds wrote the record alone as the file.
    let record = the_record(&bytes);
    assert_eq!(record[10], b'R');
    fs::write(&file, &record).unwrap();
    // An earlier build's spare file, holding an older record: removed by the next write.
    fs::write(tmp.path().join(".spare"), &record).unwrap();

    let fresh = open(tmp.path(), raw_key(1)).await;
    assert_eq!(value_of(&fresh, "k").await, "from-before");
    let c = fresh.load(&id("k")).await.unwrap().unwrap();
    fresh.save(&c).await.unwrap();
    let converted = fs::read(&file).unwrap();
    assert_eq!(converted[10], b'S');
    assert_eq!(converted.len(), 16 + 2 * slot_size(&converted));
    assert_eq!(
        converted.len(),
        bytes.len(),
        "laid out as a new save lays it out"
    );
    assert_eq!(fresh.load(&id("k")).await.unwrap().unwrap().version(), 2);
    assert!(!tmp.path().join(".spare").exists());
}

#[tokio::test]
async fn a_record_that_outgrows_its_slots_moves_to_a_larger_file() {
    let (_tmp, s, file) = store_with_k("small").await;
    #[cfg(unix)]
    let small_inode = inode(&file);

    let big = "b".repeat(10_000);
    save_k(&s, &big).await;
    let bytes = fs::read(&file).unwrap();
    let size = slot_size(&bytes);
    assert!(size > 15_000 && size % 256 == 0, "slot size {size}");
    assert_eq!(bytes.len(), 16 + 2 * size);
    assert_eq!(value_of(&s, "k").await, big);
    #[cfg(unix)]
    let big_inode = inode(&file);
    #[cfg(unix)]
    assert_ne!(big_inode, small_inode, "a new file");

    // Shrinking again fits the large slots: in place.
    save_k(&s, "small again").await;
    assert_eq!(fs::read(&file).unwrap().len(), bytes.len());
    assert_eq!(value_of(&s, "k").await, "small again");
    #[cfg(unix)]
    assert_eq!(inode(&file), big_inode);
}

#[cfg(unix)]
#[tokio::test]
async fn a_record_file_others_may_read_is_replaced_by_a_private_one_not_written_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, s, file) = store_with_k("v1").await;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let before = inode(&file);
    let c = s.load(&id("k")).await.unwrap().unwrap();
    s.save(&c).await.unwrap();
    assert_ne!(inode(&file), before);
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A hard link elsewhere would see a write in place: the record is replaced instead.
    let other_name = tmp.path().join("elsewhere");
    fs::hard_link(&file, &other_name).unwrap();
    let linked = fs::read(&other_name).unwrap();
    let c = s.load(&id("k")).await.unwrap().unwrap();
    s.save(&c).await.unwrap();
    assert_eq!(fs::read(&other_name).unwrap(), linked);
    assert_eq!(s.load(&id("k")).await.unwrap().unwrap().version(), 3);
}
