//! The token response type: RFC 6749 section 5.1, read leniently so that a response
//! carrying a rotated refresh token is never rejected over a non-essential field.

use std::time::Duration;

use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse, TokenType};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The `token_type` of a response, as sent (`"Bearer"`, `"bearer"`, Slack's `"user"`),
/// or `None` when absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct LenientTokenType(pub(crate) Option<String>);

impl TokenType for LenientTokenType {}

/// How `expires_in` (or `refresh_token_expires_in`) was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum Lifetime {
    /// Not sent (or `null`).
    #[default]
    Absent,
    /// A non-negative number of seconds, from a JSON number or a numeric string.
    Seconds(u64),
    /// Sent but unreadable (negative, non-numeric, not finite).
    Invalid,
}

/// A token endpoint's success response.
///
/// `Serialize` exists only because the oauth2 crate's `TokenResponse` trait requires it;
/// the type is private and never serialized. Its Debug redacts the tokens (the oauth2
/// secret types print `[redacted]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct TokenAnswer {
    access_token: AccessToken,
    #[serde(default, deserialize_with = "lenient_string")]
    token_type: LenientTokenType,
    #[serde(default, deserialize_with = "lenient_lifetime")]
    expires_in: Lifetime,
    #[serde(default, deserialize_with = "lenient_refresh_token")]
    refresh_token: Option<RefreshToken>,
    #[serde(default, deserialize_with = "lenient_lifetime")]
    refresh_token_expires_in: Lifetime,
    #[serde(default, deserialize_with = "lenient_scopes")]
    scope: Option<Vec<Scope>>,
}

impl TokenAnswer {
    /// How `expires_in` was sent.
    pub(crate) fn lifetime(&self) -> Lifetime {
        self.expires_in
    }

    /// How `refresh_token_expires_in` was sent.
    pub(crate) fn refresh_lifetime(&self) -> Lifetime {
        self.refresh_token_expires_in
    }

    /// The token type, when sent.
    pub(crate) fn token_type_str(&self) -> Option<&str> {
        self.token_type.0.as_deref()
    }
}

impl TokenResponse for TokenAnswer {
    type TokenType = LenientTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    fn token_type(&self) -> &LenientTokenType {
        &self.token_type
    }

    fn expires_in(&self) -> Option<Duration> {
        match self.expires_in {
            Lifetime::Seconds(s) => Some(Duration::from_secs(s)),
            Lifetime::Absent | Lifetime::Invalid => None,
        }
    }

    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scope.as_ref()
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<LenientTokenType, D::Error> {
    Ok(LenientTokenType(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }))
}

/// Reads a lifetime from a number (integer or float) or a numeric string.
pub(crate) fn lifetime_from(value: Option<Value>) -> Lifetime {
    fn from_f64(f: f64) -> Lifetime {
        if f.is_finite() && f >= 0.0 {
            // Saturating: absurd values are capped later.
            Lifetime::Seconds(f as u64)
        } else {
            Lifetime::Invalid
        }
    }
    match value {
        None | Some(Value::Null) => Lifetime::Absent,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Lifetime::Seconds(u),
            (None, Some(f)) => from_f64(f),
            (None, None) => Lifetime::Invalid,
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Lifetime::Absent
            } else if let Ok(u) = s.parse::<u64>() {
                Lifetime::Seconds(u)
            } else {
                s.parse::<f64>().map_or(Lifetime::Invalid, from_f64)
            }
        }
        Some(_) => Lifetime::Invalid,
    }
}

fn lenient_lifetime<'de, D: Deserializer<'de>>(d: D) -> Result<Lifetime, D::Error> {
    Ok(lifetime_from(Option::<Value>::deserialize(d)?))
}

fn lenient_refresh_token<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RefreshToken>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        // An empty refresh token is not a rotation: the old one is kept.
        Some(Value::String(s)) if !s.is_empty() => Some(RefreshToken::new(s)),
        _ => None,
    })
}

fn lenient_scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scope>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(
            s.split([' ', ','])
                .filter(|p| !p.is_empty())
                .map(|p| Scope::new(p.to_string()))
                .collect(),
        ),
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) if !s.is_empty() => Some(Scope::new(s)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TokenAnswer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lifetimes_from_numbers_and_strings() {
        for (json, want) in [
            (r#""expires_in":3600"#, Lifetime::Seconds(3600)),
            (r#""expires_in":"3600""#, Lifetime::Seconds(3600)),
            (r#""expires_in":" 60 ""#, Lifetime::Seconds(60)),
            (r#""expires_in":3599.9"#, Lifetime::Seconds(3599)),
            (r#""expires_in":"1e3""#, Lifetime::Seconds(1000)),
            (r#""expires_in":null"#, Lifetime::Absent),
            (r#""expires_in":"""#, Lifetime::Absent),
            (r#""expires_in":-5"#, Lifetime::Invalid),
            (r#""expires_in":"soon""#, Lifetime::Invalid),
            (r#""expires_in":{}"#, Lifetime::Invalid),
        ] {
            let a = parse(&format!(r#"{{"access_token":"a",{json}}}"#));
            assert_eq!(a.lifetime(), want, "{json}");
        }
        assert_eq!(
            parse(r#"{"access_token":"a"}"#).lifetime(),
            Lifetime::Absent
        );
    }

    #[test]
    fn optional_fields_are_lenient() {
        let a = parse(
            r#"{"access_token":"a","token_type":7,"refresh_token":"","scope":["x","",3,"y"],"id_token":"j"}"#,
        );
        assert_eq!(a.token_type_str(), None);
        assert!(a.refresh_token().is_none());
        let scopes: Vec<&str> = a.scopes().unwrap().iter().map(|s| s.as_str()).collect();
        assert_eq!(scopes, ["x", "y"]);
        let b = parse(r#"{"access_token":"a","token_type":"bearer","scope":"repo,user gist"}"#);
        assert_eq!(b.token_type_str(), Some("bearer"));
        assert_eq!(b.scopes().unwrap().len(), 3);
        assert!(serde_json::from_str::<TokenAnswer>(r#"{"token_type":"bearer"}"#).is_err());
    }

    #[test]
    fn debug_redacts_tokens() {
        let a = parse(r#"{"access_token":"canary-at-1","refresh_token":"canary-rt-1"}"#);
        let d = format!("{a:?}");
        assert!(
            !d.contains("canary-at-1") && !d.contains("canary-rt-1"),
            "{d}"
        );
    }
}
