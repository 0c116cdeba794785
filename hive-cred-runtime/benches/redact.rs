//! Benchmarks of the leak guard (issue 16).
//!
//! `cargo bench -p hive-cred-runtime --bench redact`
//! - `redact/stream_{10,1000}_secrets_{plain,patterns}_64KiB_chunks`: streaming 4 MiB
//!   of tool-output-like text (log lines, JSON, base64 blobs, hex, wrapped base64),
//!   holding secrets in every encoding, with 10 or 1,000 registered secrets, without and
//!   with the pattern layer. Goal: at least 500 MiB/s with 1,000 secrets, plain.
//! - `redact/oneshot_1000_secrets_plain`: `Redactor::redact` on the same text.
//! - `redact/stream_1000_secrets_patterns_64B_chunks`: 256 KiB of it in 64-byte chunks
//!   (a model's token stream) with the pattern layer, whose hold-back is the longest.
//! - `redact/refresh_rebuild_1000_secrets`: a `RedactorHandle` holding 1,000 values
//!   sees one credential refreshed and builds the next redactor (goal: at most 5 ms).
//!   The same credential is refreshed every time (it keeps `RETAINED_VALUES` values),
//!   so this is the overlay build alone.
//! - `redact/refresh_rotating_1000_secrets`: every iteration refreshes another
//!   credential, so the overlay grows past `OVERLAY_MAX_VALUES` and full builds start
//!   on the handle's background thread; each lands before the next refresh (untimed),
//!   as it does when refreshes are further apart than a full build (goal: at most 5 ms).
//! - `redact/refresh_burst_1000_secrets`: the same back to back, so the overlay keeps
//!   growing while each background build runs (the worst case).
//! - `redact/full_build_1000_secrets`: building all automata for 1,000 values.
//!
//! Setup prints the automaton memory for 10 and 1,000 secrets to stderr.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hive_cred_core::{CredentialObject, CredentialType};
use hive_cred_runtime::{Redactor, RedactorHandle};

const TEXT_LEN: usize = 4 << 20;
const CHUNK: usize = 64 << 10;
/// Text streamed in 64-byte chunks (a model's token stream).
const SMALL_CHUNK_TEXT_LEN: usize = 256 << 10;

mod common;

use common::{Rng, redactor};

/// The characters of the generated secrets.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/.~ &=";

/// API-key-like values of 20 to 67 bytes after the `sk_{i}_` prefix.
fn secrets(n: usize) -> Vec<String> {
    common::secrets(n, ALPHABET, 20, 48)
}

/// Every encoding the redactor covers, for inserting into the text.
fn encoded(s: &str, which: u64) -> String {
    let b = s.as_bytes();
    match which % 8 {
        0 => s.to_string(),
        1 => STANDARD.encode(b),
        2 => URL_SAFE_NO_PAD.encode(b),
        3 => b.iter().map(|c| format!("{c:02X}")).collect(),
        4 => serde_json::to_string(s).expect("json"),
        5 => b
            .iter()
            .map(|&c| {
                if c.is_ascii_alphanumeric() {
                    (c as char).to_string()
                } else {
                    format!("%{c:02x}")
                }
            })
            .collect(),
        6 => {
            let e = STANDARD.encode(b);
            let lines: Vec<&str> = e
                .as_bytes()
                .chunks(20)
                .map(|c| std::str::from_utf8(c).expect("ascii"))
                .collect();
            lines.join("\r\n")
        }
        _ => format!("{}...", &s[..s.len() * 2 / 3]),
    }
}

/// 4 MiB of tool-output-like text with about 64 secrets in every encoding.
fn text(secrets: &[String]) -> String {
    let mut rng = Rng(42);
    let words = [
        "the",
        "agent",
        "called",
        "search",
        "results",
        "for",
        "query",
        "status",
        "200",
        "ok",
        "user",
        "repository",
        "issue",
        "comment",
        "created",
        "updated",
        "error",
        "retry",
    ];
    let mut out = String::with_capacity(TEXT_LEN);
    let mut i = 0u64;
    while out.len() < TEXT_LEN {
        i += 1;
        match i % 6 {
            0 => {
                let blob: Vec<u8> = (0..48).map(|_| rng.next() as u8).collect();
                out.push_str("payload=");
                out.push_str(&STANDARD.encode(&blob));
            }
            1 => {
                out.push_str("{\"id\": ");
                out.push_str(&(rng.next() % 100_000).to_string());
                out.push_str(", \"title\": \"");
                for _ in 0..6 {
                    out.push_str(words[(rng.next() % words.len() as u64) as usize]);
                    out.push(' ');
                }
                out.push_str("\"}");
            }
            2 => {
                out.push_str("sha=");
                for _ in 0..5 {
                    out.push_str(&format!("{:016x}", rng.next()));
                }
            }
            3 => {
                // A wrapped base64 blob (MIME-like), 3 lines.
                let blob: Vec<u8> = (0..150).map(|_| rng.next() as u8).collect();
                let e = STANDARD.encode(&blob);
                for line in e.as_bytes().chunks(76) {
                    out.push_str(std::str::from_utf8(line).expect("ascii"));
                    out.push('\n');
                }
            }
            _ => {
                for _ in 0..14 {
                    out.push_str(words[(rng.next() % words.len() as u64) as usize]);
                    out.push(' ');
                }
            }
        }
        if i.is_multiple_of(1000) {
            let s = &secrets[(rng.next() % secrets.len() as u64) as usize];
            out.push(' ');
            out.push_str(&encoded(s, i / 1000));
            out.push(' ');
        }
        out.push('\n');
    }
    out.truncate(TEXT_LEN);
    while !out.is_char_boundary(out.len()) {
        out.pop();
    }
    out
}

fn stream(r: &Arc<Redactor>, input: &str, chunk: usize) -> usize {
    let mut s = r.stream();
    let mut n = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let mut cut = rest.len().min(chunk);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        n += s.push(&rest[..cut]).len();
        rest = &rest[cut..];
    }
    n + s.finish().len()
}

fn bench_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("redact");
    g.throughput(Throughput::Bytes(TEXT_LEN as u64));
    for n in [10, 1000] {
        let secrets = secrets(n);
        let input = text(&secrets);
        for patterns in [false, true] {
            let r = Arc::new(redactor(&secrets, patterns));
            let out = r.redact(&input);
            assert!(out.contains("[hive:cred"), "secrets are inserted");
            assert!(
                !secrets.iter().any(|s| out.contains(s.as_str())),
                "every raw secret is redacted"
            );
            if !patterns {
                eprintln!(
                    "redact: {n} secrets: {} patterns, automata + prefilter {:.1} MiB, holdback {} bytes",
                    r.pattern_count(),
                    r.memory_usage() as f64 / (1 << 20) as f64,
                    r.holdback_len()
                );
            }
            let mode = if patterns { "patterns" } else { "plain" };
            g.bench_function(format!("stream_{n}_secrets_{mode}_64KiB_chunks"), |b| {
                b.iter(|| stream(&r, black_box(&input), CHUNK))
            });
            if n == 1000 && !patterns {
                g.bench_function("oneshot_1000_secrets_plain", |b| {
                    b.iter(|| black_box(r.redact(black_box(&input))).len())
                });
            }
            if n == 1000 && patterns {
                // A model's token stream: small chunks, the longest hold-back.
                let mut end = SMALL_CHUNK_TEXT_LEN;
                while !input.is_char_boundary(end) {
                    end -= 1;
                }
                let small = &input[..end];
                g.throughput(Throughput::Bytes(small.len() as u64));
                g.bench_function("stream_1000_secrets_patterns_64B_chunks", |b| {
                    b.iter(|| stream(&r, black_box(small), 64))
                });
                g.throughput(Throughput::Bytes(TEXT_LEN as u64));
            }
        }
    }
    g.finish();
}

fn bench_rebuild(c: &mut Criterion) {
    let handle = RedactorHandle::default();
    let mut creds = Vec::new();
    for (i, s) in secrets(1000).into_iter().enumerate() {
        let mut cred =
            CredentialObject::new(&format!("cred{i}"), CredentialType::OAuth2).expect("valid id");
        cred.set_key("access_token", s, None).expect("valid key");
        handle.observe(&cred);
        creds.push(cred);
    }
    let _ = handle.current();
    let mut g = c.benchmark_group("redact");
    g.sample_size(20);
    // Refresh number `n` of credential `at`: a new value, then the next redactor.
    let refresh = |creds: &mut Vec<CredentialObject>, at: usize, n: u64| {
        creds[at]
            .set_key(
                "access_token",
                format!("refreshed-token-value-{n:012}"),
                None,
            )
            .expect("valid key");
        handle.observe(&creds[at]);
        black_box(handle.current()).secret_count()
    };
    let mut n = 0u64;
    g.bench_function("refresh_rebuild_1000_secrets", |b| {
        b.iter(|| {
            n += 1;
            refresh(&mut creds, 7, n)
        })
    });
    // Real token populations refresh far less often than a full build takes (1,000
    // one-hour tokens: one refresh every 3.6 s), so between two refreshes the
    // background build lands: let it, outside the timed part.
    g.bench_function("refresh_rotating_1000_secrets", |b| {
        b.iter_custom(|iters| {
            let mut timed = std::time::Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let start = std::time::Instant::now();
                refresh(&mut creds, (n % 1000) as usize, n);
                timed += start.elapsed();
                handle.wait_for_rebuild();
            }
            timed
        })
    });
    // The worst case: refreshes back to back, so the overlay grows while each
    // background build runs.
    g.bench_function("refresh_burst_1000_secrets", |b| {
        b.iter(|| {
            n += 1;
            refresh(&mut creds, (n % 1000) as usize, n)
        })
    });
    let all = secrets(1000);
    g.bench_function("full_build_1000_secrets", |b| {
        b.iter(|| black_box(redactor(black_box(&all), false)).pattern_count())
    });
    g.finish();
}

criterion_group!(benches, bench_stream, bench_rebuild);
criterion_main!(benches);
