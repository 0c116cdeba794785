//! `{{id.key}}` templates: [`CredentialStore::resolve`].

use std::sync::Arc;
use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};

use super::CredentialStore;
use crate::credential::{CredentialObject, validate_key_name};
use crate::error::{Error, ErrorKind, Result};
use crate::hook::{AccessOperation, AccessOutcome};
use crate::template::{Segment, bad_placeholder, parse_placeholder, segments_unchecked};

impl CredentialStore {
    /// Fills `{{id.key}}` and `{{id}}` placeholders (see [`Template`](crate::Template)).
    /// Unknown ids or keys are errors naming them.
    ///
    /// Every placeholder is audited (operation `Resolve`), failures included: a lookup
    /// that fails is recorded with its id, key and error kind; a template that does not
    /// parse is recorded with an empty id.
    pub async fn resolve(&self, template: &str) -> Result<SecretString> {
        // Pass 1 looks every placeholder up and sizes the output; pass 2 writes it into a
        // buffer of exactly that size. Besides saving reallocations, this means the
        // secret is never copied by a growing buffer into freed, un-zeroized memory.
        // Placeholders are validated only when a lookup misses: a cached id is valid.
        let mut creds: Vec<Arc<CredentialObject>> = Vec::new();
        let mut len = 0usize;
        for seg in segments_unchecked(template) {
            let seg = seg.inspect_err(|e| {
                self.emit(
                    "",
                    None,
                    AccessOperation::Resolve,
                    AccessOutcome::Error(e.kind()),
                    Instant::now(),
                )
            })?;
            match seg {
                Segment::Literal(s) => len += s.len(),
                Segment::Placeholder { id, key } => {
                    let started = Instant::now();
                    let looked_up = self.placeholder(id, key).await;
                    let outcome = match &looked_up {
                        Ok(_) => AccessOutcome::Ok,
                        Err(e) => AccessOutcome::Error(e.kind()),
                    };
                    self.emit(id, key, AccessOperation::Resolve, outcome, started);
                    let (cred, value_len) = looked_up?;
                    len += value_len;
                    creds.push(cred);
                }
            }
        }
        let mut out = String::with_capacity(len);
        let mut creds = creds.into_iter();
        for seg in segments_unchecked(template) {
            match seg? {
                Segment::Literal(s) => out.push_str(s),
                Segment::Placeholder { id, key } => {
                    let cred = creds.next().ok_or_else(|| {
                        Error::new(ErrorKind::Unexpected, "template changed between passes")
                    })?;
                    let value = match key {
                        Some(k) => cred.get_key(k).ok_or_else(|| Error::key_not_found(id, k))?,
                        None => single_value(&cred, id)?,
                    };
                    // EXPOSE: the resolved template is returned as a SecretString.
                    out.push_str(value.expose_secret());
                }
            }
        }
        debug_assert_eq!(out.len(), out.capacity());
        Ok(SecretString::from(out))
    }

    /// Looks one placeholder up: its credential and the length of its value.
    async fn placeholder(
        &self,
        id: &str,
        key: Option<&str>,
    ) -> Result<(Arc<CredentialObject>, usize)> {
        let body = || match key {
            Some(k) => format!("{id}.{k}"),
            None => id.to_string(),
        };
        let id = &*crate::account::canonical_id(id).map_err(|_| bad_placeholder(&body()))?;
        let cred = match self.cached(id) {
            Some(c) => c,
            None => {
                parse_placeholder(&body())?;
                self.fetch(id, false)
                    .await
                    .map_err(|e| self.actionable(id, e))?
                    .0
            }
        };
        let value = match key {
            Some(k) => cred.get_key(k).ok_or_else(|| {
                if validate_key_name(k).is_err() {
                    bad_placeholder(&body())
                } else {
                    Error::key_not_found(id, k)
                }
            })?,
            None => single_value(&cred, id)?,
        };
        // EXPOSE: only the length is read here.
        let len = value.expose_secret().len();
        Ok((cred, len))
    }
}

/// The keys `{{id}}` prefers, in order, when a credential has several (the Python
/// Hive's order).
const DEFAULT_KEYS: [&str; 3] = ["value", "api_key", "access_token"];

/// The value of a credential's default key, for `{{id}}` placeholders: its only key,
/// else the first of [`DEFAULT_KEYS`] it has, else its first key by name.
fn single_value<'c>(cred: &'c CredentialObject, id: &str) -> Result<&'c SecretString> {
    DEFAULT_KEYS
        .iter()
        .find_map(|k| cred.get_key(k))
        .or_else(|| cred.keys().next().map(|k| k.value()))
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "placeholder {{{{{id}}}}} names a credential without keys; store a key or write {{{{{id}.KEY}}}}"
            ))
            .with_context("id", id)
        })
}
