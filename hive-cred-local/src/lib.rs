#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

// Where things are:
// - `storage`: the `LocalStorage` handle, `open`, and its `CredentialStorage` impl;
// - `options`: `LocalStorageOptions`;
// - `record`: reading and writing records (`load`, `save`, `delete`, `exists`);
// - `list`: `list` and the encrypted names index;
// - `key` (what the user gives: `KeySource`, `ScryptParams`) and `keyring` (the unlocked
//   header, kept in step with the disk);
// - `rotate`: passphrase change and data-key rotation;
// - `format`: the bytes on disk; `fs`: hardened opens and the one durable write;
// - `lock`: OS file locks; `import`: the Python store.
mod format;
mod fs;
mod import;
mod key;
mod keyring;
mod list;
mod lock;
mod options;
mod record;
mod rotate;
mod storage;

pub use import::{ImportFailure, ImportReport, import_python_store};
pub use key::{ENV_KEY, ENV_PASSPHRASE, KeySource, RawKey, ScryptParams};
pub use lock::LocalCredentialLock;
pub use options::LocalStorageOptions;
pub use rotate::RotationReport;
pub use storage::LocalStorage;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use crate::format::{open_record, parse_header, parse_record};

    /// Runs untrusted bytes through the record decoder, then (with a fixed key) the
    /// authenticator and the stored-form decoder. Must never panic.
    pub fn decode_record(data: &[u8]) {
        if let Ok(view) = parse_record(data)
            && let Some(plain) = open_record(&view, &[7; 32], &[1; 16], &[2; 32])
        {
            let _ = hive_cred_core::codec::from_stored(&plain);
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
