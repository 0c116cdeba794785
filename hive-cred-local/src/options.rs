//! [`LocalStorageOptions`]: how [`LocalStorage::open_with`](crate::LocalStorage::open_with)
//! creates and checks a store.

use crate::key::ScryptParams;

/// Options for [`LocalStorage::open_with`](crate::LocalStorage::open_with).
///
/// # Default
/// scrypt cost [`ScryptParams::default`] (`log_n = 17, r = 8, p = 1`) for stores created
/// or re-keyed with a passphrase; permissions that are too open produce a warning, not an
/// error.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct LocalStorageOptions {
    scrypt: ScryptParams,
    strict_permissions: bool,
}

impl LocalStorageOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// scrypt cost used when this handle creates a store or changes its passphrase.
    /// Opening an existing store always uses the cost recorded in its header (capped, see
    /// [`ScryptParams`]). Lower it only in tests.
    pub fn with_scrypt_params(mut self, params: ScryptParams) -> Self {
        self.scrypt = params;
        self
    }

    /// When `true`, `open` refuses a store directory or header readable by group or others
    /// with `ErrorKind::PermissionDenied`, instead of logging a warning.
    pub fn with_strict_permissions(mut self, strict: bool) -> Self {
        self.strict_permissions = strict;
        self
    }

    /// The scrypt cost for new or re-keyed stores.
    pub fn scrypt_params(&self) -> ScryptParams {
        self.scrypt
    }

    /// Whether too-open permissions are refused.
    pub fn strict_permissions(&self) -> bool {
        self.strict_permissions
    }
}
