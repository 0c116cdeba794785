//! Crash-safe file writes and private permissions.
//!
//! A durable write creates a temporary file in the target directory (mode 0600), writes
//! and fsyncs it, renames it over the target (atomic on POSIX file systems) and fsyncs
//! the directory so the rename itself survives a crash. Readers see the old file or the
//! new one, never a mix.
//!
//! Credential records are replaced through a spare file instead ([`replace_via_spare`]):
//! the new record is written into the store's one spare file, fsynced, and atomically
//! exchanged with the target (`renameat2(RENAME_EXCHANGE)` on Linux, `RENAME_SWAP` on
//! Apple systems), then the directory is fsynced. The spare then holds the previous
//! record and is overwritten by the next save. No inode is allocated or freed per save,
//! which on ext4 is most of the cost of a small durable write (allocating an inode scans
//! past recently freed ones). Where the exchange is not supported the spare is renamed
//! over the target, which is the classic temp-file write.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::sync::atomic::{AtomicBool, Ordering};

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
    let file = match File::open(path) {
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
/// read (the buffer holds one byte more, so that the first read comes back short).
/// Takes a short first read as the end of the file, like [`read_file`] with
/// `short_read_is_eof`.
#[cfg(unix)]
pub(crate) fn read_at_capped_fast(
    file: &File,
    expected: usize,
    max: usize,
    path: &Path,
) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    read_with(
        |buf, offset| file.read_at(buf, offset),
        || file.metadata().ok().map(|m| m.len()),
        expected.saturating_add(1),
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

/// First read size of [`read_capped`]: larger than any ordinary record.
const READ_CHUNK: usize = 2048;

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

/// Name of the spare file of [`replace_via_spare`]. It never holds a record that is
/// read: at most the previous version of the last credential saved, or a half-written
/// new one after a crash.
#[cfg(unix)]
pub(crate) const SPARE_FILE: &str = ".spare";

/// Replaces (or creates, with `target_exists == false`) `target` with `bytes`, durably
/// and atomically, through the spare file of `dir` (see the module docs). `exchange`
/// says whether the directory's file system supports an atomic exchange; it is cleared
/// the first time the system says it does not.
///
/// The caller holds the store lock: the spare is shared by every writer of the store.
/// A reader that opened `target` just before an exchange can read the spare's inode
/// while the next save overwrites it, so readers retry a record that fails to
/// authenticate (see `Inner::read_record`).
#[cfg(unix)]
pub(crate) fn replace_via_spare(
    dir: &Path,
    target: &Path,
    bytes: &[u8],
    target_exists: bool,
    exchange: &AtomicBool,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let spare = dir.join(SPARE_FILE);
    let (file, meta) = open_spare(&spare)?;
    if meta.permissions().mode() & 0o077 != 0 {
        // It becomes a record file: it must be as private as one.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error(e, "could not restrict the permissions of", &spare))?;
    }
    // The file keeps its inode and (mostly) its blocks.
    write_in_place(&file, &meta, bytes, &spare)?;
    file.sync_data()
        .map_err(|e| io_error(e, "could not fsync", &spare))?;
    drop(file);
    if !(target_exists
        && exchange.load(Ordering::Relaxed)
        && exchange_with(&spare, target, exchange)?)
    {
        fs::rename(&spare, target).map_err(|e| io_error(e, "could not rename over", target))?;
    }
    sync_dir(dir)
}

/// Opens (creating) the spare file for writing in place. Anything at its name that is
/// not a private regular file of ours to overwrite (a symbolic link, which is never
/// followed, a FIFO or device, which is never blocked on, a directory, or a file with
/// other hard links, whose other names would see the write) is removed and replaced by
/// a new file.
#[cfg(unix)]
fn open_spare(spare: &Path) -> Result<(File, fs::Metadata)> {
    let mut replaced = false;
    loop {
        let opened = open_private_regular(spare, true);
        let bad = match opened {
            Ok(Some(opened)) => return Ok(opened),
            Ok(None) => "is not a private regular file",
            // ELOOP (a symbolic link), EISDIR, ENXIO (a FIFO without reader), ...
            Err(e) if replaced => return Err(io_error(e, "could not open the spare file", spare)),
            Err(_) => "could not be opened",
        };
        if replaced {
            return Err(Error::new(
                hive_cred_core::ErrorKind::Unexpected,
                format!("the spare file {bad} even after it was replaced"),
            )
            .with_context("file", spare.display()));
        }
        tracing::warn!(file = %spare.display(), "replacing a spare file that {bad}");
        match fs::remove_file(spare).or_else(|_| fs::remove_dir(spare)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e, "could not remove", spare)),
        }
        replaced = true;
    }
}

/// Overwrites the existing regular file `path` with `bytes` in place (same inode, so the
/// directory does not change), without fsync. `Ok(false)` when there is no such file.
/// Refuses (as an error) anything but a regular file with one link; never follows a
/// symbolic link or blocks on a FIFO. For caches that authenticate their contents: a
/// crash or a concurrent reader can see the file half written.
pub(crate) fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<bool> {
    #[cfg(unix)]
    {
        let (file, meta) = match open_private_regular(path, false) {
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
        write_in_place(&file, &meta, bytes, path)?;
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, bytes);
        Ok(false)
    }
}

/// Opens `path` for writing (creating it 0600 with `create`) without following a
/// symbolic link or blocking on a FIFO. `Ok(None)` when it is not a regular file with a
/// single link (a directory, device or FIFO, or a file whose other names would see a
/// write in place).
#[cfg(unix)]
fn open_private_regular(
    path: &Path,
    create: bool,
) -> std::io::Result<Option<(File, fs::Metadata)>> {
    use std::os::unix::fs::MetadataExt;

    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE;
    }
    let file = File::from(rustix::fs::open(path, flags, Mode::RUSR | Mode::WUSR)?);
    let meta = file.metadata()?;
    Ok((meta.is_file() && meta.nlink() == 1).then_some((file, meta)))
}

/// Writes `bytes` over the start of `file` (whose metadata is `meta`) and cuts it to
/// their length.
#[cfg(unix)]
fn write_in_place(file: &File, meta: &fs::Metadata, bytes: &[u8], path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;

    file.write_all_at(bytes, 0)
        .map_err(|e| io_error(e, "could not write", path))?;
    let len = bytes.len() as u64;
    if meta.len() != len {
        file.set_len(len)
            .map_err(|e| io_error(e, "could not write", path))?;
    }
    Ok(())
}

/// Atomically exchanges `a` and `b`. `Ok(false)` when that is not possible here (the
/// file system or kernel lacks it, which also clears `supported`, or `b` is gone): the
/// caller renames instead.
#[cfg(unix)]
fn exchange_with(a: &Path, b: &Path, supported: &AtomicBool) -> Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            // ENOTSUP and EOPNOTSUPP are one value on Linux, two on Apple systems.
            Err(e)
                if [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP, Errno::NOTSUP].contains(&e) =>
            {
                supported.store(false, Ordering::Relaxed);
                tracing::debug!(dir = ?a.parent(), "atomic exchange unsupported here; saves rename a new file instead");
                Ok(false)
            }
            Err(e) => Err(io_error(
                e.into(),
                "could not exchange the spare file with",
                b,
            )),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    {
        let _ = (a, b);
        supported.store(false, Ordering::Relaxed);
        Ok(false)
    }
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

    #[cfg(unix)]
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[cfg(unix)]
    #[test]
    fn the_spare_is_exchanged_with_an_existing_target_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("r.cred");
        let spare = dir.path().join(SPARE_FILE);
        let exchange = AtomicBool::new(true);
        replace_via_spare(dir.path(), &target, b"version one", false, &exchange).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"version one");
        assert!(!spare.exists(), "a new target takes the spare's place");

        replace_via_spare(dir.path(), &target, b"two", true, &exchange).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        // Guards the fast path on Linux (ext4, xfs, btrfs, tmpfs all have it): were it
        // silently falling back, saves would pass every other test but allocate an inode.
        #[cfg(target_os = "linux")]
        assert!(exchange.load(Ordering::Relaxed), "RENAME_EXCHANGE refused");
        if exchange.load(Ordering::Relaxed) {
            // Exchanged: the spare now holds the previous bytes, in the old inode.
            assert_eq!(fs::read(&spare).unwrap(), b"version one");
            let (old_target, old_spare) = (inode(&target), inode(&spare));
            replace_via_spare(dir.path(), &target, b"three, longer", true, &exchange).unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"three, longer");
            assert_eq!(fs::read(&spare).unwrap(), b"two");
            assert_eq!((inode(&target), inode(&spare)), (old_spare, old_target));
        }
        assert!(too_open(&target).unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_spare_that_is_a_link_fifo_directory_or_hard_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE_FILE);
        let victim = dir.path().join("victim");
        let target = dir.path().join("r.cred");
        let exchange = AtomicBool::new(true);
        let plant: [&dyn Fn(); 4] = [
            &|| std::os::unix::fs::symlink(&victim, &spare).unwrap(),
            &|| fs::hard_link(&victim, &spare).unwrap(),
            &|| fs::create_dir(&spare).unwrap(),
            &|| {
                let status = std::process::Command::new("mkfifo")
                    .arg(&spare)
                    .status()
                    .unwrap();
                assert!(status.success());
            },
        ];
        for (round, plant) in plant.iter().enumerate() {
            fs::write(&victim, b"precious").unwrap();
            let _ = fs::remove_file(&spare);
            plant();
            let record = format!("record {round}");
            replace_via_spare(dir.path(), &target, record.as_bytes(), round > 0, &exchange)
                .unwrap();
            assert_eq!(
                fs::read(&target).unwrap(),
                record.as_bytes(),
                "round {round}"
            );
            assert_eq!(fs::read(&victim).unwrap(), b"precious", "round {round}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn without_the_exchange_the_spare_is_renamed_over_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("r.cred");
        let exchange = AtomicBool::new(false);
        replace_via_spare(dir.path(), &target, b"one", false, &exchange).unwrap();
        replace_via_spare(dir.path(), &target, b"two", true, &exchange).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert!(!dir.path().join(SPARE_FILE).exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_spare_with_open_permissions_is_made_private_before_it_becomes_a_record() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE_FILE);
        fs::write(&spare, b"leftover, longer than the record").unwrap();
        fs::set_permissions(&spare, fs::Permissions::from_mode(0o644)).unwrap();
        let target = dir.path().join("r.cred");
        replace_via_spare(dir.path(), &target, b"new", false, &AtomicBool::new(true)).unwrap();
        assert_eq!(
            fs::read(&target).unwrap(),
            b"new",
            "stale tail bytes cut off"
        );
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
