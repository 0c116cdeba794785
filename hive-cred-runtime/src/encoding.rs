//! The encodings of a secret the [`Redactor`](crate::Redactor) looks for.
//!
//! For one secret value this produces every byte pattern under which it commonly shows
//! up in text: raw; base64 and base64url (padded, unpadded, and the characters fully
//! determined by the secret at each of the three byte alignments inside a longer
//! encoded blob, e.g. `Basic base64(user:secret)`; these are also searched across line
//! breaks); URL-encoded the ways common encoders do it (matched ASCII
//! case-insensitively, so `%xx` in any case); JSON-escaped as Python, PHP, Java, Go
//! and Gson write it; and hex (case-insensitive).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// The encodings a [`Redactor`](crate::Redactor) matches, for reporting and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// The value as is.
    Raw,
    /// RFC 4648 base64 (`+/`), with and without `=` padding, at any alignment, wrapped
    /// with `\n` or `\r\n` at any width.
    Base64,
    /// RFC 4648 base64url (`-_`), like [`Base64`](Self::Base64).
    Base64Url,
    /// Percent-encoding as Python `quote`/`quote_plus`, Java, PHP and JavaScript do it,
    /// `%xx` in any case, `+` or `%20` for space.
    UrlEncoded,
    /// The inside of a JSON string literal: plain, `\uXXXX` in either case, `\/`, and
    /// Go's and Gson's HTML-safe escapes.
    JsonEscaped,
    /// Hexadecimal, in any case.
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

fn hex(secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 2));
    for &b in secret {
        out.push(HEX_LOWER[usize::from(b >> 4)]);
        out.push(HEX_LOWER[usize::from(b & 0x0f)]);
    }
    out
}

/// How one real encoder percent-encodes: which bytes besides alphanumerics it leaves
/// alone, and whether a space becomes `+`.
struct UrlStyle {
    safe: &'static [u8],
    plus_for_space: bool,
}

/// The percent-encoders in common use. Hex case is free (matched case-insensitively),
/// so only the choice of unescaped characters and of `+` for space varies.
const URL_STYLES: [UrlStyle; 7] = [
    // RFC 3986 unreserved only: Python `quote(s, safe="")`, PHP `rawurlencode`, Go `PathEscape` (mostly).
    UrlStyle {
        safe: b"-._~",
        plus_for_space: false,
    },
    // Python `urllib.parse.quote` default (`safe="/"`).
    UrlStyle {
        safe: b"-._~/",
        plus_for_space: false,
    },
    // Python `quote_plus`, Go `url.QueryEscape`.
    UrlStyle {
        safe: b"-._~",
        plus_for_space: true,
    },
    // Java `URLEncoder.encode`.
    UrlStyle {
        safe: b"-._*",
        plus_for_space: true,
    },
    // PHP `urlencode`.
    UrlStyle {
        safe: b"-._",
        plus_for_space: true,
    },
    // JavaScript `encodeURIComponent`.
    UrlStyle {
        safe: b"-._~!*'()",
        plus_for_space: false,
    },
    // JavaScript `encodeURI`.
    UrlStyle {
        safe: b"-._~!*'();/?:@&=+$,#",
        plus_for_space: false,
    },
];

fn url_encode(secret: &[u8], style: &UrlStyle) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 3));
    for &b in secret {
        if b.is_ascii_alphanumeric() || style.safe.contains(&b) {
            out.push(b);
        } else if b == b' ' && style.plus_for_space {
            out.push(b'+');
        } else {
            out.push(b'%');
            out.push(HEX_UPPER[usize::from(b >> 4)]);
            out.push(HEX_UPPER[usize::from(b & 0x0f)]);
        }
    }
    out
}

/// How one real JSON encoder writes a string literal's inside.
#[derive(Clone, Copy)]
struct JsonStyle {
    /// `\/` for `/` (PHP `json_encode` default, some Java libraries).
    escape_slash: bool,
    /// Non-ASCII as `\uXXXX` (Python `ensure_ascii`, Jackson `ESCAPE_NON_ASCII`), with
    /// these hex digits; `None` keeps it raw.
    non_ascii: Option<&'static [u8; 16]>,
    /// Characters written as `\u00XX` for HTML safety: Go's `json.Marshal` (`& < >`,
    /// U+2028, U+2029) or Gson's default (`< > & = '`).
    html: &'static [char],
}

const GO_HTML: &[char] = &['&', '<', '>', '\u{2028}', '\u{2029}'];
const GSON_HTML: &[char] = &['<', '>', '&', '=', '\''];

fn json_escape(secret: &str, style: JsonStyle) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() + 8));
    let digits = style.non_ascii.unwrap_or(HEX_LOWER);
    let push_u = |out: &mut Vec<u8>, c: char, digits: &[u8; 16]| {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            out.extend_from_slice(b"\\u");
            for shift in [12, 8, 4, 0] {
                out.push(digits[usize::from((*unit >> shift) & 0xf)]);
            }
        }
    };
    for c in secret.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if style.escape_slash => out.extend_from_slice(b"\\/"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => push_u(&mut out, c, digits),
            c if style.html.contains(&c) => push_u(&mut out, c, digits),
            c if !c.is_ascii() && style.non_ascii.is_some() => push_u(&mut out, c, digits),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// How a pattern is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternKind {
    /// Byte for byte.
    Exact,
    /// ASCII case-insensitively (hex digits, `%xx`).
    CaseFree,
    /// Byte for byte, and also across `\n` / `\r\n` line breaks (wrapped base64).
    Base64,
}

/// One byte pattern of a secret.
pub(crate) struct Pattern {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) kind: PatternKind,
}

/// Every pattern for `secret`, deduplicated, in no particular order. `min_inner` is the
/// shortest aligned-base64 fragment worth matching.
pub(crate) fn patterns(secret: &str, min_inner: usize) -> Vec<Pattern> {
    let bytes = secret.as_bytes();
    let mut exact: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(24);
    exact.push(Zeroizing::new(bytes.to_vec()));
    for escape_slash in [false, true] {
        for non_ascii in [None, Some(HEX_LOWER), Some(HEX_UPPER)] {
            for html in [&[][..], GO_HTML, GSON_HTML] {
                let style = JsonStyle {
                    escape_slash,
                    non_ascii,
                    html,
                };
                exact.push(json_escape(secret, style));
                // Upper-case hex for the HTML and control escapes too (Java).
                if non_ascii.is_none() {
                    let style = JsonStyle {
                        non_ascii: None,
                        ..style
                    };
                    let upper = json_escape_with_digits(secret, style, HEX_UPPER);
                    exact.push(upper);
                }
            }
        }
    }
    let mut base64 = Vec::with_capacity(10);
    push_base64(&mut base64, bytes, min_inner, false);
    push_base64(&mut base64, bytes, min_inner, true);
    let mut folded: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(8);
    folded.push(hex(bytes));
    for style in &URL_STYLES {
        let mut p = url_encode(bytes, style);
        // Without escapes it is the raw value, which must not match in any case.
        if p.as_slice() != bytes {
            p.make_ascii_lowercase();
            folded.push(p);
        }
    }
    let mut out = Vec::with_capacity(exact.len() + base64.len() + folded.len());
    for (list, kind) in [
        (base64, PatternKind::Base64),
        (exact, PatternKind::Exact),
        (folded, PatternKind::CaseFree),
    ] {
        for bytes in list {
            out.push(Pattern { bytes, kind });
        }
    }
    // A base64 form equal to the raw value stays Base64 (it is wrapped too); an exact
    // form that a case-free one covers is dropped only when identical after folding.
    out.sort_by(|a, b| a.bytes.as_slice().cmp(b.bytes.as_slice()));
    out.dedup_by(|later, first| later.bytes.as_slice() == first.bytes.as_slice());
    out.retain(|p| !p.bytes.is_empty());
    out
}

fn json_escape_with_digits(
    secret: &str,
    style: JsonStyle,
    digits: &'static [u8; 16],
) -> Zeroizing<Vec<u8>> {
    // Control and HTML escapes use `digits`; non-ASCII stays raw.
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() + 8));
    for c in secret.chars() {
        let needs_u = (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t' | '\u{8}' | '\u{c}')
            || style.html.contains(&c);
        if needs_u {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(digits[usize::from((*unit >> shift) & 0xf)]);
                }
            }
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(&json_escape(c.encode_utf8(&mut buf), style));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(patterns: &[Pattern], p: &str, kind: PatternKind) -> bool {
        patterns
            .iter()
            .any(|x| x.bytes.as_slice() == p.as_bytes() && x.kind == kind)
    }

    #[test]
    fn covers_each_encoding() {
        use PatternKind::*;
        let p = patterns("a b/c+\"é&", 4);
        assert!(has(&p, "a b/c+\"é&", Exact));
        assert!(has(&p, "a%20b%2fc%2b%22%c3%a9%26", CaseFree));
        assert!(has(&p, "a%20b/c%2b%22%c3%a9%26", CaseFree), "python quote");
        assert!(has(&p, "a+b%2fc%2b%22%c3%a9%26", CaseFree), "quote_plus");
        assert!(has(&p, "a b/c+\\\"é&", Exact));
        assert!(has(&p, "a b\\/c+\\\"é&", Exact), "php slash");
        assert!(has(&p, "a b/c+\\\"\\u00e9&", Exact));
        assert!(has(&p, "a b/c+\\\"\\u00E9&", Exact), "java upper-case");
        assert!(has(&p, "a b/c+\\\"é\\u0026", Exact), "go html-safe");
        assert!(has(&p, &STANDARD.encode("a b/c+\"é&"), Base64));
        assert!(has(&p, &URL_SAFE_NO_PAD.encode("a b/c+\"é&"), Base64));
        assert!(has(&p, "6120622f632b22c3a926", CaseFree));
    }

    #[test]
    fn plain_values_get_no_case_free_url_form() {
        let p = patterns("AbCdEfGh12", 4);
        assert!(
            !p.iter()
                .any(|x| x.kind == PatternKind::CaseFree && x.bytes.as_slice() == b"abcdefgh12")
        );
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
                    .windows(pat.bytes.len())
                    .any(|w| w == pat.bytes.as_slice())),
                "no pattern inside base64 of {prefix:?} + secret"
            );
        }
    }

    #[test]
    fn json_escapes_control_and_astral_characters() {
        let plain = JsonStyle {
            escape_slash: false,
            non_ascii: None,
            html: &[],
        };
        let ascii = JsonStyle {
            non_ascii: Some(HEX_LOWER),
            ..plain
        };
        assert_eq!(json_escape("a\u{1}\n", plain).as_slice(), b"a\\u0001\\n");
        assert_eq!(json_escape("🦀", ascii).as_slice(), b"\\ud83e\\udd80");
        assert_eq!(json_escape("🦀", plain).as_slice(), "🦀".as_bytes());
    }

    #[test]
    fn patterns_are_deduplicated() {
        let p = patterns("abcdefgh", 4);
        let mut sorted: Vec<&[u8]> = p.iter().map(|x| x.bytes.as_slice()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), p.len());
        assert_eq!(
            p.iter()
                .filter(|x| x.bytes.as_slice() == b"abcdefgh")
                .count(),
            1
        );
    }
}
