//! The encodings of a secret the [`Redactor`](crate::Redactor) looks for.
//!
//! For one secret value this produces every byte pattern under which it commonly shows
//! up in text: raw, base64 and base64url (padded, unpadded, and the characters fully
//! determined by the secret at each of the three byte alignments inside a longer
//! encoded blob, e.g. `Basic base64(user:secret)`), URL-encoded (upper- and lower-case
//! hex, `+` for space), JSON-escaped (plain and ASCII-only `\uXXXX`), and hex (lower and
//! upper case).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// The encodings a [`Redactor`](crate::Redactor) matches, for reporting and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// The value as is.
    Raw,
    /// RFC 4648 base64 (`+/`), with and without `=` padding, at any alignment.
    Base64,
    /// RFC 4648 base64url (`-_`), with and without `=` padding, at any alignment.
    Base64Url,
    /// Percent-encoding of everything but RFC 3986 unreserved characters.
    UrlEncoded,
    /// The inside of a JSON string literal.
    JsonEscaped,
    /// Hexadecimal, lower and upper case.
    Hex,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 6] = [
        Encoding::Raw,
        Encoding::Base64,
        Encoding::Base64Url,
        Encoding::UrlEncoded,
        Encoding::JsonEscaped,
        Encoding::Hex,
    ];

    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
            Encoding::UrlEncoded => "url",
            Encoding::JsonEscaped => "json",
            Encoding::Hex => "hex",
        }
    }
}

/// Base64 characters wholly determined by the secret, at byte alignment `k` (the secret
/// starts `k` bytes after a 3-byte group boundary of the surrounding blob).
fn base64_aligned(
    secret: &[u8],
    k: usize,
    engine: &impl base64::Engine,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut shifted = Zeroizing::new(vec![0u8; k]);
    shifted.extend_from_slice(secret);
    let encoded = Zeroizing::new(engine.encode(shifted.as_slice()).into_bytes());
    // Character i covers bits [6i, 6i + 6); the secret covers [8k, 8k + 8n).
    let first = (8 * k).div_ceil(6);
    let last = (8 * (k + secret.len())) / 6;
    (last > first).then(|| Zeroizing::new(encoded[first..last].to_vec()))
}

fn push_base64(out: &mut Vec<Zeroizing<Vec<u8>>>, secret: &[u8], min_inner: usize, url: bool) {
    let (padded, unpadded) = if url {
        (URL_SAFE.encode(secret), URL_SAFE_NO_PAD.encode(secret))
    } else {
        (STANDARD.encode(secret), STANDARD_NO_PAD.encode(secret))
    };
    out.push(Zeroizing::new(padded.into_bytes()));
    out.push(Zeroizing::new(unpadded.into_bytes()));
    for k in 0..3 {
        let inner = if url {
            base64_aligned(secret, k, &URL_SAFE_NO_PAD)
        } else {
            base64_aligned(secret, k, &STANDARD_NO_PAD)
        };
        if let Some(inner) = inner.filter(|i| i.len() >= min_inner) {
            out.push(inner);
        }
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(secret: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 2));
    for &b in secret {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 0x0f)]);
    }
    out
}

fn url_encode(secret: &[u8], digits: &[u8; 16], plus_for_space: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 3));
    for &b in secret {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b),
            b' ' if plus_for_space => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(digits[usize::from(b >> 4)]);
                out.push(digits[usize::from(b & 0x0f)]);
            }
        }
    }
    out
}

fn json_escape(secret: &str, ascii_only: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(String::with_capacity(secret.len() + 8));
    for c in secret.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii_only && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    Zeroizing::new(std::mem::take(&mut *out).into_bytes())
}

/// Every pattern for `secret`, deduplicated, in no particular order. `min_inner` is the
/// shortest aligned-base64 fragment worth matching.
pub(crate) fn patterns(secret: &str, min_inner: usize) -> Vec<Zeroizing<Vec<u8>>> {
    let bytes = secret.as_bytes();
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(16);
    out.push(Zeroizing::new(bytes.to_vec()));
    push_base64(&mut out, bytes, min_inner, false);
    push_base64(&mut out, bytes, min_inner, true);
    out.push(url_encode(bytes, HEX_UPPER, false));
    out.push(url_encode(bytes, HEX_LOWER, false));
    out.push(url_encode(bytes, HEX_UPPER, true));
    out.push(json_escape(secret, false));
    out.push(json_escape(secret, true));
    out.push(hex(bytes, HEX_LOWER));
    out.push(hex(bytes, HEX_UPPER));
    out.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
    out.dedup_by(|a, b| a.as_slice() == b.as_slice());
    out.retain(|p| !p.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(patterns: &[Zeroizing<Vec<u8>>], p: &str) -> bool {
        patterns.iter().any(|x| x.as_slice() == p.as_bytes())
    }

    #[test]
    fn covers_each_encoding() {
        let p = patterns("a b/c+\"é", 4);
        assert!(has(&p, "a b/c+\"é"));
        assert!(has(&p, "a%20b%2Fc%2B%22%C3%A9"));
        assert!(has(&p, "a%20b%2fc%2b%22%c3%a9"));
        assert!(has(&p, "a+b%2Fc%2B%22%C3%A9"));
        assert!(has(&p, "a b/c+\\\"é"));
        assert!(has(&p, "a b/c+\\\"\\u00e9"));
        assert!(has(&p, &STANDARD.encode("a b/c+\"é")));
        assert!(has(&p, &URL_SAFE_NO_PAD.encode("a b/c+\"é")));
        assert!(has(&p, "6120622f632b22c3a9"));
        assert!(has(&p, "6120622F632B22C3A9"));
    }

    #[test]
    fn aligned_base64_is_found_inside_a_longer_blob() {
        let secret = "s3cr3t-v4lue-0123";
        let p = patterns(secret, 8);
        for prefix in ["", "u", "us", "user:", "user:x", "user:xy"] {
            let blob = STANDARD.encode(format!("{prefix}{secret}-and-more"));
            assert!(
                p.iter().any(|pat| blob
                    .as_bytes()
                    .windows(pat.len())
                    .any(|w| w == pat.as_slice())),
                "no pattern inside base64 of {prefix:?} + secret"
            );
        }
    }

    #[test]
    fn json_escapes_control_and_astral_characters() {
        assert_eq!(json_escape("a\u{1}\n", false).as_slice(), b"a\\u0001\\n");
        assert_eq!(json_escape("🦀", true).as_slice(), b"\\ud83e\\udd80");
        assert_eq!(json_escape("🦀", false).as_slice(), "🦀".as_bytes());
    }

    #[test]
    fn patterns_are_deduplicated() {
        let p = patterns("abcdefgh", 4);
        let mut sorted: Vec<&[u8]> = p.iter().map(|x| x.as_slice()).collect();
        sorted.dedup();
        assert_eq!(sorted.len(), p.len());
        // raw == url == json for a plain alphanumeric secret
        assert_eq!(p.iter().filter(|x| x.as_slice() == b"abcdefgh").count(), 1);
    }
}
