//! Benchmarks: redactor throughput and pre-step overhead.
//!
//! `cargo bench -p hive-cred-runtime`
//! - `redactor/throughput_1000x6_1MiB`: one-shot redaction of 1 MiB of mixed text
//!   (goal: at least 500 MiB/s) with 1,000 secrets in 6 encodings each.
//! - `redactor/stream_1000x6_1MiB_4KiB_chunks`: the same through the streaming redactor.
//! - `redactor/build_1000x6`: building that automaton.
//! - `runtime/prestep_10_fresh`: the pre-step for a node declaring 10 credentials that
//!   need no refresh (goal: under 10 µs).
//! - `runtime/prestep_10_pinned_accounts`: the same node over 10 providers with two
//!   accounts each, declared by provider and pinned to one account each
//!   (`NodeSpec::account`); `runtime/prestep_10_provider_alias_ids` declares the same
//!   accounts as `provider/alias` without pins. Same run as `prestep_10_fresh`, so the
//!   ratios are the cost of pins and account addressing.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hive_cred_core::{CredentialObject, CredentialType, MemoryStorage};
use hive_cred_runtime::{AgentRuntime, NodeSpec};

mod common;

use common::{Rng, redactor};

/// The characters of the generated secrets.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/.~";

/// API-key-like values of 24 to 47 bytes after the `sk_{i}_` prefix.
fn secrets(n: usize) -> Vec<String> {
    common::secrets(n, ALPHABET, 24, 24)
}

/// 1 MiB of tool-output-like text: log lines, JSON, base64 and hex blobs, with 16
/// secrets in various encodings.
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
    let mut out = String::with_capacity(1 << 20);
    let mut i = 0u64;
    while out.len() < (1 << 20) {
        i += 1;
        match i % 5 {
            0 => {
                let blob: Vec<u8> = (0..48).map(|_| rng.next() as u8).collect();
                out.push_str("payload=");
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(&blob));
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
            _ => {
                for _ in 0..14 {
                    out.push_str(words[(rng.next() % words.len() as u64) as usize]);
                    out.push(' ');
                }
            }
        }
        if i.is_multiple_of(4000) {
            let s = &secrets[(rng.next() % secrets.len() as u64) as usize];
            match (i / 4000) % 3 {
                0 => out.push_str(s),
                1 => out.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)),
                _ => out.extend(s.bytes().map(|b| format!("{b:02x}"))),
            }
        }
        out.push('\n');
    }
    out.truncate(1 << 20);
    while !out.is_char_boundary(out.len()) {
        out.pop();
    }
    out
}

fn bench_redactor(c: &mut Criterion) {
    let secrets = secrets(1000);
    let r = Arc::new(redactor(&secrets, false));
    let input = text(&secrets);
    assert!(
        r.redact(&input).contains("[hive:cred"),
        "secrets are inserted"
    );
    let mut g = c.benchmark_group("redactor");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("throughput_1000x6_1MiB", |b| {
        b.iter(|| black_box(r.redact(black_box(&input))).len())
    });
    g.bench_function("stream_1000x6_1MiB_4KiB_chunks", |b| {
        b.iter(|| {
            let mut s = r.stream();
            let mut n = 0;
            let mut rest = input.as_str();
            while !rest.is_empty() {
                let mut cut = rest.len().min(4096);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                n += s.push(&rest[..cut]).len();
                rest = &rest[cut..];
            }
            n + s.finish().len()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("redactor");
    g.sample_size(10);
    g.bench_function("build_1000x6", |b| {
        b.iter(|| black_box(redactor(black_box(&secrets), false)).pattern_count())
    });
    g.finish();
}

fn bench_prestep(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = rt.block_on(async {
        let runtime = AgentRuntime::builder()
            .storage(Arc::new(MemoryStorage::new()))
            .build()
            .await
            .expect("runtime");
        for i in 0..10 {
            let mut c = CredentialObject::new(&format!("cred{i}"), CredentialType::ApiKey)
                .expect("valid id");
            c.set_key("api_key", format!("api-key-value-{i:04}"), None)
                .expect("valid key");
            runtime.credential_store.save(c).await.expect("saved");
        }
        runtime
    });
    let spec = NodeSpec::new("bench").credentials((0..10).map(|i| format!("cred{i}")));
    // Warm the cache (as after the first node run).
    rt.block_on(runtime.prepare_node(&spec)).expect("prestep");
    c.bench_function("runtime/prestep_10_fresh", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(runtime.prepare_node(&spec).await.expect("prestep")) })
    });
}

fn bench_prestep_accounts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = rt.block_on(async {
        let runtime = AgentRuntime::builder()
            .storage(Arc::new(MemoryStorage::new()))
            .build()
            .await
            .expect("runtime");
        for i in 0..10 {
            for alias in ["work", "personal"] {
                let mut c =
                    CredentialObject::builder(format!("prov{i}.{alias}"), CredentialType::ApiKey)
                        .account(format!("prov{i}"), Some(alias))
                        .build()
                        .expect("valid id");
                c.set_key("api_key", format!("api-key-{alias}-{i:04}"), None)
                    .expect("valid key");
                runtime.credential_store.save(c).await.expect("saved");
            }
        }
        runtime
    });
    let mut pinned = NodeSpec::new("bench").credentials((0..10).map(|i| format!("prov{i}")));
    for i in 0..10 {
        pinned = pinned.account(format!("prov{i}"), "work");
    }
    let addressed = NodeSpec::new("bench").credentials((0..10).map(|i| format!("prov{i}/work")));
    for spec in [&pinned, &addressed] {
        // Warm the cache (as after the first node run); every pin resolves.
        let ctx = rt.block_on(runtime.prepare_node(spec)).expect("prestep");
        assert_eq!(ctx.credentials().len(), 10);
    }
    c.bench_function("runtime/prestep_10_pinned_accounts", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(runtime.prepare_node(&pinned).await.expect("prestep")) })
    });
    c.bench_function("runtime/prestep_10_provider_alias_ids", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(runtime.prepare_node(&addressed).await.expect("prestep")) })
    });
}

criterion_group!(
    benches,
    bench_redactor,
    bench_prestep,
    bench_prestep_accounts
);
criterion_main!(benches);
