//! Where the store's key-encryption key comes from: [`KeySource`], [`RawKey`] and the
//! scrypt cost [`ScryptParams`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use rand::RngCore as _;
use zeroize::Zeroizing;

/// Environment variable holding a raw 32-byte key, base64 (standard or URL-safe alphabet,
/// padding optional).
pub const ENV_KEY: &str = "HIVE_CREDENTIAL_KEY";
/// Environment variable holding a passphrase (read when [`ENV_KEY`] is unset).
pub const ENV_PASSPHRASE: &str = "HIVE_CREDENTIAL_PASSPHRASE";

/// Length of keys (KEK, DEK, raw keys) in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// A raw 256-bit key-encryption key.
///
/// Debug prints `RawKey([REDACTED])`; the bytes are zeroized on drop.
#[derive(Clone)]
pub struct RawKey(Zeroizing<[u8; KEY_LEN]>);

impl RawKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        RawKey(Zeroizing::new(bytes))
    }

    /// Decodes a base64 key (standard or URL-safe alphabet, padding optional, surrounding
    /// whitespace ignored). Fails with `ErrorKind::Config` unless it decodes to 32 bytes.
    /// The error never quotes the input.
    pub fn from_base64(text: &SecretString) -> Result<Self> {
        // EXPOSE: decoding the key text into key bytes; nothing is printed or stored.
        let text = text.expose_secret().trim();
        let decoded = [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| {
                Error::config(format!(
                    "{ENV_KEY} is not valid base64; it must be 32 random bytes in base64 \
                     (generate one with `hive-cred init`)"
                ))
            })?;
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            Error::config(format!(
                "{ENV_KEY} decodes to {} bytes; it must be exactly {KEY_LEN} bytes in base64",
                decoded.len()
            ))
        })?;
        Ok(RawKey::from_bytes(bytes))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut_slice())?;
        Ok(RawKey(bytes))
    }

    /// The key as standard base64 (the format [`ENV_KEY`] takes).
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.0.as_slice()))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawKey([REDACTED])")
    }
}

/// What protects the store's data key.
///
/// - `Passphrase`: the key-encryption key is scrypt(passphrase, salt, params), derived once
///   per [`open`](crate::LocalStorage::open).
/// - `RawKey`: a random 32-byte key used directly (no derivation cost).
///
/// Debug never shows the secret.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum KeySource {
    /// A human passphrase, stretched with scrypt.
    Passphrase(SecretString),
    /// A raw 256-bit key.
    RawKey(RawKey),
}

impl KeySource {
    /// Reads [`ENV_KEY`] (`HIVE_CREDENTIAL_KEY`, base64 raw key), then [`ENV_PASSPHRASE`]
    /// (`HIVE_CREDENTIAL_PASSPHRASE`). Empty values count as unset.
    ///
    /// # Errors
    /// `ErrorKind::Config` when neither is set (saying how to set one; no key is ever
    /// generated silently), or when `HIVE_CREDENTIAL_KEY` is not 32 bytes of base64.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with a custom variable lookup (for tests and for
    /// configuration layers that are not the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let non_empty = |name: &str| {
            lookup(name)
                .map(SecretString::from)
                // EXPOSE: emptiness check only.
                .filter(|v| !v.expose_secret().trim().is_empty())
        };
        if let Some(key) = non_empty(ENV_KEY) {
            return RawKey::from_base64(&key).map(KeySource::RawKey);
        }
        if let Some(passphrase) = non_empty(ENV_PASSPHRASE) {
            return Ok(KeySource::Passphrase(passphrase));
        }
        Err(Error::config(format!(
            "no key for the local credential store: set {ENV_KEY} to a base64 32-byte key \
             (`hive-cred init` generates one and shows it once) or {ENV_PASSPHRASE} to a passphrase"
        )))
    }

    /// A fresh random raw key, plus its base64 text (what `HIVE_CREDENTIAL_KEY` takes) for a
    /// CLI `init` to show the user once.
    pub fn generate() -> Result<(KeySource, SecretString)> {
        let key = RawKey::generate()?;
        let text = key.to_base64();
        Ok((KeySource::RawKey(key), text))
    }

    pub(crate) fn kind(&self) -> KdfKind {
        match self {
            KeySource::Passphrase(_) => KdfKind::Scrypt,
            KeySource::RawKey(_) => KdfKind::Raw,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            // EXPOSE: emptiness check only.
            KeySource::Passphrase(p) if p.expose_secret().is_empty() => Err(Error::config(
                "the passphrase for the local credential store must not be empty",
            )),
            _ => Ok(()),
        }
    }
}

/// How the key-encryption key is obtained, as recorded in the store header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KdfKind {
    Raw = 0,
    Scrypt = 1,
}

/// scrypt cost parameters: `N = 2^log_n`, block size `r`, parallelism `p`.
///
/// Memory use is `128 * r * 2^log_n` bytes; time grows with the work `N * r * p`. The
/// store header records the parameters it was created with, and is authenticated only
/// after the key is derived with them, so [`open`](crate::LocalStorage::open) refuses
/// headers asking for more than [`MAX_WORK`](Self::MAX_WORK) (twice the default's work),
/// [`MAX_LOG_N`](Self::MAX_LOG_N), [`MAX_R`](Self::MAX_R), [`MAX_P`](Self::MAX_P) or
/// [`MAX_MEMORY`](Self::MAX_MEMORY) before deriving anything: a forged header costs at
/// most about twice a normal `open` before it is rejected.
///
/// # Default
/// `log_n = 17, r = 8, p = 1` (128 MiB, roughly half a second on a laptop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScryptParams {
    log_n: u8,
    r: u32,
    p: u32,
}

impl ScryptParams {
    /// Largest accepted `log_n`.
    pub const MAX_LOG_N: u8 = 20;
    /// Largest accepted `r`.
    pub const MAX_R: u32 = 32;
    /// Largest accepted `p`.
    pub const MAX_P: u32 = 16;
    /// Largest accepted work `2^log_n * r * p`: twice the default's (`2^17 * 8 * 1`).
    pub const MAX_WORK: u64 = 1 << 21;
    /// Largest accepted memory cost in bytes (256 MiB, what the work cap allows at `p = 1`).
    pub const MAX_MEMORY: u64 = 128 * Self::MAX_WORK;

    /// Validated parameters. `ErrorKind::InvalidInput` when `log_n` is 0 or any value is
    /// over the caps above.
    pub fn new(log_n: u8, r: u32, p: u32) -> Result<Self> {
        let params = ScryptParams { log_n, r, p };
        params
            .check()
            .map_err(|why| Error::invalid_input(format!("invalid scrypt parameters: {why}")))?;
        Ok(params)
    }

    /// `log_n` (the CPU/memory cost is `2^log_n`).
    pub fn log_n(&self) -> u8 {
        self.log_n
    }

    /// Block size.
    pub fn r(&self) -> u32 {
        self.r
    }

    /// Parallelism.
    pub fn p(&self) -> u32 {
        self.p
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let ScryptParams { log_n, r, p } = *self;
        if log_n == 0 || r == 0 || p == 0 {
            return Err(format!(
                "log_n={log_n}, r={r}, p={p}: all must be at least 1"
            ));
        }
        if log_n > Self::MAX_LOG_N || r > Self::MAX_R || p > Self::MAX_P {
            return Err(format!(
                "log_n={log_n}, r={r}, p={p} exceed the caps log_n<={}, r<={}, p<={}",
                Self::MAX_LOG_N,
                Self::MAX_R,
                Self::MAX_P
            ));
        }
        let work = (u64::from(r) * u64::from(p)) << log_n;
        if work > Self::MAX_WORK {
            return Err(format!(
                "log_n={log_n}, r={r}, p={p} ask for 2^log_n*r*p = {work}, over the work cap \
                 of {} (twice the default's)",
                Self::MAX_WORK
            ));
        }
        let memory = (128u64 * u64::from(r)) << log_n;
        if memory > Self::MAX_MEMORY {
            return Err(format!(
                "log_n={log_n}, r={r} need {memory} bytes, over the cap of {} bytes",
                Self::MAX_MEMORY
            ));
        }
        Ok(())
    }

    pub(crate) fn from_header(log_n: u8, r: u32, p: u32) -> std::result::Result<Self, String> {
        let params = ScryptParams { log_n, r, p };
        params.check()?;
        Ok(params)
    }
}

impl Default for ScryptParams {
    fn default() -> Self {
        ScryptParams {
            log_n: 17,
            r: 8,
            p: 1,
        }
    }
}

/// Derives the key-encryption key. Blocking (scrypt): call from `spawn_blocking`.
pub(crate) fn derive_kek(
    source: &KeySource,
    params: &ScryptParams,
    salt: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    match source {
        KeySource::RawKey(key) => Ok(Zeroizing::new(*key.bytes())),
        KeySource::Passphrase(passphrase) => {
            let scrypt_params = scrypt::Params::new(params.log_n, params.r, params.p, KEY_LEN)
                .map_err(|_| {
                    Error::invalid_input(format!(
                        "invalid scrypt parameters log_n={}, r={}, p={}",
                        params.log_n, params.r, params.p
                    ))
                })?;
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            // EXPOSE: the passphrase is the scrypt input; the output is a zeroized key.
            let input = passphrase.expose_secret().as_bytes();
            scrypt::scrypt(input, salt, &scrypt_params, out.as_mut_slice()).map_err(|_| {
                Error::new(ErrorKind::Unexpected, "scrypt rejected the output length")
            })?;
            Ok(out)
        }
    }
}

/// Fills `buf` from the operating system's random generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    rand::rngs::OsRng.try_fill_bytes(buf).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("the operating system's random generator failed: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::testkit::CANARY;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn from_lookup_prefers_the_raw_key() {
        let key = STANDARD.encode([7u8; 32]);
        let src =
            KeySource::from_lookup(lookup(&[(ENV_KEY, &key), (ENV_PASSPHRASE, "pw")])).unwrap();
        match src {
            KeySource::RawKey(k) => assert_eq!(k.bytes(), &[7u8; 32]),
            other => panic!("expected a raw key, got {other:?}"),
        }
    }

    #[test]
    fn from_lookup_falls_back_to_the_passphrase_and_ignores_empty_values() {
        let src = KeySource::from_lookup(lookup(&[(ENV_KEY, "  "), (ENV_PASSPHRASE, "hunter2")]))
            .unwrap();
        match src {
            KeySource::Passphrase(p) => assert_eq!(p.expose_secret(), "hunter2"), // EXPOSE: the test compares the secret value.
            other => panic!("expected a passphrase, got {other:?}"),
        }
    }

    #[test]
    fn from_lookup_without_variables_is_a_config_error_naming_both() {
        let err = KeySource::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains(ENV_KEY));
        assert!(err.message().contains(ENV_PASSPHRASE));
    }

    #[test]
    fn bad_raw_keys_are_config_errors_that_do_not_quote_the_input() {
        let short = URL_SAFE.encode(CANARY.as_bytes());
        for bad in [format!("!!{CANARY}!!"), short] {
            let err = KeySource::from_lookup(lookup(&[(ENV_KEY, &bad)])).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(CANARY) && !shown.contains(&bad), "{shown}");
        }
    }

    #[test]
    fn all_base64_flavours_decode() {
        let raw: [u8; 32] = core::array::from_fn(|i| (i * 9 + 250) as u8);
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = SecretString::from(format!(" {}\n", engine.encode(raw)));
            assert_eq!(RawKey::from_base64(&text).unwrap().bytes(), &raw);
        }
    }

    #[test]
    fn generate_returns_a_key_whose_text_decodes_back() {
        let (src, text) = KeySource::generate().unwrap();
        let KeySource::RawKey(key) = src else {
            panic!("generate gives a raw key")
        };
        assert_eq!(RawKey::from_base64(&text).unwrap().bytes(), key.bytes());
        let (_, other) = KeySource::generate().unwrap();
        assert_ne!(other.expose_secret(), text.expose_secret()); // EXPOSE: the test compares the secret value.
    }

    #[test]
    fn debug_never_shows_secrets() {
        let src = KeySource::Passphrase(SecretString::from(CANARY));
        assert!(!format!("{src:?}").contains(CANARY));
        let key = RawKey::from_bytes([0x41; 32]);
        assert_eq!(format!("{key:?}"), "RawKey([REDACTED])");
    }

    #[test]
    fn scrypt_params_are_capped() {
        assert_eq!(
            ScryptParams::default(),
            ScryptParams::new(17, 8, 1).unwrap()
        );
        assert!(ScryptParams::new(0, 8, 1).is_err());
        assert!(ScryptParams::new(21, 8, 1).is_err());
        assert!(ScryptParams::new(10, 8, 17).is_err());
        // Total work, not only memory: p = 16 at the default's memory is 16x its time.
        let err = ScryptParams::new(17, 8, 16).unwrap_err();
        assert!(err.message().contains("work cap"), "{err}");
        assert!(
            ScryptParams::new(17, 8, 3).is_err(),
            "3x the default's work"
        );
        assert!(ScryptParams::new(17, 8, 2).is_ok(), "2x the default's work");
        assert!(ScryptParams::new(18, 8, 1).is_ok(), "2x, as memory");
        assert!(ScryptParams::new(20, 2, 1).is_ok());
        assert!(
            ScryptParams::new(20, 8, 1).is_err(),
            "8x the default's work"
        );
    }

    #[test]
    fn empty_passphrase_is_rejected() {
        let err = KeySource::Passphrase(SecretString::from(""))
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn scrypt_derivation_depends_on_passphrase_and_salt() {
        let params = ScryptParams::new(4, 8, 1).unwrap();
        let a = KeySource::Passphrase(SecretString::from("a"));
        let b = KeySource::Passphrase(SecretString::from("b"));
        let k1 = derive_kek(&a, &params, &[1; 32]).unwrap();
        assert_eq!(*k1, *derive_kek(&a, &params, &[1; 32]).unwrap());
        assert_ne!(*k1, *derive_kek(&b, &params, &[1; 32]).unwrap());
        assert_ne!(*k1, *derive_kek(&a, &params, &[2; 32]).unwrap());
    }
}
