//! Crash-safe file writes and private permissions.
//!
//! A durable write creates a temporary file in the target directory (mode 0600), writes
//! and fsyncs it, renames it over the target (atomic on POSIX file systems) and fsyncs
//! the directory so the rename itself survives a crash. Readers see the old file or the
//! new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hive_cred_core::{Error, Result};

use crate::key::fill_random;

/// Prefix of temporary files; such files are never records and are removed by the next
/// writer that finds them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// An I/O error with what was being done and the file it concerned.
pub(crate) fn io_error(err: std::io::Error, doing: &str, path: &Path) -> Error {
    Error::from(err)
        .with_message_prefix(doing)
        .with_context("file", path.display())
}

/// `OpenOptions` that create files readable and writable by the owner only.
pub(crate) fn options_0600() -> OpenOptions {
    #[allow(unused_mut)] // mutated on Unix only
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates `dir` (and missing parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| io_error(e, "could not create the store directory", dir))
}

/// Reads a whole file of at most `max` bytes (one more is read to detect oversize
/// files, which the format parsers then reject). `Ok(None)` when the file is absent.
pub(crate) fn read_capped(path: &Path, max: usize) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e, "could not open", path)),
    };
    let mut buf = Vec::with_capacity(1024);
    file.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(e, "could not read", path))?;
    Ok(Some(buf))
}

/// Writes `bytes` to `target` atomically and durably. With `sync_dir == false` the
/// caller must call [`sync_dir`] before reporting success (batching many renames).
pub(crate) fn write_atomic(dir: &Path, target: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let tmp: PathBuf = dir.join(format!("{TEMP_PREFIX}{}", hex(&suffix)));
    let result = (|| {
        let mut options = options_0600();
        options.write(true).create_new(true);
        let mut file = options
            .open(&tmp)
            .map_err(|e| io_error(e, "could not create a temporary file", &tmp))?;
        file.write_all(bytes)
            .map_err(|e| io_error(e, "could not write", &tmp))?;
        file.sync_data()
            .map_err(|e| io_error(e, "could not fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, target).map_err(|e| io_error(e, "could not rename over", target))
    })();
    if result.is_err() {
        // Best effort: the write failed before the rename, so the temp file is garbage.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so that renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(e, "could not fsync the store directory", dir))
    }
    #[cfg(not(unix))]
    {
        // Windows has no directory fsync; NTFS journals renames.
        let _ = dir;
        Ok(())
    }
}

/// Removes `path` durably. `Ok(false)` when it did not exist.
pub(crate) fn remove_durable(dir: &Path, path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(e, "could not remove", path)),
    }
}

/// Removes temporary files left by writers that crashed. Call with the store lock held.
pub(crate) fn remove_stale_temp_files(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(e, "could not list", dir)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(e, "could not list", dir))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(e, "could not remove", &path)),
            }
        }
    }
    Ok(removed)
}

/// The permission bits of `path` that give group or others access, if any (Unix).
pub(crate) fn too_open(path: &Path) -> Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| io_error(e, "could not inspect", path))?
            .permissions()
            .mode();
        Ok((mode & 0o077 != 0).then_some(mode & 0o777))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Parses exactly `N` bytes of lower-case hex.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex::<4>("0001abff"), Some(bytes));
        assert_eq!(unhex::<4>("0001ABFF"), None);
        assert_eq!(unhex::<4>("0001abf"), None);
        assert_eq!(unhex::<2>("zz00"), None);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        write_atomic(dir.path(), &target, b"one", true).unwrap();
        write_atomic(dir.path(), &target, b"two", true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(too_open(&target).unwrap().is_none());
    }

    #[test]
    fn stale_temp_files_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-0123"), b"x").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn read_capped_reads_one_past_the_cap_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        fs::write(&p, vec![1u8; 100]).unwrap();
        assert_eq!(read_capped(&p, 10).unwrap().unwrap().len(), 11);
        assert!(read_capped(&dir.path().join("nope"), 10).unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn created_dirs_are_private_and_open_modes_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("a/b");
        create_private_dir(&store).unwrap();
        assert!(too_open(&store).unwrap().is_none());
        fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(too_open(&store).unwrap(), Some(0o755));
    }
}
