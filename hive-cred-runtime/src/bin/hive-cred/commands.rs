//! The commands other than `doctor`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hive_cred_core::{
    CredentialId, CredentialObject, CredentialStorage, CredentialType, DEFAULT_REFRESH_WINDOW,
    Error, ErrorKind, ExposeSecret, Result, validate_key_name,
};
use hive_cred_local::{KeySource, LocalStorage, LocalStorageOptions, ScryptParams};
use hive_cred_runtime::{AgentRuntime, Backend, CONFIG_ENV, RuntimeConfig};

use crate::input::{interactive, read_secret};
use crate::{Cli, Command};

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The backend for this invocation (see `Backend::select`).
pub fn backend(dir: Option<&Path>) -> Result<Backend> {
    Backend::select(&env, dir.map(Path::to_path_buf))
}

/// The local store directory, or a `Config` error when the backend is not local.
pub fn local_dir(dir: Option<&Path>, command: &str) -> Result<PathBuf> {
    match backend(dir)? {
        Backend::Local { dir } => Ok(dir),
        other => Err(Error::config(format!(
            "`hive-cred {command}` works on the local store only, and the backend is {}; pass --dir DIR",
            other.name()
        ))),
    }
}

/// The key of the local store in `dir`: from the environment, else a passphrase prompt.
pub fn key_source(dir: &Path) -> Result<KeySource> {
    match KeySource::from_lookup(env) {
        Ok(k) => Ok(k),
        Err(e) if e.kind() == ErrorKind::Config && interactive() => {
            let prompt = format!("Passphrase for the credential store in {}: ", dir.display());
            Ok(KeySource::Passphrase(read_secret(
                &prompt,
                "passphrase",
                false,
            )?))
        }
        Err(e) => Err(e),
    }
}

pub async fn open_local(dir: &Path) -> Result<LocalStorage> {
    open_local_with(dir, None).await
}

/// Options whose scrypt cost (2^`log_n`) applies when this handle creates a store or
/// sets a passphrase.
fn options(scrypt_log_n: Option<u8>) -> Result<LocalStorageOptions> {
    let mut options = LocalStorageOptions::new();
    if let Some(log_n) = scrypt_log_n {
        let default = ScryptParams::default();
        options = options.with_scrypt_params(ScryptParams::new(log_n, default.r(), default.p())?);
    }
    Ok(options)
}

async fn open_local_with(dir: &Path, scrypt_log_n: Option<u8>) -> Result<LocalStorage> {
    let key = key_source(dir)?;
    LocalStorage::open_with(dir, key, options(scrypt_log_n)?)
        .await
        .map_err(|e| e.with_context("dir", dir.display()))
}

/// The storage of this invocation.
pub async fn open_storage(dir: Option<&Path>) -> Result<Arc<dyn CredentialStorage>> {
    match backend(dir)? {
        Backend::Local { dir } => Ok(Arc::new(open_local(&dir).await?)),
        other => other.open(&env).await,
    }
}

/// The config named by `HIVE_CRED_CONFIG`, if any.
pub fn config() -> Result<Option<RuntimeConfig>> {
    match env(CONFIG_ENV).filter(|p| !p.trim().is_empty()) {
        Some(path) => RuntimeConfig::load(&path)
            .map(Some)
            .map_err(|e| e.with_message_prefix(format!("{CONFIG_ENV} names a bad config"))),
        None => Ok(None),
    }
}

pub async fn run(cli: Cli) -> Result<u8> {
    let dir = cli.dir.as_deref();
    match cli.command {
        Command::Init {
            passphrase,
            scrypt_log_n,
        } => init(dir, passphrase, scrypt_log_n).await,
        Command::Set {
            id,
            key_name,
            credential_type,
            key,
            expires_at,
            provider,
            no_auto_refresh,
            description,
        } => {
            let args = SetArgs {
                id,
                credential_type,
                key: key_name.or(key).unwrap_or_default(),
                expires_at,
                provider,
                auto_refresh: !no_auto_refresh,
                description,
            };
            set(dir, args).await
        }
        Command::Get { id, reveal, json } => get(dir, &id, reveal.as_deref(), json).await,
        Command::List { json } => list(dir, json).await,
        Command::Delete { id } => delete(dir, &id).await,
        Command::Refresh { id } => refresh(dir, &id).await,
        Command::ChangePassphrase {
            generate_key,
            scrypt_log_n,
            keep_data_key,
        } => change_passphrase(dir, generate_key, scrypt_log_n, keep_data_key).await,
        Command::RotateKey => rotate_key(dir).await,
        Command::ImportHive { dir: src, key_env } => import_hive(dir, &src, key_env).await,
        Command::Doctor { agent: None, .. } => Ok(crate::doctor::doctor(dir).await),
        Command::Doctor {
            agent: Some(file),
            json,
            check,
        } => crate::agent::doctor_agent(dir, &file, json, check).await,
        Command::Accounts { provider, json } => crate::agent::accounts(dir, &provider, json).await,
        Command::Check { id, json } => crate::agent::check(dir, id.as_deref(), json).await,
        Command::Connect {
            provider,
            alias,
            device,
            no_browser,
            timeout_secs,
        } => {
            let args = crate::connect::ConnectArgs {
                provider,
                alias,
                device,
                no_browser,
                timeout: std::time::Duration::from_secs(timeout_secs),
            };
            crate::connect::connect(dir, args).await
        }
    }
}

fn show_key_once(text: &hive_cred_core::SecretString) {
    println!("Its key is shown only this once. Keep it in your secret manager and give it to");
    println!("every agent and hive-cred command that uses this store:");
    println!();
    // EXPOSE: `init` / `change-passphrase --generate-key` exist to show the new key once.
    println!("  export HIVE_CREDENTIAL_KEY={}", text.expose_secret());
    println!();
}

async fn init(dir: Option<&Path>, passphrase: bool, scrypt_log_n: Option<u8>) -> Result<u8> {
    let dir = local_dir(dir, "init")?;
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::config(
            "the directory is not empty (a store may already be there); use `hive-cred change-passphrase` to change its key, or pick another --dir",
        )
        .with_context("dir", dir.display()));
    }
    let (key, shown) = if passphrase {
        let p = read_secret("New passphrase: ", "passphrase", true)?;
        (KeySource::Passphrase(p), None)
    } else {
        let (key, text) = KeySource::generate()?;
        (key, Some(text))
    };
    let storage = LocalStorage::open_with(&dir, key, options(scrypt_log_n)?)
        .await
        .map_err(|e| e.with_context("dir", dir.display()))?;
    // Taking a credential lock creates the store (directory and header) now.
    let probe = CredentialId::new("hive-cred-init")?;
    drop(storage.try_lock_credential(&probe).await?);
    println!(
        "Created an encrypted credential store in {}.",
        dir.display()
    );
    match shown {
        Some(text) => show_key_once(&text),
        None => println!(
            "Give the passphrase to agents in HIVE_CREDENTIAL_PASSPHRASE (hive-cred asks for it on a terminal)."
        ),
    }
    Ok(0)
}

struct SetArgs {
    id: String,
    credential_type: Option<String>,
    key: String,
    expires_at: Option<String>,
    provider: Option<String>,
    auto_refresh: bool,
    description: Option<String>,
}

async fn set(dir: Option<&Path>, args: SetArgs) -> Result<u8> {
    let asked_type: Option<CredentialType> = args
        .credential_type
        .as_deref()
        .map(str::parse)
        .transpose()?;
    let id = CredentialId::new(&args.id)?;
    validate_key_name(&args.key)?;
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    Error::invalid_input(
                        "--expires-at must be an RFC 3339 time, e.g. 2030-01-31T12:00:00Z",
                    )
                })
        })
        .transpose()?;
    let storage = open_storage(dir).await?;
    let existing = storage.load(&id).await?;
    // The stored credential's type, or api_key for a new one, unless --type says.
    let credential_type = asked_type.unwrap_or_else(|| {
        existing
            .as_ref()
            .map_or(CredentialType::ApiKey, |c| c.credential_type())
    });
    if let Some(c) = &existing
        && c.credential_type() != credential_type
    {
        return Err(Error::invalid_input(format!(
            "the credential exists with type {}; pass --type {} or delete it first",
            c.credential_type(),
            c.credential_type()
        ))
        .with_context("id", &id));
    }
    let value = read_secret(&format!("Value for {id}.{}: ", args.key), "value", false)?;
    let mut credential =
        existing.unwrap_or_else(|| CredentialObject::with_id(id.clone(), credential_type));
    credential.set_key(args.key.as_str(), value, expires_at)?;
    if let Some(p) = args.provider {
        credential.set_provider_id(Some(p));
        credential.set_auto_refresh(args.auto_refresh);
    }
    if let Some(d) = args.description {
        credential.set_description(Some(d));
    }
    storage.save(&credential).await?;
    match expires_at {
        Some(t) => println!("saved {id}.{} (expires {})", args.key, fmt_time(t)),
        None => println!("saved {id}.{}", args.key),
    }
    Ok(0)
}

async fn load(storage: &dyn CredentialStorage, id: &str) -> Result<CredentialObject> {
    let cid = CredentialId::new(id)?;
    storage
        .load(&cid)
        .await?
        .ok_or_else(|| Error::not_found(&cid).with_context("backend", storage.backend_name()))
}

async fn get(dir: Option<&Path>, id: &str, reveal: Option<&str>, json: bool) -> Result<u8> {
    let storage = open_storage(dir).await?;
    let c = load(&*storage, id).await?;
    if let Some(key) = reveal {
        let value = c
            .get_key(key)
            .ok_or_else(|| Error::key_not_found(c.id(), key))?;
        eprintln!(
            "warning: printing the secret value of {}.{key}; it may stay in terminal scrollback or logs",
            c.id()
        );
        // EXPOSE: `get --reveal` is the explicit request to print one value.
        println!("{}", value.expose_secret());
        return Ok(0);
    }
    let meta = c.metadata();
    if json {
        let text = serde_json::to_string_pretty(&meta).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("could not format metadata: {e}"),
            )
        })?;
        println!("{text}");
        return Ok(0);
    }
    println!("id:             {}", meta.id);
    println!("type:           {}", meta.credential_type);
    if let Some(p) = &meta.provider_id {
        let auto = if meta.auto_refresh {
            "auto refresh"
        } else {
            "manual refresh"
        };
        println!("provider:       {p} ({auto})");
    }
    if let Some(d) = &meta.description {
        println!("description:    {d}");
    }
    if !meta.tags.is_empty() {
        println!("tags:           {}", meta.tags.join(", "));
    }
    println!("created:        {}", fmt_time(meta.created_at));
    println!("updated:        {}", fmt_time(meta.updated_at));
    if let Some(t) = meta.last_refreshed {
        println!("last refreshed: {}", fmt_time(t));
    }
    println!("version:        {}", meta.version);
    println!("keys:");
    let now = Utc::now();
    let width = meta.keys.keys().map(String::len).max().unwrap_or(0);
    for (name, k) in &meta.keys {
        let expiry = match k.expires_at {
            Some(t) if t <= now => format!("expired {}", fmt_time(t)),
            Some(t) => format!("expires {}", fmt_time(t)),
            None => "no expiry".to_string(),
        };
        println!("  {name:<width$}  {expiry}");
    }
    Ok(0)
}

async fn list(dir: Option<&Path>, json: bool) -> Result<u8> {
    let storage = open_storage(dir).await?;
    let mut ids = storage.list().await?;
    ids.sort();
    let mut rows = Vec::with_capacity(ids.len());
    let mut first_error: Option<Error> = None;
    for id in &ids {
        match storage.load(id).await {
            Ok(Some(c)) => rows.push(c.metadata()),
            Ok(None) => {}
            Err(e) => {
                eprintln!("hive-cred: warning: {id}: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("could not format metadata: {e}"),
            )
        })?;
        println!("{text}");
    } else {
        let now = Utc::now();
        let table: Vec<[String; 5]> = rows
            .iter()
            .map(|m| {
                let keys: Vec<&str> = m.keys.keys().map(String::as_str).collect();
                let expiry = m.earliest_expiry();
                let needs = expiry.is_some_and(|t| t <= now + DEFAULT_REFRESH_WINDOW);
                [
                    m.id.to_string(),
                    m.credential_type.to_string(),
                    keys.join(","),
                    expiry.map_or_else(|| "-".to_string(), fmt_time),
                    if needs { "yes" } else { "no" }.to_string(),
                ]
            })
            .collect();
        let header = ["ID", "TYPE", "KEYS", "EARLIEST EXPIRY", "NEEDS REFRESH"].map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&table) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
    }
    match first_error {
        Some(e) => Err(e.with_message_prefix("some credentials could not be read")),
        None => Ok(0),
    }
}

async fn delete(dir: Option<&Path>, id: &str) -> Result<u8> {
    let cid = CredentialId::new(id)?;
    let storage = open_storage(dir).await?;
    if storage.delete(&cid).await? {
        println!("deleted {cid}");
        Ok(0)
    } else {
        Err(Error::not_found(&cid).with_context("backend", storage.backend_name()))
    }
}

async fn refresh(dir: Option<&Path>, id: &str) -> Result<u8> {
    let storage = open_storage(dir).await?;
    let mut builder = AgentRuntime::builder().storage(storage);
    if let Some(config) = config()? {
        builder = builder.config(config);
    }
    let runtime = builder.build().await?;
    let c = runtime.credential_store.refresh(id).await.map_err(|e| {
        if e.kind() == ErrorKind::Config && e.context_value("provider").is_some() {
            e.with_context(
                "hint",
                format!("register the provider in the file named by {CONFIG_ENV}"),
            )
        } else {
            e
        }
    })?;
    match c.earliest_expiry() {
        Some(t) => println!("refreshed {} (earliest expiry {})", c.id(), fmt_time(t)),
        None => println!("refreshed {}", c.id()),
    }
    Ok(0)
}

async fn change_passphrase(
    dir: Option<&Path>,
    generate_key: bool,
    scrypt_log_n: Option<u8>,
    keep_data_key: bool,
) -> Result<u8> {
    let dir = local_dir(dir, "change-passphrase")?;
    let storage = open_local_with(&dir, scrypt_log_n).await?;
    let change = |key: KeySource| {
        let storage = &storage;
        async move {
            if keep_data_key {
                storage.rewrap_passphrase(key).await
            } else {
                storage.change_passphrase(key).await
            }
        }
    };
    if generate_key {
        let (key, text) = KeySource::generate()?;
        change(key).await?;
        println!("The store in {} now uses a generated key.", dir.display());
        show_key_once(&text);
    } else {
        let p = read_secret("New passphrase: ", "passphrase", true)?;
        change(KeySource::Passphrase(p)).await?;
        println!(
            "Changed the passphrase of the store in {}; update HIVE_CREDENTIAL_PASSPHRASE wherever it is set.",
            dir.display()
        );
    }
    Ok(0)
}

async fn rotate_key(dir: Option<&Path>) -> Result<u8> {
    let dir = local_dir(dir, "rotate-key")?;
    let storage = open_local(&dir).await?;
    let report = storage.rotate_data_key().await?;
    println!(
        "Rotated the data key of {} (generation {}, {} records re-encrypted).",
        dir.display(),
        report.generation,
        report.records_reencrypted
    );
    Ok(0)
}

async fn import_hive(dir: Option<&Path>, src: &Path, key_env: Option<String>) -> Result<u8> {
    let target = local_dir(dir, "import-hive")?;
    let storage = open_local(&target).await?;
    let fernet_key = match key_env {
        Some(var) => env(&var)
            .map(hive_cred_core::SecretString::from)
            .ok_or_else(|| {
                Error::config("the variable named by --key-env is not set").with_context("var", var)
            })?,
        None => read_secret(
            "Fernet key of the Python store (its HIVE_CREDENTIAL_KEY): ",
            "Fernet key",
            false,
        )?,
    };
    let report = hive_cred_local::import_python_store(src, &fernet_key, &storage).await?;
    for id in &report.imported {
        println!("imported {id}");
    }
    for f in &report.failures {
        eprintln!("hive-cred: not imported: {f}");
    }
    println!(
        "{} imported, {} not imported",
        report.imported.len(),
        report.failures.len()
    );
    Ok(if report.failures.is_empty() { 0 } else { 1 })
}
