//! JWT / OIDC machine login against a real OpenBao: a key pair made here (ES256), the
//! JWT auth method trusting its public key, a role bound to an audience and a claim.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hive_cred_core::testkit::unique_id;
use hive_cred_core::{CredentialObject, CredentialStorage, CredentialType, ErrorKind};
use hive_cred_vault::{VaultAuth, VaultConfig, VaultStorage};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    fn new() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Signer { key, rng }
    }

    /// The SubjectPublicKeyInfo PEM of the P-256 public key.
    fn public_pem(&self) -> String {
        let mut der = hex_prefix();
        der.extend_from_slice(self.key.public_key().as_ref());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    fn jwt(&self, claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{body}");
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// DER prefix of a P-256 SubjectPublicKeyInfo (algorithm ids, bit string header).
fn hex_prefix() -> Vec<u8> {
    let hex = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn claims(aud: &str, sub: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "https://ci.example.invalid",
        "aud": aud,
        "sub": sub,
        "team": "agents",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
    })
}

/// Tokens issued by the JWT mount `mount` that are still valid.
async fn live_login_tokens(target: &support::Target, mount: &str) -> usize {
    let (_, list) = support::api_as(
        target,
        &target.root_token,
        "LIST",
        "auth/token/accessors",
        None,
    )
    .await;
    let mut n = 0;
    for accessor in list["data"]["keys"].as_array().unwrap() {
        let (status, info) = support::api_as(
            target,
            &target.root_token,
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
        if status == 200 && info["data"]["path"].as_str() == Some(&format!("auth/{mount}/login")) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_login_works_relogs_in_on_a_new_file_and_refuses_a_wrong_audience() {
    let Some(target) = support::shared() else {
        return;
    };
    let signer = Signer::new();
    let mount = format!("jwt-{:08x}", support::rand_u64() as u32);
    let prefix = support::unique_prefix("jwt");
    support::root_api(
        &target,
        "POST",
        &format!("sys/auth/{mount}"),
        Some(json!({ "type": "jwt" })),
    )
    .await;
    support::root_api(
        &target,
        "POST",
        &format!("auth/{mount}/config"),
        Some(json!({ "jwt_validation_pubkeys": [signer.public_pem()] })),
    )
    .await;
    let policy = format!("hive-jwt-{mount}");
    support::put_policy(&target, &policy, &support::rw_policy(&prefix)).await;
    support::root_api(
        &target,
        "POST",
        &format!("auth/{mount}/role/agent"),
        Some(json!({
            "role_type": "jwt",
            "bound_audiences": ["hive-agents"],
            "bound_claims": { "team": "agents" },
            "user_claim": "sub",
            "token_policies": [policy],
            "token_ttl": "1h",
        })),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    // As a projected token file is written: with a trailing newline.
    std::fs::write(
        &file,
        format!("{}\n", signer.jwt(claims("hive-agents", "agent-1"))),
    )
    .unwrap();
    let config = |file: &std::path::Path| {
        VaultConfig::new(&target.addr, VaultAuth::jwt("agent", file))
            .unwrap()
            .with_jwt_mount(&mount)
            .unwrap()
            .with_path_prefix(&prefix)
            .unwrap()
    };
    let storage = VaultStorage::new(config(&file)).await.expect("JWT login");
    let id = unique_id("jwt");
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
    c.set_key("api_key", "v", None).unwrap();
    storage.save(&c).await.unwrap();
    assert!(storage.load(&id).await.unwrap().is_some());
    assert_eq!(live_login_tokens(&target, &mount).await, 1);

    // A rotated JWT in the file: the next request logs in again, and the previous
    // Vault token is revoked, so one login token stays alive.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, signer.jwt(claims("hive-agents", "agent-1-rotated"))).unwrap();
    assert!(storage.load(&id).await.unwrap().is_some());
    assert_eq!(live_login_tokens(&target, &mount).await, 1);

    // The wrong audience is refused with PermissionDenied naming the role, not the JWT.
    let wrong = dir.path().join("wrong-aud");
    let wrong_jwt = signer.jwt(claims("someone-else", "agent-2"));
    std::fs::write(&wrong, &wrong_jwt).unwrap();
    let err = VaultStorage::new(config(&wrong))
        .await
        .expect_err("wrong audience");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.is_temporary());
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("agent"), "{shown}");
    assert!(!shown.contains(&wrong_jwt), "{shown}");

    // Signed by another key: refused the same way.
    let other = Signer::new();
    std::fs::write(&wrong, other.jwt(claims("hive-agents", "agent-3"))).unwrap();
    let err = VaultStorage::new(config(&wrong))
        .await
        .expect_err("untrusted key");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // An empty file is a configuration error naming the file.
    std::fs::write(&wrong, "\n").unwrap();
    let err = VaultStorage::new(config(&wrong)).await.expect_err("empty");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains("wrong-aud"), "{err}");
}
