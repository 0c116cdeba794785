//! Reading secrets: a hidden prompt on a terminal, else standard input. Never argv.

use std::io::{IsTerminal as _, Read as _};

use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use zeroize::Zeroizing;

/// Whether stdin is a terminal (prompts are possible).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

fn io_error(e: std::io::Error, what: &str) -> Error {
    Error::new(ErrorKind::Unexpected, format!("could not read {what}")).with_source(e)
}

/// Reads one secret: from a hidden prompt when stdin is a terminal (twice when
/// `confirm`), else all of stdin with one trailing newline removed. Empty is an error.
pub fn read_secret(prompt: &str, what: &str, confirm: bool) -> Result<SecretString> {
    let value = if interactive() {
        let first =
            Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| io_error(e, what))?);
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Again: ").map_err(|e| io_error(e, what))?,
            );
            if *first != *again {
                return Err(Error::invalid_input(format!("the two {what}s differ")));
            }
        }
        first
    } else {
        let mut buf = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| io_error(e, what))?;
        if buf.ends_with('\n') {
            buf.pop();
            if buf.ends_with('\r') {
                buf.pop();
            }
        }
        buf
    };
    let secret = SecretString::from(value.as_str().to_string());
    // EXPOSE: emptiness check only.
    if secret.expose_secret().is_empty() {
        return Err(Error::invalid_input(format!(
            "empty {what}: type it at the prompt or pipe it on stdin"
        )));
    }
    Ok(secret)
}
