//! File access of the store: hardened opens, the one durable write, private permissions.
//!
//! **Opens.** Every file of a store (record, header, names index, lock) is opened with
//! `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` on Unix, then checked with `fstat` on the open
//! descriptor: anything but a regular file (a symbolic link, FIFO, socket, device or
//! directory), and a record, header or index with more than one hard link, is refused
//! with one error naming the file's role. So a FIFO put at a record path fails at once
//! instead of hanging the load, and nothing is ever read or written through a link.
//!
//! **Writes.** There is one way to write a file ([`write_atomic`]): a temporary file in
//! the store directory (`create_new`, mode 0600), written and fsynced, renamed over the
//! target (atomic on POSIX file systems; a link at the target is replaced, never written
//! through), then an fsync of the directory so the rename survives a crash. Readers see
//! the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hive_cred_core::{Error, Result};

use crate::key::fill_random;

/// Prefix of temporary files; such files are never records and are removed by the next
/// writer that finds them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// What a file is to the store, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Record,
    Header,
    Index,
    Lock,
    /// A file of the Python store being imported.
    ImportSource,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Record => "credential record",
            Role::Header => "store header",
            Role::Index => "names index",
            Role::Lock => "lock file",
            Role::ImportSource => "Python store file",
        }
    }

    /// Whether a second hard link makes the file unacceptable (a write or a read could be
    /// reaching a file some other name also leads to).
    fn single_link(self) -> bool {
        matches!(self, Role::Record | Role::Header | Role::Index)
    }
}

/// An I/O error with what was being done and the file it concerned.
pub(crate) fn io_error(err: std::io::Error, doing: &str, path: &Path) -> Error {
    Error::from(err)
        .with_message_prefix(doing)
        .with_context("file", path.display())
}

fn not_regular(role: Role, path: &Path, what: &str) -> Error {
    Error::corrupted(format!(
        "the {} path holds {what}, not a regular file; hive-cred never creates one: \
         remove it (or restore the file from a backup)",
        role.name()
    ))
    .with_context("file", path.display())
}

/// Opens the existing `path` for reading with the checks described
/// in the module docs. `Ok(None)` when nothing is there.
pub(crate) fn open_regular(path: &Path, role: Role) -> Result<Option<(File, fs::Metadata)>> {
    match open_checked(path, role, false) {
        Ok(opened) => Ok(Some(opened)),
        Err(OpenError::Absent) => Ok(None),
        Err(OpenError::Refused(e)) => Err(e),
    }
}

/// Opens (creating it 0600 if needed) the lock file `path` for reading and writing, with
/// the same checks.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    match open_checked(path, Role::Lock, true) {
        Ok((file, _)) => Ok(file),
        Err(OpenError::Absent) => Err(Error::new(
            hive_cred_core::ErrorKind::Unexpected,
            "a lock file opened with create was absent",
        )
        .with_context("file", path.display())),
        Err(OpenError::Refused(e)) => Err(e),
    }
}

enum OpenError {
    Absent,
    Refused(Error),
}

fn open_checked(
    path: &Path,
    role: Role,
    create_lock: bool,
) -> std::result::Result<(File, fs::Metadata), OpenError> {
    let file = open_raw(path, create_lock).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OpenError::Absent,
        _ if is_symlink_error(&e) => OpenError::Refused(not_regular(role, path, "a symbolic link")),
        _ => OpenError::Refused(io_error(e, "could not open", path)),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| OpenError::Refused(io_error(e, "could not inspect", path)))?;
    if !meta.is_file() {
        return Err(OpenError::Refused(not_regular(
            role,
            path,
            kind_of(&meta.file_type()),
        )));
    }
    if role.single_link() {
        let links = link_count(&meta);
        if links > 1 {
            return Err(OpenError::Refused(
                Error::corrupted(format!(
                    "the {} has {links} hard links, so other names share it; hive-cred never \
                     creates one: remove the other links (or replace it with a copy)",
                    role.name()
                ))
                .with_context("file", path.display()),
            ));
        }
    }
    Ok((file, meta))
}

#[cfg(unix)]
fn open_raw(path: &Path, create_lock: bool) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    flags |= if create_lock {
        OFlags::RDWR | OFlags::CREATE
    } else {
        OFlags::RDONLY
    };
    let mode = Mode::from_raw_mode(0o600);
    Ok(File::from(rustix::fs::open(path, flags, mode)?))
}

#[cfg(not(unix))]
fn open_raw(path: &Path, create_lock: bool) -> std::io::Result<File> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(std::io::Error::other(SYMLINK));
    }
    let mut options = OpenOptions::new();
    options.read(true);
    if create_lock {
        options.write(true).create(true).truncate(false);
    }
    options.open(path)
}

#[cfg(not(unix))]
const SYMLINK: &str = "symbolic link";

fn is_symlink_error(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        // O_NOFOLLOW on a link: ELOOP (Linux, macOS), EMLINK (FreeBSD), EFTYPE (NetBSD).
        let errno = e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
        errno == Some(rustix::io::Errno::LOOP) || errno == Some(rustix::io::Errno::MLINK)
    }
    #[cfg(not(unix))]
    {
        e.to_string() == SYMLINK
    }
}

fn kind_of(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "something"
    }
}

fn link_count(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::nlink(meta)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        1
    }
}

/// Reads the whole file at `path` (opened with [`open_regular`]), at most `max` bytes
/// plus one to detect oversize files, which the format parsers then reject. `Ok(None)`
/// when the file is absent.
pub(crate) fn read_regular(path: &Path, role: Role, max: usize) -> Result<Option<Vec<u8>>> {
    let Some((file, meta)) = open_regular(path, role)? else {
        return Ok(None);
    };
    let limit = max.saturating_add(1);
    let hint = usize::try_from(meta.len()).map_or(0, |n| n.saturating_add(1));
    let mut bytes = Vec::with_capacity(hint.min(limit));
    file.take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(e, "could not read", path))?;
    Ok(Some(bytes))
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

/// Whether [`write_atomic`] fsyncs the directory itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// The file and the directory: durable when the call returns.
    All,
    /// The file only; the caller fsyncs the directory (see [`sync_dir`]) before
    /// reporting success (a rotation batching many renames).
    FileOnly,
}

/// Writes `bytes` to `target` atomically and durably (see the module docs). The caller
/// holds the store lock.
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
        file.sync_all()
            .map_err(|e| io_error(e, "could not fsync", &tmp))?;
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

/// Value of each byte as a lower-case hex digit; `0xff` for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Parses exactly `N` bytes of lower-case hex. Without a branch per digit: `list` parses
/// every record file's name, and a branch on random hex digits mispredicts half the time
/// (it was a quarter of a fresh handle's `list` of 1,000).
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        invalid |= high | low;
        *byte = (high << 4) | low;
    }
    (invalid & 0xf0 == 0).then_some(out)
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
        for b in 0u8..128 {
            let digit = matches!(b, b'0'..=b'9' | b'a'..=b'f');
            for text in [format!("{}0", b as char), format!("0{}", b as char)] {
                assert_eq!(unhex::<1>(&text).is_some(), digit, "{text:?}");
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex::<256>(&hex(&all)).map(|b| b.to_vec()), Some(all));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        write_atomic(dir.path(), &target, b"one", Flush::All).unwrap();
        write_atomic(dir.path(), &target, b"two", Flush::FileOnly).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(too_open(&target).unwrap().is_none());
    }

    #[test]
    fn read_regular_reads_one_past_the_cap_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        assert_eq!(
            read_regular(&p, Role::Record, usize::MAX).unwrap().unwrap(),
            data
        );
        assert_eq!(
            read_regular(&p, Role::Record, 10).unwrap().unwrap().len(),
            11
        );
        let absent = dir.path().join("nope");
        assert!(read_regular(&absent, Role::Record, 10).unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_and_directories_are_refused_naming_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = read_regular(&link, Role::Header, 10).unwrap_err();
        assert!(
            err.message()
                .contains("store header path holds a symbolic link"),
            "{err}"
        );

        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read_regular(&fifo, Role::Record, 10).unwrap_err();
        assert!(
            err.message()
                .contains("credential record path holds a FIFO"),
            "{err}"
        );
        let err = open_lock_file(&fifo).unwrap_err();
        assert!(
            err.message().contains("lock file path holds a FIFO"),
            "{err}"
        );

        let err = read_regular(dir.path(), Role::Index, 10).unwrap_err();
        assert!(err.message().contains("a directory"), "{err}");

        let second = dir.path().join("second");
        fs::hard_link(&real, &second).unwrap();
        let err = read_regular(&second, Role::Record, 10).unwrap_err();
        assert!(err.message().contains("2 hard links"), "{err}");
        // A lock file may have links: nothing is read from or written to it.
        assert!(open_lock_file(&second).is_ok());
    }

    #[test]
    fn stale_temp_files_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-0123"), b"x").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
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
