//! [`VaultConfig`]: where the Vault server is, how to log in, where credentials live.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hive_cred_core::{Error, ExposeSecret, Result, SecretString};
use url::{Host, Url};

/// Default KV v2 mount.
pub const DEFAULT_MOUNT: &str = "secret";
/// Default path prefix under the mount.
pub const DEFAULT_PATH_PREFIX: &str = "hive/credentials";
/// Default JWT / OIDC auth mount.
pub const DEFAULT_JWT_MOUNT: &str = "jwt";
/// Default AppRole auth mount.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// Default time a request keeps looking for the active node of a cluster
/// ([`VaultConfig::with_failover_timeout`]).
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// Default timeout of one HTTP request to Vault.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`VaultStorage`](crate::VaultStorage) authenticates.
///
/// Debug never prints the token, role id or secret id.
#[derive(Clone)]
#[non_exhaustive]
pub enum VaultAuth {
    /// A Vault token. If it is renewable it is renewed in the background.
    Token(SecretString),
    /// AppRole login (`auth/{approle_mount}/login`). The resulting token is renewed while
    /// it can be, and the login is redone when it cannot.
    AppRole {
        /// The role id.
        role_id: SecretString,
        /// The secret id.
        secret_id: SecretString,
    },
    /// JWT / OIDC machine login (`auth/{jwt_mount}/login`) with `role` and the JWT read
    /// from `token_file` (a Kubernetes projected service-account token, a CI OIDC
    /// token). The login is redone when the file changes or the Vault token expires;
    /// the previous Vault token is then revoked (self-revoke) if it is still valid.
    Jwt {
        /// The role of the JWT auth method.
        role: String,
        /// The file the JWT is read from (surrounding whitespace is ignored).
        token_file: PathBuf,
    },
}

impl VaultAuth {
    /// Token authentication.
    pub fn token(token: impl Into<SecretString>) -> Self {
        VaultAuth::Token(token.into())
    }

    /// AppRole authentication.
    pub fn approle(role_id: impl Into<SecretString>, secret_id: impl Into<SecretString>) -> Self {
        VaultAuth::AppRole {
            role_id: role_id.into(),
            secret_id: secret_id.into(),
        }
    }

    /// JWT / OIDC login with `role` and the JWT in `token_file`.
    pub fn jwt(role: impl Into<String>, token_file: impl Into<PathBuf>) -> Self {
        VaultAuth::Jwt {
            role: role.into(),
            token_file: token_file.into(),
        }
    }

    /// `"token"`, `"approle"` or `"jwt"`, for logs.
    pub fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token(_) => "token",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Jwt { .. } => "jwt",
        }
    }

    /// Whether the storage logs in itself (AppRole, JWT) and can do so again.
    pub(crate) fn logs_in(&self) -> bool {
        matches!(self, VaultAuth::AppRole { .. } | VaultAuth::Jwt { .. })
    }
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token([REDACTED])"),
            VaultAuth::AppRole { .. } => f
                .debug_struct("AppRole")
                .field("role_id", &"[REDACTED]")
                .field("secret_id", &"[REDACTED]")
                .finish(),
            VaultAuth::Jwt { role, token_file } => f
                .debug_struct("Jwt")
                .field("role", role)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

/// Configuration of a [`VaultStorage`](crate::VaultStorage).
///
/// ```
/// use std::time::Duration;
/// use hive_cred_vault::{VaultAuth, VaultConfig};
///
/// let config = VaultConfig::new("https://vault.example.com:8200", VaultAuth::token("s.xxxx"))?
///     .with_mount("kv")?
///     .with_path_prefix("agents/prod")?
///     .with_timeout(Duration::from_secs(5));
/// assert_eq!(config.kv_path("github"), "kv/data/agents/prod/github");
/// assert!(!format!("{config:?}").contains("s.xxxx"));
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
///
/// # Default
/// - mount: `secret` ([`DEFAULT_MOUNT`])
/// - path prefix: `hive/credentials` ([`DEFAULT_PATH_PREFIX`])
/// - namespace: none
/// - CA certificate: none (the Mozilla roots of `webpki-roots`); a CA file or directory
///   replaces them
/// - client certificate (mutual TLS): none
/// - TLS server name: the address's host
/// - plain `http://`: only to loopback hosts (`127.0.0.0/8`, `::1`, `localhost`)
/// - AppRole mount: `approle`
/// - request timeout: 10 s ([`DEFAULT_TIMEOUT`])
/// - token renewal: on
///
/// TLS certificate verification cannot be turned off.
#[derive(Clone)]
#[non_exhaustive]
pub struct VaultConfig {
    /// The first of `addresses`.
    pub(crate) address: Url,
    /// Every server of the cluster, in the order given.
    pub(crate) addresses: Vec<Url>,
    pub(crate) failover_timeout: Duration,
    pub(crate) auth: VaultAuth,
    pub(crate) mount: String,
    pub(crate) path_prefix: String,
    pub(crate) namespace: Option<String>,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) ca_path: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) tls_server_name: Option<String>,
    pub(crate) allow_http: bool,
    pub(crate) approle_mount: String,
    pub(crate) jwt_mount: String,
    pub(crate) timeout: Duration,
    pub(crate) renew: bool,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field(
                "addresses",
                &self.addresses.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .field("failover_timeout", &self.failover_timeout)
            .field("auth", &self.auth)
            .field("mount", &self.mount)
            .field("path_prefix", &self.path_prefix)
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .field("ca_path", &self.ca_path)
            .field("client_cert", &self.client_cert)
            .field("tls_server_name", &self.tls_server_name)
            .field("allow_http", &self.allow_http)
            .field("approle_mount", &self.approle_mount)
            .field("jwt_mount", &self.jwt_mount)
            .field("timeout", &self.timeout)
            .field("renew", &self.renew)
            .finish()
    }
}

impl VaultConfig {
    /// A configuration for the server at `address` (`http://` or `https://`), or for
    /// the servers of one HA cluster listed comma-separated
    /// (`https://vault-0:8200,https://vault-1:8200`): requests go to the first that is
    /// the active node, and move to the next on connection failure or when a node
    /// stops being active (see [`with_failover_timeout`](Self::with_failover_timeout)).
    ///
    /// Fails with `ErrorKind::Config` when the address is not such a URL. A plain
    /// `http://` address to a host other than loopback is refused when the storage
    /// connects, unless [`with_allow_http`](Self::with_allow_http) allows it.
    pub fn new(address: &str, auth: VaultAuth) -> Result<Self> {
        let addresses = address
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(parse_address)
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = addresses.first().cloned() else {
            return Err(Error::config(
                "the Vault address is empty: expected a URL like https://vault.example.com:8200",
            ));
        };
        Ok(VaultConfig {
            address: first,
            addresses,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            auth,
            mount: DEFAULT_MOUNT.to_owned(),
            path_prefix: DEFAULT_PATH_PREFIX.to_owned(),
            namespace: None,
            ca_cert: None,
            ca_path: None,
            client_cert: None,
            tls_server_name: None,
            allow_http: false,
            approle_mount: DEFAULT_APPROLE_MOUNT.to_owned(),
            jwt_mount: DEFAULT_JWT_MOUNT.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            renew: true,
        })
    }

    /// Reads the configuration from the process environment. See
    /// [`from_lookup`](Self::from_lookup) for the variables.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable name to its value; empty
    /// values count as unset):
    ///
    /// | variable | fallback | meaning |
    /// |---|---|---|
    /// | `HIVE_VAULT_ADDR` | `VAULT_ADDR` | server URL (required); several, comma-separated, for an HA cluster |
    /// | `HIVE_VAULT_TOKEN` | `VAULT_TOKEN` | token (required unless AppRole) |
    /// | `HIVE_VAULT_ROLE_ID`, `HIVE_VAULT_SECRET_ID` | | AppRole login (both, wins over a token) |
    /// | `HIVE_VAULT_APPROLE_MOUNT` | | AppRole mount, default `approle` |
    /// | `HIVE_VAULT_JWT_ROLE`, `HIVE_VAULT_JWT_FILE` | | JWT / OIDC login: role and the file holding the JWT (both; wins over AppRole and a token) |
    /// | `HIVE_VAULT_JWT_MOUNT` | | JWT auth mount, default `jwt` |
    /// | `HIVE_VAULT_PATH` | | path prefix, default `hive/credentials` |
    /// | `HIVE_VAULT_MOUNT` | | KV v2 mount, default `secret` |
    /// | `HIVE_VAULT_NAMESPACE` | `VAULT_NAMESPACE` | Vault Enterprise / OpenBao namespace |
    /// | `HIVE_VAULT_CACERT` | `VAULT_CACERT` | PEM file of the CA(s) to trust |
    /// | `HIVE_VAULT_CAPATH` | `VAULT_CAPATH` | directory of PEM CA files to trust |
    /// | `HIVE_VAULT_CLIENT_CERT`, `HIVE_VAULT_CLIENT_KEY` | `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY` | PEM client certificate and key (mutual TLS; both needed) |
    /// | `HIVE_VAULT_TLS_SERVER_NAME` | `VAULT_TLS_SERVER_NAME` | name to verify the server certificate against |
    /// | `HIVE_VAULT_ALLOW_HTTP` | | `1`/`true`: allow `http://` to a non-loopback host |
    /// | `HIVE_VAULT_TIMEOUT` | | request timeout: `10`, `10s` or `500ms` |
    /// | `HIVE_VAULT_FAILOVER_TIMEOUT` | | how long a request looks for the active node of a cluster (default `20s`) |
    ///
    /// A missing address or missing credentials is an `ErrorKind::Config` error that
    /// names the variables to set. `HIVE_VAULT_SKIP_VERIFY` or `VAULT_SKIP_VERIFY` set to
    /// anything but `0`/`false` is refused with `ErrorKind::Config`: verification cannot
    /// be turned off, trust the server's CA instead.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let get2 = |name: &str, fallback: &str| get(name).or_else(|| get(fallback));

        let address = get2("HIVE_VAULT_ADDR", "VAULT_ADDR").ok_or_else(|| {
            Error::config(
                "Vault address is not set: set HIVE_VAULT_ADDR (or VAULT_ADDR), e.g. https://vault.example.com:8200",
            )
        })?;
        let role_id = get("HIVE_VAULT_ROLE_ID");
        let secret_id = get("HIVE_VAULT_SECRET_ID");
        let jwt = match (get("HIVE_VAULT_JWT_ROLE"), get("HIVE_VAULT_JWT_FILE")) {
            (Some(role), Some(file)) => Some(VaultAuth::jwt(role.trim(), file.trim())),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "only one of HIVE_VAULT_JWT_ROLE and HIVE_VAULT_JWT_FILE is set: JWT login needs the role and the file holding the JWT",
                ));
            }
        };
        let auth = match (role_id, secret_id) {
            _ if jwt.is_some() => jwt.expect("checked just above"),
            (Some(role_id), Some(secret_id)) => VaultAuth::approle(role_id, secret_id),
            (Some(_), None) => {
                return Err(Error::config(
                    "HIVE_VAULT_ROLE_ID is set but HIVE_VAULT_SECRET_ID is not: AppRole login needs both",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "HIVE_VAULT_SECRET_ID is set but HIVE_VAULT_ROLE_ID is not: AppRole login needs both",
                ));
            }
            (None, None) => match get2("HIVE_VAULT_TOKEN", "VAULT_TOKEN") {
                Some(token) => VaultAuth::token(token),
                None => {
                    return Err(Error::config(
                        "no Vault credentials: set HIVE_VAULT_TOKEN (or VAULT_TOKEN), or HIVE_VAULT_ROLE_ID and HIVE_VAULT_SECRET_ID for AppRole",
                    ));
                }
            },
        };
        let mut config = VaultConfig::new(address.trim(), auth)
            .map_err(|e| e.with_message_prefix("HIVE_VAULT_ADDR / VAULT_ADDR"))?;
        if let Some(mount) = get("HIVE_VAULT_MOUNT") {
            config = config
                .with_mount(&mount)
                .map_err(|e| e.with_message_prefix("HIVE_VAULT_MOUNT"))?;
        }
        if let Some(prefix) = lookup("HIVE_VAULT_PATH") {
            config = config
                .with_path_prefix(&prefix)
                .map_err(|e| e.with_message_prefix("HIVE_VAULT_PATH"))?;
        }
        if let Some(ns) = get2("HIVE_VAULT_NAMESPACE", "VAULT_NAMESPACE") {
            config = config.with_namespace(ns.trim());
        }
        if let Some(ca) = get2("HIVE_VAULT_CACERT", "VAULT_CACERT") {
            config = config.with_ca_cert(ca.trim());
        }
        if let Some(dir) = get2("HIVE_VAULT_CAPATH", "VAULT_CAPATH") {
            config = config.with_ca_path(dir.trim());
        }
        match (
            get2("HIVE_VAULT_CLIENT_CERT", "VAULT_CLIENT_CERT"),
            get2("HIVE_VAULT_CLIENT_KEY", "VAULT_CLIENT_KEY"),
        ) {
            (Some(cert), Some(key)) => config = config.with_client_cert(cert.trim(), key.trim()),
            (None, None) => {}
            _ => {
                return Err(Error::config(
                    "only one of HIVE_VAULT_CLIENT_CERT / VAULT_CLIENT_CERT and HIVE_VAULT_CLIENT_KEY / VAULT_CLIENT_KEY is set: mutual TLS needs both the certificate and its key",
                ));
            }
        }
        if let Some(name) = get2("HIVE_VAULT_TLS_SERVER_NAME", "VAULT_TLS_SERVER_NAME") {
            config = config.with_tls_server_name(name.trim());
        }
        for var in ["HIVE_VAULT_SKIP_VERIFY", "VAULT_SKIP_VERIFY"] {
            if let Some(v) = get(var)
                && parse_bool(var, &v)?
            {
                return Err(Error::config(format!(
                    "{var} is set: hive-cred never turns off TLS certificate verification, because the Vault token would go to whoever answers; trust the server's CA with HIVE_VAULT_CACERT / VAULT_CACERT (or VAULT_CAPATH) and unset {var}"
                )));
            }
        }
        if let Some(v) = get("HIVE_VAULT_ALLOW_HTTP") {
            config.allow_http = parse_bool("HIVE_VAULT_ALLOW_HTTP", &v)?;
        }
        if let Some(mount) = get("HIVE_VAULT_JWT_MOUNT") {
            config.jwt_mount = validate_path(&mount, false)
                .map_err(|e| e.with_message_prefix("HIVE_VAULT_JWT_MOUNT"))?;
        }
        if let Some(mount) = get("HIVE_VAULT_APPROLE_MOUNT") {
            config.approle_mount = validate_path(&mount, false)
                .map_err(|e| e.with_message_prefix("HIVE_VAULT_APPROLE_MOUNT"))?;
        }
        if let Some(t) = get("HIVE_VAULT_TIMEOUT") {
            config.timeout = parse_timeout("HIVE_VAULT_TIMEOUT", &t)?;
        }
        if let Some(t) = get("HIVE_VAULT_FAILOVER_TIMEOUT") {
            config.failover_timeout = parse_timeout("HIVE_VAULT_FAILOVER_TIMEOUT", &t)?;
        }
        config.validated()
    }

    /// The KV v2 mount (default `secret`). Fails with `ErrorKind::Config` on an empty
    /// path, `.`/`..` segments or characters outside `A-Za-z0-9_.-/`.
    pub fn with_mount(mut self, mount: &str) -> Result<Self> {
        self.mount = validate_path(mount, false)?;
        Ok(self)
    }

    /// The path prefix under the mount (default `hive/credentials`; may be empty).
    /// Leading and trailing `/` are ignored. Fails with `ErrorKind::Config` on `.`/`..`
    /// segments, empty segments or characters outside `A-Za-z0-9_.-/`.
    pub fn with_path_prefix(mut self, prefix: &str) -> Result<Self> {
        self.path_prefix = validate_path(prefix, true)?;
        Ok(self)
    }

    /// The Vault Enterprise / OpenBao namespace (header `X-Vault-Namespace`).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// A PEM file with the CA certificate(s) to trust for `https://` addresses
    /// (`VAULT_CACERT`). Together with [`with_ca_path`](Self::with_ca_path), these
    /// replace the built-in roots. A file without a certificate is an
    /// `ErrorKind::Config` error when the storage connects.
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// A directory whose files are PEM CA certificates to trust (`VAULT_CAPATH`). Every
    /// regular file in it (not in sub-directories, not hidden) must hold at least one
    /// certificate.
    pub fn with_ca_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ca_path = Some(dir.into());
        self
    }

    /// A PEM client certificate (chain) and its PEM private key, sent to servers that
    /// ask for one (mutual TLS; `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY`).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate is verified against instead of the address's
    /// host (`VAULT_TLS_SERVER_NAME`): a DNS name or an IP address. The address still
    /// decides where to connect.
    pub fn with_tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Allows a plain `http://` address to a host other than loopback (default
    /// `false`; `HIVE_VAULT_ALLOW_HTTP=1`). Over plain HTTP the Vault token, the AppRole
    /// secret id and every credential value travel unencrypted: allow it only on a
    /// network you trust completely. Loopback hosts (`127.0.0.0/8`, `::1`, `localhost`)
    /// never need it.
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// How long a request to a cluster of several addresses keeps looking for the
    /// active node when the one it used fails to answer or is no longer active
    /// (default 20 s, [`DEFAULT_FAILOVER_TIMEOUT`]): it probes every address's
    /// `sys/health`, waiting 100 ms to 1 s between rounds, then fails with the last
    /// error (`ErrorKind::Unavailable` for an outage). A single address is never retried.
    pub fn with_failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// The JWT / OIDC auth mount (default `jwt`).
    pub fn with_jwt_mount(mut self, mount: &str) -> Result<Self> {
        self.jwt_mount = validate_path(mount, false)?;
        Ok(self)
    }

    /// The AppRole auth mount (default `approle`).
    pub fn with_approle_mount(mut self, mount: &str) -> Result<Self> {
        self.approle_mount = validate_path(mount, false)?;
        Ok(self)
    }

    /// The timeout of one HTTP request (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether a renewable token is renewed in the background (default `true`).
    pub fn with_token_renewal(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// The server address (the first, when several are configured).
    pub fn address(&self) -> &str {
        self.address.as_str()
    }

    /// Every configured server address, in order.
    pub fn addresses(&self) -> Vec<&str> {
        self.addresses.iter().map(Url::as_str).collect()
    }

    /// The KV v2 mount.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The path prefix under the mount.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The authentication method.
    pub fn auth(&self) -> &VaultAuth {
        &self.auth
    }

    /// Checks what can only be checked on the whole configuration, before anything is
    /// sent: plain HTTP to a non-loopback host, credentials and a namespace that could
    /// not go into a header. Trims surrounding whitespace (a token read from a file
    /// ends with a newline) off the token, role id and secret id. Never echoes them.
    pub(crate) fn validated(mut self) -> Result<Self> {
        for address in &self.addresses {
            if address.scheme() == "http"
                && !self.allow_http
                && !address.host().is_some_and(is_loopback)
            {
                return Err(Error::config(format!(
                    "refusing plain http:// for the Vault at {}: the Vault token, AppRole secret id and every credential value would travel unencrypted; use https://, or allow plain HTTP explicitly with HIVE_VAULT_ALLOW_HTTP=1 (VaultConfig::with_allow_http(true)) on a network you trust",
                    address.host_str().unwrap_or_default()
                ))
                .with_context("backend", "vault"));
            }
        }
        self.auth = match &self.auth {
            VaultAuth::Token(t) => VaultAuth::Token(clean_secret(t, "the Vault token")?),
            VaultAuth::AppRole { role_id, secret_id } => VaultAuth::AppRole {
                role_id: clean_secret(role_id, "the AppRole role id")?,
                secret_id: clean_secret(secret_id, "the AppRole secret id")?,
            },
            VaultAuth::Jwt { role, token_file } => {
                let role = role.trim();
                if role.is_empty() || role.chars().any(char::is_control) {
                    return Err(Error::config(
                        "the JWT role is empty or holds control characters: check HIVE_VAULT_JWT_ROLE",
                    ));
                }
                VaultAuth::jwt(role, token_file.clone())
            }
        };
        if let Some(ns) = &self.namespace {
            let trimmed = ns.trim();
            if trimmed.chars().any(char::is_control) {
                return Err(Error::config(
                    "the Vault namespace contains control characters: it is sent in the X-Vault-Namespace header",
                ));
            }
            self.namespace = (!trimmed.is_empty()).then(|| trimmed.to_owned());
        }
        if let Some(name) = &self.tls_server_name {
            self.tls_server_name = Some(name.trim().to_owned());
        }
        Ok(self)
    }

    /// The secret's path below the mount: `{prefix}/{id}`.
    pub(crate) fn secret_path(&self, id: &str) -> String {
        if self.path_prefix.is_empty() {
            id.to_owned()
        } else {
            format!("{}/{id}", self.path_prefix)
        }
    }

    /// The full KV v2 data path of a credential, `{mount}/data/{prefix}/{id}`, as it shows
    /// in Vault's audit log and policies.
    pub fn kv_path(&self, id: &str) -> String {
        format!("{}/data/{}", self.mount, self.secret_path(id))
    }

    /// The full KV v2 metadata path of a credential, `{mount}/metadata/{prefix}/{id}`.
    pub fn kv_metadata_path(&self, id: &str) -> String {
        format!("{}/metadata/{}", self.mount, self.secret_path(id))
    }
}

/// Whether `host` is a loopback host (`localhost`, `127.0.0.0/8`, `::1`).
pub(crate) fn is_loopback(host: Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    }
}

/// `secret` without surrounding whitespace; a `Config` error naming `what` (never the
/// value) when it is empty or holds other control characters, which cannot go into an
/// HTTP header.
fn clean_secret(secret: &SecretString, what: &str) -> Result<SecretString> {
    // EXPOSE: checked for control characters and trimmed; only a new SecretString leaves.
    let raw = secret.expose_secret();
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Error::config(format!("{what} is empty")).with_context("backend", "vault"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::config(format!(
            "{what} contains control characters (a line break or tab inside it?): check the file or variable it was read from"
        ))
        .with_context("backend", "vault"));
    }
    Ok(if trimmed.len() == raw.len() {
        secret.clone()
    } else {
        SecretString::from(trimmed.to_owned())
    })
}

fn parse_address(address: &str) -> Result<Url> {
    let url = Url::parse(address).map_err(|e| {
        Error::config(format!(
            "invalid Vault address {address:?}: {e}; expected a URL like https://vault.example.com:8200"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::config(format!(
            "invalid Vault address {address:?}: expected an http:// or https:// URL with a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(
            "invalid Vault address: it must not carry user credentials; use a token or AppRole",
        ));
    }
    Ok(url)
}

fn validate_path(raw: &str, allow_empty: bool) -> Result<String> {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(Error::config("Vault path must not be empty"))
        };
    }
    for segment in trimmed.split('/') {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(Error::config(format!(
                "invalid Vault path {trimmed:?}: segments must be non-empty, not '.' or '..', and use only A-Z, a-z, 0-9, '_', '-', '.'"
            )));
        }
    }
    Ok(trimmed.to_owned())
}

/// The one yes/no parser of the `HIVE_VAULT_*` switches: `1`/`true`/`yes`/`on` or
/// `0`/`false`/`no`/`off` (any case); anything else is a `Config` error naming `var`.
pub(crate) fn parse_bool(var: &str, raw: &str) -> Result<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::config(format!(
            "invalid {var} {:?}: expected 1/true/yes/on or 0/false/no/off",
            raw.trim()
        ))),
    }
}

fn parse_timeout(var: &str, raw: &str) -> Result<Duration> {
    let raw = raw.trim();
    let parsed = if let Some(ms) = raw.strip_suffix("ms") {
        ms.trim().parse::<u64>().ok().map(Duration::from_millis)
    } else {
        raw.strip_suffix('s')
            .unwrap_or(raw)
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::config(format!(
            "invalid {var} {raw:?}: expected a positive number of seconds (`10`, `10s`) or milliseconds (`500ms`)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::{ErrorKind, ExposeSecret};
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn hive_names_win_over_standard_names() {
        let c = VaultConfig::from_lookup(lookup(&[
            ("HIVE_VAULT_ADDR", "http://127.0.0.1:8200"),
            ("VAULT_ADDR", "http://127.0.0.1:9999"),
            ("HIVE_VAULT_TOKEN", "hive-token"),
            ("VAULT_TOKEN", "std-token"),
            ("HIVE_VAULT_NAMESPACE", "team"),
            ("VAULT_NAMESPACE", "other"),
        ]))
        .unwrap();
        assert_eq!(c.address(), "http://127.0.0.1:8200/");
        match c.auth() {
            VaultAuth::Token(t) => assert_eq!(t.expose_secret(), "hive-token"), // EXPOSE: the test compares the secret value.
            other => panic!("unexpected auth {other:?}"),
        }
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert_eq!(c.mount(), "secret");
        assert_eq!(c.path_prefix(), "hive/credentials");
        assert_eq!(c.timeout(), Duration::from_secs(10));
        assert_eq!(c.kv_path("gh"), "secret/data/hive/credentials/gh");
        assert_eq!(
            c.kv_metadata_path("gh"),
            "secret/metadata/hive/credentials/gh"
        );
    }

    #[test]
    fn standard_names_are_the_fallback() {
        let c = VaultConfig::from_lookup(lookup(&[
            ("VAULT_ADDR", "https://vault.internal:8200"),
            ("VAULT_TOKEN", "std-token"),
            ("VAULT_CACERT", "/etc/ca.pem"),
            ("HIVE_VAULT_TOKEN", ""),
        ]))
        .unwrap();
        assert_eq!(c.address(), "https://vault.internal:8200/");
        assert_eq!(c.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        match c.auth() {
            VaultAuth::Token(t) => assert_eq!(t.expose_secret(), "std-token"), // EXPOSE: the test compares the secret value.
            other => panic!("unexpected auth {other:?}"),
        }
    }

    #[test]
    fn missing_address_or_credentials_names_the_variables() {
        let err = VaultConfig::from_lookup(lookup(&[("HIVE_VAULT_TOKEN", "t")])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("HIVE_VAULT_ADDR"), "{err}");
        assert!(err.message().contains("VAULT_ADDR"), "{err}");

        let err = VaultConfig::from_lookup(lookup(&[("HIVE_VAULT_ADDR", "http://127.0.0.1:1")]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        for var in [
            "HIVE_VAULT_TOKEN",
            "VAULT_TOKEN",
            "HIVE_VAULT_ROLE_ID",
            "HIVE_VAULT_SECRET_ID",
        ] {
            assert!(err.message().contains(var), "{var} missing from {err}");
        }

        let err = VaultConfig::from_lookup(lookup(&[
            ("HIVE_VAULT_ADDR", "http://127.0.0.1:1"),
            ("HIVE_VAULT_ROLE_ID", "r"),
        ]))
        .unwrap_err();
        assert!(err.message().contains("HIVE_VAULT_SECRET_ID"), "{err}");
    }

    #[test]
    fn approle_wins_over_token_and_options_parse() {
        let c = VaultConfig::from_lookup(lookup(&[
            ("HIVE_VAULT_ADDR", "http://127.0.0.1:8200"),
            ("VAULT_TOKEN", "ambient-token"),
            ("HIVE_VAULT_ROLE_ID", "role-1"),
            ("HIVE_VAULT_SECRET_ID", "secret-1"),
            ("HIVE_VAULT_APPROLE_MOUNT", "/approle-agents/"),
            ("HIVE_VAULT_MOUNT", "kv"),
            ("HIVE_VAULT_PATH", "/agents/prod/"),
            ("HIVE_VAULT_TIMEOUT", "750ms"),
        ]))
        .unwrap();
        assert_eq!(c.auth().method(), "approle");
        assert_eq!(c.approle_mount, "approle-agents");
        assert_eq!(c.kv_path("x"), "kv/data/agents/prod/x");
        assert_eq!(c.timeout(), Duration::from_millis(750));
        let debug = format!("{c:?}");
        for secret in ["role-1", "secret-1", "ambient-token"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (var, value) in [
            ("HIVE_VAULT_ADDR", "vault.example.com"),
            ("HIVE_VAULT_ADDR", "ftp://vault"),
            ("HIVE_VAULT_PATH", "a/../b"),
            ("HIVE_VAULT_PATH", "a//b"),
            ("HIVE_VAULT_PATH", "a b"),
            ("HIVE_VAULT_MOUNT", "."),
            ("HIVE_VAULT_TIMEOUT", "0"),
            ("HIVE_VAULT_TIMEOUT", "ten"),
        ] {
            let mut vars = vec![
                ("HIVE_VAULT_ADDR", "http://127.0.0.1:8200"),
                ("HIVE_VAULT_TOKEN", "t"),
            ];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let err = VaultConfig::from_lookup(lookup(&vars))
                .expect_err(&format!("{var}={value} must fail"));
            assert_eq!(err.kind(), ErrorKind::Config, "{var}={value}: {err}");
        }
        let err =
            VaultConfig::new("http://user:pw@127.0.0.1:8200", VaultAuth::token("t")).unwrap_err();
        assert!(!err.to_string().contains("pw"));
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for addr in [
            "http://127.0.0.1:8200",
            "http://127.1.2.3:8200",
            "http://[::1]:8200",
            "http://localhost:8200",
            "http://LOCALHOST:8200",
            "https://vault.example.invalid:8200",
        ] {
            let c = VaultConfig::new(addr, VaultAuth::token("t")).unwrap();
            c.validated().unwrap_or_else(|e| panic!("{addr}: {e}"));
        }
        for addr in [
            "http://vault.example.invalid:8200",
            "http://10.0.0.5:8200",
            "http://[::2]:8200",
            "http://localhost.example.invalid",
        ] {
            let err = VaultConfig::new(addr, VaultAuth::token("t"))
                .unwrap()
                .validated()
                .expect_err(addr);
            assert_eq!(err.kind(), ErrorKind::Config, "{addr}");
            assert!(!err.is_temporary());
            for needle in ["unencrypted", "HIVE_VAULT_ALLOW_HTTP", "with_allow_http"] {
                assert!(err.message().contains(needle), "{needle}: {err}");
            }
            VaultConfig::new(addr, VaultAuth::token("t"))
                .unwrap()
                .with_allow_http(true)
                .validated()
                .unwrap_or_else(|e| panic!("{addr} allowed: {e}"));
        }
        let vars = |allow: &'static str| {
            let map: HashMap<String, String> = [
                ("HIVE_VAULT_ADDR", "http://vault.example.invalid:8200"),
                ("HIVE_VAULT_TOKEN", "t"),
                ("HIVE_VAULT_ALLOW_HTTP", allow),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            move |name: &str| map.get(name).cloned()
        };
        assert_eq!(
            VaultConfig::from_lookup(vars("")).unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(
            VaultConfig::from_lookup(vars("0")).unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(
            VaultConfig::from_lookup(vars("maybe")).unwrap_err().kind(),
            ErrorKind::Config
        );
        assert!(VaultConfig::from_lookup(vars("1")).unwrap().allow_http);
        assert!(VaultConfig::from_lookup(vars("true")).unwrap().allow_http);
    }

    #[test]
    fn tokens_are_trimmed_and_control_characters_refused() {
        let c = VaultConfig::new("http://127.0.0.1:8200", VaultAuth::token("s.abc\n"))
            .unwrap()
            .validated()
            .unwrap();
        match c.auth() {
            VaultAuth::Token(t) => assert_eq!(t.expose_secret(), "s.abc"), // EXPOSE: the test compares the trimmed value.
            other => panic!("unexpected auth {other:?}"),
        }
        let c = VaultConfig::new(
            "http://127.0.0.1:8200",
            VaultAuth::approle(" role\r\n", "\tsecret\n"),
        )
        .unwrap()
        .validated()
        .unwrap();
        match c.auth() {
            // EXPOSE: the test compares the trimmed values.
            VaultAuth::AppRole { role_id, secret_id } => {
                assert_eq!(role_id.expose_secret(), "role"); // EXPOSE: trimmed value.
                assert_eq!(secret_id.expose_secret(), "secret"); // EXPOSE: trimmed value.
            }
            other => panic!("unexpected auth {other:?}"),
        }
        for bad in [
            "s.canary\nsecond-line",
            "s.canary\u{0}x",
            "\n\n",
            "s.ca\x7fnary",
        ] {
            let err = VaultConfig::new("http://127.0.0.1:8200", VaultAuth::token(bad))
                .unwrap()
                .validated()
                .expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::Config);
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("canary"), "{shown}");
            assert!(!shown.contains("nary"), "{shown}");
        }
        let err = VaultConfig::new("http://127.0.0.1:8200", VaultAuth::token("t"))
            .unwrap()
            .with_namespace("team\nx")
            .validated()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn tls_settings_from_standard_names_and_no_skip_verify() {
        let c = VaultConfig::from_lookup(lookup(&[
            ("VAULT_ADDR", "https://vault.internal:8200"),
            ("VAULT_TOKEN", "t"),
            ("VAULT_CAPATH", "/etc/vault-cas"),
            ("VAULT_CLIENT_CERT", "/etc/client.pem"),
            ("VAULT_CLIENT_KEY", "/etc/client-key.pem"),
            ("VAULT_TLS_SERVER_NAME", " vault.example.com "),
            ("VAULT_SKIP_VERIFY", "false"),
        ]))
        .unwrap();
        assert_eq!(c.ca_path, Some(PathBuf::from("/etc/vault-cas")));
        assert_eq!(
            c.client_cert,
            Some((
                PathBuf::from("/etc/client.pem"),
                PathBuf::from("/etc/client-key.pem")
            ))
        );
        assert_eq!(c.tls_server_name.as_deref(), Some("vault.example.com"));

        let err = VaultConfig::from_lookup(lookup(&[
            ("VAULT_ADDR", "https://vault.internal:8200"),
            ("VAULT_TOKEN", "t"),
            ("VAULT_CLIENT_CERT", "/etc/client.pem"),
        ]))
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("VAULT_CLIENT_KEY"), "{err}");

        for (var, value) in [
            ("VAULT_SKIP_VERIFY", "true"),
            ("VAULT_SKIP_VERIFY", "1"),
            ("HIVE_VAULT_SKIP_VERIFY", "yes"),
        ] {
            let err = VaultConfig::from_lookup(lookup(&[
                ("VAULT_ADDR", "https://vault.internal:8200"),
                ("VAULT_TOKEN", "t"),
                (var, value),
            ]))
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().contains(var), "{err}");
            assert!(err.message().contains("VAULT_CACERT"), "{err}");
        }
    }

    #[test]
    fn several_addresses_are_one_cluster() {
        let c = VaultConfig::from_lookup(lookup(&[
            (
                "HIVE_VAULT_ADDR",
                " http://127.0.0.1:8200 , http://127.0.0.1:8201,,http://localhost:8202 ",
            ),
            ("HIVE_VAULT_TOKEN", "t"),
            ("HIVE_VAULT_FAILOVER_TIMEOUT", "5s"),
        ]))
        .unwrap();
        assert_eq!(
            c.addresses(),
            [
                "http://127.0.0.1:8200/",
                "http://127.0.0.1:8201/",
                "http://localhost:8202/"
            ]
        );
        assert_eq!(c.address(), "http://127.0.0.1:8200/");
        assert_eq!(c.failover_timeout, Duration::from_secs(5));
        // Every address is checked: one plain-HTTP address off loopback is refused.
        let err = VaultConfig::new(
            "https://vault-0.example.invalid,http://vault-1.example.invalid",
            VaultAuth::token("t"),
        )
        .unwrap()
        .validated()
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("vault-1.example.invalid"), "{err}");
        for bad in [",", " , ", "http://127.0.0.1:1,vault"] {
            assert_eq!(
                VaultConfig::new(bad, VaultAuth::token("t"))
                    .unwrap_err()
                    .kind(),
                ErrorKind::Config,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn jwt_login_from_the_environment() {
        let c = VaultConfig::from_lookup(lookup(&[
            ("HIVE_VAULT_ADDR", "http://127.0.0.1:8200"),
            ("HIVE_VAULT_TOKEN", "ambient"),
            ("HIVE_VAULT_JWT_ROLE", " agent "),
            ("HIVE_VAULT_JWT_FILE", "/var/run/secrets/tokens/vault"),
            ("HIVE_VAULT_JWT_MOUNT", "/jwt-k8s/"),
        ]))
        .unwrap()
        .validated()
        .unwrap();
        assert_eq!(c.auth().method(), "jwt");
        assert_eq!(c.jwt_mount, "jwt-k8s");
        match c.auth() {
            VaultAuth::Jwt { role, token_file } => {
                assert_eq!(role, "agent");
                assert_eq!(token_file, &PathBuf::from("/var/run/secrets/tokens/vault"));
            }
            other => panic!("unexpected auth {other:?}"),
        }
        let err = VaultConfig::from_lookup(lookup(&[
            ("HIVE_VAULT_ADDR", "http://127.0.0.1:8200"),
            ("HIVE_VAULT_JWT_ROLE", "agent"),
        ]))
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("HIVE_VAULT_JWT_FILE"), "{err}");
    }

    #[test]
    fn one_yes_no_parser() {
        for yes in ["1", "true", "TRUE", " yes ", "on"] {
            assert!(parse_bool("X", yes).unwrap(), "{yes}");
        }
        for no in ["0", "false", "No", "off"] {
            assert!(!parse_bool("X", no).unwrap(), "{no}");
        }
        let err = parse_bool("HIVE_VAULT_ALLOW_HTTP", "maybe").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("HIVE_VAULT_ALLOW_HTTP"), "{err}");
    }

    #[test]
    fn empty_prefix_puts_credentials_at_the_mount_root() {
        let c = VaultConfig::new("http://127.0.0.1:8200", VaultAuth::token("t"))
            .unwrap()
            .with_path_prefix("/")
            .unwrap();
        assert_eq!(c.kv_path("gh"), "secret/data/gh");
    }
}
