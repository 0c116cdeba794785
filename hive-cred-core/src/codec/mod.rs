//! The one audited way to serialize secret values.
//!
//! Storage backends that must persist values (encrypted files, Vault) use one of two
//! versioned forms:
//!
//! - JSON, [`to_stored_json`] / [`from_stored_json`], for stores whose contents people or
//!   other tools may read:
//!
//!   ```json
//!   {"v":1,"id":"github","credential_type":"oauth2",...,
//!    "keys":{"access_token":{"value":"...","expires_at":"2030-01-01T00:00:00Z"}}}
//!   ```
//!
//! - a compact binary form, [`to_stored_bytes`], for opaque (encrypted) records that are
//!   read on every load; its layout is documented in the source (`codec/binary.rs`).
//!
//! [`from_stored`] reads either (the binary form starts with byte `0x01`, JSON with `{`).
//! Output buffers are zeroized on drop and sized before writing, so no reallocation
//! leaves a copy of a value behind. Nothing else in hive-cred serializes values.

mod binary;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::credential::{
    CredentialKey, CredentialMetadata, CredentialObject, CredentialType, Metadata,
};
use crate::error::{Error, Result};
use crate::id::CredentialId;

/// The current stored format version.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct StoredOut<'a> {
    v: u32,
    id: &'a str,
    credential_type: CredentialType,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_id: Option<&'a str>,
    auto_refresh: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_refreshed: Option<DateTime<Utc>>,
    version: u64,
    keys: BTreeMap<&'a str, KeyOut<'a>>,
}

#[derive(Serialize)]
struct KeyOut<'a> {
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a Metadata,
}

#[derive(Deserialize)]
struct StoredIn {
    v: u32,
    id: CredentialId,
    credential_type: CredentialType,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    auto_refresh: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(deserialize_with = "timestamp::de")]
    created_at: DateTime<Utc>,
    #[serde(deserialize_with = "timestamp::de")]
    updated_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "timestamp::de_option")]
    last_refreshed: Option<DateTime<Utc>>,
    #[serde(default)]
    version: u64,
    keys: KeysIn,
}

/// The `keys` object in file order, without building a map that is rebuilt anyway.
struct KeysIn(Vec<(String, KeyIn)>);

impl<'de> Deserialize<'de> for KeysIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KeysIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of keys by name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<KeysIn, A::Error> {
                let mut keys = Vec::with_capacity(map.size_hint().unwrap_or(2).min(64));
                while let Some(entry) = map.next_entry()? {
                    keys.push(entry);
                }
                Ok(KeysIn(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[derive(Deserialize)]
struct KeyIn {
    value: SecretString,
    #[serde(default, deserialize_with = "timestamp::de_option")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    metadata: Metadata,
}

/// Reading the timestamps this module writes (chrono's RFC 3339 form,
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`) without chrono's general parser, which was a
/// quarter of the decode time. Anything else goes to chrono's parser, so exactly what
/// chrono accepts is accepted.
mod timestamp {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    pub(super) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(TimestampVisitor)
    }

    pub(super) fn de_option<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct TimestampVisitor;

    impl Visitor<'_> for TimestampVisitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }
        fn visit_str<E: Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            parse(text).ok_or_else(|| E::custom("invalid timestamp"))
        }
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp or null")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de(d).map(Some)
        }
    }

    /// The timestamp in `text`, `None` when it is not one.
    pub(super) fn parse(text: &str) -> Option<DateTime<Utc>> {
        fast(text.as_bytes()).or_else(|| text.parse().ok())
    }

    /// `YYYY-MM-DDTHH:MM:SS[.d{1,9}]Z` with seconds 00-59; `None` for anything else
    /// (including valid forms it does not handle, which the caller hands to chrono).
    fn fast(b: &[u8]) -> Option<DateTime<Utc>> {
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<u32> {
            b[range].iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let year = i32::try_from(num(0..4)?).ok()?;
        let (month, day) = (num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if second > 59 {
            return None; // a leap second: chrono's own rules apply
        }
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                let n = num(20..20 + digits.len())?;
                n * 10u32.pow(9 - u32::try_from(digits.len()).ok()?)
            }
            _ => return None,
        };
        let naive = NaiveDate::from_ymd_opt(year, month, day)?
            .and_hms_nano_opt(hour, minute, second, nanos)?;
        Some(naive.and_utc())
    }
}

/// Serializes a credential, values included, to the versioned stored JSON format.
pub fn to_stored_json(credential: &CredentialObject) -> Result<Zeroizing<Vec<u8>>> {
    let out = StoredOut {
        v: FORMAT_VERSION,
        id: credential.id().as_str(),
        credential_type: credential.credential_type(),
        provider_id: credential.provider_id(),
        auto_refresh: credential.auto_refresh(),
        description: credential.description(),
        tags: credential.tags(),
        created_at: credential.created_at(),
        updated_at: credential.updated_at(),
        last_refreshed: credential.last_refreshed(),
        version: credential.version(),
        keys: credential
            .keys()
            .map(|k| {
                (
                    k.name(),
                    KeyOut {
                        // EXPOSE: the audited codec is the one place values are serialized,
                        // into a buffer that is zeroized on drop.
                        value: k.value().expose_secret(),
                        expires_at: k.expires_at(),
                        metadata: k.metadata(),
                    },
                )
            })
            .collect(),
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    serde_json::to_writer(&mut *buf, &out).map_err(|e| {
        // serde_json errors on writing to a Vec only for non-string map keys; no value text.
        Error::new(
            crate::ErrorKind::Unexpected,
            format!("could not encode credential: {e}"),
        )
        .with_context("id", credential.id())
    })?;
    Ok(buf)
}

/// Parses the stored JSON format. Malformed input and unknown format versions fail with
/// `ErrorKind::Corrupted`; the message never quotes the input.
pub fn from_stored_json(bytes: &[u8]) -> Result<CredentialObject> {
    // One UTF-8 check of the whole text is cheaper than serde_json's check per string.
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::corrupted("stored credential is not valid UTF-8"))?;
    let stored: StoredIn = serde_json::from_str(text).map_err(|e| {
        Error::corrupted(format!(
            "stored credential is not valid (line {}, column {}, {:?})",
            e.line(),
            e.column(),
            e.classify()
        ))
    })?;
    if stored.v != FORMAT_VERSION {
        return Err(Error::corrupted(format!(
            "stored credential has format version {}, this build reads version {FORMAT_VERSION}; upgrade hive-cred",
            stored.v
        ))
        .with_context("id", &stored.id));
    }
    let mut keys = BTreeMap::new();
    for (name, k) in stored.keys.0 {
        add_stored_key(
            &mut keys,
            &stored.id,
            name,
            k.value,
            k.expires_at,
            k.metadata,
        )?;
    }
    let meta = CredentialMetadata {
        id: stored.id,
        credential_type: stored.credential_type,
        provider_id: stored.provider_id,
        auto_refresh: stored.auto_refresh,
        description: stored.description,
        tags: stored.tags,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
        last_refreshed: stored.last_refreshed,
        version: stored.version,
        keys: BTreeMap::new(),
    };
    Ok(CredentialObject::from_keys(meta, keys))
}

/// Adds a key read back from either stored form to `keys`. A bad name, or a name stored
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

/// Reads either stored form: the binary form of [`to_stored_bytes`] or the JSON of
/// [`to_stored_json`].
///
/// # Errors
/// `Corrupted`, naming what is wrong but never quoting the input.
pub fn from_stored(bytes: &[u8]) -> Result<CredentialObject> {
    match bytes.first() {
        Some(&binary::MARKER) => binary::decode(bytes),
        _ => from_stored_json(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

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
        c
    }

    #[test]
    fn round_trip_keeps_everything() {
        let c = sample("ghp_ünïcode\u{0}\n\"quoted\"");
        let bytes = to_stored_json(&c).unwrap();
        assert!(bytes.starts_with(b"{\"v\":1,"));
        let back = from_stored_json(&bytes).unwrap();
        assert_eq!(back.metadata(), c.metadata());
        assert_eq!(
            back.get_key("access_token").unwrap().expose_secret(), // EXPOSE: the test compares the secret value.
            c.get_key("access_token").unwrap().expose_secret()
        );
    }

    #[test]
    fn malformed_and_future_versions_are_corrupted_without_quoting_input() {
        let canary = "canary-5f3b-codec";
        let bad = format!("{{\"v\":1,\"id\":\"x\",\"keys\":{{\"a\":{{\"value\":{canary}}}}}}}");
        let err = from_stored_json(bad.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(!format!("{err} {err:?}").contains(canary));

        let c = sample("x");
        let json = String::from_utf8(to_stored_json(&c).unwrap().to_vec()).unwrap();
        let future = json.replacen("\"v\":1", "\"v\":2", 1);
        let err = from_stored_json(future.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(err.to_string().contains("version 2"));
        assert!(from_stored_json(b"").is_err());
    }

    #[test]
    fn timestamps_in_every_form_chrono_writes_or_reads_are_read_alike() {
        for text in [
            "2031-02-03T04:05:06Z",
            "2031-02-03T04:05:06.1Z",
            "2031-02-03T04:05:06.123Z",
            "2031-02-03T04:05:06.123456Z",
            "2031-02-03T04:05:06.123456789Z",
            "2031-02-03T04:05:06+02:00",
            "2031-02-03T04:05:06.5-07:30",
            "2031-02-03 04:05:06Z",
            "2016-12-31T23:59:60Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2031-02-03T04:05:06.1234567890Z",
        ] {
            let ours = timestamp::parse(text);
            assert!(ours.is_some(), "{text}");
            assert_eq!(ours, text.parse::<DateTime<Utc>>().ok(), "{text}");
        }
        for text in [
            "",
            "2031-02-30T04:05:06Z",
            "2031-13-03T04:05:06Z",
            "2031-02-03T24:05:06Z",
            "2031-02-03T04:60:06Z",
            "2031-02-03T04:05:06.Z",
            "2031-02-03T04:05:06",
            "2031-0a-03T04:05:06Z",
        ] {
            assert_eq!(timestamp::parse(text), None, "{text}");
            assert!(text.parse::<DateTime<Utc>>().is_err(), "{text}");
        }
    }

    #[test]
    fn a_key_stored_twice_or_badly_named_is_corrupted() {
        let twice = br#"{"v":1,"id":"x","credential_type":"api_key","created_at":"2030-01-01T00:00:00Z","updated_at":"2030-01-01T00:00:00Z","keys":{"a":{"value":"1"},"a":{"value":"2"}}}"#;
        let err = from_stored_json(twice).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(err.to_string().contains("twice"), "{err}");
        let bad = br#"{"v":1,"id":"x","credential_type":"api_key","created_at":"2030-01-01T00:00:00Z","updated_at":"2030-01-01T00:00:00Z","keys":{"a.b":{"value":"1"}}}"#;
        let err = from_stored_json(bad).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupted);
        assert!(err.to_string().contains("invalid key name"), "{err}");
        let not_utf8 = b"{\"v\":1,\"id\":\"\xff\"}";
        assert_eq!(
            from_stored_json(not_utf8).unwrap_err().kind(),
            crate::ErrorKind::Corrupted
        );
    }

    proptest! {
        #[test]
        fn any_timestamp_round_trips_through_the_fast_reader(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|m| m * 1_000_000)],
        ) {
            let t = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap();
            let text = serde_json::to_string(&t).unwrap();
            let text = text.trim_matches('"');
            prop_assert_eq!(timestamp::parse(text), Some(t));
        }

        #[test]
        fn the_fast_reader_agrees_with_chrono_on_near_miss_text(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?(Z|z|[+-][0-9]{2}:[0-9]{2})?",
        ) {
            prop_assert_eq!(timestamp::parse(&text), text.parse::<DateTime<Utc>>().ok());
        }

        #[test]
        fn values_round_trip_byte_exact(value in "\\PC{0,200}", name in "[a-z_]{1,20}") {
            let mut c = CredentialObject::new("p", CredentialType::Custom).unwrap();
            c.set_key(name.clone(), value.clone(), None).unwrap();
            let back = from_stored_json(&to_stored_json(&c).unwrap()).unwrap();
            prop_assert_eq!(back.get_key(&name).unwrap().expose_secret(), value.as_str()); // EXPOSE: the test compares the secret value.
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = from_stored_json(&bytes);
        }

        #[test]
        fn binary_decoder_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(first) = bytes.first_mut() {
                *first = binary::MARKER;
            }
            let _ = from_stored(&bytes);
        }

        #[test]
        fn random_credentials_round_trip_through_both_forms(
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
            let json = to_stored_json(&c).unwrap();
            let bin = to_stored_bytes(&c).unwrap();
            prop_assert_eq!(bin[0], binary::MARKER);
            for back in [from_stored(&json).unwrap(), from_stored(&bin).unwrap()] {
                prop_assert_eq!(back.metadata(), c.metadata());
                for (name, (value, _, _)) in &keys {
                    // EXPOSE: the test compares the secret value.
                    prop_assert_eq!(back.get_key(name).unwrap().expose_secret(), value.as_str());
                }
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

    #[test]
    fn the_binary_form_is_smaller_and_from_stored_still_reads_json() {
        let c = sample("v");
        let json = to_stored_json(&c).unwrap();
        let bin = to_stored_bytes(&c).unwrap();
        assert!(bin.len() < json.len(), "{} vs {}", bin.len(), json.len());
        assert_eq!(from_stored(&json).unwrap().metadata(), c.metadata());
    }
}
