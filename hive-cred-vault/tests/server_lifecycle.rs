//! Tests that need an OpenBao dev server of their own: stopping and restarting it,
//! sealing it, and a file audit device.

mod support;

use std::time::Duration;

use hive_cred_core::testkit::{CANARY, unique_id};
use hive_cred_core::{
    CredentialObject, CredentialStorage, CredentialType, ErrorKind, ExposeSecret,
};
use serde_json::Value;

fn api_key(id: &hive_cred_core::CredentialId, value: &str) -> CredentialObject {
    let mut c = CredentialObject::with_id(id.clone(), CredentialType::ApiKey);
    c.set_key("api_key", value, None).expect("valid key");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_run_is_unavailable_then_recovers() {
    let Some(mut server) = support::own_server(None) else {
        return;
    };
    let target = server.target();
    let prefix = support::unique_prefix("restart");
    let storage = support::root_storage(&target, &prefix).await;
    let id = unique_id("before");
    storage.save(&api_key(&id, "v")).await.unwrap();
    assert!(storage.load(&id).await.unwrap().is_some());

    server.stop();
    for err in [
        storage.load(&id).await.expect_err("server is down"),
        storage
            .save(&api_key(&unique_id("during"), "v"))
            .await
            .expect_err("server is down"),
        storage.list().await.expect_err("server is down"),
        storage.delete(&id).await.expect_err("server is down"),
    ] {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_temporary(), "{err}");
        assert!(err.message().contains(&target.addr), "{err}");
    }

    // Same port, same root token; a dev server starts empty, so write again.
    server.restart();
    let id = unique_id("after");
    storage
        .save(&api_key(&id, "again"))
        .await
        .expect("the same storage works once the server is back");
    let back = storage.load(&id).await.unwrap().expect("stored");
    assert_eq!(back.get_key("api_key").unwrap().expose_secret(), "again"); // EXPOSE: the test compares the secret value.
    assert_eq!(storage.list().await.unwrap(), vec![id.clone()]);

    // A sealed server is unavailable too, and says so.
    support::root_api(&target, "PUT", "sys/seal", None).await;
    let err = storage.load(&id).await.expect_err("sealed");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(err.message().contains("sealed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_is_in_the_audit_log_without_values() {
    // OpenBao only enables audit devices declaratively, from the server config.
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.log");
    let hcl = format!(
        "audit \"file\" \"hive-test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
        audit_log.display()
    );
    let Some(server) = support::own_server(Some(&hcl)) else {
        return;
    };
    let target = server.target();
    let prefix = support::unique_prefix("audit");
    let storage = support::root_storage(&target, &prefix).await;
    let id = unique_id("audited");
    let rotated = format!("{CANARY}-rotated");

    let mut c = CredentialObject::with_id(id.clone(), CredentialType::BearerToken);
    c.set_key("token", CANARY, None).unwrap();
    storage.save(&c).await.unwrap();
    let mut back = storage.load(&id).await.unwrap().expect("stored");
    back.set_key("token", rotated.as_str(), None).unwrap();
    storage.save(&back).await.unwrap();
    assert!(storage.list().await.unwrap().contains(&id));
    assert!(storage.delete(&id).await.unwrap());

    // The file device writes synchronously with the request; poll briefly anyway.
    let data_path = format!("secret/data/{prefix}/{id}");
    let metadata_path = format!("secret/metadata/{prefix}/{id}");
    let list_path = format!("secret/metadata/{prefix}");
    let mut seen = Vec::new();
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&audit_log).unwrap_or_default();
        seen = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .map(|e| {
                (
                    e["request"]["operation"].as_str().unwrap_or("").to_owned(),
                    e["request"]["path"]
                        .as_str()
                        .unwrap_or("")
                        .trim_end_matches('/')
                        .to_owned(),
                )
            })
            .collect::<Vec<_>>();
        if seen
            .iter()
            .any(|(op, p)| op == "delete" && *p == metadata_path)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let has = |op: &str, path: &str| seen.iter().any(|(o, p)| o == op && p == path);
    assert!(
        has("create", &data_path) || has("update", &data_path),
        "save missing: {seen:?}"
    );
    assert!(has("read", &data_path), "load missing: {seen:?}");
    assert!(has("list", &list_path), "list missing: {seen:?}");
    assert!(has("delete", &metadata_path), "delete missing: {seen:?}");

    // Values are HMAC'd by the audit device, never written in plain text.
    assert!(!text.contains(CANARY), "a secret value is in the audit log");
    assert!(text.contains("hmac-sha256:"), "audit entries are HMAC'd");
    drop(server);
}
