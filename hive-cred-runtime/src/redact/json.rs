//! Redaction of structured data: a `serde_json::Value` in place.

use std::borrow::Cow;

use serde_json::Value;

use super::Redactor;

impl Redactor {
    /// Redacts every string in `value` in place, object keys included (model request
    /// message arrays, tool results, error payloads), and returns how many strings
    /// changed. Strings are redacted as the decoded text they hold, nothing is
    /// re-serialised; a redacted key that collides with an existing one gets a `#2`,
    /// `#3`, ... suffix so no entry is lost.
    ///
    /// ```
    /// use hive_cred_runtime::Redactor;
    ///
    /// let r = Redactor::builder().secret("gh", "token", "ghp_0123456789abcdef".into()).build()?;
    /// let mut v = serde_json::json!({"messages": [{"role": "tool", "content": "token ghp_0123456789abcdef"}]});
    /// assert_eq!(r.redact_json(&mut v), 1);
    /// assert_eq!(v["messages"][0]["content"], "token [hive:gh.token]");
    /// # Ok::<(), hive_cred_core::Error>(())
    /// ```
    pub fn redact_json(&self, value: &mut Value) -> usize {
        match value {
            Value::String(s) => match self.redact(s) {
                Cow::Borrowed(_) => 0,
                Cow::Owned(r) => {
                    *s = r;
                    1
                }
            },
            Value::Array(items) => items.iter_mut().map(|v| self.redact_json(v)).sum(),
            Value::Object(map) => {
                let mut changed: usize = map.values_mut().map(|v| self.redact_json(v)).sum();
                let renames: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|k| match self.redact(k) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(r) => Some((k.clone(), r)),
                    })
                    .collect();
                for (old, new) in renames {
                    if let Some(v) = map.remove(&old) {
                        let mut key = new.clone();
                        let mut n = 2;
                        while map.contains_key(&key) {
                            key = format!("{new}#{n}");
                            n += 1;
                        }
                        map.insert(key, v);
                        changed += 1;
                    }
                }
                changed
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }
}
