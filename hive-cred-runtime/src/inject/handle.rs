//! Opaque handles: `{{hive:id.key}}` in text a model writes, resolved only inside the
//! injecting client.

use hive_cred_core::{CredentialId, validate_key_name};

const OPEN: &str = "{{hive:";
const CLOSE: &str = "}}";

/// The opaque handle a model may write in tool arguments to stand for a credential
/// value: `{{hive:<id>.<key>}}`.
///
/// The [`InjectingClient`](crate::InjectingClient) resolves handles in the URL, header
/// values and body of a request, and only when a [`UsageSpec`](crate::UsageSpec) naming
/// the credential allows the request's destination. Anywhere else (tool output, logs,
/// requests built by other clients) a handle is plain text and stays as written.
///
/// ```
/// assert_eq!(hive_cred_runtime::opaque_handle("github", "access_token"), "{{hive:github.access_token}}");
/// ```
pub fn opaque_handle(id: &str, key: &str) -> String {
    format!("{OPEN}{id}.{key}{CLOSE}")
}

/// One handle found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub start: usize,
    pub end: usize,
    pub id: &'a str,
    pub key: &'a str,
}

/// The well-formed handles in `text`, in order. Malformed ones are plain text.
pub(crate) fn find(text: &str) -> impl Iterator<Item = Found<'_>> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(at) = memchr::memmem::find(&text.as_bytes()[from..], OPEN.as_bytes()) {
            let start = from + at;
            let body_start = start + OPEN.len();
            let Some(len) = text[body_start..].find(CLOSE) else {
                from = text.len();
                return None;
            };
            let body = &text[body_start..body_start + len];
            let end = body_start + len + CLOSE.len();
            if let Some((id, key)) = body.rsplit_once('.')
                && CredentialId::new(id).is_ok()
                && validate_key_name(key).is_ok()
            {
                from = end;
                return Some(Found {
                    start,
                    end,
                    id,
                    key,
                });
            }
            from = body_start;
        }
        None
    })
}

/// Whether `bytes` may hold a handle (a fast pre-check).
pub(crate) fn may_contain(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, OPEN.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_well_formed_handles_only() {
        let t = "a {{hive:github.access_token}} b {{hive:bad}} {{hive:x/y.k}} {{hive:a.b.key}}{{hive:z.k";
        let found: Vec<(&str, &str)> = find(t).map(|f| (f.id, f.key)).collect();
        assert_eq!(found, [("github", "access_token"), ("a.b", "key")]);
        let first = find(t).next().unwrap();
        assert_eq!(&t[first.start..first.end], "{{hive:github.access_token}}");
        assert!(!may_contain(b"{{github.access_token}}"));
    }
}
