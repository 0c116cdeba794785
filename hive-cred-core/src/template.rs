//! `{{id.key}}` templates, resolved by [`CredentialStore::resolve`](crate::CredentialStore::resolve).
//!
//! # Syntax
//! - `{{id.key}}` is replaced by the value of key `key` of credential `id`. The split is
//!   at the last `.` (key names cannot contain dots), so `{{a.b.token}}` is key `token` of
//!   credential `a.b`.
//! - `{{id}}` is replaced by the value of the credential's default key: its only key, or
//!   the first of `value`, `api_key`, `access_token` it has (the Python Hive's order),
//!   else its first key by name.
//! - Spaces just inside the braces are ignored: `{{ github.access_token }}`.
//! - Everything else is literal text. An unclosed `{{` is an error.

use crate::credential::validate_key_name;
use crate::error::{Error, Result};
use crate::id;

/// One piece of a parsed template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Literal(&'a str),
    Placeholder { id: &'a str, key: Option<&'a str> },
}

/// Iterates the segments of a template without allocating.
pub(crate) struct Segments<'a> {
    rest: &'a str,
    failed: bool,
    checked: bool,
}

/// Segments with every placeholder validated.
pub(crate) fn segments(template: &str) -> Segments<'_> {
    Segments {
        rest: template,
        failed: false,
        checked: true,
    }
}

/// Segments whose placeholders are split but not validated: for the resolve hot path,
/// which validates only when a lookup misses (see [`parse_placeholder`]).
pub(crate) fn segments_unchecked(template: &str) -> Segments<'_> {
    Segments {
        rest: template,
        failed: false,
        checked: false,
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<Segment<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match find_pair(self.rest, b'{') {
            Some(0) => {
                let body_and_rest = &self.rest[2..];
                let Some(end) = find_pair(body_and_rest, b'}') else {
                    self.failed = true;
                    return Some(Err(Error::invalid_input(
                        "template has an unclosed '{{' (placeholders look like {{credential_id.key}})",
                    )));
                };
                let body = body_and_rest[..end].trim();
                self.rest = &body_and_rest[end + 2..];
                if !self.checked {
                    return Some(Ok(match body.rsplit_once('.') {
                        Some((id, key)) => Segment::Placeholder { id, key: Some(key) },
                        None => Segment::Placeholder {
                            id: body,
                            key: None,
                        },
                    }));
                }
                Some(parse_placeholder(body).inspect_err(|_| self.failed = true))
            }
            Some(start) => {
                let lit = &self.rest[..start];
                self.rest = &self.rest[start..];
                Some(Ok(Segment::Literal(lit)))
            }
            None => {
                let lit = self.rest;
                self.rest = "";
                Some(Ok(Segment::Literal(lit)))
            }
        }
    }
}

/// Byte offset of the first occurrence of `cc` (two ASCII bytes `c`).
fn find_pair(s: &str, c: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == c {
            if b[i + 1] == c {
                return Some(i);
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    None
}

/// Whether `id` is a credential id or a `provider/alias` account address.
fn valid_reference(id: &str) -> bool {
    if id.contains('/') {
        crate::account::is_account_address(id)
    } else {
        id::validate(id).is_ok()
    }
}

pub(crate) fn parse_placeholder(body: &str) -> Result<Segment<'_>> {
    if !body.contains('.') && valid_reference(body) {
        return Ok(Segment::Placeholder {
            id: body,
            key: None,
        });
    }
    let Some((cid, key)) = body.rsplit_once('.') else {
        return Err(bad_placeholder(body));
    };
    if !valid_reference(cid) || validate_key_name(key).is_err() {
        return Err(bad_placeholder(body));
    }
    Ok(Segment::Placeholder {
        id: cid,
        key: Some(key),
    })
}

pub(crate) fn bad_placeholder(body: &str) -> Error {
    let shown: String = body.chars().take(60).collect();
    Error::invalid_input(format!(
        "template placeholder {{{{{shown}}}}} is not of the form {{{{credential_id.key}}}} or {{{{credential_id}}}}"
    ))
}

/// A parsed, validated template. Parsing once and resolving many times skips the parse.
///
/// ```
/// use hive_cred_core::Template;
///
/// let t = Template::parse("Bearer {{github.access_token}}")?;
/// assert_eq!(t.placeholders().collect::<Vec<_>>(), vec![("github", Some("access_token"))]);
/// assert!(Template::parse("Bearer {{github.access_token").is_err());
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
}

impl Template {
    /// Parses and validates a template.
    pub fn parse(template: &str) -> Result<Self> {
        for seg in segments(template) {
            seg?;
        }
        Ok(Template {
            source: template.to_string(),
        })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The `(credential_id, key)` pairs referenced, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        segments(&self.source).filter_map(|s| match s {
            Ok(Segment::Placeholder { id, key }) => Some((id, key)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(t: &str) -> Result<Vec<Segment<'_>>> {
        segments(t).collect()
    }

    #[test]
    fn parses_literals_and_placeholders() {
        assert_eq!(
            segs("Bearer {{github.access_token}}!").unwrap(),
            vec![
                Segment::Literal("Bearer "),
                Segment::Placeholder {
                    id: "github",
                    key: Some("access_token")
                },
                Segment::Literal("!"),
            ]
        );
        assert_eq!(
            segs("{{ brave }}").unwrap(),
            vec![Segment::Placeholder {
                id: "brave",
                key: None
            }]
        );
        assert_eq!(
            segs("{{a.b.token}}").unwrap(),
            vec![Segment::Placeholder {
                id: "a.b",
                key: Some("token")
            }]
        );
        assert_eq!(
            segs("plain } { text").unwrap(),
            vec![Segment::Literal("plain } { text")]
        );
        assert!(segs("").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_placeholders() {
        for bad in [
            "{{",
            "x {{a.b",
            "{{}}",
            "{{a/b/c.d}}",
            "{{a/.c}}",
            "{{a.}}",
            "{{.a}}",
            "{{a b}}",
        ] {
            let err = segs(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
        // `provider/alias` is an account address.
        assert!(segs("{{a/b.c}}").is_ok());
        assert!(segs("{{a/b}}").is_ok());
    }
}
