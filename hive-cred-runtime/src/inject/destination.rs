//! [`Destination`]: where a credential may be sent.

use std::fmt;
use std::str::FromStr;

use hive_cred_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::{Host, Url};

/// One place a credential may be sent: scheme, exact host, port and an optional path
/// prefix.
///
/// # Behavior
/// - Parsed from a URL: `https://api.github.com`, `https://uploads.github.com:443/repos`,
///   `http://127.0.0.1:8080`. The port defaults to the scheme's (443, 80).
/// - Only `http` and `https`. No userinfo, query or fragment; no wildcards.
/// - A request matches when its scheme, host and port are equal to the destination's
///   and its path is the prefix or lies under it (`/repos` matches `/repos` and
///   `/repos/x`, not `/repository`).
/// - Hosts compare exactly, after the URL standard's normalisation (lower case,
///   punycode, IP literals in canonical form): `api.github.com.attacker.test`,
///   `attacker.test/api.github.com`, `api.github.com.` (trailing dot) and the
///   address `140.82.112.6` do not match `api.github.com`. An IP literal matches only
///   a destination naming that same address.
/// - A request URL with userinfo (`https://user@host/`) matches nothing.
///
/// ```
/// use hive_cred_runtime::Destination;
///
/// let d: Destination = "https://api.github.com/repos".parse()?;
/// assert!(d.allows(&"https://api.github.com/repos/x/y?page=2".parse().unwrap()));
/// assert!(!d.allows(&"http://api.github.com/repos/x".parse().unwrap()));
/// assert!(!d.allows(&"https://api.github.com.attacker.test/repos".parse().unwrap()));
/// assert!(!d.allows(&"https://api.github.com/repository".parse().unwrap()));
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    https: bool,
    host: Host<String>,
    port: u16,
    /// Without a trailing `/`; `None` for the whole origin.
    path_prefix: Option<String>,
}

/// Why a URL does not match a [`Destination`], from the farthest to the nearest miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mismatch {
    Host,
    Scheme,
    Port,
    Path,
    /// The URL has userinfo (`user@host`), which hides the real host from readers.
    Userinfo,
}

impl Mismatch {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mismatch::Host => "its host is not among the allowed destinations",
            Mismatch::Scheme => "its scheme is not the one the destination names",
            Mismatch::Port => "its port is not the one the destination names",
            Mismatch::Path => "its path is outside the destination's path prefix",
            Mismatch::Userinfo => {
                "its URL has userinfo (user@host), which hides the real host; it is never allowed"
            }
        }
    }
}

impl Destination {
    /// Parses a destination (see the type's docs). `InvalidInput` naming what is wrong.
    pub fn parse(destination: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_input(format!("destination `{destination}` is not usable: {why}"))
        };
        if destination.contains('*') {
            return Err(bad(
                "wildcards are not supported; list every host the credential may go to",
            ));
        }
        let url = Url::parse(destination)
            .map_err(|e| bad(&format!("{e} (write it as https://host[:port][/path])")))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(bad(&format!("scheme `{other}` (only http and https)"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it has userinfo (user@host)"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it has a query or fragment"));
        }
        let host = url.host().ok_or_else(|| bad("it has no host"))?.to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| bad("it has no port"))?;
        let path = url.path().trim_end_matches('/');
        Ok(Destination {
            https,
            host,
            port,
            path_prefix: (!path.is_empty()).then(|| path.to_string()),
        })
    }

    /// The scheme: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The host, as normalised by the URL standard.
    pub fn host(&self) -> String {
        self.host.to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path prefix, without a trailing `/`, if any.
    pub fn path_prefix(&self) -> Option<&str> {
        self.path_prefix.as_deref()
    }

    /// Whether a credential may be sent to `url`.
    pub fn allows(&self, url: &Url) -> bool {
        self.check(url).is_ok()
    }

    pub(crate) fn check(&self, url: &Url) -> std::result::Result<(), Mismatch> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Mismatch::Userinfo);
        }
        let host_matches = match (url.host(), &self.host) {
            (Some(Host::Domain(a)), Host::Domain(b)) => a == b,
            (Some(Host::Ipv4(a)), Host::Ipv4(b)) => a == *b,
            (Some(Host::Ipv6(a)), Host::Ipv6(b)) => a == *b,
            _ => false,
        };
        if !host_matches {
            return Err(Mismatch::Host);
        }
        if (url.scheme() == "https") != self.https || !matches!(url.scheme(), "https" | "http") {
            return Err(Mismatch::Scheme);
        }
        if url.port_or_known_default() != Some(self.port) {
            return Err(Mismatch::Port);
        }
        if let Some(prefix) = &self.path_prefix {
            let path = url.path();
            let under = path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !under {
                return Err(Mismatch::Path);
            }
        }
        Ok(())
    }
}

/// `scheme://host:port/path` of `url`, without userinfo, query or fragment: what audit
/// records and errors show of a request's destination.
pub(crate) fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        match &self.host {
            Host::Ipv6(a) => write!(f, "[{a}]")?,
            h => write!(f, "{h}")?,
        }
        write!(
            f,
            ":{}{}",
            self.port,
            self.path_prefix.as_deref().unwrap_or("")
        )
    }
}

impl FromStr for Destination {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Destination::parse(s)
    }
}

impl TryFrom<&str> for Destination {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Destination::parse(s)
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Destination::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn exact_host_scheme_port_and_path_prefix() {
        let d = Destination::parse("https://api.github.com/repos/").unwrap();
        assert_eq!(d.to_string(), "https://api.github.com:443/repos");
        assert!(d.allows(&url("https://API.GitHub.com:443/repos")));
        assert!(d.allows(&url("https://api.github.com/repos/a/b?x=1")));
        for bad in [
            "http://api.github.com/repos",
            "https://api.github.com:8443/repos",
            "https://api.github.com/repository",
            "https://api.github.com/",
            "https://api.github.com.attacker.test/repos",
            "https://evilapi.github.com/repos",
            "https://api.github.com./repos",
            "https://attacker.test/api.github.com/repos",
            "https://api.github.com@attacker.test/repos",
            "https://user:pw@api.github.com/repos",
            "https://140.82.112.6/repos",
            "https://api.github.com/repos/../users",
        ] {
            assert!(!d.allows(&url(bad)), "{bad}");
        }
    }

    #[test]
    fn ip_literals_match_only_the_same_address() {
        let d = Destination::parse("http://127.0.0.1:8080").unwrap();
        assert!(d.allows(&url("http://127.0.0.1:8080/x")));
        assert!(
            d.allows(&url("http://0x7f.0.0.1:8080/x")),
            "same address, other spelling"
        );
        assert!(!d.allows(&url("http://127.0.0.2:8080/x")));
        assert!(!d.allows(&url("http://localhost:8080/x")));
        let v6 = Destination::parse("https://[::1]:9000").unwrap();
        assert_eq!(v6.to_string(), "https://[::1]:9000");
        assert!(v6.allows(&url("https://[0:0::1]:9000/")));
    }

    #[test]
    fn bad_destinations_are_refused() {
        for bad in [
            "api.github.com",
            "ftp://api.github.com",
            "https://*.github.com",
            "https://u:p@api.github.com",
            "https://api.github.com/?q=1",
            "https://api.github.com/#f",
        ] {
            let e = Destination::parse(bad).unwrap_err();
            assert_eq!(e.kind(), hive_cred_core::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let d: Destination = serde_json::from_str("\"https://api.github.com/v3\"").unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            "\"https://api.github.com:443/v3\""
        );
    }
}
