//! Crash-safe file writes and private permissions.
//!
//! A durable write creates a temporary file in the target directory (mode 0600), writes
//! and fsyncs it, renames it over the target (atomic on POSIX file systems) and fsyncs
//! the directory so the rename itself survives a crash. Readers see the old file or the
//! new one, never a mix.
//!
//! Credential records are updated in place instead ([`write_slot`]): the new record is
//! written into the slot of its file that does not hold the current one and
//! `fdatasync`ed (see `format` for the two-slot layout). The file's size, blocks and name
//! stay as they are, so no file-system metadata (no journal commit) is involved: one
//! flush per save instead of two. New files (a new credential, a record that outgrew its
//! slots) are written with the temp-file write above.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hive_cred_core::{Error, Result};

#[cfg(unix)]
use crate::format::slot_write;
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
///
/// Reads straight into one buffer sized for a typical record: no `stat`, no probing
/// reads; a small file costs `open`, two `read`s (the second sees end of file) and
/// `close`.
pub(crate) fn read_capped(path: &Path, max: usize) -> Result<Option<Vec<u8>>> {
    read_file(path, max, false).map(|read| read.map(|(bytes, _)| bytes))
}

/// [`read_capped`] that also returns the open file, for callers that keep it.
///
/// With `short_read_is_eof`, a first read returning less than it asked for is taken as
/// the end of the file, saving the `read` that would return 0. That holds for regular
/// files on local file systems; where it does not, the bytes are a prefix of the record,
/// which then fails to authenticate, and the caller reads again without it. Only for
/// authenticated records.
pub(crate) fn read_file(
    path: &Path,
    max: usize,
    short_read_is_eof: bool,
) -> Result<Option<(Vec<u8>, File)>> {
    #[cfg(unix)]
    let opened = open_noatime(path, rustix::fs::OFlags::RDONLY);
    #[cfg(not(unix))]
    let opened = File::open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e, "could not open", path)),
    };
    let bytes = read_with(
        |buf, _| (&file).read(buf),
        || file.metadata().ok().map(|m| m.len()),
        READ_CHUNK,
        max,
        short_read_is_eof,
    )
    .map_err(|e| io_error(e, "could not read", path))?;
    Ok(Some((bytes, file)))
}

/// Reads all of an open file from offset 0 with `pread`, leaving its position alone:
/// for record files kept open between loads. `expected` is the file's length when last
/// read (the buffer holds one byte more, so that the first read comes back short; it is
/// not zeroed first). Takes a short first read as the end of the file, like
/// [`read_file`] with `short_read_is_eof`.
#[cfg(unix)]
pub(crate) fn read_at_capped_fast(
    file: &File,
    expected: usize,
    max: usize,
    path: &Path,
) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let first = expected.saturating_add(1).min(max.saturating_add(1));
    let mut buf = Vec::with_capacity(first);
    match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), 0) {
        Ok(n) if n < first => return Ok(buf),
        // Grew, or interrupted: read it all the general way.
        Ok(_) | Err(_) => {}
    }
    read_with(
        |buf, offset| file.read_at(buf, offset),
        || file.metadata().ok().map(|m| m.len()),
        first,
        max,
        true,
    )
    .map_err(|e| io_error(e, "could not read", path))
}

/// The read loop of [`read_file`] and [`read_at_capped_fast`]: `read(buf, offset)` reads
/// at `offset` of the file into `buf`, starting with a buffer of `first` bytes; `size`
/// is the file's length, asked for only when the file is larger than that.
fn read_with(
    mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
    size: impl Fn() -> Option<u64>,
    first: usize,
    max: usize,
    short_read_is_eof: bool,
) -> std::io::Result<Vec<u8>> {
    let limit = max.saturating_add(1);
    let mut buf = vec![0u8; first.clamp(1, limit)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len == limit {
                break;
            }
            // Larger than a record usually is (the names index): size the buffer from
            // the file once instead of doubling it (each doubling copies and faults in
            // fresh pages). The length is only a hint; reading goes on to end of file.
            let hint = size()
                .and_then(|n| usize::try_from(n).ok())
                .map_or(0, |n| n.saturating_add(1));
            buf.resize(len.saturating_mul(2).max(hint).min(limit), 0);
        }
        let offset = u64::try_from(len).unwrap_or(u64::MAX);
        match read(&mut buf[len..], offset) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if short_read_is_eof && len < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// First read size of [`read_capped`]: larger than an ordinary record file (about 1 KiB,
/// see `format`), so that one `read` reads it.
const READ_CHUNK: usize = 4096;

/// How much of [`write_atomic`]'s work is flushed to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// The file and the directory: durable when the call returns.
    All,
    /// The file only; the caller fsyncs the directory (see [`sync_dir`]) before
    /// reporting success (batching many renames).
    FileOnly,
    /// Nothing: still atomic for readers, but after a power loss the old file, the new
    /// one or an empty one may be found. For caches whose contents are checked on read.
    Nothing,
}

/// Writes `bytes` to `target` atomically and, as `flush` says, durably.
pub(crate) fn write_atomic(dir: &Path, target: &Path, bytes: &[u8], flush: Flush) -> Result<()> {
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
        if flush != Flush::Nothing {
            file.sync_data()
                .map_err(|e| io_error(e, "could not fsync", &tmp))?;
        }
        drop(file);
        fs::rename(&tmp, target).map_err(|e| io_error(e, "could not rename over", target))
    })();
    if result.is_err() {
        // Best effort: the write failed before the rename, so the temp file is garbage.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if flush == Flush::All {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Name of the spare file that earlier builds exchanged records with. It holds an older
/// copy of some record; the first writer of a handle removes it.
pub(crate) const LEGACY_SPARE_FILE: &str = ".spare";

/// Opens the record file at `path` to update it in place and reads it (at most `max`
/// bytes, plus one to detect more). `Ok(None)` when there is no such file. The file is
/// returned only when it can be written in place (see [`open_private_regular`]).
/// Otherwise (a file with other names that would see the write, one others may read)
/// only its bytes are returned, and the caller replaces it with a new file; anything
/// that cannot be opened so (a symbolic link, a file not writable by us) is read as any
/// record is.
#[cfg(unix)]
pub(crate) fn open_for_update(path: &Path, max: usize) -> Result<Option<(Vec<u8>, Option<File>)>> {
    use std::os::unix::fs::FileExt;
    match open_rw_nofollow(path) {
        Ok((file, meta)) if meta.is_file() => {
            let bytes = read_with(
                |buf, offset| file.read_at(buf, offset),
                || Some(meta.len()),
                usize::try_from(meta.len()).map_or(max, |n| n.saturating_add(1)),
                max,
                false,
            )
            .map_err(|e| io_error(e, "could not read", path))?;
            Ok(Some((bytes, writable_in_place(&meta).then_some(file))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => Ok(read_capped(path, max)?.map(|bytes| (bytes, None))),
    }
}

/// Writes `record` into slot `slot` of the two-slot record file `file` (slots of
/// `slot_size` bytes) and `fdatasync`s it; then clears the other slot, which held the
/// previous version, without waiting for that to reach the disk (see `format`). When the
/// write or the flush fails, the slot is cleared again (best effort), so that readers
/// keep seeing the previous version, which was not touched.
#[cfg(unix)]
pub(crate) fn write_slot(
    file: &File,
    slot: usize,
    slot_size: usize,
    record: &[u8],
    path: &Path,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (offset, bytes) = slot_write(slot, slot_size, record);
    let written = file
        .write_all_at(&bytes, offset)
        .map_err(|e| io_error(e, "could not write", path))
        .and_then(|()| {
            file.sync_data()
                .map_err(|e| io_error(e, "could not fsync", path))
        });
    let clear = if written.is_ok() { 1 - slot } else { slot };
    let (at, zeros) = slot_write(clear, slot_size, &[]);
    if let Err(e) = file.write_all_at(&zeros, at) {
        // The save itself is durable (or has failed and says so); a slot left behind
        // only keeps the previous version on disk until the next save of the record.
        tracing::warn!(file = %path.display(), error = %e, "could not clear a slot of a record file");
    }
    written
}

/// Overwrites the existing regular file `path` with `bytes` in place (same inode, so the
/// directory does not change), without fsync. `Ok(false)` when there is no such file.
/// Refuses (as an error) anything but a private regular file with one link; never follows a
/// symbolic link or blocks on a FIFO. For caches that authenticate their contents: a
/// crash or a concurrent reader can see the file half written.
pub(crate) fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let (file, meta) = match open_private_regular(path) {
            Ok(Some(opened)) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(e, "could not open", path)),
            Ok(None) => {
                return Err(Error::new(
                    hive_cred_core::ErrorKind::Unexpected,
                    "not a private regular file; not overwriting it",
                )
                .with_context("file", path.display()));
            }
        };
        file.write_all_at(bytes, 0)
            .map_err(|e| io_error(e, "could not write", path))?;
        let len = bytes.len() as u64;
        if meta.len() != len {
            file.set_len(len)
                .map_err(|e| io_error(e, "could not write", path))?;
        }
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, bytes);
        Ok(false)
    }
}

/// Opens the existing `path` for reading and writing without following a symbolic link
/// or blocking on a FIFO. `Ok(None)` when it is not a private regular file with a single
/// link (a directory, device or FIFO, a file whose other names would see a write in
/// place, or one that group or others may read: rewriting it as a new file makes it
/// private).
#[cfg(unix)]
fn open_private_regular(path: &Path) -> std::io::Result<Option<(File, fs::Metadata)>> {
    let (file, meta) = open_rw_nofollow(path)?;
    Ok(writable_in_place(&meta).then_some((file, meta)))
}

/// Opens the existing `path` for reading and writing without following a symbolic link
/// or blocking on a FIFO, with its metadata.
#[cfg(unix)]
fn open_rw_nofollow(path: &Path) -> std::io::Result<(File, fs::Metadata)> {
    use rustix::fs::OFlags;
    let file = open_noatime(path, OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// Opens the existing `path` with `flags` (and `O_CLOEXEC`). On Linux, reads through it
/// do not update the file's access time when the process may ask for that (it owns the
/// file): otherwise the first read after each change of a record (`relatime`) writes its
/// inode, which costs such a load about 14% of its time. A file owned by another user is
/// opened without it.
#[cfg(unix)]
fn open_noatime(path: &Path, flags: rustix::fs::OFlags) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = flags | OFlags::CLOEXEC;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => {}
        opened => return Ok(File::from(opened?)),
    }
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// Whether a file with metadata `meta` may be written in place (see
/// [`open_private_regular`]).
#[cfg(unix)]
fn writable_in_place(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    meta.is_file() && meta.nlink() == 1 && meta.permissions().mode() & 0o077 == 0
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

/// Removes temporary files left by writers that crashed, and the spare file of earlier
/// builds ([`LEGACY_SPARE_FILE`]). Call with the store lock held.
pub(crate) fn remove_stale_temp_files(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(e, "could not list", dir)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(e, "could not list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) || name == LEGACY_SPARE_FILE {
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
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends the lower-case hex of `bytes` to `out`.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend(bytes.iter().flat_map(|b| {
        [
            char::from(DIGITS[usize::from(b >> 4)]),
            char::from(DIGITS[usize::from(b & 0xf)]),
        ]
    }));
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
        write_atomic(dir.path(), &target, b"one", Flush::All).unwrap();
        write_atomic(dir.path(), &target, b"two", Flush::All).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(too_open(&target).unwrap().is_none());
    }

    #[test]
    fn read_capped_grows_past_the_first_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..READ_CHUNK * 3 + 5).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let fast = |p: &Path, max| read_file(p, max, true).map(|r| r.map(|(bytes, _)| bytes));
        for read in [read_capped, fast] {
            assert_eq!(read(&p, usize::MAX).unwrap().unwrap(), data);
            assert_eq!(read(&p, READ_CHUNK).unwrap().unwrap().len(), READ_CHUNK + 1);
            assert_eq!(read(&p, 10).unwrap().unwrap().len(), 11);
        }
        #[cfg(unix)]
        {
            // pread from 0 whatever the file position, and as often as asked.
            let (_, mut file) = read_file(&p, usize::MAX, false).unwrap().unwrap();
            assert_eq!(file.read(&mut [0u8; 8]).unwrap(), 0, "read to the end");
            for expected in [0, 10, data.len(), data.len() + 100] {
                assert_eq!(
                    read_at_capped_fast(&file, expected, usize::MAX, &p).unwrap(),
                    data
                );
            }
            assert_eq!(read_at_capped_fast(&file, 0, 10, &p).unwrap().len(), 11);
        }
        fs::write(&p, b"small").unwrap();
        assert_eq!(fast(&p, 100).unwrap().unwrap(), b"small");
        fs::write(&p, b"").unwrap();
        assert!(read_capped(&p, 10).unwrap().unwrap().is_empty());
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
