//! Transport rules against real servers: TLS with a CA OpenBao generated
//! (`bao server -dev -dev-tls`), plain HTTP refused for non-loopback hosts, redirects
//! that must not carry the token to another port, tokens read with a trailing newline.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hive_cred_core::testkit::unique_id;
use hive_cred_core::{
    CredentialObject, CredentialStorage, CredentialType, ErrorKind, ExposeSecret,
};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};

fn api_key(id: &hive_cred_core::CredentialId, value: &str) -> CredentialObject {
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
    c.set_key("api_key", value, None).expect("valid key");
    c
}

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

/// A round trip through `storage`: save, load, compare.
async fn round_trip(storage: &VaultStorage, value: &str) {
    let id = unique_id("tls");
    storage.save(&api_key(&id, value)).await.expect("save");
    let loaded = storage.load(&id).await.expect("load").expect("stored");
    // EXPOSE: the test compares the stored value.
    assert_eq!(
        loaded.get_key("api_key").expect("api_key").expose_secret(),
        value
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_with_the_ca_from_vault_cacert_or_capath() {
    let Some(server) = support::own_tls_server() else {
        return;
    };
    let prefix = support::unique_prefix("tls");
    let config = VaultConfig::from_lookup(lookup(vec![
        ("VAULT_ADDR", server.addr()),
        ("VAULT_TOKEN", support::ROOT_TOKEN.to_owned()),
        ("VAULT_CACERT", server.tls_ca().display().to_string()),
        ("HIVE_VAULT_PATH", prefix.clone()),
    ]))
    .expect("config");
    let storage = VaultStorage::new(config)
        .await
        .expect("TLS verifies with the CA");
    round_trip(&storage, "over-tls").await;

    // VAULT_CAPATH: a directory holding the CA file.
    let cas = tempfile::tempdir().unwrap();
    std::fs::copy(server.tls_ca(), cas.path().join("ca.pem")).unwrap();
    let config = VaultConfig::from_lookup(lookup(vec![
        ("VAULT_ADDR", server.addr()),
        ("VAULT_TOKEN", support::ROOT_TOKEN.to_owned()),
        ("VAULT_CAPATH", cas.path().display().to_string()),
        ("HIVE_VAULT_PATH", prefix.clone()),
    ]))
    .expect("config");
    let storage = VaultStorage::new(config)
        .await
        .expect("TLS verifies with the CA dir");
    round_trip(&storage, "over-tls-capath").await;

    // VAULT_TLS_SERVER_NAME: the certificate names `localhost`; the address is an IP.
    let config = VaultConfig::new(&server.addr(), VaultAuth::token(support::ROOT_TOKEN))
        .unwrap()
        .with_ca_cert(server.tls_ca())
        .with_tls_server_name("localhost")
        .with_path_prefix(&prefix)
        .unwrap();
    let storage = VaultStorage::new(config)
        .await
        .expect("verified as localhost");
    round_trip(&storage, "over-tls-server-name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_clear_non_temporary_config_errors() {
    let Some(server) = support::own_tls_server() else {
        return;
    };
    // No CA: the generated CA is not among the built-in roots.
    let config = VaultConfig::new(&server.addr(), VaultAuth::token(support::ROOT_TOKEN)).unwrap();
    let err = VaultStorage::new(config)
        .await
        .expect_err("an unknown CA must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.message().contains("unknown issuer"), "{err}");
    assert!(err.message().contains("VAULT_CACERT"), "{err}");
    assert!(
        !err.message().contains("check that the server is running"),
        "{err}"
    );

    // A name the certificate does not hold.
    let config = VaultConfig::new(&server.addr(), VaultAuth::token(support::ROOT_TOKEN))
        .unwrap()
        .with_ca_cert(server.tls_ca())
        .with_tls_server_name("vault.example.invalid");
    let err = VaultStorage::new(config)
        .await
        .expect_err("a name mismatch must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_temporary());
    assert!(err.message().contains("name mismatch"), "{err}");

    // A "CA file" that holds no certificate (here: the server's private key).
    let key = server.tls_ca().with_file_name("vault-key.pem");
    assert!(
        key.is_file(),
        "the dev server writes its key next to the CA"
    );
    let config = VaultConfig::new(&server.addr(), VaultAuth::token(support::ROOT_TOKEN))
        .unwrap()
        .with_ca_cert(&key);
    let err = VaultStorage::new(config)
        .await
        .expect_err("a CA file without a certificate must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains(&key.display().to_string()), "{err}");
    assert!(err.message().contains("no PEM certificate"), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    // Plain HTTP against the TLS port is not a TLS failure of ours to mask: it must not
    // succeed either (the server answers 400 to plain HTTP on a TLS port).
    let http_addr = server.addr().replace("https://", "http://");
    let config = VaultConfig::new(&http_addr, VaultAuth::token(support::ROOT_TOKEN)).unwrap();
    assert!(VaultStorage::new(config).await.is_err());
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_before_any_connection() {
    // `.invalid` never resolves: a DNS lookup would fail as `Unavailable`; the refusal is
    // a `Config` error because nothing is attempted.
    let config = VaultConfig::new(
        "http://vault.example.invalid:8200",
        VaultAuth::token("s.canary-http"),
    )
    .unwrap();
    let err = VaultStorage::new(config).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains("unencrypted"), "{err}");
    assert!(err.message().contains("HIVE_VAULT_ALLOW_HTTP"), "{err}");
    assert!(!format!("{err} {err:?}").contains("canary"), "{err:?}");

    let err = VaultConfig::from_lookup(lookup(vec![
        (
            "HIVE_VAULT_ADDR",
            "http://vault.example.invalid:8200".to_owned(),
        ),
        ("HIVE_VAULT_TOKEN", "t".to_owned()),
    ]))
    .expect_err("from_env refuses it too");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    // Explicitly allowed: it now tries to connect, and fails as unreachable.
    let config = VaultConfig::new("http://vault.example.invalid:8200", VaultAuth::token("t"))
        .unwrap()
        .with_allow_http(true)
        .with_timeout(Duration::from_secs(5));
    let err = VaultStorage::new(config)
        .await
        .expect_err("does not resolve");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// A loopback listener that records every byte it receives and answers each request
/// with `response(port)`.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(response: impl Fn() -> String + Send + 'static) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("bound").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                stream
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .expect("read timeout");
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head (the requests here have no body worth waiting for).
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                record
                    .lock()
                    .expect("recorder lock")
                    .extend_from_slice(&request);
                let _ = stream.write_all(response().as_bytes());
            }
        });
        Recorder { port, seen }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("recorder lock")).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_port_never_carry_the_token() {
    const TOKEN: &str = "s.canary-redirect-5f3b";
    // The other origin: a second loopback port that would accept anything.
    let elsewhere = Recorder::start(|| {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_owned()
    });
    for code in [301, 302, 303, 307, 308] {
        let target = format!(
            "http://127.0.0.1:{}/v1/auth/token/lookup-self",
            elsewhere.port
        );
        let redirector = Recorder::start(move || {
            format!(
                "HTTP/1.1 {code} Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        });
        let config = VaultConfig::new(
            &format!("http://127.0.0.1:{}", redirector.port),
            VaultAuth::token(TOKEN),
        )
        .unwrap()
        .with_timeout(Duration::from_secs(5));
        let err = VaultStorage::new(config)
            .await
            .expect_err("a redirect elsewhere is not followed");
        assert_eq!(err.kind(), ErrorKind::Config, "{code}: {err}");
        assert!(err.message().contains("redirect"), "{code}: {err}");
        assert!(!format!("{err} {err:?}").contains("canary"), "{err:?}");
        // The configured server did get the token (the test is not vacuous) ...
        assert!(
            redirector.seen().contains(TOKEN),
            "{code}: the first request carries the token"
        );
    }
    // ... and the other port never saw a request at all.
    let seen = elsewhere.seen();
    assert!(!seen.contains(TOKEN), "the token reached another origin");
    assert!(seen.is_empty(), "a redirect was followed: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_read_with_a_trailing_newline_works() {
    let Some(target) = support::shared() else {
        return;
    };
    let prefix = support::unique_prefix("newline");
    let token = format!("{}\n", target.root_token);
    let config = VaultConfig::from_lookup(lookup(vec![
        ("HIVE_VAULT_ADDR", target.addr.clone()),
        ("HIVE_VAULT_TOKEN", token.clone()),
        ("HIVE_VAULT_PATH", prefix.clone()),
    ]))
    .expect("config");
    let storage = VaultStorage::new(config)
        .await
        .expect("trimmed token works");
    round_trip(&storage, "after-newline").await;

    let config = support::config(&target, &format!("{}\r\n", target.root_token), &prefix);
    let storage = VaultStorage::new(config).await.expect("CRLF trimmed too");
    round_trip(&storage, "after-crlf").await;

    // A line break inside the token cannot be trimmed: refused, never echoed.
    let config = support::config(&target, "s.canary-first\ns.canary-second", &prefix);
    let err = VaultStorage::new(config).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!format!("{err} {err:?}").contains("canary"), "{err:?}");
}

/// Certificates made in the test: a CA, a server certificate for 127.0.0.1, a client
/// certificate, and an expired server certificate, all as PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            date_time_ymd,
        };
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write PEM");
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("CA certificate");
        write("ca.pem", ca.pem());

        let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose, expired: bool| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .expect("leaf params");
            params.extended_key_usages = vec![purpose];
            if expired {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            let cert = params
                .signed_by(&key, &ca, &ca_key)
                .expect("leaf certificate");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        };
        leaf("server", ExtendedKeyUsagePurpose::ServerAuth, false);
        leaf("expired", ExtendedKeyUsagePurpose::ServerAuth, true);
        leaf("client", ExtendedKeyUsagePurpose::ClientAuth, false);
        Pki { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_an_expired_server_certificate() {
    let pki = Pki::new();
    let (mtls_port, expired_port) = (support::free_port(), support::free_port());
    let hcl = format!(
        r#"
listener "tcp" {{
  address = "127.0.0.1:{mtls_port}"
  tls_cert_file = "{server}"
  tls_key_file = "{server_key}"
  tls_client_ca_file = "{ca}"
  tls_require_and_verify_client_cert = true
}}
listener "tcp" {{
  address = "127.0.0.1:{expired_port}"
  tls_cert_file = "{expired}"
  tls_key_file = "{expired_key}"
}}
"#,
        server = pki.path("server.pem").display(),
        server_key = pki.path("server-key.pem").display(),
        ca = pki.path("ca.pem").display(),
        expired = pki.path("expired.pem").display(),
        expired_key = pki.path("expired-key.pem").display(),
    );
    let Some(_server) = support::own_server(Some(&hcl)) else {
        return;
    };
    let prefix = support::unique_prefix("mtls");
    let mtls = format!("https://127.0.0.1:{mtls_port}");

    // Mutual TLS from the standard variables.
    let config = VaultConfig::from_lookup(lookup(vec![
        ("VAULT_ADDR", mtls.clone()),
        ("VAULT_TOKEN", support::ROOT_TOKEN.to_owned()),
        ("VAULT_CACERT", pki.path("ca.pem").display().to_string()),
        (
            "VAULT_CLIENT_CERT",
            pki.path("client.pem").display().to_string(),
        ),
        (
            "VAULT_CLIENT_KEY",
            pki.path("client-key.pem").display().to_string(),
        ),
        ("HIVE_VAULT_PATH", prefix.clone()),
    ]))
    .expect("config");
    let storage = VaultStorage::new(config).await.expect("mutual TLS works");
    round_trip(&storage, "over-mtls").await;

    // Without the client certificate the server refuses the handshake: not an outage.
    let config = VaultConfig::new(&mtls, VaultAuth::token(support::ROOT_TOKEN))
        .unwrap()
        .with_ca_cert(pki.path("ca.pem"));
    let err = VaultStorage::new(config)
        .await
        .expect_err("the server requires a client certificate");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.message().contains("VAULT_CLIENT_CERT"), "{err}");

    // An expired server certificate from a trusted CA.
    let config = VaultConfig::new(
        &format!("https://127.0.0.1:{expired_port}"),
        VaultAuth::token(support::ROOT_TOKEN),
    )
    .unwrap()
    .with_ca_cert(pki.path("ca.pem"));
    let err = VaultStorage::new(config)
        .await
        .expect_err("an expired certificate must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert!(err.message().contains("expired"), "{err}");
}

/// A loopback front for the Vault at `upstream_port` that redirects every `/v1/...`
/// request to `/moved/v1/...` on itself (same origin) and forwards `/moved/...` requests.
/// Returns its port.
fn same_origin_redirector(upstream_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("bound").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let first = head.lines().next().unwrap_or_default().to_owned();
            let path = first.split(' ').nth(1).unwrap_or_default().to_owned();
            if let Some(rest) = path.strip_prefix("/moved") {
                // Forward to the real server, one request per connection.
                let forwarded =
                    head.replacen(&path, rest, 1)
                        .replacen("\r\n", "\r\nConnection: close\r\n", 1);
                let mut upstream =
                    std::net::TcpStream::connect(("127.0.0.1", upstream_port)).expect("upstream");
                upstream
                    .write_all(forwarded.as_bytes())
                    .expect("forward request");
                let mut response = Vec::new();
                let _ = upstream.read_to_end(&mut response);
                let _ = stream.write_all(&response);
            } else {
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: /moved{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_within_the_configured_origin_are_followed() {
    let Some(target) = support::shared() else {
        return;
    };
    let upstream: u16 = target
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the test server address ends with its port");
    let front = same_origin_redirector(upstream);
    let prefix = support::unique_prefix("same-origin");
    // Written directly, read back through the redirecting front (GETs only: the front
    // forwards request heads, not bodies).
    let direct = support::root_storage(&target, &prefix).await;
    let id = unique_id("redirected");
    direct
        .save(&api_key(&id, "via-redirect"))
        .await
        .expect("save");
    let config = VaultConfig::new(
        &format!("http://127.0.0.1:{front}"),
        VaultAuth::token(target.root_token.clone()),
    )
    .unwrap()
    .with_path_prefix(&prefix)
    .unwrap();
    let storage = VaultStorage::new(config)
        .await
        .expect("a same-origin redirect is followed");
    let loaded = storage.load(&id).await.expect("load").expect("stored");
    // EXPOSE: the test compares the stored value.
    assert_eq!(
        loaded.get_key("api_key").unwrap().expose_secret(),
        "via-redirect"
    );
}
