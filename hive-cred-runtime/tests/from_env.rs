//! `AgentRuntime::from_lookup`: backend selection, key, config file, audit log.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::sync::Arc;

use hive_cred_core::ErrorKind;
use hive_cred_runtime::AgentRuntime;

fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let map = Arc::new(map);
    move |name| map.get(name).cloned()
}

#[tokio::test]
async fn vault_address_selects_vault_or_a_clear_config_error() {
    // Nothing listens on port 1: with the feature the runtime tries Vault and cannot
    // reach it; without, it refuses before connecting.
    let err = AgentRuntime::from_lookup(lookup(&[
        ("HIVE_VAULT_ADDR", "http://127.0.0.1:1".into()),
        ("HIVE_VAULT_TOKEN", "root".into()),
        ("HOME", "/nonexistent".into()),
    ]))
    .await
    .unwrap_err();
    if cfg!(feature = "vault") {
        assert_ne!(err.kind(), ErrorKind::Config, "{err}");
        assert!(!err.to_string().contains("feature"), "{err}");
    } else {
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("HIVE_VAULT_ADDR is set"), "{err}");
        assert!(err.to_string().contains("`vault` feature"), "{err}");
    }
}

#[cfg(feature = "local")]
mod local {
    use super::*;
    use hive_cred_core::{CredentialObject, CredentialType};

    fn raw_key() -> String {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[tokio::test]
    async fn local_store_in_hive_home_with_the_key_from_the_environment() {
        let home = tempfile::tempdir().unwrap();
        let key = raw_key();
        let vars = [
            ("HIVE_HOME", home.path().display().to_string()),
            ("HIVE_CREDENTIAL_KEY", key.clone()),
        ];
        let runtime = AgentRuntime::from_lookup(lookup(&vars)).await.unwrap();
        assert_eq!(runtime.backend_name(), "local");
        let mut c = CredentialObject::new("brave_search", CredentialType::ApiKey).unwrap();
        c.set_key("api_key", "BSA-from-env-123", None).unwrap();
        runtime.credential_store.save(c).await.unwrap();
        assert!(home.path().join("credentials").is_dir());

        // A second runtime over the same store reads it back.
        let again = AgentRuntime::from_lookup(lookup(&vars)).await.unwrap();
        let got = again.credential_store.get("brave_search").await.unwrap();
        assert!(got.has_key("api_key"));

        // Without a key: a Config error naming the variables.
        let err =
            AgentRuntime::from_lookup(lookup(&[("HIVE_HOME", home.path().display().to_string())]))
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("HIVE_CREDENTIAL_KEY"), "{err}");
    }

    #[tokio::test]
    async fn config_file_and_audit_log_from_the_environment() {
        let home = tempfile::tempdir().unwrap();
        let key = raw_key();
        let audit = home.path().join("audit.jsonl");
        let config = home.path().join("hive.toml");
        std::fs::write(
            &config,
            r#"
[[providers]]
provider_id = "github"
preset = "github"
client_id = "Iv1.abc"
client_secret = { env = "GH_CLIENT_SECRET" }
"#,
        )
        .unwrap();
        let vars = [
            ("HIVE_HOME", home.path().display().to_string()),
            ("HIVE_CREDENTIAL_KEY", key),
            ("HIVE_CRED_CONFIG", config.display().to_string()),
            ("HIVE_CRED_AUDIT_LOG", audit.display().to_string()),
            ("GH_CLIENT_SECRET", "cs-from-env-0123".into()),
        ];
        let built = AgentRuntime::from_lookup(lookup(&vars)).await;
        if cfg!(feature = "oauth") {
            let runtime = built.unwrap();
            assert!(runtime.credential_store.provider("github").is_some());
            // The client secret is redacted like any handed-out secret.
            assert_eq!(
                runtime.redact("secret=cs-from-env-0123"),
                "secret=[hive:github.client_secret]"
            );
            let _ = runtime.credential_store.get("missing").await;
            runtime.audit().flush().unwrap();
            let text = std::fs::read_to_string(&audit).unwrap();
            assert!(text.contains("\"credential_id\":\"missing\""), "{text}");
        } else {
            let err = built.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains("`oauth` feature"), "{err}");
        }

        // A broken config file is a Config error naming the file.
        std::fs::write(&config, "[[providers]]\nprovider_id = 1\n").unwrap();
        let err = AgentRuntime::from_lookup(lookup(&vars)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("HIVE_CRED_CONFIG"), "{err}");
        assert!(err.to_string().contains("hive.toml"), "{err}");
    }
}

#[cfg(not(feature = "local"))]
#[tokio::test]
async fn without_local_the_environment_backs_the_runtime() {
    let runtime = AgentRuntime::from_lookup(lookup(&[])).await.unwrap();
    assert_eq!(runtime.backend_name(), "env");
}
