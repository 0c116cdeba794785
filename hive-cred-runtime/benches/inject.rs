//! Benchmarks of the injecting HTTP client (issue 19).
//!
//! `cargo bench -p hive-cred-runtime --features http --bench inject`
//! - `inject/baseline_build_request`: building the same request with reqwest, the
//!   token written in by hand (what a tool would do without injection);
//!   `inject/baseline_build_request_query_and_json_body` the same for the query + JSON
//!   body case.
//! - `inject/header_template`, `inject/opaque_handle`, `inject/query_and_json_body`:
//!   everything the client does before the network for one request (build, spec
//!   lookup, destination check, handle search, template fill from the store's cache,
//!   audit of the lookups), through `ToolRequest::dry_run`. Goal: at most 5 µs median.
//! - `inject/refused`: a request to a destination the spec does not allow (checked,
//!   audited, refused).
//! - `inject/response_redaction_1MiB`: a 1 MiB tool-output-like body holding the token,
//!   sent by a server on 127.0.0.1 and read through `ToolResponse::text` (redacted
//!   while streaming); network included, so a lower bound on redaction throughput.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hive_cred_core::{CredentialObject, CredentialType, MemoryStorage};
use hive_cred_runtime::{AgentRuntime, InjectingClient, UsageSpecs, opaque_handle};

const TOKEN: &str = "ghp_bench0123456789abcdefABCDEFghij";
const BODY_LEN: usize = 1 << 20;

struct Setup {
    rt: tokio::runtime::Runtime,
    client: InjectingClient,
    /// `http://127.0.0.1:PORT`, serving the 1 MiB body at `/big`.
    server: String,
}

fn big_body() -> String {
    let mut body = String::with_capacity(BODY_LEN + 256);
    let mut i = 0u64;
    while body.len() < BODY_LEN {
        if i.is_multiple_of(64) {
            body.push_str(&format!(
                "{{\"debug\":\"Authorization: Bearer {TOKEN}\"}}\n"
            ));
        } else {
            body.push_str(&format!(
                "{{\"id\":{i},\"name\":\"repo-{i}\",\"url\":\"https://api.github.com/repos/o/r{i}\",\"stars\":{}}}\n",
                i * 7 % 1000
            ));
        }
        i += 1;
    }
    body
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (client, server) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let body = Arc::new(big_body());
        let router = axum::Router::new().route(
            "/big",
            axum::routing::get(move || {
                let body = body.clone();
                async move { (*body).clone() }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let runtime = AgentRuntime::builder()
            .storage(Arc::new(MemoryStorage::new()))
            .build()
            .await
            .expect("runtime");
        let github = CredentialObject::builder("github", CredentialType::OAuth2)
            .key("access_token", TOKEN, None)
            .build()
            .expect("credential");
        runtime.credential_store.save(github).await.expect("save");
        let specs = UsageSpecs::from_toml(&format!(
            r#"
            [[usage]]
            name = "github"
            destinations = ["https://api.github.com"]
            headers = {{ Authorization = "Bearer {{{{github.access_token}}}}" }}

            [[usage]]
            name = "search"
            destinations = ["https://api.github.com/search"]
            query = {{ access_token = "{{{{github.access_token}}}}" }}
            body = {{ token = "{{{{github.access_token}}}}" }}

            [[usage]]
            name = "local"
            destinations = ["{server}"]
            headers = {{ Authorization = "Bearer {{{{github.access_token}}}}" }}
            "#
        ))
        .expect("specs");
        let client = runtime.injecting_client(specs).build().expect("client");
        // Warm the store's cache and the redactor.
        client
            .get("https://api.github.com/user")
            .usage("github")
            .dry_run()
            .await
            .expect("dry run");
        let _ = runtime.redactor();
        (client, server)
    });
    Setup { rt, client, server }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("inject");

    let plain = reqwest::Client::new();
    let bearer = format!("Bearer {TOKEN}");
    g.bench_function("baseline_build_request", |b| {
        b.iter(|| {
            black_box(
                plain
                    .get("https://api.github.com/user")
                    .header("Authorization", &bearer)
                    .build()
                    .expect("request"),
            )
        })
    });

    g.bench_function("header_template", |b| {
        b.to_async(&s.rt).iter(|| async {
            black_box(
                s.client
                    .get("https://api.github.com/user")
                    .usage("github")
                    .dry_run()
                    .await
                    .expect("dry run"),
            )
        })
    });

    let handle = format!("Bearer {}", opaque_handle("github", "access_token"));
    g.bench_function("opaque_handle", |b| {
        b.to_async(&s.rt).iter(|| async {
            black_box(
                s.client
                    .get("https://api.github.com/user")
                    .header("Authorization", &handle)
                    .dry_run()
                    .await
                    .expect("dry run"),
            )
        })
    });

    let query = serde_json::json!({ "q": "language:rust", "per_page": 50 });
    // The same request as `query_and_json_body`, key written in by hand: the query
    // parameter appended and the field in the JSON body.
    g.bench_function("baseline_build_request_query_and_json_body", |b| {
        b.iter(|| {
            let mut body = query.clone();
            body["token"] = serde_json::Value::String(TOKEN.to_owned());
            black_box(
                plain
                    .post("https://api.github.com/search/code?q=x")
                    .query(&[("access_token", TOKEN)])
                    .json(&body)
                    .build()
                    .expect("request"),
            )
        })
    });
    g.bench_function("query_and_json_body", |b| {
        b.to_async(&s.rt).iter(|| async {
            black_box(
                s.client
                    .post("https://api.github.com/search/code?q=x")
                    .usage("search")
                    .json(&query)
                    .dry_run()
                    .await
                    .expect("dry run"),
            )
        })
    });

    g.bench_function("refused", |b| {
        b.to_async(&s.rt).iter(|| async {
            black_box(
                s.client
                    .get("https://api.github.com.attacker.test/user")
                    .usage("github")
                    .dry_run()
                    .await
                    .expect_err("refused"),
            )
        })
    });

    g.throughput(Throughput::Bytes(BODY_LEN as u64));
    g.sample_size(20);
    let url = format!("{}/big", s.server);
    g.bench_function("response_redaction_1MiB", |b| {
        b.to_async(&s.rt).iter(|| async {
            let text = s
                .client
                .get(&url)
                .usage("local")
                .send()
                .await
                .expect("send")
                .text()
                .await
                .expect("body");
            assert!(!text.contains(TOKEN));
            black_box(text)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
