//! `hive-cred connect <provider> [--alias NAME]`: obtain the first token of an OAuth2
//! account (`provider/alias`, stored under the id `provider.alias`, or `provider` for the
//! default alias)
//! provider registered in the config file, with the authorization code flow (PKCE, a
//! loopback redirect) or, with `--device` or when the provider has no authorization
//! endpoint, the device flow; then store it.

use std::path::Path;
use std::time::Duration;

use hive_cred_core::{
    AccountStatus, CredentialAccount, CredentialIdentity, CredentialStore, Error, Result,
    account_id,
};
use hive_cred_oauth::OAuth2Provider;
use hive_cred_runtime::CONFIG_ENV;

use crate::commands::{config, env, open_storage};

/// What `connect` was asked to do.
#[derive(Debug)]
pub struct ConnectArgs {
    pub provider: String,
    pub alias: Option<String>,
    pub device: bool,
    pub no_browser: bool,
    pub timeout: Duration,
}

pub async fn connect(dir: Option<&Path>, args: ConnectArgs) -> Result<u8> {
    let Some(runtime_config) = config()? else {
        return Err(Error::config(format!(
            "no config file: register the provider in the file named by {CONFIG_ENV}"
        )));
    };
    let Some(registration) = runtime_config
        .providers
        .iter()
        .find(|p| p.provider_id == args.provider)
    else {
        return Err(Error::config(format!(
            "provider {:?} is not registered in the file named by {CONFIG_ENV}",
            args.provider
        )));
    };
    let storage = open_storage(dir).await?;
    let secret = match &registration.client_secret {
        Some(r) => Some(r.resolve(storage.as_ref(), &env).await?),
        None => None,
    };
    let mut oauth_config = registration.spec()?.into_config(secret)?;
    if oauth_config.needs_discovery() {
        oauth_config = oauth_config.discover().await?;
    }
    let device = args.device
        || (oauth_config.authorization_url().is_none()
            && oauth_config.device_authorization_url().is_some());
    let provider = OAuth2Provider::new(oauth_config)?;
    // The account `provider/alias`: id `provider.alias`, or `provider` for the default.
    let mut account = CredentialAccount::new(&args.provider, args.alias.as_deref())?;
    let id = account_id(&account.provider, &account.alias)?;
    let id = id.as_str();

    let mut credential = if device {
        let auth = provider.start_device_authorization().await?;
        println!(
            "To connect {}, open {} and enter the code {}",
            args.provider,
            auth.verification_uri(),
            auth.user_code()
        );
        if let Some(complete) = auth.verification_uri_complete() {
            println!("(or open {complete})");
        }
        println!(
            "Waiting for approval (the code expires in {} s)...",
            auth.expires_in().as_secs()
        );
        provider.poll_device_authorization(id, &auth).await?
    } else {
        let session = provider.start_authorization().await?;
        let url = session.authorize_url().to_string();
        println!("To connect {}, open this URL in a browser:", args.provider);
        println!();
        println!("  {url}");
        println!();
        if !args.no_browser {
            open_browser(&url);
        }
        println!(
            "Waiting for the redirect to {} (at most {} s)...",
            session.redirect_uri(),
            args.timeout.as_secs()
        );
        session.finish(id, args.timeout).await?
    };
    let identity = match provider.identity(&credential).await {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!(provider = %args.provider, kind = %e.kind(), "user-info lookup failed; storing without identity");
            None
        }
    };
    if let Some(who) = &identity {
        credential.set_description(Some(format!("{} account {who}", args.provider)));
        let known = CredentialIdentity::new();
        account = account.with_identity(if who.contains('@') {
            known.with_email(who.as_str())
        } else {
            known.with_username(who.as_str())
        });
        // The user-info call just succeeded with the new token.
        account.record_check(AccountStatus::Active, chrono::Utc::now());
    }
    credential.set_account(Some(account));
    let store = CredentialStore::builder().storage(storage).build()?;
    let saved = store.upsert(credential).await?;
    let address = saved
        .account()
        .map(CredentialAccount::address)
        .unwrap_or_default();
    let who = identity.map(|who| format!(" as {who}")).unwrap_or_default();
    println!(
        "connected {}{who}: stored as {} ({address})",
        args.provider,
        saved.id()
    );
    Ok(0)
}

/// Opens `url` in a browser when one is plausibly there; failures are ignored (the URL
/// is printed anyway). `HIVE_CRED_NO_BROWSER` turns it off.
fn open_browser(url: &str) {
    if env("HIVE_CRED_NO_BROWSER").is_some() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if cfg!(target_os = "windows") {
        Some("explorer")
    } else if env("DISPLAY").is_some() || env("WAYLAND_DISPLAY").is_some() {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(program) = opener {
        let _ = std::process::Command::new(program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}
