//! Redaction of a `serde_json::Value` in place: values and keys, at any depth, the
//! decoded text of each string (no re-serialising), and nothing else touched.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use hive_cred_runtime::Redactor;
use serde_json::json;

const TOKEN: &str = "tok/en+é\"0123456789";

fn redactor() -> Redactor {
    Redactor::builder()
        .secret("svc", "token", TOKEN.into())
        .build()
        .unwrap()
}

#[test]
fn a_model_request_is_redacted_in_values_and_keys_at_any_depth() {
    let r = redactor();
    let mut request = json!({
        "model": "some-model",
        "messages": [
            {"role": "user", "content": "use the token"},
            {"role": "tool", "content": [{"type": "text", "text": format!("got {TOKEN} back")}]},
            {"role": "tool", "content": format!("{{\"nested\": {}}}", serde_json::to_string(TOKEN).unwrap())},
        ],
        "metadata": {TOKEN: 1, "count": 3, "ok": true, "none": null},
    });
    let untouched = request["messages"][0].clone();
    let changed = r.redact_json(&mut request);
    assert_eq!(changed, 3);
    let text = request.to_string();
    assert!(!text.contains("0123456789"), "{text}");
    assert_eq!(
        request["messages"][1]["content"][0]["text"],
        "got [hive:svc.token] back"
    );
    // A string holding JSON text: the escaped form inside it is found too.
    assert_eq!(
        request["messages"][2]["content"],
        "{\"nested\": \"[hive:svc.token]\"}"
    );
    assert_eq!(request["metadata"]["[hive:svc.token]"], 1);
    assert_eq!(request["metadata"]["count"], 3);
    assert_eq!(request["messages"][0], untouched);
}

#[test]
fn a_value_without_secrets_is_unchanged() {
    let r = redactor();
    let original = json!({"a": ["x", 1, 2.5, null, {"b": "tok/en"}], "c": false});
    let mut v = original.clone();
    assert_eq!(r.redact_json(&mut v), 0);
    assert_eq!(v, original);
}

#[test]
fn keys_that_redact_to_the_same_marker_are_both_kept() {
    let r = Redactor::builder()
        .secret("svc", "token", "key-value-0001".into())
        .build()
        .unwrap();
    let mut v = json!({"key-value-0001": "a", "[hive:svc.token]": "b"});
    assert_eq!(r.redact_json(&mut v), 1);
    let map = v.as_object().unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map["[hive:svc.token]"], "b");
    assert_eq!(map["[hive:svc.token]#2"], "a");
}
