//! `hive-cred`: set up and inspect the credential store of hive-cred agents.
//!
//! Secret values are read from a hidden prompt or standard input, never from arguments.
//! Errors are one line on stderr and a documented exit code (see the crate README).
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool: stdout is its output"
)]

mod agent;
mod commands;
mod connect;
mod doctor;
mod input;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hive_cred_core::{Error, ErrorKind};

/// Manage the credentials of hive-cred agents (encrypted local store or Vault).
///
/// The backend is chosen as by `AgentRuntime::from_env`: `--dir` (or `HIVE_CRED_DIR`)
/// selects a local store; otherwise Vault when `HIVE_VAULT_ADDR` is set; otherwise the
/// local store in `$HIVE_HOME/credentials` (`~/.hive/credentials`). The local store is
/// unlocked by `HIVE_CREDENTIAL_KEY` or `HIVE_CREDENTIAL_PASSPHRASE`, or a passphrase
/// prompt on a terminal.
#[derive(Debug, Parser)]
#[command(name = "hive-cred", version, about, max_term_width = 100)]
struct Cli {
    /// The local store directory (default: $HIVE_HOME/credentials, else ~/.hive/credentials).
    #[arg(long, global = true, env = "HIVE_CRED_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a local store. Generates a key and shows it once, or (--passphrase) asks
    /// for a passphrase.
    Init {
        /// Protect the store with a passphrase (prompt, or stdin when not a terminal).
        #[arg(long)]
        passphrase: bool,
        /// With --passphrase: scrypt cost 2^N (10..=18; default 17). Lower is faster and
        /// weaker against guessing.
        #[arg(long, value_name = "N", requires = "passphrase", value_parser = clap::value_parser!(u8).range(10..=18))]
        scrypt_log_n: Option<u8>,
    },
    /// Store one key of a credential; the value is read from a hidden prompt or stdin.
    Set {
        /// Credential id.
        id: String,
        /// Key name (e.g. api_key, access_token, refresh_token).
        #[arg(value_name = "KEY", required_unless_present = "key")]
        key_name: Option<String>,
        /// Credential type: api_key, oauth2, basic_auth, bearer_token, custom. Default:
        /// the stored credential's type, or api_key for a new one.
        #[arg(long = "type", value_name = "TYPE")]
        credential_type: Option<String>,
        /// Key name, as an option (the same as the KEY argument).
        #[arg(long, value_name = "NAME", conflicts_with = "key_name")]
        key: Option<String>,
        /// When the value expires (RFC 3339, e.g. 2030-01-31T12:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Refresh provider id; turns auto-refresh on.
        #[arg(long, value_name = "PROVIDER_ID")]
        provider: Option<String>,
        /// With --provider: do not refresh automatically.
        #[arg(long, requires = "provider")]
        no_auto_refresh: bool,
        /// A description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show a credential's metadata (never values, unless --reveal).
    Get {
        /// Credential id.
        id: String,
        /// Print the value of this key to stdout (with a warning on stderr).
        #[arg(long, value_name = "KEY")]
        reveal: Option<String>,
        /// Metadata as JSON.
        #[arg(long, conflicts_with = "reveal")]
        json: bool,
    },
    /// List credentials: id, type, keys, earliest expiry, needs-refresh.
    List {
        /// As JSON (metadata only).
        #[arg(long)]
        json: bool,
    },
    /// Delete a credential.
    Delete {
        /// Credential id.
        id: String,
    },
    /// Refresh a credential now through its provider (providers come from HIVE_CRED_CONFIG).
    Refresh {
        /// Credential id.
        id: String,
    },
    /// Change the local store's passphrase (or switch to a generated key) and rotate its data key.
    ChangePassphrase {
        /// Switch to a freshly generated raw key, shown once.
        #[arg(long)]
        generate_key: bool,
        /// scrypt cost 2^N for the new passphrase (10..=18; default 17).
        #[arg(long, value_name = "N", conflicts_with = "generate_key", value_parser = clap::value_parser!(u8).range(10..=18))]
        scrypt_log_n: Option<u8>,
        /// Re-wrap the data key only (one header write) instead of re-encrypting every
        /// record under a fresh one; a saved copy of the old header plus the old
        /// passphrase would still open the records.
        #[arg(long)]
        keep_data_key: bool,
    },
    /// Re-encrypt every record of the local store under a fresh data key.
    RotateKey,
    /// Import a Python Hive credential store (`*.enc` files, Fernet key from a prompt or stdin).
    ImportHive {
        /// The Python store directory (e.g. ~/.hive/credentials).
        dir: PathBuf,
        /// Read the Fernet key from this environment variable instead of a prompt.
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
    },
    /// Check the key, permissions, that every credential decrypts, expiries, the config
    /// file and Vault reachability; with --agent, the credentials of an agent's tools.
    Doctor {
        /// An agent file (TOML or JSON, `[[nodes]]` with name, kind, credentials,
        /// any_of, accounts): report, per credential its tools need, what is missing.
        #[arg(long, value_name = "FILE")]
        agent: Option<PathBuf>,
        /// With --agent: the report as JSON.
        #[arg(long, requires = "agent")]
        json: bool,
        /// With --agent: also run the specs' health checks (network requests to the
        /// services).
        #[arg(long, requires = "agent")]
        check: bool,
    },
    /// List a provider's accounts: alias, id, identity, status (never values).
    Accounts {
        /// The provider (e.g. github).
        provider: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the health checks of credential specs (one id, or every stored credential
    /// whose spec has one) and record status and identity.
    Check {
        /// Credential id or provider/alias.
        id: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Obtain and store the first token of a provider registered in HIVE_CRED_CONFIG:
    /// authorization code + PKCE through a browser and a 127.0.0.1 redirect, or the
    /// device flow (--device) on hosts without a browser.
    Connect {
        /// The provider id (as registered in the config file).
        provider: String,
        /// The account alias (e.g. work): stored as the account provider/alias, under the
        /// id provider.alias (default: the provider's `default` account, id = provider).
        #[arg(long, value_name = "NAME")]
        alias: Option<String>,
        /// Use the device flow: show a code to enter on another device.
        #[arg(long)]
        device: bool,
        /// Print the URL only; do not try to open a browser.
        #[arg(long)]
        no_browser: bool,
        /// How long to wait for the browser's redirect, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout_secs: u64,
    },
}

/// Exit codes (documented in the crate README).
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound | ErrorKind::KeyNotFound => 3,
        ErrorKind::Config | ErrorKind::InvalidInput | ErrorKind::Unsupported => 4,
        ErrorKind::Decryption => 5,
        ErrorKind::PermissionDenied => 6,
        ErrorKind::Unavailable | ErrorKind::RateLimited => 7,
        ErrorKind::RefreshRejected | ErrorKind::Expired => 8,
        ErrorKind::Conflict => 9,
        ErrorKind::Corrupted => 10,
        ErrorKind::AccountSelectionRequired | ErrorKind::AuthorizationRequired => 11,
        _ => 1,
    }
}

fn init_logging() {
    // Warnings from the libraries (e.g. too-open permissions) go to stderr; values never
    // reach tracing, and HIVE_CRED_LOG raises the level.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HIVE_CRED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,hive_cred::audit=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hive-cred: error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

fn report(e: &Error) {
    // hive-cred errors never carry secret values; one line.
    let line = e.to_string().replace('\n', " ");
    eprintln!("hive-cred: error: {line}");
}
