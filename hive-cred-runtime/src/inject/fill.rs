//! Filling a request: opaque handles and usage spec templates, escaped for where
//! they go.

use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use reqwest::Request;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use url::Url;
use zeroize::Zeroizing;

use super::client::Shared;
use super::handle;
use super::spec::UsageSpec;

impl Shared {
    pub(super) async fn fill(
        &self,
        mut request: Request,
        spec: Option<&UsageSpec>,
        handles: &[(String, String)],
    ) -> Result<Request> {
        let mut values: Vec<SecretString> = Vec::with_capacity(handles.len());
        for (id, key) in handles {
            values.push(self.store.get_key(id, key).await?);
        }
        let values = (handles, values.as_slice());

        // URL: handles (percent-encoded), then the spec's query parameters.
        let url_handles = handle::may_contain(request.url().as_str().as_bytes());
        let spec_query = spec.is_some_and(|s| s.query().next().is_some());
        if url_handles || spec_query {
            let mut url = if url_handles {
                let text = replace_handles(request.url().as_str(), values, Escape::Url);
                Url::parse(&text).map_err(|_| {
                    Error::invalid_input("the URL is not valid once its handles are filled in")
                })?
            } else {
                request.url().clone()
            };
            if let Some(spec) = spec {
                for (name, template) in spec.query() {
                    let value = self.store.resolve(template.as_str()).await?;
                    // EXPOSE: the query parameter goes onto the wire to an allowed destination.
                    url.query_pairs_mut()
                        .append_pair(name, value.expose_secret());
                }
            }
            *request.url_mut() = url;
        }

        // Headers: handles in the tool's values, then the spec's headers.
        if !handles.is_empty() {
            let mut replaced = Vec::new();
            for (name, v) in request.headers() {
                if handle::may_contain(v.as_bytes())
                    && let Ok(text) = v.to_str()
                {
                    let filled = replace_handles(text, values, Escape::None);
                    replaced.push((name.clone(), sensitive(&filled, name.as_str())?));
                }
            }
            for (name, v) in replaced {
                request.headers_mut().insert(name, v);
            }
        }
        if let Some(spec) = spec {
            for (name, template) in spec.headers() {
                let value = self.store.resolve(template.as_str()).await?;
                // EXPOSE: the header value goes onto the wire to an allowed destination.
                let v = sensitive(value.expose_secret(), name.as_str())?;
                request.headers_mut().insert(name.clone(), v);
            }
        }

        // Body: handles (JSON-escaped in JSON), then the spec's fields.
        let spec_body = spec.is_some_and(|s| s.body_fields().next().is_some());
        let body_handles = request
            .body()
            .and_then(|b| b.as_bytes())
            .is_some_and(handle::may_contain);
        if body_handles || spec_body {
            if request.body().is_some_and(|b| b.as_bytes().is_none()) {
                return Err(Error::invalid_input(
                    "the request body is a stream; credentials are filled only into bodies set with .json() or .body(bytes)",
                ));
            }
            let original = Zeroizing::new(
                request
                    .body()
                    .and_then(|b| b.as_bytes())
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
            );
            let text = std::str::from_utf8(&original).map_err(|_| {
                Error::invalid_input(
                    "the request body is not UTF-8, so credentials cannot be filled into it",
                )
            })?;
            let json = spec_body
                || request
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("json"));
            let escape = if json { Escape::Json } else { Escape::None };
            let mut filled = replace_handles(text, values, escape);
            if let Some(spec) = spec.filter(|_| spec_body) {
                let mut doc: serde_json::Map<String, serde_json::Value> = if filled
                    .trim()
                    .is_empty()
                {
                    serde_json::Map::new()
                } else {
                    serde_json::from_str(&filled).map_err(|_| {
                        Error::invalid_input(format!(
                            "usage spec `{}` fills JSON body fields, but the request body is not a JSON object",
                            spec.name()
                        ))
                    })?
                };
                for (name, template) in spec.body_fields() {
                    let value = self.store.resolve(template.as_str()).await?;
                    // EXPOSE: the body field goes onto the wire to an allowed destination.
                    let v = serde_json::Value::String(value.expose_secret().to_string());
                    doc.insert(name.to_string(), v);
                }
                filled = Zeroizing::new(serde_json::to_string(&doc).map_err(|_| {
                    Error::new(ErrorKind::Unexpected, "could not serialize the JSON body")
                })?);
                if !request.headers().contains_key(CONTENT_TYPE) {
                    request
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
            }
            request.headers_mut().remove(CONTENT_LENGTH);
            *request.body_mut() = Some(filled.as_bytes().to_vec().into());
        }
        Ok(request)
    }
}

/// A header value that HTTP/2 never indexes and `Debug` never shows.
fn sensitive(value: &str, name: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::invalid_input(format!(
            "the filled-in value of header `{name}` is not a valid header value"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The `(id, key)` of every distinct handle in the URL, header values and body.
pub(super) fn find_handles(request: &Request) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |text: &str| {
        for f in handle::find(text) {
            if !out.iter().any(|(i, k)| i == f.id && k == f.key) {
                out.push((f.id.to_string(), f.key.to_string()));
            }
        }
    };
    let url = request.url().as_str();
    if handle::may_contain(url.as_bytes()) {
        add(url);
    }
    for v in request.headers().values() {
        if handle::may_contain(v.as_bytes())
            && let Ok(text) = v.to_str()
        {
            add(text);
        }
    }
    if let Some(body) = request.body().and_then(|b| b.as_bytes())
        && handle::may_contain(body)
        && let Ok(text) = std::str::from_utf8(body)
    {
        add(text);
    }
    out
}

#[derive(Clone, Copy)]
enum Escape {
    None,
    Url,
    Json,
}

/// `text` with every handle replaced by its value, escaped for where it goes.
fn replace_handles(
    text: &str,
    (handles, values): (&[(String, String)], &[SecretString]),
    escape: Escape,
) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 64));
    let mut last = 0;
    for f in handle::find(text) {
        let Some(value) = handles
            .iter()
            .position(|(i, k)| i == f.id && k == f.key)
            .and_then(|at| values.get(at))
        else {
            continue;
        };
        out.push_str(&text[last..f.start]);
        // EXPOSE: the handle is replaced by the value on its way to an allowed destination.
        let v = value.expose_secret();
        match escape {
            Escape::None => out.push_str(v),
            // `%20`, not `+`, for spaces: right in a path as well as in a query.
            Escape::Url => out.extend(
                url::form_urlencoded::byte_serialize(v.as_bytes())
                    .map(|part| if part == "+" { "%20" } else { part }),
            ),
            Escape::Json => {
                let quoted = Zeroizing::new(serde_json::Value::from(v).to_string());
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
        last = f.end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_escaped_for_where_they_go() {
        let handles = [("gh".to_string(), "token".to_string())];
        let values = [SecretString::from("a&b=\"c\" d/é")];
        let text = "x={{hive:gh.token}}&y={{hive:other.key}}";
        let fill = |e| replace_handles(text, (&handles, &values), e).to_string();
        assert_eq!(
            fill(Escape::Url),
            "x=a%26b%3D%22c%22%20d%2F%C3%A9&y={{hive:other.key}}"
        );
        assert_eq!(
            fill(Escape::Json),
            "x=a&b=\\\"c\\\" d/é&y={{hive:other.key}}"
        );
        assert_eq!(fill(Escape::None), "x=a&b=\"c\" d/é&y={{hive:other.key}}");
    }
}
