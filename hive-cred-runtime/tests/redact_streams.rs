//! Streams and writers follow refreshes; overlapping and adjacent secrets are redacted
//! as a union; leading and trailing runs of long secrets are redacted as partial.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use hive_cred_core::{CredentialObject, CredentialType};
use hive_cred_runtime::{RedactingMakeWriter, RedactingWriter, Redactor, RedactorHandle};
use proptest::prelude::*;

fn token(cred: &mut CredentialObject, handle: &RedactorHandle, value: &str) {
    cred.set_key("access_token", value, None).unwrap();
    handle.observe(cred);
}

#[test]
fn a_redacting_writer_on_a_handle_redacts_a_value_refreshed_between_writes() {
    let handle = RedactorHandle::default();
    let mut cred = CredentialObject::new("gh", CredentialType::OAuth2).unwrap();
    token(&mut cred, &handle, "old-token-0123456789");
    let mut buf = Vec::new();
    {
        let mut w = RedactingWriter::with_handle(&mut buf, handle.clone());
        w.write_all(b"first old-token-0123456789, then ").unwrap();
        token(&mut cred, &handle, "new-token-9876543210");
        w.write_all(b"new-token-98").unwrap();
        w.write_all(b"76543210 end").unwrap();
    }
    let out = String::from_utf8(buf).unwrap();
    assert_eq!(
        out,
        "first [hive:gh.access_token], then [hive:gh.access_token] end"
    );
}

#[test]
fn a_redacting_writer_on_a_snapshot_does_not_follow_refreshes() {
    // The contrast that shows the handle matters: `new` keeps the redactor it got.
    let handle = RedactorHandle::default();
    let mut cred = CredentialObject::new("gh", CredentialType::OAuth2).unwrap();
    token(&mut cred, &handle, "old-token-0123456789");
    let mut buf = Vec::new();
    {
        let mut w = RedactingWriter::new(&mut buf, handle.current());
        token(&mut cred, &handle, "new-token-9876543210");
        w.write_all(b"new-token-9876543210").unwrap();
    }
    assert_eq!(buf, b"new-token-9876543210");
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_tracing_writer_redacts_values_refreshed_after_it_was_installed() {
    let handle = RedactorHandle::default();
    let mut cred = CredentialObject::new("svc", CredentialType::OAuth2).unwrap();
    token(&mut cred, &handle, "first-value-aaaa1111");
    let logs = Buf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(RedactingMakeWriter::new(
            move || sink.clone(),
            handle.clone(),
        ))
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(value = "first-value-aaaa1111", "before the refresh");
        token(&mut cred, &handle, "second-value-bbbb2222");
        tracing::info!(value = "second-value-bbbb2222", "after the refresh");
    });
    let out = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!out.contains("first-value"), "{out}");
    assert!(!out.contains("second-value"), "{out}");
    assert_eq!(out.matches("[hive:svc.access_token]").count(), 2, "{out}");
}

fn part() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{4,20}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn overlapping_and_adjacent_secrets_leave_nothing_behind(
        a in part(), shared in part(), b in part(),
        adjacent in any::<bool>(),
        prefix in "[ a-z]{0,10}", suffix in "[ a-z]{0,10}",
        cut in any::<prop::sample::Index>(),
    ) {
        let first = format!("{a}{shared}");
        let second = format!("{shared}{b}");
        let r = Arc::new(
            Redactor::builder()
                .secret("one", "k", first.clone().into())
                .secret("two", "k", second.clone().into())
                .build()
                .unwrap(),
        );
        // Overlapping: `a shared b` holds both; adjacent: one after the other.
        let middle = if adjacent { format!("{first}{second}") } else { format!("{a}{shared}{b}") };
        let input = format!("{prefix}{middle}{suffix}");
        let out = r.redact(&input).into_owned();
        prop_assert_eq!(&out, &format!("{prefix}[hive:one.k][hive:two.k]{suffix}"));
        let at = cut.index(input.len() + 1);
        let mut s = r.stream();
        let mut streamed = s.push(&input[..at]);
        streamed += &s.push(&input[at..]);
        streamed += &s.finish();
        prop_assert_eq!(streamed, out);
    }

    #[test]
    fn leading_and_trailing_runs_of_long_secrets_are_redacted_as_partial(
        secret in "[A-Za-z0-9]{24,80}",
        extra in 0usize..40,
        leading in any::<bool>(),
        prefix in "[ .=]{0,10}", suffix in "[ .=]{0,10}",
    ) {
        let r = Redactor::builder().secret("c", "k", secret.clone().into()).build().unwrap();
        let min_run = 12.max(secret.len().div_ceil(2));
        let run_len = (min_run + extra).min(secret.len() - 1);
        let run = if leading { &secret[..run_len] } else { &secret[secret.len() - run_len..] };
        let out = r.redact(&format!("{prefix}{run}{suffix}")).into_owned();
        prop_assert_eq!(out, format!("{prefix}[hive:c.k:partial]{suffix}"));
        // One byte shorter than the threshold: not a partial leak, left alone.
        let short = if leading { &secret[..min_run - 1] } else { &secret[secret.len() - min_run + 1..] };
        let text = format!("{prefix}{short}{suffix}");
        prop_assert_eq!(r.redact(&text).into_owned(), text);
    }
}
