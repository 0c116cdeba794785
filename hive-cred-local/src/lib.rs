#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

mod durable;
mod format;
mod import;
mod index;
mod kept;
mod key;
mod keyring;
mod lock;
mod rotate;
mod storage;

pub use import::{ImportFailure, ImportReport, import_python_store};
pub use key::{ENV_KEY, ENV_PASSPHRASE, KeySource, RawKey, ScryptParams};
pub use lock::LocalCredentialLock;
pub use storage::{LocalStorage, LocalStorageOptions, RotationReport};

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use crate::format::{open_record, parse_header, record_candidates};

    /// Runs untrusted bytes through the record-file decoder (both layouts), then (with a
    /// fixed key) the authenticator and the stored-form decoder for each record found.
    /// Must never panic.
    pub fn decode_record(data: &[u8]) {
        if let Ok(found) = record_candidates(data) {
            for found in found.into_iter().flatten() {
                assert!(
                    found.range.end <= data.len(),
                    "a record range outside the file"
                );
                if let Some(plain) = open_record(&found.view, &[7; 32], &[1; 16], &[2; 32]) {
                    let _ = hive_cred_core::codec::from_stored(&plain);
                }
            }
        }
    }

    /// Runs untrusted bytes through the header decoder and key unwrapping. Must never
    /// panic.
    pub fn decode_header(data: &[u8]) {
        if let Ok(header) = parse_header(data) {
            let _ = header.unwrap_keys(&[7; 32]);
        }
    }
}
