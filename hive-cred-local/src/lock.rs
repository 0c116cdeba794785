//! Advisory OS file locks (`flock(2)` on Unix, `LockFileEx` on Windows, through fs4).
//!
//! Locks are held by an open file description, so two handles in one process exclude
//! each other just like two processes do. A lock is released when its guard is dropped,
//! and by the OS when the holding process dies (a SIGKILLed writer never leaves a stale
//! lock behind).
//!
//! The store uses one lock file, `store.lock`, to serialise every writer (save, delete,
//! passphrase change, data-key rotation). [`LocalCredentialLock`] is a separate lock per
//! credential (`locks/<hashed id>.lock`) for cross-process coordination above the store,
//! such as one refresh at a time per credential.

use std::fs::File;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use hive_cred_core::Result;

use crate::fs::{io_error, open_lock_file};

/// How to wait for a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Block until the lock is free.
    Block,
    /// Return `Ok(None)` if another holder has it.
    Try,
}

/// An exclusive advisory lock on a file, released on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Opens (creating with mode 0600) `path` and locks it exclusively.
    pub(crate) fn acquire(path: &Path, wait: Wait) -> Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        let locked = match wait {
            Wait::Block => file.lock_exclusive().map(|()| true),
            Wait::Try => file.try_lock_exclusive(),
        }
        .map_err(|e| io_error(e, "could not lock", path))?;
        Ok(locked.then(|| FileLock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// The locked file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first makes the release
        // immediate even if the descriptor were shared. Errors here cannot be reported.
        let _ = FileExt::unlock(&self.file);
    }
}

/// An exclusive cross-process lock on one credential, held until dropped (or released).
///
/// Obtained from [`LocalStorage::lock_credential`](crate::LocalStorage::lock_credential),
/// or wrapped in a core [`CredentialLock`](hive_cred_core::CredentialLock) by
/// [`CredentialStorage::lock`](hive_cred_core::CredentialStorage::lock), which
/// `CredentialStore` takes around each refresh. It does not block reads or writes of the
/// credential through the store; it is for work that must happen one process at a time.
/// The lock file is named by the keyed hash of the id, so it leaks no id.
#[derive(Debug)]
pub struct LocalCredentialLock {
    lock: FileLock,
}

impl LocalCredentialLock {
    pub(crate) fn acquire(path: &Path, wait: Wait) -> Result<Option<LocalCredentialLock>> {
        Ok(FileLock::acquire(path, wait)?.map(|lock| LocalCredentialLock { lock }))
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }
}

#[async_trait::async_trait]
impl hive_cred_core::LockRelease for LocalCredentialLock {
    async fn release(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_handle_cannot_take_a_held_lock_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = FileLock::acquire(&path, Wait::Block).unwrap().unwrap();
        assert!(FileLock::acquire(&path, Wait::Try).unwrap().is_none());
        drop(first);
        assert!(FileLock::acquire(&path, Wait::Try).unwrap().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn lock_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.lock");
        let _lock = FileLock::acquire(&path, Wait::Block).unwrap().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
