//! Choosing and opening the storage backend from the environment.

use std::path::PathBuf;
use std::sync::Arc;

use hive_cred_core::{CredentialStorage, Error, Result};

use crate::config::{CONFIG_ENV, RuntimeConfig};
use crate::runtime::{AgentRuntime, EnvLookup};

/// Set to a Vault / OpenBao address to use the Vault backend (needs the `vault` feature).
pub const VAULT_ADDR_ENV: &str = "HIVE_VAULT_ADDR";

/// Set to a file path to append the audit trail to it as JSON lines (overrides the
/// config file's `audit_log`).
pub const AUDIT_LOG_ENV: &str = "HIVE_CRED_AUDIT_LOG";

/// Where the audit trail is appended: `HIVE_CRED_AUDIT_LOG`, else the config file's
/// `audit_log`.
pub fn audit_log_path(
    config: Option<&RuntimeConfig>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    non_empty(lookup, AUDIT_LOG_ENV)
        .map(PathBuf::from)
        .or_else(|| config.and_then(|c| c.audit_log.clone()))
}

/// The storage backend [`AgentRuntime::from_env`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// HashiCorp Vault / OpenBao, configured by `HIVE_VAULT_*` (and `VAULT_*`) variables.
    Vault,
    /// The encrypted local store in `dir`, unlocked by `HIVE_CREDENTIAL_KEY` or
    /// `HIVE_CREDENTIAL_PASSPHRASE`.
    Local {
        /// The store directory.
        dir: PathBuf,
    },
    /// Read-only credentials from the process environment (`HIVE_CRED_<ID>__<KEY>`), when
    /// the crate is built without `local` and `vault`.
    Env,
}

fn non_empty(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.trim().is_empty())
}

impl Backend {
    /// Chooses the backend: Vault when `HIVE_VAULT_ADDR` is set (a `Config` error if the
    /// crate was built without the `vault` feature), else the local store in `local_dir`
    /// or its default directory (`$HIVE_HOME/credentials`, `HIVE_HOME` defaulting to
    /// `~/.hive`), else (without the `local` feature) the environment.
    ///
    /// An explicit `local_dir` (the CLI's `--dir`) wins over `HIVE_VAULT_ADDR`.
    pub fn select(
        lookup: &dyn Fn(&str) -> Option<String>,
        local_dir: Option<PathBuf>,
    ) -> Result<Backend> {
        if local_dir.is_none() && non_empty(lookup, VAULT_ADDR_ENV).is_some() {
            return if cfg!(feature = "vault") {
                Ok(Backend::Vault)
            } else {
                Err(Error::config(format!(
                    "{VAULT_ADDR_ENV} is set but hive-cred-runtime was built without the `vault` feature: \
                     enable it (features = [\"vault\"]) or unset {VAULT_ADDR_ENV}"
                )))
            };
        }
        #[cfg(feature = "local")]
        {
            let dir = match local_dir {
                Some(dir) => dir,
                None => hive_cred_local::LocalStorage::default_dir_from_lookup(|name| {
                    lookup(name).map(PathBuf::from)
                })?,
            };
            Ok(Backend::Local { dir })
        }
        #[cfg(not(feature = "local"))]
        {
            match local_dir {
                Some(dir) => Err(Error::config(
                    "a local store directory was given but hive-cred-runtime was built without the `local` feature",
                )
                .with_context("dir", dir.display())),
                None => Ok(Backend::Env),
            }
        }
    }

    /// A short name: `vault`, `local` or `env`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Vault => "vault",
            Backend::Local { .. } => "local",
            Backend::Env => "env",
        }
    }

    /// Opens the backend, reading keys and addresses through `lookup`.
    pub async fn open(
        &self,
        lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    ) -> Result<Arc<dyn CredentialStorage>> {
        match self {
            Backend::Vault => open_vault(lookup).await,
            Backend::Local { dir } => open_local(dir, lookup).await,
            Backend::Env => Ok(Arc::new(hive_cred_core::EnvStorage::new())),
        }
    }
}

#[cfg(feature = "local")]
async fn open_local(
    dir: &std::path::Path,
    lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Arc<dyn CredentialStorage>> {
    let key = hive_cred_local::KeySource::from_lookup(lookup)?;
    let storage = hive_cred_local::LocalStorage::open(dir, key)
        .await
        .map_err(|e| e.with_context("dir", dir.display()))?;
    Ok(Arc::new(storage))
}

#[cfg(not(feature = "local"))]
async fn open_local(
    dir: &std::path::Path,
    _lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Arc<dyn CredentialStorage>> {
    Err(
        Error::config("hive-cred-runtime was built without the `local` feature")
            .with_context("dir", dir.display()),
    )
}

#[cfg(feature = "vault")]
async fn open_vault(
    lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Arc<dyn CredentialStorage>> {
    let config = hive_cred_vault::VaultConfig::from_lookup(lookup)?;
    Ok(Arc::new(hive_cred_vault::VaultStorage::new(config).await?))
}

#[cfg(not(feature = "vault"))]
async fn open_vault(
    _lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Arc<dyn CredentialStorage>> {
    Err(Error::config(format!(
        "{VAULT_ADDR_ENV} is set but hive-cred-runtime was built without the `vault` feature"
    )))
}

impl AgentRuntime {
    /// A runtime configured by the process environment:
    ///
    /// | variable | effect |
    /// | --- | --- |
    /// | `HIVE_VAULT_ADDR` | use Vault (feature `vault`; a `Config` error without it), with `HIVE_VAULT_TOKEN`, `HIVE_VAULT_PATH` and the standard `VAULT_*` names |
    /// | `HIVE_HOME` | the local store is `$HIVE_HOME/credentials` (default `~/.hive/credentials`) |
    /// | `HIVE_CREDENTIAL_KEY` / `HIVE_CREDENTIAL_PASSPHRASE` | unlock the local store |
    /// | `HIVE_CRED_CONFIG` | a TOML or JSON [`RuntimeConfig`] file (OAuth2 providers, audit log) |
    /// | `HIVE_CRED_AUDIT_LOG` | append the audit trail to this JSON-lines file |
    /// | a spec's `env_var` (`BRAVE_SEARCH_API_KEY`, `OPENAI_API_KEY`, ...), `HIVE_CRED_{ID}__{KEY}`, `{ID}_API_KEY` | credentials the backend does not hold |
    ///
    /// See [`Backend::select`] for the backend choice. Credentials stored in the
    /// backend win over the environment, which fills the gaps (see
    /// [`AgentRuntimeBuilder::env_fallback`](crate::AgentRuntimeBuilder::env_fallback)):
    /// with `BRAVE_SEARCH_API_KEY` set and no stored `brave_search`,
    /// `runtime.credential_store.get("brave_search")` returns the variable's key.
    pub async fn from_env() -> Result<AgentRuntime> {
        let lookup: EnvLookup = Arc::new(|name: &str| std::env::var(name).ok());
        let backend = Backend::select(lookup.as_ref(), None)?;
        Self::assemble(&backend, lookup, hive_cred_core::EnvStorage::new()).await
    }

    /// [`from_env`](Self::from_env) reading variables through `lookup` (tests, config
    /// layers, a parsed `.env` file). The environment fallback reads through `lookup`
    /// too, by name: the specs' `env_var`s and `{ID}_API_KEY`, but not
    /// `HIVE_CRED_{ID}__{KEY}`, whose key names only listing the variables shows
    /// ([`EnvStorage::from_lookup`](hive_cred_core::EnvStorage::from_lookup)). The
    /// `Env` backend (no `local`, no `vault`) still reads the process environment.
    pub async fn from_lookup<L>(lookup: L) -> Result<AgentRuntime>
    where
        L: Fn(&str) -> Option<String> + Send + Sync + 'static,
    {
        let lookup: EnvLookup = Arc::new(lookup);
        let backend = Backend::select(lookup.as_ref(), None)?;
        Self::from_backend(&backend, lookup).await
    }

    /// A runtime over `backend`, with the config file and audit log named by `lookup`
    /// (`HIVE_CRED_CONFIG`, `HIVE_CRED_AUDIT_LOG`) and the environment fallback read
    /// through `lookup` (as [`from_lookup`](Self::from_lookup)).
    pub async fn from_backend(backend: &Backend, lookup: EnvLookup) -> Result<AgentRuntime> {
        let by_name = lookup.clone();
        let env = hive_cred_core::EnvStorage::from_lookup(move |name| by_name(name));
        Self::assemble(backend, lookup, env).await
    }

    async fn assemble(
        backend: &Backend,
        lookup: EnvLookup,
        env: hive_cred_core::EnvStorage,
    ) -> Result<AgentRuntime> {
        let mut config = match non_empty(lookup.as_ref(), CONFIG_ENV) {
            Some(path) => RuntimeConfig::load(&path)
                .map_err(|e| e.with_message_prefix(format!("{CONFIG_ENV} names a bad config")))?,
            None => RuntimeConfig::default(),
        };
        config.audit_log = audit_log_path(Some(&config), lookup.as_ref());
        let storage = backend.open(lookup.as_ref()).await?;
        tracing::info!(target: "hive_cred::runtime", backend = backend.name(), providers = config.providers.len(), "agent runtime configured from the environment");
        AgentRuntime::builder()
            .storage(storage)
            .config(config)
            .env_lookup(lookup)
            .env_fallback(env)
            .build()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::ErrorKind;

    #[test]
    fn vault_addr_selects_vault_or_names_the_missing_feature() {
        let lookup =
            |name: &str| (name == VAULT_ADDR_ENV).then(|| "http://127.0.0.1:1".to_string());
        let chosen = Backend::select(&lookup, None);
        if cfg!(feature = "vault") {
            assert_eq!(chosen.unwrap(), Backend::Vault);
        } else {
            let e = chosen.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.to_string().contains("`vault` feature"), "{e}");
        }
        // An empty address counts as unset.
        let empty = |name: &str| (name == VAULT_ADDR_ENV).then(String::new);
        assert_ne!(
            Backend::select(
                &|n| empty(n).or_else(|| (n == "HOME").then(|| "/h".into())),
                None
            )
            .unwrap(),
            Backend::Vault
        );
    }

    #[cfg(feature = "local")]
    #[test]
    fn local_dir_from_hive_home_home_or_explicit() {
        let l = |name: &str| match name {
            "HIVE_HOME" => Some("/srv/hive".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(
            Backend::select(&l, None).unwrap(),
            Backend::Local {
                dir: PathBuf::from("/srv/hive/credentials")
            }
        );
        let l = |name: &str| (name == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            Backend::select(&l, None).unwrap(),
            Backend::Local {
                dir: PathBuf::from("/home/u/.hive/credentials")
            }
        );
        let l = |name: &str| (name == VAULT_ADDR_ENV).then(|| "http://x".to_string());
        assert_eq!(
            Backend::select(&l, Some(PathBuf::from("/d"))).unwrap(),
            Backend::Local {
                dir: PathBuf::from("/d")
            }
        );
        let e = Backend::select(&|_| None, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
    }

    #[cfg(not(feature = "local"))]
    #[test]
    fn without_local_the_environment_is_the_backend() {
        assert_eq!(Backend::select(&|_| None, None).unwrap(), Backend::Env);
        assert!(Backend::select(&|_| None, Some(PathBuf::from("/d"))).is_err());
    }
}
