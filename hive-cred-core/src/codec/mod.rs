//! The one audited way to serialize secret values.
//!
//! Storage backends that must persist values in opaque (encrypted) records use the
//! compact, versioned binary form: [`to_stored_bytes`] writes it, [`from_stored`] reads
//! it; its layout is documented in the source (`codec/binary.rs`). Output buffers are
//! zeroized on drop and sized before writing, so no reallocation leaves a copy of a value
//! behind. Nothing else in hive-cred serializes values.

mod binary;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::credential::{CredentialKey, CredentialObject, Metadata};
use crate::error::{Error, Result};
use crate::id::CredentialId;

/// Adds a key read back from the stored form to `keys`. A bad name, or a name stored
/// twice, makes the record `Corrupted`.
fn add_stored_key(
    keys: &mut BTreeMap<String, CredentialKey>,
    id: &CredentialId,
    name: String,
    value: SecretString,
    expires_at: Option<DateTime<Utc>>,
    metadata: Metadata,
) -> Result<()> {
    let key = CredentialKey::stored(id, name, value, expires_at, metadata)?;
    if let Some(duplicate) = keys.insert(key.name().to_owned(), key) {
        return Err(Error::corrupted("stored credential has a key twice")
            .with_context("id", id)
            .with_context("key", duplicate.name()));
    }
    Ok(())
}

/// Serializes a credential, values included, to the compact binary stored form.
///
/// # Errors
/// `InvalidInput` if a field is over 4 GiB.
pub fn to_stored_bytes(credential: &CredentialObject) -> Result<Zeroizing<Vec<u8>>> {
    binary::encode(credential)
}

/// Reads the binary form of [`to_stored_bytes`].
///
/// # Errors
/// `Corrupted`, naming what is wrong but never quoting the input.
pub fn from_stored(bytes: &[u8]) -> Result<CredentialObject> {
    match bytes.first() {
        Some(&binary::MARKER) => binary::decode(bytes),
        Some(_) => Err(Error::corrupted(
            "stored credential is not in the binary stored form",
        )),
        None => Err(Error::corrupted("stored credential is empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialType;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    fn sample(value: &str) -> CredentialObject {
        let mut c = CredentialObject::builder("gh.prod", CredentialType::OAuth2)
            .provider_id("oauth2_provider")
            .auto_refresh(true)
            .description("GitHub")
            .tag("team-a")
            .build()
            .unwrap();
        c.set_key_with_metadata(
            "access_token",
            value,
            Some(Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 6).unwrap()),
            Metadata::from([("token_type".into(), "bearer".into())]),
        )
        .unwrap();
        c.set_key("refresh_token", "r", None).unwrap();
        c.set_last_refreshed(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        c.set_version(3);
        let mut account = crate::CredentialAccount::new("github", Some("work"))
            .unwrap()
            .with_identity(
                crate::CredentialIdentity::new()
                    .with_username("octo")
                    .with_account_id("42"),
            );
        account.record_check(
            crate::AccountStatus::Failed,
            Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap(),
        );
        c.set_account(Some(account));
        c
    }

    #[test]
    fn round_trip_keeps_everything() {
        let c = sample("ghp_ünïcode\u{0}\n\"quoted\"");
        let bytes = to_stored_bytes(&c).unwrap();
        assert_eq!(bytes[0], binary::MARKER);
        let back = from_stored(&bytes).unwrap();
        assert_eq!(back.metadata(), c.metadata());
        assert_eq!(back.account().unwrap().identity.label(), Some("octo"));
        assert_eq!(
            back.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            c.get_key("access_token").unwrap().expose_secret()
        );
    }

    #[test]
    fn other_forms_and_empty_input_are_corrupted() {
        for bytes in [&b""[..], b"{\"v\":1}", b"\x02"] {
            let err = from_stored(bytes).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        }
    }

    #[test]
    fn a_key_stored_twice_or_badly_named_is_corrupted() {
        let mut c = CredentialObject::new("x", CredentialType::ApiKey).unwrap();
        c.set_key("ka", "1", None).unwrap();
        c.set_key("kb", "2", None).unwrap();
        let bin = to_stored_bytes(&c).unwrap();
        let at = bin.windows(2).position(|w| w == b"kb").unwrap();
        let rename = |to: &[u8]| {
            let mut bytes = bin.to_vec();
            bytes[at..at + 2].copy_from_slice(to);
            from_stored(&bytes).unwrap_err()
        };
        let err = rename(b"ka");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(err.to_string().contains("twice"), "{err}");
        let err = rename(b"k.");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(err.to_string().contains("invalid key name"), "{err}");
    }

    proptest! {
        #[test]
        fn values_round_trip_byte_exact(value in "\\PC{0,200}", name in "[a-z_]{1,20}") {
            let mut c = CredentialObject::new("p", CredentialType::Custom).unwrap();
            c.set_key(name.clone(), value.clone(), None).unwrap();
            let back = from_stored(&to_stored_bytes(&c).unwrap()).unwrap();
            prop_assert_eq!(back.get_key(&name).unwrap().expose_secret(), value.as_str()); // EXPOSE: the test compares the secret value.
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = from_stored(&bytes);
        }

        #[test]
        fn binary_decoder_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(first) = bytes.first_mut() {
                *first = binary::MARKER;
            }
            let _ = from_stored(&bytes);
        }

        #[test]
        fn random_credentials_round_trip(
            id in "[a-z][a-z0-9_.-]{0,30}",
            keys in proptest::collection::btree_map(
                "[A-Za-z0-9_-]{1,20}",
                ("\\PC{0,100}", proptest::option::of(-62_135_596_800i64..253_402_300_799), 0u32..1_000_000_000),
                0..5,
            ),
            tags in proptest::collection::vec("\\PC{0,10}", 0..3),
            description in proptest::option::of("\\PC{0,40}"),
            flags in (any::<bool>(), any::<bool>(), any::<u64>()),
        ) {
            prop_assume!(!id.contains(".."));
            let mut builder = CredentialObject::builder(id, CredentialType::BasicAuth)
                .auto_refresh(flags.0);
            if flags.1 {
                builder = builder.provider_id("p");
            }
            if let Some(d) = description {
                builder = builder.description(d);
            }
            for tag in tags {
                builder = builder.tag(tag);
            }
            let mut c = builder.build().unwrap();
            for (name, (value, expiry, nanos)) in &keys {
                let at = expiry.map(|s| DateTime::<Utc>::from_timestamp(s, *nanos).unwrap());
                c.set_key_with_metadata(
                    name.clone(),
                    value.clone(),
                    at,
                    Metadata::from([("m".to_string(), value.clone())]),
                )
                .unwrap();
            }
            c.set_version(flags.2);
            if flags.0 {
                c.set_last_refreshed(DateTime::<Utc>::from_timestamp(1, 2).unwrap());
            }
            let bin = to_stored_bytes(&c).unwrap();
            prop_assert_eq!(bin[0], binary::MARKER);
            let back = from_stored(&bin).unwrap();
            prop_assert_eq!(back.metadata(), c.metadata());
            for (name, (value, _, _)) in &keys {
                // EXPOSE: the test compares the secret value.
                prop_assert_eq!(back.get_key(name).unwrap().expose_secret(), value.as_str());
            }
        }
    }

    #[test]
    fn every_truncation_or_extension_of_the_binary_form_is_corrupted_without_quoting() {
        let canary = "canary-9d1e-binary";
        let c = sample(canary);
        let bin = to_stored_bytes(&c).unwrap();
        let back = from_stored(&bin).unwrap();
        assert_eq!(back.metadata(), c.metadata());
        for len in 0..bin.len() {
            let err = from_stored(&bin[..len]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupted, "length {len}");
            assert!(!format!("{err} {err:?}").contains(canary));
        }
        let mut longer = bin.to_vec();
        longer.push(0);
        assert_eq!(
            from_stored(&longer).unwrap_err().kind(),
            crate::ErrorKind::Corrupted
        );
        // Unknown type code and unknown flags.
        for (at, byte) in [(1, 99), (2, 0x80)] {
            let mut bad = bin.to_vec();
            bad[at] = byte;
            assert_eq!(
                from_stored(&bad).unwrap_err().kind(),
                crate::ErrorKind::Corrupted
            );
        }
    }

    #[test]
    fn a_forged_count_is_refused_before_allocating() {
        // Marker, type, no flags, id "x", then a tag count of 4 billion.
        let mut bytes = vec![binary::MARKER, 1, 0, 1, 0, 0, 0, b'x'];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            from_stored(&bytes).unwrap_err().kind(),
            crate::ErrorKind::Corrupted
        );
    }
}
