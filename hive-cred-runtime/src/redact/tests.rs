//! Unit tests of the redactor; the property tests are in `tests/redact_*.rs`.

use super::*;
use hive_cred_core::testkit::CANARY;
use hive_cred_core::{CredentialObject, CredentialType};
use std::io::Write;

fn one(secret: &str) -> Arc<Redactor> {
    Arc::new(
        Redactor::builder()
            .secret("c", "k", secret.into())
            .build()
            .unwrap(),
    )
}

#[test]
fn leftmost_longest_replaces_padded_base64_whole() {
    let r = one("abcd1234"); // base64 "YWJjZDEyMzQ=" ends in padding
    assert_eq!(r.redact("x YWJjZDEyMzQ= y"), "x [hive:c.k] y");
    assert_eq!(r.redact("x YWJjZDEyMzQ y"), "x [hive:c.k] y");
}

#[test]
fn no_match_borrows() {
    let r = one("abcd1234");
    assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    assert!(matches!(
        Redactor::empty().redact("abcd1234"),
        Cow::Borrowed(_)
    ));
}

#[test]
fn short_values_are_skipped() {
    let r = Redactor::builder()
        .secret("c", "short", "abc".into())
        .secret("c", "long", "abcdefgh".into())
        .build()
        .unwrap();
    assert_eq!(r.secret_count(), 1);
    assert_eq!(r.redact("abc abcdefgh"), "abc [hive:c.long]");
    let r = Redactor::builder()
        .min_secret_len(2)
        .secret("c", "short", "abc".into())
        .build()
        .unwrap();
    assert_eq!(r.redact("abc"), "[hive:c.short]");
}

#[test]
fn stream_holds_back_only_what_could_be_a_secret() {
    let r = one("abcd1234");
    let mut s = r.stream();
    let lead = "hello world, ".repeat(2 * r.holdback_len() / 13 + 1);
    assert_eq!(
        s.push("hello"),
        "",
        "less than twice the hold-back: nothing yet"
    );
    let out = s.push(&format!("{lead}then abcd12"));
    assert!(!out.contains("abcd12"));
    assert!(s.pending_len() <= r.holdback_len() + 3);
    assert!(
        out.len() >= lead.len() - r.holdback_len(),
        "more than twice the hold-back pending: all but the hold-back is out"
    );
    let rest = s.push("34 done");
    let tail = s.finish();
    assert_eq!(
        format!("{out}{rest}{tail}"),
        format!("hello{lead}then [hive:c.k] done")
    );
}

#[test]
fn stream_keeps_utf8_whole() {
    let r = one("abcd1234");
    let mut s = r.stream();
    let mut out = String::new();
    for c in ["é", "ü", "🦀🦀🦀", "abcd", "1234", "ééé"] {
        out.push_str(&s.push(c));
    }
    out.push_str(&s.finish());
    assert_eq!(out, "éü🦀🦀🦀[hive:c.k]ééé");
}

#[test]
fn writer_redacts_split_writes_and_flushes_tail() {
    let r = one("abcd1234");
    let mut buf = Vec::new();
    {
        let mut w = RedactingWriter::new(&mut buf, r);
        w.write_all(b"a=abcd").unwrap();
        w.write_all(b"1234 b").unwrap();
    }
    assert_eq!(buf, b"a=[hive:c.k] b");
}

#[test]
fn handle_tracks_refreshed_values_and_keeps_recent_ones() {
    let h = RedactorHandle::default();
    let mut c = CredentialObject::new("gh", CredentialType::OAuth2).unwrap();
    c.set_key("access_token", "token-one-111", None).unwrap();
    h.observe(&c);
    let first = h.current();
    assert!(Arc::ptr_eq(&first, &h.current()), "unchanged: no rebuild");
    c.set_key("access_token", "token-two-222", None).unwrap();
    h.observe(&c);
    let second = h.current();
    assert_eq!(
        second.redact("token-one-111 token-two-222"),
        "[hive:gh.access_token] [hive:gh.access_token]"
    );
    for i in 0..RETAINED_VALUES {
        c.set_key("access_token", format!("token-new-{i:03}"), None)
            .unwrap();
        h.observe(&c);
    }
    // Out of the retained window, but still in the last full build: still redacted
    // (safe: the old token may still be valid) until the next full build.
    assert_eq!(
        h.current().redact("token-one-111"),
        "[hive:gh.access_token]"
    );
    for i in 0..=OVERLAY_MAX_VALUES {
        h.add(
            &format!("other{i}"),
            "k",
            format!("other-value-{i:04}").into(),
        );
    }
    // This call starts the full build; the one after it lands no longer knows the value.
    let _ = h.current();
    h.wait_for_rebuild();
    assert_eq!(h.current().redact("token-one-111"), "token-one-111");
}

#[test]
fn debug_never_shows_secrets() {
    let r = Redactor::builder()
        .secret("c", "k", CANARY.into())
        .build()
        .unwrap();
    assert!(!format!("{r:?}").contains(CANARY));
    let b = Redactor::builder().secret("c", "k", CANARY.into());
    assert!(!format!("{b:?}").contains(CANARY));
    let h = RedactorHandle::default();
    h.add("c", "k", CANARY.into());
    assert!(!format!("{h:?}").contains(CANARY));
    let mut s = StreamRedactor::new(h.current());
    let _ = s.push("canary-5f3b");
    assert!(!format!("{s:?}").contains("canary-5f3b"));
}

#[test]
fn overlapping_secrets_are_redacted_as_a_union() {
    let r = Redactor::builder()
        .secret("a", "k", "AAAA-1111-XYZW".into())
        .secret("b", "k", "XYZW-2222-BBBB".into())
        .build()
        .unwrap();
    assert_eq!(
        r.redact("x AAAA-1111-XYZW-2222-BBBB y"),
        "x [hive:a.k][hive:b.k] y"
    );
    assert_eq!(
        r.redact("AAAA-1111-XYZWXYZW-2222-BBBB"),
        "[hive:a.k][hive:b.k]",
        "adjacent"
    );
}

#[test]
fn leading_and_trailing_runs_of_long_secrets_are_partial() {
    let secret = "ghp_abc123def456ghi789jkl012"; // 28 bytes: runs of 14+
    let r = one(secret);
    assert_eq!(
        r.redact("token=ghp_abc123def456... ok"),
        "token=[hive:c.k:partial]... ok"
    );
    assert_eq!(
        r.redact("token=...456ghi789jkl012 ok"),
        "token=...[hive:c.k:partial] ok"
    );
    // 13 leading bytes is below max(12, 14): kept.
    assert_eq!(r.redact("ghp_abc123def"), "ghp_abc123def");
    assert_eq!(r.redact(secret), "[hive:c.k]");
    // Short secrets have no partial forms.
    let short = one("abcdefghijklmnopqrstuvw"); // 23 bytes
    assert_eq!(short.redact("abcdefghijklmnop"), "abcdefghijklmnop");
}

#[test]
fn handle_streams_follow_a_refresh_mid_stream() {
    let h = RedactorHandle::default();
    let mut c = CredentialObject::new("gh", CredentialType::OAuth2).unwrap();
    c.set_key("access_token", "token-one-111", None).unwrap();
    h.observe(&c);
    let mut s = h.stream();
    let mut out = s.push("a token-one-111 b ");
    c.set_key("access_token", "token-two-222", None).unwrap();
    h.observe(&c);
    out += &s.push("c token-two-222 d");
    out += &s.finish();
    assert_eq!(out, "a [hive:gh.access_token] b c [hive:gh.access_token] d");
}

#[test]
fn handle_detects_patterns_by_default_plain_redactor_does_not() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let h = RedactorHandle::default();
    assert_eq!(h.current().redact(jwt), "[hive:detected.jwt]");
    assert_eq!(Redactor::empty().redact(jwt), jwt);
    h.set_detect_patterns(false);
    assert_eq!(h.current().redact(jwt), jwt);
}

#[test]
fn a_registered_secret_hides_the_detected_marker() {
    let token = "ghp_Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78";
    let r = Redactor::builder()
        .detect_patterns(true)
        .secret("gh", "token", token.into())
        .build()
        .unwrap();
    assert_eq!(r.redact(&format!("t={token}")), "t=[hive:gh.token]");
}

#[test]
fn a_refresh_builds_an_overlay_and_enough_of_them_a_full_rebuild() {
    let h = RedactorHandle::default();
    let mut creds: Vec<CredentialObject> = (0..10)
        .map(|i| {
            let mut c = CredentialObject::new(&format!("c{i}"), CredentialType::OAuth2).unwrap();
            c.set_key("t", format!("initial-value-{i:04}"), None)
                .unwrap();
            h.observe(&c);
            c
        })
        .collect();
    let full = h.current();
    assert_eq!(full.layers.len(), 1);
    creds[3].set_key("t", "refreshed-value-0003", None).unwrap();
    h.observe(&creds[3]);
    let after = h.current();
    assert_eq!(after.layers.len(), 2, "base + overlay");
    assert!(
        Arc::ptr_eq(&full.layers[0], &after.layers[0]),
        "base shared"
    );
    assert_eq!(
        after.layers[1].secrets, 1,
        "overlay holds only the new value"
    );
    assert_eq!(
        after.redact("initial-value-0003 refreshed-value-0003 initial-value-0009"),
        "[hive:c3.t] [hive:c3.t] [hive:c9.t]"
    );
    // Every key retains a few values, so many keys are needed to pass the limit.
    for n in 0..=OVERLAY_MAX_VALUES {
        h.add(
            &format!("k{n}"),
            "t",
            format!("another-value-{n:04}").into(),
        );
    }
    // Too many added values: a full build starts in the background, and until it lands
    // the overlay covers every added value.
    let meanwhile = h.current();
    assert_eq!(meanwhile.layers.len(), 2, "base + overlay while rebuilding");
    assert_eq!(meanwhile.layers[1].secrets, OVERLAY_MAX_VALUES + 2);
    let last = format!("another-value-{OVERLAY_MAX_VALUES:04}");
    assert_eq!(
        meanwhile.redact(&format!("another-value-0000 {last} refreshed-value-0003")),
        format!("[hive:k0.t] [hive:k{OVERLAY_MAX_VALUES}.t] [hive:c3.t]")
    );
    h.wait_for_rebuild();
    let rebuilt = h.current();
    assert_eq!(rebuilt.layers.len(), 1, "the full build landed");
    assert_eq!(rebuilt.secret_count(), 10 + 1 + OVERLAY_MAX_VALUES + 1);
    assert_eq!(
        rebuilt.redact(&format!("another-value-0000 {last} initial-value-0003")),
        format!("[hive:k0.t] [hive:k{OVERLAY_MAX_VALUES}.t] [hive:c3.t]")
    );
    // Values added while it ran go into a new overlay over the new base.
    h.add("late", "t", "a-late-value-0001".into());
    let after = h.current();
    assert_eq!(after.layers.len(), 2);
    assert!(Arc::ptr_eq(&after.layers[0], &rebuilt.layers[0]));
    assert_eq!(after.redact("a-late-value-0001"), "[hive:late.t]");
}
