//! [`CredentialId`]: the validated name of a credential.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The longest id accepted, in bytes (ids are ASCII, so also in characters).
pub const MAX_ID_LEN: usize = 128;

/// The validated id of a credential, such as `github_production` or `brave_search`.
///
/// # Rules
/// - 1 to 128 characters, each one of `A-Z a-z 0-9 _ . -`;
/// - does not start with `.` and contains no `..`.
///
/// So an id can never name a path outside a store (`/`, `\`, NUL and `..` are impossible)
/// and is safe as a file name, a URL path segment and a Vault path segment.
///
/// ```
/// use hive_cred_core::CredentialId;
///
/// let id: CredentialId = "github_production".parse()?;
/// assert_eq!(id.as_str(), "github_production");
/// assert!("../etc/passwd".parse::<CredentialId>().is_err());
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(Arc<str>);

impl CredentialId {
    /// Validates `id`, naming the broken rule on failure (`ErrorKind::InvalidInput`).
    pub fn new(id: &str) -> Result<Self> {
        validate(id)?;
        Ok(CredentialId(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `id` against the [`CredentialId`] rules without allocating.
pub fn validate(id: &str) -> Result<()> {
    let fail = |rule: &str| {
        // The id itself is not a secret, but it may be arbitrary garbage: show it escaped
        // and bounded.
        let shown: String = id.chars().take(40).collect();
        Err(Error::invalid_input(format!(
            "invalid credential id {shown:?}: {rule}"
        )))
    };
    let bytes = id.as_bytes();
    // Fast path: one pass over the bytes; only a failure pays for finding the reason.
    let mut prev_dot = false;
    let mut ok = !bytes.is_empty() && bytes.len() <= MAX_ID_LEN && bytes[0] != b'.';
    if ok {
        for &b in bytes {
            let dot = b == b'.';
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || dot) || (dot && prev_dot) {
                ok = false;
                break;
            }
            prev_dot = dot;
        }
    }
    if ok {
        return Ok(());
    }
    if id.is_empty() {
        return fail("an id must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return fail("an id must be at most 128 characters");
    }
    if id.starts_with('.') {
        return fail("an id must not start with '.'");
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        let what = match bad {
            '/' | '\\' => "path separators are not allowed",
            '\0' => "NUL is not allowed",
            c if c.is_whitespace() => "whitespace is not allowed",
            _ => "only A-Z, a-z, 0-9, '_', '.' and '-' are allowed",
        };
        return fail(what);
    }
    fail("an id must not contain '..'")
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({:?})", &*self.0)
    }
}

impl AsRef<str> for CredentialId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for CredentialId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for CredentialId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CredentialId::new(s)
    }
}

impl TryFrom<&str> for CredentialId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        CredentialId::new(s)
    }
}

impl TryFrom<String> for CredentialId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        CredentialId::new(&s)
    }
}

impl TryFrom<&String> for CredentialId {
    type Error = Error;
    fn try_from(s: &String) -> Result<Self> {
        CredentialId::new(s)
    }
}

impl From<&CredentialId> for CredentialId {
    fn from(id: &CredentialId) -> Self {
        id.clone()
    }
}

impl serde::Serialize for CredentialId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CredentialId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CredentialId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn accepts_typical_ids() {
        for id in [
            "github_production",
            "brave_search",
            "a",
            "A-b.c_d",
            "x.y.z",
            "9",
            "-x",
            "_",
        ] {
            assert_eq!(CredentialId::new(id).unwrap().as_str(), id);
        }
        assert!(CredentialId::new(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_each_rule_with_its_reason() {
        let cases = [
            ("", "empty"),
            (".hidden", "start with '.'"),
            ("a..b", "'..'"),
            ("..", "start with '.'"),
            ("a/b", "path separators"),
            ("a\\b", "path separators"),
            ("a\0b", "NUL"),
            ("a b", "whitespace"),
            ("é", "only A-Z"),
        ];
        for (id, reason) in cases {
            let err = CredentialId::new(id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{id:?}");
            assert!(err.to_string().contains(reason), "{id:?}: {err}");
        }
        let err = CredentialId::new(&"a".repeat(129)).unwrap_err();
        assert!(err.to_string().contains("at most 128"));
    }

    #[test]
    fn serde_validates() {
        let id: CredentialId = serde_json::from_str("\"ok.id\"").unwrap();
        assert_eq!(id.as_str(), "ok.id");
        assert!(serde_json::from_str::<CredentialId>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"ok.id\"");
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(id in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}") {
            prop_assume!(!id.contains(".."));
            let parsed = CredentialId::new(&id).unwrap();
            prop_assert_eq!(parsed.to_string(), id.clone());
            let again: CredentialId = parsed.as_str().parse().unwrap();
            prop_assert_eq!(again, parsed);
        }

        #[test]
        fn accepted_ids_are_path_safe(id in "\\PC{0,140}") {
            if let Ok(parsed) = CredentialId::new(&id) {
                let s = parsed.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_ID_LEN);
                prop_assert!(!s.contains('/') && !s.contains('\\') && !s.contains('\0'));
                prop_assert!(!s.starts_with('.') && !s.contains(".."));
                prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
            }
        }

        #[test]
        fn any_forbidden_char_is_rejected(prefix in "[a-z]{0,10}", bad in "[^A-Za-z0-9_.-]", suffix in "[a-z]{0,10}") {
            let id = format!("{prefix}{bad}{suffix}");
            prop_assert!(CredentialId::new(&id).is_err());
        }
    }
}
